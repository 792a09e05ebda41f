//! Local response normalisation across channels, TensorFlow's semantics (`tf.nn.lrn`: alpha not
//! divided by the window size), with windows that stop at group edges (the two-device AlexNet's
//! per-tower LRN). Both kernels are specialised per layer: the radius and beta are override
//! constants, so the window's mask and the choice of power fold away.

use crate::error::{Error, Result};
use crate::gpu::builder::{u32_of, Builder};
use crate::gpu::kernel::{kernel_params, Dispatch, KernelDef, Overrides};
use crate::gpu::ops::BackwardBuffers;
use crate::model::{LayerKind, LayerPlan};
use crate::shaders;

kernel_params! {
    /// lrn_forward's and lrn_backward's parameters (`shaders/common/lrn_window.wgsl`).
    pub(crate) struct LrnParams {
        batch: u32,
        channels: u32,
        plane: u32,
        channels_per_group: u32,
        bias: f32,
        alpha: f32,
        _pad0: u32,
        _pad1: u32,
    }
}

const FORWARD: KernelDef<LrnParams> = KernelDef::flat(shaders::LRN_FORWARD);
const BACKWARD: KernelDef<LrnParams> = KernelDef::flat(shaders::LRN_BACKWARD);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    vec![FORWARD.contract(), BACKWARD.contract()]
}

impl LrnParams {
    /// A planned LRN layer's parameters and override constants (radius, beta).
    fn of(layer: &LayerPlan) -> Result<(Self, Overrides)> {
        let LayerKind::Lrn {
            depth_radius,
            bias,
            alpha,
            beta,
            groups,
        } = layer.layer.kind
        else {
            return Err(Error::Internal(format!(
                "{} is not an LRN",
                layer.layer.name
            )));
        };
        let params = LrnParams {
            batch: u32_of(layer.batch, "batch")?,
            channels: u32_of(layer.input.channels, "channels")?,
            plane: u32_of(layer.input.height * layer.input.width, "plane")?,
            channels_per_group: u32_of(layer.input.channels / groups, "channels")?,
            bias,
            alpha,
            ..Default::default()
        };
        let radius = u32_of(depth_radius, "depth_radius")?;
        let overrides = vec![
            ("DEPTH_RADIUS", f64::from(radius)),
            ("BETA", f64::from(beta)),
        ];
        Ok((params, overrides))
    }
}

/// The dispatch of an LRN layer's forward pass: one invocation per pixel position.
pub(crate) fn forward(
    b: &mut Builder,
    layer: &LayerPlan,
    input: &wgpu::Buffer,
    output: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let positions = layer.batch * layer.input.height * layer.input.width;
    let workgroups = b.grid_1d(name, positions)?;
    let (params, overrides) = LrnParams::of(layer)?;
    let args = [input, output];
    Ok(vec![b.dispatch_stored(
        name, &FORWARD, &overrides, &params, &args, workgroups,
    )])
}

/// The dispatch of an LRN layer's backward pass (one pass: reads x and dy once, writes dx
/// once); nothing when no input gradient is wanted.
pub(crate) fn backward(
    b: &mut Builder,
    layer: &LayerPlan,
    buf: &BackwardBuffers,
) -> Result<Vec<Dispatch>> {
    let Some(grad_input) = buf.grad_input else {
        return Ok(Vec::new());
    };
    let name = &layer.layer.name;
    let (params, overrides) = LrnParams::of(layer)?;
    let positions = layer.batch * layer.input.height * layer.input.width;
    let workgroups = b.grid_1d(name, positions)?;
    let args = [buf.input, buf.grad_output, grad_input];
    let label = format!("{name} backward");
    Ok(vec![b.dispatch_reading_stored(
        &label, &BACKWARD, &overrides, &params, &args, workgroups,
    )])
}
