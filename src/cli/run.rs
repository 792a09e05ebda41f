//! `convnet run`: a user's weights and input; the logits and, if asked, the gradients written.

use std::path::Path;

use convnet_wgpu::distributed::World;
use convnet_wgpu::gpu::{DataParallel, Keep, PlacedNetwork, TwoDeviceNetwork};
use convnet_wgpu::model::{LayerPlan, Network};
use convnet_wgpu::watchdog::Watchdog;
use convnet_wgpu::weights::Weights;
use convnet_wgpu::{files, npy, reference};

use super::{
    describe_loss, describe_parts, load_or_init, open_context, open_contexts, BatchNormArgs,
    DeviceArgs, LossArgs, NetworkArgs,
};

/// `convnet run`: a user's weights and input through the network; logits and gradients out.
pub(crate) fn run(
    world: &World,
    network: &NetworkArgs,
    device: &DeviceArgs,
    batch_norm: &BatchNormArgs,
    (weights, input): (&Path, &Path),
    (output, grads): (Option<&Path>, Option<&Path>),
    loss: &LossArgs,
) -> anyhow::Result<()> {
    if world.size() > 1 && device.parallel != super::Parallel::Data {
        anyhow::bail!("under an MPI launcher, `run` runs with --parallel data");
    }
    for path in output.iter().chain(grads.iter()) {
        files::check_writable(path)?;
    }
    let network = network.build()?;
    let (plan, params, data) = load_or_init(&network, 1, Some(weights), Some(input), 0)?;
    if device.parallel == super::Parallel::Data {
        return run_data_parallel(
            (world, device),
            (&network, &plan, &params, &data),
            (output, grads),
            loss,
        );
    }
    if device.devices == 2 {
        return run_on_two_devices(
            device,
            (&network, &plan, &params, &data),
            (output, grads),
            loss,
        );
    }
    // Gradients or a loss: a training forward pass (batch norms by the batch's statistics).
    let training = grads.is_some() || loss.given();
    let (gpu_network, params) = batch_norm.on_gpu(&network, &params, training)?;
    let plan = gpu_network.plan(plan[0].batch)?;
    let (loss, labels) = loss.resolve(&plan, true)?;
    let ctx = open_context(device)?;
    let _watchdog = Watchdog::start(device.timeout, format!("run on {}", ctx.info().name))?;
    // Whole, or in parts along the batch where a tensor exceeds one storage binding.
    let training_with = training.then_some((&loss, Keep::WhatBackwardReads));
    let placed = PlacedNetwork::on_one_device(&ctx, &gpu_network, &plan, &params, training_with)?;
    if let PlacedNetwork::Parts(parts) = &placed {
        println!("the batch runs {}", describe_parts(&parts.sizes()));
    }
    let net = placed.runner();
    net.upload_input(&data)?;
    if let Some(labels) = &labels {
        placed.upload_labels(labels)?;
    }
    let gradients = match (training, grads) {
        (true, _) => {
            net.forward_backward()?;
            println!("{} = {:.6e}", describe_loss(&loss), placed.read_loss()?);
            grads.map(|_| net.read_gradients()).transpose()?
        }
        (false, _) => {
            net.forward()?;
            None
        }
    };
    let logits = net.read_layer(plan.len() - 1)?;
    write_outputs(
        &plan,
        &logits,
        (output, grads),
        gradients,
        &describe_loss(&loss),
    )
}

/// `run --devices 2`: a two-device layout (`alexnet-2gpu`) split over two devices, with the
/// seed's `l2_loss` (the layout's backward differentiates it alone).
fn run_on_two_devices(
    device: &DeviceArgs,
    (network, plan, params, data): (&Network, &[LayerPlan], &Weights, &[f32]),
    (output, grads): (Option<&Path>, Option<&Path>),
    loss: &LossArgs,
) -> anyhow::Result<()> {
    loss.require_l2()?;
    let contexts = open_contexts(device)?;
    let _watchdog = Watchdog::start(device.timeout, "run on two devices".to_string())?;
    let net = TwoDeviceNetwork::new([&contexts[0], &contexts[1]], network, plan[0].batch, params)?;
    net.upload_input(data)?;
    let gradients = match grads.is_some() || loss.given() {
        true => {
            net.forward_backward()?;
            let logits = net.read_output()?;
            println!("l2_loss(logits) = {:.6e}", l2_loss(&logits));
            grads.map(|_| net.read_gradients()).transpose()?
        }
        false => {
            net.forward()?;
            None
        }
    };
    let logits = net.read_output()?;
    write_outputs(plan, &logits, (output, grads), gradients, "l2_loss(logits)")
}

/// `run --parallel data --devices N`: the training pass split over N replicas, each on a shard
/// of the batch; the loss and the gradients are the whole batch's (batch norms normalise each
/// shard by its own statistics, as DistributedDataParallel without SyncBatchNorm).
fn run_data_parallel(
    (world, device): (&World, &DeviceArgs),
    (network, plan, params, data): (&Network, &[LayerPlan], &Weights, &[f32]),
    (output, grads): (Option<&Path>, Option<&Path>),
    loss: &LossArgs,
) -> anyhow::Result<()> {
    if grads.is_none() && !loss.given() {
        anyhow::bail!("--parallel data splits a training pass; add --grads, --labels or --loss");
    }
    let (loss, labels) = loss.resolve(plan, true)?;
    let contexts = super::open_replica_contexts(device)?;
    let devices: Vec<&convnet_wgpu::gpu::GpuContext> = contexts.iter().collect();
    let _watchdog = Watchdog::start(device.timeout, "data-parallel run".to_string())?;
    let kind = (loss.kind, device.sync_batch_norm);
    let mut replicas =
        DataParallel::over_ranks(Some(world), &devices, network, plan[0].batch, params, kind)?;
    device.configure(&mut replicas);
    replicas.upload(data, labels.as_deref())?;
    let stats = replicas.gradients()?;
    println!(
        "{} = {:.6e} (shards {:?}; all-reduce {} in {} buckets, {:.1} ms on the host)",
        describe_loss(&loss),
        replicas.read_loss()?,
        replicas.shards(),
        super::megabytes(stats.bytes),
        stats.buckets,
        stats.seconds * 1e3
    );
    let logits = replicas.read_logits()?;
    let gradients = grads.map(|_| replicas.read_gradients()).transpose()?;
    if world.rank() > 0 {
        // Every rank holds the same; rank 0 writes them.
        return Ok(());
    }
    write_outputs(
        plan,
        &logits,
        (output, grads),
        gradients,
        &describe_loss(&loss),
    )
}

/// The seed's `l2_loss` of logits read back, in f64 ([`reference::l2_loss`]).
pub(crate) fn l2_loss(logits: &[f32]) -> f64 {
    let logits: Vec<f64> = logits.iter().map(|&v| f64::from(v)).collect();
    reference::l2_loss(&logits)
}

/// Writes the logits and the gradients where asked, after checking both are finite.
fn write_outputs(
    plan: &[LayerPlan],
    logits: &[f32],
    (output, grads): (Option<&Path>, Option<&Path>),
    gradients: Option<Weights>,
    loss: &str,
) -> anyhow::Result<()> {
    let last = plan.last().expect("a network has layers");
    let shape = [last.batch, last.output.len()];
    if let Some(bad) = logits.iter().position(|v| !v.is_finite()) {
        anyhow::bail!("the logits hold non-finite values (first at index {bad}); nothing written");
    }
    if let (Some(path), Some(gradients)) = (grads, &gradients) {
        if let Some(name) = gradients.first_non_finite() {
            anyhow::bail!(
                "gradient {name} holds non-finite values; {} not written",
                path.display()
            );
        }
    }
    match output {
        Some(path) => {
            npy::write(path, &shape, logits)?;
            println!("wrote {} {:?}", path.display(), shape);
        }
        None => println!("logits {shape:?} computed (pass --output to save them)"),
    }
    if let (Some(path), Some(gradients)) = (grads, gradients) {
        gradients.save(path)?;
        println!("wrote {} (gradients of {})", path.display(), loss);
    }
    Ok(())
}
