// The filter-gradient transforms' bindings (winograd_filter_gradient.wgsl,
// winograd5_filter_gradient.wgsl, winograd4_filter_gradient.wgsl): one invocation per (group, input channel of the group, packed
// output channel), reading the sums [xi][group][input channel][packed_out] and writing the
// filter's taps in the packed weights' layout; the first chunk of tiles writes, later chunks add.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> sums: array<f32>;
@group(0) @binding(2) var<storage, read_write> gradient: array<f32>;

// Position xi of invocation `index`'s sums.
fn filter_sum(xi: u32, index: u32) -> f32 {
    return sums[xi * params.channels * params.packed_out + index];
}

// Writes (or adds) tap `tap` of the filter whose first tap is at `base` ([`filter_base`]).
fn store_tap(base: u32, tap: u32, value: f32) {
    let at = base + tap * params.packed_out;
    if params.accumulate != 0u {
        gradient[at] += value;
    } else {
        gradient[at] = value;
    }
}
