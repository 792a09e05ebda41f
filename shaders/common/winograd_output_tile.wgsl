// The output transforms' bindings and tiles (winograd_output.wgsl, winograd5_output.wgsl,
// winograd4_output.wgsl): one invocation per (output channel, tile of the chunk), reading the
// products [xi][output channel][P] and writing an OUTPUT_TILE x OUTPUT_TILE tile of the output
// with the bias and the fused ReLU.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> products: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<OutElement>;

// Position xi of invocation `index`'s products.
fn product(xi: u32, index: u32) -> f32 {
    return products[xi * params.out_channels * params.tiles + index];
}

// Invocation `index`'s outputs (row-major, OUTPUT_TILE to a row), plus the bias and through the
// ReLU where the layer has one; the last row or column of tiles may reach past the output's
// edge: not written.
fn store_output_tile(index: u32, values: array<f32, OUTPUT_VALUES>) {
    let k = index / params.tiles;
    let at = tile_position(index - k * params.tiles);
    let b = bias[k];
    for (var i = 0u; i < OUTPUT_TILE; i++) {
        let y = OUTPUT_TILE * at.y + i;
        if y >= params.out_height {
            break;
        }
        let start = ((at.x * params.out_channels + k) * params.out_height + y) * params.out_width;
        for (var j = 0u; j < OUTPUT_TILE; j++) {
            let x = OUTPUT_TILE * at.z + j;
            if x < params.out_width {
                var value = values[OUTPUT_TILE * i + j] + b;
                if params.relu != 0u {
                    value = max(value, 0.0);
                }
                output[start + x] = OutElement(value);
            }
        }
    }
}
