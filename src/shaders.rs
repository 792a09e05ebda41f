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
// The tiled kernels stage one reduction step per row of invocations.
const _: () = assert!(TILE_K == TILE / 4, "TILE_K must be TILE / 4");
/// Invocations of a workgroup-tiled kernel: 16 x 16, each owning 4 x 4 outputs of the tile.
pub const TILE_INVOCATIONS: u32 = ((TILE / 4) * (TILE / 4)) as u32;
/// Workgroup memory of a workgroup-tiled kernel: two tiles of `TILE_K` x `TILE` floats.
pub const TILE_WORKGROUP_BYTES: u32 = (2 * TILE_K * TILE * 4) as u32;
/// Largest edge of a pooling kernel's tile of outputs (forward) or inputs (backward).
pub const POOL_TILE: usize = 4;
/// Invocations of a per-channel reduction's workgroup (batch norm's statistics and gradients):
/// one workgroup sums a channel's values, a power of two for its tree.
pub const REDUCTION: usize = 64;
const _: () = assert!(REDUCTION.is_power_of_two(), "REDUCTION is a power of two");
/// Units of values each invocation of the concatenation kernels copies, one index division for
/// all of them (`shaders/common/concat_slices.wgsl`).
pub const CONCAT_UNITS: usize = 4;

/// The WGSL prelude every kernel starts with: the constants above.
fn prelude() -> String {
    format!(
        "// Generated from the constants of src/shaders.rs.\n\
         const BLOCK: u32 = {BLOCK}u;\n\
         const TILE: u32 = {TILE}u;\n\
         const TILE_K: u32 = {TILE_K}u;\n\
         const POOL_TILE: u32 = {POOL_TILE}u;\n\
         const REDUCTION: u32 = {REDUCTION}u;\n\
         const CONCAT_UNITS: u32 = {CONCAT_UNITS}u;\n"
    )
}

/// How a tensor's values are stored in a buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Element {
    /// 32-bit floats.
    #[default]
    F32,
    /// 16-bit floats (WGSL's `f16`, which needs the adapter's `shader-f16` feature).
    F16,
}

impl Element {
    /// Bytes per value.
    pub const fn bytes(self) -> usize {
        match self {
            Element::F32 => 4,
            Element::F16 => 2,
        }
    }

    /// The WGSL scalar type.
    pub const fn wgsl(self) -> &'static str {
        match self {
            Element::F32 => "f32",
            Element::F16 => "f16",
        }
    }
}

/// The element types one dispatch of a kernel binds: `read` for the stored tensors it reads
/// (activations, weight matrices), `written` for the one it writes. The WGSL declares those
/// bindings with the aliases `InElement` and `OutElement` and converts to f32 as it loads and
/// back as it stores, so every product accumulates in f32; biases, batch-norm statistics and
/// every gradient are always f32 (docs/design.md#half-precision-storage). A backward kernel
/// declares the forward pass's tensors it reads as `InElement` and writes f32 gradients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Elements {
    /// The tensors the kernel reads.
    pub read: Element,
    /// The tensor it writes.
    pub written: Element,
}

impl Elements {
    /// f32 in, f32 out: every kernel's default.
    pub const F32: Elements = Elements::both(Element::F32);

    /// `element` in and out.
    pub const fn both(element: Element) -> Self {
        Elements {
            read: element,
            written: element,
        }
    }

    /// Stored tensors of `element` in, f32 out: a backward kernel reading what the forward pass
    /// stored and writing a gradient.
    pub const fn reading(element: Element) -> Self {
        Elements {
            read: element,
            written: Element::F32,
        }
    }

    fn any_f16(self) -> bool {
        matches!(self.read, Element::F16) || matches!(self.written, Element::F16)
    }
}

/// A kernel's WGSL: its file, the shared snippets it uses, and the entry point it provides.
#[derive(Clone, Copy, Debug)]
pub struct ShaderSource {
    /// File name under `shaders/`.
    pub file: &'static str,
    /// The compute entry point (named after the op).
    pub entry_point: &'static str,
    /// The kernel's name in profiles, pipeline caches and file names: its entry point, with the
    /// variant appended where one file is compiled with different snippets (such as
    /// `batch_norm_backward_by_four`).
    pub name: &'static str,
    /// `shaders/common/grid.wgsl`, the file's snippets from `shaders/common/`, and the file.
    body: &'static str,
    /// The snippets' file names, for the test that every snippet is used.
    pub snippets: &'static [&'static str],
}

impl ShaderSource {
    /// The WGSL text the kernel is compiled from with f32 tensors: the prelude, then the body.
    pub fn wgsl(&self) -> String {
        self.wgsl_with(Elements::F32)
    }

    /// The WGSL text the kernel is compiled from with `elements`: `enable f16;` where either is
    /// f16, the prelude, the element aliases, then the body.
    pub fn wgsl_with(&self, elements: Elements) -> String {
        let enable = match elements.any_f16() {
            true => "enable f16;\n",
            false => "",
        };
        format!(
            "{enable}{}alias InElement = {};\nalias OutElement = {};\n{}",
            prelude(),
            elements.read.wgsl(),
            elements.written.wgsl(),
            self.body
        )
    }

    /// Whether the kernel declares tensors with the element aliases, so that it may be compiled
    /// with f16 [`Elements`] (the forward kernels; every other kernel is f32 only).
    pub fn stores_elements(&self) -> bool {
        ["array<InElement", "array<vec4<InElement", "array<InValues"]
            .iter()
            .chain(&["array<OutElement", "array<OutValues"])
            .any(|binding| self.body.contains(binding))
    }
}

macro_rules! shader {
    ($file:literal, $entry:literal, [$($snippet:literal),*]) => {
        shader!($file, $entry as $entry, [$($snippet),*])
    };
    ($file:literal, $entry:literal as $name:literal, [$($snippet:literal),*]) => {
        ShaderSource {
            file: $file,
            entry_point: $entry,
            name: $name,
            body: concat!(
                include_str!("../shaders/common/grid.wgsl"),
                $(include_str!(concat!("../shaders/common/", $snippet)),)*
                include_str!(concat!("../shaders/", $file))
            ),
            snippets: &["grid.wgsl", $($snippet),*],
        }
    };
}

/// Convolution forward as an implicit GEMM with fused bias and ReLU, a register block per
/// invocation (CPU adapters).
pub const CONV2D_FORWARD: ShaderSource = shader!(
    "conv2d_forward.wgsl",
    "conv2d_forward",
    ["conv2d_params.wgsl", "outer_product.wgsl"]
);
/// A 1x1 stride-1 unpadded convolution forward whose output plane holds a multiple of 4 pixels,
/// a register block per invocation reading four pixels as one vec4 (CPU adapters).
pub const CONV2D_FORWARD_1X1: ShaderSource = shader!(
    "conv2d_forward_1x1.wgsl",
    "conv2d_forward_1x1",
    ["conv2d_params.wgsl", "outer_product.wgsl"]
);
/// Convolution forward as an implicit GEMM with fused bias and ReLU, workgroup tiles (GPUs).
pub const CONV2D_FORWARD_TILED: ShaderSource = shader!(
    "conv2d_forward.wgsl",
    "conv2d_forward_tiled",
    ["conv2d_params.wgsl", "outer_product.wgsl"]
);
/// Copies a convolution's input into a zero-bordered buffer, so the forward kernels read every
/// tap without bounds checks.
pub const CONV2D_PAD_INPUT: ShaderSource = shader!("conv2d_pad_input.wgsl", "conv2d_pad_input", []);
/// Winograd F(2x2, 3x3): the 3x3 filters transformed, `G g G^T`.
pub const WINOGRAD_FILTER: ShaderSource = shader!(
    "winograd_filter.wgsl",
    "winograd_filter",
    ["winograd_params.wgsl", "winograd_tile2.wgsl"]
);
/// Winograd F(2x2, 3x3): the 4x4 input tiles transformed, `B^T d B`.
pub const WINOGRAD_INPUT: ShaderSource = shader!(
    "winograd_input.wgsl",
    "winograd_input",
    [
        "winograd_params.wgsl",
        "winograd_tile2.wgsl",
        "winograd_input_tile.wgsl"
    ]
);
/// Winograd F(2x2, 3x3): the products back to 2x2 output tiles, `A^T M A`, with bias and ReLU.
pub const WINOGRAD_OUTPUT: ShaderSource = shader!(
    "winograd_output.wgsl",
    "winograd_output",
    [
        "winograd_params.wgsl",
        "winograd_tile2.wgsl",
        "winograd_output_tile.wgsl"
    ]
);
/// Winograd F(2x2, 3x3) for the filter gradient: the output gradient's 2x2 tiles transformed,
/// `A delta A^T`, laid out for the filter-gradient kernels.
pub const WINOGRAD_GRADIENT: ShaderSource = shader!(
    "winograd_gradient.wgsl",
    "winograd_gradient",
    [
        "winograd_params.wgsl",
        "winograd_tile2.wgsl",
        "winograd_gradient_tile.wgsl"
    ]
);
/// Winograd F(2x2, 3x3) for the filter gradient: the transformed filters' gradients back to 3x3
/// filters, `G^T dU G`, written or added.
pub const WINOGRAD_FILTER_GRADIENT: ShaderSource = shader!(
    "winograd_filter_gradient.wgsl",
    "winograd_filter_gradient",
    [
        "winograd_params.wgsl",
        "winograd_tile2.wgsl",
        "winograd_filter_sums.wgsl"
    ]
);
/// Winograd F(2x2, 5x5): the 5x5 filters transformed, `G g G^T` (6x6 each). The
/// `winograd5_*` and `winograd4_*` shaders and `winograd6_input` are written by
/// scripts/winograd_shaders.py from the transform matrices.
pub const WINOGRAD5_FILTER: ShaderSource = shader!(
    "winograd5_filter.wgsl",
    "winograd5_filter",
    ["winograd_params.wgsl", "winograd_tile2.wgsl"]
);
/// Winograd F(2x2, 5x5): the 6x6 input tiles transformed, `B^T d B`.
pub const WINOGRAD5_INPUT: ShaderSource = shader!(
    "winograd6_input.wgsl",
    "winograd6_input" as "winograd5_input",
    ["winograd_params.wgsl", "winograd_tile2.wgsl", "winograd_input_tile.wgsl"]
);
/// Winograd F(2x2, 5x5): the products back to 2x2 output tiles, `A^T M A`, with bias and ReLU.
pub const WINOGRAD5_OUTPUT: ShaderSource = shader!(
    "winograd5_output.wgsl",
    "winograd5_output",
    [
        "winograd_params.wgsl",
        "winograd_tile2.wgsl",
        "winograd_output_tile.wgsl"
    ]
);
/// Winograd F(2x2, 5x5) for the filter gradient: the output gradient's tiles, `A delta A^T`.
pub const WINOGRAD5_GRADIENT: ShaderSource = shader!(
    "winograd5_gradient.wgsl",
    "winograd5_gradient",
    [
        "winograd_params.wgsl",
        "winograd_tile2.wgsl",
        "winograd_gradient_tile.wgsl"
    ]
);
/// Winograd F(2x2, 5x5) for the filter gradient: back to 5x5 filters, `G^T dU G`.
pub const WINOGRAD5_FILTER_GRADIENT: ShaderSource = shader!(
    "winograd5_filter_gradient.wgsl",
    "winograd5_filter_gradient",
    [
        "winograd_params.wgsl",
        "winograd_tile2.wgsl",
        "winograd_filter_sums.wgsl"
    ]
);
/// Winograd F(4x4, 3x3): the 3x3 filters transformed to 6x6, `G g G^T`.
pub const WINOGRAD4_FILTER: ShaderSource = shader!(
    "winograd4_filter.wgsl",
    "winograd4_filter",
    ["winograd_params.wgsl", "winograd_tile4.wgsl"]
);
/// Winograd F(4x4, 3x3): the 6x6 input tiles (at a stride of 4) transformed, `B^T d B`: the same
/// transform as F(2x2, 5x5)'s (the same points), at its own tile stride.
pub const WINOGRAD4_INPUT: ShaderSource = shader!(
    "winograd6_input.wgsl",
    "winograd6_input" as "winograd4_input",
    ["winograd_params.wgsl", "winograd_tile4.wgsl", "winograd_input_tile.wgsl"]
);
/// Winograd F(4x4, 3x3): the products back to 4x4 output tiles, `A^T M A`, with bias and ReLU.
pub const WINOGRAD4_OUTPUT: ShaderSource = shader!(
    "winograd4_output.wgsl",
    "winograd4_output",
    [
        "winograd_params.wgsl",
        "winograd_tile4.wgsl",
        "winograd_output_tile.wgsl"
    ]
);
/// Winograd F(4x4, 3x3) for the filter gradient: the output gradient's 4x4 tiles, `A delta A^T`.
pub const WINOGRAD4_GRADIENT: ShaderSource = shader!(
    "winograd4_gradient.wgsl",
    "winograd4_gradient",
    [
        "winograd_params.wgsl",
        "winograd_tile4.wgsl",
        "winograd_gradient_tile.wgsl"
    ]
);
/// Winograd F(4x4, 3x3) for the filter gradient: back to 3x3 filters, `G^T dU G`.
pub const WINOGRAD4_FILTER_GRADIENT: ShaderSource = shader!(
    "winograd4_filter_gradient.wgsl",
    "winograd4_filter_gradient",
    [
        "winograd_params.wgsl",
        "winograd_tile4.wgsl",
        "winograd_filter_sums.wgsl"
    ]
);
/// Convolution input gradient for strides above 1 on register blocks, phase by phase (stride 1
/// runs the forward kernel on rotated weights; strided layers on workgroup tiles run it on the
/// output gradient spread apart by the stride).
pub const CONV2D_BACKWARD_DATA: ShaderSource = shader!(
    "conv2d_backward_data.wgsl",
    "conv2d_backward_data",
    ["conv2d_params.wgsl", "outer_product.wgsl"]
);
/// Convolution weight gradient over one chunk of pixels, a register block per invocation
/// (CPU adapters).
pub const CONV2D_BACKWARD_FILTER: ShaderSource = shader!(
    "conv2d_backward_filter.wgsl",
    "conv2d_backward_filter",
    ["conv2d_params.wgsl", "outer_product.wgsl"]
);
/// Convolution weight gradient over one chunk of pixels, workgroup tiles (GPUs).
pub const CONV2D_BACKWARD_FILTER_TILED: ShaderSource = shader!(
    "conv2d_backward_filter.wgsl",
    "conv2d_backward_filter_tiled",
    ["conv2d_params.wgsl", "outer_product.wgsl"]
);
/// A convolution's packed weights transposed and rotated for the input gradient.
pub const CONV2D_TRANSPOSE_WEIGHTS: ShaderSource = shader!(
    "conv2d_transpose_weights.wgsl",
    "conv2d_transpose_weights",
    []
);
/// A convolution's output gradient transposed to the layout the weight gradient reads.
pub const CONV2D_TRANSPOSE_GRAD_OUTPUT: ShaderSource = shader!(
    "conv2d_transpose_grad_output.wgsl",
    "conv2d_transpose_grad_output",
    []
);
/// Sums the chunks of a split reduction (the weight gradient's partial sums).
pub const SUM_CHUNKS: ShaderSource =
    shader!("sum_chunks.wgsl", "sum_chunks", ["sum_partials.wgsl"]);
/// Fully connected forward: GEMM with fused bias and ReLU, a register block per invocation.
pub const GEMM: ShaderSource = shader!("gemm.wgsl", "gemm", ["outer_product.wgsl"]);
/// Fully connected forward at small batches, optionally split along the reduction.
pub const GEMM_SMALL_BATCH: ShaderSource = shader!(
    "gemm_small_batch.wgsl",
    "gemm_small_batch",
    ["outer_product.wgsl"]
);
/// Ends a split-reduction [`GEMM_SMALL_BATCH`]: sums the chunks, adds bias, applies ReLU.
pub const GEMM_SPLIT_K_REDUCE: ShaderSource = shader!(
    "gemm_split_k_reduce.wgsl",
    "gemm_split_k_reduce",
    ["sum_partials.wgsl"]
);
/// Strided matrix product of the fully connected backward pass, a register block per
/// invocation (CPU adapters).
pub const MATMUL: ShaderSource = shader!("matmul.wgsl", "matmul", ["outer_product.wgsl"]);
/// Strided matrix product of the fully connected backward pass for few rows (a small batch's
/// input gradient), 4 rows x 16 columns per invocation (CPU adapters).
pub const MATMUL_ROWS4: ShaderSource =
    shader!("matmul.wgsl", "matmul_rows4", ["outer_product.wgsl"]);
/// Strided matrix product of the fully connected backward pass, workgroup tiles (GPUs).
pub const MATMUL_TILED: ShaderSource =
    shader!("matmul.wgsl", "matmul_tiled", ["outer_product.wgsl"]);
/// Local response normalisation across channels, TensorFlow's `tf.nn.lrn`.
pub const LRN_FORWARD: ShaderSource =
    shader!("lrn_forward.wgsl", "lrn_forward", ["lrn_window.wgsl"]);
/// Local response normalisation's input gradient.
pub const LRN_BACKWARD: ShaderSource =
    shader!("lrn_backward.wgsl", "lrn_backward", ["lrn_window.wgsl"]);
/// Max pooling forward (inference).
pub const MAX_POOL_FORWARD: ShaderSource = shader!("max_pool_forward.wgsl", "max_pool_forward", []);
/// Max pooling forward that also records each window's maximum for the backward pass.
pub const MAX_POOL_ARGMAX: ShaderSource = shader!("max_pool_forward.wgsl", "max_pool_argmax", []);
/// Max pooling backward: each output gradient to its window's recorded maximum, as a gather.
pub const MAX_POOL_BACKWARD: ShaderSource = shader!(
    "max_pool_backward.wgsl",
    "max_pool_backward",
    ["values_by_one.wgsl"]
);
/// [`MAX_POOL_BACKWARD`] storing a tile row as one vec4, for inputs whose width is a multiple
/// of 4.
pub const MAX_POOL_BACKWARD_BY_FOUR: ShaderSource = shader!(
    "max_pool_backward.wgsl",
    "max_pool_backward" as "max_pool_backward_by_four",
    ["values_by_four.wgsl"]
);
/// PyTorch's adaptive average pooling to a fixed output size.
pub const ADAPTIVE_AVG_POOL_FORWARD: ShaderSource = shader!(
    "adaptive_avg_pool_forward.wgsl",
    "adaptive_avg_pool_forward",
    ["adaptive_pool_cells.wgsl"]
);
/// Batch normalisation at inference, from running statistics, with optional ReLU.
pub const BATCH_NORM_FORWARD: ShaderSource =
    shader!("batch_norm_forward.wgsl", "batch_norm_forward", []);
/// Batch norm in training mode: each channel's batch statistics, the output normalised by them,
/// running statistics updated; one workgroup per channel, one value at a time.
pub const BATCH_NORM_TRAIN_FORWARD: ShaderSource = shader!(
    "batch_norm_train_forward.wgsl",
    "batch_norm_train_forward",
    [
        "workgroup_sum.wgsl",
        "workgroup_moments.wgsl",
        "values_by_one.wgsl"
    ]
);
/// [`BATCH_NORM_TRAIN_FORWARD`] four values at a time, for planes whose size is a multiple of 4.
pub const BATCH_NORM_TRAIN_FORWARD_BY_FOUR: ShaderSource = shader!(
    "batch_norm_train_forward.wgsl",
    "batch_norm_train_forward" as "batch_norm_train_forward_by_four",
    ["workgroup_sum.wgsl", "workgroup_moments.wgsl", "values_by_four.wgsl"]
);
/// Batch norm backward in training mode: the weight, bias and input gradients through the batch
/// statistics (and the fused ReLU); one workgroup per channel, one value at a time.
pub const BATCH_NORM_BACKWARD: ShaderSource = shader!(
    "batch_norm_backward.wgsl",
    "batch_norm_backward",
    ["workgroup_sum.wgsl", "values_by_one.wgsl"]
);
/// [`BATCH_NORM_BACKWARD`] four values at a time, for planes whose size is a multiple of 4.
pub const BATCH_NORM_BACKWARD_BY_FOUR: ShaderSource = shader!(
    "batch_norm_backward.wgsl",
    "batch_norm_backward" as "batch_norm_backward_by_four",
    ["workgroup_sum.wgsl", "values_by_four.wgsl"]
);
/// Adaptive average pooling backward: each output's gradient spread over its cell, as a gather.
pub const ADAPTIVE_AVG_POOL_BACKWARD: ShaderSource = shader!(
    "adaptive_avg_pool_backward.wgsl",
    "adaptive_avg_pool_backward",
    ["adaptive_pool_cells.wgsl"]
);
/// Softmax cross-entropy with integer labels: each image's loss and the logits' gradient.
pub const SOFTMAX_CROSS_ENTROPY: ShaderSource =
    shader!("softmax_cross_entropy.wgsl", "softmax_cross_entropy", []);
/// A residual addition's backward: the output gradient (through the ReLU) to both inputs.
pub const ADD_BACKWARD: ShaderSource =
    shader!("add_backward.wgsl", "add_backward", ["values_by_one.wgsl"]);
/// [`ADD_BACKWARD`] four values at a time.
pub const ADD_BACKWARD_BY_FOUR: ShaderSource = shader!(
    "add_backward.wgsl",
    "add_backward" as "add_backward_by_four",
    ["values_by_four.wgsl"]
);
/// Copies a gradient or adds it into another (a tensor that several layers read).
pub const ADD_GRADIENT: ShaderSource =
    shader!("add_gradient.wgsl", "add_gradient", ["values_by_one.wgsl"]);
/// [`ADD_GRADIENT`] four values at a time.
pub const ADD_GRADIENT_BY_FOUR: ShaderSource = shader!(
    "add_gradient.wgsl",
    "add_gradient" as "add_gradient_by_four",
    ["values_by_four.wgsl"]
);
/// One input's slice of a channel concatenation's gradient, copied or added.
pub const CONCAT_BACKWARD: ShaderSource = shader!(
    "concat_backward.wgsl",
    "concat_backward",
    ["values_by_one.wgsl", "concat_slices.wgsl"]
);
/// [`CONCAT_BACKWARD`] four values at a time.
pub const CONCAT_BACKWARD_BY_FOUR: ShaderSource = shader!(
    "concat_backward.wgsl",
    "concat_backward" as "concat_backward_by_four",
    ["values_by_four.wgsl", "concat_slices.wgsl"]
);
/// Element-wise sum of two tensors with optional ReLU (a residual connection).
pub const ADD_FORWARD: ShaderSource =
    shader!("add_forward.wgsl", "add_forward", ["values_by_one.wgsl"]);
/// [`ADD_FORWARD`] four values at a time.
pub const ADD_FORWARD_BY_FOUR: ShaderSource = shader!(
    "add_forward.wgsl",
    "add_forward" as "add_forward_by_four",
    ["values_by_four.wgsl"]
);
/// Copies one input into its slice of a channel concatenation.
pub const CONCAT_FORWARD: ShaderSource = shader!(
    "concat_forward.wgsl",
    "concat_forward",
    ["values_by_one.wgsl", "concat_slices.wgsl"]
);
/// [`CONCAT_FORWARD`] four values at a time.
pub const CONCAT_FORWARD_BY_FOUR: ShaderSource = shader!(
    "concat_forward.wgsl",
    "concat_forward" as "concat_forward_by_four",
    ["values_by_four.wgsl", "concat_slices.wgsl"]
);
/// Bias gradient: the output gradient summed over the batch and each channel's plane, one
/// workgroup segment per channel, one value at a time.
pub const BIAS_BACKWARD: ShaderSource = shader!(
    "bias_backward.wgsl",
    "bias_backward",
    ["workgroup_sum.wgsl", "values_by_one.wgsl"]
);
/// [`BIAS_BACKWARD`] four values at a time, for planes whose size is a multiple of 4.
pub const BIAS_BACKWARD_BY_FOUR: ShaderSource = shader!(
    "bias_backward.wgsl",
    "bias_backward" as "bias_backward_by_four",
    ["workgroup_sum.wgsl", "values_by_four.wgsl"]
);
/// ReLU backward, in place: the gradient where the output was positive, zero elsewhere.
pub const RELU_BACKWARD: ShaderSource = shader!(
    "relu_backward.wgsl",
    "relu_backward",
    ["values_by_one.wgsl"]
);
/// [`RELU_BACKWARD`] four values at a time.
pub const RELU_BACKWARD_BY_FOUR: ShaderSource = shader!(
    "relu_backward.wgsl",
    "relu_backward" as "relu_backward_by_four",
    ["values_by_four.wgsl"]
);
/// One SGD step with momentum on a parameter buffer.
pub const SGD: ShaderSource = shader!("sgd.wgsl", "sgd", []);
/// A tensor copied to another element type: f32 master weights rounded into their f16 copy.
pub const CONVERT_VALUES: ShaderSource = shader!("convert_values.wgsl", "convert_values", []);
/// Style transfer: a scaled difference of two tensors and its squared sum in chunks (the
/// content and style losses and the gradients they start from).
pub const SQUARED_DIFFERENCE: ShaderSource = shader!(
    "squared_difference.wgsl",
    "squared_difference",
    ["workgroup_sum.wgsl"]
);
/// Ends a loss's reduction: the chunks' partial sums added into one weighted loss value.
pub const SUM_TO_LOSS: ShaderSource =
    shader!("sum_to_loss.wgsl", "sum_to_loss", ["workgroup_sum.wgsl"]);
/// Style transfer: the image's gradient (the input's, through the normalisation, plus total
/// variation's) and the total variation's partial sums.
pub const IMAGE_GRADIENT: ShaderSource = shader!(
    "image_gradient.wgsl",
    "image_gradient",
    ["workgroup_sum.wgsl"]
);
/// One Adam step on an image, clamped to [0, 1] and normalised into the network's input.
pub const ADAM: ShaderSource = shader!("adam.wgsl", "adam", []);
/// L-BFGS: chunked partial sums of a dot product or an L1 norm of image-sized vectors.
pub const DOT: ShaderSource = shader!("dot.wgsl", "dot", ["workgroup_sum.wgsl"]);
/// L-BFGS: `out = a out + b x` with coefficients from the optimiser's scalars on the GPU.
pub const AXPY: ShaderSource = shader!("axpy.wgsl", "axpy", []);
/// L-BFGS's scalar steps (the two-loop recursion's coefficients, the curvature test, the step
/// length), from dot products' partial sums.
pub const LBFGS_SCALARS: ShaderSource = shader!(
    "lbfgs_scalars.wgsl",
    "lbfgs_scalars",
    ["workgroup_sum.wgsl"]
);
/// L-BFGS's image update, clamped to [0, 1] and normalised into the network's input.
pub const IMAGE_UPDATE: ShaderSource = shader!("image_update.wgsl", "image_update", []);
/// 8-bit pixels (NCHW or NHWC) into the network's normalised f32 input.
pub const DECODE_PIXELS: ShaderSource = shader!("decode_pixels.wgsl", "decode_pixels", []);
/// Measures the adapter's f32 FMA throughput.
pub const PEAK_FMA: ShaderSource = shader!("peak_fma.wgsl", "peak_fma", []);
/// Measures the adapter's shader memory bandwidth.
pub const PEAK_BANDWIDTH: ShaderSource = shader!("peak_bandwidth.wgsl", "peak_bandwidth", []);

/// Every kernel entry point.
pub const ALL: &[ShaderSource] = &[
    CONV2D_FORWARD,
    CONV2D_FORWARD_1X1,
    CONV2D_FORWARD_TILED,
    CONV2D_PAD_INPUT,
    WINOGRAD_FILTER,
    WINOGRAD_INPUT,
    WINOGRAD_OUTPUT,
    WINOGRAD_GRADIENT,
    WINOGRAD_FILTER_GRADIENT,
    WINOGRAD5_FILTER,
    WINOGRAD5_INPUT,
    WINOGRAD5_OUTPUT,
    WINOGRAD5_GRADIENT,
    WINOGRAD5_FILTER_GRADIENT,
    WINOGRAD4_FILTER,
    WINOGRAD4_INPUT,
    WINOGRAD4_OUTPUT,
    WINOGRAD4_GRADIENT,
    WINOGRAD4_FILTER_GRADIENT,
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
    MATMUL_ROWS4,
    MATMUL_TILED,
    LRN_FORWARD,
    LRN_BACKWARD,
    MAX_POOL_FORWARD,
    MAX_POOL_ARGMAX,
    MAX_POOL_BACKWARD,
    MAX_POOL_BACKWARD_BY_FOUR,
    ADAPTIVE_AVG_POOL_FORWARD,
    BATCH_NORM_FORWARD,
    BATCH_NORM_TRAIN_FORWARD,
    BATCH_NORM_TRAIN_FORWARD_BY_FOUR,
    BATCH_NORM_BACKWARD,
    BATCH_NORM_BACKWARD_BY_FOUR,
    ADAPTIVE_AVG_POOL_BACKWARD,
    SOFTMAX_CROSS_ENTROPY,
    ADD_BACKWARD,
    ADD_BACKWARD_BY_FOUR,
    ADD_GRADIENT,
    ADD_GRADIENT_BY_FOUR,
    CONCAT_BACKWARD,
    CONCAT_BACKWARD_BY_FOUR,
    ADD_FORWARD,
    ADD_FORWARD_BY_FOUR,
    CONCAT_FORWARD,
    CONCAT_FORWARD_BY_FOUR,
    BIAS_BACKWARD,
    BIAS_BACKWARD_BY_FOUR,
    RELU_BACKWARD,
    RELU_BACKWARD_BY_FOUR,
    SGD,
    CONVERT_VALUES,
    SQUARED_DIFFERENCE,
    SUM_TO_LOSS,
    IMAGE_GRADIENT,
    ADAM,
    DOT,
    AXPY,
    LBFGS_SCALARS,
    IMAGE_UPDATE,
    DECODE_PIXELS,
    PEAK_FMA,
    PEAK_BANDWIDTH,
];
