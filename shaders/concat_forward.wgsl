// One input of a channel concatenation, NCHW: copies every image's [channels, plane] block of the
// input into its slice of the output, which holds all inputs' channels in order. The host runs
// one dispatch per input (GoogLeNet's four Inception branches). Every invocation owns four
// consecutive elements.

struct Params {
    len: u32,             // batch * input channels * plane
    input_per_image: u32, // input channels * plane
    output_per_image: u32,
    offset: u32,          // the slice's first channel * plane
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;


@compute @workgroup_size(WORKGROUP_SIZE)
fn concat_forward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let first = folded_index(id, groups) * 4u;
    for (var i = first; i < min(first + 4u, params.len); i++) {
        let image = i / params.input_per_image;
        let within = i % params.input_per_image;
        output[image * params.output_per_image + params.offset + within] = input[i];
    }
}
