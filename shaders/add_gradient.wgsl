// Adds a gradient, times `scale`, into another (accumulate = 1) or writes it there (accumulate =
// 0); scale is 1 except for a loss head's gradient (an auxiliary head's weight). A layer whose
// output several layers read (a ResNet block's input, an Inception block's output) receives the
// sum of their input gradients: the first written in place, each later one added by this kernel.
// Every invocation owns one unit of `Values`: four consecutive elements
// (values_by_four.wgsl) where every length the host passes is a multiple of 4, else one
// (values_by_one.wgsl); lengths are in units.

struct Params {
    len: u32,
    accumulate: u32,
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> source: array<InValues>;
@group(0) @binding(2) var<storage, read_write> total: array<Values>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn add_gradient(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = folded_index(id, groups);
    if i >= params.len {
        return;
    }
    let scaled = params.scale * Values(source[i]);
    if params.accumulate != 0u {
        total[i] += scaled;
    } else {
        total[i] = scaled;
    }
}
