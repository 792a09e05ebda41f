//! `convnet train`: SGD with momentum on a labelled data set for a number of epochs (with
//! `--epochs`; see `convnet_wgpu::training`), or on one fixed batch for a number of steps, the
//! loss printed as it falls.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use convnet_wgpu::chart::{self, Series};
use convnet_wgpu::distributed::World;
use convnet_wgpu::gpu::{
    AllReduceStats, DataParallel, Keep, MemoryUse, PlacedNetwork, Sgd, SgdConfig, TwoDeviceNetwork,
    REPLICA_CHECK_EVERY,
};
use convnet_wgpu::model::{LayerPlan, LossKind, Network};
use convnet_wgpu::training::checkpoint::{Checkpoint, EpochRecord, Settings};
use convnet_wgpu::training::data::{self, LabelledImages};
use convnet_wgpu::training::{
    first_non_finite, steps_per_epoch, EpochEnd, Networks, Schedule, StepRecord, Trainer, Training,
};
use convnet_wgpu::watchdog::Watchdog;
use convnet_wgpu::weights::Weights;
use convnet_wgpu::{files, npy};

use super::run::l2_loss;
use super::{
    describe_loss, describe_memory, describe_parts, describe_placed, megabytes, open_context,
    open_contexts, DeviceArgs, LossArgs, ModelArgs, SourceArgs,
};

#[derive(Args)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// Steps on the one fixed batch (without --epochs; default 50).
    #[arg(long)]
    steps: Option<usize>,
    /// Learning rate; default 0.01 on a data set (--epochs), else 1e-11: the post's loss on one
    /// fixed batch, sum(logits^2)/2, starts near 3e10 per image with its initialisation, so its
    /// gradients are huge and the rate tiny; 1e-11 falls steadily at batch 2, 1e-10 diverges.
    #[arg(long)]
    lr: Option<f32>,
    #[arg(long, default_value_t = 0.0)]
    momentum: f32,
    /// L2 penalty added to every parameter's gradient (PyTorch's `weight_decay`).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    loss: LossArgs,
    /// Write the trained weights here (safetensors).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
}

/// Training on a data set: `--input` images, `--labels`, and these.
#[derive(Args)]
struct DataArgs {
    /// Train on the data set of --input and --labels for this many epochs, each visiting every
    /// image once in an order drawn from --seed (without it: --steps on one fixed batch).
    #[arg(long)]
    epochs: Option<usize>,
    /// Held-out images (.npy, as --input), scored after every epoch.
    #[arg(long, requires = "val_labels", conflicts_with = "val_split")]
    val_input: Option<PathBuf>,
    /// The held-out images' labels (.npy int64 or int32, `[N]`).
    #[arg(long, requires = "val_input")]
    val_labels: Option<PathBuf>,
    /// Hold out this fraction of --input (chosen by --seed) instead of --val-input.
    #[arg(long)]
    val_split: Option<f64>,
    /// The learning rate per epoch: constant, step:N:G (times G every N epochs) or cosine (to 0
    /// at the last epoch), as PyTorch's schedulers stepped per epoch.
    #[arg(long, default_value = "constant")]
    lr_schedule: String,
    #[command(flatten)]
    normalisation: super::NormalisationArgs,
    /// Drop each epoch's last, smaller batch (by default it is trained on).
    #[arg(long)]
    drop_last: bool,
    /// Write a checkpoint here at every epoch's end and on Ctrl-C (default: beside --out, as
    /// NAME.checkpoint.safetensors; none without either).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Continue the run a checkpoint stopped, bit for bit as if it never had.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// With --resume: continue even where the settings differ from the checkpoint's.
    #[arg(long)]
    force: bool,
    /// Write every epoch's visiting order here (.npy int64 `[epochs, images]`), for another
    /// framework to replay.
    #[arg(long)]
    order_out: Option<PathBuf>,
    /// Draw the loss and accuracy per epoch here (SVG).
    #[arg(long)]
    curve: Option<PathBuf>,
    /// Print the run (settings, every epoch, every step's loss) as JSON at the end.
    #[arg(long)]
    json: bool,
}

/// `convnet train`: on a data set with `--epochs`, else SGD on one fixed batch.
pub(crate) fn train(args: &TrainArgs, world: &World) -> anyhow::Result<()> {
    if world.size() > 1 && args.device.parallel != super::Parallel::Data {
        anyhow::bail!(
            "under an MPI launcher ({} ranks), `train` runs with --parallel data",
            world.size()
        );
    }
    if args.data.epochs.is_some() {
        return train_on_data(args, world);
    }
    let data_only = [
        (args.data.val_input.is_some(), "--val-input"),
        (args.data.val_split.is_some(), "--val-split"),
        (args.data.resume.is_some(), "--resume"),
        (args.data.checkpoint.is_some(), "--checkpoint"),
        (args.data.order_out.is_some(), "--order-out"),
        (args.data.curve.is_some(), "--curve"),
        (args.data.json, "--json"),
        (args.data.drop_last, "--drop-last"),
    ];
    if let Some((_, flag)) = data_only.iter().find(|(given, _)| *given) {
        anyhow::bail!("{flag} is for training on a data set: add --epochs");
    }
    let steps = args.steps.unwrap_or(50);
    if steps == 0 {
        anyhow::bail!("--steps must be at least 1");
    }
    let lr = args.lr.unwrap_or(1e-11);
    if !(lr.is_finite() && lr > 0.0 && (0.0..1.0).contains(&args.momentum)) {
        anyhow::bail!("--lr must be positive and --momentum in [0, 1)");
    }
    if !(args.weight_decay.is_finite() && args.weight_decay >= 0.0) {
        anyhow::bail!("--weight-decay must be a finite number >= 0");
    }
    if let Some(path) = &args.out {
        files::check_writable(path)?;
    }
    let network = args.model.network.build()?;
    let (plan, params, data) = args.source.load(&network, args.model.batch)?;
    let config = SgdConfig {
        learning_rate: lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
    };
    if args.device.parallel == super::Parallel::Data {
        let data = (&network, plan.as_slice(), &params, data.as_slice());
        return train_data_parallel(args, world, steps, data, config);
    }
    if args.device.devices == 2 {
        return train_on_two_devices(args, steps, (&network, &plan, &params, &data), config);
    }
    let ctx = open_context(&args.device)?;
    let watchdog = Watchdog::start(args.device.timeout, format!("train on {}", ctx.info().name))?;
    let (loss, labels) = args.loss.resolve(&plan, args.source.has_input())?;
    // Whole, or in parts along the batch where a tensor exceeds one storage binding.
    let training = Some((&loss, Keep::WhatBackwardReads));
    let placed = PlacedNetwork::on_one_device(&ctx, &network, &plan, &params, training)?;
    if let Some(labels) = &labels {
        placed.upload_labels(labels)?;
    }
    let net = placed.trained()?;
    let sgd = Sgd::new(net, config)?;
    placed.runner().upload_input(&data)?;
    println!(
        "training {} on one batch of {}, loss {}: SGD lr {:e}, momentum {}, weight decay {}; {} + \
         velocities {}",
        network.name,
        plan[0].batch,
        describe_loss(&loss),
        lr,
        args.momentum,
        args.weight_decay,
        describe_placed(&placed),
        megabytes(sgd.memory)
    );
    for step in 0..steps {
        Watchdog::step(&watchdog, step);
        placed.runner().forward_backward()?;
        sgd.update()?;
        // The loss of this step's forward pass, before its update; checked every step, so that
        // a divergence is caught at the step it happens.
        report_step(args, (step, steps), placed.read_loss()?, || {
            Ok(first_non_finite(net)?)
        })?;
    }
    write_weights(args, || net.read_weights())
}

/// Prints a step's loss (at step 0, every tenth and the last); a loss that is not finite ends
/// the run, saying what `diagnose` finds.
fn report_step(
    args: &TrainArgs,
    (step, steps): (usize, usize),
    value: f64,
    diagnose: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    if !value.is_finite() {
        anyhow::bail!(
            "step {step}: the loss is no longer finite ({}); lower --lr{}",
            diagnose()?,
            if args.out.is_some() {
                " (nothing written)"
            } else {
                ""
            }
        );
    }
    if step.is_multiple_of(10) || step + 1 == steps {
        println!("step {step}, loss = {value:.6e}");
    }
    Ok(())
}

/// Writes the trained weights to `--out`, where given.
fn write_weights(
    args: &TrainArgs,
    read: impl FnOnce() -> convnet_wgpu::Result<Weights>,
) -> anyhow::Result<()> {
    if let Some(path) = &args.out {
        let weights = read()?;
        if let Some(name) = weights.first_non_finite() {
            anyhow::bail!(
                "the last step left non-finite values in {name}; {} not written (lower --lr)",
                path.display()
            );
        }
        weights.save(path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `train --parallel data --devices N`: a replica per device, each on a shard of the fixed
/// batch, the gradients all-reduced before every update ([`DataParallel`]); the replicas'
/// weights compared bit for bit every [`REPLICA_CHECK_EVERY`] steps and at the end.
fn train_data_parallel(
    args: &TrainArgs,
    world: &World,
    steps: usize,
    (network, plan, params, data): (&Network, &[LayerPlan], &Weights, &[f32]),
    config: SgdConfig,
) -> anyhow::Result<()> {
    let (loss, labels) = args.loss.resolve(plan, args.source.has_input())?;
    let contexts = super::open_replica_contexts(&args.device)?;
    let devices: Vec<&convnet_wgpu::gpu::GpuContext> = contexts.iter().collect();
    let watchdog = Watchdog::start(args.device.timeout, "data-parallel train".to_string())?;
    let batch = plan[0].batch;
    let mut replicas = DataParallel::over_ranks(
        Some(world),
        &devices,
        network,
        batch,
        params,
        (loss.kind, args.device.sync_batch_norm),
    )?;
    args.device.configure(&mut replicas);
    replicas.upload(data, labels.as_deref())?;
    let optimizers = replicas.optimizers(config)?;
    let ranks = match world.size() {
        1 => String::new(),
        n => format!(" on each of {n} MPI ranks (this rank's shards)"),
    };
    println!(
        "training {} on one batch of {batch} split over {} devices{ranks} as {:?}, loss {}: SGD \
         lr {:e}, momentum {}, weight decay {}; {} + velocities {} per replica",
        network.name,
        devices.len(),
        replicas.shards(),
        describe_loss(&loss),
        config.learning_rate,
        config.momentum,
        config.weight_decay,
        describe_memory(&replicas.replicas()[0].memory()),
        megabytes(optimizers[0].memory),
    );
    let mut all_reduce = AllReduceStats::default();
    let start = std::time::Instant::now();
    for step in 0..steps {
        Watchdog::step(&watchdog, step);
        let stats = match replicas.gradients() {
            Ok(stats) => stats,
            // No update of this step has started: the replicas still hold the last step's.
            Err(e) => return Err(save_after_failure(args, world, &replicas, step, e.into())),
        };
        let update = replicas.update(&optimizers)?;
        all_reduce.seconds += stats.seconds + update.seconds;
        all_reduce.bytes += update.bytes;
        all_reduce.bytes += stats.bytes;
        all_reduce.rank_bytes += stats.rank_bytes;
        // The loss of this step's forward pass over the whole batch, before its update.
        let value = replicas.read_loss()?;
        report_step(args, (step, steps), value, || {
            Ok(first_non_finite(&replicas.replicas()[0])?)
        })?;
        if (step + 1) % REPLICA_CHECK_EVERY == 0 || step + 1 == steps {
            replicas.check_replicas_equal()?;
        }
    }
    let step_seconds = start.elapsed().as_secs_f64() / steps as f64;
    println!(
        "all-reduce ({:?}, {} bucket(s)) on the host: {} to and from the devices{} and {:.1} ms \
         per step, of {:.3} s per step ({:.1}%); replicas equal bit for bit",
        replicas.all_reduce(),
        replicas.buckets(),
        megabytes(all_reduce.bytes / steps as u64),
        match all_reduce.rank_bytes {
            0 => String::new(),
            bytes => format!(
                ", {} to and from the other ranks",
                megabytes(bytes / steps as u64)
            ),
        },
        all_reduce.seconds * 1e3 / steps as f64,
        step_seconds,
        100.0 * all_reduce.seconds / steps as f64 / step_seconds
    );
    // Every rank holds the same weights; rank 0 writes them.
    match world.rank() {
        0 => write_weights(args, || replicas.read_weights()),
        _ => Ok(()),
    }
}

/// A data-parallel run that failed at `step` before any replica's update: writes the weights of
/// the last completed step to `--out` where a replica still answers (one process; across MPI
/// ranks the failure has ended every rank), and returns the failure with what was written.
fn save_after_failure(
    args: &TrainArgs,
    world: &World,
    replicas: &DataParallel,
    step: usize,
    failure: anyhow::Error,
) -> anyhow::Error {
    let (Some(path), 1, Some(last)) = (&args.out, world.size(), step.checked_sub(1)) else {
        return failure.context(format!("step {step}: nothing written"));
    };
    let saved = replicas
        .read_weights_of_any()
        .map_err(anyhow::Error::from)
        .and_then(|w| match w.first_non_finite() {
            Some(name) => anyhow::bail!("{name} holds non-finite values"),
            None => Ok(w.save(path)?),
        });
    match saved {
        Ok(()) => failure.context(format!(
            "step {step}: wrote the weights after step {last}, the last completed, to {}",
            path.display()
        )),
        Err(e) => failure.context(format!("step {step}: nothing written ({e})")),
    }
}

/// `train --devices 2`: a two-device layout (`alexnet-2gpu`) trained split over two devices, each
/// device updating the parameter rows it holds, on the seed's `l2_loss`.
fn train_on_two_devices(
    args: &TrainArgs,
    steps: usize,
    (network, plan, params, data): (&Network, &[LayerPlan], &Weights, &[f32]),
    config: SgdConfig,
) -> anyhow::Result<()> {
    args.loss.require_l2()?;
    let contexts = open_contexts(&args.device)?;
    let watchdog = Watchdog::start(args.device.timeout, "train on two devices".to_string())?;
    let net = TwoDeviceNetwork::new([&contexts[0], &contexts[1]], network, plan[0].batch, params)?;
    let optimizers = net.optimizers(config)?;
    net.upload_input(data)?;
    let memory = net.memory();
    println!(
        "training {} on one batch of {} over two devices, loss l2_loss(logits): SGD lr {:e}, \
         momentum {}, weight decay {}; GPU memory {} on device 0, {} on device 1 (velocities \
         {})",
        network.name,
        plan[0].batch,
        config.learning_rate,
        args.momentum,
        args.weight_decay,
        megabytes(memory[0]),
        megabytes(memory[1]),
        megabytes(optimizers.iter().map(|o| o.memory).sum())
    );
    for step in 0..steps {
        Watchdog::step(&watchdog, step);
        net.forward_backward()?;
        for optimizer in &optimizers {
            optimizer.update()?;
        }
        // The loss of this step's forward pass, before its update.
        let value = l2_loss(&net.read_output()?);
        report_step(args, (step, steps), value, || {
            Ok(format!("l2_loss = {value}"))
        })?;
    }
    write_weights(args, || net.read_weights())
}

/// Set by Ctrl-C: the run stops between two steps and writes its checkpoint.
static STOP: AtomicBool = AtomicBool::new(false);

/// `train --epochs`: a classifier trained on a data set (see `convnet_wgpu::training`).
fn train_on_data(args: &TrainArgs, world: &World) -> anyhow::Result<()> {
    let data = &args.data;
    let epochs = data.epochs.unwrap_or(0);
    if epochs == 0 {
        anyhow::bail!("--epochs must be at least 1");
    }
    if args.steps.is_some() {
        anyhow::bail!("--steps is for one fixed batch; on a data set, --epochs says how long");
    }
    let lr = args.lr.unwrap_or(0.01);
    if !(lr.is_finite() && lr > 0.0 && (0.0..1.0).contains(&args.momentum)) {
        anyhow::bail!("--lr must be positive and --momentum in [0, 1)");
    }
    if !(args.weight_decay.is_finite() && args.weight_decay >= 0.0) {
        anyhow::bail!("--weight-decay must be a finite number >= 0");
    }
    let data_parallel = args.device.parallel == super::Parallel::Data;
    if args.device.devices != 1 && !data_parallel {
        anyhow::bail!(
            "training on a data set over several devices needs --parallel data (replicas; the \
             two-device layout trains one fixed batch)"
        );
    }
    args.device.refuse_data_parallel_flags()?;
    let schedule: Schedule = data.lr_schedule.parse()?;
    let (Some(input), Some(labels)) = (&args.source.input, &args.loss.labels) else {
        anyhow::bail!("training on a data set needs its images (--input) and --labels");
    };
    if matches!(args.loss.loss, Some(super::LossChoice::L2)) {
        anyhow::bail!("training on a data set minimises cross-entropy; drop --loss l2");
    }
    let checkpoint_path = data
        .checkpoint
        .clone()
        .or_else(|| (args.out.as_ref()).map(|out| out.with_extension("checkpoint.safetensors")));
    for path in [&args.out, &checkpoint_path, &data.order_out, &data.curve]
        .into_iter()
        .flatten()
    {
        files::check_writable(path)?;
    }

    let network = args.model.network.build()?;
    let all = LabelledImages::load(input, labels, &network)?;
    let (train_set, held_out) = match (&data.val_input, &data.val_labels, data.val_split) {
        (Some(images), Some(labels), _) => {
            (all, Some(LabelledImages::load(images, labels, &network)?))
        }
        (_, _, Some(fraction)) => {
            let (train, held) = all.split(fraction, args.source.seed)?;
            (train, Some(held))
        }
        _ => (all, None),
    };
    if let Some(held) = &held_out {
        if !held.stored_as(&train_set) {
            anyhow::bail!(
                "the held-out images are stored as {:?}, the training images as {:?}; give both \
                 in one format",
                held.pixels(),
                train_set.pixels()
            );
        }
    }
    let pixels = data.normalisation.format_for(&train_set)?;
    let settings = Settings {
        model: describe_model(&network),
        batch: args.model.batch,
        epochs,
        learning_rate: lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        schedule: schedule.to_string(),
        seed: args.source.seed,
        drop_last: data.drop_last,
        training_images: train_set.len(),
        mean: pixels.as_ref().map_or(Vec::new(), |p| p.mean.clone()),
        std: pixels.as_ref().map_or(Vec::new(), |p| p.std.clone()),
        precision: args.device.variants()?.precision,
    };
    let plan = network.plan(1)?;
    let resumed = match &data.resume {
        Some(path) => Some(resume_from(path, &plan, &settings, data.force)?),
        None => None,
    };
    let weights = match (&resumed, &args.source.weights) {
        (Some(checkpoint), Some(_)) => {
            anyhow::bail!(
                "--resume continues from the checkpoint's weights (epoch {}); drop --weights",
                checkpoint.progress.epoch
            )
        }
        (Some(checkpoint), None) => checkpoint.weights.clone(),
        (None, Some(path)) => Weights::load(path, &network)?,
        (None, None) => Weights::init(&network, args.source.seed)?,
    };
    // Every rank computes alike; rank 0 writes.
    let writes = world.rank() == 0;
    if let (Some(path), true) = (&data.order_out, writes) {
        // Rows of the --input file: with --val-split, the training images are some of them.
        let orders: Vec<usize> = (0..epochs)
            .flat_map(|e| data::epoch_order(train_set.len(), settings.seed, e))
            .map(|position| train_set.row(position))
            .collect();
        npy::write_indices(path, &[epochs, train_set.len()], &orders)?;
    }

    let quiet = data.json;
    let held_out_len = held_out.as_ref().map_or(0, LabelledImages::len);
    let images = (train_set.len(), held_out_len);
    let contexts = match data_parallel {
        true => super::open_replica_contexts_quiet_if(&args.device, quiet)?,
        false => vec![super::open_context_quiet_if(&args.device, quiet)?],
    };
    let devices: Vec<&convnet_wgpu::gpu::GpuContext> = contexts.iter().collect();
    let watchdog = Watchdog::start(
        args.device.timeout,
        format!("train on {}", devices[0].info().name),
    )?;
    let nets = match data_parallel {
        true => {
            let mut replicas = DataParallel::over_ranks(
                Some(world),
                &devices,
                &network,
                settings.batch,
                &weights,
                (LossKind::CrossEntropy, args.device.sync_batch_norm),
            )?;
            args.device.configure(&mut replicas);
            Networks::over_replicas(
                replicas,
                &network,
                images,
                settings.drop_last,
                pixels.as_ref(),
            )?
        }
        false => Networks::new(
            devices[0],
            &network,
            &weights,
            settings.batch,
            images,
            settings.drop_last,
            pixels.as_ref(),
        )?,
    };
    let mut trainer = Trainer::new(&nets, settings, schedule, resumed.as_ref())?;
    // The first Ctrl-C stops the run between two steps (and writes the checkpoint); a second
    // one, for a run that does not stop, ends the process at once.
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::Relaxed) {
            eprintln!("error: interrupted twice; stopped without a checkpoint");
            std::process::exit(130);
        }
    })
    .map_err(|e| anyhow::anyhow!("cannot watch for Ctrl-C: {e}"))?;
    let steps = steps_per_epoch(train_set.len(), args.model.batch, data.drop_last);
    if !quiet {
        println!(
            "training {} on {} images ({} steps of {} per epoch{}{}), {}: SGD lr {:e} ({}), \
             momentum {}, weight decay {}; {}{}",
            network.name,
            train_set.len(),
            steps,
            args.model.batch,
            if nets.has_last_batch() {
                ", the last smaller"
            } else {
                ""
            },
            describe_replicas(&nets, world),
            match &held_out {
                Some(set) => format!("{} held out", set.len()),
                None => "nothing held out".into(),
            },
            lr,
            schedule,
            args.momentum,
            args.weight_decay,
            describe_training_memory(&nets),
            match &resumed {
                Some(c) => format!(
                    "; resumed at epoch {}, step {}",
                    c.progress.epoch, c.progress.step_in_epoch
                ),
                None => String::new(),
            }
        );
    }
    let mut step_losses: Vec<StepRecord> = Vec::new();
    while !trainer.finished() {
        let epoch = trainer.progress.epoch;
        let bar = (!quiet && std::io::stdout().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(steps as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {msg} (ETA {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
            bar.set_position(trainer.progress.step_in_epoch as u64);
            bar
        });
        let epoch_start = std::time::Instant::now();
        // Images trained on in the epoch (whole batches, over every rank): the rate so far.
        let mut images_now = 0usize;
        let outcome = trainer.run_epoch(&train_set, held_out.as_ref(), &STOP, |record| {
            Watchdog::step(&watchdog, record.global_step);
            step_losses.push(*record);
            images_now += record.images;
            let rate = images_now as f64 / epoch_start.elapsed().as_secs_f64();
            let totals = &record.epoch_so_far;
            let so_far = format!(
                "loss {:.4}, top-1 {:.1}%, {rate:.0} images/s",
                totals.loss_sum / totals.images as f64,
                100.0 * totals.correct as f64 / totals.images as f64
            );
            match &bar {
                Some(bar) => {
                    bar.set_position(record.step as u64 + 1);
                    bar.set_message(so_far);
                }
                None if !quiet && (record.step + 1) % (steps / 10).max(1) == 0 => {
                    println!(
                        "epoch {}, step {}/{steps}: {so_far}",
                        epoch + 1,
                        record.step + 1
                    )
                }
                None => {}
            }
        });
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        let outcome = outcome.map_err(|e| {
            let kept = match &checkpoint_path {
                Some(path) if path.exists() => {
                    format!("; the last checkpoint, {}, is kept", path.display())
                }
                _ => String::new(),
            };
            anyhow::anyhow!("{e}{kept}")
        })?;
        match outcome {
            EpochEnd::Finished(record) => {
                if !quiet {
                    println!("{}", describe_epoch(&record, epochs));
                }
                if let (Some(path), true) = (&checkpoint_path, writes) {
                    trainer.checkpoint()?.save(path)?;
                }
            }
            EpochEnd::Interrupted => {
                let progress = &trainer.progress;
                let at = format!(
                    "interrupted at epoch {}, step {}",
                    progress.epoch + 1,
                    progress.step_in_epoch
                );
                if let (Some(path), true) = (&checkpoint_path, writes) {
                    trainer.checkpoint()?.save(path)?;
                }
                // Every rank waits for rank 0's checkpoint: an error on any rank ends them all.
                world.sum_f64(0.0);
                match (&checkpoint_path, writes) {
                    (Some(path), true) => anyhow::bail!(
                        "{at}; checkpoint written to {}: continue with --resume {}",
                        path.display(),
                        path.display()
                    ),
                    (Some(_), false) => anyhow::bail!("{at}; rank 0 wrote the checkpoint"),
                    (None, _) => {
                        anyhow::bail!("{at}; nothing written (no --checkpoint or --out)")
                    }
                }
            }
        }
    }
    let history = &trainer.progress.history;
    if !writes {
        return Ok(());
    }
    if let Some(path) = &data.curve {
        files::write_atomically(path, curves(history).as_bytes())?;
    }
    if let Some(path) = &args.out {
        nets.first().read_weights()?.save(path)?;
    }
    if quiet {
        let run = serde_json::json!({
            "adapter": devices[0].info().name,
            "replicas": match &nets.train {
                Training::DataParallel { batch, .. } if !batch.replicas.parts_of_one_batch() => {
                    batch.replicas.replicas_in_all()
                }
                _ => 1,
            },
            "parts_per_batch": match &nets.train {
                Training::DataParallel { batch, .. } if batch.replicas.parts_of_one_batch() => {
                    batch.replicas.replicas().len()
                }
                _ => 1,
            },
            "settings": trainer.settings(),
            "epochs": history,
            "steps": step_losses,
        });
        println!("{}", serde_json::to_string_pretty(&run)?);
    } else {
        for path in [&args.out, &checkpoint_path, &data.curve, &data.order_out]
            .into_iter()
            .flatten()
        {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// GPU memory of a run's training networks: one device's, every part's on one device, or one
/// replica's.
fn describe_training_memory(nets: &Networks) -> String {
    let Training::DataParallel { batch, .. } = &nets.train else {
        return describe_memory(&nets.first().memory());
    };
    let replicas = &batch.replicas;
    match replicas.parts_of_one_batch() {
        true => {
            let total = (replicas.replicas().iter()).fold(MemoryUse::default(), |total, part| {
                total.plus(&part.memory())
            });
            describe_memory(&total)
        }
        false => format!("{} per replica", describe_memory(&nets.first().memory())),
    }
}

/// How a run's batches are split, for its first line: nothing on one device.
fn describe_replicas(nets: &Networks, world: &World) -> String {
    let Training::DataParallel { batch, .. } = &nets.train else {
        return String::new();
    };
    let replicas = &batch.replicas;
    if replicas.parts_of_one_batch() {
        return format!(", each {}", describe_parts(replicas.shards()));
    }
    let ranks = match world.size() {
        1 => String::new(),
        n => format!(" on each of {n} MPI ranks"),
    };
    format!(
        ", split over {} devices{ranks} as {:?} ({:?} all-reduce{})",
        replicas.replicas().len(),
        replicas.shards(),
        replicas.all_reduce(),
        match replicas.synced_batch_norms() {
            true => ", batch norms synchronised",
            false => "",
        }
    )
}

/// The checkpoint at `path`, checked against the network and this run's settings: settings
/// that differ are an error naming them, unless `force`.
fn resume_from(
    path: &Path,
    plan: &[LayerPlan],
    settings: &Settings,
    force: bool,
) -> anyhow::Result<Checkpoint> {
    let checkpoint = Checkpoint::load(path, plan)?;
    let saved = &checkpoint.settings;
    let mid_epoch = checkpoint.progress.step_in_epoch > 0;
    let reorders = saved.batch != settings.batch
        || saved.drop_last != settings.drop_last
        || saved.seed != settings.seed
        || saved.training_images != settings.training_images;
    if mid_epoch && reorders {
        anyhow::bail!(
            "{}: the checkpoint stopped in the middle of an epoch, whose order and batches \
             --batch, --drop-last, --seed and the training images fix: give the checkpoint's \
             (batch {}, drop_last {}, seed {}, {} images), even with --force",
            path.display(),
            saved.batch,
            saved.drop_last,
            saved.seed,
            saved.training_images
        );
    }
    let differences = checkpoint.settings.differences(settings);
    if !differences.is_empty() && !force {
        anyhow::bail!(
            "{}: the run's settings differ from the checkpoint's ({}); add --force to continue \
             anyway",
            path.display(),
            differences.join("; ")
        );
    }
    if checkpoint.progress.epoch >= settings.epochs {
        anyhow::bail!(
            "{}: the run already finished its {} epochs",
            path.display(),
            checkpoint.progress.epoch
        );
    }
    Ok(checkpoint)
}

/// The network as a checkpoint names it: its name, classes and input size.
fn describe_model(network: &Network) -> String {
    let classes = network
        .plan(1)
        .ok()
        .and_then(|p| p.last().map(|l| l.output.len()));
    format!(
        "{} ({} classes, {}x{}x{} input)",
        network.name,
        classes.unwrap_or(0),
        network.input.channels,
        network.input.height,
        network.input.width
    )
}

/// One line per finished epoch.
fn describe_epoch(record: &EpochRecord, epochs: usize) -> String {
    let held_out = match &record.validation {
        Some(v) => format!(
            "; held out: loss {:.4}, top-1 {:.2}%, top-5 {:.2}%",
            v.loss,
            100.0 * v.top1,
            100.0 * v.top5
        ),
        None => String::new(),
    };
    format!(
        "epoch {}/{epochs}: lr {:e}, train loss {:.4}, top-1 {:.2}%{held_out}; {:.1} s, {:.1} \
         images/s (input {:.1} ms, GPU idle for input at most {:.1} ms)",
        record.epoch + 1,
        record.learning_rate,
        record.train_loss,
        100.0 * record.train_top1,
        record.seconds,
        record.images_per_s,
        record.input_seconds * 1e3,
        record.gpu_idle_for_input_at_most_seconds * 1e3
    )
}

/// The loss and top-1 accuracy per epoch, training and held out, as an SVG.
fn curves(history: &[EpochRecord]) -> String {
    let series = |name: &str, value: &dyn Fn(&EpochRecord) -> Option<f64>| Series {
        name: name.into(),
        points: (history.iter())
            .filter_map(|r| Some((r.epoch as f64 + 1.0, value(r)?)))
            .collect(),
    };
    let held_out = history.iter().any(|r| r.validation.is_some());
    let mut loss = vec![series("training", &|r| Some(r.train_loss))];
    let mut top1 = vec![series("training", &|r| Some(r.train_top1))];
    if held_out {
        loss.push(series("held out", &|r| r.validation.map(|v| v.loss)));
        top1.push(series("held out", &|r| r.validation.map(|v| v.top1)));
    }
    chart::curves_svg(&[
        ("loss (cross-entropy)".into(), "epoch".into(), loss),
        ("top-1 accuracy".into(), "epoch".into(), top1),
    ])
}
