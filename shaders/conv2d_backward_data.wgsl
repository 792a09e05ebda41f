// conv2d backward with respect to the input (the "data" gradient), NCHW:
//
//   grad_input[n, ci, y, x] = sum_{co in ci's group, ky, kx}
//                                 grad_output[n, co, oy, ox] * weight[co, ci, ky, kx]
//       where y + pad_top = oy * stride + ky and x + pad_left = ox * stride + kx
//
// For stride 1 the host runs conv2d_forward instead (a convolution of the zero-bordered output
// gradient with the rotated, transposed weights), and on workgroup tiles (GPUs) also for strided
// ones, of the output gradient spread apart by the stride (docs/kernels.md#strided-input-gradients).
// This kernel serves strided convolutions on register blocks (CPU adapters), where
// only every stride-th tap of an input pixel meets an output position: which taps, depends on the
// pixel's phase (y + pad_top and x + pad_left modulo the stride). So the pixels are taken phase by
// phase: all 16 pixels of an invocation share one phase, y = qy * stride + ry and x likewise, and
// visit only the taps ky = ry + pad_top (mod stride), kx likewise, for which
// oy = qy + (ry + pad_top - ky) / stride exactly: a stride-1 convolution over (qy, qx) with every
// stride-th tap of the kernel. No multiply-add is spent on a tap that meets nothing.
//
// It is itself a convolution, run as an implicit GEMM the same shape as conv2d_forward: every
// invocation owns a 16x16 register block (16 input channels x 16 input pixels of one phase of one
// image) in named 4x4 matrices, and reduces over (output channel, ky, kx) of its group. The grid:
// id.x counts blocks of 16 pixels as [image][ry][rx][block of the phase grid], id.y the block of
// 16 input channels within the group, id.z the group. The weights are read from the copy
// conv2d_transpose_weights makes, [group][out channel, kh-1-ky, kw-1-kx][in channels rounded up
// to 16], so each step's 16 weights are four vec4 loads and the padding channels are zero; the
// output gradient is gathered with the stride and padding checks the forward kernel does on its
// input. The gradient must already have passed through ReLU's backward where the layer has one.
// Parameters: shaders/common/conv2d_params.wgsl (packed_in_per_group is the rotated weights' row
// length); the 4x4 outer product: shaders/common/outer_product.wgsl.

@group(0) @binding(0) var<uniform> params: Conv2dParams;
@group(0) @binding(1) var<storage, read> grad_output: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> grad_input: array<f32>;


const OUTSIDE: i32 = -1073741824;

// Four input pixels of one phase: their coordinates in the phase's grid and where their gradients
// go.
struct Pixels {
    qy: vec4<i32>,           // y = qy * stride_height + ry, OUTSIDE past the image or batch
    qx: vec4<i32>,           // x = qx * stride_width + rx
    grad_base: vec4<i32>,    // start of this image's and group's output gradient
    input_base: vec4<i32>,   // y * W + x within image n's first channel, or -1 outside
}

// Pixels first .. first + 3 of phase (ry, rx) of `image`, counted row-major in the phase's grid of
// ceil(H / stride) x ceil(W / stride) positions (those past the image's edge do nothing).
fn locate_pixels(first: u32, image: u32, ry: u32, rx: u32, group: u32) -> Pixels {
    let plane = params.in_height * params.in_width;
    let out_plane = params.out_height * params.out_width;
    let out_per_group = params.out_channels / params.groups;
    let grid_height = (params.in_height + params.stride_height - 1u) / params.stride_height;
    let grid_width = (params.in_width + params.stride_width - 1u) / params.stride_width;
    var px: Pixels;
    for (var j = 0u; j < 4u; j++) {
        let q = first + j;
        let qy = q / grid_width;
        let qx = q % grid_width;
        let y = qy * params.stride_height + ry;
        let x = qx * params.stride_width + rx;
        if qy < grid_height && y < params.in_height && x < params.in_width {
            px.qy[j] = i32(qy);
            px.qx[j] = i32(qx);
            px.grad_base[j] = i32((image * params.out_channels + group * out_per_group) * out_plane);
            px.input_base[j] = i32(image * params.in_channels * plane + y * params.in_width + x);
        } else {
            px.qy[j] = OUTSIDE;
            px.qx[j] = OUTSIDE;
            px.grad_base[j] = 0;
            px.input_base[j] = -1;
        }
    }
    return px;
}

// Where a tap shifting the phase grid by (dy, dx) reads the output gradient of four pixels within
// one channel, or -1 where that falls outside the output.
fn tap_index(px: Pixels, dy: i32, dx: i32) -> vec4<i32> {
    let oy = px.qy + vec4<i32>(dy);
    let ox = px.qx + vec4<i32>(dx);
    let ok = (oy >= vec4<i32>(0)) & (oy < vec4<i32>(i32(params.out_height)))
        & (ox >= vec4<i32>(0)) & (ox < vec4<i32>(i32(params.out_width)));
    return select(vec4<i32>(-1), px.grad_base + oy * i32(params.out_width) + ox, ok);
}

// The output gradient at four tap indices (of tap_index) in the channel starting at `offset`,
// zero where the index is -1.
fn gather(index: vec4<i32>, offset: i32) -> vec4<f32> {
    let ok = index >= vec4<i32>(0);
    let at = select(vec4<i32>(0), index + vec4<i32>(offset), ok);
    let value = vec4<f32>(grad_output[at.x], grad_output[at.y], grad_output[at.z], grad_output[at.w]);
    return select(vec4<f32>(0.0), value, ok);
}

fn store_block(acc: mat4x4<f32>, group: u32, first_channel: u32, px: Pixels) {
    let in_per_group = params.in_channels / params.groups;
    let plane = params.in_height * params.in_width;
    for (var i = 0u; i < 4u; i++) {
        if first_channel + i >= in_per_group {
            return;
        }
        let channel = group * in_per_group + first_channel + i;
        for (var j = 0u; j < 4u; j++) {
            if px.input_base[j] >= 0 {
                grad_input[u32(px.input_base[j]) + channel * plane] = acc[j][i];
            }
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn conv2d_backward_data(@builtin(global_invocation_id) id: vec3<u32>) {
    let in_per_group = params.in_channels / params.groups;
    // id.x counts blocks of 16 pixels, phase by phase: [image][ry][rx][block of the phase grid].
    let sy = params.stride_height;
    let sx = params.stride_width;
    let grid_pixels = ((params.in_height + sy - 1u) / sy) * ((params.in_width + sx - 1u) / sx);
    let blocks_per_phase = (grid_pixels + 15u) / 16u;
    let phase = id.x / blocks_per_phase;
    let first_pixel = id.x % blocks_per_phase * 16u;
    let first_channel = id.y * 16u;
    let group = id.z;
    if phase >= params.batch * sy * sx || first_channel >= in_per_group {
        return;
    }
    let image = phase / (sy * sx);
    let ry = phase / sx % sy;
    let rx = phase % sx;
    let px0 = locate_pixels(first_pixel, image, ry, rx, group);
    let px1 = locate_pixels(first_pixel + 4u, image, ry, rx, group);
    let px2 = locate_pixels(first_pixel + 8u, image, ry, rx, group);
    let px3 = locate_pixels(first_pixel + 12u, image, ry, rx, group);

    // The vec4 index of this block's first weight at (output channel 0, tap 0).
    let taps = params.kernel_height * params.kernel_width;
    let out_per_group = params.out_channels / params.groups;
    let row_vec4s = params.packed_in_per_group / 4u;
    let first_weight = group * out_per_group * taps * row_vec4s + first_channel / 4u;

    var acc00 = mat4x4<f32>(); var acc01 = mat4x4<f32>(); var acc02 = mat4x4<f32>(); var acc03 = mat4x4<f32>();
    var acc10 = mat4x4<f32>(); var acc11 = mat4x4<f32>(); var acc12 = mat4x4<f32>(); var acc13 = mat4x4<f32>();
    var acc20 = mat4x4<f32>(); var acc21 = mat4x4<f32>(); var acc22 = mat4x4<f32>(); var acc23 = mat4x4<f32>();
    var acc30 = mat4x4<f32>(); var acc31 = mat4x4<f32>(); var acc32 = mat4x4<f32>(); var acc33 = mat4x4<f32>();

    let out_plane = i32(params.out_height * params.out_width);
    let zero = vec4<i32>(0);
    // Only the taps of this phase: ky = ry + pad_top (mod stride), kx likewise.
    for (var ky = (ry + params.pad_top) % sy; ky < params.kernel_height; ky += sy) {
        let dy = (i32(ry + params.pad_top) - i32(ky)) / i32(sy);
        for (var kx = (rx + params.pad_left) % sx; kx < params.kernel_width; kx += sx) {
            let dx = (i32(rx + params.pad_left) - i32(kx)) / i32(sx);
            let t0 = tap_index(px0, dy, dx);
            let t1 = tap_index(px1, dy, dx);
            let t2 = tap_index(px2, dy, dx);
            let t3 = tap_index(px3, dy, dx);
            if !any((t0 >= zero) | (t1 >= zero) | (t2 >= zero) | (t3 >= zero)) {
                continue;
            }
            // The transposed weights hold the kernel rotated by 180 degrees.
            let tap = taps - 1u - (ky * params.kernel_width + kx);
            for (var co = 0u; co < out_per_group; co++) {
                let channel_offset = i32(co) * out_plane;
                let g0 = gather(t0, channel_offset);
                let g1 = gather(t1, channel_offset);
                let g2 = gather(t2, channel_offset);
                let g3 = gather(t3, channel_offset);
                let w = first_weight + (co * taps + tap) * row_vec4s;
                let w0 = weight[w];
                let w1 = weight[w + 1u];
                let w2 = weight[w + 2u];
                let w3 = weight[w + 3u];
                acc00 += outer(w0, g0); acc01 += outer(w0, g1); acc02 += outer(w0, g2); acc03 += outer(w0, g3);
                acc10 += outer(w1, g0); acc11 += outer(w1, g1); acc12 += outer(w1, g2); acc13 += outer(w1, g3);
                acc20 += outer(w2, g0); acc21 += outer(w2, g1); acc22 += outer(w2, g2); acc23 += outer(w2, g3);
                acc30 += outer(w3, g0); acc31 += outer(w3, g1); acc32 += outer(w3, g2); acc33 += outer(w3, g3);
            }
        }
    }

    store_block(acc00, group, first_channel, px0); store_block(acc01, group, first_channel, px1);
    store_block(acc02, group, first_channel, px2); store_block(acc03, group, first_channel, px3);
    store_block(acc10, group, first_channel + 4u, px0); store_block(acc11, group, first_channel + 4u, px1);
    store_block(acc12, group, first_channel + 4u, px2); store_block(acc13, group, first_channel + 4u, px3);
    store_block(acc20, group, first_channel + 8u, px0); store_block(acc21, group, first_channel + 8u, px1);
    store_block(acc22, group, first_channel + 8u, px2); store_block(acc23, group, first_channel + 8u, px3);
    store_block(acc30, group, first_channel + 12u, px0); store_block(acc31, group, first_channel + 12u, px1);
    store_block(acc32, group, first_channel + 12u, px2); store_block(acc33, group, first_channel + 12u, px3);
}
