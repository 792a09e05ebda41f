// conv2d forward, NCHW, as an implicit GEMM tiled the way GPUs want it: the GPU-shaped sibling of
// conv2d_forward, chosen on hardware adapters (and forced on the software ones by the tests).
//
// conv2d_forward gives each invocation a 16x16 register block and no workgroup memory: right for
// llvmpipe, whose "threads" are SIMD lanes of a CPU core with big caches, wrong for a GPU, where
// 256 accumulators spill out of registers and neighbouring invocations re-read the same inputs.
// Here a workgroup of 16x16 invocations owns a 64-channel x 64-pixel output tile. The reduction
// (input channel, kernel row, kernel column) advances 16 steps at a time: the workgroup stages the
// 16 x 64 weights and the 16 x 64 input values (the im2col columns, gathered with their padding
// checks) in workgroup memory, one vec4 of each per invocation, then every invocation multiplies
// its 4 channels by its 4 pixels for those 16 steps. Two barriers per 16 steps; every staged value
// is read by 16 invocations.
//
// Operands and parameters are conv2d_forward's: weights repacked [group][k][out per group rounded
// up to 16], bias and ReLU fused into the store.

struct Params {
    batch: u32,
    in_channels: u32,
    in_height: u32,
    in_width: u32,
    out_channels: u32,
    out_height: u32,
    out_width: u32,
    groups: u32,
    kernel_height: u32,
    kernel_width: u32,
    stride_height: u32,
    stride_width: u32,
    pad_top: u32,
    pad_left: u32,
    relu: u32,
    packed_out_per_group: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

// Output channels and pixels per workgroup tile, and reduction steps staged at once.
const TILE: u32 = 64u;
const TILE_K: u32 = 16u;

// [step][16 vec4s]: 64 channels of weights, 64 pixels of input, per reduction step.
var<workgroup> weight_tile: array<vec4<f32>, 256>;
var<workgroup> input_tile: array<vec4<f32>, 256>;

// Four output pixels: where their receptive fields start in the input, and where they are stored.
struct Pixels {
    input_base: vec4<i32>,
    row: vec4<i32>,
    col: vec4<i32>,
    output_base: vec4<i32>,
}

// A row far outside any image: pixels past the end of the batch read zeros and are never stored.
const OUTSIDE: i32 = -1073741824;

fn outer(a: vec4<f32>, b: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(a * b.x, a * b.y, a * b.z, a * b.w);
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
            let row = i32((within / params.out_width) * params.stride_height) - i32(params.pad_top);
            let col = i32((within % params.out_width) * params.stride_width) - i32(params.pad_left);
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

// The input values of reduction step k (channel, kernel row, kernel column) under four pixels,
// zero in the padding and past the reduction's end.
fn gather(px: Pixels, k: u32, depth: u32) -> vec4<f32> {
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
    let value = vec4<f32>(input[index.x], input[index.y], input[index.z], input[index.w]);
    return select(vec4<f32>(0.0), value, inside);
}

@compute @workgroup_size(16, 16)
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
    let slot = local.y * 16u + local.x;
    var acc = mat4x4<f32>();
    for (var k0 = 0u; k0 < depth; k0 += TILE_K) {
        let k = k0 + local.y;
        var w = vec4<f32>(0.0);
        if k < depth && staged_vec4 < row_vec4s {
            w = weight[(group * depth + k) * row_vec4s + staged_vec4];
        }
        weight_tile[slot] = w;
        input_tile[slot] = gather(px, k, depth);
        workgroupBarrier();
        for (var step = 0u; step < TILE_K; step++) {
            acc += outer(weight_tile[step * 16u + local.y], input_tile[step * 16u + local.x]);
        }
        workgroupBarrier();
    }

    // Stage slot (step, vec4 v) held channels 4v..4v+3 of the tile, so this invocation's
    // channels are the 4 staged at vec4 local.y.
    let pixels_per_image = params.out_height * params.out_width;
    let out_per_group = params.out_channels / params.groups;
    for (var i = 0u; i < 4u; i++) {
        let within_group = tile.y * TILE + local.y * 4u + i;
        if within_group >= out_per_group {
            break;
        }
        let channel = group * out_per_group + within_group;
        let b = bias[channel];
        for (var j = 0u; j < 4u; j++) {
            if px.output_base[j] >= 0 {
                var value = acc[j][i] + b;
                if params.relu != 0u {
                    value = max(value, 0.0);
                }
                output[u32(px.output_base[j]) + channel * pixels_per_image] = value;
            }
        }
    }
}
