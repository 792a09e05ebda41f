// A convolution's output gradient, transposed for conv2d_backward_filter: from NCHW to
// [pixel of the batch][group][out channels of the group rounded up to 16], zero in the padding.
//
// conv2d_backward_filter reduces over the pixels and needs, at each, the gradients of 16
// consecutive output channels: sixteen loads from sixteen planes in NCHW, four vec4 loads here
// (what the scattered loads cost: docs/kernels.md). One pass over the gradient, a small fraction
// of the filter gradient's work. `parts` invocations per pixel of the batch (folded grid index),
// each writing its span of the pixel's row four channels at a time, the index arithmetic
// (integer divisions, which a CPU adapter emulates lane by lane) once per span rather than per
// value: the whole row per invocation on CPU adapters (consecutive invocations then read
// consecutive values of each plane), one vec4 per invocation on GPUs (ResNet-50's last stage has
// 1568 pixels at batch 32, too few invocations for a GPU at one per pixel).

struct Params {
    len: u32,          // batch * out_plane * groups * packed_out
    out_plane: u32,    // out_height * out_width
    out_channels: u32,
    groups: u32,
    packed_out: u32,   // out_channels / groups rounded up to 16
    parts: u32,        // invocations per pixel, each writing a span of its row's vec4s
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<f32>;
@group(0) @binding(2) var<storage, read_write> transposed: array<vec4<f32>>;


@compute @workgroup_size(WORKGROUP_SIZE)
fn conv2d_transpose_grad_output(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let index = folded_index(id, groups);
    let pixel = index / params.parts;
    // Floats of one pixel's row: every group's channels, each rounded up to 16.
    let row = params.groups * params.packed_out;
    if pixel >= params.len / row {
        return;
    }
    let row_vec4s = row / 4u;
    let span = (row_vec4s + params.parts - 1u) / params.parts;
    let begin = index % params.parts * span;
    let end = min(begin + span, row_vec4s);
    // The only divisions: once per span, not per value.
    let image = pixel / params.out_plane;
    let within = pixel % params.out_plane;
    let out_per_group = params.out_channels / params.groups;
    let first = image * params.out_channels * params.out_plane + within;
    var group = begin * 4u / params.packed_out;
    var block = begin * 4u % params.packed_out;
    for (var at = pixel * row_vec4s + begin; at < pixel * row_vec4s + end; at++) {
        var value = vec4<f32>(0.0);
        for (var j = 0u; j < 4u; j++) {
            let channel = block + j;
            if channel < out_per_group {
                let c = group * out_per_group + channel;
                value[j] = grad_output[first + c * params.out_plane];
            }
        }
        transposed[at] = value;
        block += 4u;
        if block == params.packed_out {
            block = 0u;
            group++;
        }
    }
}
