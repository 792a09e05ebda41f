// ReLU backward, in place: the gradient passes where the layer's output was positive and is zero
// elsewhere (output > 0 exactly where the pre-activation was > 0; the gradient at 0 is 0, as in
// TensorFlow and PyTorch). Every invocation owns one unit of `Values`: four consecutive elements
// (values_by_four.wgsl) where the length is a multiple of 4, else one (values_by_one.wgsl); the
// length is in units.

struct Params {
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> output: array<InValues>;
@group(0) @binding(2) var<storage, read_write> grad: array<Values>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn relu_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = folded_index(id, groups);
    if i >= params.len {
        return;
    }
    grad[i] = select(Values(0.0), grad[i], Values(output[i]) > Values(0.0));
}
