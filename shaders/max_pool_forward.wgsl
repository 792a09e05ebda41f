// Max pooling, NCHW, any window and stride, padding given per side (TF's VALID is zero padding;
// its SAME pads the way convolutions do). Padding never wins: a window's maximum is taken over the
// positions inside the image only, as TensorFlow does.
//
// The window and stride are override constants, fixed per layer shape when the pipeline is made,
// so the driver unrolls every loop below and folds every branch on them away.
//
// Two entry points: max_pool_forward, and max_pool_argmax (below) for training.
//
// Every invocation owns a FORWARD_TILE x FORWARD_TILE tile of one plane's outputs (4x4, or 3x3 or
// 2x2 where that covers the plane with as few tiles: less overhang past its edge); the folded grid
// index counts tiles as [plane][tile row][tile column]. It reads each input row the tile's
// windows cover once, takes the maxima of the tile's windows across that row, and folds them into
// the tile rows whose windows hold the row, so overlapping windows share their loads. Reads
// outside the image are clamped to its edge: the clamped position lies in the same window, so
// maxima are unchanged and no bounds checks are needed (every window overlaps the image; the
// planner refuses padding as wide as the window).

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
@group(0) @binding(1) var<storage, read> input: array<InElement>;
@group(0) @binding(2) var<storage, read_write> output: array<OutElement>;

override WINDOW_HEIGHT: u32;
override WINDOW_WIDTH: u32;
override STRIDE_HEIGHT: u32;
override STRIDE_WIDTH: u32;

// The tile's edge, at most 4 (the rows below and the vec4 columns hold a 4x4 tile).
override FORWARD_TILE: u32 = POOL_TILE;
// The input rows and columns a tile's windows cover.
override SPAN_HEIGHT: u32 = (FORWARD_TILE - 1u) * STRIDE_HEIGHT + WINDOW_HEIGHT;
override SPAN_WIDTH: u32 = (FORWARD_TILE - 1u) * STRIDE_WIDTH + WINDOW_WIDTH;

// An invocation's tile of outputs: its plane (past the last plane: no tile), first output row
// and column, where its plane starts in the input, and where its first window starts (row, column;
// negative in the padding).
struct Tile {
    plane: u32,
    first_oh: u32,
    first_ow: u32,
    in_plane: u32,
    top: i32,
    left: i32,
}

fn locate_tile(id: vec3<u32>, groups: vec3<u32>) -> Tile {
    let index = folded_index(id, groups);
    let tiles_across = (params.out_width + FORWARD_TILE - 1u) / FORWARD_TILE;
    let tiles_down = (params.out_height + FORWARD_TILE - 1u) / FORWARD_TILE;
    let tile_row = index / tiles_across;
    let plane = tile_row / tiles_down;
    let first_oh = tile_row % tiles_down * FORWARD_TILE;
    let first_ow = index % tiles_across * FORWARD_TILE;
    return Tile(
        plane,
        first_oh,
        first_ow,
        plane * params.in_height * params.in_width,
        i32(first_oh * STRIDE_HEIGHT) - i32(params.pad_top),
        i32(first_ow * STRIDE_WIDTH) - i32(params.pad_left),
    );
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn max_pool_forward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let tile = locate_tile(id, groups);
    if tile.plane >= params.planes {
        return;
    }

    var row0: vec4<f32>;
    var row1: vec4<f32>;
    var row2: vec4<f32>;
    var row3: vec4<f32>;
    for (var dy = 0u; dy < SPAN_HEIGHT; dy++) {
        let y = clamp(tile.top + i32(dy), 0, i32(params.in_height) - 1);
        let across = row_maxima(tile.in_plane + u32(y) * params.in_width, tile.left);
        row0 = fold_row(row0, across, dy, 0u);
        row1 = fold_row(row1, across, dy, 1u);
        row2 = fold_row(row2, across, dy, 2u);
        row3 = fold_row(row3, across, dy, 3u);
    }
    let out_plane = tile.plane * params.out_height;
    store_row(out_plane, tile, 0u, row0);
    store_row(out_plane, tile, 1u, row1);
    store_row(out_plane, tile, 2u, row2);
    store_row(out_plane, tile, 3u, row3);
}

// The maxima over one input row of the tile's FORWARD_TILE windows across, the first starting at
// `left`. Each window's first column sets its maximum; later columns can only raise it (so a
// window of -inf stays -inf).
fn row_maxima(row: u32, left: i32) -> vec4<f32> {
    var best: vec4<f32>;
    for (var dx = 0u; dx < SPAN_WIDTH; dx++) {
        let v = f32(input[row + u32(clamp(left + i32(dx), 0, i32(params.in_width) - 1))]);
        for (var k = 0u; k < FORWARD_TILE; k++) {
            let start = k * STRIDE_WIDTH;
            if dx == start {
                best[k] = v;
            } else if dx > start && dx < start + WINDOW_WIDTH {
                best[k] = max(best[k], v);
            }
        }
    }
    return best;
}

// Folds input row `dy` of the tile's span into tile row `t`, if that row's windows hold it.
fn fold_row(best: vec4<f32>, across: vec4<f32>, dy: u32, t: u32) -> vec4<f32> {
    let start = t * STRIDE_HEIGHT;
    if t >= FORWARD_TILE {
        return best;
    }
    if dy == start {
        return across;
    }
    if dy > start && dy < start + WINDOW_HEIGHT {
        return max(best, across);
    }
    return best;
}

// Writes tile row t's outputs that lie inside the tile and the output plane.
fn store_row(out_plane: u32, tile: Tile, t: u32, values: vec4<f32>) {
    let oh = tile.first_oh + t;
    let first_ow = tile.first_ow;
    if t >= FORWARD_TILE || oh >= params.out_height {
        return;
    }
    let at = (out_plane + oh) * params.out_width + first_ow;
    for (var k = 0u; k < FORWARD_TILE; k++) {
        if first_ow + k < params.out_width {
            output[at + k] = OutElement(values[k]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// max_pool_argmax: the same pooling for a network that trains. It also records where each
// window's maximum lies, as an index into the window (dy * WINDOW_WIDTH + dx), for
// max_pool_backward to route gradients by (PyTorch's max_pool2d_with_indices does the same;
// finding the maxima again in the backward pass would read the input a second time). Ties go to
// the first maximum in row-major window order, TensorFlow's rule. Clamping repeats a position of
// the same window, never an earlier one with a larger index, so the strict comparisons below keep
// the first maximum.

@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;

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
    let tile = locate_tile(id, groups);
    if tile.plane >= params.planes {
        return;
    }

    var row0: Best;
    var row1: Best;
    var row2: Best;
    var row3: Best;
    for (var dy = 0u; dy < SPAN_HEIGHT; dy++) {
        let y = clamp(tile.top + i32(dy), 0, i32(params.in_height) - 1);
        let across = row_best(tile.in_plane + u32(y) * params.in_width, tile.left);
        // Row y's offset from the tile's top, and each window's first column.
        let place = Place(y - tile.top, vec4<i32>(tile.left) + vec4<i32>(0, 1, 2, 3) * i32(STRIDE_WIDTH));
        row0 = fold_best(row0, across, place, dy, 0u);
        row1 = fold_best(row1, across, place, dy, 1u);
        row2 = fold_best(row2, across, place, dy, 2u);
        row3 = fold_best(row3, across, place, dy, 3u);
    }
    let out_plane = tile.plane * params.out_height;
    store_best(out_plane, tile, 0u, row0);
    store_best(out_plane, tile, 1u, row1);
    store_best(out_plane, tile, 2u, row2);
    store_best(out_plane, tile, 3u, row3);
}

// The maxima over one input row of the tile's FORWARD_TILE windows across, the first starting at
// `left`, and the (clamped) columns they lie in.
fn row_best(row: u32, left: i32) -> Best {
    var best: Best;
    for (var dx = 0u; dx < SPAN_WIDTH; dx++) {
        let x = clamp(left + i32(dx), 0, i32(params.in_width) - 1);
        let v = f32(input[row + u32(x)]);
        for (var k = 0u; k < FORWARD_TILE; k++) {
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
fn fold_best(best: Best, across: Best, place: Place, dy: u32, t: u32) -> Best {
    let start = t * STRIDE_HEIGHT;
    if t >= FORWARD_TILE || dy < start || dy >= start + WINDOW_HEIGHT {
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

// Writes tile row t's maxima and their window positions that belong to outputs inside the tile
// and the plane.
fn store_best(out_plane: u32, tile: Tile, t: u32, best: Best) {
    let oh = tile.first_oh + t;
    let first_ow = tile.first_ow;
    if t >= FORWARD_TILE || oh >= params.out_height {
        return;
    }
    let first = (out_plane + oh) * params.out_width + first_ow;
    for (var k = 0u; k < FORWARD_TILE; k++) {
        if first_ow + k < params.out_width {
            output[first + k] = OutElement(best.value[k]);
            argmax[first + k] = u32(best.at[k]);
        }
    }
}
