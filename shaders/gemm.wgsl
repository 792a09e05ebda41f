// GEMM with fused bias and optional ReLU: the fully connected layers.
//
//   output[m, column_offset + n] =
//       relu?(sum_k input[m, k] * weight_t[k, n] + bias[column_offset + n])
//
// `input` is [rows, depth] row-major (a batch of flattened activations). The weight of a PyTorch
// Linear layer is [out, in]; the host repacks it transposed, [depth][columns rounded up to 16], so
// four output columns are one vec4 load and the padding columns are zero. A layer whose weight is
// larger than one storage binding may hold is split by the host into column slices, one dispatch
// each, hence `column_offset` and `output_stride`.
//
// Every invocation owns a 16x16 register block (16 rows x 16 columns) in sixteen named 4x4
// matrices (row = output column, column = input row), the same shape as conv2d_forward: id.x is
// the block of 16 columns, id.y the block of 16 rows. The 4x4 outer product:
// shaders/common/outer_product.wgsl.

struct Params {
    rows: u32,
    depth: u32,
    // Columns this dispatch computes, and the packed row length of its weight slice.
    columns: u32,
    packed_columns: u32,
    column_offset: u32,
    output_stride: u32,
    relu: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<InElement>;
@group(0) @binding(2) var<storage, read> weight_t: array<vec4<InElement>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<OutElement>;


// Offsets of four consecutive input rows; rows past the end re-read the last row (never stored).
fn row_offsets(first: u32) -> vec4<u32> {
    let last = params.rows - 1u;
    let rows = min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last));
    return rows * params.depth;
}

fn store_block(acc: mat4x4<f32>, first_column: u32, first_row: u32) {
    for (var i = 0u; i < 4u; i++) {
        let column = first_column + i;
        if column >= params.columns {
            return;
        }
        let b = bias[params.column_offset + column];
        for (var j = 0u; j < 4u; j++) {
            let row = first_row + j;
            if row < params.rows {
                var value = acc[j][i] + b;
                if params.relu != 0u {
                    value = max(value, 0.0);
                }
                output[row * params.output_stride + params.column_offset + column] = OutElement(value);
            }
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn gemm(@builtin(global_invocation_id) id: vec3<u32>) {
    let first_column = id.x * 16u;
    let first_row = id.y * 16u;
    if first_column >= params.columns || first_row >= params.rows {
        return;
    }
    let r0 = row_offsets(first_row);
    let r1 = row_offsets(first_row + 4u);
    let r2 = row_offsets(first_row + 8u);
    let r3 = row_offsets(first_row + 12u);

    var acc00 = mat4x4<f32>(); var acc01 = mat4x4<f32>(); var acc02 = mat4x4<f32>(); var acc03 = mat4x4<f32>();
    var acc10 = mat4x4<f32>(); var acc11 = mat4x4<f32>(); var acc12 = mat4x4<f32>(); var acc13 = mat4x4<f32>();
    var acc20 = mat4x4<f32>(); var acc21 = mat4x4<f32>(); var acc22 = mat4x4<f32>(); var acc23 = mat4x4<f32>();
    var acc30 = mat4x4<f32>(); var acc31 = mat4x4<f32>(); var acc32 = mat4x4<f32>(); var acc33 = mat4x4<f32>();

    let row_vec4s = params.packed_columns / 4u;
    var w = id.x * 4u;
    for (var k = 0u; k < params.depth; k++) {
        let x0 = vec4<f32>(vec4<InElement>(input[r0.x + k], input[r0.y + k], input[r0.z + k], input[r0.w + k]));
        let x1 = vec4<f32>(vec4<InElement>(input[r1.x + k], input[r1.y + k], input[r1.z + k], input[r1.w + k]));
        let x2 = vec4<f32>(vec4<InElement>(input[r2.x + k], input[r2.y + k], input[r2.z + k], input[r2.w + k]));
        let x3 = vec4<f32>(vec4<InElement>(input[r3.x + k], input[r3.y + k], input[r3.z + k], input[r3.w + k]));
        let w0 = vec4<f32>(weight_t[w]);
        let w1 = vec4<f32>(weight_t[w + 1u]);
        let w2 = vec4<f32>(weight_t[w + 2u]);
        let w3 = vec4<f32>(weight_t[w + 3u]);
        w += row_vec4s;
        acc00 += outer(w0, x0); acc01 += outer(w0, x1); acc02 += outer(w0, x2); acc03 += outer(w0, x3);
        acc10 += outer(w1, x0); acc11 += outer(w1, x1); acc12 += outer(w1, x2); acc13 += outer(w1, x3);
        acc20 += outer(w2, x0); acc21 += outer(w2, x1); acc22 += outer(w2, x2); acc23 += outer(w2, x3);
        acc30 += outer(w3, x0); acc31 += outer(w3, x1); acc32 += outer(w3, x2); acc33 += outer(w3, x3);
    }

    store_block(acc00, first_column, first_row); store_block(acc01, first_column, first_row + 4u);
    store_block(acc02, first_column, first_row + 8u); store_block(acc03, first_column, first_row + 12u);
    store_block(acc10, first_column + 4u, first_row); store_block(acc11, first_column + 4u, first_row + 4u);
    store_block(acc12, first_column + 4u, first_row + 8u); store_block(acc13, first_column + 4u, first_row + 12u);
    store_block(acc20, first_column + 8u, first_row); store_block(acc21, first_column + 8u, first_row + 4u);
    store_block(acc22, first_column + 8u, first_row + 8u); store_block(acc23, first_column + 8u, first_row + 12u);
    store_block(acc30, first_column + 12u, first_row); store_block(acc31, first_column + 12u, first_row + 4u);
    store_block(acc32, first_column + 12u, first_row + 8u); store_block(acc33, first_column + 12u, first_row + 12u);
}
