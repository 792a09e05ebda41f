//! `convnet`: the command line over the convnet-wgpu library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use convnet_wgpu::bench::{self, Pass};
use convnet_wgpu::gpu::{
    self, AdapterChoice, GpuContext, GpuNetwork, KernelShape, LinearKernel, MemoryUse, Runner, Sgd,
    StepStats, TwoDeviceNetwork, Variants,
};
use convnet_wgpu::model::{self, LayerPlan, Network};
use convnet_wgpu::reference;
use convnet_wgpu::table::{self, Detail};
use convnet_wgpu::weights::{self, Weights};
use convnet_wgpu::{check, files, npy, Error};

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
    /// Measure the adapter's f32 FMA throughput and shader memory bandwidth.
    Peak {
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Print the network's table: output shapes, neurons, parameters, FLOPs.
    Shapes {
        #[command(flatten)]
        model: ModelArgs,
        /// One row per layer, or per stage (block) of the deep networks; default: stage where
        /// the network has stages.
        #[arg(long, value_enum)]
        detail: Option<DetailChoice>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The seed's benchmark: time forward and forward-backward passes over a random batch.
    Bench(BenchArgs),
    /// Run GPU and CPU reference on the same weights and input; compare every layer's output
    /// and every parameter gradient.
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
        #[command(flatten)]
        batch_norm: BatchNormArgs,
    },
    /// Write initialised weights as safetensors (the seed's initialisation for the AlexNets).
    Init {
        #[command(flatten)]
        network: NetworkArgs,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a user's weights and input; write the logits and, if asked, the gradients.
    Run {
        #[command(flatten)]
        network: NetworkArgs,
        #[command(flatten)]
        device: DeviceArgs,
        #[command(flatten)]
        batch_norm: BatchNormArgs,
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        input: PathBuf,
        /// Where to write the logits (.npy, [N, classes]).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Where to write the gradients of l2_loss(logits) (safetensors, the weights' names).
        #[arg(long)]
        grads: Option<PathBuf>,
    },
    /// Train on one fixed batch with SGD on the GPU, printing the loss every 10 steps.
    Train(TrainArgs),
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Learning rate. The seed's loss, sum(logits^2)/2, starts near 3e10 per image with its
    /// initialisation, so its gradients are huge and the rate tiny; 1e-11 falls steadily at
    /// batch 2, 1e-10 diverges. Scale it down with larger batches (the loss sums over images).
    #[arg(long, default_value_t = 1e-11)]
    lr: f32,
    #[arg(long, default_value_t = 0.0)]
    momentum: f32,
    /// Weights file (safetensors); default: the seed's initialisation.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Input file (.npy); default: the seed's random batch.
    #[arg(long)]
    input: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Write the trained weights here (safetensors).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Which network, and what a user may change about it.
#[derive(Args)]
struct NetworkArgs {
    /// alexnet, alexnet-2gpu, vgg11/13/16/19, googlenet, resnet18/34/50/101/152.
    #[arg(long, default_value = "alexnet")]
    model: String,
    /// Outputs of the last fully connected layer (default 1000).
    #[arg(long)]
    num_classes: Option<usize>,
    /// Height and width of the input images (default 224).
    #[arg(long)]
    input_size: Option<usize>,
    /// googlenet: include its two auxiliary classifiers.
    #[arg(long)]
    aux_logits: bool,
}

impl NetworkArgs {
    fn build(&self) -> convnet_wgpu::Result<Network> {
        model::build(
            &self.model,
            &model::Options {
                num_classes: self.num_classes,
                input_size: self.input_size,
                aux_logits: self.aux_logits,
            },
        )
    }
}

#[derive(Args)]
struct ModelArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[arg(long, default_value_t = 2)]
    batch: usize,
}

/// How the GPU runs batch norms.
#[derive(Args)]
struct BatchNormArgs {
    /// Run each batch norm as its own kernel instead of folding it into the convolution before
    /// it (the default, and faster).
    #[arg(long)]
    explicit_bn: bool,
}

impl BatchNormArgs {
    /// The network and weights the GPU runs.
    fn on_gpu(&self, network: &Network, params: &Weights) -> anyhow::Result<(Network, Weights)> {
        if self.explicit_bn {
            return Ok((network.clone(), params.clone()));
        }
        Ok(convnet_wgpu::fold::fold_batch_norm(network, params)?)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum DetailChoice {
    Layer,
    Stage,
}

#[derive(Args)]
struct DeviceArgs {
    /// Adapter index (as `convnet adapters` lists them) or a substring of its name; give it twice
    /// to pick the two adapters of `--devices 2`.
    #[arg(long)]
    adapter: Vec<String>,
    /// vulkan, metal, dx12 or gl.
    #[arg(long)]
    backend: Option<String>,
    /// Devices to split a two-device layout (alexnet-2gpu) over: 1 or 2.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    devices: u8,
    /// End the run with an error when no step has finished for this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// The fully connected layers' kernel: chosen per adapter and batch (auto), the 16-row
    /// block, or the 4-row small-batch kernel.
    #[arg(long, value_enum, default_value = "auto")]
    linear_kernel: LinearChoice,
    /// With --linear-kernel small-batch: split each reduction into this many chunks.
    #[arg(long, default_value_t = 1)]
    split_k: usize,
    /// The convolutions' kernels (forward, filter gradient, stride-1 input gradient): chosen per
    /// adapter (auto: register-block on software adapters, workgroup-tile on GPUs), or forced.
    #[arg(long, value_enum, default_value = "auto")]
    conv_kernel: ShapeChoice,
    /// The fully connected layers' backward kernels, chosen or forced as --conv-kernel.
    #[arg(long, value_enum, default_value = "auto")]
    matmul_kernel: ShapeChoice,
}

#[derive(Clone, Copy, ValueEnum)]
enum ShapeChoice {
    Auto,
    RegisterBlock,
    WorkgroupTile,
}

impl ShapeChoice {
    fn shape(self) -> KernelShape {
        match self {
            ShapeChoice::Auto => KernelShape::Auto,
            ShapeChoice::RegisterBlock => KernelShape::RegisterBlock,
            ShapeChoice::WorkgroupTile => KernelShape::WorkgroupTile,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LinearChoice {
    Auto,
    Block16,
    SmallBatch,
}

/// Ends the process when no step has finished for `timeout` seconds. A hung driver cannot be
/// cancelled from the host, so the run stops with an error naming the step it was on; outputs
/// are only ever renamed into place at the end, so none is left half-written.
struct Watchdog {
    /// The step under way and when the previous one finished.
    progress: std::sync::Arc<std::sync::Mutex<(usize, std::time::Instant)>>,
}

impl Watchdog {
    fn start(timeout: Option<f64>, what: String) -> anyhow::Result<Option<Self>> {
        let Some(timeout) = timeout else {
            return Ok(None);
        };
        if !(timeout.is_finite() && timeout > 0.0) {
            anyhow::bail!("--timeout must be a positive number of seconds");
        }
        let progress = std::sync::Arc::new(std::sync::Mutex::new((0, std::time::Instant::now())));
        let watched = std::sync::Arc::clone(&progress);
        let limit = std::time::Duration::from_secs_f64(timeout);
        std::thread::spawn(move || loop {
            std::thread::sleep(limit.min(std::time::Duration::from_millis(200)));
            let (step, since) = *watched.lock().unwrap_or_else(|e| e.into_inner());
            if since.elapsed() > limit {
                eprintln!("error: {what}: no progress for {timeout} s at step {step}; stopping");
                std::process::exit(1);
            }
        });
        Ok(Some(Watchdog { progress }))
    }

    /// Records progress without moving to another step (the profile after the timed steps).
    fn alive(watchdog: &Option<Self>) {
        if let Some(w) = watchdog {
            w.progress.lock().unwrap_or_else(|e| e.into_inner()).1 = std::time::Instant::now();
        }
    }

    /// Records that `step` is now under way.
    fn step(watchdog: &Option<Self>, step: usize) {
        if let Some(w) = watchdog {
            *w.progress.lock().unwrap_or_else(|e| e.into_inner()) =
                (step, std::time::Instant::now());
        }
    }
}

impl DeviceArgs {
    /// The kernel variants the flags force, if any.
    fn variants(&self) -> anyhow::Result<Variants> {
        let linear = match (self.linear_kernel, self.split_k) {
            (_, 0) => anyhow::bail!("--split-k must be at least 1"),
            (LinearChoice::Auto, 1) => LinearKernel::Auto,
            (LinearChoice::Block16, 1) => LinearKernel::Block16,
            (LinearChoice::SmallBatch, chunks) => LinearKernel::SmallBatch { chunks },
            (_, _) => anyhow::bail!("--split-k applies to --linear-kernel small-batch"),
        };
        Ok(Variants {
            linear,
            conv: self.conv_kernel.shape(),
            matmul: self.matmul_kernel.shape(),
        })
    }

    fn choice(&self, adapter: Option<&String>) -> AdapterChoice {
        AdapterChoice {
            adapter: adapter.cloned(),
            backend: self.backend.clone(),
        }
    }

    /// The adapters of each device: as given, or for two devices the first two hardware GPUs
    /// when the machine has two, else the default adapter twice (one device per request).
    fn choices(&self) -> anyhow::Result<Vec<AdapterChoice>> {
        let count = usize::from(self.devices);
        if self.adapter.len() > count {
            anyhow::bail!(
                "{} adapters given for {count} device(s); pass --adapter once per device",
                self.adapter.len()
            );
        }
        if count == 1 || self.adapter.len() == 2 {
            return Ok((0..count)
                .map(|i| self.choice(self.adapter.get(i)))
                .collect());
        }
        if let Some(one) = self.adapter.first() {
            return Ok(vec![self.choice(Some(one)); 2]);
        }
        let hardware: Vec<String> = gpu::list_adapters(&self.choice(None))?
            .iter()
            .filter(|a| !a.software)
            .map(|a| a.index.to_string())
            .collect();
        Ok(match hardware.as_slice() {
            [first, second, ..] => vec![self.choice(Some(first)), self.choice(Some(second))],
            _ => vec![self.choice(None); 2],
        })
    }
}

/// Which passes `bench` times.
#[derive(Clone, Copy, ValueEnum)]
enum PassChoice {
    Forward,
    ForwardBackward,
    Both,
}

impl PassChoice {
    fn passes(self) -> &'static [Pass] {
        match self {
            PassChoice::Forward => &[Pass::Forward],
            PassChoice::ForwardBackward => &[Pass::ForwardBackward],
            PassChoice::Both => &[Pass::Forward, Pass::ForwardBackward],
        }
    }
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    batch_norm: BatchNormArgs,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Timed steps per pass (default 100; 5 on a software adapter).
    #[arg(long)]
    batches: Option<usize>,
    /// Untimed warm-up steps per pass (default 10; 1 on a software adapter).
    #[arg(long)]
    burn_in: Option<usize>,
    /// Default: both where the network has a backward pass (the AlexNets), else forward.
    #[arg(long, value_enum)]
    pass: Option<PassChoice>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Write every setting and timing as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// With --devices 2, also run the same layout on one device and compare.
    #[arg(long)]
    compare_devices: bool,
    /// After the timed steps, time every layer of each pass (GPU timestamps where the adapter
    /// has them) against the adapter's measured peak (one device).
    #[arg(long)]
    profile: bool,
    /// With --profile, also draw the profile as an SVG bar chart here.
    #[arg(long)]
    svg: Option<PathBuf>,
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
        Command::Shapes {
            model,
            detail,
            json,
        } => shapes(&model, detail, json)?,
        Command::Peak { device } => {
            let ctx = open_context(&device)?;
            let peak = gpu::measure_peak(&ctx, 256 << 20)?;
            println!(
                "f32 FMA peak: {:.1} GFLOP/s (8 independent vec4 FMA chains per invocation)",
                peak.fma_gflops
            );
            println!(
                "shader bandwidth: {:.2} GB/s (vec4 copy of 64 MiB, bytes read + written)",
                peak.bandwidth_gbs
            );
        }
        Command::Bench(args) => bench(&args)?,
        Command::Check {
            model,
            device,
            weights,
            input,
            seed,
            batch_norm,
        } => {
            let files = (weights.as_deref(), input.as_deref());
            return check(&model, &device, &batch_norm, files, seed);
        }
        Command::Init { network, seed, out } => {
            files::check_writable(&out)?;
            let network = network.build()?;
            Weights::init(&network, seed)?.save(&out)?;
            println!("wrote {} ({}, seed {seed})", out.display(), network.name);
        }
        Command::Run {
            network,
            device,
            batch_norm,
            weights,
            input,
            output,
            grads,
        } => run_files(
            &network,
            &device,
            &batch_norm,
            (&weights, &input),
            output.as_deref(),
            grads.as_deref(),
        )?,
        Command::Train(args) => train(&args)?,
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

fn shapes(args: &ModelArgs, detail: Option<DetailChoice>, json: bool) -> anyhow::Result<()> {
    let network = args.network.build()?;
    let plan = network.plan(args.batch)?;
    let detail = match detail {
        Some(DetailChoice::Layer) => Detail::Layer,
        Some(DetailChoice::Stage) | None => Detail::Stage,
    };
    let rows = table::rows(&network, &plan, detail);
    let total_parameters = model::total_parameters(&plan);
    let flops = model::total_flops_per_image(&plan);
    if json {
        let last = plan.last().expect("a network has layers");
        let doc = serde_json::json!({
            "model": network.name,
            "batch": args.batch,
            "input_nchw": [args.batch, network.input.channels, network.input.height, network.input.width],
            "num_classes": last.output.len(),
            "detail": detail,
            "rows": rows,
            "total_parameters": total_parameters,
            "total_forward_flops_per_image": flops,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let two_devices = network.towers.is_some();
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(8);
    let row = |name: &str,
               shape: &str,
               per_device: &str,
               neurons: &str,
               params: &str,
               flops: &str| {
        if two_devices {
            println!(
                    "{name:<width$} {shape:<20} {per_device:<22} {neurons:>18} {params:>12} {flops:>14}"
                );
        } else {
            println!("{name:<width$} {shape:<22} {neurons:>18} {params:>12} {flops:>14}");
        }
    };
    row(
        if detail == Detail::Stage && !network.stages.is_empty() {
            "stage"
        } else {
            "layer"
        },
        "shape [N,H,W,C]",
        "per device",
        "neurons per image",
        "parameters",
        "MFLOP / image",
    );
    for r in &rows {
        if r.exchange_before {
            println!("  -- the devices exchange their halves --");
        }
        let per_device = match &r.shape_per_device {
            Some(shape) => format!("2 x {shape:?}"),
            None if two_devices => "device 0 only".into(),
            None => String::new(),
        };
        let flops = r.forward_flops_per_image;
        row(
            &r.name,
            &format!("{:?}", r.shape_nhwc),
            &per_device,
            &group_digits(r.neurons_per_image as u64),
            &group_digits(r.parameters as u64),
            &if flops > 0 {
                format!("{:.1}", flops as f64 / 1e6)
            } else {
                String::new()
            },
        );
    }
    row(
        "total",
        "",
        "",
        "",
        &group_digits(total_parameters as u64),
        &format!("{:.1}", flops as f64 / 1e6),
    );
    println!(
        "{}: {} layers; forward {:.1} GFLOP per batch of {} (a multiply-add counts as 2 FLOP; \
         convolutions and fully connected layers only)",
        network.name,
        plan.len(),
        flops as f64 * args.batch as f64 / 1e9,
        args.batch
    );
    Ok(())
}

fn open_context(device: &DeviceArgs) -> anyhow::Result<GpuContext> {
    if device.devices != 1 {
        anyhow::bail!("this command runs on one device; drop --devices");
    }
    let ctx =
        GpuContext::new(&device.choice(device.adapter.first()))?.with_variants(device.variants()?);
    println!("adapter: {}", ctx.describe());
    Ok(ctx)
}

/// One context per device of `--devices`, each printed with its adapter.
fn open_contexts(device: &DeviceArgs) -> anyhow::Result<Vec<GpuContext>> {
    let variants = device.variants()?;
    let contexts = device
        .choices()?
        .iter()
        .map(|choice| Ok(GpuContext::new(choice)?.with_variants(variants)))
        .collect::<convnet_wgpu::Result<Vec<_>>>()?;
    for (i, ctx) in contexts.iter().enumerate() {
        println!(
            "device {i}: {}; convolutions {:?}, fully connected {:?} (backward {:?})",
            ctx.describe(),
            ctx.conv_kernel(),
            ctx.variants().linear,
            ctx.matmul_kernel()
        );
    }
    if contexts.len() == 2 && contexts[0].info() == contexts[1].info() {
        println!("(two devices on one adapter: they share its hardware, so expect no speed-up)");
    }
    Ok(contexts)
}

/// A network on the contexts' devices: one device (any network), or a two-device layout split.
enum Placed<'a> {
    One(GpuNetwork<'a>),
    Two(TwoDeviceNetwork<'a>),
}

impl<'a> Placed<'a> {
    fn new(
        contexts: &'a [GpuContext],
        network: &Network,
        plan: &[LayerPlan],
        params: &Weights,
        gradients: bool,
    ) -> anyhow::Result<Self> {
        Ok(match contexts {
            [ctx] if gradients => Placed::One(GpuNetwork::with_gradients(ctx, plan, params)?),
            [ctx] => Placed::One(GpuNetwork::new(ctx, plan, params)?),
            [a, b] => Placed::Two(TwoDeviceNetwork::new(
                [a, b],
                network,
                plan[0].batch,
                params,
            )?),
            _ => unreachable!("one or two devices"),
        })
    }

    fn runner(&self) -> &dyn Runner {
        match self {
            Placed::One(net) => net,
            Placed::Two(net) => net,
        }
    }

    fn memory(&self) -> String {
        match self {
            Placed::One(net) => describe_memory(&net.memory()),
            Placed::Two(net) => {
                let [a, b] = net.memory();
                format!(
                    "GPU memory {} on device 0, {} on device 1",
                    megabytes(a),
                    megabytes(b)
                )
            }
        }
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn describe_memory(memory: &MemoryUse) -> String {
    format!(
        "GPU memory {} (weights {}, activations {}, gradients {}, scratch {})",
        megabytes(memory.total()),
        megabytes(memory.weights),
        megabytes(memory.activations),
        megabytes(memory.gradients),
        megabytes(memory.scratch)
    )
}

/// The drivers' allocation, when they report one, as a phrase for the output.
fn driver_memory(contexts: &[GpuContext]) -> String {
    allocated(contexts).map_or_else(
        || "the driver gives no allocator report".into(),
        |bytes| format!("driver allocation {}", megabytes(bytes)),
    )
}

fn allocated(contexts: &[GpuContext]) -> Option<u64> {
    contexts.iter().map(GpuContext::allocated_bytes).sum()
}

/// The timings and rates of one benchmarked pass.
struct PassResult {
    pass: Pass,
    devices: usize,
    timings: bench::Timings,
    flops: f64,
    allocated_before: Option<u64>,
    allocated_after: Option<u64>,
    /// Two devices: the mean over timed steps of each device's busy time and each exchange.
    two_devices: Option<StepStats>,
}

fn bench_pass(
    placed: &Placed,
    contexts: &[GpuContext],
    pass: Pass,
    (batches, burn_in): (usize, usize),
    flops: f64,
    watchdog: &Option<Watchdog>,
) -> anyhow::Result<PassResult> {
    let net = placed.runner();
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
    let mut allocated_before = None;
    let mut totals: Option<StepStats> = None;
    let mut done = 0;
    let timings = bench::run(net, pass, batches, burn_in, |step, seconds| {
        done += 1;
        Watchdog::step(watchdog, done);
        match step {
            None => say(format!("warm-up, duration = {seconds:.3}")),
            Some(i) => {
                if i == 0 {
                    allocated_before = allocated(contexts);
                }
                if i % every == 0 {
                    say(format!("step {i}, duration = {seconds:.3}"));
                }
                if let Placed::Two(two) = placed {
                    add_step(&mut totals, two.last_step(), batches);
                }
            }
        }
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let result = PassResult {
        pass,
        devices: contexts.len(),
        timings,
        flops,
        allocated_before,
        allocated_after: allocated(contexts),
        two_devices: totals,
    };
    print_pass(&result, net.plan()[0].batch, contexts);
    Ok(result)
}

/// Adds one step's stats, divided by the number of steps, into `totals`.
fn add_step(totals: &mut Option<StepStats>, step: StepStats, steps: usize) {
    let n = steps as f64;
    let totals = totals.get_or_insert_with(|| StepStats {
        device_busy_s: [0.0; 2],
        exchanges: step
            .exchanges
            .iter()
            .map(|e| gpu::ExchangeStats {
                seconds: 0.0,
                ..e.clone()
            })
            .collect(),
    });
    for d in 0..2 {
        totals.device_busy_s[d] += step.device_busy_s[d] / n;
    }
    for (total, e) in totals.exchanges.iter_mut().zip(&step.exchanges) {
        total.seconds += e.seconds / n;
    }
}

fn print_pass(result: &PassResult, batch: usize, contexts: &[GpuContext]) {
    let mean = result.timings.mean;
    println!(
        "{} across {} steps, {:.3} +/- {:.3} sec / batch",
        result.pass.seed_name(),
        result.timings.steps.len(),
        mean,
        result.timings.sd
    );
    println!(
        "{:.1} images/s, {:.2} GFLOP/s ({:.1} GFLOP per batch) on {} device(s): {}",
        batch as f64 / mean,
        result.flops / mean / 1e9,
        result.flops / 1e9,
        result.devices,
        contexts[0].info().name
    );
    if let Some(first) = result.timings.burn_in.first() {
        println!(
            "first warm-up step {first:.3} s, {:.3} s above the timed mean: compiling this pass's \
             kernels at their first dispatch (llvmpipe does; most GPU drivers compiled them with \
             the pipelines) and first touches of its buffers",
            first - mean
        );
    }
    if let Some(stats) = &result.two_devices {
        println!(
            "device busy per batch: device 0 {:.3} s, device 1 {:.3} s",
            stats.device_busy_s[0], stats.device_busy_s[1]
        );
        for e in &stats.exchanges {
            println!(
                "exchange {}: {} to the host, {} to the devices, {:.1} ms",
                e.name,
                megabytes(e.bytes_to_host),
                megabytes(e.bytes_to_devices),
                e.seconds * 1e3
            );
        }
    }
    if let (Some(before), Some(after)) = (result.allocated_before, result.allocated_after) {
        println!(
            "driver allocation {} after the first timed step, {} after the last",
            megabytes(before),
            megabytes(after)
        );
    }
}

/// The profile's JSON rows as chart panels: a bar per layer, noted with its rate.
fn chart_panels(
    profiles: &[serde_json::Value],
    ctx: &GpuContext,
) -> Vec<(String, Vec<convnet_wgpu::chart::Bar>)> {
    profiles
        .iter()
        .map(|p| {
            let title = format!(
                "{} pass on {} (per layer)",
                p["pass"].as_str().unwrap_or(""),
                ctx.info().name
            );
            let bars = p["layers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|l| {
                    let gflops = l["gflops_per_s"].as_f64().unwrap_or(0.0);
                    let note = if l["flops"].as_f64().unwrap_or(0.0) > 0.0 {
                        format!("{gflops:.1} GFLOP/s")
                    } else {
                        format!("{:.2} GB/s", l["gb_per_s"].as_f64().unwrap_or(0.0))
                    };
                    convnet_wgpu::chart::Bar {
                        label: l["layer"].as_str().unwrap_or("").to_string(),
                        milliseconds: l["seconds"].as_f64().unwrap_or(0.0) * 1e3,
                        note,
                    }
                })
                .collect();
            (title, bars)
        })
        .collect()
}

/// Runs of each profile, averaged.
const PROFILE_RUNS: usize = 3;

/// Profiles each pass, prints a table per pass, and returns them for the JSON output.
fn profile_passes(net: &GpuNetwork, passes: &[Pass]) -> anyhow::Result<Vec<serde_json::Value>> {
    let ctx = net.context();
    let peak = gpu::measure_peak(ctx, 256 << 20)?;
    let plan = net.plan();
    let mut out = Vec::new();
    for &pass in passes {
        let mut runs = Vec::with_capacity(PROFILE_RUNS);
        for _ in 0..PROFILE_RUNS {
            runs.push(match pass {
                Pass::Forward => net.profile_forward()?,
                Pass::ForwardBackward => net.profile_backward()?,
            });
        }
        let first = &runs[0];
        let total: f64 = runs
            .iter()
            .flat_map(|r| &r.layers)
            .map(|l| l.seconds)
            .sum::<f64>()
            / PROFILE_RUNS as f64;
        let name = match pass {
            Pass::Forward => "forward",
            Pass::ForwardBackward => "backward",
        };
        println!(
            "\nprofile of the {name} pass ({}, mean of {PROFILE_RUNS} runs, {:.3} s in all); \
             adapter peak {:.1} GFLOP/s FMA, {:.2} GB/s",
            if first.gpu_timestamps {
                "GPU timestamps"
            } else {
                "host-timed per layer: no timestamp queries"
            },
            total,
            peak.fma_gflops,
            peak.bandwidth_gbs
        );
        let width = first
            .layers
            .iter()
            .map(|l| l.layer.len())
            .max()
            .unwrap_or(0)
            .max(8);
        println!(
            "{:<width$} {:>10} {:>10} {:>7} {:>9} {:>8} {:>9} {:>7}  kernels",
            "layer", "dispatches", "ms", "share", "GFLOP/s", "of peak", "MB moved", "GB/s"
        );
        let mut rows = Vec::new();
        for (i, layer) in first.layers.iter().enumerate() {
            let seconds =
                runs.iter().map(|r| r.layers[i].seconds).sum::<f64>() / PROFILE_RUNS as f64;
            let (index, planned) = plan
                .iter()
                .enumerate()
                .find(|(_, l)| l.layer.name == layer.layer)
                .expect("profiled layers are the plan's");
            let batch = planned.batch as f64;
            let flops = planned.flops_per_image() as f64
                * batch
                * match (pass, index) {
                    (Pass::Forward, _) | (Pass::ForwardBackward, 0) => 1.0,
                    (Pass::ForwardBackward, _) => 2.0,
                };
            // The least a layer must move: its inputs and output forward; backward, its input,
            // its output gradient and its input gradient.
            let input: f64 = planned.sources.iter().map(|(_, d)| d.len() as f64).sum();
            let output = planned.output.len() as f64;
            let bytes = 4.0
                * batch
                * match pass {
                    Pass::Forward => input + output,
                    Pass::ForwardBackward => 2.0 * input + output,
                };
            let gflops = flops / seconds / 1e9;
            let gbs = bytes / seconds / 1e9;
            let (rate, of_peak) = if flops > 0.0 {
                (
                    format!("{gflops:.2}"),
                    format!("{:.0}%", 100.0 * gflops / peak.fma_gflops),
                )
            } else {
                (
                    String::new(),
                    format!("{:.0}%", 100.0 * gbs / peak.bandwidth_gbs),
                )
            };
            println!(
                "{:<width$} {:>10} {:>10.2} {:>6.1}% {:>9} {:>8} {:>9.1} {:>7.2}  {}",
                layer.layer,
                layer.dispatches,
                seconds * 1e3,
                100.0 * seconds / total,
                rate,
                of_peak,
                bytes / 1e6,
                gbs,
                layer.kernels.join(", ")
            );
            rows.push(serde_json::json!({
                "layer": layer.layer,
                "dispatches": layer.dispatches,
                "kernels": layer.kernels,
                "seconds": seconds,
                "flops": flops,
                "gflops_per_s": gflops,
                "bytes": bytes,
                "gb_per_s": gbs,
            }));
        }
        out.push(serde_json::json!({
            "pass": name,
            "gpu_timestamps": first.gpu_timestamps,
            "peak": peak,
            "layers": rows,
        }));
    }
    Ok(out)
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        files::check_writable(path)?;
    }
    if let Some(path) = &args.svg {
        if !args.profile {
            anyhow::bail!("--svg draws the profile; add --profile");
        }
        files::check_writable(path)?;
    }
    if args.profile && args.device.devices != 1 {
        anyhow::bail!("--profile times one device; drop --devices");
    }
    if args.compare_devices && args.device.devices != 2 {
        anyhow::bail!("--compare-devices compares --devices 2 with one device; add --devices 2");
    }
    let network = args.network.build()?;
    let plan = network.plan(args.batch)?;
    let pass = match (args.pass, network.supports_backward()) {
        (Some(PassChoice::Forward) | None, false) => PassChoice::Forward,
        (Some(_), false) => return Err(network.backward_unsupported("--pass").into()),
        (Some(pass), true) => pass,
        (None, true) => PassChoice::Both,
    };
    let contexts = open_contexts(&args.device)?;
    let watchdog = Watchdog::start(
        args.device.timeout,
        format!("bench on {}", contexts[0].info().name),
    )?;
    let software = contexts.iter().any(|c| c.software());
    let steps = match (args.batches, args.burn_in, software) {
        (None, None, true) => {
            println!(
                "software adapter: 5 timed steps after 1 warm-up per pass instead of the seed's \
                 100 after 10 (set --batches / --burn-in to choose)"
            );
            (5, 1)
        }
        (batches, burn_in, _) => (batches.unwrap_or(100), burn_in.unwrap_or(10)),
    };
    if steps.0 == 0 {
        anyhow::bail!("--batches must be at least 1");
    }
    let passes = pass.passes();
    let gradients = passes.contains(&Pass::ForwardBackward);
    let (gpu_network, params) = args
        .batch_norm
        .on_gpu(&network, &Weights::init(&network, args.seed)?)?;
    let gpu_plan = gpu_network.plan(args.batch)?;
    let input = weights::random_input(&plan, args.seed);
    let flops_of = |pass: Pass| {
        let forward = model::total_flops_per_image(&plan) as f64;
        let backward = model::total_backward_flops_per_image(&plan) as f64;
        args.batch as f64
            * match pass {
                Pass::Forward => forward,
                Pass::ForwardBackward => forward + backward,
            }
    };
    let profiles = std::cell::RefCell::new(Vec::new());
    let run_all = |contexts: &[GpuContext]| -> anyhow::Result<Vec<PassResult>> {
        let placed = Placed::new(contexts, &gpu_network, &gpu_plan, &params, gradients)?;
        placed.runner().upload_input(&input)?;
        let pipeline_seconds: f64 = contexts.iter().map(GpuContext::pipeline_seconds).sum();
        println!(
            "{}: batch {}, {} timed steps after {} warm-up per pass, {} device(s); {}; {}; \
             pipelines created in {pipeline_seconds:.2} s",
            network.name,
            args.batch,
            steps.0,
            steps.1,
            contexts.len(),
            placed.memory(),
            driver_memory(contexts)
        );
        let results = passes
            .iter()
            .map(|&pass| bench_pass(&placed, contexts, pass, steps, flops_of(pass), &watchdog))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let (true, Placed::One(net)) = (args.profile, &placed) {
            Watchdog::alive(&watchdog);
            profiles.replace(profile_passes(net, passes)?);
        }
        Ok(results)
    };
    let results = run_all(&contexts)?;
    if let [forward, backward] = results.as_slice() {
        println!(
            "forward-backward / forward = {:.2} (FLOP ratio {:.2})",
            backward.timings.mean / forward.timings.mean,
            backward.flops / forward.flops
        );
    }
    let compared = if args.compare_devices {
        println!("\nthe same layout on device 0 alone:");
        let one = run_all(&contexts[..1])?;
        for (two, one) in results.iter().zip(&one) {
            println!(
                "{}: two devices {:.3} s, one device {:.3} s per batch: {:.2}x the one-device time",
                two.pass.seed_name(),
                two.timings.mean,
                one.timings.mean,
                two.timings.mean / one.timings.mean
            );
        }
        one
    } else {
        Vec::new()
    };
    if let Some(path) = &args.svg {
        let svg = convnet_wgpu::chart::profile_svg(&chart_panels(&profiles.borrow(), &contexts[0]));
        files::write_atomically(path, svg.as_bytes())?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.json {
        let passes_json = |results: &[PassResult]| -> Vec<serde_json::Value> {
            results
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "pass": r.pass,
                        "devices": r.devices,
                        "flops_per_batch": r.flops,
                        "timings_s": r.timings,
                        "images_per_s": args.batch as f64 / r.timings.mean,
                        "gflops_per_s": r.flops / r.timings.mean / 1e9,
                        "driver_allocated_bytes_first_step": r.allocated_before,
                        "driver_allocated_bytes_last_step": r.allocated_after,
                        "two_devices_mean_per_step": r.two_devices,
                    })
                })
                .collect()
        };
        let adapters: Vec<_> = contexts
            .iter()
            .map(|ctx| {
                serde_json::json!({
                    "name": ctx.info().name,
                    "backend": format!("{:?}", ctx.info().backend),
                    "device_type": format!("{:?}", ctx.info().device_type),
                    "driver": ctx.info().driver,
                    "driver_info": ctx.info().driver_info,
                    "software": ctx.software(),
                    "pipeline_creation_s": ctx.pipeline_seconds(),
                    "conv_kernel": format!("{:?}", ctx.conv_kernel()),
                    "linear_kernel": format!("{:?}", ctx.variants().linear),
                    "matmul_kernel": format!("{:?}", ctx.matmul_kernel()),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "model": network.name,
            "devices": adapters,
            "batch": args.batch,
            "batches": steps.0,
            "burn_in": steps.1,
            "seed": args.seed,
            "passes": passes_json(&results),
            "one_device_comparison": passes_json(&compared),
            "profiles": *profiles.borrow(),
        });
        files::write_atomically(path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Weights and input for check/run/train: from files when given, else the seed's.
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

fn print_deviations(title: &str, rows: &[&check::Deviation], tolerance: f32, extra: &[String]) {
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
            if r.within(tolerance) { "ok" } else { "FAIL" },
            extra.get(i).map_or(String::new(), |e| format!("  {e}"))
        );
    }
}

fn check(
    args: &ModelArgs,
    device: &DeviceArgs,
    batch_norm: &BatchNormArgs,
    (weights, input): (Option<&Path>, Option<&Path>),
    seed: u64,
) -> anyhow::Result<ExitCode> {
    let network = args.network.build()?;
    let (plan, params, data) = load_or_init(&network, args.batch, weights, input, seed)?;
    let (gpu_network, gpu_params) = batch_norm.on_gpu(&network, &params)?;
    let gpu_plan = gpu_network.plan(plan[0].batch)?;
    let contexts = open_contexts(device)?;
    let _watchdog = Watchdog::start(
        device.timeout,
        format!("check on {}", contexts[0].info().name),
    )?;
    let gradients = network.supports_backward();
    let placed = Placed::new(&contexts, &gpu_network, &gpu_plan, &gpu_params, gradients)?;
    let net = placed.runner();
    println!("batch {}; {}", plan[0].batch, placed.memory());
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
    print_deviations(
        "layer",
        &layers.iter().collect::<Vec<_>>(),
        check::TOLERANCE,
        &[],
    );

    if !gradients {
        println!(
            "\n{} runs forward only: no gradients to check",
            network.name
        );
        return Ok(finish_check(
            layers
                .iter()
                .filter(|r| !r.within(check::TOLERANCE))
                .map(|r| r.name.clone())
                .collect(),
        ));
    }
    let grads = check::gradients(net, &params, &data)?;
    println!(
        "\ngradients of l2_loss(logits) against the f64 backward pass through the GPU's activations \
         (tolerance {:e});\nbeside it, the GPU and the f32 CPU reference against a fully f64 pass \
         (not judged: a max-pool near-tie can route a gradient differently, see README)",
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
    print_deviations("parameter", &rows, check::GRADIENT_TOLERANCE, &scale);

    let mut failed: Vec<String> = layers
        .iter()
        .filter(|r| !r.within(check::TOLERANCE))
        .chain(
            rows.iter()
                .copied()
                .filter(|r| !r.within(check::GRADIENT_TOLERANCE)),
        )
        .map(|r| r.name.clone())
        .collect();

    if let Placed::Two(two) = &placed {
        let versus = check::one_device_versus_two(&contexts[0], two, &params, &data)?;
        println!(
            "\ntwo devices against the same layout on device 0 alone (tolerance {:e})",
            check::TOLERANCE
        );
        print_deviations(
            "tensor",
            &versus.iter().collect::<Vec<_>>(),
            check::TOLERANCE,
            &[],
        );
        failed.extend(
            versus
                .iter()
                .filter(|r| !r.within(check::TOLERANCE))
                .map(|r| format!("{} (1 vs 2 devices)", r.name)),
        );
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

fn run_files(
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
    if grads.is_some() && !network.supports_backward() {
        return Err(network.backward_unsupported("--grads").into());
    }
    let (plan, params, data) = load_or_init(&network, 1, Some(weights), Some(input), 0)?;
    let (gpu_network, params) = batch_norm.on_gpu(&network, &params)?;
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

fn train(args: &TrainArgs) -> anyhow::Result<()> {
    if args.steps == 0 {
        anyhow::bail!("--steps must be at least 1");
    }
    if !(args.lr.is_finite() && args.lr > 0.0 && (0.0..1.0).contains(&args.momentum)) {
        anyhow::bail!("--lr must be positive and --momentum in [0, 1)");
    }
    if let Some(path) = &args.out {
        files::check_writable(path)?;
    }
    let network = args.model.network.build()?;
    if !network.supports_backward() {
        return Err(network.backward_unsupported("train").into());
    }
    let (plan, params, data) = load_or_init(
        &network,
        args.model.batch,
        args.weights.as_deref(),
        args.input.as_deref(),
        args.seed,
    )?;
    let ctx = open_context(&args.device)?;
    let watchdog = Watchdog::start(args.device.timeout, format!("train on {}", ctx.info().name))?;
    let net = GpuNetwork::with_gradients(&ctx, &plan, &params)?;
    let sgd = Sgd::new(&net, args.lr, args.momentum)?;
    net.upload_input(&data)?;
    println!(
        "training {} on one batch of {}: SGD lr {:e}, momentum {}; {} + velocities {}",
        network.name,
        plan[0].batch,
        args.lr,
        args.momentum,
        describe_memory(&net.memory()),
        megabytes(sgd.memory)
    );
    for step in 0..args.steps {
        Watchdog::step(&watchdog, step);
        sgd.step()?;
        if step % 10 == 0 || step + 1 == args.steps {
            // The logits are those of this step's forward pass, before its update.
            let loss = reference::l2_loss(&net.read_output()?);
            if !loss.is_finite() {
                anyhow::bail!("step {step}: the loss is no longer finite; lower --lr");
            }
            println!("step {step}, loss = {loss:.6e}");
        }
    }
    if let Some(path) = &args.out {
        net.read_weights()?.save(path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
