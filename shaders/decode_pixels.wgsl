// 8-bit pixels (a data set stored as uint8, 4x smaller than f32) into the network's f32 input,
// normalised as torchvision's ToTensor and Normalize do it:
//
//   input[n][c][y][x] = (pixel / 255 - mean[c]) * inv_std[c]
//
// The pixels arrive as the file stores them, NCHW or NHWC (`nhwc` = 1), four bytes to a u32
// word, little-endian (the last word zero-padded). One invocation per output value: NCHW in
// the output, so consecutive invocations write consecutive values.

struct Params {
    len: u32,
    channels: u32,
    plane: u32,
    nhwc: u32,
    mean: vec4<f32>,
    inv_std: vec4<f32>,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> pixels: array<u32>;
@group(0) @binding(2) var<storage, read_write> input: array<OutElement>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn decode_pixels(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = folded_index(id, groups);
    if i >= params.len {
        return;
    }
    let c = (i / params.plane) % params.channels;
    var at = i;
    if params.nhwc == 1u {
        let image = i / (params.plane * params.channels);
        let p = i % params.plane;
        at = (image * params.plane + p) * params.channels + c;
    }
    let byte = (pixels[at / 4u] >> (8u * (at % 4u))) & 0xffu;
    input[i] = OutElement((f32(byte) / 255.0 - params.mean[c]) * params.inv_std[c]);
}
