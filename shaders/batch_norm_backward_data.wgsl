// Batch normalisation in training mode, backward, second half: the input gradient. The batch
// statistics are functions of every input, so each input's gradient has terms through them:
//
//   dx = weight / std * (dy - sum(dy) / M - x_hat * sum(dy * x_hat) / M)
//
// per channel, M = N * H * W values, the two sums from batch_norm_backward_parameters. Every
// invocation owns four consecutive elements.

struct Params {
    len: u32,   // batch * channels * plane
    plane: u32, // height * width
    channels: u32,
    eps: f32,
    count: f32, // M: values per channel in the batch
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> grad_output: array<f32>;
// [4][channels]: weight, bias, batch mean, biased batch variance.
@group(0) @binding(3) var<storage, read> batch_stats: array<f32>;
// [2][channels]: sum(dy * x_hat), then sum(dy).
@group(0) @binding(4) var<storage, read> grads: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad_input: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn batch_norm_backward_data(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let first = folded_index(id, groups) * 4u;
    let channels = params.channels;
    // The channel of the first element; the next elements cross into the next plane at most
    // where `within` wraps (a division per four elements, not per element).
    var row = first / params.plane;
    var within = first % params.plane;
    for (var i = first; i < min(first + 4u, params.len); i++) {
        let c = row % channels;
        let inverse_std = inverseSqrt(batch_stats[3u * channels + c] + params.eps);
        let x_hat = (input[i] - batch_stats[2u * channels + c]) * inverse_std;
        let centred = grad_output[i] - grads[channels + c] / params.count
            - x_hat * grads[c] / params.count;
        grad_input[i] = batch_stats[c] * inverse_std * centred;
        within += 1u;
        if within == params.plane {
            within = 0u;
            row += 1u;
        }
    }
}
