
// The parameters of adaptive average pooling, forward and backward (one struct, as the host's
// AdaptiveAvgPoolParams), and the cells it averages: output cell i of n covers input rows
// floor(i * H / n) .. ceil((i + 1) * H / n) (and likewise columns), PyTorch's AdaptiveAvgPool2d.
struct Params {
    planes: u32, // batch * channels
    in_height: u32,
    in_width: u32,
    out_height: u32,
    out_width: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// The input range [begin, end) that cell `i` of `cells` covers along a dimension of `size`.
fn cell(i: u32, size: u32, cells: u32) -> vec2<u32> {
    return vec2<u32>(i * size / cells, ((i + 1u) * size + cells - 1u) / cells);
}
