// The adapter's f32 FMA throughput: every invocation runs `iterations` rounds of eight
// independent vec4 fused multiply-adds (32 FMAs, 64 FLOP per round), independent so that the
// hardware can overlap them, and stores their sum so that none is optimised away.

struct Params {
    iterations: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> sink: array<vec4<f32>>;


@compute @workgroup_size(WORKGROUP_SIZE)
fn peak_fma(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let index = folded_index(id, groups);
    let seed = f32(index % 7u) * 1e-3;
    let b = vec4<f32>(0.999, 0.998, 0.997, 0.996);
    let c = vec4<f32>(1e-4);
    var a0 = vec4<f32>(seed); var a1 = a0 + 0.1; var a2 = a0 + 0.2; var a3 = a0 + 0.3;
    var a4 = a0 + 0.4; var a5 = a0 + 0.5; var a6 = a0 + 0.6; var a7 = a0 + 0.7;
    for (var i = 0u; i < params.iterations; i++) {
        a0 = fma(a0, b, c); a1 = fma(a1, b, c); a2 = fma(a2, b, c); a3 = fma(a3, b, c);
        a4 = fma(a4, b, c); a5 = fma(a5, b, c); a6 = fma(a6, b, c); a7 = fma(a7, b, c);
    }
    sink[index] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}
