// Element-wise sum of two equally shaped tensors, then ReLU if asked for: ResNet's residual
// connection, `relu(main + shortcut)`, in one pass over memory. Every invocation owns one unit of `Values`: four consecutive elements
// (values_by_four.wgsl) where every length the host passes is a multiple of 4, else one
// (values_by_one.wgsl); lengths are in units.

struct Params {
    len: u32,
    relu: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<InValues>;
@group(0) @binding(2) var<storage, read> b: array<InValues>;
@group(0) @binding(3) var<storage, read_write> output: array<OutValues>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn add_forward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = folded_index(id, groups);
    if i >= params.len {
        return;
    }
    var y = Values(a[i]) + Values(b[i]);
    if params.relu != 0u {
        y = max(y, Values(0.0));
    }
    output[i] = OutValues(y);
}
