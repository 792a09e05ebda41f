// Adaptive average pooling, NCHW, PyTorch's AdaptiveAvgPool2d: output cell i of n averages input
// rows floor(i * H / n) .. ceil((i + 1) * H / n), and likewise columns. With a 1x1 output it is the
// global average pool before ResNet's and GoogLeNet's classifiers. One output per invocation.

struct Params {
    planes: u32, // batch * channels
    in_height: u32,
    in_width: u32,
    out_height: u32,
    out_width: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;


@compute @workgroup_size(WORKGROUP_SIZE)
fn adaptive_avg_pool_forward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let index = folded_index(id, groups);
    let out_plane = params.out_height * params.out_width;
    if index >= params.planes * out_plane {
        return;
    }
    let plane = index / out_plane;
    let oy = (index % out_plane) / params.out_width;
    let ox = index % params.out_width;
    let row_begin = oy * params.in_height / params.out_height;
    let row_end = ((oy + 1u) * params.in_height + params.out_height - 1u) / params.out_height;
    let col_begin = ox * params.in_width / params.out_width;
    let col_end = ((ox + 1u) * params.in_width + params.out_width - 1u) / params.out_width;
    let base = plane * params.in_height * params.in_width;
    var sum = 0.0;
    for (var y = row_begin; y < row_end; y++) {
        for (var x = col_begin; x < col_end; x++) {
            sum += input[base + y * params.in_width + x];
        }
    }
    output[index] = sum / f32((row_end - row_begin) * (col_end - col_begin));
}
