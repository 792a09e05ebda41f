// Adaptive average pooling backward, NCHW, as a gather: every input receives, from each output
// cell that averaged it, that cell's gradient divided by the cell's size. Cell i of n covers rows
// floor(i * H / n) .. ceil((i + 1) * H / n) (shaders/common/adaptive_pool_cells.wgsl), so row y
// lies in cells floor(y * n / H) .. ceil((y + 1) * n / H) (cells overlap where n does not divide
// H). One input per invocation.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad_input: array<f32>;

// The cells' range [first, end) covering position `i` of `size`, for `cells` cells.
fn covering_cells(i: u32, size: u32, cells: u32) -> vec2<u32> {
    return vec2<u32>(i * cells / size, ((i + 1u) * cells + size - 1u) / size);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn adaptive_avg_pool_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let index = folded_index(id, groups);
    let in_plane = params.in_height * params.in_width;
    if index >= params.planes * in_plane {
        return;
    }
    let plane = index / in_plane;
    let y = (index % in_plane) / params.in_width;
    let x = index % params.in_width;
    let rows = covering_cells(y, params.in_height, params.out_height);
    let columns = covering_cells(x, params.in_width, params.out_width);
    var total = 0.0;
    for (var oy = rows.x; oy < rows.y; oy++) {
        let rows_covered = cell(oy, params.in_height, params.out_height);
        let height = rows_covered.y - rows_covered.x;
        for (var ox = columns.x; ox < columns.y; ox++) {
            let columns_covered = cell(ox, params.in_width, params.out_width);
            let width = columns_covered.y - columns_covered.x;
            let at = (plane * params.out_height + oy) * params.out_width + ox;
            total += grad_output[at] / f32(height * width);
        }
    }
    grad_input[index] = total;
}
