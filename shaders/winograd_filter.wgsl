// Winograd F(2x2, 3x3), the filter transform U = G g G^T of every 3x3 filter, from the packed
// weights [group][input channel, kernel row, kernel column][packed_out] into the transformed
// filters [xi][group][input channel][packed_out] (shaders/common/winograd_params.wgsl), the
// weights of the grouped 1x1 convolution that multiplies them with the transformed inputs. One
// invocation per (group, input channel of the group, packed output channel); padding channels
// hold zeros in both layouts.
//
//       | 1    0    0  |
//   G = | 1/2  1/2  1/2|
//       | 1/2 -1/2  1/2|
//       | 0    0    1  |

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> weights: array<InElement>;
@group(0) @binding(2) var<storage, read_write> transformed: array<f32>;

// G applied to three values along one axis.
fn g_times(v: vec3<f32>) -> vec4<f32> {
    return vec4<f32>(v.x, 0.5 * (v.x + v.y + v.z), 0.5 * (v.x - v.y + v.z), v.z);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn winograd_filter(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let index = folded_index(id, groups);
    if index >= filter_invocations() {
        return;
    }
    let base = filter_base(index, 9u);
    // The filter's rows, each three taps along the kernel's width.
    var g: array<vec3<f32>, 3>;
    for (var ky = 0u; ky < 3u; ky++) {
        let tap = base + 3u * ky * params.packed_out;
        g[ky] = vec3<f32>(vec3<InElement>(weights[tap], weights[tap + params.packed_out], weights[tap + 2u * params.packed_out]));
    }
    // G g (4 x 3), row by row of G, then each of its four rows times G^T.
    let gg = array<vec3<f32>, 4>(
        g[0],
        0.5 * (g[0] + g[1] + g[2]),
        0.5 * (g[0] - g[1] + g[2]),
        g[2],
    );
    let positions = filter_invocations(); // values per position xi
    for (var i = 0u; i < 4u; i++) {
        let u = g_times(gg[i]);
        for (var j = 0u; j < 4u; j++) {
            transformed[(i * 4u + j) * positions + index] = u[j];
        }
    }
}
