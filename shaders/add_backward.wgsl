// A residual addition's backward, in one pass: the output gradient, zero where the fused ReLU
// cut the output, goes to both inputs' gradients, written there (accumulate = 0) or added to
// what another reader of that input wrote first (accumulate = 1). Every invocation owns four
// consecutive elements. (Without ReLU the host binds the output gradient in the output's place.)

struct Params {
    len: u32,
    relu: u32,
    accumulate_first: u32,
    accumulate_second: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> output: array<f32>;
@group(0) @binding(2) var<storage, read> grad_output: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad_first: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_second: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn add_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let first = folded_index(id, groups) * 4u;
    for (var i = first; i < min(first + 4u, params.len); i++) {
        let g = select(grad_output[i], 0.0, params.relu != 0u && output[i] <= 0.0);
        grad_first[i] = select(0.0, grad_first[i], params.accumulate_first != 0u) + g;
        grad_second[i] = select(0.0, grad_second[i], params.accumulate_second != 0u) + g;
    }
}
