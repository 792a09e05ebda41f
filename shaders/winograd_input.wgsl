// Winograd F(2x2, 3x3), the input transform V = B^T d B of every 4x4 input tile d and input
// channel, into the transformed inputs [xi][input channel][P] (shaders/common/winograd_params.wgsl):
// the input of the grouped 1x1 convolution. Bindings and tiles: winograd_input_tile.wgsl.
//
//         | 1  0 -1  0 |
//   B^T = | 0  1  1  0 |
//         | 0 -1  1  0 |
//         | 0  1  0 -1 |

// B^T applied to four values along one axis.
fn b_transpose_times(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(v.x - v.z, v.y + v.z, v.z - v.y, v.y - v.w);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn winograd_input(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let index = folded_index(id, groups);
    if index >= params.channels * params.tiles {
        return;
    }
    let tile = input_tile(index);
    var d: array<vec4<f32>, 4>;
    for (var y = 0; y < 4; y++) {
        d[y] = vec4<f32>(input_at(tile, y, 0), input_at(tile, y, 1), input_at(tile, y, 2), input_at(tile, y, 3));
    }
    // B^T d (the rows combined), then each row times B.
    let rows = array<vec4<f32>, 4>(d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]);
    for (var i = 0u; i < 4u; i++) {
        let v = b_transpose_times(rows[i]);
        for (var j = 0u; j < 4u; j++) {
            store_transformed(4u * i + j, index, v[j]);
        }
    }
}
