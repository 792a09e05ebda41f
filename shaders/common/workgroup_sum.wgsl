
// Sums over segments of a workgroup of REDUCTION invocations: the workgroup splits into segments
// of `lanes` consecutive invocations (a power of two), each summing one channel's values, every
// invocation holding a partial sum of a strided share of them; a tree in workgroup memory, two
// sums at once. Every invocation of the workgroup must call it with the same `lanes` (it holds
// barriers) and receives its segment's total.
var<workgroup> partial_sums: array<vec2<f32>, REDUCTION>;

fn segment_sum(local: u32, lanes: u32, value: vec2<f32>) -> vec2<f32> {
    partial_sums[local] = value;
    workgroupBarrier();
    let lane = local % lanes;
    for (var half = lanes / 2u; half > 0u; half /= 2u) {
        if lane < half {
            partial_sums[local] += partial_sums[local + half];
        }
        workgroupBarrier();
    }
    let total = partial_sums[local - lane];
    // The next call overwrites the sums only after every invocation has read this total.
    workgroupBarrier();
    return total;
}
