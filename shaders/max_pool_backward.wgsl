// Max pooling backward, NCHW: each output gradient goes to the input position of its window's
// maximum; a tie goes to the first maximum in row-major window order (TensorFlow's rule), and
// padding never wins, as in the forward kernel.
//
// Written as a gather, so that overlapping windows (3x3 stride 2) need no atomics: every
// invocation owns up to four inputs of one row, visits the windows that cover each, and adds the
// gradients of the windows it won, by the maximum positions max_pool_argmax found.

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
// Each window's maximum, as an index into its input plane (max_pool_argmax).
@group(0) @binding(1) var<storage, read> argmax: array<u32>;
@group(0) @binding(2) var<storage, read> grad_output: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad_input: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;
const INPUTS_PER_INVOCATION: u32 = 4u;

// The first output position whose window, starting at o * stride - pad, reaches `i`.
fn first_window(i: u32, pad: u32, window: u32, stride: u32) -> u32 {
    let reach = i32(i + pad) - i32(window) + 1;
    if reach <= 0 {
        return 0u;
    }
    return (u32(reach) + stride - 1u) / stride;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn max_pool_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    // The host folds large launches into a 2-D grid (one dimension holds at most 65535 groups).
    let index = id.x + id.y * groups.x * WORKGROUP_SIZE;
    let segments_per_row = (params.in_width + INPUTS_PER_INVOCATION - 1u) / INPUTS_PER_INVOCATION;
    let row = index / segments_per_row;
    if row >= params.planes * params.in_height {
        return;
    }
    let plane = row / params.in_height;
    let y = row % params.in_height;
    let in_base = plane * params.in_height * params.in_width;
    let out_base = plane * params.out_height * params.out_width;
    let oy_first = first_window(y, params.pad_top, params.window_height, params.stride_height);
    let oy_end = min((y + params.pad_top) / params.stride_height + 1u, params.out_height);
    let first_x = (index % segments_per_row) * INPUTS_PER_INVOCATION;
    for (var x = first_x; x < min(first_x + INPUTS_PER_INVOCATION, params.in_width); x++) {
        let me = y * params.in_width + x;
        let ox_first = first_window(x, params.pad_left, params.window_width, params.stride_width);
        let ox_end = min((x + params.pad_left) / params.stride_width + 1u, params.out_width);
        var total = 0.0;
        for (var oy = oy_first; oy < oy_end; oy++) {
            for (var ox = ox_first; ox < ox_end; ox++) {
                let window = out_base + oy * params.out_width + ox;
                if argmax[window] == me {
                    total += grad_output[window];
                }
            }
        }
        grad_input[in_base + me] = total;
    }
}
