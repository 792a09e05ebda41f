// Winograd F(2x2, 3x3) for the filter gradient, the last transform: the gradient of every
// transformed filter U = G g G^T, summed over a chunk of tiles ([xi][group][input channel of the
// group][packed_out], as conv2d_backward_filter writes the grouped 1x1 filter gradient of the 16
// positions; winograd_gradient.wgsl), back to the 3x3 filter's gradient
//
//   dg = G^T dU G,
//
// in the packed weights' layout [group][input channel, kernel row, kernel column][packed_out].
// The first chunk of tiles writes it, later chunks add to it (the transform is linear).
// Bindings: winograd_filter_sums.wgsl.
//
//         | 1  1/2  1/2  0 |
//   G^T = | 0  1/2 -1/2  0 |
//         | 0  1/2  1/2  1 |

// G^T applied to four values along one axis.
fn g_transpose_times(v: vec4<f32>) -> vec3<f32> {
    let middle = 0.5 * (v.y + v.z);
    return vec3<f32>(v.x + middle, 0.5 * (v.y - v.z), middle + v.w);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn winograd_filter_gradient(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let index = folded_index(id, groups);
    if index >= filter_invocations() {
        return;
    }
    var m: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        m[i] = vec4<f32>(
            filter_sum(4u * i, index),
            filter_sum(4u * i + 1u, index),
            filter_sum(4u * i + 2u, index),
            filter_sum(4u * i + 3u, index),
        );
    }
    // G^T dU (three rows), then each row times G.
    let middle = 0.5 * (m[1] + m[2]);
    let rows_of = array<vec4<f32>, 3>(m[0] + middle, 0.5 * (m[1] - m[2]), middle + m[3]);
    let base = filter_base(index, 9u);
    for (var ky = 0u; ky < 3u; ky++) {
        let taps = g_transpose_times(rows_of[ky]);
        for (var kx = 0u; kx < 3u; kx++) {
            store_tap(base, 3u * ky + kx, taps[kx]);
        }
    }
}
