// One Adam step on the image style transfer optimises, as torch.optim.Adam takes it (no weight
// decay, no amsgrad), then the image clamped to [0, 1] and normalised into the network's input:
//
//   m = m + (1 - beta1) (g - m)            v = beta2 v + (1 - beta2) g^2
//   image -= step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + epsilon)
//
// step_size = lr / (1 - beta1^t) and sqrt(1 - beta2^t) change every step: the host writes them
// into `step_scales` before each step. `moments` holds m, then v. `normalization` holds the three
// means, then the three standard deviations.

struct Params {
    len: u32,
    plane: u32,
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> step_scales: array<f32>;
@group(0) @binding(3) var<storage, read> normalization: array<f32>;
@group(0) @binding(4) var<storage, read_write> moments: array<f32>;
@group(0) @binding(5) var<storage, read_write> image: array<f32>;
@group(0) @binding(6) var<storage, read_write> input: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn adam(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = folded_index(id, groups);
    if i >= params.len {
        return;
    }
    let g = grad[i];
    let m = moments[i] + (1.0 - params.beta1) * (g - moments[i]);
    let v = params.beta2 * moments[params.len + i] + (1.0 - params.beta2) * g * g;
    moments[i] = m;
    moments[params.len + i] = v;
    let denominator = sqrt(v) / step_scales[1] + params.epsilon;
    let x = clamp(image[i] - step_scales[0] * m / denominator, 0.0, 1.0);
    image[i] = x;
    let c = i / params.plane;
    input[i] = (x - normalization[c]) / normalization[3u + c];
}
