// conv2d forward, NCHW, as an implicit GEMM with fused bias and optional ReLU, in two shapes:
// conv2d_forward (a register block per invocation, for CPU adapters) and, below it,
// conv2d_forward_tiled (workgroup tiles, for GPUs). The host picks one per adapter.
//
//   output[n, co, oy, ox] = relu?(bias[co] + sum_{ci in co's group, ky, kx}
//                                  weight[co, ci, ky, kx] * input[n, ci, y, x])
//       with y = oy * stride + ky - pad_top, x = ox * stride + kx - pad_left
//
// and taps outside the input reading zero. Parameters: shaders/common/conv2d_params.wgsl; the
// 4x4 outer product: shaders/common/outer_product.wgsl.
//
// The GEMM view: rows are output channels, columns are output pixels (all images of the batch
// flattened), and the reduction runs over k = (input channel, kernel row, kernel column) of one
// group. Every invocation owns a 16x16 register block: 16 output channels x 16 output pixels,
// held in sixteen 4x4 matrices (row = channel, column = pixel). Named accumulators rather than an
// array, because compilers keep those in registers and spill arrays to memory. The grid: id.x is
// the block of 16 pixels, id.y the block of 16 channels within the group, id.z the group.
//
// The weights arrive repacked by the host as [group][k][out_channels_per_group rounded up to 16],
// so four channels are one vec4 load and the padding channels are zero (no bounds checks on
// weights). Input taps are read unchecked where every window lies inside the input, which the
// host arranges for padded convolutions with a zero-bordered copy (conv2d_pad_input.wgsl);
// otherwise they are gathered with bounds checks, where the per-side padding (so TF's asymmetric
// SAME works) is applied.
//
// conv2d_forward comes first and shares its pixel bookkeeping with conv2d_forward_tiled.

@group(0) @binding(0) var<uniform> params: Conv2dParams;
@group(0) @binding(1) var<storage, read> input: array<InElement>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<InElement>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<OutElement>;


// A row far outside any image: pixels past the end of the batch read zeros and are never stored.
const OUTSIDE: i32 = -1073741824;

// Four output pixels: where their receptive fields start in the input, and where they are stored.
struct Pixels {
    input_base: vec4<i32>,
    row: vec4<i32>,
    col: vec4<i32>,
    output_base: vec4<i32>,
}

fn locate_pixels(first: u32, group: u32) -> Pixels {
    let pixels_per_image = params.out_height * params.out_width;
    let total = params.batch * pixels_per_image;
    let in_plane = params.in_height * params.in_width;
    let in_per_group = params.in_channels / params.groups;
    var px: Pixels;
    for (var j = 0u; j < 4u; j++) {
        let pixel = first + j;
        if pixel < total {
            let image = pixel / pixels_per_image;
            let within = pixel % pixels_per_image;
            let oh = within / params.out_width;
            let ow = within % params.out_width;
            let row = i32(oh * params.stride_height) - i32(params.pad_top);
            let col = i32(ow * params.stride_width) - i32(params.pad_left);
            let channel0 = image * params.in_channels + group * in_per_group;
            px.row[j] = row;
            px.col[j] = col;
            px.input_base[j] = i32(channel0 * in_plane) + row * i32(params.in_width) + col;
            px.output_base[j] = i32(image * params.out_channels * pixels_per_image + within);
        } else {
            px.row[j] = OUTSIDE;
            px.col[j] = OUTSIDE;
            px.input_base[j] = 0;
            px.output_base[j] = -1;
        }
    }
    return px;
}

// The input values under kernel tap (dy, dx) of channel offset `offset`, zero where the tap falls
// into the padding.
fn gather(px: Pixels, offset: i32, dy: i32, dx: i32) -> vec4<f32> {
    let row = px.row + vec4<i32>(dy);
    let col = px.col + vec4<i32>(dx);
    let inside = (row >= vec4<i32>(0)) & (row < vec4<i32>(i32(params.in_height)))
        & (col >= vec4<i32>(0)) & (col < vec4<i32>(i32(params.in_width)));
    let index = select(vec4<i32>(0), px.input_base + vec4<i32>(offset), inside);
    let value = vec4<f32>(vec4<InElement>(input[index.x], input[index.y], input[index.z], input[index.w]));
    return select(vec4<f32>(0.0), value, inside);
}

// Stores output channels within_group .. within_group + 3 of `group` (acc[pixel][channel]), with
// bias and ReLU; channels past the group's last are padding and are not stored.
fn store_block(acc: mat4x4<f32>, group: u32, within_group: u32, px: Pixels) {
    let pixels_per_image = params.out_height * params.out_width;
    let out_per_group = params.out_channels / params.groups;
    for (var i = 0u; i < 4u; i++) {
        if within_group + i >= out_per_group {
            return;
        }
        let channel = group * out_per_group + within_group + i;
        let b = bias[channel];
        for (var j = 0u; j < 4u; j++) {
            if px.output_base[j] >= 0 {
                var value = acc[j][i] + b;
                if params.relu != 0u {
                    value = max(value, 0.0);
                }
                output[u32(px.output_base[j]) + channel * pixels_per_image] = OutElement(value);
            }
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn conv2d_forward(@builtin(global_invocation_id) id: vec3<u32>) {
    let total_pixels = params.batch * params.out_height * params.out_width;
    let first_pixel = id.x * 16u;
    let channel_block = id.y;
    let group = id.z;
    if first_pixel >= total_pixels || channel_block * 16u >= params.packed_out_per_group {
        return;
    }
    let px0 = locate_pixels(first_pixel, group);
    let px1 = locate_pixels(first_pixel + 4u, group);
    let px2 = locate_pixels(first_pixel + 8u, group);
    let px3 = locate_pixels(first_pixel + 12u, group);

    var acc00 = mat4x4<f32>(); var acc01 = mat4x4<f32>(); var acc02 = mat4x4<f32>(); var acc03 = mat4x4<f32>();
    var acc10 = mat4x4<f32>(); var acc11 = mat4x4<f32>(); var acc12 = mat4x4<f32>(); var acc13 = mat4x4<f32>();
    var acc20 = mat4x4<f32>(); var acc21 = mat4x4<f32>(); var acc22 = mat4x4<f32>(); var acc23 = mat4x4<f32>();
    var acc30 = mat4x4<f32>(); var acc31 = mat4x4<f32>(); var acc32 = mat4x4<f32>(); var acc33 = mat4x4<f32>();

    let in_plane = i32(params.in_height * params.in_width);
    let in_per_group = params.in_channels / params.groups;
    let taps = params.kernel_height * params.kernel_width;
    let row_vec4s = params.packed_out_per_group / 4u;
    // Index (in vec4s) of this block's first weight for k = 0.
    var w = group * in_per_group * taps * row_vec4s + channel_block * 4u;
    // Without padding, every window lies inside the input (the plan sizes the output so), and
    // the loads need no bounds checks or selects: cheaper per load on CPU adapters, see
    // docs/kernels.md. The host gives a padded convolution a zero-bordered copy of its input so
    // that it runs here too. Pixels past the batch read from index 0 and are never stored.
    let unchecked = params.pad_top == 0u && params.pad_left == 0u
        && (params.out_height - 1u) * params.stride_height + params.kernel_height <= params.in_height
        && (params.out_width - 1u) * params.stride_width + params.kernel_width <= params.in_width;
    let channels = select(in_per_group, 0u, unchecked);
    // One flat loop over k = (channel, kernel row, kernel column), the input offset advanced by
    // counting rather than three nested loops: faster on CPU adapters, see docs/kernels.md.
    let depth = select(0u, in_per_group * taps, unchecked);
    var offset = 0;
    var kx = 0u;
    var ky = 0u;
    for (var k = 0u; k < depth; k++) {
        let i0 = px0.input_base + vec4<i32>(offset);
        let i1 = px1.input_base + vec4<i32>(offset);
        let i2 = px2.input_base + vec4<i32>(offset);
        let i3 = px3.input_base + vec4<i32>(offset);
        let x0 = vec4<f32>(vec4<InElement>(input[i0.x], input[i0.y], input[i0.z], input[i0.w]));
        let x1 = vec4<f32>(vec4<InElement>(input[i1.x], input[i1.y], input[i1.z], input[i1.w]));
        let x2 = vec4<f32>(vec4<InElement>(input[i2.x], input[i2.y], input[i2.z], input[i2.w]));
        let x3 = vec4<f32>(vec4<InElement>(input[i3.x], input[i3.y], input[i3.z], input[i3.w]));
        let w0 = vec4<f32>(weight[w]);
        let w1 = vec4<f32>(weight[w + 1u]);
        let w2 = vec4<f32>(weight[w + 2u]);
        let w3 = vec4<f32>(weight[w + 3u]);
        w += row_vec4s;
        acc00 += outer(w0, x0); acc01 += outer(w0, x1); acc02 += outer(w0, x2); acc03 += outer(w0, x3);
        acc10 += outer(w1, x0); acc11 += outer(w1, x1); acc12 += outer(w1, x2); acc13 += outer(w1, x3);
        acc20 += outer(w2, x0); acc21 += outer(w2, x1); acc22 += outer(w2, x2); acc23 += outer(w2, x3);
        acc30 += outer(w3, x0); acc31 += outer(w3, x1); acc32 += outer(w3, x2); acc33 += outer(w3, x3);
        offset += 1;
        kx += 1u;
        if kx == params.kernel_width {
            kx = 0u;
            ky += 1u;
            offset += i32(params.in_width - params.kernel_width);
            if ky == params.kernel_height {
                ky = 0u;
                offset += in_plane - i32(params.kernel_height * params.in_width);
            }
        }
    }
    for (var c = 0u; c < channels; c++) {
        let channel_offset = i32(c) * in_plane;
        for (var ky = 0u; ky < params.kernel_height; ky++) {
            let dy = i32(ky);
            let row_offset = channel_offset + dy * i32(params.in_width);
            for (var kx = 0u; kx < params.kernel_width; kx++) {
                let dx = i32(kx);
                let x0 = gather(px0, row_offset + dx, dy, dx);
                let x1 = gather(px1, row_offset + dx, dy, dx);
                let x2 = gather(px2, row_offset + dx, dy, dx);
                let x3 = gather(px3, row_offset + dx, dy, dx);
                let w0 = vec4<f32>(weight[w]);
                let w1 = vec4<f32>(weight[w + 1u]);
                let w2 = vec4<f32>(weight[w + 2u]);
                let w3 = vec4<f32>(weight[w + 3u]);
                w += row_vec4s;
                acc00 += outer(w0, x0); acc01 += outer(w0, x1); acc02 += outer(w0, x2); acc03 += outer(w0, x3);
                acc10 += outer(w1, x0); acc11 += outer(w1, x1); acc12 += outer(w1, x2); acc13 += outer(w1, x3);
                acc20 += outer(w2, x0); acc21 += outer(w2, x1); acc22 += outer(w2, x2); acc23 += outer(w2, x3);
                acc30 += outer(w3, x0); acc31 += outer(w3, x1); acc32 += outer(w3, x2); acc33 += outer(w3, x3);
            }
        }
    }

    let c = channel_block * 16u;
    store_block(acc00, group, c, px0); store_block(acc01, group, c, px1);
    store_block(acc02, group, c, px2); store_block(acc03, group, c, px3);
    store_block(acc10, group, c + 4u, px0); store_block(acc11, group, c + 4u, px1);
    store_block(acc12, group, c + 4u, px2); store_block(acc13, group, c + 4u, px3);
    store_block(acc20, group, c + 8u, px0); store_block(acc21, group, c + 8u, px1);
    store_block(acc22, group, c + 8u, px2); store_block(acc23, group, c + 8u, px3);
    store_block(acc30, group, c + 12u, px0); store_block(acc31, group, c + 12u, px1);
    store_block(acc32, group, c + 12u, px2); store_block(acc33, group, c + 12u, px3);
}

// ---------------------------------------------------------------------------------------------
// conv2d_forward_tiled: the same convolution tiled the way GPUs want it, chosen on hardware
// adapters (and forced on the software ones by the tests).
//
// conv2d_forward gives each invocation a 16x16 register block and no workgroup memory: right for
// llvmpipe, whose "threads" are SIMD lanes of a CPU core with big caches, wrong for a GPU, where
// 256 accumulators spill out of registers and neighbouring invocations re-read the same inputs.
// Here a workgroup of 16x16 invocations owns a 64-channel x 64-pixel output tile (workgroup x: the
// tile of 64 pixels, y: of 64 channels within the group, z: the group). The reduction
// (input channel, kernel row, kernel column) advances 16 steps at a time: the workgroup stages the
// 16 x 64 weights and the 16 x 64 input values (the im2col columns, gathered with their padding
// checks) in workgroup memory, one vec4 of each per invocation, then every invocation multiplies
// its 4 channels by its 4 pixels for those 16 steps. Two barriers per 16 steps; every staged value
// is read by 16 invocations.
//
// Operands and parameters are conv2d_forward's above; bias and ReLU are fused into the store.

// [step][16 vec4s]: 64 channels of weights, 64 pixels of input, per reduction step.
var<workgroup> weight_tile: array<vec4<f32>, TILE * TILE_K / 4u>;
var<workgroup> input_tile: array<vec4<f32>, TILE * TILE_K / 4u>;

// The input values of reduction step k (channel, kernel row, kernel column) under four pixels,
// zero in the padding and past the reduction's end.
fn gather_step(px: Pixels, k: u32, depth: u32) -> vec4<f32> {
    if k >= depth {
        return vec4<f32>(0.0);
    }
    let taps = params.kernel_height * params.kernel_width;
    let c = k / taps;
    let dy = i32((k % taps) / params.kernel_width);
    let dx = i32(k % params.kernel_width);
    let row = px.row + vec4<i32>(dy);
    let col = px.col + vec4<i32>(dx);
    let inside = (row >= vec4<i32>(0)) & (row < vec4<i32>(i32(params.in_height)))
        & (col >= vec4<i32>(0)) & (col < vec4<i32>(i32(params.in_width)));
    let offset = i32(c * params.in_height * params.in_width) + dy * i32(params.in_width) + dx;
    let index = select(vec4<i32>(0), px.input_base + vec4<i32>(offset), inside);
    let value = vec4<f32>(vec4<InElement>(input[index.x], input[index.y], input[index.z], input[index.w]));
    return select(vec4<f32>(0.0), value, inside);
}

@compute @workgroup_size(TILE / 4u, TILE / 4u)
fn conv2d_forward_tiled(
    @builtin(workgroup_id) tile: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
) {
    let group = tile.z;
    let depth = params.in_channels / params.groups * params.kernel_height * params.kernel_width;
    let row_vec4s = params.packed_out_per_group / 4u;
    // This invocation's 4 pixels (column local.x of the tile) and 4 channels (row local.y); it
    // also stages reduction step local.y of each 16: its pixels' inputs and 4 channels' weights
    // (channel vec4 local.x).
    let px = locate_pixels(tile.x * TILE + local.x * 4u, group);
    let staged_vec4 = tile.y * (TILE / 4u) + local.x;
    let slot = local.y * (TILE / 4u) + local.x;
    var acc = mat4x4<f32>();
    for (var k0 = 0u; k0 < depth; k0 += TILE_K) {
        let k = k0 + local.y;
        var w = vec4<f32>(0.0);
        if k < depth && staged_vec4 < row_vec4s {
            w = vec4<f32>(weight[(group * depth + k) * row_vec4s + staged_vec4]);
        }
        weight_tile[slot] = w;
        input_tile[slot] = gather_step(px, k, depth);
        workgroupBarrier();
        for (var step = 0u; step < TILE_K; step++) {
            let row = step * (TILE / 4u);
            acc += outer(weight_tile[row + local.y], input_tile[row + local.x]);
        }
        workgroupBarrier();
    }

    // Stage slot (step, vec4 v) held channels 4v..4v+3 of the tile, so this invocation's
    // channels are the 4 staged at vec4 local.y (the tile may reach past the group's channels).
    store_block(acc, group, tile.y * TILE + local.y * 4u, px);
}
