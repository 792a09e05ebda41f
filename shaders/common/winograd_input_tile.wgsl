// The input transforms' bindings and tiles (winograd_input.wgsl, winograd6_input.wgsl): one
// invocation per (input channel, tile of the chunk), consecutive invocations on consecutive
// tiles. Tile (row r, column c) of an image starts at input row OUTPUT_TILE * r - pad_top and
// column OUTPUT_TILE * c - pad_left and reads zeros outside the image (the padding), so no
// zero-bordered copy is made.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<InElement>;
@group(0) @binding(2) var<storage, read_write> transformed: array<f32>;

// An invocation's tile: the first row of its channel's plane, and the image row and column of
// its top-left value (negative in the padding).
struct InputTile {
    plane: u32,
    top: i32,
    left: i32,
}

fn input_tile(index: u32) -> InputTile {
    let c = index / params.tiles;
    let at = tile_position(index - c * params.tiles);
    return InputTile(
        (at.x * params.channels + c) * params.in_height,
        i32(OUTPUT_TILE * at.y) - i32(params.pad_top),
        i32(OUTPUT_TILE * at.z) - i32(params.pad_left),
    );
}

// The value at row y, column x of the tile, zero outside the image.
fn input_at(tile: InputTile, y: i32, x: i32) -> f32 {
    let row = tile.top + y;
    let column = tile.left + x;
    if row < 0 || row >= i32(params.in_height) || column < 0 || column >= i32(params.in_width) {
        return 0.0;
    }
    return f32(input[(tile.plane + u32(row)) * params.in_width + u32(column)]);
}

// Position xi of invocation `index`'s transformed tile, into [xi][input channel][P].
fn store_transformed(xi: u32, index: u32, value: f32) {
    transformed[xi * params.channels * params.tiles + index] = value;
}
