// The side of the output tiles of F(2x2, 3x3) and F(2x2, 5x5) (shaders/common/winograd_params.wgsl).
const OUTPUT_TILE: u32 = 2u;
