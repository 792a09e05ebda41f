
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

// An invocation's place among the channels a workgroup sums: REDUCTION / lanes channels per
// workgroup, `lanes` invocations each (few values per channel, as in ResNet's last stage, take
// few lanes, so that workgroups are not mostly idle).
struct Segment {
    channel: u32,
    lane: u32,
    // False past the last channel (the last workgroup's spare segments): such an invocation
    // redoes the last channel's sums for the barriers' sake and writes nothing.
    writes: bool,
}

fn channel_segment(group: u32, local: u32, lanes: u32, channels: u32) -> Segment {
    let channel = group * (REDUCTION / lanes) + local / lanes;
    return Segment(min(channel, channels - 1u), local % lanes, channel < channels);
}
