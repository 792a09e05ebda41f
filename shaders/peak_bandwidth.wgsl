// The adapter's shader memory bandwidth: every invocation reads four vec4s and writes them
// scaled, 128 bytes moved per invocation, consecutive invocations on consecutive addresses.

struct Params {
    vec4s: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> source: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> destination: array<vec4<f32>>;


@compute @workgroup_size(WORKGROUP_SIZE)
fn peak_bandwidth(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let invocations = groups.x * groups.y * WORKGROUP_SIZE;
    let first = folded_index(id, groups);
    // Four strided vec4s per invocation, so that neighbours still touch neighbouring memory.
    for (var k = 0u; k < 4u; k++) {
        let i = first + k * invocations;
        if i < params.vec4s {
            destination[i] = source[i] * 1.0001;
        }
    }
}
