// A convolution's input copied into a zero-bordered buffer, NCHW: every plane of H x W lands at
// (top, left) of a plane of padded_height x padded_width whose border the host allocated as zeros
// and nothing ever writes. conv2d_forward (register-block shape) then reads every tap without
// bounds checks, cheaper per load on CPU adapters than the checks (see docs/kernels.md), for one
// extra pass over the input. One invocation per input row (folded grid index over
// batch * channels * height rows).

struct Params {
    rows: u32, // batch * channels * height
    height: u32,
    width: u32,
    padded_height: u32,
    padded_width: u32,
    top: u32,
    left: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> padded: array<f32>;


@compute @workgroup_size(WORKGROUP_SIZE)
fn conv2d_pad_input(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let row = folded_index(id, groups);
    if row >= params.rows {
        return;
    }
    let plane = row / params.height;
    let y = row % params.height;
    let source = row * params.width;
    let to = (plane * params.padded_height + y + params.top) * params.padded_width + params.left;
    for (var x = 0u; x < params.width; x++) {
        padded[to + x] = input[source + x];
    }
}
