// A convolution's input copied into a zero-bordered buffer, NCHW: every plane of H x W lands at
// (top, left) of a plane of padded_height x padded_width, and the border is written as zeros
// (the buffer is scratch that other layers share, so it holds whatever they left).
// conv2d_forward (register-block shape) then reads every tap without bounds checks, cheaper per
// load on CPU adapters than the checks (see docs/kernels.md), for one extra pass over the input.
//
// With a stride s > 1 the values are also spread apart: value (y, x) lands at
// (top + y * s_h, left + x * s_w), zeros between. That is a strided convolution's output gradient
// made ready for its input gradient as a stride-1 convolution (docs/kernels.md#strided-input-gradients).
// `parts` invocations per padded row (folded grid index over batch * channels * padded_height
// rows times parts), each writing one span of the row: one part on CPU adapters (the row's
// index divisions paid once), a vec4 each on GPUs, so that neighbouring invocations write
// neighbouring bytes (one row each, their writes were a row apart and did not coalesce).

struct Params {
    rows: u32, // batch * channels * padded_height
    height: u32,
    width: u32,
    padded_height: u32,
    padded_width: u32,
    top: u32,
    left: u32,
    stride_height: u32,
    stride_width: u32,
    parts: u32, // invocations per padded row
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<InElement>;
@group(0) @binding(2) var<storage, read_write> padded: array<OutElement>;


@compute @workgroup_size(WORKGROUP_SIZE)
fn conv2d_pad_input(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let index = folded_index(id, groups);
    let row = index / params.parts;
    if row >= params.rows {
        return;
    }
    let span = (params.padded_width + params.parts - 1u) / params.parts;
    let begin = index % params.parts * span;
    let end = min(begin + span, params.padded_width);
    let plane = row / params.padded_height;
    let padded_y = row % params.padded_height;
    let to = row * params.padded_width;
    // Row y of the source lands on padded row top + y * stride_height.
    let shifted_y = padded_y - params.top; // wraps above the top; then `inside` is false
    let y = shifted_y / params.stride_height;
    let inside = padded_y >= params.top && shifted_y % params.stride_height == 0u && y < params.height;
    let source = (plane * params.height + select(0u, y, inside)) * params.width;
    // Walk the span with the next source column's place in hand: no division per value (a CPU
    // adapter emulates integer division lane by lane). The first source column at or after
    // `begin`:
    var x = 0u;
    if begin > params.left {
        x = (begin - params.left + params.stride_width - 1u) / params.stride_width;
    }
    var next = params.left + x * params.stride_width;
    for (var padded_x = begin; padded_x < end; padded_x++) {
        var value = OutElement(0.0);
        if inside && padded_x == next && x < params.width {
            value = OutElement(input[source + x]);
            x++;
            next += params.stride_width;
        }
        padded[to + padded_x] = value;
    }
}
