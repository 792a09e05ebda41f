//! `convnet check`: every layer's output and every parameter gradient against the CPU reference.

use std::process::ExitCode;

use convnet_wgpu::distributed::World;
use convnet_wgpu::gpu::{GpuContext, GpuNetwork, Keep, PlacedNetwork, Precision, Runner};
use convnet_wgpu::model::{LayerKind, LayerPlan, Loss, LossKind, Network};
use convnet_wgpu::watchdog::Watchdog;
use convnet_wgpu::weights::Weights;
use convnet_wgpu::{check, Error};

use super::{
    open_contexts, open_replica_contexts, placed_memory, BatchNormArgs, DeviceArgs, ModelArgs,
    Parallel, SourceArgs,
};

/// A table of deviations, each judged against `tolerance` (`None`: reported, not judged).
fn print_deviations(
    title: &str,
    rows: &[&check::Deviation],
    tolerance: Option<f32>,
    extra: &[String],
) {
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(14);
    println!(
        "{:<width$} {:>12} {:>12} {:>12}",
        title, "max |error|", "max |ref|", "relative"
    );
    for (i, r) in rows.iter().enumerate() {
        println!(
            "{:<width$} {:>12.3e} {:>12.3e} {:>12.3e}  {}{}",
            r.name,
            r.max_abs,
            r.max_reference,
            r.relative,
            match tolerance {
                None => "",
                Some(tolerance) if r.within(tolerance) => "ok",
                Some(_) => "FAIL",
            },
            extra.get(i).map_or(String::new(), |e| format!("  {e}"))
        );
    }
}

/// As [`print_deviations`], judged at `tolerance`: the names of the rows beyond it, each with
/// `suffix` appended.
fn judge(
    title: &str,
    rows: &[&check::Deviation],
    (tolerance, extra): (f32, &[String]),
    suffix: &str,
) -> Vec<String> {
    print_deviations(title, rows, Some(tolerance), extra);
    (rows.iter())
        .filter(|r| !r.within(tolerance))
        .map(|r| format!("{}{suffix}", r.name))
        .collect()
}

/// `convnet check`: GPU against the CPU reference, layer by layer and gradient by gradient.
pub(crate) fn check(
    world: &World,
    args: &ModelArgs,
    device: &DeviceArgs,
    batch_norm: &BatchNormArgs,
    source: &SourceArgs,
) -> anyhow::Result<ExitCode> {
    let network = args.network.build()?;
    let (plan, params, data) = source.load(&network, args.batch)?;
    if device.parallel == Parallel::Data {
        return check_data_parallel((world, device), &network, &params, &data);
    }
    if world.size() > 1 {
        anyhow::bail!("under an MPI launcher, `check` runs with --parallel data");
    }
    let (gpu_network, gpu_params) = batch_norm.on_gpu(&network, &params, false)?;
    let gpu_plan = gpu_network.plan(plan[0].batch)?;
    let contexts = open_contexts(device)?;
    let _watchdog = Watchdog::start(
        device.timeout,
        format!("check on {}", contexts[0].info().name),
    )?;
    if contexts[0].precision() == Precision::F16 {
        if contexts.len() > 1 {
            anyhow::bail!("--precision f16 runs on one device: drop --devices");
        }
        let gpu = (&gpu_network, gpu_plan.as_slice(), &gpu_params);
        let reference = (plan.as_slice(), &params, data.as_slice());
        return check_f16(&contexts, gpu, reference);
    }
    // Batch norms run by the running statistics at inference and by the batch's in training:
    // a network with them checks its inference forward here, and its training forward and
    // gradients on a second, unfolded network below. Without them one network does both.
    let trains_alike = !plan
        .iter()
        .any(|l| matches!(l.layer.kind, LayerKind::BatchNorm { .. }));
    let placed = PlacedNetwork::new(
        &contexts,
        &gpu_network,
        &gpu_plan,
        &gpu_params,
        trains_alike.then_some(Keep::Everything),
    )?;
    let net = placed.runner();
    println!(
        "batch {}; {}",
        plan[0].batch,
        placed_memory(placed.memory())
    );
    if gpu_plan.len() != plan.len() {
        println!(
            "{} batch norms folded into their convolutions (--explicit-bn runs them on their own)",
            plan.len() - gpu_plan.len()
        );
    }

    let layers = check::forward(net, &plan, &params, &data)?;
    println!(
        "\nlayer outputs against the f32 CPU reference (tolerance: max |error| / max |ref| <= {:e})",
        check::TOLERANCE
    );
    let rows: Vec<_> = layers.iter().collect();
    let mut failed = judge("layer", &rows, (check::TOLERANCE, &[]), "");

    let training = if trains_alike {
        None
    } else {
        let loss = Loss::with_aux_heads(LossKind::L2, &plan);
        let training = GpuNetwork::training(&contexts[0], &plan, &params, &loss, Keep::Everything)?;
        let layers = check::training_forward(&training, &params, &data)?;
        println!(
            "\nlayer outputs in training mode (batch norms by the batch's statistics), each against \
             the f64 reference of that layer from the GPU's own inputs (tolerance {:e})",
            check::TOLERANCE
        );
        let rows: Vec<_> = layers.iter().collect();
        failed.extend(judge(
            "layer",
            &rows,
            (check::TOLERANCE, &[]),
            " (training)",
        ));
        Some(training)
    };
    let trained: &dyn Runner = match &training {
        Some(training) => training,
        None => net,
    };
    let grads = check::gradients(trained, &params, &data)?;
    println!(
        "\ngradients of {} against the f64 backward pass through the GPU's activations \
         (tolerance {:e});\nbeside it, the GPU and the f32 CPU reference against a fully f64 pass \
         (not judged: a max-pool near-tie can route a gradient differently, see docs/testing.md)",
        super::describe_loss(&Loss::with_aux_heads(LossKind::L2, &plan)),
        check::GRADIENT_TOLERANCE
    );
    let rows: Vec<&check::Deviation> = grads.iter().map(|g| &g.gpu).collect();
    let scale: Vec<String> = grads
        .iter()
        .map(|g| {
            format!(
                "(vs f64 pass: gpu {:.3e}, cpu f32 {:.3e})",
                g.gpu_vs_f64_chain.relative, g.cpu_f32_vs_f64_chain.relative
            )
        })
        .collect();
    let tolerance = (check::GRADIENT_TOLERANCE, scale.as_slice());
    failed.extend(judge("parameter", &rows, tolerance, ""));

    if let PlacedNetwork::Two(two) = &placed {
        let versus = check::one_device_versus_two(&contexts[0], two, &params, &data)?;
        println!(
            "\ntwo devices against the same layout on device 0 alone (tolerance {:e})",
            check::TOLERANCE
        );
        let rows: Vec<_> = versus.iter().collect();
        let tolerance = (check::TOLERANCE, &[][..]);
        failed.extend(judge("tensor", &rows, tolerance, " (1 vs 2 devices)"));
    }
    Ok(finish_check(failed))
}

/// `check --precision f16`: the inference forward pass with f16 storage, each layer judged
/// from the GPU's own inputs (its kernels and its storage alone), and the whole pass's drift
/// from the f32 reference reported; then a network that trains (mixed precision): its training
/// forward judged the same way, and its f32 gradients against the f64 backward pass through
/// its own f16 activations and weights.
fn check_f16(
    contexts: &[GpuContext],
    (gpu_network, gpu_plan, gpu_params): (&Network, &[LayerPlan], &Weights),
    (plan, params, data): (&[LayerPlan], &Weights, &[f32]),
) -> anyhow::Result<ExitCode> {
    let placed = PlacedNetwork::new(contexts, gpu_network, gpu_plan, gpu_params, None)?;
    let net = placed.runner();
    println!(
        "batch {}; f16 storage; {}",
        plan[0].batch,
        placed_memory(placed.memory())
    );
    let layers = check::forward_layer_by_layer(net, gpu_params, data)?;
    println!(
        "\nlayer outputs, each against the f64 reference of that layer from the GPU's own f16 \
         inputs (tolerance {:e})",
        check::F16_TOLERANCE
    );
    let rows: Vec<_> = layers.iter().collect();
    let mut failed = judge("layer", &rows, (check::F16_TOLERANCE, &[]), "");
    let drift = check::forward(net, plan, params, data)?;
    println!(
        "\nlayer outputs against the f32 CPU reference from the f32 input (not judged: f16's \
         rounding compounds over the layers; see docs/results.md#half-precision-storage)"
    );
    print_deviations("layer", &drift.iter().collect::<Vec<_>>(), None, &[]);

    let loss = Loss::with_aux_heads(LossKind::L2, plan);
    let training = GpuNetwork::training(&contexts[0], plan, params, &loss, Keep::Everything)?;
    let layers = check::training_forward(&training, params, data)?;
    println!(
        "\nlayer outputs in training mode, each against the f64 reference of that layer from the \
         GPU's own f16 inputs (tolerance {:e})",
        check::F16_TOLERANCE
    );
    let rows: Vec<_> = layers.iter().collect();
    failed.extend(judge(
        "layer",
        &rows,
        (check::F16_TOLERANCE, &[]),
        " (training)",
    ));
    let grads = check::gradients(&training, params, data)?;
    println!(
        "\ngradients of {} (f32) against the f64 backward pass through the GPU's f16 activations \
         and f16-rounded weights (tolerance {:e});\nbeside it, the GPU against a fully f64 pass \
         from the f32 weights (not judged: what f16 storage costs the gradients)",
        super::describe_loss(&loss),
        check::GRADIENT_TOLERANCE
    );
    let rows: Vec<&check::Deviation> = grads.iter().map(|g| &g.gpu).collect();
    let drift: Vec<String> = (grads.iter())
        .map(|g| format!("(vs f64 pass: {:.3e})", g.gpu_vs_f64_chain.relative))
        .collect();
    let tolerance = (check::GRADIENT_TOLERANCE, drift.as_slice());
    failed.extend(judge("parameter", &rows, tolerance, ""));
    Ok(finish_check(failed))
}

/// `check --parallel data --devices N`: the all-reduced gradients of N replicas against each
/// shard's on one device and against one device's over the whole batch, and the replicas after
/// one SGD step (the kernels themselves are what `check` on one device judges).
fn check_data_parallel(
    (world, device): (&World, &DeviceArgs),
    network: &Network,
    params: &Weights,
    data: &[f32],
) -> anyhow::Result<ExitCode> {
    let contexts = open_replica_contexts(device)?;
    let _watchdog = Watchdog::start(device.timeout, "data-parallel check".to_string())?;
    let devices: Vec<&GpuContext> = contexts.iter().collect();
    let input = (data, device.sync_batch_norm);
    let replicas = (Some(world), devices.as_slice());
    let result = check::data_parallel(replicas, network, params, input, |r| device.configure(r))?;
    let tolerance = check::DATA_PARALLEL_TOLERANCE;
    println!(
        "batch {} as shards {:?} over {} replicas, loss l2_loss(logits)\n\nall-reduced gradients \
         against each shard's on device 0 alone, summed in f64 (tolerance {tolerance:e})",
        data.len() / network.input.len(),
        result.shards,
        result.shards.len()
    );
    let rows: Vec<&check::Deviation> = result.against_shards.iter().collect();
    if rows.is_empty() {
        println!(
            "(not compared: synchronised batch norms normalise every shard by the whole batch's \
             statistics, so a shard alone is another computation)"
        );
    }
    let mut failed = judge(
        "parameter",
        &rows,
        (tolerance, &[]),
        " (against the shards)",
    );
    let rows: Vec<&check::Deviation> = result.against_one_device.iter().collect();
    if result.batch_norms && !result.synced_batch_norms {
        println!(
            "\nall-reduced gradients against one device's over the whole batch: not judged, each \
             replica's batch norms normalise its own shard (as DistributedDataParallel without \
             SyncBatchNorm), a different computation"
        );
        print_deviations("parameter", &rows, None, &[]);
    } else {
        let tolerance = match result.synced_batch_norms && result.batch_norms {
            true => check::SYNCED_BATCH_NORM_TOLERANCE,
            false => tolerance,
        };
        println!(
            "\nall-reduced gradients against one device's over the whole batch (tolerance \
             {tolerance:e})"
        );
        let suffix = " (against one device)";
        failed.extend(judge("parameter", &rows, (tolerance, &[]), suffix));
    }
    match &result.replicas_apart_after_step {
        None => {
            println!("\nafter one SGD step every replica holds replica 0's weights bit for bit")
        }
        Some(message) => {
            println!("\nafter one SGD step: {message}");
            failed.push("replicas after one step".into());
        }
    }
    Ok(finish_check(failed))
}

/// The end of `check`: success, or an error naming what was beyond tolerance.
fn finish_check(failed: Vec<String>) -> ExitCode {
    if failed.is_empty() {
        println!("\ncheck passed: every comparison within tolerance");
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "error: {}",
            Error::Mismatch(format!("beyond tolerance: {}", failed.join(", ")))
        );
        ExitCode::FAILURE
    }
}
