// A convolution's input copied into a zero-bordered buffer, NCHW: every plane of H x W lands at
// (top, left) of a plane of padded_height x padded_width, and the border is written as zeros
// (the buffer is scratch that other layers share, so it holds whatever they left).
// conv2d_forward (register-block shape) then reads every tap without bounds checks, cheaper per
// load on CPU adapters than the checks (see docs/kernels.md), for one extra pass over the input.
// One invocation per padded row (folded grid index over batch * channels * padded_height rows).

struct Params {
    rows: u32, // batch * channels * padded_height
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
    let plane = row / params.padded_height;
    let padded_y = row % params.padded_height;
    let to = row * params.padded_width;
    let inside = padded_y >= params.top && padded_y < params.top + params.height;
    let source = (plane * params.height + padded_y - select(0u, params.top, inside)) * params.width;
    for (var x = 0u; x < params.padded_width; x++) {
        let column_inside = x >= params.left && x < params.left + params.width;
        var value = 0.0;
        if inside && column_inside {
            value = input[source + x - params.left];
        }
        padded[to + x] = value;
    }
}
