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
//! On one device each step is one submission: forward, backward, update, and a copy of the
//! per-image losses and the logits into one of two staging buffers. The host uploads the next
//! batch and submits it before it reads the previous step's losses, so the GPU always has the
//! next step queued while the host gathers images and reads losses.
//!
//! Over data-parallel replicas ([`DataParallel`], on several devices and MPI ranks) each
//! replica takes its shard of every batch, and a step waits for its all-reduce before its
//! update, so steps are not pipelined: the next batch is gathered while no device works. The
//! last, smaller batch has replicas of its own sharing the parameters, as on one device.

pub mod checkpoint;
pub mod data;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::{
    widen_f16, DataParallel, GpuContext, GpuNetwork, Keep, MicroBatches, PixelDecoder, PixelFormat,
    Sgd, SgdConfig, REPLICA_CHECK_EVERY,
};
use crate::model::{Loss, LossKind, Network};
use crate::shaders::Element;
use crate::weights::Weights;
use checkpoint::{Checkpoint, EpochRecord, EpochTotals, Progress, Scores, Settings};
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

/// Fails unless a batch of `batch` images can be drawn from `training_images`.
fn check_batch(batch: usize, training_images: usize) -> Result<()> {
    if batch == 0 || batch > training_images {
        return Err(Error::InvalidArgument(format!(
            "--batch must be 1 to the {training_images} training images, not {batch}"
        )));
    }
    Ok(())
}

/// The images of an epoch's last, smaller batch, where it has one that is not dropped.
fn last_batch(training_images: usize, batch: usize, drop_last: bool) -> Option<usize> {
    match training_images % batch {
        0 => None,
        _ if drop_last => None,
        n => Some(n),
    }
}

/// A network and how its batches reach its input: as f32 values written to it, or as 8-bit
/// pixels decoded into it on the GPU.
pub struct FedNetwork<'a> {
    /// The network.
    pub net: GpuNetwork<'a>,
    /// Where the data set's pixels are 8-bit.
    pub decoder: Option<PixelDecoder>,
}

impl<'a> FedNetwork<'a> {
    fn new(net: GpuNetwork<'a>, pixels: Option<&PixelFormat>) -> Result<Self> {
        let decoder = match pixels {
            Some(format) => {
                let first = &net.plan()[0];
                Some(PixelDecoder::new(
                    net.context(),
                    (net.input_buffer(), net.stored_element()),
                    first.batch,
                    first.input,
                    format,
                )?)
            }
            None => None,
        };
        Ok(FedNetwork { net, decoder })
    }

    /// Uploads a batch as the set stores it: 8-bit pixels to the decoder, f32 values to the
    /// network's input (`bytes` may hold fewer images than the batch: the rest keeps what it
    /// held).
    fn upload(&self, bytes: &[u8]) {
        let ctx = self.net.context();
        match &self.decoder {
            Some(decoder) => decoder.upload(ctx, bytes),
            None => self.net.write_input_bytes(bytes),
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

/// Replicas of a network and, where the set's pixels are 8-bit, a decoder per replica.
pub struct FedReplicas<'a> {
    /// The replicas.
    pub replicas: DataParallel<'a>,
    /// Per replica, where the set's pixels are 8-bit.
    decoders: Vec<PixelDecoder>,
}

impl<'a> FedReplicas<'a> {
    fn new(replicas: DataParallel<'a>, pixels: Option<&PixelFormat>) -> Result<Self> {
        let decoders = match pixels {
            Some(format) => (replicas.replicas().iter())
                .map(|net| {
                    let first = &net.plan()[0];
                    let ctx = net.context();
                    let input = (net.input_buffer(), net.stored_element());
                    PixelDecoder::new(ctx, input, first.batch, first.input, format)
                })
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        Ok(FedReplicas { replicas, decoders })
    }

    /// Uploads this process's images of a batch ([`DataParallel::own_images`]) as the set
    /// stores them, `image_bytes` each, and their labels, each replica its shard; 8-bit pixels
    /// are decoded on each replica's device, in a submission before its step's.
    fn upload(&self, bytes: &[u8], image_bytes: usize, labels: &[usize]) -> Result<()> {
        let mut first = 0;
        let shards = self.replicas.shards();
        for (r, (net, &n)) in self.replicas.replicas().iter().zip(shards).enumerate() {
            let part = &bytes[first * image_bytes..(first + n) * image_bytes];
            let ctx = net.context();
            match self.decoders.get(r) {
                Some(decoder) => {
                    decoder.upload(ctx, part);
                    net.submit("decode pixels", |encoder| {
                        decoder.encode(encoder);
                        Ok(())
                    })?;
                }
                None => net.write_input_bytes(part),
            }
            net.upload_labels(&labels[first..first + n])?;
            first += n;
        }
        Ok(())
    }
}

/// What trains: one network on one device, or replicas over several devices (and ranks).
pub enum Training<'a> {
    /// One device.
    OneDevice {
        /// At the batch size.
        batch: FedNetwork<'a>,
        /// At the epoch's last, smaller batch, where it has one.
        last: Option<FedNetwork<'a>>,
    },
    /// Data-parallel replicas.
    DataParallel {
        /// At the batch size.
        batch: FedReplicas<'a>,
        /// At the epoch's last, smaller batch, where it has one.
        last: Option<FedReplicas<'a>>,
    },
}

/// The networks of a run, over one set of parameter buffers (per device).
pub struct Networks<'a> {
    /// Trained with softmax cross-entropy (GoogLeNet's auxiliary heads weighted in).
    pub train: Training<'a>,
    /// At inference, for the held-out set, where there is one (on the first device).
    pub eval: Option<FedNetwork<'a>>,
    /// How 8-bit pixels are decoded (`None`: the images are f32).
    pixels: Option<PixelFormat>,
}

/// The error of a last batch of `n` images that cannot be planned.
fn last_batch_error(e: Error, n: usize) -> Error {
    Error::InvalidArgument(format!(
        "{e}; it is the epoch's last batch, of {n} image(s): --drop-last drops it, another \
         --batch avoids it"
    ))
}

impl<'a> Networks<'a> {
    /// Uploads `weights` once and plans the three networks: training at `batch` (at most the
    /// set's size), the last batch's where `training_images` does not divide into batches
    /// (and it is not dropped), the held-out set's at up to `batch` images where
    /// `held_out_images` > 0. With `pixels`, each gets a decoder of 8-bit pixels of that format.
    /// A batch whose tensors exceed one storage binding trains in parts along it, as replicas
    /// on this device over one set of parameters ([`Networks::over_replicas`]).
    pub fn new(
        ctx: &'a GpuContext,
        network: &Network,
        weights: &Weights,
        batch: usize,
        (training_images, held_out_images): (usize, usize),
        drop_last: bool,
        pixels: Option<&PixelFormat>,
    ) -> Result<Self> {
        check_batch(batch, training_images)?;
        let plan = network.plan(batch)?;
        let loss = Loss::with_aux_heads(LossKind::CrossEntropy, &plan);
        let keep = Keep::WhatBackwardReads;
        let train = match GpuNetwork::training(ctx, &plan, weights, &loss, keep) {
            Ok(net) => net,
            // A tensor of the batch exceeds one storage binding: the batch in parts, replicas
            // on this device over one set of parameters.
            Err(Error::TooLarge { .. }) if batch > 1 => {
                let training = (&loss, keep);
                let parts =
                    MicroBatches::replicas_on_one_device(ctx, network, &plan, weights, training)?;
                let images = (training_images, held_out_images);
                return Self::over_replicas(parts, network, images, drop_last, pixels);
            }
            Err(e) => return Err(e),
        };
        let last = match last_batch(training_images, batch, drop_last) {
            None => None,
            Some(n) => {
                // A batch norm refuses a batch of one image at a 1x1 plane, as PyTorch does.
                let net = (network.plan(n))
                    .and_then(|plan| {
                        GpuNetwork::training_sharing(&train, &plan, Keep::WhatBackwardReads)
                    })
                    .map_err(|e| last_batch_error(e, n))?;
                Some(FedNetwork::new(net, pixels)?)
            }
        };
        let eval = Self::held_out(&train, network, batch, held_out_images, pixels)?;
        let train = FedNetwork::new(train, pixels)?;
        Ok(Networks {
            train: Training::OneDevice { batch: train, last },
            eval,
            pixels: pixels.cloned(),
        })
    }

    /// As [`Networks::new`], training `replicas` (built at the batch size, over every rank;
    /// every rank of an MPI run builds them alike): the last batch's replicas share their
    /// parameters, and the held-out set is scored on the first replica's device (by every
    /// rank, each with the same weights).
    pub fn over_replicas(
        replicas: DataParallel<'a>,
        network: &Network,
        (training_images, held_out_images): (usize, usize),
        drop_last: bool,
        pixels: Option<&PixelFormat>,
    ) -> Result<Self> {
        let batch = replicas.batch();
        check_batch(batch, training_images)?;
        let last = match last_batch(training_images, batch, drop_last) {
            None => None,
            Some(n) => Some(FedReplicas::new(
                replicas
                    .sharing(network, n)
                    .map_err(|e| last_batch_error(e, n))?,
                pixels,
            )?),
        };
        let first = &replicas.replicas()[0];
        let eval = Self::held_out(first, network, batch, held_out_images, pixels)?;
        Ok(Networks {
            train: Training::DataParallel {
                batch: FedReplicas::new(replicas, pixels)?,
                last,
            },
            eval,
            pixels: pixels.cloned(),
        })
    }

    /// The inference network of a held-out set of `images` (none when it is empty), sharing
    /// `train`'s parameters, at up to `batch` images.
    fn held_out(
        train: &GpuNetwork<'a>,
        network: &Network,
        batch: usize,
        images: usize,
        pixels: Option<&PixelFormat>,
    ) -> Result<Option<FedNetwork<'a>>> {
        if images == 0 {
            return Ok(None);
        }
        // At most `batch` images, fewer where some tensor would exceed one storage binding.
        let mut at = batch.min(images);
        loop {
            match GpuNetwork::inference_sharing(train, &network.plan(at)?) {
                Ok(net) => return Ok(Some(FedNetwork::new(net, pixels)?)),
                Err(Error::TooLarge { .. }) if at > 1 => at = at.div_ceil(2),
                Err(e) => return Err(e),
            }
        }
    }

    /// The network trained at the batch size: the one device's, or the first replica.
    pub fn first(&self) -> &GpuNetwork<'a> {
        match &self.train {
            Training::OneDevice { batch, .. } => &batch.net,
            Training::DataParallel { batch, .. } => &batch.replicas.replicas()[0],
        }
    }

    /// True where the epoch ends with a smaller batch.
    pub fn has_last_batch(&self) -> bool {
        match &self.train {
            Training::OneDevice { last, .. } => last.is_some(),
            Training::DataParallel { last, .. } => last.is_some(),
        }
    }

    /// Images per training step.
    pub fn batch(&self) -> usize {
        match &self.train {
            Training::OneDevice { batch, .. } => batch.net.plan()[0].batch,
            Training::DataParallel { batch, .. } => batch.replicas.batch(),
        }
    }

    /// Fails unless `set` is stored as these networks were built to read: its image size, f32
    /// or 8-bit pixels in the decoders' layout.
    fn check_reads(&self, set: &LabelledImages) -> Result<()> {
        let expected = self.first().plan()[0].input;
        let format_fits = match (set.pixels(), &self.pixels) {
            (data::Pixels::Float32, None) => true,
            (data::Pixels::Uint8 { channels_last }, Some(format)) => {
                channels_last == format.channels_last
            }
            _ => false,
        };
        if set.dims() != expected || !format_fits {
            return Err(Error::InvalidArgument(format!(
                "images of {:?} stored as {:?}; the run was planned for {expected:?} {}",
                set.dims(),
                set.pixels(),
                match &self.pixels {
                    Some(format) =>
                        format!("8-bit pixels (channels last: {})", format.channels_last),
                    None => "f32 values".into(),
                }
            )));
        }
        Ok(())
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
    /// The epoch's totals with this step counted (a resumed epoch's earlier steps included):
    /// what a progress line shows.
    #[serde(skip)]
    pub epoch_so_far: EpochTotals,
}

/// How an epoch ended.
#[derive(Clone, Debug, PartialEq)]
pub enum EpochEnd {
    /// Every step ran; the epoch's scores.
    Finished(EpochRecord),
    /// Stopped between steps when asked (Ctrl-C); the progress says where.
    Interrupted,
}

/// A step submitted and not yet read back.
struct InFlight {
    slot: usize,
    submission: wgpu::SubmissionIndex,
    images: usize,
    step: usize,
}

/// A training run: the optimiser over [`Networks`], its settings and progress, and the buffers
/// each step reuses.
pub struct Trainer<'n, 'a> {
    nets: &'n Networks<'a>,
    /// The one device's optimiser, or each replica's (all given the same gradients).
    optimizers: Vec<Sgd<'n, 'a>>,
    settings: Settings,
    schedule: Schedule,
    /// How far the run has come: what a checkpoint saves.
    pub progress: Progress,
    /// Set when a step failed after the next one was queued: the weights are then ahead of
    /// the progress, and the run cannot continue or be checkpointed.
    failed: bool,
    /// Per step slot: the losses of each head, then the logits, for the host to read (on the
    /// first device; over replicas, only the held-out set's logits use it).
    staging: [wgpu::Buffer; 2],
    /// Per slot: the labels of the batch in that slot.
    labels: [Vec<usize>; 2],
    /// A batch's images as the set stores them.
    batch_bytes: Vec<u8>,
    readback: Vec<f32>,
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
        let batch = nets.batch();
        if settings.batch != batch {
            return Err(Error::InvalidArgument(format!(
                "the settings say batch {}, the networks were planned at {batch}",
                settings.batch
            )));
        }
        let precision = nets.first().context().precision();
        if settings.precision != precision {
            return Err(Error::InvalidArgument(format!(
                "the settings say precision {:?}, the networks store {precision:?}",
                settings.precision
            )));
        }
        let config = SgdConfig {
            learning_rate: settings.learning_rate,
            momentum: settings.momentum,
            weight_decay: settings.weight_decay,
        };
        let optimizers = match &nets.train {
            Training::OneDevice { batch, .. } => vec![Sgd::new(&batch.net, config)?],
            Training::DataParallel { batch, .. } => batch.replicas.optimizers(config)?,
        };
        let progress = match resume {
            Some(checkpoint) => {
                for sgd in &optimizers {
                    sgd.write_velocities(&checkpoint.velocities)?;
                }
                checkpoint.progress.clone()
            }
            None => Progress::default(),
        };
        let first = nets.first();
        let per_step = readback_len(first, batch)?;
        let ctx = first.context();
        // Room for a batch of f32 values: any set's images fit.
        let batch_bytes = vec![0u8; batch * first.plan()[0].input.len() * 4];
        Ok(Trainer {
            nets,
            optimizers,
            schedule,
            progress,
            failed: false,
            staging: [
                ctx.staging_buffer("step losses and logits 0", per_step),
                ctx.staging_buffer("step losses and logits 1", per_step),
            ],
            labels: [Vec::with_capacity(batch), Vec::with_capacity(batch)],
            batch_bytes,
            readback: vec![0.0; per_step],
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

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::InvalidArgument(
                "a step of this run failed after the next one was queued; start again from the \
                 last checkpoint"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Runs the rest of the current epoch over `train` (from the step the progress says),
    /// calling `on_step` after each step's loss is read, then scores `held_out` where given.
    ///
    /// Returns early, between two steps, once `stop` is set: on one device one step late,
    /// because the next step is queued before a step's loss is read (and reported); over
    /// replicas at once, every rank between the same two steps. A step that fails (a loss that
    /// is not finite, an image file that cannot be read) ends it with an error naming the step;
    /// the trainer is then unusable: on one device the queued step has already updated the
    /// weights, and over replicas the failed step's forward pass has already moved the running
    /// statistics (its update never ran).
    pub fn run_epoch(
        &mut self,
        train: &LabelledImages,
        held_out: Option<&LabelledImages>,
        stop: &AtomicBool,
        on_step: impl FnMut(&StepRecord),
    ) -> Result<EpochEnd> {
        self.check_usable()?;
        self.nets.check_reads(train)?;
        if let Some(set) = held_out {
            self.nets.check_reads(set)?;
        }
        if train.len() != self.settings.training_images {
            return Err(Error::InvalidArgument(format!(
                "the run trains on {} images, not {}",
                self.settings.training_images,
                train.len()
            )));
        }
        let result = self.run_steps(train, stop, on_step);
        if result.is_err() {
            self.failed = true;
        }
        let steps = result?;
        if self.progress.step_in_epoch < steps {
            return Ok(EpochEnd::Interrupted);
        }
        let validation = match held_out {
            Some(set) => Some(self.evaluate(set)?),
            None => None,
        };
        let totals = std::mem::take(&mut self.progress.epoch_totals);
        let images = totals.images.max(1) as f64;
        let record = EpochRecord {
            epoch: self.progress.epoch,
            learning_rate: self.learning_rate(),
            train_loss: totals.loss_sum / images,
            train_top1: totals.correct as f64 / images,
            validation,
            seconds: totals.seconds,
            images_per_s: if totals.seconds > 0.0 {
                totals.images as f64 / totals.seconds
            } else {
                0.0
            },
            input_seconds: totals.input_seconds,
            gpu_idle_for_input_at_most_seconds: totals.idle_seconds,
        };
        self.progress.history.push(record.clone());
        self.progress.epoch += 1;
        self.progress.step_in_epoch = 0;
        Ok(EpochEnd::Finished(record))
    }

    /// The steps of the current epoch from where the progress stands, until its end or `stop`;
    /// returns the epoch's number of steps.
    fn run_steps(
        &mut self,
        train: &LabelledImages,
        stop: &AtomicBool,
        on_step: impl FnMut(&StepRecord),
    ) -> Result<usize> {
        let Settings {
            batch,
            seed,
            drop_last,
            ..
        } = self.settings;
        let order = data::epoch_order(train.len(), seed, self.progress.epoch);
        let steps = steps_per_epoch(train.len(), batch, drop_last);
        let learning_rate = self.learning_rate();
        for sgd in &mut self.optimizers {
            sgd.set_learning_rate(learning_rate);
        }
        let start = Instant::now();
        let seconds_before = self.progress.epoch_totals.seconds;
        let epoch = (order.as_slice(), steps, learning_rate);
        match &self.nets.train {
            Training::OneDevice { .. } => self.pipelined_steps(train, epoch, stop, on_step)?,
            Training::DataParallel { .. } => self.replicated_steps(train, epoch, stop, on_step)?,
        }
        self.progress.epoch_totals.seconds = seconds_before + start.elapsed().as_secs_f64();
        Ok(steps)
    }

    /// The steps of [`Trainer::run_steps`] on one device, two in flight: each submitted before
    /// the one before it is read back.
    fn pipelined_steps(
        &mut self,
        train: &LabelledImages,
        (order, steps, learning_rate): (&[usize], usize, f32),
        stop: &AtomicBool,
        mut on_step: impl FnMut(&StepRecord),
    ) -> Result<()> {
        let batch = self.settings.batch;
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
            let submission = self.submit_step(fed, slot)?;
            let submitted = InFlight {
                slot,
                submission,
                images: indices.len(),
                step,
            };
            // The GPU may have idled while this step's input was prepared only where the step
            // before it had already finished (or there was none).
            let mut idle = input_seconds;
            if let Some(previous) = in_flight.replace(submitted) {
                let (record, waited) = self.finish_step(previous, learning_rate, true)?;
                if waited >= 1e-4 {
                    idle = 0.0;
                }
                on_step(&record);
            }
            let totals = &mut self.progress.epoch_totals;
            totals.input_seconds += input_seconds;
            totals.idle_seconds += idle;
            step += 1;
        }
        if let Some(last) = in_flight.take() {
            let (record, _) = self.finish_step(last, learning_rate, false)?;
            on_step(&record);
        }
        Ok(())
    }

    /// The steps of [`Trainer::run_steps`] over data-parallel replicas, one at a time: every
    /// replica's forward and backward pass, the all-reduce, the loss (a step whose loss is not
    /// finite stops before its update), every replica's update; the replicas compared every
    /// [`REPLICA_CHECK_EVERY`] steps and after the epoch's last. Every rank takes every step,
    /// and all stop together when `stop` is set on any.
    fn replicated_steps(
        &mut self,
        train: &LabelledImages,
        (order, steps, learning_rate): (&[usize], usize, f32),
        stop: &AtomicBool,
        mut on_step: impl FnMut(&StepRecord),
    ) -> Result<()> {
        let nets = self.nets;
        let Training::DataParallel { batch: fed, last } = &nets.train else {
            return Err(Error::Internal("replicated steps on one device".into()));
        };
        let batch = self.settings.batch;
        let mut step = self.progress.step_in_epoch;
        while step < steps && !fed.replicas.on_any_rank(stop.load(Ordering::Relaxed)) {
            let input_start = Instant::now();
            let indices = &order[step * batch..((step + 1) * batch).min(train.len())];
            let fed = match last {
                Some(last) if indices.len() == last.replicas.batch() => last,
                _ => fed,
            };
            let replicas = &fed.replicas;
            if replicas.batch() != indices.len() {
                return Err(Error::Internal(format!(
                    "no replicas planned for a batch of {}",
                    indices.len()
                )));
            }
            let own = &indices[replicas.own_images()];
            let bytes = &mut self.batch_bytes[..own.len() * train.image_bytes()];
            train.gather(own, bytes, &mut self.labels[0])?;
            fed.upload(bytes, train.image_bytes(), &self.labels[0])?;
            let input_seconds = input_start.elapsed().as_secs_f64();
            replicas.gradients()?;
            let loss = replicas.read_loss()?;
            let record = self.step_record(step, indices.len(), loss, 0, learning_rate);
            if !loss.is_finite() {
                let net = &replicas.replicas()[0];
                return Err(non_finite_loss(&record, "before its update,", net));
            }
            replicas.update(&self.optimizers)?;
            let correct = replicas.count_correct(&self.labels[0])?;
            if (step + 1).is_multiple_of(REPLICA_CHECK_EVERY) || step + 1 == steps {
                replicas.check_replicas_equal()?;
            }
            let totals = &mut self.progress.epoch_totals;
            totals.input_seconds += input_seconds;
            // No device works while the host gathers a batch.
            totals.idle_seconds += input_seconds;
            on_step(&self.complete_step(record, correct));
            step += 1;
        }
        Ok(())
    }

    /// Scores `set` on the inference network (batch norms by their running statistics): the
    /// mean cross-entropy, top-1 and top-5. The last batch is padded with zeros, whose logits
    /// are not scored (at inference every image's logits are its own).
    pub fn evaluate(&mut self, set: &LabelledImages) -> Result<Scores> {
        self.check_usable()?;
        self.nets.check_reads(set)?;
        let fed = (self.nets.eval.as_ref()).ok_or_else(|| {
            Error::InvalidArgument("the run was planned without a held-out set".into())
        })?;
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
            let staging = &self.staging[0];
            // The logits as the network stores them (f16 under --precision f16), whole words.
            let element = fed.net.stored_element();
            let copied = (out.len() * element.bytes()).next_multiple_of(4) as u64;
            let submission = fed.net.submit("held-out batch", |encoder| {
                fed.encode_forward(encoder);
                encoder.copy_buffer_to_buffer(logits_buffer, 0, staging, 0, copied);
                Ok(())
            })?;
            ctx.read_staging_values_of(&self.staging[0], (out, element), submission)?;
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
    fn fed_for(&self, images: usize) -> Result<&'n FedNetwork<'a>> {
        let Training::OneDevice { batch, last } = &self.nets.train else {
            return Err(Error::Internal("a one-device step over replicas".into()));
        };
        if images == self.settings.batch {
            return Ok(batch);
        }
        (last.as_ref())
            .filter(|fed| fed.net.plan()[0].batch == images)
            .ok_or_else(|| {
                Error::Internal(format!("no network planned for a last batch of {images}"))
            })
    }

    /// Submits one step of `fed` (its batch uploaded): forward, backward, update, and the copy
    /// of its per-image losses (each head's, in the loss's order) and then its logits into
    /// staging slot `slot`, as [`readback_len`] counts them.
    fn submit_step(&self, fed: &FedNetwork, slot: usize) -> Result<wgpu::SubmissionIndex> {
        let net = &fed.net;
        net.submit("training step", |encoder| {
            fed.encode_forward(encoder);
            net.encode_backward(encoder)?;
            self.optimizers[0].encode_update(encoder);
            let staging = &self.staging[slot];
            let mut at = 0;
            for buffer in net.per_image_loss_buffers()? {
                encoder.copy_buffer_to_buffer(buffer, 0, staging, at, buffer.size());
                at += buffer.size();
            }
            let logits = net.logits_buffer();
            encoder.copy_buffer_to_buffer(logits, 0, staging, at, logits.size());
            Ok(())
        })
    }

    /// Waits for a submitted step, reads its losses and logits, and advances the progress;
    /// also returns how long the host waited for it. `next_queued`: another step was
    /// submitted after it (what a failure's message says of the state read back).
    fn finish_step(
        &mut self,
        step: InFlight,
        learning_rate: f32,
        next_queued: bool,
    ) -> Result<(StepRecord, f64)> {
        let net = &self.fed_for(step.images)?.net;
        let plan = net.plan();
        let n = step.images;
        let len = readback_len(net, n)?;
        let wait_start = Instant::now();
        net.context().read_staging_of(
            &self.staging[step.slot],
            &mut self.readback[..len],
            step.submission,
        )?;
        let waited = wait_start.elapsed().as_secs_f64();
        let heads = &net.loss().expect("a training network has a loss").heads;
        let mut loss = 0.0;
        for (k, &(_, weight)) in heads.iter().enumerate() {
            let losses = &self.readback[k * n..(k + 1) * n];
            let sum: f64 = losses.iter().map(|&l| f64::from(l)).sum();
            loss += f64::from(weight) * sum / n as f64;
        }
        let classes = plan
            .last()
            .expect("a planned network has layers")
            .output
            .len();
        // The logits follow the losses as the network stores them (f16 under --precision f16).
        let stored = &self.readback[heads.len() * n..];
        let widened;
        let logits = match net.stored_element() {
            Element::F32 => &stored[..n * classes],
            Element::F16 => {
                widened = widen_f16(stored, n * classes);
                &widened[..]
            }
        };
        let labels = &self.labels[step.slot];
        let correct = (logits.chunks_exact(classes).zip(labels))
            .filter(|(row, &label)| !row.iter().any(|&v| v > row[label]))
            .count();
        let record = self.step_record(step.step, n, loss, correct, learning_rate);
        if !loss.is_finite() {
            let state = if next_queued {
                // What is read back now is the state after the next step, whose update spread
                // the non-finite gradients.
                "after the next step, already queued,"
            } else {
                "after it,"
            };
            return Err(non_finite_loss(&record, state, net));
        }
        Ok((self.complete_step(record, correct), waited))
    }

    /// The record of step `step` of the epoch, of `images` images, before it is counted.
    fn step_record(
        &self,
        step: usize,
        images: usize,
        loss: f64,
        correct: usize,
        learning_rate: f32,
    ) -> StepRecord {
        StepRecord {
            global_step: self.progress.global_step,
            epoch: self.progress.epoch,
            step,
            images,
            loss,
            correct,
            learning_rate,
            epoch_so_far: EpochTotals::default(),
        }
    }

    /// Counts a step whose loss was finite in the progress; returns its record with the
    /// epoch's totals so far.
    fn complete_step(&mut self, record: StepRecord, correct: usize) -> StepRecord {
        self.progress.global_step += 1;
        self.progress.step_in_epoch = record.step + 1;
        let totals = &mut self.progress.epoch_totals;
        totals.loss_sum += record.loss * record.images as f64;
        totals.correct += correct;
        totals.images += record.images;
        StepRecord {
            correct,
            epoch_so_far: *totals,
            ..record
        }
    }

    /// The run's state now, for a checkpoint: call it between epochs or after an interruption
    /// (no step in flight). Fails after a failed step.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        self.check_usable()?;
        Ok(Checkpoint {
            settings: self.settings.clone(),
            progress: self.progress.clone(),
            weights: self.nets.first().read_weights()?,
            velocities: self.optimizers[0].read_velocities()?,
        })
    }
}

/// The error of a step whose loss is not finite: the step, and the first non-finite tensor of
/// `net` in `state` (the weights read after the step, or before its update).
fn non_finite_loss(record: &StepRecord, state: &str, net: &GpuNetwork) -> Error {
    let found = first_non_finite(net).unwrap_or_else(|e| format!("reading it back failed: {e}"));
    Error::InvalidArgument(format!(
        "step {} (epoch {}, batch {}): the loss is no longer finite ({}); {state} {found}",
        record.global_step + 1,
        record.epoch + 1,
        record.step + 1,
        record.loss,
    ))
}

/// Floats a step of `net` reads back at `images` images: each loss head's per-image losses,
/// then the logits.
fn readback_len(net: &GpuNetwork, images: usize) -> Result<usize> {
    let heads = (net.loss())
        .ok_or_else(|| Error::Internal("a training network without a loss".into()))?
        .heads
        .len();
    let classes = net.plan().last().map_or(0, |l| l.output.len());
    Ok(images * (heads + classes))
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
