#!/usr/bin/env python3
"""Writes the Winograd F(2x2, 5x5) shaders (shaders/winograd5_*.wgsl) from the transform
matrices, derived here by the Cook-Toom construction, and prints the f32 error of the
candidate transform points against an f64 direct sum (why the points 0, 1, -1, 2, -1/2 and
infinity: docs/kernels.md). The five transforms are straight-line code: one expression per
output value, zero coefficients dropped, which llvmpipe compiles into plain arithmetic where a
loop over a constant matrix would index local arrays in memory.

    pip install sympy numpy && python3 scripts/winograd_shaders.py
"""
import os
import sys

import numpy as np
import sympy as sp

SHADERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shaders")


def matrices(m, r, points):
    """Winograd's F(m, r) by the Cook-Toom construction over the finite `points` and infinity:
    A^T (m x a), G (a x r) and B^T (a x a), a = m + r - 1, with y = A^T [(G g) . (B^T d)] the
    correlation y_i = sum_k g_k d_(i+k). A^T and G are the Vandermonde rows of the points (G's
    scaled by 1 / prod(p - q)); B^T is solved for, column by column, from the identity."""
    a = len(points) + 1
    assert a == m + r - 1
    AT, G = sp.zeros(m, a), sp.zeros(a, r)
    for j, p in enumerate(points):
        scale = sp.prod([p - q for q in points if q != p])
        for i in range(m):
            AT[i, j] = sp.Rational(p) ** i
        for k in range(r):
            G[j, k] = sp.Rational(p) ** k / scale
    AT[m - 1, a - 1] = 1
    G[a - 1, r - 1] = 1
    BT = sp.zeros(a, a)
    unknowns = sp.symbols(f"x0:{a}")
    for col in range(a):
        equations = [
            sum(AT[i, j] * G[j, k] * unknowns[j] for j in range(a)) - (1 if col == i + k else 0)
            for i in range(m)
            for k in range(r)
        ]
        solution = sp.solve(equations, unknowns, dict=True)
        assert solution, f"no B^T column {col} for these points"
        for j in range(a):
            BT[j, col] = solution[0][unknowns[j]]
    return AT, G, BT


def tile_error(m, r, points, channels=128, trials=200):
    """The f32 error of one 2-D output tile through F(m, r), summed over `channels` random
    channels, relative to the tile's largest value, against an f64 direct sum: (max, mean) over
    `trials` tiles."""
    AT, G, BT = (np.array(x, dtype=np.float32) for x in matrices(m, r, points))
    a = m + r - 1
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(trials):
        g = rng.standard_normal((channels, r, r)).astype(np.float32)
        d = rng.standard_normal((channels, a, a)).astype(np.float32)
        U = np.einsum("ij,cjk,lk->cil", G, g, G)
        V = np.einsum("ij,cjk,lk->cil", BT, d, BT)
        Y = AT @ (U * V).sum(0, dtype=np.float32) @ AT.T
        exact = np.array([[(g.astype(np.float64) * d[:, y:y + r, x:x + r]).sum()
                           for x in range(m)] for y in range(m)])
        errors.append(np.abs(Y - exact).max() / np.abs(exact).max())
    return max(errors), float(np.mean(errors))


def print_error_table():
    R = sp.Rational
    candidates = [[0, 1, -1, 2, -2], [0, 1, -1, R(1, 2), -R(1, 2)], [0, 1, -1, 2, -R(1, 2)],
                  [0, 1, -1, R(1, 2), -2], [0, 1, -1, R(3, 2), -R(2, 3)]]
    for points in candidates:
        worst, mean = tile_error(2, 5, points)
        print(f"points {[str(p) for p in points]} + infinity: f32 error per tile, "
              f"max {worst:.2e}, mean {mean:.2e}")


def literal(c):
    """A WGSL float literal of the rational c, exact to f32."""
    text = repr(float(c))
    if "e" in text or len(text) > 13:
        text = "%.10g" % float(c)
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def combination(coefficients, names):
    """sum of coefficient * name as a WGSL expression, zero terms dropped, +-1 unwritten."""
    terms = []
    for c, name in zip(coefficients, names):
        if c == 0:
            continue
        if c == 1 or c == -1:
            terms.append(("+" if c > 0 else "-", name))
        else:
            terms.append(("+" if c > 0 else "-", f"{literal(abs(c))} * {name}"))
    if not terms:
        return "0.0"
    text = ("-" if terms[0][0] == "-" else "") + terms[0][1]
    for sign, term in terms[1:]:
        text += f" {sign} {term}"
    return text


def two_sided(L, X, Rt, temporary):
    """L X Rt^T for the matrix of WGSL names X: the `let` lines of the intermediate L X (named
    temporary{i}_{k}) and a dict (i, l) -> expression of the result."""
    lines = []
    for i in range(L.rows):
        for k in range(len(X[0])):
            expression = combination([L[i, j] for j in range(L.cols)],
                                     [X[j][k] for j in range(L.cols)])
            lines.append(f"    let {temporary}{i}_{k} = {expression};")
    result = {}
    for i in range(L.rows):
        for l in range(Rt.rows):
            result[(i, l)] = combination([Rt[l, k] for k in range(Rt.cols)],
                                         [f"{temporary}{i}_{k}" for k in range(Rt.cols)])
    return lines, result


def matrix_comment(name, M):
    """M as a WGSL comment block."""
    width = max(len(str(M[i, j])) for i in range(M.rows) for j in range(M.cols))
    rows = []
    for i in range(M.rows):
        label = f"{name} = " if i == M.rows // 2 else " " * (len(name) + 3)
        cells = "  ".join(str(M[i, j]).rjust(width) for j in range(M.cols))
        rows.append(f"//   {label}| {cells} |")
    return "\n".join(rows)


if "--errors" in sys.argv:
    print_error_table()
    sys.exit(0)

AT, G, BT = matrices(2, 5, [0, 1, -1, 2, -sp.Rational(1, 2)])
A, GT = AT.T, G.T


# 1. filter
g=[[f'g{y}{x}' for x in range(5)] for y in range(5)]
lines,res=two_sided(G, g, G, 't')
body='\n'.join(lines)
stores='\n'.join(f'    transformed[{6*i+j}u * positions + index] = {res[(i,j)]};' for i in range(6) for j in range(6))
loads='\n'.join(f'    let g{y}{x} = weights[(first + {5*y+x}u) * params.packed_out + o];' for y in range(5) for x in range(5))
open(os.path.join(SHADERS, 'winograd5_filter.wgsl'), 'w').write(f'''// Generated by scripts/winograd_shaders.py: edit that, not this file.\n// Winograd F(2x2, 5x5), the filter transform U = G g G^T of every 5x5 filter (6x6 each), from
// the packed weights [group][input channel, kernel row, kernel column][packed_out] into the
// transformed filters [xi][group][input channel][packed_out], xi = 6 * row + column of the 6x6
// position (shaders/common/winograd_params.wgsl). One invocation per (group, input channel of the
// group, packed output channel), as winograd_filter.wgsl. The transform points are 0, 1, -1, 2,
// -1/2 and infinity: of the sets tried, the one whose f32 error against an f64 direct sum was
// smallest (docs/kernels.md).
//
{matrix_comment("G", G)}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> weights: array<f32>;
@group(0) @binding(2) var<storage, read_write> transformed: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn winograd5_filter(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {{
    let index = folded_index(id, groups);
    let rows = params.channels; // (group, input channel of the group) pairs
    if index >= rows * params.packed_out {{
        return;
    }}
    let row = index / params.packed_out;
    let o = index - row * params.packed_out;
    let first = row * 25u;
{loads}
    // G g (6 x 5), then each of its rows times G^T.
{body}
    let positions = rows * params.packed_out; // values per position xi
{stores}
}}
''')

# 2. input
d=[[f'd{y}{x}' for x in range(6)] for y in range(6)]
lines,res=two_sided(BT, d, BT, 't')
loads='\n'.join(f'    let d{y}{x} = input_at(plane, top + {y}, left + {x});' for y in range(6) for x in range(6))
stores='\n'.join(f'    transformed[{6*i+j}u * per_position + index] = {res[(i,j)]};' for i in range(6) for j in range(6))
open(os.path.join(SHADERS, 'winograd5_input.wgsl'), 'w').write(f'''// Generated by scripts/winograd_shaders.py: edit that, not this file.\n// Winograd F(2x2, 5x5), the input transform V = B^T d B of every 6x6 input tile d and input
// channel, into the transformed inputs [xi][input channel][P] (shaders/common/winograd_params.wgsl).
// Tile (row r, column c) of an image reads the input rows 2r - pad_top .. + 5 and columns
// 2c - pad_left .. + 5, zeros outside the image. One invocation per (input channel, tile of the
// chunk), as winograd_input.wgsl.
//
{matrix_comment("B^T", BT)}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> transformed: array<f32>;

// The input at (y, x) of the plane starting at row `plane`, zero outside the image.
fn input_at(plane: u32, y: i32, x: i32) -> f32 {{
    if y < 0 || y >= i32(params.in_height) || x < 0 || x >= i32(params.in_width) {{
        return 0.0;
    }}
    return input[(plane + u32(y)) * params.in_width + u32(x)];
}}

@compute @workgroup_size(WORKGROUP_SIZE)
fn winograd5_input(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {{
    let index = folded_index(id, groups);
    if index >= params.channels * params.tiles {{
        return;
    }}
    let c = index / params.tiles;
    let local = index - c * params.tiles;
    let at = tile_position(local);
    let plane = (at.x * params.channels + c) * params.in_height;
    let top = i32(2u * at.y) - i32(params.pad_top);
    let left = i32(2u * at.z) - i32(params.pad_left);
{loads}
    // B^T d (6 x 6), then each of its rows times B.
{chr(10).join(lines)}
    let per_position = params.channels * params.tiles;
{stores}
}}
''')

# 3. output
mm=[[f'm{y}{x}' for x in range(6)] for y in range(6)]
lines,res=two_sided(AT, mm, AT, 't')
loads='\n'.join(f'    let m{y}{x} = products[{6*y+x}u * per_position + index];' for y in range(6) for x in range(6))
open(os.path.join(SHADERS, 'winograd5_output.wgsl'), 'w').write(f'''// Generated by scripts/winograd_shaders.py: edit that, not this file.\n// Winograd F(2x2, 5x5), the output transform Y = A^T M A of every tile's 6x6 products M (summed
// over the input channels by the grouped 1x1 convolution, [xi][output channel][P]), plus the
// bias and the fused ReLU, into the output's 2x2 tile (not written past the output's edge). One
// invocation per (output channel, tile of the chunk), as winograd_output.wgsl.
//
{matrix_comment("A^T", AT)}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> products: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn winograd5_output(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {{
    let index = folded_index(id, groups);
    if index >= params.out_channels * params.tiles {{
        return;
    }}
    let k = index / params.tiles;
    let local = index - k * params.tiles;
    let per_position = params.out_channels * params.tiles;
{loads}
    // A^T M (2 x 6), then each of its rows times A.
{chr(10).join(lines)}
    var values = array<vec2<f32>, 2>(
        vec2<f32>({res[(0,0)]}, {res[(0,1)]}),
        vec2<f32>({res[(1,0)]}, {res[(1,1)]}),
    );
    let at = tile_position(local);
    let b = bias[k];
    for (var i = 0u; i < 2u; i++) {{
        let y = 2u * at.y + i;
        if y >= params.out_height {{
            break;
        }}
        var row = values[i] + b;
        if params.relu != 0u {{
            row = max(row, vec2<f32>(0.0));
        }}
        let start = ((at.x * params.out_channels + k) * params.out_height + y) * params.out_width;
        for (var j = 0u; j < 2u; j++) {{
            let x = 2u * at.z + j;
            if x < params.out_width {{
                output[start + x] = row[j];
            }}
        }}
    }}
}}
''')

# 4. gradient: Delta = A delta A^T (6x6 from 2x2), vec4 over channels
dl=[['delta[0]','delta[1]'],['delta[2]','delta[3]']]
lines,res=two_sided(A, dl, A, 't')
stores='\n'.join(f'    transformed[base + {6*i+j}u * row_vec4s] = {res[(i,j)]};' for i in range(6) for j in range(6))
open(os.path.join(SHADERS, 'winograd5_gradient.wgsl'), 'w').write(f'''// Generated by scripts/winograd_shaders.py: edit that, not this file.\n// Winograd F(2x2, 5x5) for the filter gradient, the output gradient's transform: every 2x2 tile
// delta of a convolution's output gradient becomes the 6x6 tile Delta = A delta A^T, written in
// the layout conv2d_backward_filter reads its transposed output gradient in, with the 36
// positions as groups: [tile of the chunk][xi][group][out channel of the group rounded up to 16]
// (zero in the padding channels and past the output's edge). One invocation per (tile, group,
// four channels), as winograd_gradient.wgsl, whose comment derives the algorithm.
//
{matrix_comment("A", A)}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<f32>;
@group(0) @binding(2) var<storage, read_write> transformed: array<vec4<f32>>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn winograd5_gradient(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {{
    let index = folded_index(id, groups);
    let blocks = params.packed_out / 4u; // four channels per invocation
    let per_tile = params.groups * blocks;
    if index >= params.tiles * per_tile {{
        return;
    }}
    let local = index / per_tile;
    let within = index - local * per_tile;
    let group = within / blocks;
    let first = 4u * (within - group * blocks); // first channel of the group
    let out_per_group = params.out_channels / params.groups;
    let at = tile_position(local);
    // The 2x2 tile of the four channels' gradients, zero outside the output or the channels.
    var delta: array<vec4<f32>, 4>; // [2 * row + column], one channel per lane
    for (var i = 0u; i < 2u; i++) {{
        let y = 2u * at.y + i;
        for (var j = 0u; j < 2u; j++) {{
            let x = 2u * at.z + j;
            if y < params.out_height && x < params.out_width {{
                for (var lane = 0u; lane < 4u; lane++) {{
                    let channel = first + lane;
                    if channel < out_per_group {{
                        let k = at.x * params.out_channels + group * out_per_group + channel;
                        delta[2u * i + j][lane] = grad_output[(k * params.out_height + y) * params.out_width + x];
                    }}
                }}
            }}
        }}
    }}
    // A delta (6 x 2), then each of its rows times A^T.
{chr(10).join(lines)}
    let row_vec4s = params.groups * blocks; // vec4s per position xi of a tile
    let base = local * 36u * row_vec4s + within;
{stores}
}}
''')

# 5. filter gradient: dg = G^T dU G (5x5 from 6x6)
mm=[[f'm{y}{x}' for x in range(6)] for y in range(6)]
lines,res=two_sided(GT, mm, GT, 't')
loads='\n'.join(f'    let m{y}{x} = sums[{6*y+x}u * positions + index];' for y in range(6) for x in range(6))
taps='\n'.join(f'    tap({5*y+x}u, {res[(y,x)]});' for y in range(5) for x in range(5))
open(os.path.join(SHADERS, 'winograd5_filter_gradient.wgsl'), 'w').write(f'''// Generated by scripts/winograd_shaders.py: edit that, not this file.\n// Winograd F(2x2, 5x5) for the filter gradient, the last transform: the gradient of every
// transformed filter, summed over a chunk of tiles ([xi][group][input channel of the
// group][packed_out]), back to the 5x5 filter's gradient dg = G^T dU G in the packed weights'
// layout; the first chunk of tiles writes it, later chunks add to it. One invocation per (group,
// input channel of the group, packed output channel), as winograd_filter_gradient.wgsl.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> sums: array<f32>;
@group(0) @binding(2) var<storage, read_write> gradient: array<f32>;

// Writes (or adds) tap `t` = 5 * kernel row + kernel column of this invocation's filter.
fn store_tap(first: u32, o: u32, t: u32, value: f32) {{
    let at = (first + t) * params.packed_out + o;
    if params.accumulate != 0u {{
        gradient[at] += value;
    }} else {{
        gradient[at] = value;
    }}
}}

@compute @workgroup_size(WORKGROUP_SIZE)
fn winograd5_filter_gradient(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {{
    let index = folded_index(id, groups);
    let rows = params.channels; // (group, input channel of the group) pairs
    if index >= rows * params.packed_out {{
        return;
    }}
    let row = index / params.packed_out;
    let o = index - row * params.packed_out;
    let first = row * 25u;
    let positions = rows * params.packed_out; // values per position xi
{loads}
    // G^T dU (5 x 6), then each of its rows times G.
{chr(10).join(lines)}
{taps.replace("    tap(", "    store_tap(first, o, ")}
}}
''')
