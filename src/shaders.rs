//! Every WGSL kernel of the crate, pulled in from `shaders/` (one op per file). This list is the
//! one place that names them, so the naga validation test and the GPU host cannot drift apart.

/// A WGSL source file and the entry point it provides.
#[derive(Clone, Copy, Debug)]
pub struct ShaderSource {
    /// File name under `shaders/`.
    pub file: &'static str,
    /// The compute entry point (named after the op).
    pub entry_point: &'static str,
    /// The WGSL text.
    pub source: &'static str,
}

macro_rules! shader {
    ($file:literal, $entry:literal) => {
        ShaderSource {
            file: $file,
            entry_point: $entry,
            source: include_str!(concat!("../shaders/", $file)),
        }
    };
}

pub const CONV2D_FORWARD: ShaderSource = shader!("conv2d_forward.wgsl", "conv2d_forward");
pub const GEMM: ShaderSource = shader!("gemm.wgsl", "gemm");
pub const LRN_FORWARD: ShaderSource = shader!("lrn_forward.wgsl", "lrn_forward");
pub const MAX_POOL_FORWARD: ShaderSource = shader!("max_pool_forward.wgsl", "max_pool_forward");

/// All kernels.
pub const ALL: &[ShaderSource] = &[CONV2D_FORWARD, GEMM, LRN_FORWARD, MAX_POOL_FORWARD];
