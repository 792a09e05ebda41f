// Bias gradient: the sum of the output gradient over the batch and every pixel of a channel,
//
//   grad_bias[c] = sum_n sum_p grad_output[n, c, p]      (NCHW; p runs over the plane)
//
// for convolutions (plane = H * W) and fully connected layers (plane = 1). A channel is summed
// by a segment of `lanes` invocations of a workgroup (shaders/common/workgroup_sum.wgsl; the host
// sizes the segments as for batch norm's sums): each invocation sums a strided share of every
// image's plane, image by image into its running total (a batch x plane serial sum would lose
// digits), then the segment's tree adds the invocations' totals. The values are read in units
// of `Values` (values_by_one.wgsl or values_by_four.wgsl, which the host chooses by the plane's
// size).

struct Params {
    batch: u32,
    channels: u32,
    plane: u32, // height * width, a multiple of VALUES
    lanes: u32, // invocations per channel: a power of two up to REDUCTION
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<Values>;
@group(0) @binding(2) var<storage, read_write> grad_bias: array<f32>;


@compute @workgroup_size(REDUCTION)
fn bias_backward(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let lanes = params.lanes;
    let segment = channel_segment(group.x, local, lanes, params.channels);
    let units = params.plane / VALUES;
    var total = 0.0;
    for (var n = 0u; n < params.batch; n++) {
        let base = (n * params.channels + segment.channel) * units;
        var image_sum = Values(0.0);
        for (var p = segment.lane; p < units; p += lanes) {
            image_sum += grad_output[base + p];
        }
        total += sum_of(image_sum);
    }
    let sums = segment_sum(local, lanes, vec2<f32>(total, 0.0));
    if segment.lane == 0u && segment.writes {
        grad_bias[segment.channel] = sums.x;
    }
}
