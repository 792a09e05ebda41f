// Winograd F(2x2, 3x3), the input transform V = B^T d B of every 4x4 input tile d and input
// channel, into the transformed inputs [xi][input channel][P] (shaders/common/winograd_params.wgsl):
// the input of the grouped 1x1 convolution. Tile (row r, column c) of an image reads the input
// rows 2r - pad_top .. + 3 and columns 2c - pad_left .. + 3, zeros outside the image (the
// padding), so no zero-bordered copy is made. One invocation per (input channel, tile of the
// chunk), consecutive invocations on consecutive tiles.
//
//         | 1  0 -1  0 |
//   B^T = | 0  1  1  0 |
//         | 0 -1  1  0 |
//         | 0  1  0 -1 |

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> transformed: array<f32>;

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
    let c = index / params.tiles;
    let local = index - c * params.tiles;
    let at = tile_position(local);
    let plane = (at.x * params.channels + c) * params.in_height;
    let top = i32(2u * at.y) - i32(params.pad_top);
    let left = i32(2u * at.z) - i32(params.pad_left);
    // The tile's rows, zero outside the image.
    var d: array<vec4<f32>, 4>;
    for (var y = 0; y < 4; y++) {
        let row = top + y;
        var values = vec4<f32>(0.0);
        if row >= 0 && row < i32(params.in_height) {
            let start = (plane + u32(row)) * params.in_width;
            for (var x = 0; x < 4; x++) {
                let column = left + x;
                if column >= 0 && column < i32(params.in_width) {
                    values[x] = input[start + u32(column)];
                }
            }
        }
        d[y] = values;
    }
    // B^T d (the rows combined), then each row times B.
    let rows = array<vec4<f32>, 4>(d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]);
    let per_position = params.channels * params.tiles;
    for (var i = 0u; i < 4u; i++) {
        let v = b_transpose_times(rows[i]);
        for (var j = 0u; j < 4u; j++) {
            transformed[(i * 4u + j) * per_position + index] = v[j];
        }
    }
}
