//! Batch normalisation in inference mode (running statistics), with an optional fused ReLU.
//! Networks loaded for inference usually run without it: `crate::fold` folds each batch norm
//! into the convolution before it.

use crate::error::Result;
use crate::gpu::builder::{u32_of, Builder};
use crate::gpu::kernel::{kernel_params, Dispatch, KernelDef};
use crate::gpu::packing::PackedWeights;
use crate::model::LayerPlan;
use crate::shaders;

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

const FORWARD: KernelDef<BatchNormParams> = KernelDef::flat(shaders::BATCH_NORM_FORWARD);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    vec![FORWARD.contract()]
}

/// The dispatch of a batch norm's forward pass; `params.weights[0]` holds its four per-channel
/// vectors (weight, bias, running mean, running variance).
pub(crate) fn forward(
    b: &mut Builder,
    layer: &LayerPlan,
    (eps, relu): (f32, bool),
    params: &PackedWeights,
    input: &wgpu::Buffer,
    output: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
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
    let args = [input, &params.weights[0], output];
    Ok(vec![b.dispatch(name, &FORWARD, &norm, &args, workgroups)])
}
