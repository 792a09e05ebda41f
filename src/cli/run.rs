//! `convnet run`: a user's weights and input; the logits and, if asked, the gradients written.

use std::path::Path;

use convnet_wgpu::gpu::{GpuNetwork, Keep};
use convnet_wgpu::watchdog::Watchdog;
use convnet_wgpu::{files, npy};

use super::{
    describe_loss, load_or_init, open_context, BatchNormArgs, DeviceArgs, LossArgs, NetworkArgs,
};

/// `convnet run`: a user's weights and input through the network; logits and gradients out.
pub(crate) fn run(
    network: &NetworkArgs,
    device: &DeviceArgs,
    batch_norm: &BatchNormArgs,
    (weights, input): (&Path, &Path),
    (output, grads): (Option<&Path>, Option<&Path>),
    loss: &LossArgs,
) -> anyhow::Result<()> {
    for path in output.iter().chain(grads.iter()) {
        files::check_writable(path)?;
    }
    let network = network.build()?;
    let (plan, params, data) = load_or_init(&network, 1, Some(weights), Some(input), 0)?;
    // Gradients or a loss: a training forward pass (batch norms by the batch's statistics).
    let training = grads.is_some() || loss.given();
    let (gpu_network, params) = batch_norm.on_gpu(&network, &params, training)?;
    let plan = gpu_network.plan(plan[0].batch)?;
    let (loss, labels) = loss.resolve(&plan, true)?;
    let ctx = open_context(device)?;
    let _watchdog = Watchdog::start(device.timeout, format!("run on {}", ctx.info().name))?;
    let net = if training {
        GpuNetwork::training(&ctx, &plan, &params, &loss, Keep::WhatBackwardReads)?
    } else {
        GpuNetwork::new(&ctx, &plan, &params)?
    };
    net.upload_input(&data)?;
    if let Some(labels) = &labels {
        net.upload_labels(labels)?;
    }
    let gradients = match (training, grads) {
        (true, _) => {
            net.forward_backward()?;
            println!("{} = {:.6e}", describe_loss(&loss), net.read_loss()?);
            grads.map(|_| net.read_gradients()).transpose()?
        }
        (false, _) => {
            net.forward()?;
            None
        }
    };
    let logits = net.read_output()?;
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
            npy::write(path, &shape, &logits)?;
            println!("wrote {} {:?}", path.display(), shape);
        }
        None => println!("logits {shape:?} computed (pass --output to save them)"),
    }
    if let (Some(path), Some(gradients)) = (grads, gradients) {
        gradients.save(path)?;
        println!(
            "wrote {} (gradients of {})",
            path.display(),
            describe_loss(&loss)
        );
    }
    Ok(())
}
