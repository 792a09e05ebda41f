// Adds a gradient, times `scale`, into another (accumulate = 1) or writes it there (accumulate =
// 0); scale is 1 except for a loss head's gradient (an auxiliary head's weight). A layer whose
// output several layers read (a ResNet block's input, an Inception block's output) receives the
// sum of their input gradients: the first written in place, each later one added by this kernel.
// Every invocation owns four consecutive elements.

struct Params {
    len: u32,
    accumulate: u32,
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> source: array<f32>;
@group(0) @binding(2) var<storage, read_write> total: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn add_gradient(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let first = folded_index(id, groups) * 4u;
    for (var i = first; i < min(first + 4u, params.len); i++) {
        total[i] = select(0.0, total[i], params.accumulate != 0u) + params.scale * source[i];
    }
}
