
// A sum over one workgroup of REDUCTION invocations (one channel's values, each invocation
// holding a partial sum of a strided share of them): a tree in workgroup memory, two sums at once.
// Every invocation of the workgroup must call it (it holds barriers) and receives the total.
var<workgroup> partial_sums: array<vec2<f32>, REDUCTION>;

fn workgroup_sum(local: u32, value: vec2<f32>) -> vec2<f32> {
    partial_sums[local] = value;
    workgroupBarrier();
    for (var half = REDUCTION / 2u; half > 0u; half /= 2u) {
        if local < half {
            partial_sums[local] += partial_sums[local + half];
        }
        workgroupBarrier();
    }
    let total = partial_sums[0];
    // The next call overwrites the sums only after every invocation has read this total.
    workgroupBarrier();
    return total;
}
