// Batch normalisation in training mode, first half: each channel's mean and biased variance over
// the whole batch (N, H, W), as PyTorch's BatchNorm2d.train() normalises by. Writes them beside
// the layer's weight and bias in the [4][channels] layout batch_norm_forward reads, so that the
// same kernel then normalises; updates the running statistics as PyTorch does (momentum, the
// variance unbiased by count / (count - 1)). One workgroup per channel; the variance is a second
// pass over the centred values (not E[x^2] - E[x]^2, which cancels digits).

struct Params {
    batch: u32,
    channels: u32,
    plane: u32, // height * width
    update_running: u32,
    momentum: f32,
    unbiased: f32, // count / (count - 1)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
// [4][channels]: weight, bias, running mean, running variance (the last two updated here).
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
// [4][channels]: weight, bias, batch mean, biased batch variance.
@group(0) @binding(3) var<storage, read_write> batch_stats: array<f32>;

@compute @workgroup_size(REDUCTION)
fn batch_norm_statistics(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let c = group.x;
    let channels = params.channels;
    let plane = params.plane;
    // Image by image, the invocations stride over the channel's plane: consecutive invocations
    // read consecutive values, and no index needs a division.
    var sum = 0.0;
    for (var n = 0u; n < params.batch; n++) {
        let base = (n * channels + c) * plane;
        for (var p = local; p < plane; p += REDUCTION) {
            sum += input[base + p];
        }
    }
    let count = f32(params.batch * plane);
    let mean = workgroup_sum(local, vec2<f32>(sum, 0.0)).x / count;
    var squares = 0.0;
    for (var n = 0u; n < params.batch; n++) {
        let base = (n * channels + c) * plane;
        for (var p = local; p < plane; p += REDUCTION) {
            let centred = input[base + p] - mean;
            squares += centred * centred;
        }
    }
    let variance = workgroup_sum(local, vec2<f32>(squares, 0.0)).x / count;
    if local == 0u {
        batch_stats[c] = stats[c];
        batch_stats[channels + c] = stats[channels + c];
        batch_stats[2u * channels + c] = mean;
        batch_stats[3u * channels + c] = variance;
        if params.update_running != 0u {
            let keep = 1.0 - params.momentum;
            stats[2u * channels + c] = keep * stats[2u * channels + c] + params.momentum * mean;
            stats[3u * channels + c] = keep * stats[3u * channels + c]
                + params.momentum * variance * params.unbiased;
        }
    }
}
