// Max pooling backward, NCHW: each output gradient goes to the input position of its window's
// maximum, which max_pool_argmax recorded in the forward pass (ties to the first maximum in
// row-major window order, TensorFlow's rule; padding never wins).
//
// Written as a gather, so that overlapping windows (3x3 stride 2) need no atomics: every
// invocation owns a POOL_TILE x POOL_TILE (4x4) tile of one plane's inputs (the folded grid index
// counts tiles as [plane][tile row][tile column]), visits every window that can reach the tile
// (a fixed count, from the window and stride, which are override constants as in the forward
// kernel), and adds each window's gradient at the tile position its maximum lies at. A tile row
// is stored as units of `Values`: one vec4 where the input's width is a multiple of 4
// (values_by_four.wgsl), else four values (values_by_one.wgsl).

struct Params {
    planes: u32, // batch * channels
    in_height: u32,
    in_width: u32,
    out_height: u32,
    out_width: u32,
    pad_top: u32,
    pad_left: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Each window's maximum, as an index into its window: dy * WINDOW_WIDTH + dx.
@group(0) @binding(1) var<storage, read> argmax: array<u32>;
@group(0) @binding(2) var<storage, read> grad_output: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad_input: array<Values>;

override WINDOW_HEIGHT: u32;
override WINDOW_WIDTH: u32;
override STRIDE_HEIGHT: u32;
override STRIDE_WIDTH: u32;

// The most windows that reach POOL_TILE consecutive rows (columns): the window starts that fall
// among WINDOW + POOL_TILE - 1 consecutive positions.
override WINDOWS_DOWN: u32 = (WINDOW_HEIGHT + POOL_TILE - 2u) / STRIDE_HEIGHT + 1u;
override WINDOWS_ACROSS: u32 = (WINDOW_WIDTH + POOL_TILE - 2u) / STRIDE_WIDTH + 1u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn max_pool_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let index = folded_index(id, groups);
    let tiles_across = (params.in_width + POOL_TILE - 1u) / POOL_TILE;
    let tiles_down = (params.in_height + POOL_TILE - 1u) / POOL_TILE;
    let tile_row = index / tiles_across;
    if tile_row >= params.planes * tiles_down {
        return;
    }
    let plane = tile_row / tiles_down;
    let first_y = tile_row % tiles_down * POOL_TILE;
    let first_x = index % tiles_across * POOL_TILE;
    let oy_first = first_window(first_y, params.pad_top, WINDOW_HEIGHT, STRIDE_HEIGHT);
    let ox_first = first_window(first_x, params.pad_left, WINDOW_WIDTH, STRIDE_WIDTH);
    let out_plane = plane * params.out_height;

    var row0 = vec4<f32>(0.0);
    var row1 = vec4<f32>(0.0);
    var row2 = vec4<f32>(0.0);
    var row3 = vec4<f32>(0.0);
    for (var i = 0u; i < WINDOWS_DOWN; i++) {
        let oy = oy_first + i;
        for (var j = 0u; j < WINDOWS_ACROSS; j++) {
            let ox = ox_first + j;
            // Past the last window: read the last one, add nothing (cheaper than a branch).
            let inside = oy < params.out_height && ox < params.out_width;
            let last_oy = min(oy, params.out_height - 1u);
            let window = (out_plane + last_oy) * params.out_width + min(ox, params.out_width - 1u);
            let at = argmax[window];
            let gradient = select(0.0, grad_output[window], inside);
            // The maximum's position relative to the tile (outside it: added nowhere).
            let y = i32(oy * STRIDE_HEIGHT + at / WINDOW_WIDTH) - i32(params.pad_top + first_y);
            let x = i32(ox * STRIDE_WIDTH + at % WINDOW_WIDTH) - i32(params.pad_left + first_x);
            // The gradient at its column of a tile row, then added to its row.
            let in_column = select(vec4<f32>(0.0), vec4<f32>(gradient), vec4<i32>(x) == vec4<i32>(0, 1, 2, 3));
            row0 += select(vec4<f32>(0.0), in_column, y == 0);
            row1 += select(vec4<f32>(0.0), in_column, y == 1);
            row2 += select(vec4<f32>(0.0), in_column, y == 2);
            row3 += select(vec4<f32>(0.0), in_column, y == 3);
        }
    }
    let in_plane = plane * params.in_height;
    store_row(in_plane, first_y, first_x, row0);
    store_row(in_plane, first_y + 1u, first_x, row1);
    store_row(in_plane, first_y + 2u, first_x, row2);
    store_row(in_plane, first_y + 3u, first_x, row3);
}

// The first output position whose window, starting at o * stride - pad, reaches `i`.
fn first_window(i: u32, pad: u32, window: u32, stride: u32) -> u32 {
    let reach = i32(i + pad) - i32(window) + 1;
    if reach <= 0 {
        return 0u;
    }
    return (u32(reach) + stride - 1u) / stride;
}

// Writes the tile row's gradients that lie inside the input plane.
fn store_row(in_plane: u32, y: u32, first_x: u32, values: vec4<f32>) {
    if y >= params.in_height {
        return;
    }
    let at = ((in_plane + y) * params.in_width + first_x) / VALUES;
    for (var k = 0u; k < POOL_TILE / VALUES; k++) {
        if first_x + k * VALUES < params.in_width {
            grad_input[at + k] = unit_of(values, k);
        }
    }
}
