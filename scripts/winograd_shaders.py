#!/usr/bin/env python3
"""Writes the Winograd F(2x2, 5x5) and F(4x4, 3x3) shaders (shaders/winograd5_*.wgsl,
shaders/winograd4_*.wgsl, and their shared shaders/winograd6_input.wgsl) from the transform matrices, derived here by the Cook-Toom
construction, and with --errors prints the f32 error of candidate transform points against an
f64 direct sum (why the points 0, 1, -1, 2, -1/2 and infinity, for both: docs/kernels.md). The
transforms are straight-line code: one expression per output value, zero
coefficients dropped, which llvmpipe compiles into plain arithmetic where a loop over a constant
matrix would index local arrays in memory.

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
    for m, r in [(2, 5), (4, 3)]:
        for points in candidates:
            worst, mean = tile_error(m, r, points)
            print(f"F({m}x{m}, {r}x{r}), points {[str(p) for p in points]} + infinity: f32 error "
                  f"per tile, max {worst:.2e}, mean {mean:.2e}")
    worst, mean = tile_error(2, 3, [0, 1, -1])
    print(f"F(2x2, 3x3), points ['0', '1', '-1'] + infinity: max {worst:.2e}, mean {mean:.2e}")


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

HEADER = "// Generated by scripts/winograd_shaders.py: edit that, not this file.\n"
POINTS = [0, 1, -1, 2, -sp.Rational(1, 2)]


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


def write_form(prefix, m, r):
    """The filter, output, output-gradient and filter-gradient shaders of F(m x m, r x r) on
    POINTS (and infinity), named prefix_* (the input transform: write_input_transform)."""
    AT, G, BT = matrices(m, r, POINTS)
    A, GT = AT.T, G.T
    a = m + r - 1
    title = f"Winograd F({m}x{m}, {r}x{r})"
    taps = r * r

    # The filter transform U = G g G^T (a x a from r x r).
    g = [[f"g{y}{x}" for x in range(r)] for y in range(r)]
    temps, u = two_sided(G, g, G, "t")
    write(f"{prefix}_filter", f"""// {title}, the filter transform U = G g G^T of every {r}x{r} filter ({a}x{a} each), from
// the packed weights [group][input channel, kernel row, kernel column][packed_out] into the
// transformed filters [xi][group][input channel][packed_out], xi = {a} * row + column of the {a}x{a}
// position (shaders/common/winograd_params.wgsl). One invocation per (group, input channel of the
// group, packed output channel), as winograd_filter.wgsl. The transform points are 0, 1, -1, 2,
// -1/2 and infinity: of the sets tried, the one whose f32 error against an f64 direct sum was
// smallest (docs/kernels.md).
//
{matrix_comment("G", G)}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> weights: array<InElement>;
@group(0) @binding(2) var<storage, read_write> transformed: array<f32>;
""", entry(f"{prefix}_filter", "filter_invocations()", lines(
        f"    let base = filter_base(index, {taps}u);",
        [f"    let g{y}{x} = f32(weights[base + {r * y + x}u * params.packed_out]);"
         for y in range(r) for x in range(r)],
        f"    // G g ({a} x {r}), then each of its rows times G^T.",
        temps,
        "    let positions = filter_invocations(); // values per position xi",
        [f"    transformed[{a * i + j}u * positions + index] = {u[(i, j)]};"
         for i in range(a) for j in range(a)],
    )))

    # The output transform Y = A^T M A (m x m from a x a).
    mm = [[f"m{y}{x}" for x in range(a)] for y in range(a)]
    temps, y = two_sided(AT, mm, AT, "t")
    write(f"{prefix}_output", f"""// {title}, the output transform Y = A^T M A of every tile's {a}x{a} products M (summed
// over the input channels by the grouped 1x1 convolution, [xi][output channel][P]), plus the
// bias and the fused ReLU, into the output's {m}x{m} tile. Bindings and tiles:
// winograd_output_tile.wgsl.
//
{matrix_comment("A^T", AT)}
""", entry(f"{prefix}_output", "params.out_channels * params.tiles", lines(
        [f"    let m{i}{j} = product({a * i + j}u, index);" for i in range(a) for j in range(a)],
        f"    // A^T M ({m} x {a}), then each of its rows times A.",
        temps,
        "    store_output_tile(index, array<f32, OUTPUT_VALUES>(",
        [f"        {y[(i, j)]}," for i in range(m) for j in range(m)],
        "    ));",
    )))

    # The output gradient's transform Delta = A delta A^T (a x a from m x m), four channels per
    # vec4.
    delta = [[f"tile.delta[{m * i + j}]" for j in range(m)] for i in range(m)]
    temps, D = two_sided(A, delta, A, "t")
    write(f"{prefix}_gradient", f"""// {title} for the filter gradient, the output gradient's transform: every {m}x{m} tile
// delta of a convolution's output gradient becomes the {a}x{a} tile Delta = A delta A^T, with the {a * a}
// positions as groups of the filter-gradient kernels' layout (winograd_gradient.wgsl derives the
// algorithm; bindings, tiles and the layout written: winograd_gradient_tile.wgsl).
//
{matrix_comment("A", A)}
""", entry(f"{prefix}_gradient", "gradient_invocations()", lines(
        f"    let tile = gradient_tile(index, {a * a}u);",
        f"    // A delta ({a} x {m}), then each of its rows times A^T.",
        temps,
        [f"    transformed[tile.base + {a * i + j}u * tile.stride] = {D[(i, j)]};"
         for i in range(a) for j in range(a)],
    )))

    # The filter gradient dg = G^T dU G (r x r from a x a).
    temps, dg = two_sided(GT, mm, GT, "t")
    write(f"{prefix}_filter_gradient", f"""// {title} for the filter gradient, the last transform: the gradient of every
// transformed filter, summed over a chunk of tiles ([xi][group][input channel of the
// group][packed_out]), back to the {r}x{r} filter's gradient dg = G^T dU G in the packed weights'
// layout; the first chunk of tiles writes it, later chunks add to it. Bindings:
// winograd_filter_sums.wgsl.
""", entry(f"{prefix}_filter_gradient", "filter_invocations()", lines(
        [f"    let m{i}{j} = filter_sum({a * i + j}u, index);" for i in range(a) for j in range(a)],
        f"    // G^T dU ({r} x {a}), then each of its rows times G.",
        temps,
        f"    let base = filter_base(index, {taps}u);",
        [f"    store_tap(base, {r * i + j}u, {dg[(i, j)]});" for i in range(r) for j in range(r)],
    )))


def write_input_transform():
    """The 6x6 input transform V = B^T d B, one shader for F(2x2, 5x5) and F(4x4, 3x3): B^T
    depends only on the transform points, which they share; the output tile's side (the input
    tiles' stride) comes from a snippet."""
    _, _, BT = matrices(2, 5, POINTS)
    assert BT == matrices(4, 3, POINTS)[2]
    a = 6
    d = [[f"d{y}{x}" for x in range(a)] for y in range(a)]
    temps, v = two_sided(BT, d, BT, "t")
    write("winograd6_input", f"""// Winograd F(2x2, 5x5) and F(4x4, 3x3), the input transform V = B^T d B of every 6x6 input
// tile d and input channel, into the transformed inputs [xi][input channel][P]
// (shaders/common/winograd_params.wgsl). Compiled once per form, with its OUTPUT_TILE (the tiles'
// stride). Bindings and tiles: winograd_input_tile.wgsl.
//
{matrix_comment("B^T", BT)}
""", entry("winograd6_input", "params.channels * params.tiles", lines(
        "    let tile = input_tile(index);",
        [f"    let d{y}{x} = input_at(tile, {y}, {x});" for y in range(a) for x in range(a)],
        f"    // B^T d ({a} x {a}), then each of its rows times B.",
        temps,
        [f"    store_transformed({a * i + j}u, index, {v[(i, j)]});"
         for i in range(a) for j in range(a)],
    )))


write_form("winograd5", 2, 5)
write_form("winograd4", 4, 3)
write_input_transform()
