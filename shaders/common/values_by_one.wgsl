
// A kernel's unit of work: one value (planes whose size is not a multiple of 4, such
// as 7x7). values_by_four.wgsl is the same interface four values at a time.
alias Values = f32;
// A unit as stored in the tensors a kernel reads and the one it writes (shaders.rs's Elements).
alias InValues = InElement;
alias OutValues = OutElement;
const VALUES: u32 = 1u;

// The sum of a unit's values.
fn sum_of(values: Values) -> f32 {
    return values;
}

// Unit k of four values.
fn unit_of(values: vec4<f32>, k: u32) -> Values {
    return values[k];
}

// The first of a unit's values.
fn first_value(values: Values) -> f32 {
    return values;
}
