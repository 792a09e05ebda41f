// conv2d forward for a 1x1 convolution with stride 1 and no padding (ResNet's bottlenecks, the
// Winograd products' grouped 1x1 convolutions), on register blocks (CPU adapters), where the
// output plane holds a multiple of 4 pixels. Each output pixel reads the input at its own place,
// so four consecutive pixels of a plane read one vec4 per input channel; conv2d_forward gathers
// the same four values one by one, as it must for a window. The computation, parameters
// (shaders/common/conv2d_params.wgsl), packed weights and grid are conv2d_forward's: a 16x16
// register block per invocation (id.x: 16 pixels, id.y: 16 channels of the group, id.z: the
// group), with fused bias and ReLU. 4x4 outer product: shaders/common/outer_product.wgsl.

@group(0) @binding(0) var<uniform> params: Conv2dParams;
@group(0) @binding(1) var<storage, read> input: array<vec4<InElement>>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<InElement>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<OutElement>;

// The vec4 of the input that holds channel 0 (of `group`) of pixels first .. first + 3 (first a
// multiple of 4, so all four lie in one image); 0 past the batch (read, never stored).
fn input_vec4(first: u32, group: u32) -> u32 {
    let plane = params.out_height * params.out_width;
    if first >= params.batch * plane {
        return 0u;
    }
    let image = first / plane;
    let channel0 = image * params.in_channels + group * (params.in_channels / params.groups);
    return (channel0 * plane + first % plane) / 4u;
}

// Stores output channels within_group .. within_group + 3 of `group` for pixels first ..
// first + 3 (acc[pixel][channel]), with bias and ReLU; channels past the group's last are
// padding, pixels past the batch are not stored.
fn store_block(acc: mat4x4<f32>, group: u32, within_group: u32, first: u32) {
    let plane = params.out_height * params.out_width;
    if first >= params.batch * plane {
        return;
    }
    let out_per_group = params.out_channels / params.groups;
    let base = first / plane * params.out_channels * plane + first % plane;
    for (var i = 0u; i < 4u; i++) {
        if within_group + i >= out_per_group {
            return;
        }
        let channel = group * out_per_group + within_group + i;
        let b = bias[channel];
        for (var j = 0u; j < 4u; j++) {
            var value = acc[j][i] + b;
            if params.relu != 0u {
                value = max(value, 0.0);
            }
            output[base + channel * plane + j] = OutElement(value);
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn conv2d_forward_1x1(@builtin(global_invocation_id) id: vec3<u32>) {
    let total_pixels = params.batch * params.out_height * params.out_width;
    let first_pixel = id.x * 16u;
    let channel_block = id.y;
    let group = id.z;
    if first_pixel >= total_pixels || channel_block * 16u >= params.packed_out_per_group {
        return;
    }
    var i0 = input_vec4(first_pixel, group);
    var i1 = input_vec4(first_pixel + 4u, group);
    var i2 = input_vec4(first_pixel + 8u, group);
    var i3 = input_vec4(first_pixel + 12u, group);

    var acc00 = mat4x4<f32>(); var acc01 = mat4x4<f32>(); var acc02 = mat4x4<f32>(); var acc03 = mat4x4<f32>();
    var acc10 = mat4x4<f32>(); var acc11 = mat4x4<f32>(); var acc12 = mat4x4<f32>(); var acc13 = mat4x4<f32>();
    var acc20 = mat4x4<f32>(); var acc21 = mat4x4<f32>(); var acc22 = mat4x4<f32>(); var acc23 = mat4x4<f32>();
    var acc30 = mat4x4<f32>(); var acc31 = mat4x4<f32>(); var acc32 = mat4x4<f32>(); var acc33 = mat4x4<f32>();

    // The next input channel is a plane further on.
    let plane_vec4s = params.out_height * params.out_width / 4u;
    let row_vec4s = params.packed_out_per_group / 4u;
    let depth = params.in_channels / params.groups;
    var w = group * depth * row_vec4s + channel_block * 4u;
    for (var k = 0u; k < depth; k++) {
        let x0 = vec4<f32>(input[i0]);
        let x1 = vec4<f32>(input[i1]);
        let x2 = vec4<f32>(input[i2]);
        let x3 = vec4<f32>(input[i3]);
        let w0 = vec4<f32>(weight[w]);
        let w1 = vec4<f32>(weight[w + 1u]);
        let w2 = vec4<f32>(weight[w + 2u]);
        let w3 = vec4<f32>(weight[w + 3u]);
        w += row_vec4s;
        i0 += plane_vec4s;
        i1 += plane_vec4s;
        i2 += plane_vec4s;
        i3 += plane_vec4s;
        acc00 += outer(w0, x0); acc01 += outer(w0, x1); acc02 += outer(w0, x2); acc03 += outer(w0, x3);
        acc10 += outer(w1, x0); acc11 += outer(w1, x1); acc12 += outer(w1, x2); acc13 += outer(w1, x3);
        acc20 += outer(w2, x0); acc21 += outer(w2, x1); acc22 += outer(w2, x2); acc23 += outer(w2, x3);
        acc30 += outer(w3, x0); acc31 += outer(w3, x1); acc32 += outer(w3, x2); acc33 += outer(w3, x3);
    }

    let c = channel_block * 16u;
    store_block(acc00, group, c, first_pixel); store_block(acc01, group, c, first_pixel + 4u);
    store_block(acc02, group, c, first_pixel + 8u); store_block(acc03, group, c, first_pixel + 12u);
    store_block(acc10, group, c + 4u, first_pixel); store_block(acc11, group, c + 4u, first_pixel + 4u);
    store_block(acc12, group, c + 4u, first_pixel + 8u); store_block(acc13, group, c + 4u, first_pixel + 12u);
    store_block(acc20, group, c + 8u, first_pixel); store_block(acc21, group, c + 8u, first_pixel + 4u);
    store_block(acc22, group, c + 8u, first_pixel + 8u); store_block(acc23, group, c + 8u, first_pixel + 12u);
    store_block(acc30, group, c + 12u, first_pixel); store_block(acc31, group, c + 12u, first_pixel + 4u);
    store_block(acc32, group, c + 12u, first_pixel + 8u); store_block(acc33, group, c + 12u, first_pixel + 12u);
}
