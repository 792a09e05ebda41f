// Chunked partial sums of a dot product a . b, or of |a| (the L1 norm, with `absolute`): L-BFGS's
// inner products of image-sized vectors. Workgroup g sums its `chunk` consecutive elements and
// writes partial[offset + g]; lbfgs_scalars.wgsl adds the partial sums. One workgroup of
// REDUCTION invocations per chunk.

struct Params {
    len: u32,
    chunk: u32,
    offset: u32,
    absolute: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(REDUCTION)
fn dot(
    @builtin(local_invocation_index) local: u32,
    @builtin(workgroup_id) group: vec3<u32>,
) {
    let start = group.x * params.chunk;
    let end = min(start + params.chunk, params.len);
    var sum = 0.0;
    for (var i = start + local; i < end; i += REDUCTION) {
        if params.absolute != 0u {
            sum += abs(a[i]);
        } else {
            sum += a[i] * b[i];
        }
    }
    let total = segment_sum(local, REDUCTION, vec2<f32>(sum, 0.0));
    if local == 0u {
        partial[params.offset + group.x] = total.x;
    }
}
