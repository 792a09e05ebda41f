// Max pooling, NCHW, any window and stride, padding given per side (TF's VALID is zero padding;
// its SAME pads the way convolutions do). Padding never wins: a window's maximum is taken over the
// positions inside the image only, as TensorFlow does.
//
// Every invocation owns one output row segment of up to OUTPUTS_PER_INVOCATION pixels of one
// (image, channel) plane.

struct Params {
    planes: u32, // batch * channels
    in_height: u32,
    in_width: u32,
    out_height: u32,
    out_width: u32,
    window_height: u32,
    window_width: u32,
    stride_height: u32,
    stride_width: u32,
    pad_top: u32,
    pad_left: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;
const OUTPUTS_PER_INVOCATION: u32 = 4u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn max_pool_forward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    // The host folds large launches into a 2-D grid (one dimension holds at most 65535 groups).
    let index = id.x + id.y * groups.x * WORKGROUP_SIZE;
    let segments_per_row = (params.out_width + OUTPUTS_PER_INVOCATION - 1u) / OUTPUTS_PER_INVOCATION;
    let row = index / segments_per_row;
    if row >= params.planes * params.out_height {
        return;
    }
    let plane = row / params.out_height;
    let oh = row % params.out_height;
    let first_ow = (index % segments_per_row) * OUTPUTS_PER_INVOCATION;
    let in_base = plane * params.in_height * params.in_width;

    let top = i32(oh * params.stride_height) - i32(params.pad_top);
    let row_begin = max(top, 0);
    let row_end = min(top + i32(params.window_height), i32(params.in_height));
    for (var ow = first_ow; ow < min(first_ow + OUTPUTS_PER_INVOCATION, params.out_width); ow++) {
        let left = i32(ow * params.stride_width) - i32(params.pad_left);
        let col_begin = max(left, 0);
        let col_end = min(left + i32(params.window_width), i32(params.in_width));
        var best = -3.40282347e38;
        for (var y = row_begin; y < row_end; y++) {
            for (var x = col_begin; x < col_end; x++) {
                best = max(best, input[in_base + u32(y) * params.in_width + u32(x)]);
            }
        }
        output[row * params.out_width + ow] = best;
    }
}
