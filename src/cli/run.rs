//! `convnet run`: a user's weights and input; the logits and, if asked, the gradients written.

use std::path::Path;

use convnet_wgpu::gpu::GpuNetwork;
use convnet_wgpu::watchdog::Watchdog;
use convnet_wgpu::{files, npy, reference};

use super::{load_or_init, open_context, BatchNormArgs, DeviceArgs, NetworkArgs};

/// `convnet run`: a user's weights and input through the network; logits and gradients out.
pub(crate) fn run(
    network: &NetworkArgs,
    device: &DeviceArgs,
    batch_norm: &BatchNormArgs,
    (weights, input): (&Path, &Path),
    output: Option<&Path>,
    grads: Option<&Path>,
) -> anyhow::Result<()> {
    for path in output.iter().chain(grads.iter()) {
        files::check_writable(path)?;
    }
    let network = network.build()?;
    let (plan, params, data) = load_or_init(&network, 1, Some(weights), Some(input), 0)?;
    let (gpu_network, params) = batch_norm.on_gpu(&network, &params, grads.is_some())?;
    let plan = gpu_network.plan(plan[0].batch)?;
    let ctx = open_context(device)?;
    let _watchdog = Watchdog::start(device.timeout, format!("run on {}", ctx.info().name))?;
    let net = if grads.is_some() {
        GpuNetwork::with_gradients(&ctx, &plan, &params)?
    } else {
        GpuNetwork::new(&ctx, &plan, &params)?
    };
    net.upload_input(&data)?;
    let gradients = match grads {
        Some(_) => {
            net.forward_backward()?;
            Some(net.read_gradients()?)
        }
        None => {
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
        if let Some((name, _)) = gradients
            .iter()
            .find(|(_, t)| t.data.iter().any(|v| !v.is_finite()))
        {
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
            "wrote {} (gradients of l2_loss = {:.6e})",
            path.display(),
            reference::l2_loss(&logits)
        );
    }
    Ok(())
}
