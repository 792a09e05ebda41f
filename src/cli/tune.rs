//! `convnet tune`: every convolution timed under each candidate kernel on this adapter, the
//! winners written to the tune cache that `bench`, `check`, `run` and `train` read.

use std::path::Path;

use convnet_wgpu::files;
use convnet_wgpu::gpu::{tuning, Precision};
use convnet_wgpu::tune::{self, TuneReport};

use super::{open_context, DeviceArgs, ModelArgs};

/// `convnet tune`: measure, print a table, write the cache (and the report as JSON to `json`).
pub(crate) fn tune(
    model: &ModelArgs,
    device: &DeviceArgs,
    seed: u64,
    json: Option<&Path>,
) -> anyhow::Result<()> {
    if device.variants()?.precision == Precision::F16 {
        anyhow::bail!("tune measures f32 kernels: drop --precision f16");
    }
    let network = model.network.build()?;
    let path = device.tune_cache_path()?;
    if let Some(json) = json {
        files::check_writable(json)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create the directory: {e}", dir.display()))?;
    }
    convnet_wgpu::files::check_writable(&path)?;
    let mut ctx = open_context(device)?;
    let report = tune::tune(&mut ctx, &network, model.batch, seed, |line| {
        println!("{line}")
    })?;
    print_report(&report);
    let measured = report.cache(ctx.info());
    if let Err(e) = tuning::read_cache(&path) {
        eprintln!("warning: {e}; replaced by this tune's");
    }
    tuning::store(&path, ctx.info(), &report.keys(), &measured)?;
    if let Some(json) = json {
        files::write_atomically(json, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    println!(
        "wrote {} choices for {} convolution shapes and {} for {} fully connected shapes to {} \
         ({:.1} s)",
        measured.entries.len(),
        report.shapes.len(),
        measured.linear.len(),
        report.linear.len(),
        path.display(),
        report.seconds
    );
    Ok(())
}

/// One candidate's row: the shape's layers on its first (the first named, and how many more),
/// the candidate, its forward and forward+backward milliseconds, and why it was rejected.
fn print_candidate(
    layers: Option<&Vec<String>>,
    (candidate, forward_s, training_s, rejected): (String, f64, Option<f64>, Option<&str>),
) {
    let names = match layers.map(Vec::as_slice) {
        Some([first]) => first.clone(),
        Some([first, more @ ..]) => format!("{first} (+{})", more.len()),
        _ => String::new(),
    };
    println!(
        "{names:<28} {candidate:<28} {:>10.2} {:>14}{}",
        forward_s * 1e3,
        training_s.map_or("-".to_string(), |s| format!("{:.2}", s * 1e3)),
        rejected.map_or(String::new(), |why| format!("  rejected: {why}"))
    );
}

/// A row per layer shape: each candidate's forward and forward+backward milliseconds, then the
/// winners.
fn print_report(report: &TuneReport) {
    println!(
        "\n{:<28} {:<28} {:>10} {:>14}",
        "layers", "candidate", "forward ms", "fwd+bwd ms"
    );
    for shape in &report.shapes {
        for (i, c) in shape.candidates.iter().enumerate() {
            let training = c.training_s();
            let row = (
                c.choice.to_string(),
                c.forward_s,
                training,
                c.rejected.as_deref(),
            );
            print_candidate((i == 0).then_some(&shape.layers), row);
        }
        let or_none = |c: Option<tuning::ConvChoice>| c.map_or("none".into(), |c| c.to_string());
        println!(
            "{:<28} inference: {}, training: {}",
            "",
            or_none(shape.inference),
            or_none(shape.training)
        );
    }
    for shape in &report.linear {
        for (i, c) in shape.candidates.iter().enumerate() {
            let row = (
                c.kernel.to_string(),
                c.forward_s,
                None,
                c.rejected.as_deref(),
            );
            print_candidate((i == 0).then_some(&shape.layers), row);
        }
        let fastest = shape.fastest.map_or("none".into(), |k| k.to_string());
        println!("{:<28} both passes: {fastest}", "");
    }
}
