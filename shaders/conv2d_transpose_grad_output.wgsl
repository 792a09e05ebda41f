// A convolution's output gradient, transposed for conv2d_backward_filter: from NCHW to
// [pixel of the batch][group][out channels of the group rounded up to 16], zero in the padding.
//
// conv2d_backward_filter reduces over the pixels and needs, at each, the gradients of 16
// consecutive output channels: sixteen loads from sixteen planes in NCHW, four vec4 loads here
// (what the scattered loads cost: docs/kernels.md). One pass over the gradient, a small fraction
// of the filter gradient's work. One invocation per element of the transposed layout (folded grid
// index).

struct Params {
    len: u32,          // batch * out_plane * groups * packed_out
    out_plane: u32,    // out_height * out_width
    out_channels: u32,
    groups: u32,
    packed_out: u32,   // out_channels / groups rounded up to 16
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<f32>;
@group(0) @binding(2) var<storage, read_write> transposed: array<f32>;


@compute @workgroup_size(WORKGROUP_SIZE)
fn conv2d_transpose_grad_output(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = folded_index(id, groups);
    if i >= params.len {
        return;
    }
    let channel = i % params.packed_out;
    let row = i / params.packed_out;
    let group = row % params.groups;
    let pixel = row / params.groups;
    let out_per_group = params.out_channels / params.groups;
    var value = 0.0;
    if channel < out_per_group {
        let image = pixel / params.out_plane;
        let within = pixel % params.out_plane;
        let c = group * out_per_group + channel;
        value = grad_output[(image * params.out_channels + c) * params.out_plane + within];
    }
    transposed[i] = value;
}
