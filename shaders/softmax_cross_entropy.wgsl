// Softmax cross-entropy with integer labels, one image per invocation: the image's loss
//   loss[n] = log(sum_c exp(x_c)) - x_label
// and its gradient, scaled by the head's weight over the batch size (PyTorch's mean):
//   grad[n, c] = scale * (softmax(x)_c - [c == label])
// Written (not added) into the head's output gradient. The row's maximum is subtracted before
// exp, so that no logit overflows it.

struct Params {
    batch: u32,
    classes: u32,
    scale: f32, // the head's weight / batch
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<InElement>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_cross_entropy(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let n = folded_index(id, groups);
    if n >= params.batch {
        return;
    }
    let row = n * params.classes;
    var largest = logit(row);
    for (var c = 1u; c < params.classes; c++) {
        largest = max(largest, logit(row + c));
    }
    var sum = 0.0;
    for (var c = 0u; c < params.classes; c++) {
        sum += exp(logit(row + c) - largest);
    }
    let label = labels[n];
    for (var c = 0u; c < params.classes; c++) {
        let probability = exp(logit(row + c) - largest) / sum;
        grad[row + c] = params.scale * (probability - select(0.0, 1.0, c == label));
    }
    loss[n] = log(sum) - (logit(row + label) - largest);
}

// Logit i, as f32 (the network may store its logits as f16).
fn logit(i: u32) -> f32 {
    return f32(logits[i]);
}
