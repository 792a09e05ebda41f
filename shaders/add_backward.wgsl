// A residual addition's backward, in one pass: the output gradient, zero where the fused ReLU
// cut the output, goes to both inputs' gradients, written there (accumulate = 0) or added to
// what another reader of that input wrote first (accumulate = 1). (Without ReLU the host binds
// the output gradient in the output's place.) Every invocation owns one unit of `Values`: four consecutive elements
// (values_by_four.wgsl) where every length the host passes is a multiple of 4, else one
// (values_by_one.wgsl); lengths are in units.

struct Params {
    len: u32,
    relu: u32,
    accumulate_first: u32,
    accumulate_second: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> output: array<InValues>;
@group(0) @binding(2) var<storage, read> grad_output: array<Values>;
@group(0) @binding(3) var<storage, read_write> grad_first: array<Values>;
@group(0) @binding(4) var<storage, read_write> grad_second: array<Values>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn add_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = folded_index(id, groups);
    if i >= params.len {
        return;
    }
    var g = grad_output[i];
    if params.relu != 0u {
        g = select(g, Values(0.0), Values(output[i]) <= Values(0.0));
    }
    if params.accumulate_first != 0u {
        grad_first[i] += g;
    } else {
        grad_first[i] = g;
    }
    if params.accumulate_second != 0u {
        grad_second[i] += g;
    } else {
        grad_second[i] = g;
    }
}
