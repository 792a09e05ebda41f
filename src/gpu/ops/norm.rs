//! Batch normalisation, with an optional fused ReLU: in inference mode from the running
//! statistics (networks loaded for inference usually run without it: `crate::fold` folds each
//! batch norm into the convolution before it); in training mode from the batch's statistics,
//! updating the running ones, and its backward (the weight, bias and input gradients).
//!
//! Training runs one workgroup per channel, forward (statistics, then the output, the channel's
//! values read from cache after the first pass on a CPU adapter) and backward (the sums, then
//! the input gradient), and keeps, per batch norm, a `[4][channels]` buffer of the statistics it
//! normalised by (weight, bias, batch mean, biased batch variance), in the layout of the
//! parameters' own (weight, bias, running mean, running variance). Its parameter gradients are
//! one `[2][channels]` buffer (weight, bias): an SGD step on the first `2 * channels` values of
//! the parameter buffer leaves the running statistics alone.

use crate::error::Result;
use crate::gpu::builder::{u32_of, Builder};
use crate::gpu::kernel::{kernel_params, ByUnits, Dispatch, KernelDef};
use crate::gpu::ops::{channel_groups, channel_lanes, BackwardBuffers};
use crate::gpu::packing::{PackedGrads, PackedWeights};
use crate::model::{LayerKind, LayerPlan};
use crate::shaders;

/// PyTorch's default `BatchNorm2d(momentum=0.1)`: the weight of a batch's statistics in the
/// running ones.
pub const RUNNING_MOMENTUM: f32 = 0.1;

kernel_params! {
    /// batch_norm_forward's parameters.
    pub(crate) struct BatchNormParams {
        len: u32,
        plane: u32,
        channels: u32,
        eps: f32,
        relu: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

kernel_params! {
    /// batch_norm_train_forward's parameters.
    pub(crate) struct BatchNormTrainParams {
        batch: u32,
        channels: u32,
        plane: u32,
        relu: u32,
        eps: f32,
        lanes: u32,
        momentum: f32,
        unbiased: f32,
        phase: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

kernel_params! {
    /// batch_norm_backward's parameters.
    pub(crate) struct BatchNormBackwardParams {
        batch: u32,
        channels: u32,
        plane: u32,
        relu: u32,
        eps: f32,
        lanes: u32,
        input_gradient: u32,
        _pad: u32,
    }
}

const FORWARD: KernelDef<BatchNormParams> = KernelDef::flat(shaders::BATCH_NORM_FORWARD);
/// The training kernels, four values at a time where a channel's plane in an image is a
/// multiple of 4 values (all but 7x7 in the torchvision networks at 224x224).
const TRAIN_FORWARD: ByUnits<BatchNormTrainParams> = ByUnits::reduction(
    shaders::BATCH_NORM_TRAIN_FORWARD,
    shaders::BATCH_NORM_TRAIN_FORWARD_BY_FOUR,
);
const BACKWARD: ByUnits<BatchNormBackwardParams> = ByUnits::reduction(
    shaders::BATCH_NORM_BACKWARD,
    shaders::BATCH_NORM_BACKWARD_BY_FOUR,
);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    let by_units = [TRAIN_FORWARD.contracts(), BACKWARD.contracts()];
    std::iter::once(FORWARD.contract())
        .chain(by_units.into_iter().flatten())
        .collect()
}

/// A batch norm's epsilon and fused ReLU; an internal error for another kind of layer.
fn eps_relu(layer: &LayerPlan) -> Result<(f32, bool)> {
    match layer.layer.kind {
        LayerKind::BatchNorm { eps, relu } => Ok((eps, relu)),
        _ => Err(crate::Error::Internal(format!(
            "layer {} is not a batch norm",
            layer.layer.name
        ))),
    }
}

/// Values per channel in the batch, `N * H * W`, as the kernels' u32 and f32.
fn per_channel(layer: &LayerPlan) -> Result<(u32, f32)> {
    let count = layer.batch * layer.output.height * layer.output.width;
    Ok((u32_of(count, "values per channel")?, count as f32))
}

/// The dispatch of a batch norm's forward pass at inference, by the four per-channel vectors in
/// `stats`: weight, bias, running mean and running variance.
pub(crate) fn forward(
    b: &mut Builder,
    layer: &LayerPlan,
    stats: &wgpu::Buffer,
    input: &wgpu::Buffer,
    output: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let (eps, relu) = eps_relu(layer)?;
    let len = layer.batch * layer.output.len();
    let norm = BatchNormParams {
        len: u32_of(len, "batch norm size")?,
        plane: u32_of(layer.output.height * layer.output.width, "plane")?,
        channels: u32_of(layer.output.channels, "channels")?,
        eps,
        relu: u32::from(relu),
        ..Default::default()
    };
    let workgroups = b.grid_1d(name, len.div_ceil(4))?;
    let args = [input, stats, output];
    Ok(vec![b.dispatch_stored(
        name,
        &FORWARD,
        &[],
        &norm,
        &args,
        workgroups,
    )])
}

/// The dispatch of a batch norm's forward pass in training mode: the batch statistics into
/// `batch_stats` (running statistics updated in `params`) and the output normalised by them, one
/// workgroup per channel. `synced` (SyncBatchNorm across data-parallel replicas): two
/// dispatches, between which the host replaces the replica's statistics in `batch_stats` by the
/// whole batch's (and keeps the running statistics itself): the first writes them, the second
/// normalises by what the host wrote.
pub(crate) fn training_forward(
    b: &mut Builder,
    layer: &LayerPlan,
    params: &PackedWeights,
    (input, output): (&wgpu::Buffer, &wgpu::Buffer),
    batch_stats: &wgpu::Buffer,
    synced: bool,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let (eps, relu) = eps_relu(layer)?;
    let channels = layer.output.channels;
    let (count, count_f32) = per_channel(layer)?;
    if count < 2 {
        // PyTorch refuses it too: the output would be the bias, every gradient zero.
        return Err(crate::Error::InvalidArgument(format!(
            "layer {name}: a batch norm trains on the statistics of each channel's values in the \
             batch, and batch {} leaves it one; train with a larger batch or input",
            layer.batch
        )));
    }
    let train = BatchNormTrainParams {
        batch: u32_of(layer.batch, "batch")?,
        channels: u32_of(channels, "channels")?,
        plane: u32_of(layer.output.height * layer.output.width, "plane")?,
        relu: u32::from(relu),
        eps,
        lanes: channel_lanes(b.ctx.software(), layer),
        momentum: RUNNING_MOMENTUM,
        unbiased: count_f32 / (count_f32 - 1.0),
        ..Default::default()
    };
    let workgroups = b.workgroups(name, [channel_groups(channels, train.lanes), 1, 1])?;
    let args = [input, &params.weights[0], batch_stats, output];
    let (kernel, _) = TRAIN_FORWARD.for_sizes(&[train.plane as usize]);
    if !synced {
        return Ok(vec![b.dispatch_stored(
            name,
            kernel,
            &[],
            &train,
            &args,
            workgroups,
        )]);
    }
    let phase = |phase| BatchNormTrainParams { phase, ..train };
    Ok(vec![
        b.dispatch_stored(name, kernel, &[], &phase(1), &args, workgroups),
        b.dispatch_stored(name, kernel, &[], &phase(2), &args, workgroups),
    ])
}

/// The dispatch of a batch norm's backward pass in training mode, one workgroup per channel:
/// the weight and bias gradients and, where one is wanted, the input gradient, through the
/// fused ReLU's mask. `synced` with an input gradient: two dispatches, between which the host
/// replaces the replica's sums in `grads` by what the whole batch's make of them (see
/// batch_norm_backward.wgsl): the first writes them, the second takes the input gradient's
/// from `grads`.
pub(crate) fn backward(
    b: &mut Builder,
    layer: &LayerPlan,
    buf: &BackwardBuffers,
    (batch_stats, grads): (&wgpu::Buffer, &PackedGrads),
    synced: bool,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let (eps, relu) = eps_relu(layer)?;
    let channels = layer.output.channels;
    let params = BatchNormBackwardParams {
        batch: u32_of(layer.batch, "batch")?,
        channels: u32_of(channels, "channels")?,
        plane: u32_of(layer.output.height * layer.output.width, "plane")?,
        relu: u32::from(relu),
        eps,
        lanes: channel_lanes(b.ctx.software(), layer),
        input_gradient: u32::from(buf.grad_input.is_some()),
        ..Default::default()
    };
    // Without an input gradient the kernel writes none; the binding still needs a buffer.
    let unused = buf
        .grad_input
        .is_none()
        .then(|| b.scratch(&format!("{name} (no input gradient)"), 1));
    let grad_input = buf.grad_input.or(unused.as_ref()).expect("one of the two");
    // Without a fused ReLU the output is not read (and may already serve another tensor, when
    // the network keeps only what the backward reads): the output gradient stands in for it.
    let output = if relu { buf.output } else { buf.grad_output };
    let label = format!("{name} backward");
    let workgroups = b.workgroups(&label, [channel_groups(channels, params.lanes), 1, 1])?;
    let args = [
        buf.input,
        output,
        buf.grad_output,
        batch_stats,
        &grads.weights[0],
        grad_input,
    ];
    let (kernel, _) = BACKWARD.for_sizes(&[params.plane as usize]);
    if !(synced && buf.grad_input.is_some()) {
        return Ok(vec![b.dispatch_reading_stored(
            &label,
            kernel,
            &[],
            &params,
            &args,
            workgroups,
        )]);
    }
    let mode = |input_gradient| BatchNormBackwardParams {
        input_gradient,
        ..params
    };
    Ok(vec![
        b.dispatch_reading_stored(&label, kernel, &[], &mode(0), &args, workgroups),
        b.dispatch_reading_stored(&label, kernel, &[], &mode(2), &args, workgroups),
    ])
}
