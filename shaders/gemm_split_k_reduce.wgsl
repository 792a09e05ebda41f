// The end of a split-K GEMM (gemm_small_batch with chunks > 1): adds each output's partial sums
// over the chunks, then the bias and the ReLU. `partial` is [chunks][len], len = rows * columns,
// and the output [rows][columns]. Every invocation owns four consecutive outputs.

struct Params {
    len: u32,
    columns: u32,
    chunks: u32,
    relu: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> partial: array<InElement>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<OutElement>;


@compute @workgroup_size(WORKGROUP_SIZE)
fn gemm_split_k_reduce(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let first = folded_index(id, groups) * 4u;
    for (var i = first; i < min(first + 4u, params.len); i++) {
        var sum = bias[i % params.columns] + sum_partials(i, params.len, params.chunks);
        if params.relu != 0u {
            sum = max(sum, 0.0);
        }
        output[i] = OutElement(sum);
    }
}
