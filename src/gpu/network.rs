//! A planned network on the GPU: every buffer, uniform and bind group created once, so that a
//! forward (or forward-backward) pass is one command buffer of dispatches and nothing else.
//!
//! Activations are NCHW, one buffer per layer output, kept for the backward pass and for reading
//! back (`check` reads every layer), except that a network built with
//! [`Keep::WhatBackwardReads`] shares the buffers of outputs only later forwards read. Weights
//! are repacked at upload into the layouts the kernels
//! read as vec4s; parameter gradients are computed in the same layouts and unpacked to PyTorch's
//! only when read back.

use crate::error::{Error, Result};
use crate::gpu::builder::{Builder, MemoryUse, Pooled, Purpose};
use crate::gpu::context::GpuContext;
use crate::gpu::gradients::{
    self, BatchNormSync, ForwardBuffers, Gradients, OutputGradient, Wanted,
};
use crate::gpu::kernel::{encode_pass, Dispatch};
use crate::gpu::ops::{self, conv, elementwise, linear, lrn, norm, pool};
use crate::gpu::packing::{self, PackedGrads, PackedWeights, Packing};
use crate::gpu::tuning::{LayerChoice, LinearLayerChoice};
use crate::model::{LayerKind, LayerPlan, Loss, LossKind, Source};
use crate::shaders::Element;
use crate::weights::{Tensor, Weights};

/// What a network built for training keeps of its forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Every layer's output, readable after a pass (a check compares them all).
    Everything,
    /// Only the outputs the backward pass reads (and the loss heads); an output only later
    /// layers' forward reads (ResNet's last batch norm of a block, before the residual add)
    /// shares its buffer with others, as the benchmark and the trainer need no more.
    WhatBackwardReads,
}

/// A network resident on one device, ready to run forward passes and, when built with
/// [`GpuNetwork::with_gradients`] or [`GpuNetwork::training`], backward passes (in training
/// mode: batch norms normalise by the batch's statistics).
pub struct GpuNetwork<'a> {
    ctx: &'a GpuContext,
    plan: Vec<LayerPlan>,
    /// How the input, the layers' outputs and the conv and linear weights are stored.
    stored: Element,
    input: wgpu::Buffer,
    outputs: Vec<wgpu::Buffer>,
    params: Vec<PackedWeights>,
    forward: Vec<Dispatch>,
    /// With synchronised batch norms, where the forward pass stops for the host.
    forward_syncs: Vec<BatchNormSync>,
    /// Boxed: a network without gradients stays small.
    gradients: Option<Box<Gradients>>,
    /// Per layer, whether its output survives a pass (see [`Keep`]).
    readable: Vec<bool>,
    memory: MemoryUse,
    /// Launches folded into a 2-D grid, for the test that the kernels unfold them.
    folded_launches: usize,
    /// How each convolution computes, as (layer, description).
    choices: Vec<(String, LayerChoice)>,
    /// How each fully connected layer's forward computes, as (layer, description).
    linear_choices: Vec<(String, LinearLayerChoice)>,
}

impl<'a> GpuNetwork<'a> {
    /// Uploads the weights and creates every buffer, uniform and bind group of the forward pass.
    /// Refuses, with the numbers, any activation larger than one storage binding; splits a
    /// linear layer whose weight is larger into column slices.
    pub fn new(ctx: &'a GpuContext, plan: &[LayerPlan], weights: &Weights) -> Result<Self> {
        build(ctx, plan, Parameters::Upload(weights), None)
    }

    /// A network at `plan`'s batch size over the parameter buffers of `other` (the same network
    /// at another batch), at inference: batch norms by the running statistics `other`'s training
    /// passes update. A trainer scores its validation set with it, with no copy of the weights.
    /// Fails when `plan` is not `other`'s at another batch.
    pub fn inference_sharing(other: &GpuNetwork<'a>, plan: &[LayerPlan]) -> Result<Self> {
        build(other.ctx, plan, Parameters::SharedWith(other), None)
    }

    /// As [`GpuNetwork::inference_sharing`], for training with `other`'s loss: the parameter
    /// gradients land in `other`'s gradient buffers, so `other`'s optimiser updates from either
    /// network's backward pass. A trainer runs a data set's last, smaller batch with it. Fails
    /// when `other` was not built with [`GpuNetwork::training`].
    pub fn training_sharing(
        other: &GpuNetwork<'a>,
        plan: &[LayerPlan],
        keep: Keep,
    ) -> Result<Self> {
        Self::training_sharing_with(other, plan, keep, false)
    }

    /// As [`GpuNetwork::training_sharing`], with `synced_batch_norms` as
    /// [`GpuNetwork::training_with`] takes it.
    pub(crate) fn training_sharing_with(
        other: &GpuNetwork<'a>,
        plan: &[LayerPlan],
        keep: Keep,
        synced_batch_norms: bool,
    ) -> Result<Self> {
        Self::sharing_for_training(other, plan, keep, synced_batch_norms, true)
    }

    /// As [`GpuNetwork::training_sharing_with`], its parameter gradients in buffers of its own:
    /// one of several parts of a batch on one device, whose gradients are summed afterwards
    /// (`gpu::MicroBatches`).
    pub(crate) fn training_sharing_parameters(
        other: &GpuNetwork<'a>,
        plan: &[LayerPlan],
        keep: Keep,
        synced_batch_norms: bool,
    ) -> Result<Self> {
        Self::sharing_for_training(other, plan, keep, synced_batch_norms, false)
    }

    fn sharing_for_training(
        other: &GpuNetwork<'a>,
        plan: &[LayerPlan],
        keep: Keep,
        synced_batch_norms: bool,
        share_gradients: bool,
    ) -> Result<Self> {
        let loss = other.loss().cloned().ok_or_else(|| {
            Error::InvalidArgument("the network shared was not built for training".into())
        })?;
        let training = Training {
            output_gradient: OutputGradient::Loss(loss),
            wanted: Wanted {
                input: false,
                conv_parameters: true,
                synced_batch_norms,
            },
            keep,
        };
        let parameters = match share_gradients {
            true => Parameters::SharedWith(other),
            false => Parameters::SharedWithOwnGradients(other),
        };
        build(other.ctx, plan, parameters, Some(training))
    }

    /// At inference ([`GpuNetwork::new`]) or, with `training` (a loss and what the forward pass
    /// keeps), for training ([`GpuNetwork::training`]).
    pub(crate) fn built_for(
        ctx: &'a GpuContext,
        plan: &[LayerPlan],
        weights: &Weights,
        training: Option<(&Loss, Keep)>,
    ) -> Result<Self> {
        match training {
            Some((loss, keep)) => Self::training(ctx, plan, weights, loss, keep),
            None => Self::new(ctx, plan, weights),
        }
    }

    /// As [`GpuNetwork::new`], plus everything the backward pass of `l2_loss(last output)` needs.
    pub fn with_gradients(
        ctx: &'a GpuContext,
        plan: &[LayerPlan],
        weights: &Weights,
    ) -> Result<Self> {
        let loss = Loss::main_head(LossKind::L2, plan);
        Self::training(ctx, plan, weights, &loss, Keep::Everything)
    }

    /// As [`GpuNetwork::new`], plus everything the backward pass of `loss` needs (for
    /// cross-entropy, the labels are uploaded with [`GpuNetwork::upload_labels`]), keeping
    /// `keep` of the forward pass.
    pub fn training(
        ctx: &'a GpuContext,
        plan: &[LayerPlan],
        weights: &Weights,
        loss: &Loss,
        keep: Keep,
    ) -> Result<Self> {
        Self::training_with(ctx, plan, weights, (loss, keep), false)
    }

    /// As [`GpuNetwork::training`], with `synced_batch_norms` each batch norm synchronised
    /// across data-parallel replicas: the forward and backward passes stop at it for the host
    /// ([`GpuNetwork::batch_norm_syncs`]).
    pub(crate) fn training_with(
        ctx: &'a GpuContext,
        plan: &[LayerPlan],
        weights: &Weights,
        (loss, keep): (&Loss, Keep),
        synced_batch_norms: bool,
    ) -> Result<Self> {
        let training = Training {
            output_gradient: OutputGradient::Loss(loss.clone()),
            wanted: Wanted {
                input: false,
                conv_parameters: true,
                synced_batch_norms,
            },
            keep,
        };
        build(ctx, plan, Parameters::Upload(weights), Some(training))
    }

    /// Where a synchronised network's forward and backward passes stop for the host, in order
    /// (both empty unless built with synchronised batch norms, [`GpuNetwork::training_with`]).
    pub(crate) fn batch_norm_syncs(&self) -> (&[BatchNormSync], &[BatchNormSync]) {
        let backward = self
            .gradients
            .as_ref()
            .map_or(&[][..], |g| &g.batch_norm_syncs);
        (&self.forward_syncs, backward)
    }

    /// Records the forward dispatches `dispatches` (a part of [`GpuNetwork::encode_forward`]).
    pub(crate) fn encode_forward_part(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        dispatches: std::ops::Range<usize>,
    ) -> Result<()> {
        let part = self.forward.get(dispatches.clone()).ok_or_else(|| {
            Error::Internal(format!("forward dispatches {dispatches:?} out of range"))
        })?;
        encode_pass(encoder, "forward", part);
        Ok(())
    }

    /// The number of forward dispatches.
    pub(crate) fn forward_dispatches(&self) -> usize {
        self.forward.len()
    }

    /// As [`GpuNetwork::with_gradients`], and the gradient of the input too (which a network's
    /// first layer otherwise skips): one layer benchmarked alone does all a layer inside a
    /// network does.
    pub fn with_input_gradient(
        ctx: &'a GpuContext,
        plan: &[LayerPlan],
        weights: &Weights,
    ) -> Result<Self> {
        let training = Training {
            output_gradient: OutputGradient::Loss(Loss::main_head(LossKind::L2, plan)),
            wanted: Wanted {
                input: true,
                conv_parameters: true,
                synced_batch_norms: false,
            },
            keep: Keep::Everything,
        };
        build(ctx, plan, Parameters::Upload(weights), Some(training))
    }

    /// A network whose loss its caller computes from the outputs of `heads` (style transfer's
    /// feature layers): the caller's dispatches write each head's output gradient (see
    /// [`GpuNetwork::output_gradient_buffer`]) between the forward and the backward pass, which
    /// computes the input's gradient and no weight gradients of its convolutions (the weights
    /// stay fixed). Every output is kept.
    pub(crate) fn for_input_gradient(
        ctx: &'a GpuContext,
        plan: &[LayerPlan],
        weights: &Weights,
        heads: &[usize],
    ) -> Result<Self> {
        let training = Training {
            output_gradient: OutputGradient::Heads(heads.to_vec()),
            wanted: Wanted {
                input: true,
                conv_parameters: false,
                synced_batch_norms: false,
            },
            keep: Keep::Everything,
        };
        build(ctx, plan, Parameters::Upload(weights), Some(training))
    }

    /// Runs the backward pass alone (after a forward pass) and waits for the GPU.
    pub fn backward(&self) -> Result<()> {
        self.run("backward pass", |encoder| self.encode_backward(encoder))
    }

    /// A segment of a multi-device layout: with gradients, its output gradient provided by the
    /// caller and its input gradient computed.
    pub(crate) fn segment(
        ctx: &'a GpuContext,
        plan: &[LayerPlan],
        weights: &Weights,
        last: bool,
        first: bool,
    ) -> Result<Self> {
        let output_gradient = if last {
            OutputGradient::Loss(Loss::main_head(LossKind::L2, plan))
        } else {
            OutputGradient::External
        };
        let training = Training {
            output_gradient,
            wanted: Wanted {
                input: !first,
                conv_parameters: true,
                synced_batch_norms: false,
            },
            keep: Keep::Everything,
        };
        build(ctx, plan, Parameters::Upload(weights), Some(training))
    }

    /// The plan this network runs.
    pub fn plan(&self) -> &[LayerPlan] {
        &self.plan
    }

    /// The context (adapter, device, queue) the network lives on.
    pub fn context(&self) -> &'a GpuContext {
        self.ctx
    }

    /// How many of its launches were folded into a 2-D grid because one grid dimension could
    /// not hold them: what the test of the kernels' unfolding needs to know it tested anything.
    #[doc(hidden)]
    pub fn folded_launches(&self) -> usize {
        self.folded_launches
    }

    /// How each convolution computes (algorithm, kernel shape, and whether `convnet tune`'s
    /// measurements chose it), as (layer, description), in the order of the layers.
    pub fn layer_choices(&self) -> &[(String, LayerChoice)] {
        &self.choices
    }

    /// The forward kernel of the fully connected `layer` (and whether `convnet tune`'s
    /// measurements, a flag or the heuristic chose it), if it is one.
    pub fn linear_choice(&self, layer: &str) -> Option<LinearLayerChoice> {
        (self.linear_choices.iter())
            .find(|(name, _)| name == layer)
            .map(|&(_, choice)| choice)
    }

    /// The choice [`GpuNetwork::layer_choices`] gives `layer`, if any.
    pub fn layer_choice(&self, layer: &str) -> Option<LayerChoice> {
        (self.choices.iter())
            .find(|(name, _)| name == layer)
            .map(|&(_, choice)| choice)
    }

    /// GPU memory held, by purpose.
    pub fn memory(&self) -> MemoryUse {
        self.memory
    }

    /// Copies a batch of input images (`[N, C, H, W]`, the plan's batch) to the GPU.
    pub fn upload_input(&self, input: &[f32]) -> Result<()> {
        let expected = self.plan[0].batch * self.plan[0].input.len();
        if input.len() != expected {
            return Err(Error::InvalidArgument(format!(
                "input holds {} values, the network at batch {} expects {expected}",
                input.len(),
                self.plan[0].batch
            )));
        }
        self.ctx.scoped("input upload", |ctx| {
            ctx.write_values(&self.input, input, self.stored)
        })
    }

    /// Writes `bytes`, f32 values in little-endian order (a data set's batch, possibly fewer
    /// images than the network's batch: the rest of the input keeps what it held), into the
    /// network's input as it stores it (rounded to f16 where it stores f16). Checks nothing;
    /// the caller sized the batch.
    pub(crate) fn write_input_bytes(&self, bytes: &[u8]) {
        match self.stored {
            Element::F32 => self.ctx.queue().write_buffer(&self.input, 0, bytes),
            // The bytes need not be aligned for f32: copied into values first.
            Element::F16 => {
                let values: Vec<f32> = bytemuck::pod_collect_to_vec(bytes);
                self.ctx.write_values(&self.input, &values, Element::F16);
            }
        }
    }

    /// Copies the batch's labels (one class index per image) to the GPU, for a network trained
    /// with cross-entropy. Fails for another loss, a count other than the batch, or a label
    /// that is not one of the heads' classes.
    pub fn upload_labels(&self, labels: &[usize]) -> Result<()> {
        let gradients = self.gradients_or_err()?;
        let (Some(loss), Some(ce)) = (&gradients.loss, &gradients.cross_entropy) else {
            return Err(Error::InvalidArgument(
                "labels are for a network trained with cross-entropy".into(),
            ));
        };
        loss.check_labels(&self.plan, labels)?;
        let labels: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        self.ctx.scoped("labels upload", |ctx| {
            ctx.queue()
                .write_buffer(&ce.labels, 0, bytemuck::cast_slice(&labels))
        })
    }

    /// The loss of the last forward-backward pass, as the backward pass differentiated it: each
    /// head's l2 loss or mean cross-entropy, weighted (read back; for l2, summed on the host).
    pub fn read_loss(&self) -> Result<f64> {
        let gradients = self.gradients_or_err()?;
        let loss = gradients.loss.as_ref().ok_or_else(|| {
            Error::InvalidArgument("this network's output gradient is its caller's".into())
        })?;
        let mut total = 0.0;
        for (k, &(head, weight)) in loss.heads.iter().enumerate() {
            let value = match &gradients.cross_entropy {
                Some(ce) => {
                    let batch = self.plan[head].batch;
                    let losses = self.ctx.read_f32(&ce.losses[k], batch)?;
                    losses.iter().map(|&l| f64::from(l)).sum::<f64>() / batch as f64
                }
                None => {
                    let y = self.read_layer(head)?;
                    y.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / 2.0
                }
            };
            total += f64::from(weight) * value;
        }
        Ok(total)
    }

    /// The loss this network was built to differentiate (`None` for a segment of a
    /// multi-device layout, whose output gradient is its caller's, or without gradients).
    pub fn loss(&self) -> Option<&Loss> {
        self.gradients.as_ref().and_then(|g| g.loss.as_ref())
    }

    /// Records the whole forward pass into `encoder`.
    pub fn encode_forward(&self, encoder: &mut wgpu::CommandEncoder) {
        encode_pass(encoder, "forward", &self.forward);
    }

    /// Records the backward pass of the network's loss into `encoder`, after a forward pass.
    /// Fails when the network was built without gradients.
    pub fn encode_backward(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let gradients = self.gradients_or_err()?;
        gradients.encode(encoder);
        Ok(())
    }

    /// Records part of the backward pass: the loss's gradient where `with_loss`, then the
    /// backward dispatches `dispatches` (of [`GpuNetwork::backward_dispatches`], last layer
    /// first). Parts recorded in order, from the loss to the last dispatch, are the whole pass.
    pub(crate) fn encode_backward_part(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        dispatches: std::ops::Range<usize>,
        with_loss: bool,
    ) -> Result<()> {
        let gradients = self.gradients_or_err()?;
        if with_loss {
            gradients.encode_loss(encoder);
        }
        let part = gradients
            .dispatches()
            .get(dispatches.clone())
            .ok_or_else(|| {
                Error::Internal(format!("backward dispatches {dispatches:?} out of range"))
            })?;
        encode_pass(encoder, "backward", part);
        Ok(())
    }

    fn gradients_or_err(&self) -> Result<&Gradients> {
        self.gradients.as_deref().ok_or_else(|| {
            Error::InvalidArgument("this network was built without gradients".into())
        })
    }

    /// The buffer the input batch is uploaded to.
    pub(crate) fn input_buffer(&self) -> &wgpu::Buffer {
        &self.input
    }

    /// Layer `index`'s output buffer (every network keeps its last layer's; one built with
    /// [`Keep::Everything`] keeps every layer's).
    pub(crate) fn output_buffer(&self, index: usize) -> Result<&wgpu::Buffer> {
        self.layer(index)?;
        Ok(&self.outputs[index])
    }

    /// The buffer of layer `index`'s output gradient, where it reaches the loss: for a loss
    /// head of [`GpuNetwork::for_input_gradient`], where the caller writes it.
    pub(crate) fn output_gradient_buffer(&self, index: usize) -> Result<&wgpu::Buffer> {
        let layer = self.layer(index)?;
        self.gradients_or_err()?.outputs[index]
            .as_ref()
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "layer {}'s output does not reach the loss",
                    layer.layer.name
                ))
            })
    }

    /// Each loss head's `[batch]` per-image losses (in the loss's order), for a network trained
    /// with cross-entropy.
    pub(crate) fn per_image_loss_buffers(&self) -> Result<&[wgpu::Buffer]> {
        let gradients = self.gradients_or_err()?;
        gradients
            .cross_entropy
            .as_ref()
            .map(|ce| ce.losses.as_slice())
            .ok_or_else(|| {
                Error::InvalidArgument("the network is not trained with cross-entropy".into())
            })
    }

    /// The last layer's output buffer.
    pub(crate) fn logits_buffer(&self) -> &wgpu::Buffer {
        self.outputs.last().expect("a planned network has layers")
    }

    /// The buffer of the last layer's output gradient, which a multi-device segment's caller
    /// fills before the backward pass.
    pub(crate) fn logits_gradient_buffer(&self) -> Result<&wgpu::Buffer> {
        Ok(self.gradients_or_err()?.logits())
    }

    /// The input gradient's buffer, where the network was built to compute it.
    pub(crate) fn input_gradient_buffer(&self) -> Option<&wgpu::Buffer> {
        self.gradients.as_ref().and_then(|g| g.input.as_ref())
    }

    /// Every parameterised layer's parameters beside their gradients (`None`: a layer whose
    /// weights stay fixed): what an optimiser updates.
    pub(crate) fn parameters_and_gradients(
        &self,
    ) -> Result<Vec<(&PackedWeights, Option<&PackedGrads>)>> {
        let gradients = self.gradients_or_err()?;
        Ok((self.params.iter().zip(&gradients.params))
            .map(|(p, g)| (p, g.as_ref()))
            .collect())
    }

    /// Submits what `record` encodes, without waiting: the caller reads back or waits for
    /// that submission (a trainer's next step, other devices' work, go on meanwhile).
    pub(crate) fn submit(
        &self,
        during: &str,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<wgpu::SubmissionIndex> {
        let mut encoder =
            self.ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some(during),
                });
        record(&mut encoder)?;
        Ok(self.ctx.queue().submit([encoder.finish()]))
    }

    /// Submits what `record` encodes and waits until the GPU has finished it.
    pub(crate) fn run(
        &self,
        during: &str,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<()> {
        self.submit(during, record)?;
        self.ctx.wait(during)
    }

    /// Runs one forward pass and waits until the GPU has finished it.
    pub fn forward(&self) -> Result<()> {
        self.run("forward pass", |encoder| {
            self.encode_forward(encoder);
            Ok(())
        })
    }

    /// Runs one forward and backward pass (one command buffer) and waits for the GPU.
    pub fn forward_backward(&self) -> Result<()> {
        self.run("forward-backward pass", |encoder| {
            self.encode_forward(encoder);
            self.encode_backward(encoder)
        })
    }

    /// Times the forward pass layer by layer (see [`Profile`](crate::gpu::Profile)).
    pub fn profile_forward(&self) -> Result<crate::gpu::Profile> {
        crate::gpu::profile::profile(self.ctx, |_| {}, &self.forward)
    }

    /// Times the backward pass layer by layer, after an untimed forward pass and loss gradient.
    pub fn profile_backward(&self) -> Result<crate::gpu::Profile> {
        let gradients = self.gradients_or_err()?;
        let prelude = |encoder: &mut wgpu::CommandEncoder| {
            self.encode_forward(encoder);
            gradients.encode_loss(encoder);
        };
        crate::gpu::profile::profile(self.ctx, prelude, gradients.dispatches())
    }

    /// As [`GpuNetwork::profile_forward`], layer by layer only (the pass runs once).
    pub fn profile_forward_layers(&self) -> Result<crate::gpu::Profile> {
        crate::gpu::profile::profile_layers(self.ctx, |_| {}, &self.forward)
    }

    /// As [`GpuNetwork::profile_backward`], layer by layer only (the pass runs once).
    pub fn profile_backward_layers(&self) -> Result<crate::gpu::Profile> {
        let gradients = self.gradients_or_err()?;
        let prelude = |encoder: &mut wgpu::CommandEncoder| {
            self.encode_forward(encoder);
            gradients.encode_loss(encoder);
        };
        crate::gpu::profile::profile_layers(self.ctx, prelude, gradients.dispatches())
    }

    /// The backward pass's dispatches (after the loss's), for a caller's profile.
    pub(crate) fn backward_dispatches(&self) -> Result<&[Dispatch]> {
        Ok(self.gradients_or_err()?.dispatches())
    }

    /// Reads back layer `index`'s output (`[N, C, H, W]`, or `[N, features]`). Fails for an
    /// index past the last layer.
    pub fn read_layer(&self, index: usize) -> Result<Vec<f32>> {
        let layer = self.layer(index)?;
        if !self.readable[index] {
            return Err(Error::InvalidArgument(format!(
                "layer {}'s output shares its buffer with other tensors (the network keeps only \
                 what its backward pass reads), so it is not kept after the pass",
                layer.layer.name
            )));
        }
        let len = layer.batch * layer.output.len();
        self.ctx.read_values(&self.outputs[index], len, self.stored)
    }

    /// How the network stores its input, its layers' outputs and its conv and linear weights.
    pub fn stored_element(&self) -> Element {
        self.stored
    }

    /// Layer `index` of the plan, or an error naming the plan's length.
    fn layer(&self, index: usize) -> Result<&LayerPlan> {
        self.plan.get(index).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "no layer {index}: the network has {} layers",
                self.plan.len()
            ))
        })
    }

    /// Reads back the last layer's output: the logits.
    pub fn read_output(&self) -> Result<Vec<f32>> {
        self.read_layer(self.plan.len() - 1)
    }

    /// Reads back the gradient of the loss with respect to layer `index`'s output, after a
    /// backward pass (for the last layer and `l2_loss`: the logits themselves). Layers' output
    /// gradients share buffers by when they live; one whose buffer served another layer too
    /// is an error here, not stale data.
    pub fn read_output_gradient(&self, index: usize) -> Result<Vec<f32>> {
        let layer = self.layer(index)?;
        let gradients = self.gradients_or_err()?;
        let buffer = gradients.outputs[index].as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "layer {}'s output does not reach the loss: it has no gradient",
                layer.layer.name
            ))
        })?;
        if gradients.shared[index] {
            return Err(Error::InvalidArgument(format!(
                "layer {}'s output gradient shares its buffer with other layers' (they live at \
                 different times), so it is not kept after the pass",
                layer.layer.name
            )));
        }
        self.ctx.read_f32(buffer, layer.batch * layer.output.len())
    }

    /// Reads back the gradient of the loss with respect to the network's input (`[N, C, H, W]`),
    /// after a backward pass of a network built to compute it
    /// ([`GpuNetwork::with_input_gradient`]).
    pub fn read_input_gradient(&self) -> Result<Vec<f32>> {
        let buffer = self.input_gradient_buffer().ok_or_else(|| {
            Error::InvalidArgument("this network was built without its input's gradient".into())
        })?;
        self.ctx
            .read_f32(buffer, self.plan[0].batch * self.plan[0].input.len())
    }

    /// Reads back the parameter gradients of the last backward pass, named and shaped as in the
    /// weights file (PyTorch's layouts), in the network's order.
    pub fn read_gradients(&self) -> Result<Weights> {
        self.read_shaped_as_gradients(&self.gradients_or_err()?.params)
    }

    /// Reads back buffers shaped as the parameter gradients (the gradients, an optimiser's
    /// velocities), one set per parameterised layer (`None`: a layer without), in the weights
    /// file's names and layouts.
    pub(crate) fn read_shaped_as_gradients(&self, sets: &[Option<PackedGrads>]) -> Result<Weights> {
        let mut tensors = Vec::new();
        for (params, grads) in
            (self.params.iter().zip(sets)).filter_map(|(p, g)| Some((p, g.as_ref()?)))
        {
            let layer = &self.plan[params.layer];
            if let Packing::Norm = params.packing {
                // [2][channels]: the weight's gradient, then the bias's.
                let channels = layer.output.channels;
                let both = self.ctx.read_f32(&grads.weights[0], 2 * channels)?;
                for ((name, shape), data) in layer
                    .parameter_shapes()
                    .into_iter()
                    .zip(both.chunks(channels))
                {
                    tensors.push((
                        name,
                        Tensor {
                            shape,
                            data: data.to_vec(),
                        },
                    ));
                }
                continue;
            }
            let weights = (grads.weights.as_slice(), Element::F32);
            tensors.extend(self.read_param_pair(params, weights, &grads.bias)?);
        }
        Ok(Weights::from_tensors(tensors))
    }

    /// Every batch norm's running statistics (`[2][channels]`: mean, variance), in the
    /// network's order.
    pub(crate) fn read_running_statistics(&self) -> Result<Vec<Vec<f32>>> {
        let mut all = Vec::new();
        for params in self
            .params
            .iter()
            .filter(|p| matches!(p.packing, Packing::Norm))
        {
            let channels = self.plan[params.layer].output.channels;
            let buffer = self.ctx.read_f32(&params.weights[0], 4 * channels)?;
            all.push(buffer[2 * channels..].to_vec());
        }
        Ok(all)
    }

    /// Overwrites every batch norm's running statistics with `statistics` (as
    /// [`GpuNetwork::read_running_statistics`] reads them), leaving its weight and bias: a
    /// data-parallel replica taking replica 0's, as DDP broadcasts its buffers.
    pub(crate) fn write_running_statistics(&self, statistics: &[Vec<f32>]) -> Result<()> {
        let norms = self
            .params
            .iter()
            .filter(|p| matches!(p.packing, Packing::Norm));
        for (params, values) in norms.zip(statistics) {
            let channels = self.plan[params.layer].output.channels;
            if values.len() != 2 * channels {
                return Err(Error::Internal(
                    "running statistics of another network".into(),
                ));
            }
            let offset = (2 * channels * 4) as u64;
            (self.ctx.queue()).write_buffer(
                &params.weights[0],
                offset,
                bytemuck::cast_slice(values),
            );
        }
        self.ctx.wait("running statistics upload")
    }

    /// Writes `values` (named and shaped as [`GpuNetwork::read_shaped_as_gradients`] reads
    /// them) into buffers shaped as the parameter gradients: an optimiser's velocities restored
    /// from a checkpoint. Packing is a permutation, so what was read comes back bit for bit.
    pub(crate) fn write_shaped_as_gradients(
        &self,
        sets: &[Option<PackedGrads>],
        values: &Weights,
    ) -> Result<()> {
        let queue = self.ctx.queue();
        for (params, grads) in
            (self.params.iter().zip(sets)).filter_map(|(p, g)| Some((p, g.as_ref()?)))
        {
            let layer = &self.plan[params.layer];
            let name = &layer.layer.name;
            if let Packing::Norm = params.packing {
                let mut both = values.tensor(name, "weight")?.to_vec();
                both.extend_from_slice(values.tensor(name, "bias")?);
                queue.write_buffer(&grads.weights[0], 0, bytemuck::cast_slice(&both));
                continue;
            }
            let packed = params.packing.pack(values.tensor(name, "weight")?);
            for (buffer, data) in grads.weights.iter().zip(&packed) {
                queue.write_buffer(buffer, 0, bytemuck::cast_slice(data));
            }
            if let Some(bias) = values.get(&format!("{name}.bias")) {
                queue.write_buffer(&grads.bias, 0, bytemuck::cast_slice(&bias.data));
            }
        }
        self.ctx.wait("restoring optimiser state")
    }

    /// Reads back the current weights (after training steps), in the weights file's layouts.
    pub fn read_weights(&self) -> Result<Weights> {
        let mut tensors = Vec::new();
        for params in &self.params {
            // The f32 master where the network trains an f16 copy.
            let weights = match params.master.is_empty() {
                true => (params.weights.as_slice(), self.stored),
                false => (params.master.as_slice(), Element::F32),
            };
            tensors.extend(self.read_param_pair(params, weights, &params.bias)?);
        }
        Ok(Weights::from_tensors(tensors))
    }

    /// One layer's parameters (or their gradients) read back in the weights file's names and
    /// layouts: the weight (stored as `element`), and the bias where the layer has one; for a
    /// batch norm, its weight and bias and the running statistics its `[4][channels]` buffer
    /// holds beside them.
    fn read_param_pair(
        &self,
        params: &PackedWeights,
        (weights, element): (&[wgpu::Buffer], Element),
        bias: &wgpu::Buffer,
    ) -> Result<Vec<(String, Tensor)>> {
        let layer = &self.plan[params.layer];
        let tensor =
            |(name, shape): (String, Vec<usize>), data: Vec<f32>| (name, Tensor { shape, data });
        if let Packing::Norm = params.packing {
            let channels = layer.output.channels;
            let stats = self.ctx.read_f32(&weights[0], 4 * channels)?;
            let shapes = layer
                .parameter_shapes()
                .into_iter()
                .chain(layer.buffer_shapes());
            return Ok(shapes
                .zip(stats.chunks(channels))
                .map(|(shape, data)| tensor(shape, data.to_vec()))
                .collect());
        }
        let mut shapes = layer.parameter_shapes().into_iter();
        let (Some(weight_shape), bias_shape) = (shapes.next(), shapes.next()) else {
            return Err(Error::Internal(format!(
                "layer {} holds parameters but has no weight",
                layer.layer.name
            )));
        };
        let lens = params.packing.buffer_lens();
        let packed = weights
            .iter()
            .zip(&lens)
            .map(|(buffer, &len)| self.ctx.read_values(buffer, len, element))
            .collect::<Result<Vec<_>>>()?;
        let weight = params
            .packing
            .unpack(&packed, weight_shape.1.iter().product());
        let mut tensors = vec![tensor(weight_shape, weight)];
        // A convolution without a bias (a batch norm follows it) adds a buffer of zeros on the
        // GPU, which is not one of its parameters.
        if let Some(bias_shape) = bias_shape {
            let data = self.ctx.read_f32(bias, bias_shape.1[0])?;
            tensors.push(tensor(bias_shape, data));
        }
        Ok(tensors)
    }
}

/// What a network built for training computes and keeps.
struct Training {
    output_gradient: OutputGradient,
    /// What the backward pass computes besides the output gradients.
    wanted: Wanted,
    keep: Keep,
}

/// Which layers' outputs must outlive the forward pass when keeping only what the backward
/// reads: the loss heads, the inputs of layers whose backward reads its input (convolutions,
/// fully connected layers, batch norms, LRN), the outputs of layers whose fused ReLU's backward
/// reads them. Max pooling reads its recorded maxima, additions, concatenations and average
/// pools read nothing.
fn read_by_backward(plan: &[LayerPlan], heads: &[usize]) -> Vec<bool> {
    let reaches = gradients::reaching_the_loss(plan, heads);
    let mut kept = vec![false; plan.len()];
    for &head in heads {
        kept[head] = true;
    }
    for (i, layer) in plan.iter().enumerate().filter(|&(i, _)| reaches[i]) {
        let (reads_input, reads_output) = match layer.layer.kind {
            LayerKind::Conv2d { relu, .. }
            | LayerKind::Linear { relu, .. }
            | LayerKind::BatchNorm { relu, .. } => (true, relu),
            LayerKind::Lrn { .. } => (true, false),
            LayerKind::Add { relu } => (false, relu),
            LayerKind::MaxPool { .. } | LayerKind::AdaptiveAvgPool { .. } | LayerKind::Concat => {
                (false, false)
            }
        };
        kept[i] |= reads_output;
        if reads_input {
            for (source, _) in &layer.sources {
                if let Source::Layer(j) = *source {
                    kept[j] = true;
                }
            }
        }
    }
    kept
}

/// Where a network's parameters come from.
#[derive(Clone, Copy)]
enum Parameters<'w, 'n, 'a> {
    /// Packed and uploaded into buffers of its own.
    Upload(&'w Weights),
    /// The buffers of this network, planned at another batch size (and, for training, its
    /// parameter gradient buffers).
    SharedWith(&'n GpuNetwork<'a>),
    /// This network's parameter buffers, with parameter gradient buffers of its own.
    SharedWithOwnGradients(&'n GpuNetwork<'a>),
}

/// Builds a network (for training, when `training` says what), GPU errors caught in a scope.
fn build<'a>(
    ctx: &'a GpuContext,
    plan: &[LayerPlan],
    parameters: Parameters<'_, '_, 'a>,
    training: Option<Training>,
) -> Result<GpuNetwork<'a>> {
    ctx.scoped("network setup", |_| {
        build_unscoped(ctx, plan, parameters, training)
    })?
}

/// Fails unless `plan` is `other`'s layer for layer, at any batch size.
fn check_same_network(plan: &[LayerPlan], other: &[LayerPlan]) -> Result<()> {
    let unbatched = |l: &LayerPlan| LayerPlan {
        batch: 0,
        ..l.clone()
    };
    let same = plan.len() == other.len()
        && plan
            .iter()
            .zip(other)
            .all(|(a, b)| unbatched(a) == unbatched(b));
    if same {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "a network sharing another's parameters must be the same network".into(),
        ))
    }
}

fn build_unscoped<'a>(
    ctx: &'a GpuContext,
    plan: &[LayerPlan],
    parameters: Parameters<'_, '_, 'a>,
    training: Option<Training>,
) -> Result<GpuNetwork<'a>> {
    crate::model::check_plan(plan)?;
    match parameters {
        Parameters::Upload(weights) => weights.check_against(plan)?,
        Parameters::SharedWith(other) | Parameters::SharedWithOwnGradients(other) => {
            check_same_network(plan, &other.plan)?
        }
    }
    let mut b = Builder::new(ctx);
    b.trains = training.is_some();
    b.stored = ctx.stored_element()?;
    // Mixed precision trains one network from its loss. Style transfer (which writes its
    // image into the input as f32), multi-device layouts and batches in parts keep f32.
    if let (Element::F16, Some(t)) = (b.stored, &training) {
        if !matches!(t.output_gradient, OutputGradient::Loss(_)) {
            return Err(Error::InvalidArgument(
                "--precision f16 trains one network on one device from its loss; style \
                 transfer and the two-device layout keep f32 activations and weights"
                    .into(),
            ));
        }
        if t.wanted.synced_batch_norms {
            return Err(Error::InvalidArgument(
                "--precision f16 trains a batch that fits one storage binding; a batch in parts \
                 or replicas keeps f32 (lower --batch, or use --precision f32)"
                    .into(),
            ));
        }
    }
    // Each output's gradient is f32 whatever the network stores.
    let value_bytes = match b.trains {
        true => Element::F32.bytes(),
        false => b.stored.bytes(),
    };
    let first = plan
        .first()
        .ok_or_else(|| Error::InvalidArgument("empty network".into()))?;
    let batch = first.batch;
    for layer in plan {
        let bytes = (batch * layer.output.len() * value_bytes) as u64;
        if bytes > b.max_binding {
            let per_image = (layer.output.len() * value_bytes) as u64;
            return Err(b.too_large(
                format!("batch {batch}"),
                match b.max_binding / per_image {
                    0 => format!(
                        "layer {}'s output for one image is {} MB, one storage binding holds at \
                         most {} MB; only a smaller input fits",
                        layer.layer.name,
                        per_image / 1_000_000,
                        b.max_binding / 1_000_000,
                    ),
                    fits => format!(
                        "layer {}'s output is {} MB, one storage binding holds at most {} MB; \
                         the largest batch that fits is {fits}",
                        layer.layer.name,
                        bytes / 1_000_000,
                        b.max_binding / 1_000_000,
                    ),
                },
            ));
        }
    }
    let input_len = batch * first.input.len();
    b.check_binding("the input batch", (input_len * value_bytes) as u64)?;
    let input = b.storage_of("input", input_len, b.stored, Purpose::Activations);

    // Which outputs outlive the forward pass; the others share the pool's buffers, each given
    // back after the last layer that reads it has run forward.
    let kept = match &training {
        Some(t) if t.keep == Keep::WhatBackwardReads => {
            read_by_backward(plan, &gradients::heads(&t.output_gradient, plan))
        }
        _ => vec![true; plan.len()],
    };
    let last_reader: Vec<usize> = (0..plan.len())
        .map(|j| {
            (plan.iter().enumerate())
                .filter(|(_, l)| l.sources.iter().any(|(s, _)| *s == Source::Layer(j)))
                .map(|(k, _)| k)
                .max()
                .unwrap_or(j)
        })
        .collect();
    let mut transient: Vec<Option<Pooled>> = (0..plan.len()).map(|_| None).collect();
    // Each transient output's lending of its buffer, to tell afterwards whether it survived.
    let mut lending: Vec<Option<u32>> = vec![None; plan.len()];
    let trains = training.is_some();

    let mut outputs: Vec<wgpu::Buffer> = Vec::with_capacity(plan.len());
    let mut argmax: Vec<Option<wgpu::Buffer>> = Vec::with_capacity(plan.len());
    let mut batch_stats: Vec<Option<wgpu::Buffer>> = Vec::with_capacity(plan.len());
    let mut params = Vec::new();
    let mut forward = Vec::new();
    let mut forward_syncs = Vec::new();
    let synced = training
        .as_ref()
        .is_some_and(|t| t.wanted.synced_batch_norms);
    for (index, layer) in plan.iter().enumerate() {
        let name = &layer.layer.name;
        let label = format!("{name} output");
        let len = batch * layer.output.len();
        let output = if kept[index] {
            b.storage_of(&label, len, b.stored, Purpose::Activations)
        } else {
            let pooled = b.take(&label, len, b.stored, Purpose::Activations);
            let buffer = pooled.buffer().clone();
            lending[index] = Some(pooled.generation());
            transient[index] = Some(pooled);
            buffer
        };
        let sources = ops::source_buffers(layer, &input, &outputs);
        let layer_params = match parameters {
            Parameters::Upload(weights) => packing::upload(&mut b, index, layer, weights)?,
            Parameters::SharedWith(other) | Parameters::SharedWithOwnGradients(other) => {
                other.params.iter().find(|p| p.layer == index).cloned()
            }
        };
        // Training records where each pooling window's maximum lies, for the backward pass.
        let maxima = (trains && matches!(layer.layer.kind, LayerKind::MaxPool { .. })).then(|| {
            let len = batch * layer.output.len();
            b.storage(&format!("{name} argmax"), len, Purpose::Activations)
        });
        // Training normalises by the batch's statistics, kept for the backward pass.
        let statistics =
            (trains && matches!(layer.layer.kind, LayerKind::BatchNorm { .. })).then(|| {
                let len = 4 * layer.output.channels;
                b.storage(
                    &format!("{name} batch statistics"),
                    len,
                    Purpose::Activations,
                )
            });
        let saved = Saved {
            argmax: maxima.as_ref(),
            batch_stats: statistics.as_ref(),
            synced: synced && statistics.is_some(),
        };
        let first = forward.len();
        forward.extend(forward_dispatches(
            &mut b,
            layer,
            layer_params.as_ref(),
            &sources,
            &output,
            saved,
        )?);
        if let (true, Some(statistics)) = (saved.synced, &statistics) {
            forward_syncs.push(BatchNormSync {
                dispatches: first + 1,
                layer: index,
                buffer: statistics.clone(),
            });
        }
        params.extend(layer_params);
        outputs.push(output);
        argmax.push(maxima);
        batch_stats.push(statistics);
        // This layer's scratch (a padded input, partial sums) serves the next layers, and so do
        // the transient outputs it was the last to read.
        b.end_step();
        for j in 0..=index {
            if last_reader[j] == index {
                if let Some(pooled) = transient[j].take() {
                    b.give_back(pooled);
                }
            }
        }
    }
    let shared_grads = match parameters {
        Parameters::SharedWith(other) if trains => Some(
            other
                .gradients
                .as_ref()
                .filter(|g| g.params.iter().all(Option::is_some))
                .map(|g| g.params.as_slice())
                .ok_or_else(|| {
                    Error::InvalidArgument(
                        "the network shared computes no gradients of some parameters".into(),
                    )
                })?,
        ),
        _ => None,
    };
    let gradients = match training {
        Some(Training {
            output_gradient,
            wanted,
            ..
        }) => Some(Box::new(gradients::build(
            &mut b,
            plan,
            ForwardBuffers {
                input: &input,
                outputs: &outputs,
                argmax: &argmax,
                batch_stats: &batch_stats,
            },
            &params,
            shared_grads,
            output_gradient,
            wanted,
        )?)),
        None => None,
    };
    // An output whose buffer served another tensor too holds the last one's after a pass.
    let readable = (outputs.iter().zip(&lending))
        .map(|(o, lent)| lent.is_none_or(|g| b.still_holds(o, g)))
        .collect();
    Ok(GpuNetwork {
        ctx,
        stored: b.stored,
        readable,
        plan: plan.to_vec(),
        input,
        outputs,
        params,
        forward,
        forward_syncs,
        gradients,
        memory: b.memory,
        folded_launches: b.folded_launches,
        choices: b.choices,
        linear_choices: b.linear_choices,
    })
}

/// What a training forward pass keeps for the backward pass: a max pool's window maxima
/// positions, a batch norm's batch statistics (which it then normalises by). Both `None` at
/// inference.
#[derive(Clone, Copy)]
struct Saved<'s> {
    argmax: Option<&'s wgpu::Buffer>,
    batch_stats: Option<&'s wgpu::Buffer>,
    /// A batch norm synchronised across data-parallel replicas.
    synced: bool,
}

/// The dispatches of one layer's forward pass.
fn forward_dispatches(
    b: &mut Builder,
    layer: &LayerPlan,
    params: Option<&PackedWeights>,
    inputs: &[&wgpu::Buffer],
    output: &wgpu::Buffer,
    saved: Saved,
) -> Result<Vec<Dispatch>> {
    let &input = inputs
        .first()
        .ok_or_else(|| Error::Internal(format!("layer {} reads no tensor", layer.layer.name)))?;
    match (&layer.layer.kind, params) {
        (LayerKind::Conv2d { .. }, Some(p)) => conv::forward(b, layer, p, input, output),
        (LayerKind::Linear { .. }, Some(p)) => linear::forward(b, layer, p, input, output),
        (LayerKind::Lrn { .. }, None) => lrn::forward(b, layer, input, output),
        (LayerKind::MaxPool { .. }, None) => {
            pool::max_forward(b, layer, input, output, saved.argmax)
        }
        (LayerKind::BatchNorm { .. }, Some(p)) => match saved.batch_stats {
            Some(stats) => {
                norm::training_forward(b, layer, p, (input, output), stats, saved.synced)
            }
            None => norm::forward(b, layer, &p.weights[0], input, output),
        },
        (LayerKind::Add { relu }, None) => {
            elementwise::add_forward(b, layer, *relu, inputs, output)
        }
        (LayerKind::AdaptiveAvgPool { .. }, None) => {
            pool::adaptive_avg_forward(b, layer, input, output)
        }
        (LayerKind::Concat, None) => elementwise::concat_forward(b, layer, inputs, output),
        _ => Err(Error::Internal(format!(
            "layer {}: parameters exist exactly for conv, linear and batch norm layers",
            layer.layer.name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{AdapterChoice, TwoDeviceNetwork};
    use crate::model::{small_test_network, Towers};

    /// The default adapter. Without one these tests fail; CONVNET_SKIP_GPU_TESTS=1 marks them
    /// ignored at build time (build.rs), as every GPU test.
    fn context() -> GpuContext {
        GpuContext::new(&AdapterChoice::default())
            .expect("a GPU adapter; set CONVNET_SKIP_GPU_TESTS=1 to skip the GPU tests")
    }

    fn invalid<T>(result: Result<T>) -> String {
        match result {
            Err(err @ Error::InvalidArgument(_)) => err.to_string(),
            Err(err) => panic!("not an invalid argument: {err}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    #[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
    fn a_network_refuses_weights_that_do_not_fit_and_layers_past_its_end() {
        let ctx = context();
        let network = small_test_network(4, 3);
        let plan = network.plan(2).unwrap();
        let weights = Weights::init(&network, 1).unwrap();
        let other = Weights::init(&small_test_network(2, 3), 1).unwrap();
        assert!(invalid(GpuNetwork::new(&ctx, &plan, &other)).contains("conv1.weight"));
        invalid(GpuNetwork::new(&ctx, &[], &weights));
        let mut hand_made = plan.clone();
        hand_made[0].sources[0].0 = Source::Layer(1);
        invalid(GpuNetwork::new(&ctx, &hand_made, &weights));

        let net = GpuNetwork::with_gradients(&ctx, &plan, &weights).unwrap();
        assert_eq!(net.read_layer(1).unwrap().len(), 2 * 3);
        assert!(invalid(net.read_layer(2)).contains("no layer 2"));
        invalid(net.read_output_gradient(usize::MAX));
    }

    #[test]
    #[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
    fn a_two_device_network_refuses_a_bad_layout_and_layers_past_its_end() {
        let ctx = context();
        let network = small_test_network(4, 3);
        let weights = Weights::init(&network, 1).unwrap();
        let two = TwoDeviceNetwork::new([&ctx, &ctx], &network, 2, &weights).unwrap();
        assert_eq!(two.read_layer(0).unwrap().len(), 2 * 4 * 9);
        assert!(invalid(two.read_layer(2)).contains("no layer 2"));
        let mut unordered = network;
        unordered.towers = Some(Towers {
            exchange_before: vec![1, 0],
            unsplit_from: 1,
        });
        invalid(TwoDeviceNetwork::new([&ctx, &ctx], &unordered, 2, &weights));
    }

    #[test]
    #[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
    fn f16_storage_refuses_style_transfer_and_the_two_device_layout() {
        let variants = crate::gpu::Variants {
            precision: crate::gpu::Precision::F16,
            ..Default::default()
        };
        let ctx = context().with_variants(variants);
        let network = small_test_network(4, 3);
        let plan = network.plan(2).unwrap();
        let weights = Weights::init(&network, 1).unwrap();
        // Without shader-f16 the adapter refuses first; either line names the flag.
        let style = invalid(GpuNetwork::for_input_gradient(&ctx, &plan, &weights, &[0]));
        assert!(style.contains("--precision f16"), "{style}");
        let two = invalid(TwoDeviceNetwork::new([&ctx, &ctx], &network, 2, &weights));
        assert!(two.contains("--precision f16"), "{two}");
    }
}
