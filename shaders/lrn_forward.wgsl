// Local response normalisation across channels, TensorFlow's semantics (tf.nn.lrn), NCHW:
//
//   output[n, c, h, w] = input[n, c, h, w] / (bias + alpha * sum_{k = c - r .. c + r} input[n, k, h, w]^2)^beta
//
// with the window clipped at the first and last channel, and alpha NOT divided by the window size
// (Caffe and PyTorch divide it); with groups, windows also stop at each group's edges.
//
// Every invocation owns one pixel position and walks down its channels; neighbouring invocations
// read neighbouring pixels, so loads stay contiguous. For radii up to 5 (AlexNet's) the window
// slides along in three vec4 registers: each value is loaded once, and each channel's sum is still
// taken afresh over its window (a running sum would pick up cancellation error as large values
// leave it). The window lives in named vectors rather than an array because llvmpipe keeps a
// dynamically indexed array in memory, which made this kernel 3.5x slower. The radius and beta are
// override constants, fixed per layer when the pipeline is made, so that the window's mask and the
// choice of power fold away.

struct Params {
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

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;
override DEPTH_RADIUS: u32;
override BETA: f32;

// Twelve consecutive channels, oldest first: slot i (0-3 in `low`, 4-7 in `middle`, 8-11 in
// `high`) holds channel c - 6 + i when slot 6 holds channel c, so slots 1..11 cover radius 5.
struct Window {
    low: vec4<f32>,
    middle: vec4<f32>,
    high: vec4<f32>,
}

const WIDEST_RADIUS: u32 = 5u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn lrn_forward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    // The host folds large launches into a 2-D grid (one dimension holds at most 65535 groups).
    let position = id.x + id.y * groups.x * WORKGROUP_SIZE;
    if position >= params.batch * params.plane {
        return;
    }
    let base = position / params.plane * params.channels * params.plane + position % params.plane;
    for (var first = 0u; first < params.channels; first += params.channels_per_group) {
        let last = first + params.channels_per_group - 1u;
        if DEPTH_RADIUS <= WIDEST_RADIUS {
            sliding_window(base, first, last);
        } else {
            every_window_afresh(base, first, last);
        }
    }
}

// Channels first..=last (one group) with the window sliding along in registers.
fn sliding_window(base: u32, first: u32, last: u32) {
    let mask = radius_mask();
    // Channels first .. first + 4 go in ahead, so that the loop's first step centres `first`.
    var x = Window(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k = first; k < first + WIDEST_RADIUS; k++) {
        x = shift_in(x, value_at(base, k, last));
    }
    for (var c = first; c <= last; c++) {
        x = shift_in(x, value_at(base, c + WIDEST_RADIUS, last));
        let sum_sq = masked_sum(squared(x), mask);
        output[base + c * params.plane] = x.middle.z * inverse_power(params.bias + params.alpha * sum_sq);
    }
}

// Any radius: each channel's window summed from memory.
fn every_window_afresh(base: u32, first: u32, last: u32) {
    for (var c = first; c <= last; c++) {
        var sum_sq = 0.0;
        for (var k = max(c, first + DEPTH_RADIUS) - DEPTH_RADIUS; k <= min(c + DEPTH_RADIUS, last); k++) {
            let v = input[base + k * params.plane];
            sum_sq += v * v;
        }
        let at = base + c * params.plane;
        output[at] = input[at] * inverse_power(params.bias + params.alpha * sum_sq);
    }
}

// Channel k's value, or zero past the group's last channel.
fn value_at(base: u32, k: u32, last: u32) -> f32 {
    if k > last {
        return 0.0;
    }
    return input[base + k * params.plane];
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

// d^-BETA. The seed's beta, 0.75, as d^-1/2 * d^-1/4 from square roots: on llvmpipe pow (an
// exp2 of a log2) took a third of this kernel's time, and the roots are also more exact.
fn inverse_power(d: f32) -> f32 {
    if BETA == 0.75 {
        let r = inverseSqrt(d);
        return r * sqrt(r);
    }
    return pow(d, -BETA);
}
