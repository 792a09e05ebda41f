// The forward convolution's packed weights, transposed and flipped for the input gradient: from
// [group][in channel, ky, kx][out channels rounded up to 16] to
// [group][out channel, kh-1-ky, kw-1-kx][in channels rounded up to 16], zero in the padding.
//
// That is the packed layout of the convolution that maps the output gradient back to the input
// gradient (channels swapped, kernel rotated by 180 degrees), so for stride 1 the input gradient
// is conv2d_forward (either variant) run on the zero-bordered output gradient (spread apart by the
// stride on workgroup tiles); conv2d_backward_data reads it for the strided case on register
// blocks. Each reduction step's 16 weights are four vec4 loads, where the
// forward layout needs sixteen scattered ones. The weights change with every training step, so
// the backward pass runs this first; it moves as many bytes as the weights. `parts` invocations
// per row of the transposed layout (folded grid index), each writing its span of the row four
// channels at a time, its index divisions (which a CPU adapter emulates lane by lane) once per
// span rather than per value: one span per row on CPU adapters, one vec4 per invocation on GPUs
// (a row per invocation left a 2048-channel 1x1 layer's 512 rows to 512 invocations).

struct Params {
    len: u32,           // groups * out_per_group * taps * packed_in
    in_per_group: u32,
    out_per_group: u32,
    taps: u32,          // kernel height * kernel width
    packed_out: u32,    // row length of the forward layout
    packed_in: u32,     // row length of the transposed layout
    parts: u32,         // invocations per row, each writing a span of packed_in / 4 / parts vec4s
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> weight: array<InElement>;
@group(0) @binding(2) var<storage, read_write> transposed: array<vec4<f32>>;


@compute @workgroup_size(WORKGROUP_SIZE)
fn conv2d_transpose_weights(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    // A row of the transposed layout: (group, out channel, rotated tap), and this invocation's
    // part of it.
    let index = folded_index(id, groups);
    let row = index / params.parts;
    if row >= params.len / params.packed_in {
        return;
    }
    let row_vec4s = params.packed_in / 4u;
    let span = (row_vec4s + params.parts - 1u) / params.parts;
    let begin = index % params.parts * span;
    let end = min(begin + span, row_vec4s);
    // The only divisions: once per span, not per value.
    let per_group = params.out_per_group * params.taps;
    let group = row / per_group;
    let within = row % per_group;
    let out_channel = within / params.taps;
    // The kernel rotated by 180 degrees: tap (ky, kx) comes from (kh-1-ky, kw-1-kx).
    let tap = params.taps - 1u - within % params.taps;
    // Input channel c's weight at that tap, in the forward layout, is `step` after c - 1's.
    let first = (group * params.in_per_group * params.taps + tap) * params.packed_out + out_channel;
    let step = params.taps * params.packed_out;
    var at = row * row_vec4s + begin;
    for (var block = begin * 4u; block < end * 4u; block += 4u) {
        var value = vec4<f32>(0.0);
        for (var j = 0u; j < 4u; j++) {
            let in_channel = block + j;
            if in_channel < params.in_per_group {
                value[j] = f32(weight[first + in_channel * step]);
            }
        }
        transposed[at] = value;
        at++;
    }
}
