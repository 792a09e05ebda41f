//! Style transfer on the GPU (the objective: [`crate::style`]): VGG's features of the image,
//! the content and style losses and their gradients, the backward pass down to the image, and
//! the optimiser's step, in one command buffer per step (two for L-BFGS, which reads back one
//! flag between them: see `gpu::lbfgs`). Only the loss terms come back to the host each step (a
//! few floats, through a staging buffer made once); the image when asked.
//!
//! A step records: the network's forward pass; per content layer, the squared difference to the
//! content image's features (written as that layer's output gradient, and summed into its loss);
//! per style layer, the Gram matrix `F F^T`, its squared difference to the style image's, and
//! `D F` added into the layer's output gradient; the network's backward pass to its input; the
//! image's gradient (through the normalisation, plus total variation's); Adam.

use std::cell::Cell;

use crate::error::{Error, Result};
use crate::gpu::builder::{Builder, MemoryUse, Purpose};
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{encode_pass, Dispatch};
use crate::gpu::lbfgs::{Lbfgs, LbfgsBuffers};
use crate::gpu::network::GpuNetwork;
use crate::gpu::ops::style::{self as ops, AdamBuffers};
use crate::gpu::profile::{profile, profile_layers, Profile};
use crate::model::{Dims, LayerPlan};
use crate::style::{normalize, LossTerms, Objective, IMAGENET_MEAN, IMAGENET_STD};
use crate::weights::Weights;

pub use crate::gpu::lbfgs::LbfgsConfig;
pub use crate::gpu::ops::style::AdamConfig;

/// How the image is optimised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// `torch.optim.Adam`.
    Adam(AdamConfig),
    /// `torch.optim.LBFGS` without line search (Gatys et al.'s choice).
    Lbfgs(LbfgsConfig),
}

/// An optimiser's state on the GPU.
enum OptimizerState {
    Adam {
        config: AdamConfig,
        /// `[lr / (1 - beta1^t), sqrt(1 - beta2^t)]`, written before each step.
        step_scales: wgpu::Buffer,
        update: Dispatch,
    },
    Lbfgs(Lbfgs),
}

/// Which term a loss slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Term {
    Content,
    Style,
    TotalVariation,
}

/// The images a style transfer starts from, each `[3][H][W]` in [0, 1].
pub struct StyleImages<'i> {
    /// The content image, at the size of the plan the image is optimised at.
    pub content: &'i [f32],
    /// The style image, at the size of the style plan.
    pub style: &'i [f32],
    /// The image the optimisation starts from (the content image, or noise), at the content
    /// image's size.
    pub initial: &'i [f32],
}

/// A style transfer resident on one device: the feature network, the targets computed from the
/// content and style images, the image being optimised and its optimiser's state.
pub struct StyleTransfer<'a> {
    ctx: &'a GpuContext,
    net: GpuNetwork<'a>,
    dims: Dims,
    image: wgpu::Buffer,
    image_grad: wgpu::Buffer,
    losses: wgpu::Buffer,
    losses_staging: wgpu::Buffer,
    slots: Vec<Term>,
    objective: Vec<Dispatch>,
    /// The image's gradient and total variation's sum.
    image_gradient: Vec<Dispatch>,
    optimizer: OptimizerState,
    steps_taken: Cell<u32>,
    memory: MemoryUse,
}

impl<'a> StyleTransfer<'a> {
    /// Uploads the feature network (`plan`: VGG's features at the content image's size;
    /// `style_plan`: the same layers at the style image's), computes the content features and
    /// the style Gram matrices on the GPU, and records every dispatch of a step. Fails for an
    /// image that is not its plan's `[3][H][W]`, or layers the plans lack.
    pub fn new(
        ctx: &'a GpuContext,
        (plan, style_plan): (&[LayerPlan], &[LayerPlan]),
        weights: &Weights,
        objective: &Objective,
        images: &StyleImages,
        optimizer: Optimizer,
    ) -> Result<Self> {
        let dims = plan
            .first()
            .ok_or_else(|| Error::InvalidArgument("empty feature network".into()))?
            .input;
        let style_dims = style_plan
            .first()
            .ok_or_else(|| Error::InvalidArgument("empty feature network".into()))?
            .input;
        for (what, image, d) in [
            ("content image", images.content, dims),
            ("initial image", images.initial, dims),
            ("style image", images.style, style_dims),
        ] {
            if d.channels != 3 || image.len() != d.len() {
                return Err(Error::InvalidArgument(format!(
                    "the {what} holds {} values, not 3 x {} x {}",
                    image.len(),
                    d.height,
                    d.width
                )));
            }
        }
        let (content_layers, style_layers) = objective.layer_indices(plan)?;
        let (_, style_layers_there) = objective.layer_indices(style_plan)?;
        let mut heads: Vec<usize> = content_layers
            .iter()
            .chain(&style_layers)
            .copied()
            .collect();
        heads.sort_unstable();
        heads.dedup();
        let net = GpuNetwork::for_input_gradient(ctx, plan, weights, &heads)?;

        // The targets: the content image's features, the style image's Gram matrices (F F^T,
        // each divided by its C H W in the loss).
        let (content_targets, style_targets, target_memory) = ctx
            .scoped("style targets", |_| {
                targets(ctx, &net, (style_plan, weights), objective, images)
            })??;

        ctx.scoped("style transfer setup", |_| -> Result<Self> {
            let mut b = Builder::new(ctx);
            let normalization: Vec<f32> =
                IMAGENET_MEAN.iter().chain(&IMAGENET_STD).copied().collect();
            let normalization = b.weights("normalization", &normalization);
            let image = b.storage("image", dims.len(), Purpose::Activations);
            ctx.queue()
                .write_buffer(&image, 0, bytemuck::cast_slice(images.initial));
            net.upload_input(&normalize(images.initial))?;
            let image_grad = b.storage("image gradient", dims.len(), Purpose::Gradients);

            let mut slots = Vec::new();
            let mut objective_dispatches = Vec::new();
            let slot_count = content_layers.len() + style_layers.len() + 1;
            let losses = b.storage("losses", slot_count, Purpose::Scratch);
            let mut written = vec![false; plan.len()];
            for (&i, target) in content_layers.iter().zip(&content_targets) {
                let layer = &plan[i];
                let len = layer.output.len();
                let label = format!("{} content loss", layer.layer.name);
                let weight = objective.content_weight / len as f32;
                let reduction = ops::squared_difference(
                    &mut b,
                    &label,
                    len,
                    (net.output_buffer(i)?, 1.0),
                    (target, 1.0),
                    (net.output_gradient_buffer(i)?, 2.0 * weight),
                )?;
                let sum =
                    ops::sum_to_loss(&mut b, &label, &reduction, (&losses, slots.len()), weight)?;
                objective_dispatches.extend([reduction.dispatch, sum]);
                slots.push(Term::Content);
                written[i] = true;
            }
            for ((&i, &there), target) in style_layers
                .iter()
                .zip(&style_layers_there)
                .zip(&style_targets)
            {
                let layer = &plan[i];
                let channels = layer.output.channels;
                let plane = layer.output.height * layer.output.width;
                let style_len = style_plan[there].output.len();
                let label = format!("{} style loss", layer.layer.name);
                let gram = b.storage(
                    &format!("{label} gram"),
                    channels * channels,
                    Purpose::Scratch,
                );
                let difference = b.storage(
                    &format!("{label} difference"),
                    channels * channels,
                    Purpose::Scratch,
                );
                let features = net.output_buffer(i)?;
                objective_dispatches.push(ops::gram(
                    &mut b,
                    &label,
                    features,
                    (channels, plane),
                    &gram,
                )?);
                let n = layer.output.len() as f32;
                let c2 = (channels * channels) as f32;
                let weight = objective.style_weight / c2;
                let reduction = ops::squared_difference(
                    &mut b,
                    &label,
                    channels * channels,
                    (&gram, 1.0 / n),
                    (target, 1.0 / style_len as f32),
                    (&difference, 4.0 * weight / n),
                )?;
                let sum =
                    ops::sum_to_loss(&mut b, &label, &reduction, (&losses, slots.len()), weight)?;
                objective_dispatches.extend([reduction.dispatch, sum]);
                objective_dispatches.push(ops::gram_backward(
                    &mut b,
                    &format!("{label} gradient"),
                    (&difference, features),
                    (channels, plane),
                    (net.output_gradient_buffer(i)?, written[i]),
                )?);
                slots.push(Term::Style);
                written[i] = true;
            }
            let input_grad = net.input_gradient_buffer().ok_or_else(|| {
                Error::Internal("the feature network computes no input gradient".into())
            })?;
            let label = "image gradient";
            let tv = ops::image_gradient(
                &mut b,
                label,
                (dims, objective.tv_weight),
                (&image, &normalization, input_grad),
                &image_grad,
            )?;
            let tv_sum = ops::sum_to_loss(
                &mut b,
                "total variation",
                &tv,
                (&losses, slots.len()),
                objective.tv_weight,
            )?;
            slots.push(Term::TotalVariation);
            let optimizer = match optimizer {
                Optimizer::Adam(config) => {
                    let step_scales = b.storage("adam step scales", 2, Purpose::Scratch);
                    let moments = b.storage("adam moments", 2 * dims.len(), Purpose::Scratch);
                    let buffers = AdamBuffers {
                        grad: &image_grad,
                        step_scales: &step_scales,
                        normalization: &normalization,
                        moments: &moments,
                        image: &image,
                        input: net.input_buffer(),
                    };
                    OptimizerState::Adam {
                        config,
                        update: ops::adam(&mut b, "adam", dims, config, &buffers)?,
                        step_scales,
                    }
                }
                Optimizer::Lbfgs(config) => {
                    let buffers = LbfgsBuffers {
                        grad: &image_grad,
                        normalization: &normalization,
                        image: &image,
                        input: net.input_buffer(),
                    };
                    OptimizerState::Lbfgs(Lbfgs::new(&mut b, dims, config, &buffers)?)
                }
            };
            let mut memory = b.memory;
            memory += net.memory();
            memory.scratch += target_memory;
            // The loss terms, then L-BFGS's curvature flag.
            let losses_staging = ctx.staging_buffer("losses readback", slot_count + 1);
            Ok(StyleTransfer {
                ctx,
                net,
                dims,
                image,
                image_grad,
                losses,
                losses_staging,
                slots,
                objective: objective_dispatches,
                image_gradient: vec![tv.dispatch, tv_sum],
                optimizer,
                steps_taken: Cell::new(0),
                memory,
            })
        })?
    }

    /// GPU memory held, by purpose (the targets count as scratch).
    pub fn memory(&self) -> MemoryUse {
        self.memory
    }

    /// The plan the image is optimised through.
    pub fn plan(&self) -> &[LayerPlan] {
        self.net.plan()
    }

    /// Optimiser steps taken so far.
    pub fn steps_taken(&self) -> u32 {
        self.steps_taken.get()
    }

    /// The loss terms at the current image, and its gradient (read with
    /// [`StyleTransfer::read_image_gradient`]); the image is not changed.
    pub fn evaluate(&self) -> Result<LossTerms> {
        Ok(self.submit(&[])?.0)
    }

    /// One optimiser step: the loss terms at the image before the step (as PyTorch reports
    /// them), then the image updated, clamped to [0, 1].
    pub fn step(&self) -> Result<LossTerms> {
        let t = self.steps_taken.get() + 1;
        let terms = match &self.optimizer {
            OptimizerState::Adam {
                config,
                step_scales,
                update,
            } => {
                let (beta1, beta2) = (f64::from(config.beta1), f64::from(config.beta2));
                let scales = [
                    (f64::from(config.learning_rate) / (1.0 - beta1.powi(t as i32))) as f32,
                    (1.0 - beta2.powi(t as i32)).sqrt() as f32,
                ];
                self.ctx
                    .queue()
                    .write_buffer(step_scales, 0, bytemuck::cast_slice(&scales));
                self.submit(std::slice::from_ref(update))?.0
            }
            OptimizerState::Lbfgs(lbfgs) => {
                let first = t == 1;
                let (terms, accepted) = self.submit(lbfgs.after_evaluation(first))?;
                self.net.run("l-bfgs step", |encoder| {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("l-bfgs direction"),
                        timestamp_writes: None,
                    });
                    lbfgs.encode_direction_and_update(&mut pass, first, accepted);
                    Ok(())
                })?;
                lbfgs.commit(first, accepted);
                terms
            }
        };
        self.steps_taken.set(t);
        Ok(terms)
    }

    /// Records and runs one evaluation of the loss and the image's gradient, then `after`,
    /// and reads back the loss terms (and L-BFGS's curvature flag).
    fn submit(&self, after: &[Dispatch]) -> Result<(LossTerms, bool)> {
        let mut encoder =
            self.ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("style transfer step"),
                });
        self.net.encode_forward(&mut encoder);
        encode_pass(&mut encoder, "style and content losses", &self.objective);
        self.net.encode_backward(&mut encoder)?;
        encode_pass(&mut encoder, "image gradient", &self.image_gradient);
        if !after.is_empty() {
            encode_pass(&mut encoder, "optimizer", after);
        }
        let size = self.losses.size();
        encoder.copy_buffer_to_buffer(&self.losses, 0, &self.losses_staging, 0, size);
        if let OptimizerState::Lbfgs(lbfgs) = &self.optimizer {
            lbfgs.encode_flag_copy(&mut encoder, &self.losses_staging, size);
        }
        self.ctx.queue().submit([encoder.finish()]);
        self.ctx.wait("style transfer step")?;
        let values = self
            .ctx
            .read_staging(&self.losses_staging, self.slots.len() + 1)?;
        let mut terms = LossTerms::default();
        for (term, &value) in self.slots.iter().zip(&values) {
            let value = f64::from(value);
            match term {
                Term::Content => terms.content += value,
                Term::Style => terms.style += value,
                Term::TotalVariation => terms.tv += value,
            }
        }
        Ok((terms, values[self.slots.len()] == 1.0))
    }

    /// Times one step phase by phase, layer by layer within each (see
    /// [`Profile`](crate::gpu::Profile)); each phase runs after the untimed phases before it.
    pub fn profile(&self) -> Result<StyleProfile> {
        let net = &self.net;
        let backward_dispatches = net.backward_dispatches()?;
        let objective = |encoder: &mut wgpu::CommandEncoder| {
            net.encode_forward(encoder);
            encode_pass(encoder, "losses", &self.objective);
        };
        let backward = |encoder: &mut wgpu::CommandEncoder| {
            objective(encoder);
            encode_pass(encoder, "backward", backward_dispatches);
        };
        let image_gradient = |encoder: &mut wgpu::CommandEncoder| {
            backward(encoder);
            encode_pass(encoder, "image gradient", &self.image_gradient);
        };
        let optimizer = match &self.optimizer {
            // Each run of the update moves the image: run once, not split by kernel.
            OptimizerState::Adam { update, .. } => Some(profile_layers(
                self.ctx,
                image_gradient,
                std::slice::from_ref(update),
            )?),
            OptimizerState::Lbfgs(_) => None,
        };
        Ok(StyleProfile {
            forward: net.profile_forward()?,
            losses: profile(self.ctx, |e| net.encode_forward(e), &self.objective)?,
            backward: profile(self.ctx, objective, backward_dispatches)?,
            image: profile(self.ctx, backward, &self.image_gradient)?,
            optimizer,
        })
    }

    /// The image as it stands, `[3][H][W]` in [0, 1].
    pub fn read_image(&self) -> Result<Vec<f32>> {
        self.ctx.read_f32(&self.image, self.dims.len())
    }

    /// The loss's gradient with respect to the image at the last evaluation or step (before
    /// its update).
    pub fn read_image_gradient(&self) -> Result<Vec<f32>> {
        self.ctx.read_f32(&self.image_grad, self.dims.len())
    }
}

/// Where a style transfer step's time goes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StyleProfile {
    /// VGG's forward pass, by layer.
    pub forward: Profile,
    /// The content and style losses (Gram matrices, differences, their gradients), by layer.
    pub losses: Profile,
    /// The backward pass to the image, by layer.
    pub backward: Profile,
    /// The image's gradient (with total variation).
    pub image: Profile,
    /// Adam's update (`None` for L-BFGS, whose dispatches a step orders by its history: its
    /// cost is the step's time less the phases above).
    pub optimizer: Option<Profile>,
}

/// The content layers' features of the content image and the style layers' Gram matrices of
/// the style image (through a network planned at its size when that differs), and the bytes
/// they hold.
fn targets(
    ctx: &GpuContext,
    net: &GpuNetwork,
    (style_plan, weights): (&[LayerPlan], &Weights),
    objective: &Objective,
    images: &StyleImages,
) -> Result<(Vec<wgpu::Buffer>, Vec<wgpu::Buffer>, u64)> {
    let plan = net.plan();
    let mut b = Builder::new(ctx);
    let (content_layers, _) = objective.layer_indices(plan)?;
    net.upload_input(&normalize(images.content))?;
    net.forward()?;
    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("content targets"),
        });
    let mut content = Vec::new();
    for &i in &content_layers {
        let len = plan[i].output.len();
        let label = format!("{} content target", plan[i].layer.name);
        let target = b.storage(&label, len, Purpose::Scratch);
        encoder.copy_buffer_to_buffer(net.output_buffer(i)?, 0, &target, 0, (len * 4) as u64);
        content.push(target);
    }
    ctx.queue().submit([encoder.finish()]);
    ctx.wait("content targets")?;

    let same_size = style_plan[0].input == plan[0].input;
    let separate;
    let style_net = if same_size {
        net
    } else {
        separate = GpuNetwork::new(ctx, style_plan, weights)?;
        &separate
    };
    let (_, style_layers) = objective.layer_indices(style_plan)?;
    style_net.upload_input(&normalize(images.style))?;
    let mut dispatches = Vec::new();
    let mut style = Vec::new();
    for &i in &style_layers {
        let layer = &style_plan[i];
        let channels = layer.output.channels;
        let label = format!("{} style target", layer.layer.name);
        let gram = b.storage(&label, channels * channels, Purpose::Scratch);
        let plane = layer.output.height * layer.output.width;
        dispatches.push(ops::gram(
            &mut b,
            &label,
            style_net.output_buffer(i)?,
            (channels, plane),
            &gram,
        )?);
        style.push(gram);
    }
    style_net.run("style targets", |encoder| {
        style_net.encode_forward(encoder);
        encode_pass(encoder, "style targets", &dispatches);
        Ok(())
    })?;
    Ok((content, style, b.memory.scratch))
}
