// One SGD step with momentum and weight decay on a parameter buffer, element by element:
//   velocity = momentum * velocity + grad + weight_decay * param;   param -= learning_rate * velocity
// (PyTorch's formulation, no dampening; momentum 0 is plain SGD). Parameters and gradients share the packed
// layouts of the forward kernels, so the update needs no index mapping. Four elements per
// invocation.

struct Params {
    len: u32,
    learning_rate: f32,
    momentum: f32,
    weight_decay: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> velocity: array<f32>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;


@compute @workgroup_size(WORKGROUP_SIZE)
fn sgd(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let first = folded_index(id, groups) * 4u;
    for (var i = first; i < min(first + 4u, params.len); i++) {
        let v = params.momentum * velocity[i] + grad[i] + params.weight_decay * param[i];
        velocity[i] = v;
        param[i] -= params.learning_rate * v;
    }
}
