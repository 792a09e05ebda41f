//! One module per op family. Each holds its kernels (typed by their parameter structs), the
//! choice between their variants, and the builders of its forward and backward dispatches; the
//! network ([`crate::gpu::GpuNetwork`]) only wires buffers between them.
//!
//! | module | ops | kernels |
//! |---|---|---|
//! | [`conv`] | 2-D convolution (groups, stride, per-side padding, bias, ReLU) | forward (register block / workgroup tiles), filter and input gradients, their layout transposes |
//! | [`linear`] | fully connected layers | GEMMs by batch size (16-row block, small-batch split-K), backward products |
//! | [`lrn`] | local response normalisation | forward, backward |
//! | [`pool`] | max pooling, adaptive average pooling | forward (with or without argmax), backward gathers |
//! | [`norm`] | batch norm (inference; training: batch statistics, backward) | forward, statistics, parameter and input gradients |
//! | [`elementwise`] | ReLU backward, bias backward, residual add, concat, their backward, gradient sums | one kernel each |
//! | [`lbfgs`] | L-BFGS for style transfer: dot products, `a out + b x` with scalars on the GPU, the two-loop's scalar steps, the image update | dot, axpy, lbfgs_scalars, image_update |
//! | [`loss`] | the loss heads' gradients (l2, softmax cross-entropy) | cross-entropy; l2 by a scaled copy |
//! | [`pixels`] | a data set's 8-bit pixels (NCHW or NHWC) into the normalised f32 input | decode_pixels |
//! | [`style`] | style transfer: Gram matrices, content and style losses, the image's gradient with total variation, Adam | squared difference, loss sum, image normalisation and gradient, Adam; Gram products on `matmul` |

pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod lbfgs;
pub(crate) mod linear;
pub(crate) mod loss;
pub(crate) mod lrn;
pub(crate) mod norm;
pub mod pixels;
pub(crate) mod pool;
pub(crate) mod style;

use crate::error::Result;
use crate::gpu::builder::Builder;
use crate::model::{LayerPlan, Source};

use crate::shaders::{TILE_INVOCATIONS, TILE_WORKGROUP_BYTES};

/// The buffers one layer's backward pass reads and writes.
pub(crate) struct BackwardBuffers<'b> {
    /// The layer's input (the forward's activation).
    pub input: &'b wgpu::Buffer,
    /// The layer's output (the forward's activation).
    pub output: &'b wgpu::Buffer,
    /// The gradient of the loss with respect to the output.
    pub grad_output: &'b wgpu::Buffer,
    /// Where the gradient with respect to the input goes; `None` for the first layer (nobody
    /// needs the images' gradient unless asked).
    pub grad_input: Option<&'b wgpu::Buffer>,
    /// A max pool's window maxima positions, recorded by the training forward pass.
    pub argmax: Option<&'b wgpu::Buffer>,
}

/// The buffers `layer` reads, in order: the network's input or earlier layers' outputs.
pub(crate) fn source_buffers<'b>(
    layer: &LayerPlan,
    input: &'b wgpu::Buffer,
    outputs: &'b [wgpu::Buffer],
) -> Vec<&'b wgpu::Buffer> {
    (layer.sources.iter())
        .map(|(source, _)| match source {
            Source::Input => input,
            Source::Layer(j) => &outputs[*j],
        })
        .collect()
}

/// Elements one workgroup of a chunked reduction sums (style transfer's losses, L-BFGS's dot
/// products): 64 per invocation, so that a chunk's sum and the sum of chunks both stay short.
const CHUNK: usize = 64 * crate::shaders::REDUCTION;

/// The chunk length and count of a chunked reduction over `len` elements, one workgroup per
/// chunk, within the adapter's dispatch limit.
pub(crate) fn chunks(b: &Builder, len: usize) -> (usize, usize) {
    let max_groups = b.ctx.limits().max_compute_workgroups_per_dimension as usize;
    let chunk = CHUNK.max(len.div_ceil(max_groups));
    (chunk, len.div_ceil(chunk).max(1))
}

/// The error that the adapter's limits cannot run a workgroup-tiled kernel (where one was
/// forced: `auto` never chooses it there).
pub(crate) fn check_tiled_fits(b: &Builder, what: &str) -> Result<()> {
    if b.ctx.tiled_kernels_fit() {
        return Ok(());
    }
    let limits = b.ctx.limits();
    Err(b.too_large(
        format!("the workgroup-tiled {what}"),
        format!(
            "it needs {TILE_INVOCATIONS} invocations and {TILE_WORKGROUP_BYTES} bytes of \
             workgroup memory, the adapter allows {} and {}",
            limits.max_compute_invocations_per_workgroup, limits.max_compute_workgroup_storage_size
        ),
    ))
}

/// The ops' side of the Rust <-> WGSL parameter contract.
#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    [
        conv::contracts(),
        linear::contracts(),
        lrn::contracts(),
        pool::contracts(),
        norm::contracts(),
        elementwise::contracts(),
        loss::contracts(),
    ]
    .concat()
}
