// The squared difference of two tensors, summed, and the difference itself, scaled: style
// transfer's content loss (a layer's features against the content image's) and style loss (a
// Gram matrix against the style image's), with the gradients they start from:
//
//   d[i]          = a_scale * a[i] - b_scale * b[i]
//   difference[i] = gradient_scale * d[i]
//   partial[g]    = sum of d[i]^2 over workgroup g's `chunk` consecutive elements
//
// (The Gram matrices arrive as F F^T; a_scale and b_scale divide each by its own C x H x W.)
// sum_to_loss.wgsl adds the partial sums: a short sum per chunk and a short sum of chunks keep
// f32 rounding far below one long serial sum's. One workgroup of REDUCTION invocations per chunk.

struct Params {
    len: u32,
    chunk: u32,
    a_scale: f32,
    b_scale: f32,
    gradient_scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> difference: array<f32>;
@group(0) @binding(4) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(REDUCTION)
fn squared_difference(
    @builtin(local_invocation_index) local: u32,
    @builtin(workgroup_id) group: vec3<u32>,
) {
    let start = group.x * params.chunk;
    let end = min(start + params.chunk, params.len);
    var sum = 0.0;
    for (var i = start + local; i < end; i += REDUCTION) {
        let d = params.a_scale * a[i] - params.b_scale * b[i];
        difference[i] = params.gradient_scale * d;
        sum += d * d;
    }
    let total = segment_sum(local, REDUCTION, vec2<f32>(sum, 0.0));
    if local == 0u {
        partial[group.x] = total.x;
    }
}
