//! Every WGSL kernel of the crate, pulled in from `shaders/` (one op per file). This list is the
//! one place that names them, so the naga validation test and the GPU host cannot drift apart.
//!
//! What a kernel is compiled from, in order: a prelude of constants generated from the Rust
//! constants below (tile sizes are defined once, here), `shaders/common/grid.wgsl` (every kernel's
//! workgroup size and folded grid index), the shared snippets its file names, and the file itself.
//! [`ShaderSource::wgsl`] assembles it, and both the pipelines and the naga tests compile exactly
//! that text.

/// Edge of the register block of the CPU-shaped GEMM-like kernels: 16 outputs by 16 outputs per
/// invocation, and the multiple that packed channel and column counts are rounded up to.
pub const BLOCK: usize = 16;
/// Edge of the workgroup tile of the GPU-shaped kernels: 64 outputs by 64 outputs per workgroup.
pub const TILE: usize = 64;
/// Reduction steps the GPU-shaped kernels stage in workgroup memory between two barriers.
pub const TILE_K: usize = 16;
/// Invocations of a workgroup-tiled kernel: 16 x 16, each owning 4 x 4 outputs of the tile.
pub const TILE_INVOCATIONS: u32 = ((TILE / 4) * (TILE / 4)) as u32;
/// Workgroup memory of a workgroup-tiled kernel: two tiles of `TILE_K` x `TILE` floats.
pub const TILE_WORKGROUP_BYTES: u32 = (2 * TILE_K * TILE * 4) as u32;
/// Largest edge of a pooling kernel's tile of outputs (forward) or inputs (backward).
pub const POOL_TILE: usize = 4;

/// The WGSL prelude every kernel starts with: the constants above.
fn prelude() -> String {
    format!(
        "// Generated from the constants of src/shaders.rs.\n\
         const BLOCK: u32 = {BLOCK}u;\n\
         const TILE: u32 = {TILE}u;\n\
         const TILE_K: u32 = {TILE_K}u;\n\
         const POOL_TILE: u32 = {POOL_TILE}u;\n"
    )
}

/// A kernel's WGSL: its file, the shared snippets it uses, and the entry point it provides.
#[derive(Clone, Copy, Debug)]
pub struct ShaderSource {
    /// File name under `shaders/`.
    pub file: &'static str,
    /// The compute entry point (named after the op).
    pub entry_point: &'static str,
    /// `shaders/common/grid.wgsl`, the file's snippets from `shaders/common/`, and the file.
    body: &'static str,
    /// The snippets' file names, for the test that every snippet is used.
    pub snippets: &'static [&'static str],
}

impl ShaderSource {
    /// The WGSL text the kernel is compiled from: the prelude, then the body.
    pub fn wgsl(&self) -> String {
        prelude() + self.body
    }
}

macro_rules! shader {
    ($file:literal, $entry:literal, [$($snippet:literal),*]) => {
        ShaderSource {
            file: $file,
            entry_point: $entry,
            body: concat!(
                include_str!("../shaders/common/grid.wgsl"),
                $(include_str!(concat!("../shaders/common/", $snippet)),)*
                include_str!(concat!("../shaders/", $file))
            ),
            snippets: &["grid.wgsl", $($snippet),*],
        }
    };
}

pub const CONV2D_FORWARD: ShaderSource = shader!(
    "conv2d_forward.wgsl",
    "conv2d_forward",
    ["conv2d_params.wgsl", "outer_product.wgsl"]
);
pub const CONV2D_FORWARD_TILED: ShaderSource = shader!(
    "conv2d_forward.wgsl",
    "conv2d_forward_tiled",
    ["conv2d_params.wgsl", "outer_product.wgsl"]
);
pub const CONV2D_PAD_INPUT: ShaderSource = shader!("conv2d_pad_input.wgsl", "conv2d_pad_input", []);
pub const CONV2D_BACKWARD_DATA: ShaderSource = shader!(
    "conv2d_backward_data.wgsl",
    "conv2d_backward_data",
    ["conv2d_params.wgsl", "outer_product.wgsl"]
);
pub const CONV2D_BACKWARD_FILTER: ShaderSource = shader!(
    "conv2d_backward_filter.wgsl",
    "conv2d_backward_filter",
    ["conv2d_params.wgsl", "outer_product.wgsl"]
);
pub const CONV2D_BACKWARD_FILTER_TILED: ShaderSource = shader!(
    "conv2d_backward_filter.wgsl",
    "conv2d_backward_filter_tiled",
    ["conv2d_params.wgsl", "outer_product.wgsl"]
);
pub const CONV2D_TRANSPOSE_WEIGHTS: ShaderSource = shader!(
    "conv2d_transpose_weights.wgsl",
    "conv2d_transpose_weights",
    []
);
pub const CONV2D_TRANSPOSE_GRAD_OUTPUT: ShaderSource = shader!(
    "conv2d_transpose_grad_output.wgsl",
    "conv2d_transpose_grad_output",
    []
);
pub const SUM_CHUNKS: ShaderSource =
    shader!("sum_chunks.wgsl", "sum_chunks", ["sum_partials.wgsl"]);
pub const GEMM: ShaderSource = shader!("gemm.wgsl", "gemm", ["outer_product.wgsl"]);
pub const GEMM_SMALL_BATCH: ShaderSource = shader!(
    "gemm_small_batch.wgsl",
    "gemm_small_batch",
    ["outer_product.wgsl"]
);
pub const GEMM_SPLIT_K_REDUCE: ShaderSource = shader!(
    "gemm_split_k_reduce.wgsl",
    "gemm_split_k_reduce",
    ["sum_partials.wgsl"]
);
pub const MATMUL: ShaderSource = shader!("matmul.wgsl", "matmul", ["outer_product.wgsl"]);
pub const MATMUL_TILED: ShaderSource =
    shader!("matmul.wgsl", "matmul_tiled", ["outer_product.wgsl"]);
pub const LRN_FORWARD: ShaderSource =
    shader!("lrn_forward.wgsl", "lrn_forward", ["lrn_window.wgsl"]);
pub const LRN_BACKWARD: ShaderSource =
    shader!("lrn_backward.wgsl", "lrn_backward", ["lrn_window.wgsl"]);
pub const MAX_POOL_FORWARD: ShaderSource = shader!("max_pool_forward.wgsl", "max_pool_forward", []);
pub const MAX_POOL_ARGMAX: ShaderSource = shader!("max_pool_forward.wgsl", "max_pool_argmax", []);
pub const MAX_POOL_BACKWARD: ShaderSource =
    shader!("max_pool_backward.wgsl", "max_pool_backward", []);
pub const ADAPTIVE_AVG_POOL_FORWARD: ShaderSource = shader!(
    "adaptive_avg_pool_forward.wgsl",
    "adaptive_avg_pool_forward",
    []
);
pub const BATCH_NORM_FORWARD: ShaderSource =
    shader!("batch_norm_forward.wgsl", "batch_norm_forward", []);
pub const ADD_FORWARD: ShaderSource = shader!("add_forward.wgsl", "add_forward", []);
pub const CONCAT_FORWARD: ShaderSource = shader!("concat_forward.wgsl", "concat_forward", []);
pub const BIAS_BACKWARD: ShaderSource = shader!("bias_backward.wgsl", "bias_backward", []);
pub const RELU_BACKWARD: ShaderSource = shader!("relu_backward.wgsl", "relu_backward", []);
pub const SGD: ShaderSource = shader!("sgd.wgsl", "sgd", []);
pub const PEAK_FMA: ShaderSource = shader!("peak_fma.wgsl", "peak_fma", []);
pub const PEAK_BANDWIDTH: ShaderSource = shader!("peak_bandwidth.wgsl", "peak_bandwidth", []);

/// Every kernel entry point.
pub const ALL: &[ShaderSource] = &[
    CONV2D_FORWARD,
    CONV2D_FORWARD_TILED,
    CONV2D_PAD_INPUT,
    CONV2D_BACKWARD_DATA,
    CONV2D_BACKWARD_FILTER,
    CONV2D_BACKWARD_FILTER_TILED,
    CONV2D_TRANSPOSE_WEIGHTS,
    CONV2D_TRANSPOSE_GRAD_OUTPUT,
    SUM_CHUNKS,
    GEMM,
    GEMM_SMALL_BATCH,
    GEMM_SPLIT_K_REDUCE,
    MATMUL,
    MATMUL_TILED,
    LRN_FORWARD,
    LRN_BACKWARD,
    MAX_POOL_FORWARD,
    MAX_POOL_ARGMAX,
    MAX_POOL_BACKWARD,
    ADAPTIVE_AVG_POOL_FORWARD,
    BATCH_NORM_FORWARD,
    ADD_FORWARD,
    CONCAT_FORWARD,
    BIAS_BACKWARD,
    RELU_BACKWARD,
    SGD,
    PEAK_FMA,
    PEAK_BANDWIDTH,
];
