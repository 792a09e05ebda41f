// Bias gradient: the sum of the output gradient over the batch and every pixel of a channel,
//
//   grad_bias[c] = sum_n sum_p grad_output[n, c, p]      (NCHW; p runs over the plane)
//
// for convolutions (plane = H * W) and fully connected layers (plane = 1). One invocation per
// channel; each image's plane is summed on its own and then added to the total, which keeps the
// serial f32 sums short (batch x plane terms in one running sum would lose digits).

struct Params {
    batch: u32,
    channels: u32,
    plane: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad_bias: array<f32>;


@compute @workgroup_size(WORKGROUP_SIZE)
fn bias_backward(@builtin(global_invocation_id) id: vec3<u32>) {
    let channel = id.x;
    if channel >= params.channels {
        return;
    }
    var total = 0.0;
    for (var n = 0u; n < params.batch; n++) {
        let base = (n * params.channels + channel) * params.plane;
        var image_sum = 0.0;
        for (var p = 0u; p < params.plane; p++) {
            image_sum += grad_output[base + p];
        }
        total += image_sum;
    }
    grad_bias[channel] = total;
}
