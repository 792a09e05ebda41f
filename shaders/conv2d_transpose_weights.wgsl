// The forward convolution's packed weights, transposed and flipped for the input gradient: from
// [group][in channel, ky, kx][out channels rounded up to 16] to
// [group][out channel, kh-1-ky, kw-1-kx][in channels rounded up to 16], zero in the padding.
//
// That is the packed layout of the convolution that maps the output gradient back to the input
// gradient (channels swapped, kernel rotated by 180 degrees), so for stride 1 the input gradient
// is conv2d_forward (either variant) run on the zero-bordered output gradient; conv2d_backward_data
// reads it for the strided case. Each reduction step's 16 weights are four vec4 loads, where the
// forward layout needs sixteen scattered ones. The weights change with every training step, so
// the backward pass runs this first; it moves as many bytes as the weights. One invocation per
// element of the transposed layout (folded grid index).

struct Params {
    len: u32,           // groups * out_per_group * taps * packed_in
    in_per_group: u32,
    out_per_group: u32,
    taps: u32,          // kernel height * kernel width
    packed_out: u32,    // row length of the forward layout
    packed_in: u32,     // row length of the transposed layout
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> transposed: array<f32>;


@compute @workgroup_size(WORKGROUP_SIZE)
fn conv2d_transpose_weights(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = folded_index(id, groups);
    if i >= params.len {
        return;
    }
    let per_group = params.out_per_group * params.taps * params.packed_in;
    let group = i / per_group;
    let row = (i % per_group) / params.packed_in;
    let in_channel = i % params.packed_in;
    let out_channel = row / params.taps;
    // The kernel rotated by 180 degrees: tap (ky, kx) comes from (kh-1-ky, kw-1-kx).
    let tap = params.taps - 1u - row % params.taps;
    var value = 0.0;
    if in_channel < params.in_per_group {
        let k = in_channel * params.taps + tap;
        value = weight[(group * params.in_per_group * params.taps + k) * params.packed_out + out_channel];
    }
    transposed[i] = value;
}
