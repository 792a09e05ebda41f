// A general strided matrix product for the fully connected layers' backward pass:
//
//   c[m, n] = (accumulate ? c[m, n] : 0) + sum_k a[m, k] * b[k, n]
//
// with a[m, k] at a_offset + m * a_row_stride + k * a_col_stride, b likewise, and c[m, n] at
// m * c_row_stride + n * c_col_stride, so one kernel serves both backward products without
// transposing anything: the input gradient dY * W (reading the forward GEMM's packed weight slices,
// summed slice by slice with `accumulate`) and the weight gradient, computed as its transpose
// dY^T * X and written transposed into the packed layout, slice by slice. Both read the output
// gradient (f32) as a and what the forward pass stored (weights, activations: InElement, f16
// under half-precision storage) as b. Every invocation owns a 16x16
// register block in named 4x4 matrices (row = n, column = m): id.x is the block of 16 columns n,
// id.y the block of 16 rows m. The 4x4 outer product: shaders/common/outer_product.wgsl.
// matmul_tiled, below, is the GPU-shaped sibling.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    accumulate: u32,
    a_offset: u32,
    a_row_stride: u32,
    a_col_stride: u32,
    b_offset: u32,
    b_row_stride: u32,
    b_col_stride: u32,
    c_row_stride: u32,
    c_col_stride: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<InElement>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;


// Offsets of four consecutive rows of a (clamped to the last row; those are never stored).
fn a_rows(first: u32) -> vec4<u32> {
    let rows = min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.m - 1u));
    return vec4<u32>(params.a_offset) + rows * params.a_row_stride;
}

// Offsets of four consecutive columns of b (clamped likewise).
fn b_columns(first: u32) -> vec4<u32> {
    let columns = min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.n - 1u));
    return vec4<u32>(params.b_offset) + columns * params.b_col_stride;
}

fn load_a(rows: vec4<u32>, offset: u32) -> vec4<f32> {
    return vec4<f32>(a[rows.x + offset], a[rows.y + offset], a[rows.z + offset], a[rows.w + offset]);
}

fn load_b(columns: vec4<u32>, offset: u32) -> vec4<f32> {
    return vec4<f32>(
        f32(b[columns.x + offset]), f32(b[columns.y + offset]),
        f32(b[columns.z + offset]), f32(b[columns.w + offset]),
    );
}

fn store_block(acc: mat4x4<f32>, first_n: u32, first_m: u32) {
    for (var i = 0u; i < 4u; i++) {
        let column = first_n + i;
        if column >= params.n {
            return;
        }
        for (var j = 0u; j < 4u; j++) {
            let row = first_m + j;
            if row < params.m {
                let at = row * params.c_row_stride + column * params.c_col_stride;
                var value = acc[j][i];
                if params.accumulate != 0u {
                    value += c[at];
                }
                c[at] = value;
            }
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn matmul(@builtin(global_invocation_id) id: vec3<u32>) {
    let first_n = id.x * 16u;
    let first_m = id.y * 16u;
    if first_n >= params.n || first_m >= params.m {
        return;
    }
    let r0 = a_rows(first_m);
    let r1 = a_rows(first_m + 4u);
    let r2 = a_rows(first_m + 8u);
    let r3 = a_rows(first_m + 12u);
    let s0 = b_columns(first_n);
    let s1 = b_columns(first_n + 4u);
    let s2 = b_columns(first_n + 8u);
    let s3 = b_columns(first_n + 12u);

    var acc00 = mat4x4<f32>(); var acc01 = mat4x4<f32>(); var acc02 = mat4x4<f32>(); var acc03 = mat4x4<f32>();
    var acc10 = mat4x4<f32>(); var acc11 = mat4x4<f32>(); var acc12 = mat4x4<f32>(); var acc13 = mat4x4<f32>();
    var acc20 = mat4x4<f32>(); var acc21 = mat4x4<f32>(); var acc22 = mat4x4<f32>(); var acc23 = mat4x4<f32>();
    var acc30 = mat4x4<f32>(); var acc31 = mat4x4<f32>(); var acc32 = mat4x4<f32>(); var acc33 = mat4x4<f32>();

    for (var k = 0u; k < params.k; k++) {
        let x0 = load_a(r0, k * params.a_col_stride);
        let x1 = load_a(r1, k * params.a_col_stride);
        let x2 = load_a(r2, k * params.a_col_stride);
        let x3 = load_a(r3, k * params.a_col_stride);
        let y0 = load_b(s0, k * params.b_row_stride);
        let y1 = load_b(s1, k * params.b_row_stride);
        let y2 = load_b(s2, k * params.b_row_stride);
        let y3 = load_b(s3, k * params.b_row_stride);
        acc00 += outer(y0, x0); acc01 += outer(y0, x1); acc02 += outer(y0, x2); acc03 += outer(y0, x3);
        acc10 += outer(y1, x0); acc11 += outer(y1, x1); acc12 += outer(y1, x2); acc13 += outer(y1, x3);
        acc20 += outer(y2, x0); acc21 += outer(y2, x1); acc22 += outer(y2, x2); acc23 += outer(y2, x3);
        acc30 += outer(y3, x0); acc31 += outer(y3, x1); acc32 += outer(y3, x2); acc33 += outer(y3, x3);
    }

    store_block(acc00, first_n, first_m); store_block(acc01, first_n, first_m + 4u);
    store_block(acc02, first_n, first_m + 8u); store_block(acc03, first_n, first_m + 12u);
    store_block(acc10, first_n + 4u, first_m); store_block(acc11, first_n + 4u, first_m + 4u);
    store_block(acc12, first_n + 4u, first_m + 8u); store_block(acc13, first_n + 4u, first_m + 12u);
    store_block(acc20, first_n + 8u, first_m); store_block(acc21, first_n + 8u, first_m + 4u);
    store_block(acc22, first_n + 8u, first_m + 8u); store_block(acc23, first_n + 8u, first_m + 12u);
    store_block(acc30, first_n + 12u, first_m); store_block(acc31, first_n + 12u, first_m + 4u);
    store_block(acc32, first_n + 12u, first_m + 8u); store_block(acc33, first_n + 12u, first_m + 12u);
}

// ---------------------------------------------------------------------------------------------
// matmul_rows4: the same products where c has few rows (the input gradient dY W of a fully
// connected layer at a small batch: m = the batch). Each invocation owns 4 rows x 16 columns
// (id.x: the block of 16 columns, id.y: the block of 4 rows), so a batch of 4 computes no padding
// rows, where the 16x16 block would compute 12 for every 4.

@compute @workgroup_size(WORKGROUP_SIZE)
fn matmul_rows4(@builtin(global_invocation_id) id: vec3<u32>) {
    let first_n = id.x * 16u;
    let first_m = id.y * 4u;
    if first_n >= params.n || first_m >= params.m {
        return;
    }
    let rows = a_rows(first_m);
    let s0 = b_columns(first_n);
    let s1 = b_columns(first_n + 4u);
    let s2 = b_columns(first_n + 8u);
    let s3 = b_columns(first_n + 12u);
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    for (var k = 0u; k < params.k; k++) {
        let x = load_a(rows, k * params.a_col_stride);
        acc0 += outer(load_b(s0, k * params.b_row_stride), x);
        acc1 += outer(load_b(s1, k * params.b_row_stride), x);
        acc2 += outer(load_b(s2, k * params.b_row_stride), x);
        acc3 += outer(load_b(s3, k * params.b_row_stride), x);
    }
    store_block(acc0, first_n, first_m);
    store_block(acc1, first_n + 4u, first_m);
    store_block(acc2, first_n + 8u, first_m);
    store_block(acc3, first_n + 12u, first_m);
}

// ---------------------------------------------------------------------------------------------
// matmul_tiled: the same products tiled the way GPUs want them (same parameters and semantics),
// chosen on hardware adapters. A workgroup of 16x16 invocations owns a 64 x 64 tile of c
// (workgroup x: the tile of 64 columns n, y: of 64 rows m). The reduction advances 16 steps at a
// time: the workgroup stages 16 x 64 values of a and of b in workgroup memory, one vec4 of each
// per invocation (four strided loads: the operands are read in place, transposed or not), then
// every invocation multiplies its 4 rows by its 4 columns for those 16 steps. Two barriers per
// 16 steps; every staged value is read by 16 invocations.

// [step][16 vec4s]: 64 rows of a, 64 columns of b, per reduction step.
var<workgroup> a_tile: array<vec4<f32>, TILE * TILE_K / 4u>;
var<workgroup> b_tile: array<vec4<f32>, TILE * TILE_K / 4u>;

// a[first .. first + 3, k] (rows past m clamped to the last, as in matmul); zero past the
// reduction's end, which must add nothing.
fn stage_a(first: u32, k: u32) -> vec4<f32> {
    if k >= params.k {
        return vec4<f32>(0.0);
    }
    return load_a(a_rows(first), k * params.a_col_stride);
}

// b[k, first .. first + 3], likewise.
fn stage_b(first: u32, k: u32) -> vec4<f32> {
    if k >= params.k {
        return vec4<f32>(0.0);
    }
    return load_b(b_columns(first), k * params.b_row_stride);
}

@compute @workgroup_size(TILE / 4u, TILE / 4u)
fn matmul_tiled(
    @builtin(workgroup_id) tile: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
) {
    // This invocation stages rows (columns) 4 local.x .. of the tile at step local.y of each 16,
    // and multiplies columns 4 local.x .. by rows 4 local.y ...
    let first_n = tile.x * TILE + local.x * 4u;
    let first_m = tile.y * TILE + local.y * 4u;
    let staged_m = tile.y * TILE + local.x * 4u;
    let slot = local.y * (TILE / 4u) + local.x;
    var acc = mat4x4<f32>();
    for (var k0 = 0u; k0 < params.k; k0 += TILE_K) {
        a_tile[slot] = stage_a(staged_m, k0 + local.y);
        b_tile[slot] = stage_b(first_n, k0 + local.y);
        workgroupBarrier();
        for (var step = 0u; step < TILE_K; step++) {
            let row = step * (TILE / 4u);
            acc += outer(b_tile[row + local.x], a_tile[row + local.y]);
        }
        workgroupBarrier();
    }

    // acc[j][i]: row first_m + j, column first_n + i.
    for (var j = 0u; j < 4u; j++) {
        for (var i = 0u; i < 4u; i++) {
            let row = first_m + j;
            let column = first_n + i;
            if row < params.m && column < params.n {
                let at = row * params.c_row_stride + column * params.c_col_stride;
                var value = acc[j][i];
                if params.accumulate != 0u {
                    value += c[at];
                }
                c[at] = value;
            }
        }
    }
}
