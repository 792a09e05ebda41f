// Adds a gradient into another (accumulate = 1) or copies it (accumulate = 0). A layer whose
// output several layers read (a ResNet block's input, an Inception block's output) receives the
// sum of their input gradients: the first written in place, each later one added by this kernel.
// Every invocation owns four consecutive elements.

struct Params {
    len: u32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
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
        total[i] = select(0.0, total[i], params.accumulate != 0u) + source[i];
    }
}
