// Adaptive average pooling, NCHW, PyTorch's AdaptiveAvgPool2d: each output averages its cell of
// inputs (shaders/common/adaptive_pool_cells.wgsl). With a 1x1 output it is the
// global average pool before ResNet's and GoogLeNet's classifiers. One output per invocation.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<InElement>;
@group(0) @binding(2) var<storage, read_write> output: array<OutElement>;


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
    let rows = cell(oy, params.in_height, params.out_height);
    let columns = cell(ox, params.in_width, params.out_width);
    let base = plane * params.in_height * params.in_width;
    var sum = 0.0;
    for (var y = rows.x; y < rows.y; y++) {
        for (var x = columns.x; x < columns.y; x++) {
            sum += f32(input[base + y * params.in_width + x]);
        }
    }
    output[index] = OutElement(sum / f32((rows.y - rows.x) * (columns.y - columns.x)));
}
