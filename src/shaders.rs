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
pub const CONV2D_PAD_INPUT: ShaderSource = shader!("conv2d_pad_input.wgsl", "conv2d_pad_input");
pub const CONV2D_FORWARD_TILED: ShaderSource =
    shader!("conv2d_forward.wgsl", "conv2d_forward_tiled");
pub const GEMM: ShaderSource = shader!("gemm.wgsl", "gemm");
pub const GEMM_SMALL_BATCH: ShaderSource = shader!("gemm_small_batch.wgsl", "gemm_small_batch");
pub const GEMM_SPLIT_K_REDUCE: ShaderSource =
    shader!("gemm_split_k_reduce.wgsl", "gemm_split_k_reduce");
pub const LRN_FORWARD: ShaderSource = shader!("lrn_forward.wgsl", "lrn_forward");
pub const MAX_POOL_FORWARD: ShaderSource = shader!("max_pool_forward.wgsl", "max_pool_forward");
pub const BATCH_NORM_FORWARD: ShaderSource =
    shader!("batch_norm_forward.wgsl", "batch_norm_forward");
pub const ADD_FORWARD: ShaderSource = shader!("add_forward.wgsl", "add_forward");
pub const ADAPTIVE_AVG_POOL_FORWARD: ShaderSource = shader!(
    "adaptive_avg_pool_forward.wgsl",
    "adaptive_avg_pool_forward"
);
pub const CONCAT_FORWARD: ShaderSource = shader!("concat_forward.wgsl", "concat_forward");

pub const CONV2D_BACKWARD_DATA: ShaderSource =
    shader!("conv2d_backward_data.wgsl", "conv2d_backward_data");
pub const CONV2D_BACKWARD_FILTER: ShaderSource =
    shader!("conv2d_backward_filter.wgsl", "conv2d_backward_filter");
pub const CONV2D_BACKWARD_FILTER_TILED: ShaderSource = shader!(
    "conv2d_backward_filter.wgsl",
    "conv2d_backward_filter_tiled"
);
pub const CONV2D_TRANSPOSE_WEIGHTS: ShaderSource =
    shader!("conv2d_transpose_weights.wgsl", "conv2d_transpose_weights");
pub const CONV2D_TRANSPOSE_GRAD_OUTPUT: ShaderSource = shader!(
    "conv2d_transpose_grad_output.wgsl",
    "conv2d_transpose_grad_output"
);
pub const SUM_CHUNKS: ShaderSource = shader!("sum_chunks.wgsl", "sum_chunks");
pub const BIAS_BACKWARD: ShaderSource = shader!("bias_backward.wgsl", "bias_backward");
pub const RELU_BACKWARD: ShaderSource = shader!("relu_backward.wgsl", "relu_backward");
pub const LRN_BACKWARD: ShaderSource = shader!("lrn_backward.wgsl", "lrn_backward");
pub const MAX_POOL_ARGMAX: ShaderSource = shader!("max_pool_forward.wgsl", "max_pool_argmax");
pub const MAX_POOL_BACKWARD: ShaderSource = shader!("max_pool_backward.wgsl", "max_pool_backward");
pub const MATMUL: ShaderSource = shader!("matmul.wgsl", "matmul");
pub const MATMUL_TILED: ShaderSource = shader!("matmul.wgsl", "matmul_tiled");
pub const SGD: ShaderSource = shader!("sgd.wgsl", "sgd");

pub const PEAK_FMA: ShaderSource = shader!("peak_fma.wgsl", "peak_fma");
pub const PEAK_BANDWIDTH: ShaderSource = shader!("peak_bandwidth.wgsl", "peak_bandwidth");

/// Every kernel entry point.
pub const ALL: &[ShaderSource] = &[
    CONV2D_FORWARD,
    CONV2D_PAD_INPUT,
    CONV2D_FORWARD_TILED,
    GEMM,
    GEMM_SMALL_BATCH,
    GEMM_SPLIT_K_REDUCE,
    LRN_FORWARD,
    MAX_POOL_FORWARD,
    BATCH_NORM_FORWARD,
    ADD_FORWARD,
    ADAPTIVE_AVG_POOL_FORWARD,
    CONCAT_FORWARD,
    CONV2D_BACKWARD_DATA,
    CONV2D_BACKWARD_FILTER,
    CONV2D_BACKWARD_FILTER_TILED,
    CONV2D_TRANSPOSE_WEIGHTS,
    CONV2D_TRANSPOSE_GRAD_OUTPUT,
    SUM_CHUNKS,
    BIAS_BACKWARD,
    RELU_BACKWARD,
    LRN_BACKWARD,
    MAX_POOL_ARGMAX,
    MAX_POOL_BACKWARD,
    MATMUL,
    MATMUL_TILED,
    SGD,
    PEAK_FMA,
    PEAK_BANDWIDTH,
];
