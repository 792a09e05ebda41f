// One input's gradient of a channel concatenation, NCHW: its slice of the output gradient, copied
// (accumulate = 0) or added (accumulate = 1, where the input already received another layer's
// gradient). The host runs one dispatch per input. Every invocation owns four consecutive
// elements of the input's gradient.

struct Params {
    len: u32,             // batch * input channels * plane
    input_per_image: u32, // input channels * plane
    output_per_image: u32,
    offset: u32,          // the slice's first channel * plane
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad_input: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn concat_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let first = folded_index(id, groups) * 4u;
    for (var i = first; i < min(first + 4u, params.len); i++) {
        let image = i / params.input_per_image;
        let within = i % params.input_per_image;
        let slice = grad_output[image * params.output_per_image + params.offset + within];
        grad_input[i] = select(0.0, grad_input[i], params.accumulate != 0u) + slice;
    }
}
