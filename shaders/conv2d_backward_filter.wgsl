// conv2d backward with respect to the filter (the weight gradient), NCHW, one chunk of pixels, in
// two shapes: conv2d_backward_filter (a register block per invocation, for CPU adapters) and,
// below it, conv2d_backward_filter_tiled (workgroup tiles, for GPUs):
//
//   partial[chunk][group][k][co] = sum_{pixels p of the chunk}
//                                      grad_output[n, co, oy, ox] * input[n, ci, y, x]
//       with k = (ci, ky, kx), y = oy * stride + ky - pad_top, x = ox * stride + kx - pad_left
//
// A GEMM whose reduction runs over every output pixel of the batch, cut into chunks of
// pixels_per_chunk pixels; sum_chunks.wgsl then adds the chunks. Every invocation owns a 16x16
// register block (16 output channels x 16 k) and one chunk: id.x is the block of 16 k, id.y the
// block of 16 output channels within the group, id.z = chunk * groups + group. The layout written
// is the forward kernel's packed weight layout [group][k][out rounded up to 16], so gradients and
// weights line up element for element (for SGD), and the host unpacks to PyTorch's
// [out, in/groups, kh, kw] only when reading back. Padding channels are written too, as the
// zeros their (zero-padded) output gradients sum to: the partial sums live in shared scratch,
// which holds whatever an earlier layer left. Parameters: shaders/common/conv2d_params.wgsl; the 4x4 outer product:
// shaders/common/outer_product.wgsl.

@group(0) @binding(0) var<uniform> params: Conv2dParams;
@group(0) @binding(1) var<storage, read> input: array<InElement>;
// The output gradient as conv2d_transpose_grad_output lays it out:
// [pixel of the batch][group][out channels of the group rounded up to 16].
@group(0) @binding(2) var<storage, read> grad_output: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;


const OUTSIDE: i32 = -1073741824;

// Four entries k = (ci, ky, kx) of the reduction: their input offsets and kernel taps.
struct Taps {
    offset: vec4<i32>,
    ky: vec4<i32>,
    kx: vec4<i32>,
    k: vec4<u32>,
}

fn locate_taps(first: u32) -> Taps {
    let taps = params.kernel_height * params.kernel_width;
    let k_per_group = (params.in_channels / params.groups) * taps;
    var t: Taps;
    for (var j = 0u; j < 4u; j++) {
        let k = first + j;
        t.k[j] = k;
        if k < k_per_group {
            let ci = k / taps;
            let ky = (k % taps) / params.kernel_width;
            let kx = k % params.kernel_width;
            t.offset[j] = i32((ci * params.in_height + ky) * params.in_width + kx);
            t.ky[j] = i32(ky);
            t.kx[j] = i32(kx);
        } else {
            t.offset[j] = 0;
            t.ky[j] = OUTSIDE;
            t.kx[j] = OUTSIDE;
        }
    }
    return t;
}

// The input under four taps for the output pixel whose window starts at (row, col).
fn gather(t: Taps, base: i32, row: i32, col: i32) -> vec4<f32> {
    let y = t.ky + vec4<i32>(row);
    let x = t.kx + vec4<i32>(col);
    let inside = (y >= vec4<i32>(0)) & (y < vec4<i32>(i32(params.in_height)))
        & (x >= vec4<i32>(0)) & (x < vec4<i32>(i32(params.in_width)));
    let index = select(vec4<i32>(0), vec4<i32>(base) + t.offset, inside);
    let value = vec4<f32>(
        f32(input[index.x]), f32(input[index.y]), f32(input[index.z]), f32(input[index.w])
    );
    return select(vec4<f32>(0.0), value, inside);
}

fn store_block(acc: mat4x4<f32>, chunk_base: u32, first_channel: u32, t: Taps) {
    let taps = params.kernel_height * params.kernel_width;
    let k_per_group = (params.in_channels / params.groups) * taps;
    for (var i = 0u; i < 4u; i++) {
        if first_channel + i >= params.packed_out_per_group {
            return;
        }
        for (var j = 0u; j < 4u; j++) {
            if t.k[j] < k_per_group {
                partial[chunk_base + t.k[j] * params.packed_out_per_group + first_channel + i] = acc[j][i];
            }
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn conv2d_backward_filter(@builtin(global_invocation_id) id: vec3<u32>) {
    let taps = params.kernel_height * params.kernel_width;
    let in_per_group = params.in_channels / params.groups;
    let out_per_group = params.out_channels / params.groups;
    let k_per_group = in_per_group * taps;
    let first_k = id.x * 16u;
    let first_channel = id.y * 16u;
    let group = id.z % params.groups;
    let chunk = id.z / params.groups;
    if first_k >= k_per_group || first_channel >= out_per_group {
        return;
    }
    let t0 = locate_taps(first_k);
    let t1 = locate_taps(first_k + 4u);
    let t2 = locate_taps(first_k + 8u);
    let t3 = locate_taps(first_k + 12u);

    let out_plane = params.out_height * params.out_width;
    // vec4s per pixel of the transposed gradient, and this block's first one within a pixel.
    let pixel_vec4s = params.groups * params.packed_out_per_group / 4u;
    let block_vec4 = (group * params.packed_out_per_group + first_channel) / 4u;

    var acc00 = mat4x4<f32>(); var acc01 = mat4x4<f32>(); var acc02 = mat4x4<f32>(); var acc03 = mat4x4<f32>();
    var acc10 = mat4x4<f32>(); var acc11 = mat4x4<f32>(); var acc12 = mat4x4<f32>(); var acc13 = mat4x4<f32>();
    var acc20 = mat4x4<f32>(); var acc21 = mat4x4<f32>(); var acc22 = mat4x4<f32>(); var acc23 = mat4x4<f32>();
    var acc30 = mat4x4<f32>(); var acc31 = mat4x4<f32>(); var acc32 = mat4x4<f32>(); var acc33 = mat4x4<f32>();

    let plane = params.in_height * params.in_width;
    let first_pixel = chunk * params.pixels_per_chunk;
    let end_pixel = min(first_pixel + params.pixels_per_chunk, params.batch * out_plane);
    // The pixel's (image, row, column) advance by counting, not by dividing: integer division
    // has no vector instruction on CPUs, and llvmpipe pays it per lane at every step.
    var image = first_pixel / out_plane;
    var oy = (first_pixel % out_plane) / params.out_width;
    var ox = first_pixel % params.out_width;
    for (var p = first_pixel; p < end_pixel; p++) {
        let within = oy * params.out_width + ox;
        let row = i32(oy * params.stride_height) - i32(params.pad_top);
        let col = i32(ox * params.stride_width) - i32(params.pad_left);
        let base = i32((image * params.in_channels + group * in_per_group) * plane) + row * i32(params.in_width) + col;
        let x0 = gather(t0, base, row, col);
        let x1 = gather(t1, base, row, col);
        let x2 = gather(t2, base, row, col);
        let x3 = gather(t3, base, row, col);
        let g = p * pixel_vec4s + block_vec4;
        let g0 = grad_output[g];
        let g1 = grad_output[g + 1u];
        let g2 = grad_output[g + 2u];
        let g3 = grad_output[g + 3u];
        acc00 += outer(g0, x0); acc01 += outer(g0, x1); acc02 += outer(g0, x2); acc03 += outer(g0, x3);
        acc10 += outer(g1, x0); acc11 += outer(g1, x1); acc12 += outer(g1, x2); acc13 += outer(g1, x3);
        acc20 += outer(g2, x0); acc21 += outer(g2, x1); acc22 += outer(g2, x2); acc23 += outer(g2, x3);
        acc30 += outer(g3, x0); acc31 += outer(g3, x1); acc32 += outer(g3, x2); acc33 += outer(g3, x3);
        ox += 1u;
        if ox == params.out_width {
            ox = 0u;
            oy += 1u;
            if oy == params.out_height {
                oy = 0u;
                image += 1u;
            }
        }
    }

    let packed_len = params.groups * k_per_group * params.packed_out_per_group;
    let chunk_base = chunk * packed_len + group * k_per_group * params.packed_out_per_group;
    store_block(acc00, chunk_base, first_channel, t0); store_block(acc01, chunk_base, first_channel, t1);
    store_block(acc02, chunk_base, first_channel, t2); store_block(acc03, chunk_base, first_channel, t3);
    store_block(acc10, chunk_base, first_channel + 4u, t0); store_block(acc11, chunk_base, first_channel + 4u, t1);
    store_block(acc12, chunk_base, first_channel + 4u, t2); store_block(acc13, chunk_base, first_channel + 4u, t3);
    store_block(acc20, chunk_base, first_channel + 8u, t0); store_block(acc21, chunk_base, first_channel + 8u, t1);
    store_block(acc22, chunk_base, first_channel + 8u, t2); store_block(acc23, chunk_base, first_channel + 8u, t3);
    store_block(acc30, chunk_base, first_channel + 12u, t0); store_block(acc31, chunk_base, first_channel + 12u, t1);
    store_block(acc32, chunk_base, first_channel + 12u, t2); store_block(acc33, chunk_base, first_channel + 12u, t3);
}

// ---------------------------------------------------------------------------------------------
// conv2d_backward_filter_tiled: the same filter gradient tiled the way GPUs want it (same
// operands, parameters, chunks and output layout), chosen with conv2d_forward_tiled.
//
// A workgroup of 16x16 invocations owns a 64 k x 64 output-channel tile of one chunk (workgroup
// x: the tile of 64 k, y: of 64 output channels within the group, z: chunk * groups + group).
// The pixels advance 16 at a time: the workgroup stages the 16 x 64 output-gradient values (rows
// of the transposed gradient, one vec4 load each) and the 16 x 64 input values under the tile's
// taps (gathered with their padding checks) in workgroup memory, one vec4 of each per
// invocation; then every invocation multiplies its 4 output channels by its 4 taps for those 16
// pixels. Two barriers per 16 pixels; every staged value is read by 16 invocations.

// Taps and output channels per workgroup tile: TILE; pixels staged at once:
const TILE_PIXELS: u32 = TILE_K;

// [pixel][16 vec4s]: 64 output channels of the gradient, 64 taps of the input, per staged pixel.
var<workgroup> gradient_tile: array<vec4<f32>, TILE * TILE_K / 4u>;
var<workgroup> input_tile: array<vec4<f32>, TILE * TILE_K / 4u>;

// The input under four taps for output pixel p of the batch, zero in the padding and past `end`.
fn gather_pixel(t: Taps, p: u32, end: u32, group: u32) -> vec4<f32> {
    if p >= end {
        return vec4<f32>(0.0);
    }
    let out_plane = params.out_height * params.out_width;
    let image = p / out_plane;
    let within = p % out_plane;
    let row = i32((within / params.out_width) * params.stride_height) - i32(params.pad_top);
    let col = i32((within % params.out_width) * params.stride_width) - i32(params.pad_left);
    let in_per_group = params.in_channels / params.groups;
    let channel0 = image * params.in_channels + group * in_per_group;
    let base = i32(channel0 * params.in_height * params.in_width) + row * i32(params.in_width) + col;
    return gather(t, base, row, col);
}

@compute @workgroup_size(TILE / 4u, TILE / 4u)
fn conv2d_backward_filter_tiled(
    @builtin(workgroup_id) tile: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
) {
    let taps = params.kernel_height * params.kernel_width;
    let k_per_group = params.in_channels / params.groups * taps;
    let group = tile.z % params.groups;
    let chunk = tile.z / params.groups;
    // This invocation stages taps first_k .. first_k + 3 and output-channel vec4 local.x of
    // staged pixel local.y; it multiplies output channels 4 local.y .. (the staged vec4 local.y)
    // by taps 4 local.x .. (staged vec4 local.x).
    let first_k = tile.x * TILE + local.x * 4u;
    let t = locate_taps(first_k);
    let staged_channel = tile.y * TILE + local.x * 4u;
    let pixel_vec4s = params.groups * params.packed_out_per_group / 4u;
    let channel_vec4 = (group * params.packed_out_per_group + staged_channel) / 4u;
    let first_pixel = chunk * params.pixels_per_chunk;
    let end = min(first_pixel + params.pixels_per_chunk, params.batch * params.out_height * params.out_width);
    let slot = local.y * (TILE / 4u) + local.x;
    var acc = mat4x4<f32>();
    for (var p0 = first_pixel; p0 < end; p0 += TILE_PIXELS) {
        let p = p0 + local.y;
        var g = vec4<f32>(0.0);
        if p < end && staged_channel < params.packed_out_per_group {
            g = grad_output[p * pixel_vec4s + channel_vec4];
        }
        gradient_tile[slot] = g;
        input_tile[slot] = gather_pixel(t, p, end, group);
        workgroupBarrier();
        for (var step = 0u; step < TILE_PIXELS; step++) {
            let row = step * (TILE / 4u);
            acc += outer(gradient_tile[row + local.y], input_tile[row + local.x]);
        }
        workgroupBarrier();
    }

    // acc[j][i]: tap first_k + j, output channel `channel` + i. Padding channels are written
    // (zeros); channels past the packed row are not.
    let channel = tile.y * TILE + local.y * 4u;
    let packed_len = params.groups * k_per_group * params.packed_out_per_group;
    let chunk_base = chunk * packed_len + group * k_per_group * params.packed_out_per_group;
    for (var j = 0u; j < 4u; j++) {
        let k = first_k + j;
        for (var i = 0u; i < 4u; i++) {
            if k < k_per_group && channel + i < params.packed_out_per_group {
                partial[chunk_base + k * params.packed_out_per_group + channel + i] = acc[j][i];
            }
        }
    }
}
