// A tensor's values copied from one element type to another (the host's Elements), rounded to
// nearest where the copy is narrower: under half-precision storage, a network that trains keeps
// f32 master weights, which the optimiser updates, and after every step this rounds them into
// the f16 copy the forward and backward kernels read. Four values per invocation, as sgd.wgsl
// updates them.

struct Params {
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> source: array<InElement>;
@group(0) @binding(2) var<storage, read_write> copy: array<OutElement>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn convert_values(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let first = folded_index(id, groups) * 4u;
    for (var i = first; i < min(first + 4u, params.len); i++) {
        copy[i] = OutElement(source[i]);
    }
}
