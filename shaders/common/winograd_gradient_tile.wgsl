// The output-gradient transforms' bindings and tiles (winograd_gradient.wgsl,
// winograd5_gradient.wgsl, winograd4_gradient.wgsl): one invocation per (tile of the chunk, group, four output channels),
// consecutive invocations on consecutive channels, writing the transformed tile in the layout
// conv2d_backward_filter reads its transposed output gradient in, with the transform's
// positions as groups: [tile][xi][group][out channels of the group rounded up to 16].

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<f32>;
@group(0) @binding(2) var<storage, read_write> transformed: array<vec4<f32>>;

// Invocations of a chunk.
fn gradient_invocations() -> u32 {
    return params.tiles * params.groups * (params.packed_out / 4u);
}

// An invocation's OUTPUT_TILE x OUTPUT_TILE tile of its four channels' gradients
// ([OUTPUT_TILE * row + column], one channel per lane; zero outside the output and in the
// padding channels), and where its transformed positions go: base + xi * stride.
struct GradientTile {
    delta: array<vec4<f32>, OUTPUT_VALUES>,
    base: u32,
    stride: u32,
}

fn gradient_tile(index: u32, positions: u32) -> GradientTile {
    let blocks = params.packed_out / 4u; // four channels per invocation
    let per_tile = params.groups * blocks; // vec4s per position xi of a tile
    let local = index / per_tile;
    let within = index - local * per_tile;
    let group = within / blocks;
    let first = 4u * (within - group * blocks); // first channel of the group
    let out_per_group = params.out_channels / params.groups;
    let at = tile_position(local);
    var tile: GradientTile;
    for (var i = 0u; i < OUTPUT_TILE; i++) {
        let y = OUTPUT_TILE * at.y + i;
        for (var j = 0u; j < OUTPUT_TILE; j++) {
            let x = OUTPUT_TILE * at.z + j;
            if y < params.out_height && x < params.out_width {
                for (var lane = 0u; lane < 4u; lane++) {
                    let channel = first + lane;
                    if channel < out_per_group {
                        let k = at.x * params.out_channels + group * out_per_group + channel;
                        tile.delta[OUTPUT_TILE * i + j][lane] = grad_output[(k * params.out_height + y) * params.out_width + x];
                    }
                }
            }
        }
    }
    tile.base = local * positions * per_tile + within;
    tile.stride = per_tile;
    return tile;
}
