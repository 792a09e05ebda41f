// Winograd F(2x2, 3x3) for the filter gradient, the output gradient's transform: every 2x2 tile
// of a convolution's output gradient (through its ReLU already) becomes the 4x4 tile
//
//   Delta = A delta A^T,
//
// the gradient of the tile's products M (the forward's Y = A^T M A). The filter gradient's
// transform U = G g G^T then has the gradient sum over tiles of Delta . V (V = B^T d B, the
// transformed input tile, winograd_input.wgsl), for every pair of input and output channel: 16
// matrix products over the tiles, which the host runs as the filter gradient of one grouped 1x1
// convolution (16 x groups groups) on the direct kernels; winograd_filter_gradient.wgsl takes the
// sums back to 3x3 filters. Written in the layout conv2d_backward_filter reads its transposed
// output gradient in, with the 16 positions as groups: [tile of the chunk][xi][group][out channel
// of the group rounded up to 16], zero in the padding channels and for the outputs a last tile
// reaches past (shaders/common/winograd_params.wgsl). One invocation per (tile, group, four
// channels), consecutive invocations on consecutive channels.
//
//       | 1  0 |
//   A = | 1  1 |
//       | 1 -1 |
//       | 0 -1 |

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<f32>;
@group(0) @binding(2) var<storage, read_write> transformed: array<vec4<f32>>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn winograd_gradient(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let index = folded_index(id, groups);
    let blocks = params.packed_out / 4u; // four channels per invocation
    let per_tile = params.groups * blocks;
    if index >= params.tiles * per_tile {
        return;
    }
    let local = index / per_tile;
    let within = index - local * per_tile;
    let group = within / blocks;
    let first = 4u * (within - group * blocks); // first channel of the group
    let out_per_group = params.out_channels / params.groups;
    let at = tile_position(local);
    // The 2x2 tile of the four channels' gradients, zero outside the output or the channels.
    var delta: array<vec4<f32>, 4>; // [2 * row + column], one channel per lane
    for (var i = 0u; i < 2u; i++) {
        let y = 2u * at.y + i;
        for (var j = 0u; j < 2u; j++) {
            let x = 2u * at.z + j;
            if y < params.out_height && x < params.out_width {
                for (var lane = 0u; lane < 4u; lane++) {
                    let channel = first + lane;
                    if channel < out_per_group {
                        let k = at.x * params.out_channels + group * out_per_group + channel;
                        delta[2u * i + j][lane] = grad_output[(k * params.out_height + y) * params.out_width + x];
                    }
                }
            }
        }
    }
    // A delta (four rows of two), then each row times A^T.
    let left = array<vec4<f32>, 4>(delta[0], delta[0] + delta[2], delta[0] - delta[2], -delta[2]);
    let right = array<vec4<f32>, 4>(delta[1], delta[1] + delta[3], delta[1] - delta[3], -delta[3]);
    let row_vec4s = params.groups * blocks; // vec4s per position xi of a tile
    let base = local * 16u * row_vec4s + within;
    for (var i = 0u; i < 4u; i++) {
        let values = array<vec4<f32>, 4>(left[i], left[i] + right[i], left[i] - right[i], -right[i]);
        for (var j = 0u; j < 4u; j++) {
            transformed[base + (4u * i + j) * row_vec4s] = values[j];
        }
    }
}
