// One input of a channel concatenation, NCHW: copies every image's [channels, plane] block of the
// input into its slice of the output, which holds all inputs' channels in order. The host runs
// one dispatch per input (GoogLeNet's four Inception branches). Every invocation owns one unit of `Values`: four consecutive elements
// (values_by_four.wgsl) where every length the host passes is a multiple of 4, else one
// (values_by_one.wgsl); lengths are in units.

struct Params {
    len: u32,             // batch * input channels * plane
    input_per_image: u32, // input channels * plane
    output_per_image: u32,
    offset: u32,          // the slice's first channel * plane
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<InValues>;
@group(0) @binding(2) var<storage, read_write> output: array<OutValues>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn concat_forward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let first = folded_index(id, groups) * CONCAT_UNITS;
    var at = first_destination(first);
    for (var i = first; i < min(first + CONCAT_UNITS, params.len); i++) {
        output[at.x] = OutValues(input[i]);
        at = next_destination(at);
    }
}
