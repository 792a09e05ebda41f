//! The backward pass of `l2_loss(last output) = sum(y^2) / 2`: the gradient of every layer's
//! output, the parameter gradients (in the packed layouts of the weights), and the dispatches of
//! every layer's backward, last layer first, each built by its op's module.

use crate::error::{Error, Result};
use crate::gpu::builder::{Builder, Purpose};
use crate::gpu::kernel::{encode_pass, Dispatch};
use crate::gpu::ops::{conv, linear, lrn, pool, BackwardBuffers};
use crate::gpu::packing::{PackedGrads, PackedWeights};
use crate::model::{LayerKind, LayerPlan};

/// Where the gradient of the last layer's output comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutputGradient {
    /// The benchmark's loss, `l2_loss(last output)`: its gradient is the output itself.
    L2Loss,
    /// Written into the buffer by the caller before the backward pass (a later segment's
    /// input gradient, on a multi-device layout).
    External,
}

/// Everything the backward pass holds on the GPU.
pub(crate) struct Gradients {
    dispatches: Vec<Dispatch>,
    output_gradient: OutputGradient,
    /// The gradient of every layer's output.
    pub outputs: Vec<wgpu::Buffer>,
    /// The gradient of the network's input, when it was asked for.
    pub input: Option<wgpu::Buffer>,
    /// Parallel to the network's parameterised layers.
    pub params: Vec<PackedGrads>,
}

impl Gradients {
    /// Records the backward pass: the loss gradient (the logits themselves, unless the caller
    /// provides it), then every layer.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, logits: &wgpu::Buffer) {
        self.encode_loss(encoder, logits);
        encode_pass(encoder, "backward", &self.dispatches);
    }

    /// Records the loss gradient: a copy of the logits (nothing when the caller provides it).
    pub fn encode_loss(&self, encoder: &mut wgpu::CommandEncoder, logits: &wgpu::Buffer) {
        if self.output_gradient == OutputGradient::L2Loss {
            let last = self.outputs.last().expect("a network has layers");
            encoder.copy_buffer_to_buffer(logits, 0, last, 0, logits.size());
        }
    }

    /// The backward dispatches, last layer first.
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }
}

/// What the forward pass leaves for the backward pass to read: the network's input, every layer's
/// output and every max pool's window maxima positions (`None` for other layers).
pub(crate) struct ForwardBuffers<'f> {
    pub input: &'f wgpu::Buffer,
    pub outputs: &'f [wgpu::Buffer],
    pub argmax: &'f [Option<wgpu::Buffer>],
}

/// Builds the backward pass. `input_gradient` asks for the gradient of the network's input too
/// (skipped otherwise: nobody needs the images' gradient).
pub(crate) fn build<'a>(
    b: &mut Builder<'a>,
    plan: &[LayerPlan],
    forward: ForwardBuffers,
    params: &[PackedWeights],
    output_gradient: OutputGradient,
    input_gradient: bool,
) -> Result<Gradients> {
    let ForwardBuffers {
        input,
        outputs,
        argmax,
    } = forward;
    let first = &plan[0];
    let input_grad = input_gradient.then(|| {
        b.storage(
            "input gradient",
            first.batch * first.input.len(),
            Purpose::Gradients,
        )
    });
    let grads: Vec<wgpu::Buffer> = plan
        .iter()
        .map(|l| {
            let label = format!("{} output gradient", l.layer.name);
            b.storage(&label, l.batch * l.output.len(), Purpose::Gradients)
        })
        .collect();
    let param_grads: Vec<PackedGrads> = params
        .iter()
        .map(|p| PackedGrads::new(b, plan, p))
        .collect();

    let mut dispatches = Vec::new();
    for (i, layer) in plan.iter().enumerate().rev() {
        let buffers = BackwardBuffers {
            input: if i == 0 { input } else { &outputs[i - 1] },
            output: &outputs[i],
            grad_output: &grads[i],
            grad_input: if i == 0 {
                input_grad.as_ref()
            } else {
                Some(&grads[i - 1])
            },
            argmax: argmax[i].as_ref(),
        };
        let layer_params = params.iter().zip(&param_grads).find(|(p, _)| p.layer == i);
        let layer_dispatches = match (&layer.layer.kind, layer_params) {
            (LayerKind::Conv2d { .. }, Some((p, g))) => conv::backward(b, layer, &buffers, p, g)?,
            (LayerKind::Linear { .. }, Some((p, g))) => linear::backward(b, layer, &buffers, p, g)?,
            (LayerKind::Lrn { .. }, None) => lrn::backward(b, layer, &buffers)?,
            (LayerKind::MaxPool { .. }, None) => pool::max_backward(b, layer, &buffers)?,
            // `GpuNetwork` refuses these networks before building a backward pass.
            _ => {
                return Err(Error::Internal(format!(
                    "layer {}: no backward pass for this kind of layer",
                    layer.layer.name
                )))
            }
        };
        dispatches.extend(layer_dispatches);
    }
    Ok(Gradients {
        dispatches,
        output_gradient,
        outputs: grads,
        input: input_grad,
        params: param_grads,
    })
}
