// Batch normalisation in training mode, backward, NCHW, one workgroup per channel. With dy the
// output gradient (zero where a fused ReLU cut the output), x_hat = (x - mean) / sqrt(var + eps)
// and M = N * H * W values per channel:
//
//   grad_weight[c] = sum dy * x_hat          grad_bias[c] = sum dy
//   dx = weight / std * (dy - sum(dy) / M - x_hat * sum(dy * x_hat) / M)
//
// (the batch statistics are functions of every input, so every input's gradient has terms
// through them). Two passes over the channel's values in one workgroup, the sums between them;
// after the first, the values come from cache on a CPU adapter. The values are read and written
// in units of `Values` (values_by_one.wgsl or values_by_four.wgsl, which the host chooses by the
// plane's size).
//
// Synchronised across data-parallel replicas (SyncBatchNorm), the sums are the whole batch's:
// the kernel first runs with input_gradient 0 (this replica's sums into grads), the host combines
// every replica's and writes into grads what this replica's formula needs, and a second run
// with input_gradient 2 takes its sums from grads.

struct Params {
    batch: u32,
    channels: u32,
    plane: u32, // height * width, a multiple of VALUES
    relu: u32,
    eps: f32,
    lanes: u32, // invocations per channel: a power of two up to REDUCTION
    input_gradient: u32, // 0: the parameters' gradients only; 1: and the input's; 2: the input's by grads' sums
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<InValues>;
@group(0) @binding(2) var<storage, read> output: array<InValues>;
@group(0) @binding(3) var<storage, read> grad_output: array<Values>;
// [4][channels]: weight, bias, batch mean, biased batch variance.
@group(0) @binding(4) var<storage, read> batch_stats: array<f32>;
// [2][channels]: the weight's gradient, then the bias's.
@group(0) @binding(5) var<storage, read_write> grads: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad_input: array<Values>;

// The output gradient at unit `at`, through the fused ReLU.
fn dy(at: u32) -> Values {
    let gradient = grad_output[at];
    if params.relu == 0u {
        return gradient;
    }
    return select(gradient, Values(0.0), Values(output[at]) <= Values(0.0));
}

@compute @workgroup_size(REDUCTION)
fn batch_norm_backward(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let lanes = params.lanes;
    let channels = params.channels;
    let segment = channel_segment(group.x, local, lanes, channels);
    let c = segment.channel;
    let lane = segment.lane;
    let writes = segment.writes;
    let units = params.plane / VALUES;
    let mean = batch_stats[2u * channels + c];
    let inverse_std = inverseSqrt(batch_stats[3u * channels + c] + params.eps);
    var sums = vec2<f32>(grads[c], grads[channels + c]);
    if params.input_gradient != 2u {
        var dy_centred = Values(0.0);
        var sum_dy = Values(0.0);
        for (var n = 0u; n < params.batch; n++) {
            let base = (n * channels + c) * units;
            for (var p = lane; p < units; p += lanes) {
                let g = dy(base + p);
                dy_centred += g * (Values(input[base + p]) - mean);
                sum_dy += g;
            }
        }
        let dy_x_hat = sum_of(dy_centred) * inverse_std;
        sums = segment_sum(local, lanes, vec2<f32>(dy_x_hat, sum_of(sum_dy)));
        if lane == 0u && writes {
            grads[c] = sums.x;
            grads[channels + c] = sums.y;
        }
        if params.input_gradient == 0u {
            return;
        }
    }
    let count = f32(params.batch * params.plane);
    let scale = batch_stats[c] * inverse_std;
    let mean_dy = sums.y / count;
    let mean_dy_x_hat = sums.x / count;
    for (var n = 0u; n < params.batch; n++) {
        let base = (n * channels + c) * units;
        for (var p = lane; p < units; p += lanes) {
            let x_hat = (Values(input[base + p]) - mean) * inverse_std;
            if writes {
                grad_input[base + p] = scale * (dy(base + p) - mean_dy - x_hat * mean_dy_x_hat);
            }
        }
    }
}
