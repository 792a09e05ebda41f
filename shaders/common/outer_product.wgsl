// The outer product of four rows by four columns, a 4x4 block of a register-blocked product:
// column j of the result is a * b[j].
fn outer(a: vec4<f32>, b: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(a * b.x, a * b.y, a * b.z, a * b.w);
}

