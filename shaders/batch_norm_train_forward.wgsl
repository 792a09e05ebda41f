// Batch normalisation in training mode, NCHW, one workgroup per channel: the channel's mean and
// biased variance over the whole batch (N, H, W), as PyTorch's BatchNorm2d.train() normalises by,
// then the output y = (x - mean) / sqrt(var + eps) * weight + bias (ReLU'd if asked for), and the
// running statistics updated as PyTorch does (momentum, the variance unbiased by M / (M - 1)).
// The mean and variance are kept beside the weight and bias, in the [4][channels] layout of the
// parameters, for the backward pass.
//
// Two passes over the channel's values in one workgroup: the mean and variance together (Welford's
// running moments, which do not cancel digits as E[x^2] - E[x]^2 would), then the output; after
// the first, the values come from cache on a CPU adapter, so memory sees about one read and one
// write. The values are
// read and written in units of `Values` (values_by_one.wgsl or values_by_four.wgsl, which the
// host chooses by the plane's size).
//
// Synchronised across data-parallel replicas (SyncBatchNorm), the kernel runs twice with the host
// between: phase 1 writes this replica's statistics alone; the host combines every replica's into
// the whole batch's, writes them into batch_stats and updates the running statistics itself;
// phase 2 normalises by them.

struct Params {
    batch: u32,
    channels: u32,
    plane: u32, // height * width, a multiple of VALUES
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
@group(0) @binding(1) var<storage, read> input: array<InValues>;
// [4][channels]: weight, bias, running mean, running variance (the last two updated here).
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
// [4][channels]: weight, bias, batch mean, biased batch variance.
@group(0) @binding(3) var<storage, read_write> batch_stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<OutValues>;

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
    let units = params.plane / VALUES;
    // The values are taken less `origin`, the channel's first value: where the mean is large
    // against the spread (few values per channel), x - origin is exact and the mean and the
    // centred values lose no digits to it.
    var origin = 0.0;
    var shifted_mean = 0.0;
    var variance = 0.0;
    if params.phase == 2u {
        shifted_mean = batch_stats[2u * channels + c];
        variance = batch_stats[3u * channels + c];
    } else {
        origin = first_value(Values(input[c * units]));
        let moments = channel_moments(c, lane, lanes, local, origin);
        shifted_mean = moments.x;
        variance = moments.y;
    }
    let mean = origin + shifted_mean;
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
    let shift = stats[channels + c] - shifted_mean * scale;
    for (var n = 0u; n < params.batch; n++) {
        let base = (n * channels + c) * units;
        for (var p = lane; p < units; p += lanes) {
            var y = (Values(input[base + p]) - origin) * scale + shift;
            if params.relu != 0u {
                y = max(y, Values(0.0));
            }
            if writes {
                output[base + p] = OutValues(y);
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

// Channel c's mean (less `origin`) and biased variance over the batch, on every invocation of its
// segment, in one pass over the values: each invocation keeps Welford's running mean and sum of
// squared deviations of its share (per component of a unit), and the segment combines them.
fn channel_moments(c: u32, lane: u32, lanes: u32, local: u32, origin: f32) -> vec2<f32> {
    let channels = params.channels;
    let units = params.plane / VALUES;
    var seen = 0u;
    var mean = Values(0.0);
    var squares = Values(0.0);
    // Image by image, the invocations stride over the channel's plane: consecutive invocations
    // read consecutive units, and no index needs a division.
    for (var n = 0u; n < params.batch; n++) {
        let base = (n * channels + c) * units;
        for (var p = lane; p < units; p += lanes) {
            seen += 1u;
            let x = Values(input[base + p]) - origin;
            let delta = x - mean;
            mean += delta * (1.0 / f32(seen));
            squares += delta * (x - mean);
        }
    }
    // The components' moments, each over `seen` values, as one invocation's.
    let count = f32(seen);
    let own_mean = sum_of(mean) / f32(VALUES);
    let spread = mean - own_mean;
    let own_squares = sum_of(squares) + count * sum_of(spread * spread);
    let moments = segment_moments(local, lanes, vec3<f32>(count * f32(VALUES), own_mean, own_squares));
    return vec2<f32>(moments.y, moments.z / moments.x);
}
