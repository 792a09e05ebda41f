// Max pooling forward for training: each window's maximum, as max_pool_forward writes it, and
// where it lies, as an index into the window (dy * WINDOW_WIDTH + dx), for max_pool_backward to
// route gradients by (PyTorch's max_pool2d_with_indices does the same; finding the maxima again in
// the backward pass would read the input a second time). Ties go to the first maximum in
// row-major window order (TensorFlow's rule) and padding never wins, as in max_pool_forward,
// whose 4x4 output tiles, edge clamping and override constants this kernel shares. Clamping
// repeats a position of the same window, never an earlier one with a larger index, so the strict
// comparisons below still keep the first maximum.

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
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;

override WORKGROUP_SIZE: u32 = 64u;
override WINDOW_HEIGHT: u32;
override WINDOW_WIDTH: u32;
override STRIDE_HEIGHT: u32;
override STRIDE_WIDTH: u32;

const TILE: u32 = 4u;
override SPAN_HEIGHT: u32 = (TILE - 1u) * STRIDE_HEIGHT + WINDOW_HEIGHT;
override SPAN_WIDTH: u32 = (TILE - 1u) * STRIDE_WIDTH + WINDOW_WIDTH;

// Four windows' maxima so far and where they lie: input columns in a row, window positions in a
// tile row.
struct Best {
    value: vec4<f32>,
    at: vec4<i32>,
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn max_pool_argmax(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    // The host folds large launches into a 2-D grid (one dimension holds at most 65535 groups).
    let index = id.x + id.y * groups.x * WORKGROUP_SIZE;
    let tiles_across = (params.out_width + TILE - 1u) / TILE;
    let tiles_down = (params.out_height + TILE - 1u) / TILE;
    let tile_row = index / tiles_across;
    if tile_row >= params.planes * tiles_down {
        return;
    }
    let plane = tile_row / tiles_down;
    let first_oh = tile_row % tiles_down * TILE;
    let first_ow = index % tiles_across * TILE;
    let in_plane = plane * params.in_height * params.in_width;
    let top = i32(first_oh * STRIDE_HEIGHT) - i32(params.pad_top);
    let left = i32(first_ow * STRIDE_WIDTH) - i32(params.pad_left);

    var row0: Best;
    var row1: Best;
    var row2: Best;
    var row3: Best;
    for (var dy = 0u; dy < SPAN_HEIGHT; dy++) {
        let y = clamp(top + i32(dy), 0, i32(params.in_height) - 1);
        let across = row_maxima(in_plane + u32(y) * params.in_width, left);
        // Row y's offset from the tile's top, and each window's first column.
        let place = Place(y - top, vec4<i32>(left) + vec4<i32>(0, 1, 2, 3) * i32(STRIDE_WIDTH));
        row0 = fold_row(row0, across, place, dy, 0u);
        row1 = fold_row(row1, across, place, dy, 1u);
        row2 = fold_row(row2, across, place, dy, 2u);
        row3 = fold_row(row3, across, place, dy, 3u);
    }
    let out_plane = plane * params.out_height;
    store_row(out_plane, first_oh, first_ow, row0);
    store_row(out_plane, first_oh + 1u, first_ow, row1);
    store_row(out_plane, first_oh + 2u, first_ow, row2);
    store_row(out_plane, first_oh + 3u, first_ow, row3);
}

// The maxima over one input row of the tile's four windows across, the first starting at `left`,
// and the (clamped) columns they lie in.
fn row_maxima(row: u32, left: i32) -> Best {
    var best: Best;
    for (var dx = 0u; dx < SPAN_WIDTH; dx++) {
        let x = clamp(left + i32(dx), 0, i32(params.in_width) - 1);
        let v = input[row + u32(x)];
        for (var k = 0u; k < TILE; k++) {
            let start = k * STRIDE_WIDTH;
            let inside = dx > start && dx < start + WINDOW_WIDTH;
            if dx == start || (inside && v > best.value[k]) {
                best.value[k] = v;
                best.at[k] = x;
            }
        }
    }
    return best;
}

// Where a row lies: its offset from the tile's top, and the first column of each window across.
struct Place {
    row: i32,
    window_left: vec4<i32>,
}

// Folds input row `dy` of the tile's span into tile row `t`, if that row's windows hold it.
fn fold_row(best: Best, across: Best, place: Place, dy: u32, t: u32) -> Best {
    let start = t * STRIDE_HEIGHT;
    if dy < start || dy >= start + WINDOW_HEIGHT {
        return best;
    }
    let window_row = place.row - i32(start);
    let at = vec4<i32>(window_row * i32(WINDOW_WIDTH)) + across.at - place.window_left;
    if dy == start {
        return Best(across.value, at);
    }
    let better = across.value > best.value;
    return Best(select(best.value, across.value, better), select(best.at, at, better));
}

// Writes the tile row's maxima and their window positions that belong to outputs inside the plane.
fn store_row(out_plane: u32, oh: u32, first_ow: u32, best: Best) {
    if oh >= params.out_height {
        return;
    }
    let first = (out_plane + oh) * params.out_width + first_ow;
    for (var k = 0u; k < TILE; k++) {
        if first_ow + k < params.out_width {
            output[first + k] = best.value[k];
            argmax[first + k] = u32(best.at[k]);
        }
    }
}
