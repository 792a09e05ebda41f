
// A kernel's unit of work: four consecutive values of one plane, read and written as
// a vec4 (the plane's size is a multiple of 4, so no unit straddles two planes). On a CPU adapter
// this measured twice the bandwidth of one value at a time: an invocation's loop, index and
// bounds check are paid once per four values. values_by_one.wgsl is the same interface.
alias Values = vec4<f32>;
// A unit as stored in the tensors a kernel reads and the one it writes (shaders.rs's Elements).
alias InValues = vec4<InElement>;
alias OutValues = vec4<OutElement>;
const VALUES: u32 = 4u;

// The sum of a unit's values.
fn sum_of(values: Values) -> f32 {
    return dot(values, vec4<f32>(1.0));
}

// Unit k of four values: all of them (k is 0).
fn unit_of(values: vec4<f32>, k: u32) -> Values {
    return values;
}

// The first of a unit's values.
fn first_value(values: Values) -> f32 {
    return values.x;
}
