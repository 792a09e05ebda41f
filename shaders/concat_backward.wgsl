// One input's gradient of a channel concatenation, NCHW: its slice of the output gradient, copied
// (accumulate = 0) or added (accumulate = 1, where the input already received another layer's
// gradient). The host runs one dispatch per input. Every invocation owns one unit of `Values`: four consecutive elements
// (values_by_four.wgsl) where every length the host passes is a multiple of 4, else one
// (values_by_one.wgsl); lengths are in units.

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
@group(0) @binding(1) var<storage, read> grad_output: array<Values>;
@group(0) @binding(2) var<storage, read_write> grad_input: array<Values>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn concat_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let first = folded_index(id, groups) * CONCAT_UNITS;
    var at = first_destination(first);
    for (var i = first; i < min(first + CONCAT_UNITS, params.len); i++) {
        let slice = grad_output[at.x];
        if params.accumulate != 0u {
            grad_input[i] += slice;
        } else {
            grad_input[i] = slice;
        }
        at = next_destination(at);
    }
}
