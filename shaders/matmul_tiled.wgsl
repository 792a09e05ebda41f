// The fully connected layers' backward products tiled the way GPUs want them: the GPU-shaped
// sibling of matmul (same parameters and semantics),
//
//   c[m, n] = (accumulate ? c[m, n] : 0) + sum_k a[m, k] * b[k, n]
//
// with a[m, k] at a_offset + m * a_row_stride + k * a_col_stride, and b likewise. A workgroup of
// 16x16 invocations owns a 64 x 64 tile of c. The reduction advances 16 steps at a time: the
// workgroup stages 16 x 64 values of a and of b in workgroup memory, one vec4 of each per
// invocation (four strided loads: the operands are read in place, transposed or not), then every
// invocation multiplies its 4 rows by its 4 columns for those 16 steps. Two barriers per 16 steps;
// every staged value is read by 16 invocations.

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
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// Rows and columns of c per workgroup tile, and reduction steps staged at once.
const TILE: u32 = 64u;
const TILE_K: u32 = 16u;

// [step][16 vec4s]: 64 rows of a, 64 columns of b, per reduction step.
var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;

fn outer(x: vec4<f32>, y: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(x * y.x, x * y.y, x * y.z, x * y.w);
}

// a[first .. first + 3, k] (rows past m clamped to the last: never stored); zero past the
// reduction's end, which must add nothing.
fn load_a(first: u32, k: u32) -> vec4<f32> {
    if k >= params.k {
        return vec4<f32>(0.0);
    }
    let rows = min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.m - 1u));
    let at = vec4<u32>(params.a_offset + k * params.a_col_stride) + rows * params.a_row_stride;
    return vec4<f32>(a[at.x], a[at.y], a[at.z], a[at.w]);
}

// b[k, first .. first + 3], likewise.
fn load_b(first: u32, k: u32) -> vec4<f32> {
    if k >= params.k {
        return vec4<f32>(0.0);
    }
    let columns = min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.n - 1u));
    let at = vec4<u32>(params.b_offset + k * params.b_row_stride) + columns * params.b_col_stride;
    return vec4<f32>(b[at.x], b[at.y], b[at.z], b[at.w]);
}

@compute @workgroup_size(16, 16)
fn matmul_tiled(
    @builtin(workgroup_id) tile: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
) {
    // This invocation stages rows (columns) 4 local.x .. of the tile at step local.y of each 16,
    // and multiplies columns 4 local.x .. by rows 4 local.y ...
    let first_n = tile.x * TILE + local.x * 4u;
    let first_m = tile.y * TILE + local.y * 4u;
    let staged_m = tile.y * TILE + local.x * 4u;
    let slot = local.y * 16u + local.x;
    var acc = mat4x4<f32>();
    for (var k0 = 0u; k0 < params.k; k0 += TILE_K) {
        a_tile[slot] = load_a(staged_m, k0 + local.y);
        b_tile[slot] = load_b(first_n, k0 + local.y);
        workgroupBarrier();
        for (var step = 0u; step < TILE_K; step++) {
            acc += outer(b_tile[step * 16u + local.x], a_tile[step * 16u + local.y]);
        }
        workgroupBarrier();
    }

    // acc[j][i]: row first_m + j, column first_n + i.
    for (var j = 0u; j < 4u; j++) {
        for (var i = 0u; i < 4u; i++) {
            let row = first_m + j;
            let column = first_n + i;
            if row < params.m && column < params.n {
                let at = row * params.c_row_stride + column;
                var value = acc[j][i];
                if params.accumulate != 0u {
                    value += c[at];
                }
                c[at] = value;
            }
        }
    }
}
