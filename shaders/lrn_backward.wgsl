// Local response normalisation backward, TensorFlow's semantics, NCHW. With
//   d[c] = bias + alpha * sum_{k in window(c)} x[k]^2   and   y[c] = x[c] * d[c]^-beta,
// the input gradient is
//   grad_x[j] = g[j] * d[j]^-beta - 2 * alpha * beta * x[j] * sum_{c in window(j)} g[c] * x[c] * d[c]^(-beta-1)
// (the window is symmetric, so the c whose window holds j are the c in j's window).
//
// Two passes, so that no term is computed more than once per element: `lrn_backward_prepare`
// writes t[c] = g[c] * x[c] * d[c]^(-beta-1) to a scratch buffer the size of x; `lrn_backward`
// then sums t over each window. Every invocation owns one pixel position and all its channels.

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
@group(0) @binding(2) var<storage, read> grad_output: array<f32>;
@group(0) @binding(3) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_input: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

// Index of channel 0 at this invocation's pixel position, or -1 past the batch.
fn position_base(id: vec3<u32>, groups: vec3<u32>) -> i32 {
    // The host folds large launches into a 2-D grid (one dimension holds at most 65535 groups).
    let position = id.x + id.y * groups.x * WORKGROUP_SIZE;
    if position >= params.batch * params.plane {
        return -1;
    }
    let image = position / params.plane;
    return i32(image * params.channels * params.plane + position % params.plane);
}

// The first and last channel of c's window: radius depth_radius, clipped to c's group.
fn window(c: i32) -> vec2<i32> {
    let per_group = i32(params.channels_per_group);
    let first = c / per_group * per_group;
    let radius = i32(params.depth_radius);
    return vec2<i32>(max(c - radius, first), min(c + radius, first + per_group - 1));
}

// d[c]: the normaliser of channel c at the position starting at `base`.
fn normaliser(base: u32, c: i32) -> f32 {
    let w = window(c);
    var sum_sq = 0.0;
    for (var k = w.x; k <= w.y; k++) {
        let v = input[base + u32(k) * params.plane];
        sum_sq += v * v;
    }
    return params.bias + params.alpha * sum_sq;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn lrn_backward_prepare(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let found = position_base(id, groups);
    if found < 0 {
        return;
    }
    let base = u32(found);
    for (var c = 0; c < i32(params.channels); c++) {
        let at = base + u32(c) * params.plane;
        let d = normaliser(base, c);
        scratch[at] = grad_output[at] * input[at] * pow(d, -params.beta - 1.0);
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn lrn_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let found = position_base(id, groups);
    if found < 0 {
        return;
    }
    let base = u32(found);
    for (var j = 0; j < i32(params.channels); j++) {
        let w = window(j);
        var window_sum = 0.0;
        for (var c = w.x; c <= w.y; c++) {
            window_sum += scratch[base + u32(c) * params.plane];
        }
        let at = base + u32(j) * params.plane;
        let d = normaliser(base, j);
        grad_input[at] = grad_output[at] * pow(d, -params.beta)
            - 2.0 * params.alpha * params.beta * input[at] * window_sum;
    }
}
