// out = a * out + b * x over image-sized vectors, where each coefficient is a constant times
// (optionally) one of L-BFGS's scalars on the GPU:
//   a = a_constant * (a_scalar == NONE ? 1 : scalars[a_scalar]), and b likewise;
// with a = 0 `out` is written without being read (it may hold anything). L-BFGS's two-loop
// recursion, its history pairs y = g - g_prev and s = t d, and its copies are all this one
// kernel, so that its scalars never leave the GPU.

const NONE: u32 = 0xffffffffu;

struct Params {
    len: u32,
    a_scalar: u32,
    b_scalar: u32,
    _pad: u32,
    a_constant: f32,
    b_constant: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> scalars: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn coefficient(constant: f32, scalar: u32) -> f32 {
    if scalar == NONE {
        return constant;
    }
    return constant * scalars[scalar];
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn axpy(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = folded_index(id, groups);
    if i >= params.len {
        return;
    }
    let a = coefficient(params.a_constant, params.a_scalar);
    let b = coefficient(params.b_constant, params.b_scalar);
    var value = b * x[i];
    if params.a_scalar != NONE || params.a_constant != 0.0 {
        value += a * out[i];
    }
    out[i] = value;
}
