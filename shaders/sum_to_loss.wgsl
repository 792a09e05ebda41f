// Ends a loss's reduction: losses[slot] = weight * (sum of the `count` partial sums). One
// workgroup of REDUCTION invocations. Each of style transfer's loss terms has its slot, and the
// host reads the few slots back after a step: the only values that leave the GPU.

struct Params {
    count: u32,
    slot: u32,
    weight: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> losses: array<f32>;

@compute @workgroup_size(REDUCTION)
fn sum_to_loss(@builtin(local_invocation_index) local: u32) {
    var sum = 0.0;
    for (var i = local; i < params.count; i += REDUCTION) {
        sum += partial[i];
    }
    let total = segment_sum(local, REDUCTION, vec2<f32>(sum, 0.0));
    if local == 0u {
        losses[params.slot] = params.weight * total.x;
    }
}
