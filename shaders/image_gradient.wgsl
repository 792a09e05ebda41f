// The gradient of style transfer's loss with respect to the image it optimises (in [0, 1], not
// normalised), and the image's total variation:
//
//   grad[c, y, x] = input_grad[c, y, x] / std[c] + tv_weight * d TV / d image[c, y, x]
//   TV            = sum over pixels of (right - pixel)^2 + (below - pixel)^2
//
// where input_grad is the network input's gradient (the input is (image - mean) / std). Each
// pixel owns the differences to its right and lower neighbours; its gradient gathers the two
// differences it owns and the two its left and upper neighbours own. partial[g] sums workgroup
// g's chunk of TV terms (unweighted), for sum_to_loss. One workgroup of REDUCTION invocations
// per chunk.

struct Params {
    channels: u32,
    height: u32,
    width: u32,
    chunk: u32,
    tv_weight: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> image: array<f32>;
@group(0) @binding(2) var<storage, read> normalization: array<f32>;
@group(0) @binding(3) var<storage, read> input_grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad: array<f32>;
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(REDUCTION)
fn image_gradient(
    @builtin(local_invocation_index) local: u32,
    @builtin(workgroup_id) group: vec3<u32>,
) {
    let w = params.width;
    let plane = params.height * w;
    let len = params.channels * plane;
    let start = group.x * params.chunk;
    let end = min(start + params.chunk, len);
    var sum = 0.0;
    for (var i = start + local; i < end; i += REDUCTION) {
        let c = i / plane;
        let y = (i % plane) / w;
        let x = i % w;
        let v = image[i];
        var tv_grad = 0.0;
        if y > 0u {
            tv_grad += 2.0 * (v - image[i - w]);
        }
        if y + 1u < params.height {
            let d = image[i + w] - v;
            tv_grad -= 2.0 * d;
            sum += d * d;
        }
        if x > 0u {
            tv_grad += 2.0 * (v - image[i - 1u]);
        }
        if x + 1u < w {
            let d = image[i + 1u] - v;
            tv_grad -= 2.0 * d;
            sum += d * d;
        }
        grad[i] = input_grad[i] / normalization[3u + c] + params.tv_weight * tv_grad;
    }
    let total = segment_sum(local, REDUCTION, vec2<f32>(sum, 0.0));
    if local == 0u {
        partial[group.x] = total.x;
    }
}
