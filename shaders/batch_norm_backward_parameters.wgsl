// Batch normalisation in training mode, backward, first half: per channel, the sums over the
// batch that are the parameter gradients and that the input gradient needs,
//
//   grad_weight[c] = sum dy * x_hat,   grad_bias[c] = sum dy,   x_hat = (x - mean) / sqrt(var + eps)
//
// with the batch statistics of the forward pass (a fused ReLU's mask is already applied to dy).
// One workgroup per channel.

struct Params {
    batch: u32,
    channels: u32,
    plane: u32, // height * width
    eps: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> grad_output: array<f32>;
// [4][channels]: weight, bias, batch mean, biased batch variance.
@group(0) @binding(3) var<storage, read> batch_stats: array<f32>;
// [2][channels]: the weight's gradient, then the bias's.
@group(0) @binding(4) var<storage, read_write> grads: array<f32>;

@compute @workgroup_size(REDUCTION)
fn batch_norm_backward_parameters(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let c = group.x;
    let channels = params.channels;
    let mean = batch_stats[2u * channels + c];
    let inverse_std = inverseSqrt(batch_stats[3u * channels + c] + params.eps);
    var sums = vec2<f32>(0.0);
    for (var n = 0u; n < params.batch; n++) {
        let base = (n * channels + c) * params.plane;
        for (var p = local; p < params.plane; p += REDUCTION) {
            let dy = grad_output[base + p];
            sums += vec2<f32>(dy * (input[base + p] - mean) * inverse_std, dy);
        }
    }
    let total = workgroup_sum(local, sums);
    if local == 0u {
        grads[c] = total.x;
        grads[channels + c] = total.y;
    }
}
