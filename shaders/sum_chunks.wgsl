// Sums the partial results of a split reduction: output[i] = sum_c partial[c * len + i].
// The filter gradient of a convolution reduces over every pixel of the batch (100,352 of them for
// AlexNet's conv1 at batch 32); it is computed in chunks of pixels, and this adds the chunks.
// Short sums per chunk and a short sum over chunks keep f32 rounding far below one long serial
// sum's (conv1's and conv2's weight gradients cancel heavily: the numerical note in
// docs/networks.md). Every invocation owns four consecutive outputs (folded grid index).

struct Params {
    len: u32,
    chunks: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;


@compute @workgroup_size(WORKGROUP_SIZE)
fn sum_chunks(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let first = folded_index(id, groups) * 4u;
    for (var i = first; i < min(first + 4u, params.len); i++) {
        output[i] = sum_partials(i, params.len, params.chunks);
    }
}
