// The output transforms' bindings and tiles (winograd_output.wgsl, winograd5_output.wgsl): one
// invocation per (output channel, tile of the chunk), reading the products [xi][output
// channel][P] and writing a 2x2 tile of the output with the bias and the fused ReLU.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> products: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;

// Position xi of invocation `index`'s products.
fn product(xi: u32, index: u32) -> f32 {
    return products[xi * params.out_channels * params.tiles + index];
}

// Invocation `index`'s 2x2 outputs (rows of two), plus the bias and through the ReLU where the
// layer has one; the last row or column of tiles may reach past an odd-sized output: not
// written.
fn store_output_tile(index: u32, values: array<vec2<f32>, 2>) {
    let k = index / params.tiles;
    let at = tile_position(index - k * params.tiles);
    let b = bias[k];
    for (var i = 0u; i < 2u; i++) {
        let y = 2u * at.y + i;
        if y >= params.out_height {
            break;
        }
        var row = values[i] + b;
        if params.relu != 0u {
            row = max(row, vec2<f32>(0.0));
        }
        let start = ((at.x * params.out_channels + k) * params.out_height + y) * params.out_width;
        for (var j = 0u; j < 2u; j++) {
            let x = 2u * at.z + j;
            if x < params.out_width {
                output[start + x] = row[j];
            }
        }
    }
}
