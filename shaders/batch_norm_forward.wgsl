// Batch normalisation at inference, NCHW: y = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] +
// bias[c], then ReLU if asked for, by the running statistics. The fast path folds this into the
// convolution before it when the weights are loaded; this kernel runs the unfolded network, so
// that `convnet check` can show the folding changes nothing (training normalises in
// batch_norm_train_forward). Every invocation owns four consecutive elements.

struct Params {
    len: u32,      // batch * channels * plane
    plane: u32,    // height * width
    channels: u32,
    eps: f32,
    relu: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<InElement>;
// [4][channels]: weight, bias, running mean, running variance.
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<OutElement>;


@compute @workgroup_size(WORKGROUP_SIZE)
fn batch_norm_forward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let first = folded_index(id, groups) * 4u;
    // The channel of the first element; the next elements cross into the next plane at most
    // where `within` wraps (a division per four elements, not per element).
    var row = first / params.plane;
    var within = first % params.plane;
    for (var i = first; i < min(first + 4u, params.len); i++) {
        let c = row % params.channels;
        let weight = stats[c];
        let bias = stats[params.channels + c];
        let mean = stats[2u * params.channels + c];
        let variance = stats[3u * params.channels + c];
        var y = (f32(input[i]) - mean) * (weight / sqrt(variance + params.eps)) + bias;
        if params.relu != 0u {
            y = max(y, 0.0);
        }
        output[i] = OutElement(y);
        within += 1u;
        if within == params.plane {
            within = 0u;
            row += 1u;
        }
    }
}
