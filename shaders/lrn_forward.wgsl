// Local response normalisation across channels, TensorFlow's semantics (tf.nn.lrn), NCHW:
//
//   output[n, c, h, w] = input[n, c, h, w] / (bias + alpha * sum_{k = c - r .. c + r} input[n, k, h, w]^2)^beta
//
// with the window clipped at the first and last channel, and alpha NOT divided by the window size
// (Caffe and PyTorch divide it); with groups, windows also stop at each group's edges. Every invocation owns one pixel position and produces all its
// channels; neighbouring invocations read neighbouring pixels, so loads stay contiguous. The window
// sum is taken afresh per channel rather than as a running sum, which would pick up cancellation
// error as large values leave the window; but for radii up to 5 the squares it sums slide along
// in registers, so each input is loaded once.

struct Params {
    batch: u32,
    channels: u32,
    plane: u32,
    depth_radius: u32,
    bias: f32,
    alpha: f32,
    beta: f32,
    // Windows stop at the edges of each group of this many channels (all channels: one group).
    channels_per_group: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

// The widest window the sliding path keeps: radius 5, AlexNet's.
const MAX_RADIUS: i32 = 5;

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
    let image = position / params.plane;
    let base = image * params.channels * params.plane + position % params.plane;
    if i32(params.depth_radius) <= MAX_RADIUS {
        sliding_window(base);
    } else {
        every_window_afresh(base);
    }
}

// The squares of channels c - 5 .. c + 5 slide along in registers: each channel's value is loaded
// once (and once more to scale it), not once per window that holds it. The sum is still taken
// afresh over the window, in channel order, so no cancellation creeps in; slots outside the
// group hold zero and add nothing, and slots beyond the radius are left out of the sum.
fn sliding_window(base: u32) {
    let radius = i32(params.depth_radius);
    let per_group = i32(params.channels_per_group);
    var squares: array<f32, 11>;
    for (var c = 0; c < i32(params.channels); c++) {
        let first = c / per_group * per_group;
        if c == first {
            // A new group: nothing of the previous one may enter the window.
            for (var i = 0; i < 11; i++) {
                squares[i] = square_at(base, c + i - MAX_RADIUS, first);
            }
        } else {
            for (var i = 0; i < 10; i++) {
                squares[i] = squares[i + 1];
            }
            squares[10] = square_at(base, c + MAX_RADIUS, first);
        }
        var sum_sq = 0.0;
        for (var i = MAX_RADIUS - radius; i <= MAX_RADIUS + radius; i++) {
            sum_sq += squares[i];
        }
        let at = base + u32(c) * params.plane;
        output[at] = input[at] * pow(params.bias + params.alpha * sum_sq, -params.beta);
    }
}

// The square of channel k, or zero where k lies outside the group starting at `first`.
fn square_at(base: u32, k: i32, first: i32) -> f32 {
    let last = first + i32(params.channels_per_group) - 1;
    if k < first || k > last {
        return 0.0;
    }
    let v = input[base + u32(k) * params.plane];
    return v * v;
}

// Any radius: each channel's window summed from the input.
fn every_window_afresh(base: u32) {
    let radius = i32(params.depth_radius);
    let per_group = i32(params.channels_per_group);
    for (var c = 0; c < i32(params.channels); c++) {
        let first = c / per_group * per_group;
        var sum_sq = 0.0;
        for (var k = max(c - radius, first); k <= min(c + radius, first + per_group - 1); k++) {
            let v = input[base + u32(k) * params.plane];
            sum_sq += v * v;
        }
        let at = base + u32(c) * params.plane;
        output[at] = input[at] * pow(params.bias + params.alpha * sum_sq, -params.beta);
    }
}
