// Adaptive average pooling backward, NCHW: every input receives, from each output cell that
// averaged it, that cell's gradient divided by the cell's size (cell i of n covers rows
// floor(i * H / n) .. ceil((i + 1) * H / n), shaders/common/adaptive_pool_cells.wgsl; cells
// overlap where n does not divide H).
//
// One invocation per plane walks the cells in order and writes each cell's share over its
// inputs: an input's first share is stored, later ones (overlapping cells) added. No index
// needs a division per input (on a CPU adapter an integer division costs as much as the rest
// of an input's work; computing each input's covering cells from its position measured 0.5 GB/s
// on lavapipe).

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad_input: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn adaptive_avg_pool_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let plane = folded_index(id, groups);
    if plane >= params.planes {
        return;
    }
    let width = params.in_width;
    let in_plane = plane * params.in_height * width;
    // Rows [0, rows_done) hold every earlier row of cells' shares.
    var rows_done = 0u;
    for (var oy = 0u; oy < params.out_height; oy++) {
        let rows = cell(oy, params.in_height, params.out_height);
        // Columns [0, columns_done) of this row of cells hold an earlier cell's share.
        var columns_done = 0u;
        for (var ox = 0u; ox < params.out_width; ox++) {
            let columns = cell(ox, width, params.out_width);
            let size = f32((rows.y - rows.x) * (columns.y - columns.x));
            let at = (plane * params.out_height + oy) * params.out_width + ox;
            let share = grad_output[at] / size;
            for (var y = rows.x; y < rows.y; y++) {
                let row = in_plane + y * width;
                for (var x = columns.x; x < columns.y; x++) {
                    if y < rows_done || x < columns_done {
                        grad_input[row + x] += share;
                    } else {
                        grad_input[row + x] = share;
                    }
                }
            }
            columns_done = columns.y;
        }
        rows_done = rows.y;
    }
}
