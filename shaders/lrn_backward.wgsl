// Local response normalisation backward, TensorFlow's semantics, NCHW. With
//   d[c] = bias + alpha * sum_{k in window(c)} x[k]^2   and   y[c] = x[c] * d[c]^-beta,
// the input gradient is
//   grad_x[j] = g[j] * d[j]^-beta - 2 * alpha * beta * x[j] * sum_{c in window(j)} t[c],
//   t[c] = g[c] * x[c] * d[c]^(-beta-1)
// (the window is symmetric, so the c whose window holds j are the c in j's window).
//
// One pass, every invocation owning one pixel position of one image (folded grid index over
// batch * plane) and walking down its channels as lrn_forward does. For radii up to 5 three
// sliding windows of vec4 registers keep what the formula needs: x around the channel whose
// normaliser is being computed (c), the terms t up to c, and the direct terms g * d^-beta;
// channel j = c - 5 is finished once t[c] is known. Each input and output gradient is read once
// and each input gradient written once. Wider radii compute every term from memory. The
// parameters, the radius and beta (override constants) and the window:
// shaders/common/lrn_window.wgsl.

@group(0) @binding(0) var<uniform> params: LrnParams;
@group(0) @binding(1) var<storage, read> input: array<InElement>;
@group(0) @binding(2) var<storage, read> grad_output: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad_input: array<f32>;



@compute @workgroup_size(WORKGROUP_SIZE)
fn lrn_backward(
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
            sliding_windows(base, first, last);
        } else {
            every_term_afresh(base, first, last);
        }
    }
}

// Channels first..=last (one group). At step c: x holds channels c - 6 .. c + 5 (slot 6 = c),
// terms and direct hold channels c - 11 .. c (slot 11 = c), so channel j = c - 5 sits in slot 6
// of both and in slot 1 of x, and j's window is the same slots as c's in x.
fn sliding_windows(base: u32, first: u32, last: u32) {
    let mask = radius_mask();
    let zero = Window(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var x = zero;
    var terms = zero;
    var direct = zero;
    for (var k = first; k < first + WIDEST_RADIUS; k++) {
        x = shift_in(x, value_at(base, k, last));
    }
    for (var c = first; c <= last + WIDEST_RADIUS; c++) {
        x = shift_in(x, value_at(base, c + WIDEST_RADIUS, last));
        var term = 0.0;
        var direct_term = 0.0;
        if c <= last {
            let d = params.bias + params.alpha * masked_sum(squared(x), mask);
            let scale = inverse_power(d);
            let g = grad_output[base + c * params.plane];
            direct_term = g * scale;
            term = g * x.middle.z * scale / d;
        }
        terms = shift_in(terms, term);
        direct = shift_in(direct, direct_term);
        if c >= first + WIDEST_RADIUS {
            let j = c - WIDEST_RADIUS;
            grad_input[base + j * params.plane] = direct.middle.z
                - 2.0 * params.alpha * BETA * x.low.y * masked_sum(terms, mask);
        }
    }
}

// Any radius: every normaliser and term computed from memory.
fn every_term_afresh(base: u32, first: u32, last: u32) {
    for (var j = first; j <= last; j++) {
        var sum_terms = 0.0;
        for (var c = window_first(j, first); c <= min(j + DEPTH_RADIUS, last); c++) {
            let at = base + c * params.plane;
            let d = normaliser(base, c, first, last);
            sum_terms += grad_output[at] * f32(input[at]) * inverse_power(d) / d;
        }
        let at = base + j * params.plane;
        grad_input[at] = grad_output[at] * inverse_power(normaliser(base, j, first, last))
            - 2.0 * params.alpha * BETA * f32(input[at]) * sum_terms;
    }
}

// The first channel of c's window in the group starting at `first`.
fn window_first(c: u32, first: u32) -> u32 {
    return max(c, first + DEPTH_RADIUS) - DEPTH_RADIUS;
}

// d[c], summed from memory.
fn normaliser(base: u32, c: u32, first: u32, last: u32) -> f32 {
    var sum_sq = 0.0;
    for (var k = window_first(c, first); k <= min(c + DEPTH_RADIUS, last); k++) {
        let v = f32(input[base + k * params.plane]);
        sum_sq += v * v;
    }
    return params.bias + params.alpha * sum_sq;
}

