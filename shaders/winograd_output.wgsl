// Winograd F(2x2, 3x3), the output transform Y = A^T M A of every tile's 4x4 products M (summed
// over the input channels by the grouped 1x1 convolution, [xi][output channel][P],
// shaders/common/winograd_params.wgsl), plus the bias and the fused ReLU, into the output's 2x2
// tile (the last row or column of tiles may reach past an odd-sized output: not written). One
// invocation per (output channel, tile of the chunk).
//
//   A^T = | 1  1  1  0 |
//         | 0  1 -1 -1 |

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> products: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;

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
    let k = index / params.tiles;
    let local = index - k * params.tiles;
    let per_position = params.out_channels * params.tiles;
    var m: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        let row = i * 4u * per_position + index;
        m[i] = vec4<f32>(
            products[row],
            products[row + per_position],
            products[row + 2u * per_position],
            products[row + 3u * per_position],
        );
    }
    // A^T M (two rows), then each row times A.
    let rows = array<vec4<f32>, 2>(m[0] + m[1] + m[2], m[1] - m[2] - m[3]);
    let at = tile_position(local);
    let b = bias[k];
    for (var i = 0u; i < 2u; i++) {
        let y = 2u * at.y + i;
        if y >= params.out_height {
            break;
        }
        var values = a_transpose_times(rows[i]) + b;
        if params.relu != 0u {
            values = max(values, vec2<f32>(0.0));
        }
        let start = ((at.x * params.out_channels + k) * params.out_height + y) * params.out_width;
        for (var j = 0u; j < 2u; j++) {
            let x = 2u * at.z + j;
            if x < params.out_width {
                output[start + x] = values[j];
            }
        }
    }
}
