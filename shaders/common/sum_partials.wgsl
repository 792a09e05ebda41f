// Element i of a split reduction's result: the sum over its `chunks` partial results, laid out
// [chunk][len]. The file that includes this declares the `partial` binding.
fn sum_partials(i: u32, len: u32, chunks: u32) -> f32 {
    var total = 0.0;
    for (var c = 0u; c < chunks; c++) {
        total += f32(partial[c * len + i]);
    }
    return total;
}

