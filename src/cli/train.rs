//! `convnet train`: SGD with momentum on one fixed batch, the loss printed as it falls.

use std::path::PathBuf;

use clap::Args;
use convnet_wgpu::files;
use convnet_wgpu::gpu::{GpuNetwork, Keep, Sgd, SgdConfig, TwoDeviceNetwork};
use convnet_wgpu::model::{LayerPlan, Network};
use convnet_wgpu::watchdog::Watchdog;
use convnet_wgpu::weights::Weights;

use super::run::l2_loss;
use super::{
    describe_loss, describe_memory, megabytes, open_context, open_contexts, DeviceArgs, LossArgs,
    ModelArgs, SourceArgs,
};

#[derive(Args)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Learning rate. The post's loss, sum(logits^2)/2, starts near 3e10 per image with its
    /// initialisation, so its gradients are huge and the rate tiny; 1e-11 falls steadily at
    /// batch 2, 1e-10 diverges. Scale it down with larger batches (the loss sums over images).
    #[arg(long, default_value_t = 1e-11)]
    lr: f32,
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
}

/// `convnet train`: SGD on one fixed batch.
pub(crate) fn train(args: &TrainArgs) -> anyhow::Result<()> {
    if args.steps == 0 {
        anyhow::bail!("--steps must be at least 1");
    }
    if !(args.lr.is_finite() && args.lr > 0.0 && (0.0..1.0).contains(&args.momentum)) {
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
        learning_rate: args.lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
    };
    if args.device.devices == 2 {
        return train_on_two_devices(args, (&network, &plan, &params, &data), config);
    }
    let ctx = open_context(&args.device)?;
    let watchdog = Watchdog::start(args.device.timeout, format!("train on {}", ctx.info().name))?;
    let (loss, labels) = args.loss.resolve(&plan, args.source.has_input())?;
    let net = GpuNetwork::training(&ctx, &plan, &params, &loss, Keep::WhatBackwardReads)?;
    if let Some(labels) = &labels {
        net.upload_labels(labels)?;
    }
    let sgd = Sgd::new(&net, config)?;
    net.upload_input(&data)?;
    println!(
        "training {} on one batch of {}, loss {}: SGD lr {:e}, momentum {}, weight decay {}; {} + \
         velocities {}",
        network.name,
        plan[0].batch,
        describe_loss(&loss),
        args.lr,
        args.momentum,
        args.weight_decay,
        describe_memory(&net.memory()),
        megabytes(sgd.memory)
    );
    for step in 0..args.steps {
        Watchdog::step(&watchdog, step);
        sgd.step()?;
        // The loss of this step's forward pass, before its update; checked every step, so that
        // a divergence is caught at the step it happens.
        report_step(args, step, net.read_loss()?, || first_non_finite(&net))?;
    }
    write_weights(args, || net.read_weights())
}

/// Prints a step's loss (at step 0, every tenth and the last); a loss that is not finite ends
/// the run, saying what `diagnose` finds.
fn report_step(
    args: &TrainArgs,
    step: usize,
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
    if step.is_multiple_of(10) || step + 1 == args.steps {
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
        read()?.save(path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `train --devices 2`: a two-device layout (`alexnet-2gpu`) trained split over two devices, each
/// device updating the parameter rows it holds, on the seed's `l2_loss`.
fn train_on_two_devices(
    args: &TrainArgs,
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
        args.lr,
        args.momentum,
        args.weight_decay,
        megabytes(memory[0]),
        megabytes(memory[1]),
        megabytes(optimizers.iter().map(|o| o.memory).sum())
    );
    for step in 0..args.steps {
        Watchdog::step(&watchdog, step);
        net.forward_backward()?;
        for optimizer in &optimizers {
            optimizer.update()?;
        }
        // The loss of this step's forward pass, before its update.
        let value = l2_loss(&net.read_output()?);
        report_step(args, step, value, || Ok(format!("l2_loss = {value}")))?;
    }
    write_weights(args, || net.read_weights())
}

/// The first tensor of the last step that holds a non-finite value: a layer's output, else a
/// gradient, else a weight after the update.
fn first_non_finite(net: &GpuNetwork) -> anyhow::Result<String> {
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
