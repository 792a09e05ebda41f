// ReLU backward, in place: the gradient passes where the layer's output was positive and is zero
// elsewhere (output > 0 exactly where the pre-activation was > 0; the gradient at 0 is 0, as in
// TensorFlow and PyTorch). Every invocation owns four consecutive elements.

struct Params {
    len: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> output: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn relu_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    // The host folds large launches into a 2-D grid (one dimension holds at most 65535 groups).
    let first = (id.x + id.y * groups.x * WORKGROUP_SIZE) * 4u;
    for (var i = first; i < min(first + 4u, params.len); i++) {
        grad[i] = select(0.0, grad[i], output[i] > 0.0);
    }
}
