//! Batch normalisation, with an optional fused ReLU: in inference mode from the running
//! statistics (networks loaded for inference usually run without it: `crate::fold` folds each
//! batch norm into the convolution before it); in training mode from the batch's statistics,
//! updating the running ones, and its backward (the weight, bias and input gradients).
//!
//! Training keeps, per batch norm, a `[4][channels]` buffer of the statistics it normalised by
//! (weight, bias, batch mean, biased batch variance), in the layout of the parameters' own
//! (weight, bias, running mean, running variance), so that one normalising kernel serves both
//! modes. Its parameter gradients are one `[2][channels]` buffer (weight, bias): an SGD step on
//! the first `2 * channels` values of the parameter buffer leaves the running statistics alone.

use crate::error::Result;
use crate::gpu::builder::{u32_of, Builder};
use crate::gpu::kernel::{kernel_params, Dispatch, KernelDef};
use crate::gpu::ops::{elementwise, BackwardBuffers};
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
    /// batch_norm_statistics's parameters.
    pub(crate) struct BatchNormStatisticsParams {
        batch: u32,
        channels: u32,
        plane: u32,
        update_running: u32,
        momentum: f32,
        unbiased: f32,
        _pad0: u32,
        _pad1: u32,
    }
}

kernel_params! {
    /// batch_norm_backward_parameters's parameters.
    pub(crate) struct BatchNormBackwardParams {
        batch: u32,
        channels: u32,
        plane: u32,
        eps: f32,
    }
}

kernel_params! {
    /// batch_norm_backward_data's parameters.
    pub(crate) struct BatchNormBackwardDataParams {
        len: u32,
        plane: u32,
        channels: u32,
        eps: f32,
        count: f32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

const FORWARD: KernelDef<BatchNormParams> = KernelDef::flat(shaders::BATCH_NORM_FORWARD);
const STATISTICS: KernelDef<BatchNormStatisticsParams> =
    KernelDef::reduction(shaders::BATCH_NORM_STATISTICS);
const BACKWARD_PARAMETERS: KernelDef<BatchNormBackwardParams> =
    KernelDef::reduction(shaders::BATCH_NORM_BACKWARD_PARAMETERS);
const BACKWARD_DATA: KernelDef<BatchNormBackwardDataParams> =
    KernelDef::flat(shaders::BATCH_NORM_BACKWARD_DATA);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    vec![
        FORWARD.contract(),
        STATISTICS.contract(),
        BACKWARD_PARAMETERS.contract(),
        BACKWARD_DATA.contract(),
    ]
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

/// The dispatch of a batch norm's forward pass by the four per-channel vectors in `stats`:
/// weight, bias, and the mean and variance it normalises by (the running statistics at
/// inference, the batch's in training).
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
    Ok(vec![b.dispatch(name, &FORWARD, &norm, &args, workgroups)])
}

/// The dispatches of a batch norm's forward pass in training mode: the batch statistics into
/// `batch_stats` (running statistics updated in `params`), then the normalisation by them.
pub(crate) fn training_forward(
    b: &mut Builder,
    layer: &LayerPlan,
    params: &PackedWeights,
    input: &wgpu::Buffer,
    output: &wgpu::Buffer,
    batch_stats: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let channels = layer.output.channels;
    let (count, count_f32) = per_channel(layer)?;
    let statistics = BatchNormStatisticsParams {
        batch: u32_of(layer.batch, "batch")?,
        channels: u32_of(channels, "channels")?,
        plane: u32_of(layer.output.height * layer.output.width, "plane")?,
        update_running: 1,
        momentum: RUNNING_MOMENTUM,
        // A single value per channel has no unbiased variance; PyTorch refuses it in training.
        unbiased: if count > 1 {
            count_f32 / (count_f32 - 1.0)
        } else {
            1.0
        },
        ..Default::default()
    };
    let label = format!("{name} statistics");
    let workgroups = b.workgroups(&label, [channels, 1, 1])?;
    let args = [input, &params.weights[0], batch_stats];
    let mut dispatches = vec![b.dispatch(&label, &STATISTICS, &statistics, &args, workgroups)];
    dispatches.extend(forward(b, layer, batch_stats, input, output)?);
    Ok(dispatches)
}

/// The dispatches of a batch norm's backward pass in training mode: its fused ReLU's backward
/// (in place on the output gradient), the weight and bias gradients, and the input gradient
/// where one is wanted.
pub(crate) fn backward(
    b: &mut Builder,
    layer: &LayerPlan,
    buf: &BackwardBuffers,
    batch_stats: &wgpu::Buffer,
    grads: &PackedGrads,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let (eps, relu) = eps_relu(layer)?;
    let channels = layer.output.channels;
    let plane = layer.output.height * layer.output.width;
    let mut dispatches = Vec::new();
    if relu {
        dispatches.push(elementwise::relu_backward(b, layer, buf)?);
    }
    let sums = BatchNormBackwardParams {
        batch: u32_of(layer.batch, "batch")?,
        channels: u32_of(channels, "channels")?,
        plane: u32_of(plane, "plane")?,
        eps,
    };
    let label = format!("{name} parameter backward");
    let workgroups = b.workgroups(&label, [channels, 1, 1])?;
    let args = [buf.input, buf.grad_output, batch_stats, &grads.weights[0]];
    dispatches.push(b.dispatch(&label, &BACKWARD_PARAMETERS, &sums, &args, workgroups));
    if let Some(grad_input) = buf.grad_input {
        let len = layer.batch * layer.output.len();
        let data = BatchNormBackwardDataParams {
            len: u32_of(len, "batch norm size")?,
            plane: u32_of(plane, "plane")?,
            channels: u32_of(channels, "channels")?,
            eps,
            count: per_channel(layer)?.1,
            ..Default::default()
        };
        let label = format!("{name} input backward");
        let workgroups = b.grid_1d(&label, len.div_ceil(4))?;
        let args = [
            buf.input,
            buf.grad_output,
            batch_stats,
            &grads.weights[0],
            grad_input,
        ];
        dispatches.push(b.dispatch(&label, &BACKWARD_DATA, &data, &args, workgroups));
    }
    Ok(dispatches)
}
