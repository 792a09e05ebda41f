// GEMM for the fully connected layers at small batches, optionally split along the reduction.
//
//   output[m, column_offset + n] =
//       relu?(sum_k input[m, k] * weight_t[k, n] + bias[column_offset + n])
//
// The same operands as gemm.wgsl (input [rows, depth] row-major; the weight repacked transposed,
// [depth][packed_columns], four columns per vec4), but every invocation owns 4 rows x 16 columns:
// at batch 2 gemm's 16-row block would compute 14 rows only to drop them. The work per weight
// byte is small either way, so this kernel is bound by reading the weights once. id.x is the
// block of 16 columns, id.y the block of 4 rows, id.z the chunk of the reduction (below). The 4x4
// outer product: shaders/common/outer_product.wgsl.
//
// Split-K: with `chunks` > 1, workgroup z takes one chunk of the reduction and writes its raw
// partial sums to `output` = a scratch buffer of [chunks][rows][output_stride]; then
// gemm_split_k_reduce adds the chunks, the bias and the ReLU. On a GPU, fc1 at batch 2 has only
// 256 blocks of 16 columns, too few to fill it; chunks make more. With one chunk the epilogue
// runs here and the output is the layer's.

struct Params {
    rows: u32,
    depth: u32,
    columns: u32,
    packed_columns: u32,
    column_offset: u32,
    output_stride: u32,
    relu: u32,
    // Reduction steps per chunk; 1 chunk when it is `depth`.
    chunk_depth: u32,
    chunks: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<InElement>;
@group(0) @binding(2) var<storage, read> weight_t: array<vec4<InElement>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<OutElement>;


fn store_block(acc: mat4x4<f32>, first_column: u32, first_row: u32, chunk: u32) {
    let split = params.chunks > 1u;
    let base = chunk * params.rows * params.output_stride + params.column_offset;
    for (var i = 0u; i < 4u; i++) {
        let column = first_column + i;
        if column >= params.columns {
            return;
        }
        for (var j = 0u; j < 4u; j++) {
            let row = first_row + j;
            if row < params.rows {
                var value = acc[j][i];
                if !split {
                    value += bias[params.column_offset + column];
                    if params.relu != 0u {
                        value = max(value, 0.0);
                    }
                }
                output[base + row * params.output_stride + column] = OutElement(value);
            }
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn gemm_small_batch(@builtin(global_invocation_id) id: vec3<u32>) {
    let first_column = id.x * 16u;
    let first_row = id.y * 4u;
    let chunk = id.z;
    if first_column >= params.columns || first_row >= params.rows {
        return;
    }
    // Rows past the end re-read the last row (never stored).
    let last = params.rows - 1u;
    let r = min(vec4<u32>(first_row) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last)) * params.depth;

    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    let row_vec4s = params.packed_columns / 4u;
    let k_begin = chunk * params.chunk_depth;
    let k_end = min(k_begin + params.chunk_depth, params.depth);
    var w = k_begin * row_vec4s + id.x * 4u;
    for (var k = k_begin; k < k_end; k++) {
        let x = vec4<f32>(vec4<InElement>(input[r.x + k], input[r.y + k], input[r.z + k], input[r.w + k]));
        acc0 += outer(vec4<f32>(weight_t[w]), x);
        acc1 += outer(vec4<f32>(weight_t[w + 1u]), x);
        acc2 += outer(vec4<f32>(weight_t[w + 2u]), x);
        acc3 += outer(vec4<f32>(weight_t[w + 3u]), x);
        w += row_vec4s;
    }
    store_block(acc0, first_column, first_row, chunk);
    store_block(acc1, first_column + 4u, first_row, chunk);
    store_block(acc2, first_column + 8u, first_row, chunk);
    store_block(acc3, first_column + 12u, first_row, chunk);
}
