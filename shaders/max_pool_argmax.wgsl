// Max pooling's first pass backward, NCHW: the position of every window's maximum, as an index
// into its input plane, for max_pool_backward to route the gradients by. The first maximum in
// row-major window order wins a tie (TensorFlow's rule) and padding never wins, as in the forward
// kernel. One output per invocation.
//
// Finding each window's maximum once here, rather than once per input position that the window
// covers (up to four times for AlexNet's 3x3 stride 2 pools), reads the input a quarter as often.

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
@group(0) @binding(2) var<storage, read_write> argmax: array<u32>;

override WORKGROUP_SIZE: u32 = 64u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn max_pool_argmax(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    // The host folds large launches into a 2-D grid (one dimension holds at most 65535 groups).
    let index = id.x + id.y * groups.x * WORKGROUP_SIZE;
    let out_plane = params.out_height * params.out_width;
    if index >= params.planes * out_plane {
        return;
    }
    let in_base = (index / out_plane) * params.in_height * params.in_width;
    let oy = (index % out_plane) / params.out_width;
    let ox = index % params.out_width;
    let top = i32(oy * params.stride_height) - i32(params.pad_top);
    let left = i32(ox * params.stride_width) - i32(params.pad_left);
    var best = -3.40282347e38;
    var best_at = 0xffffffffu;
    for (var y = max(top, 0); y < min(top + i32(params.window_height), i32(params.in_height)); y++) {
        for (var x = max(left, 0); x < min(left + i32(params.window_width), i32(params.in_width)); x++) {
            let at = u32(y) * params.in_width + u32(x);
            let v = input[in_base + at];
            if v > best || best_at == 0xffffffffu {
                best = v;
                best_at = at;
            }
        }
    }
    argmax[index] = best_at;
}
