// Winograd F(2x2, 3x3), the output transform Y = A^T M A of every tile's 4x4 products M (summed
// over the input channels by the grouped 1x1 convolution, [xi][output channel][P],
// shaders/common/winograd_params.wgsl), plus the bias and the fused ReLU, into the output's 2x2
// tile. Bindings and tiles: winograd_output_tile.wgsl.
//
//   A^T = | 1  1  1  0 |
//         | 0  1 -1 -1 |

// A^T applied to four values along one axis.
fn a_transpose_times(v: vec4<f32>) -> vec2<f32> {
    return vec2<f32>(v.x + v.y + v.z, v.y - v.z - v.w);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn winograd_output(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let index = folded_index(id, groups);
    if index >= params.out_channels * params.tiles {
        return;
    }
    var m: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        m[i] = vec4<f32>(
            product(4u * i, index),
            product(4u * i + 1u, index),
            product(4u * i + 2u, index),
            product(4u * i + 3u, index),
        );
    }
    // A^T M (two rows), then each row times A.
    let rows = array<vec4<f32>, 2>(m[0] + m[1] + m[2], m[1] - m[2] - m[3]);
    let top = a_transpose_times(rows[0]);
    let bottom = a_transpose_times(rows[1]);
    store_output_tile(index, array<f32, OUTPUT_VALUES>(top.x, top.y, bottom.x, bottom.y));
}
