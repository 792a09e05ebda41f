// The side of the output tiles of F(4x4, 3x3) (shaders/common/winograd_params.wgsl).
const OUTPUT_TILE: u32 = 4u;
