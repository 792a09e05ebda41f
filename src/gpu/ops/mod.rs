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

use crate::shaders::{REDUCTION, TILE_INVOCATIONS, TILE_WORKGROUP_BYTES};

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
const CHUNK: usize = 64 * REDUCTION;

/// The chunk length and count of a chunked reduction over `len` elements, one workgroup per
/// chunk, within the adapter's dispatch limit.
pub(crate) fn chunks(b: &Builder, len: usize) -> (usize, usize) {
    let max_groups = b.ctx.limits().max_compute_workgroups_per_dimension as usize;
    let chunk = CHUNK.max(len.div_ceil(max_groups));
    (chunk, len.div_ceil(chunk).max(1))
}

/// Workgroups the per-channel kernels leave at least on a CPU adapter: one for each thread of a
/// 16-thread CPU, eight for each of a 2-core machine's. Fixed rather than read from the machine,
/// because the lanes set the order of a channel's sums: a count of threads would make a batch
/// norm round differently in an MPI rank (bound to one core, it sees one) than in a process
/// that sees them all. (Measured on lavapipe with 2 cores: 8 workgroups ran ResNet-50's 64-channel
/// batch norms about 20% faster than 16, and the others alike.)
const CPU_WORKGROUPS: usize = 16;

/// Invocations per channel of the per-channel reductions (batch norm's statistics and
/// gradients, the bias gradient), a power of two up to [`REDUCTION`] (a
/// whole workgroup); the rest of the workgroup takes other channels.
///
/// On a GPU, one invocation per 32 values: a channel's values are read by many invocations at
/// once, and few values per channel (ResNet's last stage, 7x7 x batch) share a workgroup
/// between channels instead of leaving most of it idle.
///
/// On a CPU adapter (a workgroup runs on one thread, its invocations in SIMD lanes of 8, and
/// every barrier switches between them) as few as leave [`CPU_WORKGROUPS`]: the reduction's
/// barriers and the workgroup's start cost as much as a few thousand values (measured on
/// lavapipe with 2 cores, ResNet-50's batch norms at batch 8 with vec4 loads: forward 4.5 GB/s
/// at 32 values per invocation against 6.4 at 8 workgroups, backward 6.0 against 7.4).
pub(crate) fn channel_lanes(software: bool, layer: &LayerPlan) -> u32 {
    let lanes = if software {
        (CPU_WORKGROUPS * REDUCTION)
            .div_ceil(layer.output.channels)
            .next_power_of_two()
    } else {
        let values = layer.batch * layer.output.height * layer.output.width;
        // The largest power of two not above values / 32.
        let most = (values / 32).max(1);
        1 << (usize::BITS - 1 - most.leading_zeros())
    };
    lanes.clamp(1, REDUCTION) as u32
}

/// Workgroups for `channels` channels at `lanes` invocations each.
pub(crate) fn channel_groups(channels: usize, lanes: u32) -> usize {
    channels.div_ceil(REDUCTION / lanes as usize)
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
