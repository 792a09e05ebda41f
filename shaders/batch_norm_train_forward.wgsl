// Batch normalisation in training mode, NCHW, one workgroup per channel: the channel's mean and
// biased variance over the whole batch (N, H, W), as PyTorch's BatchNorm2d.train() normalises by,
// then the output y = (x - mean) / sqrt(var + eps) * weight + bias (ReLU'd if asked for), and the
// running statistics updated as PyTorch does (momentum, the variance unbiased by M / (M - 1)).
// The mean and variance are kept beside the weight and bias, in the [4][channels] layout of the
// parameters, for the backward pass.
//
// Three passes over the channel's values (mean; variance of the centred values, which does not
// cancel digits as E[x^2] - E[x]^2 would; output) in one workgroup: after the first, the values
// come from cache on a CPU adapter, so memory sees about one read and one write.
//
// Synchronised across data-parallel replicas (SyncBatchNorm), the kernel runs twice with the host
// between: phase 1 writes this replica's statistics alone; the host combines every replica's into
// the whole batch's, writes them into batch_stats and updates the running statistics itself;
// phase 2 normalises by them.

struct Params {
    batch: u32,
    channels: u32,
    plane: u32, // height * width
    relu: u32,
    eps: f32,
    lanes: u32, // invocations per channel: a power of two up to REDUCTION
    momentum: f32,
    unbiased: f32, // M / (M - 1)
    phase: u32, // 0: everything; 1: the statistics only; 2: the output by batch_stats' statistics
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
// [4][channels]: weight, bias, running mean, running variance (the last two updated here).
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
// [4][channels]: weight, bias, batch mean, biased batch variance.
@group(0) @binding(3) var<storage, read_write> batch_stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

@compute @workgroup_size(REDUCTION)
fn batch_norm_train_forward(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let lanes = params.lanes;
    let channels = params.channels;
    let segment = channel_segment(group.x, local, lanes, channels);
    let c = segment.channel;
    let lane = segment.lane;
    let writes = segment.writes;
    let plane = params.plane;
    var mean = 0.0;
    var variance = 0.0;
    if params.phase == 2u {
        mean = batch_stats[2u * channels + c];
        variance = batch_stats[3u * channels + c];
    } else {
        let moments = channel_moments(c, lane, lanes, local);
        mean = moments.x;
        variance = moments.y;
    }
    if params.phase == 1u {
        if lane == 0u && writes {
            batch_stats[c] = stats[c];
            batch_stats[channels + c] = stats[channels + c];
            batch_stats[2u * channels + c] = mean;
            batch_stats[3u * channels + c] = variance;
        }
        return;
    }
    let scale = stats[c] * inverseSqrt(variance + params.eps);
    let shift = stats[channels + c] - mean * scale;
    for (var n = 0u; n < params.batch; n++) {
        let base = (n * channels + c) * plane;
        for (var p = lane; p < plane; p += lanes) {
            var y = input[base + p] * scale + shift;
            if params.relu != 0u {
                y = max(y, 0.0);
            }
            if writes {
                output[base + p] = y;
            }
        }
    }
    if lane == 0u && writes && params.phase == 0u {
        batch_stats[c] = stats[c];
        batch_stats[channels + c] = stats[channels + c];
        batch_stats[2u * channels + c] = mean;
        batch_stats[3u * channels + c] = variance;
        let keep = 1.0 - params.momentum;
        stats[2u * channels + c] = keep * stats[2u * channels + c] + params.momentum * mean;
        stats[3u * channels + c] = keep * stats[3u * channels + c]
            + params.momentum * variance * params.unbiased;
    }
}

// Channel c's mean and biased variance over the batch, on every invocation of its segment.
fn channel_moments(c: u32, lane: u32, lanes: u32, local: u32) -> vec2<f32> {
    let channels = params.channels;
    let plane = params.plane;
    // Image by image, the invocations stride over the channel's plane: consecutive invocations
    // read consecutive values, and no index needs a division.
    var sum = 0.0;
    for (var n = 0u; n < params.batch; n++) {
        let base = (n * channels + c) * plane;
        for (var p = lane; p < plane; p += lanes) {
            sum += input[base + p];
        }
    }
    let count = f32(params.batch * plane);
    let mean = segment_sum(local, lanes, vec2<f32>(sum, 0.0)).x / count;
    var squares = 0.0;
    for (var n = 0u; n < params.batch; n++) {
        let base = (n * channels + c) * plane;
        for (var p = lane; p < plane; p += lanes) {
            let centred = input[base + p] - mean;
            squares += centred * centred;
        }
    }
    let variance = segment_sum(local, lanes, vec2<f32>(squares, 0.0)).x / count;
    return vec2<f32>(mean, variance);
}
