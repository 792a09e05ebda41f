// What both LRN kernels share: their parameters, the per-layer override constants, and the
// window of twelve channels that slides along in three vec4 registers (named vectors rather than
// an array, because llvmpipe keeps a dynamically indexed array in memory). Each kernel file
// declares the `input` binding that value_at reads.

struct LrnParams {
    batch: u32,
    channels: u32,
    plane: u32,
    // Windows stop at the edges of each group of this many channels (all channels: one group).
    channels_per_group: u32,
    bias: f32,
    alpha: f32,
    _pad0: u32,
    _pad1: u32,
}

// Fixed per layer when the pipeline is made, so that the window's mask and the choice of power
// fold away.
override DEPTH_RADIUS: u32;
override BETA: f32;

// The widest radius the sliding window holds; wider ones sum from memory.
const WIDEST_RADIUS: u32 = 5u;

// Twelve consecutive channels, oldest first: slot i (0-3 in `low`, 4-7 in `middle`, 8-11 in
// `high`) holds channel c - 6 + i when slot 6 holds channel c, so slots 1..11 cover radius 5.
struct Window {
    low: vec4<f32>,
    middle: vec4<f32>,
    high: vec4<f32>,
}

// Channel k's value, or zero past the group's last channel.
fn value_at(base: u32, k: u32, last: u32) -> f32 {
    if k > last {
        return 0.0;
    }
    return f32(input[base + k * params.plane]);
}

fn shift_in(w: Window, value: f32) -> Window {
    return Window(
        vec4<f32>(w.low.yzw, w.middle.x),
        vec4<f32>(w.middle.yzw, w.high.x),
        vec4<f32>(w.high.yzw, value),
    );
}

fn squared(w: Window) -> Window {
    return Window(w.low * w.low, w.middle * w.middle, w.high * w.high);
}

// 1 in the slots within DEPTH_RADIUS of slot 6, 0 elsewhere.
fn radius_mask() -> Window {
    let r = i32(DEPTH_RADIUS);
    let distance_low = abs(vec4<i32>(0, 1, 2, 3) - 6);
    let distance_middle = abs(vec4<i32>(4, 5, 6, 7) - 6);
    let distance_high = abs(vec4<i32>(8, 9, 10, 11) - 6);
    return Window(
        select(vec4<f32>(0.0), vec4<f32>(1.0), distance_low <= vec4<i32>(r)),
        select(vec4<f32>(0.0), vec4<f32>(1.0), distance_middle <= vec4<i32>(r)),
        select(vec4<f32>(0.0), vec4<f32>(1.0), distance_high <= vec4<i32>(r)),
    );
}

fn masked_sum(w: Window, mask: Window) -> f32 {
    return dot(w.low, mask.low) + dot(w.middle, mask.middle) + dot(w.high, mask.high);
}

// d^-BETA. AlexNet's LRN beta of 0.75 as d^-1/2 * d^-1/4 from square roots: cheaper than pow (an
// exp2 of a log2) on CPU adapters, see docs/kernels.md, and more exact.
fn inverse_power(d: f32) -> f32 {
    if BETA == 0.75 {
        let r = inverseSqrt(d);
        return r * sqrt(r);
    }
    return pow(d, -BETA);
}

