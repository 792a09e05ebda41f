//! Training a classifier on a labelled data set (`convnet train --epochs`): epochs over a
//! shuffled order, SGD with momentum and weight decay on the GPU, a held-out set scored after
//! every epoch, checkpoints a run resumes from bit for bit (docs/training.md).
//!
//! Three networks share one set of parameter buffers: the training network at the batch size,
//! one at the size of the epoch's last, smaller batch (its gradients land in the same buffers,
//! so the one optimiser serves both, and batch norm's statistics are over the images that batch
//! really holds, as PyTorch's), and an inference network scoring the held-out set by the
//! running statistics.
//!
//! Each step is one submission: forward, backward, update, and a copy of the per-image losses
//! and the logits into one of two staging buffers. The host uploads the next batch and submits
//! it before it reads the previous step's losses, so the GPU always has the next step queued
//! while the host gathers images and reads losses.

pub mod checkpoint;
pub mod data;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuNetwork, Keep, PixelDecoder, PixelFormat, Sgd, SgdConfig};
use crate::model::{LayerPlan, Loss, LossKind, Network};
use crate::weights::Weights;
use checkpoint::{Checkpoint, EpochRecord, Progress, Scores, Settings};
use data::LabelledImages;

/// How the learning rate changes from epoch to epoch (PyTorch's schedulers, stepped once per
/// epoch).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// `StepLR`: the rate times `gamma` every `every` epochs.
    Step {
        /// Epochs between two reductions.
        every: usize,
        /// The factor of each reduction.
        gamma: f32,
    },
    /// `CosineAnnealingLR` over the run's epochs down to 0, in its closed form:
    /// `base * (1 + cos(pi * epoch / epochs)) / 2`.
    Cosine,
}

impl Schedule {
    /// The rate of epoch `epoch` (from 0) of `epochs`.
    pub fn rate(&self, base: f32, epoch: usize, epochs: usize) -> f32 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => base * gamma.powi((epoch / every) as i32),
            Schedule::Cosine => {
                let t = epoch as f64 / epochs.max(1) as f64;
                (f64::from(base) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0) as f32
            }
        }
    }
}

impl FromStr for Schedule {
    type Err = Error;

    /// `constant`, `step:N:G` (times G every N epochs) or `cosine`.
    fn from_str(text: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidArgument(format!(
                "--lr-schedule {text:?}: expected constant, cosine or step:N:G (N >= 1 epochs, \
                 G > 0)"
            ))
        };
        match text.split(':').collect::<Vec<_>>().as_slice() {
            ["constant"] => Ok(Schedule::Constant),
            ["cosine"] => Ok(Schedule::Cosine),
            ["step", every, gamma] => {
                let every: usize = every.parse().map_err(|_| bad())?;
                let gamma: f32 = gamma.parse().map_err(|_| bad())?;
                if every == 0 || !(gamma.is_finite() && gamma > 0.0) {
                    return Err(bad());
                }
                Ok(Schedule::Step { every, gamma })
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Constant => write!(f, "constant"),
            Schedule::Step { every, gamma } => write!(f, "step:{every}:{gamma}"),
            Schedule::Cosine => write!(f, "cosine"),
        }
    }
}

/// Steps in an epoch of `images` at `batch`: the last, smaller batch counted unless
/// `drop_last`.
pub fn steps_per_epoch(images: usize, batch: usize, drop_last: bool) -> usize {
    if drop_last {
        images / batch
    } else {
        images.div_ceil(batch)
    }
}

/// A network and how its batches reach its input: as f32 values written to it, or as 8-bit
/// pixels decoded into it on the GPU.
pub struct Fed<'a> {
    /// The network.
    pub net: GpuNetwork<'a>,
    /// Where the data set's pixels are 8-bit.
    pub decoder: Option<PixelDecoder>,
}

impl<'a> Fed<'a> {
    fn new(net: GpuNetwork<'a>, pixels: Option<&PixelFormat>) -> Result<Self> {
        let decoder = match pixels {
            Some(format) => {
                let first = &net.plan()[0];
                Some(PixelDecoder::new(
                    net.context(),
                    net.input_buffer(),
                    first.batch,
                    first.input,
                    format,
                )?)
            }
            None => None,
        };
        Ok(Fed { net, decoder })
    }

    /// Uploads a batch as the set stores it: 8-bit pixels to the decoder, f32 values to the
    /// network's input (`bytes` may hold fewer images than the batch: the rest keeps what it
    /// held).
    fn upload(&self, bytes: &[u8]) {
        let ctx = self.net.context();
        match &self.decoder {
            Some(decoder) => decoder.upload(ctx, bytes),
            None => ctx.queue().write_buffer(self.net.input_buffer(), 0, bytes),
        }
    }

    /// Records the forward pass, after the decoding of the pixels where they are 8-bit.
    fn encode_forward(&self, encoder: &mut wgpu::CommandEncoder) {
        if let Some(decoder) = &self.decoder {
            decoder.encode(encoder);
        }
        self.net.encode_forward(encoder);
    }
}

/// The networks of a run, over one set of parameter buffers.
pub struct Networks<'a> {
    /// At the batch size, trained with softmax cross-entropy (GoogLeNet's auxiliary heads
    /// weighted in).
    pub train: Fed<'a>,
    /// At the epoch's last, smaller batch, where it has one.
    pub last: Option<Fed<'a>>,
    /// At inference, for the held-out set, where there is one.
    pub eval: Option<Fed<'a>>,
}

impl<'a> Networks<'a> {
    /// Uploads `weights` once and plans the three networks: training at `batch` (at most the
    /// set's size), the last batch's where `training_images` does not divide into batches
    /// (and it is not dropped), the held-out set's at up to `batch` images where
    /// `held_out_images` > 0. With `pixels`, each gets a decoder of 8-bit pixels of that format.
    pub fn new(
        ctx: &'a GpuContext,
        network: &Network,
        weights: &Weights,
        batch: usize,
        (training_images, held_out_images): (usize, usize),
        drop_last: bool,
        pixels: Option<&PixelFormat>,
    ) -> Result<Self> {
        if batch == 0 || batch > training_images {
            return Err(Error::InvalidArgument(format!(
                "--batch must be 1 to the {training_images} training images, not {batch}"
            )));
        }
        let plan = network.plan(batch)?;
        let loss = Loss::with_aux_heads(LossKind::CrossEntropy, &plan);
        let train = GpuNetwork::training(ctx, &plan, weights, &loss, Keep::WhatBackwardReads)?;
        let remainder = training_images % batch;
        let last = match remainder {
            0 => None,
            _ if drop_last => None,
            n => Some(Fed::new(
                GpuNetwork::training_sharing(&train, &network.plan(n)?, Keep::WhatBackwardReads)?,
                pixels,
            )?),
        };
        let eval = match held_out_images {
            0 => None,
            n => Some(Fed::new(
                GpuNetwork::inference_sharing(&train, &network.plan(batch.min(n))?)?,
                pixels,
            )?),
        };
        let train = Fed::new(train, pixels)?;
        Ok(Networks { train, last, eval })
    }
}

/// One step's result.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct StepRecord {
    /// Steps before this one, over the run.
    pub global_step: usize,
    /// The epoch, from 0.
    pub epoch: usize,
    /// Steps before this one in its epoch.
    pub step: usize,
    /// Images in its batch.
    pub images: usize,
    /// The loss this step's backward pass differentiated (the mean over its images), before
    /// its update.
    pub loss: f64,
    /// Images whose label had the highest logit.
    pub correct: usize,
    /// The rate of its update.
    pub learning_rate: f32,
}

/// How an epoch ended.
#[derive(Clone, Debug, PartialEq)]
pub enum EpochEnd {
    /// Every step ran; the epoch's scores.
    Finished(EpochRecord),
    /// Stopped between steps when asked (Ctrl-C); the progress says where.
    Interrupted,
}

/// Where the time of an epoch's steps went, on the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct HostTimes {
    /// Gathering and uploading batches (overlapped with the GPU's previous step).
    pub input_seconds: f64,
    /// Waiting for the GPU to finish a step.
    pub wait_seconds: f64,
    /// The input time of the steps for which the host found the previous step already
    /// finished (it waited under 0.1 ms): an upper bound on the time the GPU sat idle for want
    /// of data.
    pub starved_seconds_at_most: f64,
}

/// A step submitted and not yet read back.
struct InFlight {
    slot: usize,
    submission: wgpu::SubmissionIndex,
    images: usize,
    step: usize,
    input_seconds: f64,
}

/// A training run: the optimiser over [`Networks`], its settings and progress, and the buffers
/// each step reuses.
pub struct Trainer<'n, 'a> {
    nets: &'n Networks<'a>,
    sgd: Sgd<'n, 'a>,
    settings: Settings,
    schedule: Schedule,
    /// How far the run has come.
    pub progress: Progress,
    /// Per step slot: the losses of each head, then the logits, for the host to read.
    staging: [wgpu::Buffer; 2],
    /// Per slot: the labels of the batch in that slot.
    labels: [Vec<usize>; 2],
    /// A batch's images as the set stores them.
    batch_bytes: Vec<u8>,
    readback: Vec<f32>,
    /// This epoch's host times so far.
    pub host: HostTimes,
}

impl<'n, 'a> Trainer<'n, 'a> {
    /// A run of `settings` over `nets`, from the start or, given a checkpoint, from where it
    /// stopped (its velocities restored; its weights are the ones `nets` was built from).
    pub fn new(
        nets: &'n Networks<'a>,
        settings: Settings,
        schedule: Schedule,
        resume: Option<&Checkpoint>,
    ) -> Result<Self> {
        let sgd = Sgd::new(
            &nets.train.net,
            SgdConfig {
                learning_rate: settings.learning_rate,
                momentum: settings.momentum,
                weight_decay: settings.weight_decay,
            },
        )?;
        let progress = match resume {
            Some(checkpoint) => {
                sgd.write_velocities(&checkpoint.velocities)?;
                checkpoint.progress.clone()
            }
            None => Progress::default(),
        };
        let plan = nets.train.net.plan();
        let batch = plan[0].batch;
        let per_step = readback_len(plan, batch);
        let ctx = nets.train.net.context();
        // Room for a batch of f32 values: any set's images fit.
        let batch_bytes = vec![0u8; batch * plan[0].input.len() * 4];
        Ok(Trainer {
            nets,
            sgd,
            schedule,
            progress,
            staging: [
                ctx.staging_buffer("step losses and logits 0", per_step),
                ctx.staging_buffer("step losses and logits 1", per_step),
            ],
            labels: [Vec::with_capacity(batch), Vec::with_capacity(batch)],
            batch_bytes,
            readback: vec![0.0; per_step],
            host: HostTimes::default(),
            settings,
        })
    }

    /// The run's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// True once every epoch has run.
    pub fn finished(&self) -> bool {
        self.progress.epoch >= self.settings.epochs
    }

    /// The learning rate of the current epoch.
    pub fn learning_rate(&self) -> f32 {
        (self.schedule).rate(
            self.settings.learning_rate,
            self.progress.epoch,
            self.settings.epochs,
        )
    }

    /// Runs the rest of the current epoch over `train` (from the step the progress says),
    /// calling `on_step` after each step's loss is read, then scores `held_out` where given.
    /// Returns early, between two steps, once `stop` is set. A loss that is not finite ends it
    /// with an error naming the step (the caller then keeps its last checkpoint).
    pub fn run_epoch(
        &mut self,
        train: &LabelledImages,
        held_out: Option<&LabelledImages>,
        stop: &AtomicBool,
        mut on_step: impl FnMut(&StepRecord),
    ) -> Result<EpochEnd> {
        let Settings {
            batch,
            seed,
            drop_last,
            ..
        } = self.settings;
        if train.len() != self.settings.training_images {
            return Err(Error::InvalidArgument(format!(
                "the run trains on {} images, not {}",
                self.settings.training_images,
                train.len()
            )));
        }
        let epoch = self.progress.epoch;
        let order = data::epoch_order(train.len(), seed, epoch);
        let steps = steps_per_epoch(train.len(), batch, drop_last);
        let learning_rate = self.learning_rate();
        self.sgd.set_learning_rate(learning_rate);
        self.host = HostTimes::default();
        let (mut loss_sum, mut correct, mut images) = (0.0f64, 0usize, 0usize);
        // Steps of this epoch already in the progress (a resumed run) count in its scores
        // only from here: a resumed epoch's training scores cover the steps it ran.
        let start = Instant::now();
        let mut in_flight: Option<InFlight> = None;
        let mut step = self.progress.step_in_epoch;
        while step < steps && !stop.load(Ordering::Relaxed) {
            let indices = &order[step * batch..((step + 1) * batch).min(train.len())];
            let slot = step % 2;
            let input_start = Instant::now();
            let fed = self.fed_for(indices.len())?;
            let bytes = &mut self.batch_bytes[..indices.len() * train.image_bytes()];
            train.gather(indices, bytes, &mut self.labels[slot])?;
            fed.upload(bytes);
            fed.net.upload_labels(&self.labels[slot])?;
            let input_seconds = input_start.elapsed().as_secs_f64();
            self.host.input_seconds += input_seconds;
            let submission = self.submit_step(fed, slot)?;
            let submitted = InFlight {
                slot,
                submission,
                images: indices.len(),
                step,
                input_seconds,
            };
            if let Some(previous) = in_flight.replace(submitted) {
                let record = self.finish_step(previous, learning_rate)?;
                (loss_sum, correct, images) = tally(record, loss_sum, correct, images);
                on_step(&record);
            }
            step += 1;
        }
        if let Some(last) = in_flight.take() {
            let record = self.finish_step(last, learning_rate)?;
            (loss_sum, correct, images) = tally(record, loss_sum, correct, images);
            on_step(&record);
        }
        let seconds = start.elapsed().as_secs_f64();
        if self.progress.step_in_epoch < steps {
            return Ok(EpochEnd::Interrupted);
        }
        let validation = match held_out {
            Some(set) => Some(self.evaluate(set)?),
            None => None,
        };
        let record = EpochRecord {
            epoch,
            learning_rate,
            train_loss: loss_sum / images.max(1) as f64,
            train_top1: correct as f64 / images.max(1) as f64,
            validation,
            seconds,
            images_per_s: images as f64 / seconds,
        };
        self.progress.history.push(record.clone());
        self.progress.epoch += 1;
        self.progress.step_in_epoch = 0;
        Ok(EpochEnd::Finished(record))
    }

    /// Scores `set` on the inference network (batch norms by their running statistics): the
    /// mean cross-entropy, top-1 and top-5. The last batch is padded with zeros, whose logits
    /// are not scored (at inference every image's logits are its own).
    pub fn evaluate(&mut self, set: &LabelledImages) -> Result<Scores> {
        let fed = (self.nets.eval.as_ref()).ok_or_else(|| {
            Error::InvalidArgument("the run was planned without a held-out set".into())
        })?;
        if set.dims() != self.nets.train.net.plan()[0].input {
            return Err(Error::InvalidArgument(
                "the held-out images are not the network's input size".into(),
            ));
        }
        let plan = fed.net.plan();
        let batch = plan[0].batch;
        let classes = plan
            .last()
            .expect("a planned network has layers")
            .output
            .len();
        let ctx = fed.net.context();
        let logits_buffer = fed.net.logits_buffer();
        let mut logits = vec![0.0f32; set.len() * classes];
        let mut labels = Vec::with_capacity(batch);
        let positions: Vec<usize> = (0..set.len()).collect();
        for (chunk, out) in positions
            .chunks(batch)
            .zip(logits.chunks_mut(batch * classes))
        {
            let bytes = &mut self.batch_bytes[..batch * set.image_bytes()];
            bytes.fill(0);
            set.gather(chunk, bytes, &mut labels)?;
            fed.upload(bytes);
            let mut encoder =
                ctx.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("held-out batch"),
                    });
            fed.encode_forward(&mut encoder);
            let copied = (out.len() * 4) as u64;
            encoder.copy_buffer_to_buffer(logits_buffer, 0, &self.staging[0], 0, copied);
            let submission = ctx.queue().submit([encoder.finish()]);
            ctx.read_staging_of(&self.staging[0], out, submission)?;
        }
        if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "the logits of held-out image {} are not finite",
                i / classes
            )));
        }
        let (loss, top1, top5) =
            crate::eval::classification_scores(&logits, set.labels(), classes)?;
        Ok(Scores { loss, top1, top5 })
    }

    /// The network for a batch of `images`: the training one, or the last batch's.
    fn fed_for(&self, images: usize) -> Result<&'n Fed<'a>> {
        if images == self.settings.batch {
            return Ok(&self.nets.train);
        }
        (self.nets.last.as_ref())
            .filter(|fed| fed.net.plan()[0].batch == images)
            .ok_or_else(|| {
                Error::Internal(format!("no network planned for a last batch of {images}"))
            })
    }

    /// Submits one step of `fed` (its batch uploaded): forward, backward, update, and the copy
    /// of its losses and logits into staging slot `slot`.
    fn submit_step(&self, fed: &Fed, slot: usize) -> Result<wgpu::SubmissionIndex> {
        let net = &fed.net;
        let ctx = net.context();
        let mut encoder = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("training step"),
            });
        fed.encode_forward(&mut encoder);
        net.encode_backward(&mut encoder)?;
        self.sgd.encode_update(&mut encoder);
        let staging = &self.staging[slot];
        let mut at = 0;
        for buffer in net.per_image_loss_buffers()? {
            encoder.copy_buffer_to_buffer(buffer, 0, staging, at, buffer.size());
            at += buffer.size();
        }
        let logits = net.logits_buffer();
        encoder.copy_buffer_to_buffer(logits, 0, staging, at, logits.size());
        Ok(ctx.queue().submit([encoder.finish()]))
    }

    /// Waits for a submitted step, reads its losses and logits, and advances the progress.
    fn finish_step(&mut self, step: InFlight, learning_rate: f32) -> Result<StepRecord> {
        let net = &self.fed_for(step.images)?.net;
        let plan = net.plan();
        let len = readback_len(plan, step.images);
        let wait_start = Instant::now();
        net.context().read_staging_of(
            &self.staging[step.slot],
            &mut self.readback[..len],
            step.submission,
        )?;
        let waited = wait_start.elapsed().as_secs_f64();
        self.host.wait_seconds += waited;
        if waited < 1e-4 {
            self.host.starved_seconds_at_most += step.input_seconds;
        }
        let n = step.images;
        let loss_heads = &net.loss().expect("a training network has a loss").heads;
        let mut loss = 0.0;
        for (k, &(_, weight)) in loss_heads.iter().enumerate() {
            let losses = &self.readback[k * n..(k + 1) * n];
            loss +=
                f64::from(weight) * losses.iter().map(|&l| f64::from(l)).sum::<f64>() / n as f64;
        }
        let classes = plan
            .last()
            .expect("a planned network has layers")
            .output
            .len();
        let logits = &self.readback[loss_heads.len() * n..][..n * classes];
        let labels = &self.labels[step.slot];
        let correct = (logits.chunks_exact(classes).zip(labels))
            .filter(|(row, &label)| !row.iter().any(|&v| v > row[label]))
            .count();
        let record = StepRecord {
            global_step: self.progress.global_step,
            epoch: self.progress.epoch,
            step: step.step,
            images: n,
            loss,
            correct,
            learning_rate,
        };
        if !loss.is_finite() {
            // The next step was queued before this one's loss was read: what is read back now
            // is the state after it, whose update spread the non-finite gradients.
            return Err(Error::InvalidArgument(format!(
                "step {} (epoch {}, batch {}): the loss is no longer finite ({loss}); after the \
                 next step, already queued, {}",
                record.global_step + 1,
                record.epoch + 1,
                record.step + 1,
                first_non_finite(net)?
            )));
        }
        self.progress.global_step += 1;
        self.progress.step_in_epoch = step.step + 1;
        Ok(record)
    }

    /// The run's state now, for a checkpoint: call it between epochs or after an interruption
    /// (no step in flight).
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        Ok(Checkpoint {
            settings: self.settings.clone(),
            progress: self.progress.clone(),
            weights: self.nets.train.net.read_weights()?,
            velocities: self.sgd.read_velocities()?,
        })
    }
}

fn tally(record: StepRecord, loss: f64, correct: usize, images: usize) -> (f64, usize, usize) {
    (
        loss + record.loss * record.images as f64,
        correct + record.correct,
        images + record.images,
    )
}

/// Floats a step reads back at `images` images: each loss head's per-image losses, then the
/// logits.
fn readback_len(plan: &[LayerPlan], images: usize) -> usize {
    let heads = Loss::with_aux_heads(LossKind::CrossEntropy, plan)
        .heads
        .len();
    let classes = plan.last().map_or(0, |l| l.output.len());
    images * (heads + classes)
}

/// The first tensor of the last step that holds a non-finite value: a layer's output, else a
/// gradient, else a weight after the update.
pub fn first_non_finite(net: &GpuNetwork) -> Result<String> {
    for (i, layer) in net.plan().iter().enumerate() {
        // Outputs the network does not keep cannot be read back; the next kept one tells.
        if let Ok(output) = net.read_layer(i) {
            if output.iter().any(|x| !x.is_finite()) {
                return Ok(format!(
                    "first non-finite: layer {}'s output",
                    layer.layer.name
                ));
            }
        }
    }
    if let Some(name) = net.read_gradients()?.first_non_finite() {
        return Ok(format!("first non-finite: the gradient of {name}"));
    }
    if let Some(name) = net.read_weights()?.first_non_finite() {
        return Ok(format!("first non-finite: {name}"));
    }
    Ok("every tensor read back is finite".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_step_as_pytorchs() {
        let step: Schedule = "step:2:0.5".parse().unwrap();
        assert_eq!(
            (0..5).map(|e| step.rate(0.1, e, 5)).collect::<Vec<_>>(),
            [0.1, 0.1, 0.05, 0.05, 0.025]
        );
        let cosine: Schedule = "cosine".parse().unwrap();
        assert_eq!(cosine.rate(0.1, 0, 4), 0.1);
        assert!((cosine.rate(0.1, 2, 4) - 0.05).abs() < 1e-8);
        for bad in ["", "step:0:0.5", "step:2", "step:2:-1", "linear"] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
        assert_eq!(step.to_string().parse::<Schedule>().unwrap(), step);
    }

    #[test]
    fn an_epoch_counts_its_last_batch_unless_dropped() {
        assert_eq!(steps_per_epoch(10, 4, false), 3);
        assert_eq!(steps_per_epoch(10, 4, true), 2);
        assert_eq!(steps_per_epoch(8, 4, false), 2);
    }
}
