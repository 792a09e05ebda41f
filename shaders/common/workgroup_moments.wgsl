
// Moments over segments of a workgroup (as segment_sum in workgroup_sum.wgsl): every invocation
// holds (count, mean, sum of squared deviations from the mean) of its share of a channel's
// values, and receives its segment's, the pairs combined up a tree by Chan, Golub and LeVeque's
// formula, which neither loses digits to cancellation nor needs a second pass over the values.
var<workgroup> partial_moments: array<vec3<f32>, REDUCTION>;

fn combine_moments(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    let count = a.x + b.x;
    if count == 0.0 {
        return a;
    }
    let delta = b.y - a.y;
    let share = b.x / count;
    return vec3<f32>(count, a.y + delta * share, a.z + b.z + delta * delta * a.x * share);
}

fn segment_moments(local: u32, lanes: u32, moments: vec3<f32>) -> vec3<f32> {
    partial_moments[local] = moments;
    workgroupBarrier();
    let lane = local % lanes;
    for (var half = lanes / 2u; half > 0u; half /= 2u) {
        if lane < half {
            partial_moments[local] = combine_moments(
                partial_moments[local],
                partial_moments[local + half],
            );
        }
        workgroupBarrier();
    }
    let whole = partial_moments[local - lane];
    workgroupBarrier();
    return whole;
}
