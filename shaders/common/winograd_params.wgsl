
// Winograd's F(2x2, 3x3) for a 3x3 stride-1 convolution (Lavin and Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016): every 2x2 tile of outputs comes from the 4x4 tile of
// inputs around it as
//
//   Y = A^T [ sum over input channels of (G g G^T) . (B^T d B) ] A
//
// with g a 3x3 filter, d the input tile and . the elementwise product of 4x4 matrices: 16
// multiplies per tile and input channel instead of 36. The 16 positions of the 4x4 product are
// 16 independent matrix products over the channels, which the host runs as one grouped 1x1
// convolution on the direct kernels (gpu::ops::conv::winograd). The three transforms are
// winograd_filter.wgsl, winograd_input.wgsl and winograd_output.wgsl; their layouts, with
// P the tiles of a chunk, xi = 4 * row + column of the 4x4 position, G the groups:
//
//   transformed filters  [xi][group][input channel of the group][out_per_group rounded up to 16]
//   transformed inputs   [xi][input channel][P]
//   products             [xi][output channel][P]
//
// and for the filter gradient (winograd_gradient.wgsl, winograd_filter_gradient.wgsl), whose 16
// products sum over the tiles instead of the channels:
//
//   transformed output gradient  [P][xi][group][out_per_group rounded up to 16]
//   filter gradient sums         [xi][group][input channel of the group][rounded up to 16]
//
// The transform points are 0, 1, -1 and infinity, whose matrices hold only 0, +-1 and 1/2: the
// transforms add and subtract, and F(2x2, 3x3) loses no more than a few units in the last place
// against the direct sum.
//
// F(2x2, 5x5) (the winograd5_* shaders) and F(4x4, 3x3) (winograd4_*) share these parameters
// and layouts with 6x6 transforms: 36 positions, xi = 6 * row + column. OUTPUT_TILE, the side
// of the output tiles that the snippets read, comes from winograd_tile2.wgsl or
// winograd_tile4.wgsl. The 6x6 input transform is one file for both 6x6 forms
// (winograd6_input.wgsl): it depends only on the transform points, which they share.
struct Params {
    batch: u32,
    channels: u32,     // input channels
    in_height: u32,
    in_width: u32,
    out_channels: u32,
    out_height: u32,
    out_width: u32,
    groups: u32,
    packed_out: u32,   // output channels per group, rounded up to BLOCK
    tiles_down: u32,   // ceil(out_height / OUTPUT_TILE)
    tiles_across: u32, // ceil(out_width / OUTPUT_TILE)
    first_tile: u32,   // the chunk's first tile, counting [image][tile row][tile column]
    tiles: u32,        // tiles in the chunk (P)
    pad_top: u32,
    pad_left: u32,
    relu: u32,
    accumulate: u32,   // winograd_filter_gradient: add to the gradient (not the first chunk)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Outputs per tile.
const OUTPUT_VALUES: u32 = OUTPUT_TILE * OUTPUT_TILE;

// The image, tile row and tile column of the chunk's tile `local`.
fn tile_position(local: u32) -> vec3<u32> {
    let tile = params.first_tile + local;
    let per_image = params.tiles_down * params.tiles_across;
    let image = tile / per_image;
    let within = tile - image * per_image;
    let row = within / params.tiles_across;
    return vec3<u32>(image, row, within - row * params.tiles_across);
}

// Invocations of the filter transforms and the filter gradient's: one per (group, input channel
// of the group, packed output channel).
fn filter_invocations() -> u32 {
    return params.channels * params.packed_out;
}

// Where invocation `index`'s filter has its first tap in the packed weights [group][input
// channel, kernel row, kernel column][packed_out], for filters of `taps` taps: tap t is at
// base + t * packed_out.
fn filter_base(index: u32, taps: u32) -> u32 {
    let row = index / params.packed_out; // group * in_per_group + input channel
    let o = index - row * params.packed_out;
    return row * taps * params.packed_out + o;
}
