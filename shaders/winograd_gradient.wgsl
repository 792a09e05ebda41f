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
// sums back to 3x3 filters. Bindings, tiles and the layout written:
// winograd_gradient_tile.wgsl.
//
//       | 1  0 |
//   A = | 1  1 |
//       | 1 -1 |
//       | 0 -1 |

@compute @workgroup_size(WORKGROUP_SIZE)
fn winograd_gradient(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let index = folded_index(id, groups);
    if index >= gradient_invocations() {
        return;
    }
    let tile = gradient_tile(index, 16u);
    let delta = tile.delta;
    // A delta (four rows of two), then each row times A^T.
    let left = array<vec4<f32>, 4>(delta[0], delta[0] + delta[2], delta[0] - delta[2], -delta[2]);
    let right = array<vec4<f32>, 4>(delta[1], delta[1] + delta[3], delta[1] - delta[3], -delta[3]);
    for (var i = 0u; i < 4u; i++) {
        let values = array<vec4<f32>, 4>(left[i], left[i] + right[i], left[i] - right[i], -right[i]);
        for (var j = 0u; j < 4u; j++) {
            transformed[tile.base + (4u * i + j) * tile.stride] = values[j];
        }
    }
}
