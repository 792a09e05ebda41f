//! The small kernels between the big ones: ReLU's backward, the bias gradient (shared by
//! convolutions and fully connected layers), the residual add (with ReLU) and the channel
//! concatenation.

use crate::error::{Error, Result};
use crate::gpu::builder::{u32_of, Builder};
use crate::gpu::kernel::{kernel_params, Dispatch, KernelDef};
use crate::gpu::ops::BackwardBuffers;
use crate::model::LayerPlan;
use crate::shaders;

kernel_params! {
    /// relu_backward's parameters.
    pub(crate) struct ReluBackwardParams {
        len: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

kernel_params! {
    /// bias_backward's parameters: the output gradient summed over images and pixels.
    pub(crate) struct BiasBackwardParams {
        batch: u32,
        channels: u32,
        plane: u32,
        _pad: u32,
    }
}

kernel_params! {
    /// add_forward's parameters.
    pub(crate) struct AddParams {
        len: u32,
        relu: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

kernel_params! {
    /// concat_forward's parameters: one input's slice of the output's channels.
    pub(crate) struct ConcatParams {
        len: u32,
        input_per_image: u32,
        output_per_image: u32,
        offset: u32,
    }
}

const RELU_BACKWARD: KernelDef<ReluBackwardParams> = KernelDef::flat(shaders::RELU_BACKWARD);
const BIAS_BACKWARD: KernelDef<BiasBackwardParams> = KernelDef::flat(shaders::BIAS_BACKWARD);
const ADD_FORWARD: KernelDef<AddParams> = KernelDef::flat(shaders::ADD_FORWARD);
const CONCAT_FORWARD: KernelDef<ConcatParams> = KernelDef::flat(shaders::CONCAT_FORWARD);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    vec![
        RELU_BACKWARD.contract(),
        BIAS_BACKWARD.contract(),
        ADD_FORWARD.contract(),
        CONCAT_FORWARD.contract(),
    ]
}

/// ReLU's backward, in place on the output gradient (where the output was not positive, zero).
pub(crate) fn relu_backward(
    b: &mut Builder,
    layer: &LayerPlan,
    buf: &BackwardBuffers,
) -> Result<Dispatch> {
    let len = layer.batch * layer.output.len();
    let label = format!("{} relu backward", layer.layer.name);
    let workgroups = b.grid_1d(&label, len.div_ceil(4))?;
    let params = ReluBackwardParams {
        len: u32_of(len, "elements")?,
        ..Default::default()
    };
    let args = [buf.output, buf.grad_output];
    Ok(b.dispatch(&label, &RELU_BACKWARD, &params, &args, workgroups))
}

/// The bias gradient: `grad_output` summed over images and pixels, per channel.
pub(crate) fn bias_backward(
    b: &mut Builder,
    layer: &LayerPlan,
    grad_output: &wgpu::Buffer,
    grad_bias: &wgpu::Buffer,
) -> Result<Dispatch> {
    let label = format!("{} bias backward", layer.layer.name);
    let channels = layer.output.channels;
    let params = BiasBackwardParams {
        batch: u32_of(layer.batch, "batch")?,
        channels: u32_of(channels, "channels")?,
        plane: u32_of(layer.output.height * layer.output.width, "plane")?,
        _pad: 0,
    };
    let workgroups = b.grid_3d(&label, channels, 1, 1)?;
    let args = [grad_output, grad_bias];
    Ok(b.dispatch(&label, &BIAS_BACKWARD, &params, &args, workgroups))
}

/// The dispatch of a residual add (+ ReLU) of the layer's two inputs.
pub(crate) fn add_forward(
    b: &mut Builder,
    layer: &LayerPlan,
    relu: bool,
    inputs: &[&wgpu::Buffer],
    output: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let &[first, second] = inputs else {
        return Err(Error::InvalidArgument(format!(
            "layer {name}: the GPU adds two tensors, not {}",
            inputs.len()
        )));
    };
    let len = layer.batch * layer.output.len();
    let params = AddParams {
        len: u32_of(len, "addition size")?,
        relu: u32::from(relu),
        ..Default::default()
    };
    let workgroups = b.grid_1d(name, len.div_ceil(4))?;
    let args = [first, second, output];
    Ok(vec![b.dispatch(
        name,
        &ADD_FORWARD,
        &params,
        &args,
        workgroups,
    )])
}

/// The dispatches of a channel concatenation: one copy per input into its slice.
pub(crate) fn concat_forward(
    b: &mut Builder,
    layer: &LayerPlan,
    inputs: &[&wgpu::Buffer],
    output: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let mut offset = 0;
    let mut dispatches = Vec::new();
    for (source, (_, dims)) in inputs.iter().zip(&layer.sources) {
        let len = layer.batch * dims.len();
        let params = ConcatParams {
            len: u32_of(len, "concatenation size")?,
            input_per_image: u32_of(dims.len(), "concatenation size")?,
            output_per_image: u32_of(layer.output.len(), "concatenation size")?,
            offset: u32_of(offset, "concatenation size")?,
        };
        offset += dims.len();
        let workgroups = b.grid_1d(name, len.div_ceil(4))?;
        let args = [*source, output];
        dispatches.push(b.dispatch(name, &CONCAT_FORWARD, &params, &args, workgroups));
    }
    Ok(dispatches)
}
