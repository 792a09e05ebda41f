//! `convnet`: the command line over the convnet-wgpu library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use convnet_wgpu::gpu::{self, AdapterChoice, GpuContext, GpuNetwork};
use convnet_wgpu::model::{self, LayerPlan, Network};
use convnet_wgpu::weights::{self, Weights};
use convnet_wgpu::{bench, check, npy, Error};

/// Classic convolutional networks on WGSL compute shaders: the seed's AlexNet benchmark on any
/// adapter, checked against a CPU reference.
#[derive(Parser)]
#[command(name = "convnet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter with the limits that matter.
    Adapters {
        #[arg(long)]
        backend: Option<String>,
    },
    /// Print the network's table: output shapes, neurons, parameters, FLOPs.
    Shapes {
        #[command(flatten)]
        model: ModelArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The seed's benchmark: time forward passes over random batches.
    Bench(BenchArgs),
    /// Run GPU and CPU reference on the same weights and input; compare every layer.
    Check {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        device: DeviceArgs,
        /// Weights file (safetensors); default: the seed's initialisation.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Input file (.npy, [N, 3, 224, 224]); default: the seed's random batch.
        #[arg(long)]
        input: Option<PathBuf>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Write the seed-initialised weights as safetensors.
    Init {
        #[arg(long, default_value = "alexnet")]
        model: String,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a user's weights and input; write the logits.
    Run {
        #[arg(long, default_value = "alexnet")]
        model: String,
        #[command(flatten)]
        device: DeviceArgs,
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        input: PathBuf,
        /// Where to write the logits (.npy, [N, classes]).
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ModelArgs {
    #[arg(long, default_value = "alexnet")]
    model: String,
    #[arg(long, default_value_t = 2)]
    batch: usize,
}

#[derive(Args)]
struct DeviceArgs {
    /// Adapter index (as `convnet adapters` lists them) or a substring of its name.
    #[arg(long)]
    adapter: Option<String>,
    /// vulkan, metal, dx12 or gl.
    #[arg(long)]
    backend: Option<String>,
}

impl DeviceArgs {
    fn choice(&self) -> AdapterChoice {
        AdapterChoice {
            adapter: self.adapter.clone(),
            backend: self.backend.clone(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Pass {
    Forward,
}

#[derive(Args)]
struct BenchArgs {
    #[arg(long, default_value = "alexnet")]
    model: String,
    #[command(flatten)]
    device: DeviceArgs,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Timed steps (default 100; 10 on a software adapter).
    #[arg(long)]
    batches: Option<usize>,
    /// Untimed warm-up steps (default 10; 1 on a software adapter).
    #[arg(long)]
    burn_in: Option<usize>,
    #[arg(long, value_enum, default_value = "forward")]
    pass: Pass,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Write every setting and timing as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Adapters { backend } => adapters(backend)?,
        Command::Shapes { model, json } => shapes(&model, json)?,
        Command::Bench(args) => bench(&args)?,
        Command::Check {
            model,
            device,
            weights,
            input,
            seed,
        } => return check(&model, &device, weights.as_deref(), input.as_deref(), seed),
        Command::Init { model, seed, out } => {
            let network = model::by_name(&model)?;
            Weights::init(&network, seed)?.save(&out)?;
            println!("wrote {} ({}, seed {seed})", out.display(), network.name);
        }
        Command::Run {
            model,
            device,
            weights,
            input,
            output,
        } => run_files(&model, &device, &weights, &input, output.as_deref())?,
    }
    Ok(ExitCode::SUCCESS)
}

fn adapters(backend: Option<String>) -> anyhow::Result<()> {
    let choice = AdapterChoice {
        adapter: None,
        backend,
    };
    for a in gpu::list_adapters(&choice)? {
        let l = &a.limits;
        println!(
            "{}: {} ({:?}, {:?}{})",
            a.index,
            a.info.name,
            a.info.backend,
            a.info.device_type,
            if a.software { ", software" } else { "" }
        );
        println!("   driver: {} {}", a.info.driver, a.info.driver_info);
        println!(
            "   max storage binding {} MiB, max buffer {} MiB, workgroup storage {} KiB, \
             invocations per workgroup {}, timestamp queries {}",
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            if a.timestamps { "yes" } else { "no" }
        );
    }
    Ok(())
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn shapes(args: &ModelArgs, json: bool) -> anyhow::Result<()> {
    let network = model::by_name(&args.model)?;
    let plan = network.plan(args.batch)?;
    if json {
        let rows: Vec<_> = plan
            .iter()
            .map(|l| {
                serde_json::json!({
                    "layer": l.layer.name,
                    "shape_nhwc": l.seed_shape(),
                    "neurons_per_image": l.output.len(),
                    "parameters": l.parameters(),
                    "forward_flops_per_image": l.flops_per_image(),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "model": network.name,
            "batch": args.batch,
            "layers": rows,
            "total_parameters": model::total_parameters(&plan),
            "total_forward_flops_per_image": model::total_flops_per_image(&plan),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{:<8} {:<20} {:>18} {:>12} {:>14}",
        "layer", "shape [N,H,W,C]", "neurons per image", "parameters", "MFLOP / image"
    );
    for l in &plan {
        let flops = l.flops_per_image();
        println!(
            "{:<8} {:<20} {:>18} {:>12} {:>14}",
            l.layer.name,
            format!("{:?}", l.seed_shape()),
            group_digits(l.output.len() as u64),
            group_digits(l.parameters() as u64),
            if flops > 0 {
                format!("{:.1}", flops as f64 / 1e6)
            } else {
                String::new()
            }
        );
    }
    let flops = model::total_flops_per_image(&plan);
    println!(
        "{:<8} {:<20} {:>18} {:>12} {:>14}",
        "total",
        "",
        "",
        group_digits(model::total_parameters(&plan) as u64),
        format!("{:.1}", flops as f64 / 1e6)
    );
    println!(
        "forward: {:.1} GFLOP per batch of {} (a multiply-add counts as 2 FLOP; convolutions and \
         fully connected layers only)",
        flops as f64 * args.batch as f64 / 1e9,
        args.batch
    );
    Ok(())
}

fn open_context(device: &DeviceArgs) -> anyhow::Result<GpuContext> {
    let ctx = GpuContext::new(&device.choice())?;
    println!("adapter: {}", ctx.describe());
    Ok(ctx)
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let network = model::by_name(&args.model)?;
    let plan = network.plan(args.batch)?;
    let ctx = open_context(&args.device)?;
    let (batches, burn_in) = match (args.batches, args.burn_in, ctx.software) {
        (None, None, true) => {
            println!(
                "software adapter: 10 timed steps after 1 warm-up instead of the seed's 100 after \
                 10 (set --batches / --burn-in to choose)"
            );
            (10, 1)
        }
        (batches, burn_in, _) => (batches.unwrap_or(100), burn_in.unwrap_or(10)),
    };
    if batches == 0 {
        anyhow::bail!("--batches must be at least 1");
    }
    let params = Weights::init(&network, args.seed)?;
    let net = GpuNetwork::new(&ctx, &plan, &params)?;
    net.upload_input(&weights::random_input(&plan, args.seed))?;
    let memory = net.memory();
    println!(
        "{}: batch {}, {} timed steps after {} warm-up; GPU memory {} (weights {}, activations {})",
        network.name,
        args.batch,
        batches,
        burn_in,
        megabytes(memory.total()),
        megabytes(memory.weights),
        megabytes(memory.activations)
    );

    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new((burn_in + batches) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps, eta {eta}")
                .expect("valid template"),
        );
        bar
    });
    let every = (batches / 10).max(1);
    let say = |line: String| match &bar {
        Some(bar) => bar.println(line),
        None => println!("{line}"),
    };
    let timings = bench::forward(&net, batches, burn_in, |step, seconds| {
        match step {
            None => say(format!("warm-up, duration = {seconds:.3}")),
            Some(i) if i % every == 0 => say(format!("step {i}, duration = {seconds:.3}")),
            Some(_) => {}
        }
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let flops = model::total_flops_per_image(&plan) as f64 * args.batch as f64;
    let gflops = flops / timings.mean / 1e9;
    let images = args.batch as f64 / timings.mean;
    println!(
        "Forward across {} steps, {:.3} +/- {:.3} sec / batch",
        batches, timings.mean, timings.sd
    );
    println!(
        "{:.1} images/s, {:.2} GFLOP/s ({:.1} GFLOP per batch) on {}",
        images,
        gflops,
        flops / 1e9,
        ctx.info.name
    );
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "model": network.name,
            "pass": "forward",
            "adapter": {
                "name": ctx.info.name,
                "backend": format!("{:?}", ctx.info.backend),
                "device_type": format!("{:?}", ctx.info.device_type),
                "driver": ctx.info.driver,
                "driver_info": ctx.info.driver_info,
                "software": ctx.software,
            },
            "batch": args.batch,
            "batches": batches,
            "burn_in": burn_in,
            "seed": args.seed,
            "flops_per_batch": flops,
            "gpu_memory_bytes": memory,
            "timings_s": timings,
            "images_per_s": images,
            "gflops_per_s": gflops,
        });
        write_json(path, &doc)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn write_json(path: &Path, doc: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(doc)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let temp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))
        .with_context(|| format!("{}: cannot create a file there", path.display()))?;
    std::fs::write(temp.path(), text)
        .with_context(|| format!("{}: write failed", path.display()))?;
    temp.persist(path).with_context(|| {
        format!(
            "{}: cannot move the finished file into place",
            path.display()
        )
    })?;
    Ok(())
}

/// Weights and input for check/run: from files when given, else the seed's.
fn load_or_init(
    network: &Network,
    batch: usize,
    weights: Option<&Path>,
    input: Option<&Path>,
    seed: u64,
) -> anyhow::Result<(Vec<LayerPlan>, Weights, Vec<f32>)> {
    let params = match weights {
        Some(path) => Weights::load(path, network)?,
        None => Weights::init(network, seed)?,
    };
    let (plan, data) = match input {
        Some(path) => {
            let (batch, data) = weights::load_input(path, network)?;
            (network.plan(batch)?, data)
        }
        None => {
            let plan = network.plan(batch)?;
            let data = weights::random_input(&plan, seed);
            (plan, data)
        }
    };
    Ok((plan, params, data))
}

fn check(
    args: &ModelArgs,
    device: &DeviceArgs,
    weights: Option<&Path>,
    input: Option<&Path>,
    seed: u64,
) -> anyhow::Result<ExitCode> {
    let network = model::by_name(&args.model)?;
    let (plan, params, data) = load_or_init(&network, args.batch, weights, input, seed)?;
    let ctx = open_context(device)?;
    let net = GpuNetwork::new(&ctx, &plan, &params)?;
    let report = check::forward(&net, &params, &data)?;
    println!(
        "{:<8} {:>12} {:>12} {:>12}  (tolerance: max abs error / max |reference| <= {:e})",
        "layer",
        "max |error|",
        "max |ref|",
        "relative",
        check::TOLERANCE
    );
    for r in &report {
        println!(
            "{:<8} {:>12.3e} {:>12.3e} {:>12.3e}  {}",
            r.layer,
            r.max_abs,
            r.max_reference,
            r.relative,
            if r.passes() { "ok" } else { "FAIL" }
        );
    }
    let failed: Vec<&str> = report
        .iter()
        .filter(|r| !r.passes())
        .map(|r| r.layer.as_str())
        .collect();
    if failed.is_empty() {
        println!(
            "check passed: batch {}, every layer within tolerance",
            plan[0].batch
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {}",
            Error::Mismatch(format!("layers beyond tolerance: {}", failed.join(", ")))
        );
        Ok(ExitCode::FAILURE)
    }
}

fn run_files(
    model_name: &str,
    device: &DeviceArgs,
    weights: &Path,
    input: &Path,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let network = model::by_name(model_name)?;
    let (plan, params, data) = load_or_init(&network, 1, Some(weights), Some(input), 0)?;
    let ctx = open_context(device)?;
    let net = GpuNetwork::new(&ctx, &plan, &params)?;
    net.upload_input(&data)?;
    net.forward()?;
    let logits = net.read_output()?;
    let last = plan.last().expect("a network has layers");
    let shape = [last.batch, last.output.len()];
    match output {
        Some(path) => {
            npy::write(path, &shape, &logits)?;
            println!("wrote {} {:?}", path.display(), shape);
        }
        None => println!("logits {shape:?} computed (pass --output to save them)"),
    }
    Ok(())
}
