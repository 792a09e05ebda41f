// Local response normalisation across channels, TensorFlow's semantics (tf.nn.lrn), NCHW:
//
//   output[n, c, h, w] = input[n, c, h, w]
//       / (bias + alpha * sum_{k = c - r .. c + r} input[n, k, h, w]^2)^beta
//
// with the window clipped at the first and last channel, and alpha NOT divided by the window size
// (Caffe and PyTorch divide it); with groups, windows also stop at each group's edges.
//
// Every invocation owns one pixel position of one image (folded grid index over batch * plane)
// and walks down its channels; neighbouring invocations read neighbouring pixels, so loads stay
// contiguous. For radii up to 5 (AlexNet's) the window slides along in three vec4 registers: each
// value is loaded once, and each channel's sum is still taken afresh over its window (a running
// sum would pick up cancellation error as large values leave it). Wider radii sum each window from
// memory. The parameters, the radius and beta (override constants, fixed per layer when the
// pipeline is made) and the sliding window: shaders/common/lrn_window.wgsl.

@group(0) @binding(0) var<uniform> params: LrnParams;
@group(0) @binding(1) var<storage, read> input: array<InElement>;
@group(0) @binding(2) var<storage, read_write> output: array<OutElement>;



@compute @workgroup_size(WORKGROUP_SIZE)
fn lrn_forward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let position = folded_index(id, groups);
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
        output[base + c * params.plane] = OutElement(x.middle.z * inverse_power(params.bias + params.alpha * sum_sq));
    }
}

// Any radius: each channel's window summed from memory.
fn every_window_afresh(base: u32, first: u32, last: u32) {
    for (var c = first; c <= last; c++) {
        var sum_sq = 0.0;
        for (var k = max(c, first + DEPTH_RADIUS) - DEPTH_RADIUS; k <= min(c + DEPTH_RADIUS, last); k++) {
            let v = f32(input[base + k * params.plane]);
            sum_sq += v * v;
        }
        let at = base + c * params.plane;
        output[at] = OutElement(f32(input[at]) * inverse_power(params.bias + params.alpha * sum_sq));
    }
}

