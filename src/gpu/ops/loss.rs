//! The losses' gradients, the first dispatches of a backward pass: each head's output gradient
//! written from its output (see [`crate::model::Loss`]), and, for cross-entropy, each image's
//! loss kept for reading back.

use crate::error::Result;
use crate::gpu::builder::{u32_of, Builder};
use crate::gpu::kernel::{kernel_params, Dispatch, KernelDef};
use crate::gpu::ops::elementwise::{self, GradientTarget};
use crate::model::LayerPlan;
use crate::shaders;

kernel_params! {
    /// softmax_cross_entropy's parameters.
    pub(crate) struct SoftmaxCrossEntropyParams {
        batch: u32,
        classes: u32,
        scale: f32,
        _pad: u32,
    }
}

const SOFTMAX_CROSS_ENTROPY: KernelDef<SoftmaxCrossEntropyParams> =
    KernelDef::flat(shaders::SOFTMAX_CROSS_ENTROPY);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    vec![SOFTMAX_CROSS_ENTROPY.contract()]
}

/// The gradient of `weight * l2_loss(output)`: `weight * output`, written into `grad`.
pub(crate) fn l2(
    b: &mut Builder,
    head: &LayerPlan,
    weight: f32,
    output: &wgpu::Buffer,
    grad: &wgpu::Buffer,
) -> Result<Dispatch> {
    let label = format!("{} l2 loss gradient", head.layer.name);
    let len = head.batch * head.output.len();
    let target = GradientTarget {
        buffer: grad,
        accumulate: false,
    };
    let source = (output, b.stored, weight);
    elementwise::add_scaled_gradient(b, &label, len, source, target)
}

/// The gradient of `weight * mean cross-entropy(softmax(output), labels)` written into `grad`,
/// each image's (unweighted) loss into `losses`.
pub(crate) fn cross_entropy(
    b: &mut Builder,
    head: &LayerPlan,
    weight: f32,
    (output, labels): (&wgpu::Buffer, &wgpu::Buffer),
    (grad, losses): (&wgpu::Buffer, &wgpu::Buffer),
) -> Result<Dispatch> {
    let label = format!("{} cross-entropy", head.layer.name);
    let params = SoftmaxCrossEntropyParams {
        batch: u32_of(head.batch, "batch")?,
        classes: u32_of(head.output.len(), "classes")?,
        scale: weight / head.batch as f32,
        _pad: 0,
    };
    let workgroups = b.grid_1d(&label, head.batch)?;
    let args = [output, labels, grad, losses];
    let kernel = &SOFTMAX_CROSS_ENTROPY;
    Ok(b.dispatch_reading_stored(&label, kernel, &[], &params, &args, workgroups))
}
