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


HEADER = "// Generated by scripts/winograd_shaders.py: edit that, not this file.\n"


def entry(name, guard, body):
    """A compute entry point over one invocation per `guard` unit, with `body` after the
    bounds check."""
    return f"""@compute @workgroup_size(WORKGROUP_SIZE)
fn {name}(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {{
    let index = folded_index(id, groups);
    if index >= {guard} {{
        return;
    }}
{body}
}}
"""


def write(name, comment, body):
    with open(os.path.join(SHADERS, name + ".wgsl"), "w") as f:
        f.write(HEADER + comment + "\n" + body)


def lines(*parts):
    return "\n".join(p for part in parts for p in ([part] if isinstance(part, str) else part))


# The filter transform U = G g G^T (6x6 from 5x5).
g = [[f"g{y}{x}" for x in range(5)] for y in range(5)]
temps, u = two_sided(G, g, G, "t")
write("winograd5_filter", f"""// Winograd F(2x2, 5x5), the filter transform U = G g G^T of every 5x5 filter (6x6 each), from
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
""", entry("winograd5_filter", "filter_invocations()", lines(
    "    let base = filter_base(index, 25u);",
    [f"    let g{y}{x} = weights[base + {5 * y + x}u * params.packed_out];"
     for y in range(5) for x in range(5)],
    "    // G g (6 x 5), then each of its rows times G^T.",
    temps,
    "    let positions = filter_invocations(); // values per position xi",
    [f"    transformed[{6 * i + j}u * positions + index] = {u[(i, j)]};"
     for i in range(6) for j in range(6)],
)))

# The input transform V = B^T d B (6x6 from 6x6).
d = [[f"d{y}{x}" for x in range(6)] for y in range(6)]
temps, v = two_sided(BT, d, BT, "t")
write("winograd5_input", f"""// Winograd F(2x2, 5x5), the input transform V = B^T d B of every 6x6 input tile d and input
// channel, into the transformed inputs [xi][input channel][P] (shaders/common/winograd_params.wgsl).
// Bindings and tiles: winograd_input_tile.wgsl.
//
{matrix_comment("B^T", BT)}
""", entry("winograd5_input", "params.channels * params.tiles", lines(
    "    let tile = input_tile(index);",
    [f"    let d{y}{x} = input_at(tile, {y}, {x});" for y in range(6) for x in range(6)],
    "    // B^T d (6 x 6), then each of its rows times B.",
    temps,
    [f"    store_transformed({6 * i + j}u, index, {v[(i, j)]});"
     for i in range(6) for j in range(6)],
)))

# The output transform Y = A^T M A (2x2 from 6x6).
m = [[f"m{y}{x}" for x in range(6)] for y in range(6)]
temps, y = two_sided(AT, m, AT, "t")
write("winograd5_output", f"""// Winograd F(2x2, 5x5), the output transform Y = A^T M A of every tile's 6x6 products M (summed
// over the input channels by the grouped 1x1 convolution, [xi][output channel][P]), plus the
// bias and the fused ReLU, into the output's 2x2 tile. Bindings and tiles:
// winograd_output_tile.wgsl.
//
{matrix_comment("A^T", AT)}
""", entry("winograd5_output", "params.out_channels * params.tiles", lines(
    [f"    let m{r}{c} = product({6 * r + c}u, index);" for r in range(6) for c in range(6)],
    "    // A^T M (2 x 6), then each of its rows times A.",
    temps,
    "    store_output_tile(index, array<vec2<f32>, 2>(",
    f"        vec2<f32>({y[(0, 0)]}, {y[(0, 1)]}),",
    f"        vec2<f32>({y[(1, 0)]}, {y[(1, 1)]}),",
    "    ));",
)))

# The output gradient's transform Delta = A delta A^T (6x6 from 2x2), four channels per vec4.
delta = [["tile.delta[0]", "tile.delta[1]"], ["tile.delta[2]", "tile.delta[3]"]]
temps, D = two_sided(A, delta, A, "t")
write("winograd5_gradient", f"""// Winograd F(2x2, 5x5) for the filter gradient, the output gradient's transform: every 2x2 tile
// delta of a convolution's output gradient becomes the 6x6 tile Delta = A delta A^T, with the 36
// positions as groups of the filter-gradient kernels' layout (winograd_gradient.wgsl derives the
// algorithm; bindings, tiles and the layout written: winograd_gradient_tile.wgsl).
//
{matrix_comment("A", A)}
""", entry("winograd5_gradient", "gradient_invocations()", lines(
    "    let tile = gradient_tile(index, 36u);",
    "    // A delta (6 x 2), then each of its rows times A^T.",
    temps,
    [f"    transformed[tile.base + {6 * i + j}u * tile.stride] = {D[(i, j)]};"
     for i in range(6) for j in range(6)],
)))

# The filter gradient dg = G^T dU G (5x5 from 6x6).
temps, dg = two_sided(GT, m, GT, "t")
write("winograd5_filter_gradient", """// Winograd F(2x2, 5x5) for the filter gradient, the last transform: the gradient of every
// transformed filter, summed over a chunk of tiles ([xi][group][input channel of the
// group][packed_out]), back to the 5x5 filter's gradient dg = G^T dU G in the packed weights'
// layout; the first chunk of tiles writes it, later chunks add to it. Bindings:
// winograd_filter_sums.wgsl.
""", entry("winograd5_filter_gradient", "filter_invocations()", lines(
    [f"    let m{r}{c} = filter_sum({6 * r + c}u, index);" for r in range(6) for c in range(6)],
    "    // G^T dU (5 x 6), then each of its rows times G.",
    temps,
    "    let base = filter_base(index, 25u);",
    [f"    store_tap(base, {5 * r + c}u, {dg[(r, c)]});" for r in range(5) for c in range(5)],
)))
