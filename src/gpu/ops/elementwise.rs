//! The small kernels between the big ones: ReLU's backward, the bias gradient (shared by
//! convolutions and fully connected layers), the residual add (with ReLU) and the channel
//! concatenation, their backward, and the sum of the gradients of a tensor that several layers
//! read.

use crate::error::{Error, Result};
use crate::gpu::builder::{u32_of, Builder};
use crate::gpu::kernel::{kernel_params, ByUnits, Dispatch};
use crate::gpu::ops::{channel_groups, channel_lanes, BackwardBuffers};
use crate::model::LayerPlan;
use crate::shaders::{self, Element, Elements, CONCAT_UNITS};

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
        lanes: u32,
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

kernel_params! {
    /// add_gradient's parameters.
    pub(crate) struct AddGradientParams {
        len: u32,
        accumulate: u32,
        scale: f32,
        _pad: u32,
    }
}

kernel_params! {
    /// add_backward's parameters.
    pub(crate) struct AddBackwardParams {
        len: u32,
        relu: u32,
        accumulate_first: u32,
        accumulate_second: u32,
    }
}

kernel_params! {
    /// concat_backward's parameters: one input's slice of the output gradient.
    pub(crate) struct ConcatBackwardParams {
        len: u32,
        input_per_image: u32,
        output_per_image: u32,
        offset: u32,
        accumulate: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

const RELU_BACKWARD: ByUnits<ReluBackwardParams> =
    ByUnits::flat(shaders::RELU_BACKWARD, shaders::RELU_BACKWARD_BY_FOUR);
const BIAS_BACKWARD: ByUnits<BiasBackwardParams> =
    ByUnits::reduction(shaders::BIAS_BACKWARD, shaders::BIAS_BACKWARD_BY_FOUR);
const ADD_FORWARD: ByUnits<AddParams> =
    ByUnits::flat(shaders::ADD_FORWARD, shaders::ADD_FORWARD_BY_FOUR);
const CONCAT_FORWARD: ByUnits<ConcatParams> =
    ByUnits::flat(shaders::CONCAT_FORWARD, shaders::CONCAT_FORWARD_BY_FOUR);
const ADD_GRADIENT: ByUnits<AddGradientParams> =
    ByUnits::flat(shaders::ADD_GRADIENT, shaders::ADD_GRADIENT_BY_FOUR);
const ADD_BACKWARD: ByUnits<AddBackwardParams> =
    ByUnits::flat(shaders::ADD_BACKWARD, shaders::ADD_BACKWARD_BY_FOUR);
const CONCAT_BACKWARD: ByUnits<ConcatBackwardParams> =
    ByUnits::flat(shaders::CONCAT_BACKWARD, shaders::CONCAT_BACKWARD_BY_FOUR);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    [
        BIAS_BACKWARD.contracts(),
        RELU_BACKWARD.contracts(),
        ADD_FORWARD.contracts(),
        CONCAT_FORWARD.contracts(),
        ADD_GRADIENT.contracts(),
        ADD_BACKWARD.contracts(),
        CONCAT_BACKWARD.contracts(),
    ]
    .concat()
}

/// ReLU's backward, in place on the output gradient (where the output was not positive, zero).
pub(crate) fn relu_backward(
    b: &mut Builder,
    layer: &LayerPlan,
    buf: &BackwardBuffers,
) -> Result<Dispatch> {
    let len = layer.batch * layer.output.len();
    let (kernel, unit) = RELU_BACKWARD.for_sizes(&[len]);
    let label = format!("{} relu backward", layer.layer.name);
    let workgroups = b.grid_1d(&label, len / unit)?;
    let params = ReluBackwardParams {
        len: u32_of(len / unit, "elements")?,
        ..Default::default()
    };
    let args = [buf.output, buf.grad_output];
    Ok(b.dispatch_reading_stored(&label, kernel, &[], &params, &args, workgroups))
}

/// The bias gradient: `grad_output` summed over images and pixels, per channel, by the
/// segments of the per-channel reductions (sized as batch norm's: [`channel_lanes`]).
pub(crate) fn bias_backward(
    b: &mut Builder,
    layer: &LayerPlan,
    grad_output: &wgpu::Buffer,
    grad_bias: &wgpu::Buffer,
) -> Result<Dispatch> {
    let label = format!("{} bias backward", layer.layer.name);
    let channels = layer.output.channels;
    let plane = layer.output.height * layer.output.width;
    let (kernel, _) = BIAS_BACKWARD.for_sizes(&[plane]);
    let params = BiasBackwardParams {
        batch: u32_of(layer.batch, "batch")?,
        channels: u32_of(channels, "channels")?,
        plane: u32_of(plane, "plane")?,
        lanes: channel_lanes(b.ctx.software(), layer),
    };
    let workgroups = b.workgroups(&label, [channel_groups(channels, params.lanes), 1, 1])?;
    let args = [grad_output, grad_bias];
    Ok(b.dispatch(&label, kernel, &params, &args, workgroups))
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
    let (kernel, unit) = ADD_FORWARD.for_sizes(&[len]);
    let params = AddParams {
        len: u32_of(len / unit, "addition size")?,
        relu: u32::from(relu),
        ..Default::default()
    };
    let workgroups = b.grid_1d(name, len / unit)?;
    let args = [first, second, output];
    Ok(vec![b.dispatch_stored(
        name,
        kernel,
        &[],
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
        let sizes = [dims.len(), layer.output.len(), offset];
        let (kernel, unit) = CONCAT_FORWARD.for_sizes(&sizes);
        let units = |values: usize| u32_of(values / unit, "concatenation size");
        let params = ConcatParams {
            len: units(len)?,
            input_per_image: units(dims.len())?,
            output_per_image: units(layer.output.len())?,
            offset: units(offset)?,
        };
        offset += dims.len();
        let workgroups = b.grid_1d(name, (len / unit).div_ceil(CONCAT_UNITS))?;
        let args = [*source, output];
        dispatches.push(b.dispatch_stored(name, kernel, &[], &params, &args, workgroups));
    }
    Ok(dispatches)
}

/// Where one input's gradient goes: the buffer, and whether it already holds another layer's
/// gradient of the same tensor, which this one is added to (otherwise overwritten).
#[derive(Clone, Copy)]
pub(crate) struct GradientTarget<'b> {
    pub buffer: &'b wgpu::Buffer,
    pub accumulate: bool,
}

/// The dispatch that copies `source` (`len` floats, a gradient) into `target`, or adds it there.
pub(crate) fn add_gradient(
    b: &mut Builder,
    label: &str,
    len: usize,
    source: &wgpu::Buffer,
    target: GradientTarget,
) -> Result<Dispatch> {
    add_scaled_gradient(b, label, len, (source, Element::F32, 1.0), target)
}

/// As [`add_gradient`], of `scale * source`, whose values are `element`s (a layer's output, as
/// the network stores it, for the L2 loss's gradient).
pub(crate) fn add_scaled_gradient(
    b: &mut Builder,
    label: &str,
    len: usize,
    (source, element, scale): (&wgpu::Buffer, Element, f32),
    target: GradientTarget,
) -> Result<Dispatch> {
    let (kernel, unit) = ADD_GRADIENT.for_sizes(&[len]);
    let params = AddGradientParams {
        len: u32_of(len / unit, "gradient size")?,
        accumulate: u32::from(target.accumulate),
        scale,
        _pad: 0,
    };
    let workgroups = b.grid_1d(label, len / unit)?;
    let args = [source, target.buffer];
    let elements = Elements::reading(element);
    Ok(b.dispatch_elements(label, kernel, elements, &[], &params, &args, workgroups))
}

/// The dispatches of a channel concatenation's backward pass: each input's slice of the output
/// gradient into its target (`None`: an input whose gradient nobody needs).
pub(crate) fn concat_backward(
    b: &mut Builder,
    layer: &LayerPlan,
    grad_output: &wgpu::Buffer,
    targets: &[Option<GradientTarget>],
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let mut offset = 0;
    let mut dispatches = Vec::new();
    for (target, (_, dims)) in targets.iter().zip(&layer.sources) {
        let slice = offset;
        offset += dims.len();
        let Some(target) = target else { continue };
        let len = layer.batch * dims.len();
        let sizes = [dims.len(), layer.output.len(), slice];
        let (kernel, unit) = CONCAT_BACKWARD.for_sizes(&sizes);
        let units = |values: usize| u32_of(values / unit, "concatenation size");
        let params = ConcatBackwardParams {
            len: units(len)?,
            input_per_image: units(dims.len())?,
            output_per_image: units(layer.output.len())?,
            offset: units(slice)?,
            accumulate: u32::from(target.accumulate),
            ..Default::default()
        };
        let label = format!("{name} backward");
        let workgroups = b.grid_1d(&label, (len / unit).div_ceil(CONCAT_UNITS))?;
        let args = [grad_output, target.buffer];
        dispatches.push(b.dispatch(&label, kernel, &params, &args, workgroups));
    }
    Ok(dispatches)
}

/// The dispatches of a residual addition's backward: its output gradient, through the fused
/// ReLU, to each input's target. Two distinct targets (the usual case) take one pass; otherwise
/// (an input added to itself, an input whose gradient nobody needs) the ReLU's backward runs in
/// place on the output gradient, then one copy or addition per target.
pub(crate) fn add_backward(
    b: &mut Builder,
    layer: &LayerPlan,
    buf: &BackwardBuffers,
    targets: &[Option<GradientTarget>],
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let relu = matches!(
        layer.layer.kind,
        crate::model::LayerKind::Add { relu: true }
    );
    let len = layer.batch * layer.output.len();
    let label = format!("{name} backward");
    if let [Some(first), Some(second)] = targets {
        if first.buffer != second.buffer {
            let (kernel, unit) = ADD_BACKWARD.for_sizes(&[len]);
            let params = AddBackwardParams {
                len: u32_of(len / unit, "addition size")?,
                relu: u32::from(relu),
                accumulate_first: u32::from(first.accumulate),
                accumulate_second: u32::from(second.accumulate),
            };
            // Without ReLU the output is not read: the output gradient stands in for it.
            let output = if relu { buf.output } else { buf.grad_output };
            let args = [output, buf.grad_output, first.buffer, second.buffer];
            let workgroups = b.grid_1d(&label, len / unit)?;
            return Ok(vec![b.dispatch_reading_stored(
                &label,
                kernel,
                &[],
                &params,
                &args,
                workgroups,
            )]);
        }
    }
    let mut dispatches = Vec::new();
    if relu {
        dispatches.push(relu_backward(b, layer, buf)?);
    }
    for &target in targets.iter().flatten() {
        dispatches.push(add_gradient(b, &label, len, buf.grad_output, target)?);
    }
    Ok(dispatches)
}
