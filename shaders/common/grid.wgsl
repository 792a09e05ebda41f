// Every flat kernel's workgroup size (the host sets it per device; the tiled kernels fix their
// own) and the index of an invocation in a launch the host may have folded into a 2-D grid,
// since one grid dimension holds at most max_compute_workgroups_per_dimension groups.
override WORKGROUP_SIZE: u32 = 64u;

fn folded_index(id: vec3<u32>, groups: vec3<u32>) -> u32 {
    return id.x + id.y * groups.x * WORKGROUP_SIZE;
}

