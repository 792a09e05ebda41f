//! The command line: argument parsing and rendering only. Each subcommand lives in its own file
//! and calls the library for everything it computes; this module holds the arguments they share
//! and the helpers that open devices and print what they hold.

mod adapters;
mod bench;
mod check;
mod eval;
mod init;
mod run;
mod shapes;
mod style;
mod train;
mod tune;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use convnet_wgpu::bench as library_bench;
use convnet_wgpu::distributed::World;
use convnet_wgpu::gpu::{
    self, AdapterChoice, AllReduce, ConvAlgorithm, DataParallel, GpuContext, KernelShape,
    LinearKernel, MemoryUse, PlacedMemory, Precision, Variants,
};
use convnet_wgpu::model::{self, LayerPlan, Loss, LossKind, Network};
use convnet_wgpu::weights::{self, Weights};

/// Classic convolutional networks on WGSL compute shaders: the 2017 post's AlexNet benchmark on
/// any adapter, checked against a CPU reference.
#[derive(Parser)]
#[command(name = "convnet", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// The post's benchmark: time forward and forward-backward passes over a random batch.
    Bench(bench::BenchArgs),
    /// Run GPU and CPU reference on the same weights and input; compare every layer's output
    /// and every parameter gradient.
    Check {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        device: DeviceArgs,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        batch_norm: BatchNormArgs,
    },
    /// Write initialised weights as safetensors (the post's initialisation for the AlexNets).
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
        /// Where to write the gradients of the loss (safetensors, the weights' names); the forward
        /// pass then runs in training mode (batch norms by the batch's statistics).
        #[arg(long)]
        grads: Option<PathBuf>,
        #[command(flatten)]
        loss: LossArgs,
    },
    /// Train with SGD on the GPU: on a labelled data set for --epochs, else on one fixed batch,
    /// printing the loss every 10 steps.
    Train(Box<train::TrainArgs>),
    /// Neural style transfer on VGG: an image optimised to keep one image's content and take
    /// another's style (Gatys et al.).
    Style(Box<style::StyleArgs>),
    /// Score a classifier on a labelled set: loss, top-1, top-5, images/s.
    Eval(Box<eval::EvalArgs>),
    /// Draw the project's own labelled image set (no download).
    MakeDataset(eval::MakeDatasetArgs),
    /// Time every convolution of a network under each candidate algorithm and kernel shape on
    /// this adapter; write the fastest that match the CPU reference to the tune cache, which
    /// bench, check, run and train then use.
    Tune {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        device: DeviceArgs,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Also write every candidate's times and the winners as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// Which network, and what a user may change about it.
#[derive(Args)]
pub(crate) struct NetworkArgs {
    /// alexnet, alexnet-2gpu, vgg11/13/16/19, googlenet, resnet18/34/50/101/152.
    #[arg(long, default_value = "alexnet")]
    pub(crate) model: String,
    /// Outputs of the last fully connected layer (default 1000).
    #[arg(long)]
    pub(crate) num_classes: Option<usize>,
    /// Height and width of the input images (default 224).
    #[arg(long)]
    pub(crate) input_size: Option<usize>,
    /// googlenet: include its two auxiliary classifiers.
    #[arg(long)]
    pub(crate) aux_logits: bool,
}

impl NetworkArgs {
    pub(crate) fn build(&self) -> convnet_wgpu::Result<Network> {
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
pub(crate) struct ModelArgs {
    #[command(flatten)]
    pub(crate) network: NetworkArgs,
    #[arg(long, default_value_t = 2)]
    pub(crate) batch: usize,
}

/// How 8-bit images are normalised (`train`, `eval`).
#[derive(Args)]
pub(crate) struct NormalisationArgs {
    /// With 8-bit images: the per-channel mean subtracted after scaling to [0, 1], comma
    /// separated (e.g. 0.485,0.456,0.406), as torchvision's Normalize; default 0.
    #[arg(long, value_delimiter = ',')]
    mean: Vec<f32>,
    /// With 8-bit images: the per-channel standard deviation divided by; default 1.
    #[arg(long, value_delimiter = ',')]
    std: Vec<f32>,
}

impl NormalisationArgs {
    /// How `set`'s 8-bit pixels are decoded; `None` for f32 images, which are taken as they are
    /// (and refuse `--mean` and `--std`).
    pub(crate) fn format_for(
        &self,
        set: &convnet_wgpu::training::data::LabelledImages,
    ) -> anyhow::Result<Option<gpu::PixelFormat>> {
        use convnet_wgpu::training::data::Pixels;
        let channels = set.dims().channels;
        let Pixels::Uint8 { channels_last } = set.pixels() else {
            if !self.mean.is_empty() || !self.std.is_empty() {
                anyhow::bail!(
                    "--mean and --std normalise 8-bit images; float32 images are taken as they are"
                );
            }
            return Ok(None);
        };
        let or = |given: &[f32], default: f32| match given {
            [] => vec![default; channels],
            values => values.to_vec(),
        };
        let format = gpu::PixelFormat {
            channels_last,
            mean: or(&self.mean, 0.0),
            std: or(&self.std, 1.0),
        };
        format.check(set.dims())?;
        Ok(Some(format))
    }
}

/// How the GPU runs batch norms.
#[derive(Args)]
pub(crate) struct BatchNormArgs {
    /// Run each batch norm as its own kernel instead of folding it into the convolution before
    /// it (the default at inference, and faster; training always runs them on their own).
    #[arg(long)]
    pub(crate) explicit_bn: bool,
}

impl BatchNormArgs {
    /// The network and weights the GPU runs. Training (`training`: a backward pass follows)
    /// normalises by the batch's statistics, which cannot fold into the convolution.
    pub(crate) fn on_gpu(
        &self,
        network: &Network,
        params: &Weights,
        training: bool,
    ) -> anyhow::Result<(Network, Weights)> {
        if self.explicit_bn || training {
            return Ok((network.clone(), params.clone()));
        }
        Ok(convnet_wgpu::fold::fold_batch_norm(network, params)?)
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum DetailChoice {
    Layer,
    Stage,
}

#[derive(Args)]
pub(crate) struct DeviceArgs {
    /// Adapter index (as `convnet adapters` lists them) or a substring of its name; with
    /// --devices N, give it once per device, or once for all.
    #[arg(long)]
    pub(crate) adapter: Vec<String>,
    /// vulkan, metal, dx12 or gl.
    #[arg(long)]
    pub(crate) backend: Option<String>,
    /// Devices: 2 to split a two-device layout (alexnet-2gpu) over; with --parallel data, 1 to
    /// 16 replicas (the default adapter N times where the machine has fewer hardware adapters).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub(crate) devices: u8,
    /// How --devices share the work: `model` splits a two-device layout's layers (alexnet-2gpu);
    /// `data` gives every device a whole replica and a shard of the batch (bench, check, run, train).
    #[arg(long, value_enum, default_value = "model")]
    pub(crate) parallel: Parallel,
    /// With --parallel data: megabytes of gradients per all-reduce bucket, each summed while
    /// the devices compute the backward of the next (PyTorch DDP's bucket_cap_mb; default 25).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub(crate) bucket_mb: Option<u64>,
    /// With --parallel data: when the gradients are all-reduced. `auto` overlaps them with the
    /// backward pass unless every device is a software adapter (which computes on the host's
    /// own cores, leaving nothing to overlap with).
    #[arg(long, value_enum)]
    pub(crate) all_reduce: Option<AllReduceChoice>,
    /// With --parallel data: normalise every batch norm by the whole batch's statistics across
    /// the replicas (PyTorch's SyncBatchNorm) instead of each replica's own shard's.
    #[arg(long)]
    pub(crate) sync_batch_norm: bool,
    /// End the run with an error when no step has finished for this many seconds (bench, train),
    /// or when the whole run has not (peak, check, run).
    #[arg(long)]
    pub(crate) timeout: Option<f64>,
    /// The fully connected layers' kernel: chosen per adapter and batch (auto), the 16-row
    /// block, or the 4-row small-batch kernel.
    #[arg(long, value_enum, default_value = "auto")]
    linear_kernel: LinearChoice,
    /// With --linear-kernel small-batch: split each reduction into this many chunks.
    #[arg(long, default_value_t = 1)]
    pub(crate) split_k: usize,
    /// The convolutions' kernels (forward, filter gradient, stride-1 input gradient): chosen per
    /// layer (auto: the tune cache's choice, else register-block on software adapters and
    /// workgroup-tile on GPUs), or forced.
    #[arg(long, value_enum, default_value = "auto")]
    conv_kernel: ShapeChoice,
    /// How the 3x3 and 5x5 stride-1 convolutions (forward, input and filter gradients) are
    /// computed: auto (the tune cache's choice, else Winograd where both sides have at least 16
    /// channels: on software adapters F(4x4, 3x3) for 3x3 outputs of at least 9 values a side
    /// and 64 such tiles over the batch, F(2x2, 3x3) for the others and on GPUs, F(2x2, 5x5) for
    /// 5x5), direct, winograd2 (Winograd with 2x2 output tiles
    /// wherever it applies) or winograd4 (F(4x4, 3x3) for 3x3 filters, F(2x2, 5x5) for 5x5);
    /// every other convolution is direct.
    #[arg(long, value_enum, default_value = "auto")]
    conv_algorithm: AlgorithmChoice,
    /// The fully connected layers' backward kernels, chosen or forced as --conv-kernel.
    #[arg(long, value_enum, default_value = "auto")]
    matmul_kernel: ShapeChoice,
    /// How activations and conv and linear weights are stored: f32, or f16 (half the bytes,
    /// products still summed in f32) for forward passes on adapters with shader-f16.
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionChoice,
    /// Plan as if one storage binding held at most this many MiB (never more than the adapter
    /// allows): a smaller adapter's limits, such as WebGPU's default 128 MiB, on a larger one;
    /// weights split and batches run in parts as they would there.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    max_binding_mib: Option<u64>,
    /// The tune cache: read for the convolutions' measured choices (where no flag forces
    /// one), written by `tune`. Default: $CONVNET_TUNE_CACHE, else convnet-wgpu/tune.json in
    /// the user's cache directory; `none` reads nothing.
    #[arg(long, env = "CONVNET_TUNE_CACHE")]
    tune_cache: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum PrecisionChoice {
    F32,
    F16,
}

#[derive(Clone, Copy, ValueEnum)]
enum AlgorithmChoice {
    Auto,
    Direct,
    Winograd2,
    Winograd4,
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

/// When data-parallel replicas all-reduce their gradients.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AllReduceChoice {
    /// Overlapped on hardware GPUs, after the backward pass on software adapters.
    Auto,
    /// In buckets as the backward pass finishes them, last layers first.
    Overlapped,
    /// After the whole backward pass.
    AfterBackward,
}

impl DeviceArgs {
    /// Sets `replicas`' buckets and all-reduce as the flags ask.
    pub(crate) fn configure(&self, replicas: &mut DataParallel) {
        if let Some(megabytes) = self.bucket_mb {
            replicas.set_bucket_bytes(megabytes << 20);
        }
        match self.all_reduce {
            None | Some(AllReduceChoice::Auto) => {}
            Some(AllReduceChoice::Overlapped) => replicas.set_all_reduce(AllReduce::Overlapped),
            Some(AllReduceChoice::AfterBackward) => {
                replicas.set_all_reduce(AllReduce::AfterBackward)
            }
        }
    }

    /// The tune cache's path (`tune` writes it); fails where none is given and the platform has
    /// no cache directory.
    pub(crate) fn tune_cache_path(&self) -> anyhow::Result<PathBuf> {
        match &self.tune_cache {
            Some(path) if path.as_os_str() == "none" => {
                anyhow::bail!("tune writes a cache: give --tune-cache a file")
            }
            Some(path) => Ok(path.clone()),
            None => gpu::tuning::default_cache_path().ok_or_else(|| {
                anyhow::anyhow!("this platform has no cache directory: give --tune-cache")
            }),
        }
    }

    /// The measured choices for `ctx`'s adapter from the tune cache, warning on stderr about
    /// what it had to ignore.
    fn tuning_for(&self, ctx: &GpuContext) -> gpu::Tuning {
        let path = match &self.tune_cache {
            Some(path) if path.as_os_str() == "none" => return gpu::Tuning::default(),
            Some(path) => path.clone(),
            None => match gpu::tuning::default_cache_path() {
                Some(path) => path,
                None => return gpu::Tuning::default(),
            },
        };
        let (tuning, warning) = gpu::tuning::load(&path, ctx.info());
        if let Some(warning) = warning {
            eprintln!("warning: {warning}");
        }
        tuning
    }

    /// A context on `choice` with these flags' kernel variants and binding limit, and the tune
    /// cache's choices for its adapter.
    fn open(&self, choice: &AdapterChoice) -> anyhow::Result<GpuContext> {
        let ctx = GpuContext::new(choice)?.with_variants(self.variants()?);
        let tuning = self.tuning_for(&ctx);
        let ctx = ctx.with_tuning(tuning);
        Ok(match self.max_binding_mib {
            Some(mib) => ctx.with_binding_limit(mib << 20),
            None => ctx,
        })
    }

    /// Fails when a data-parallel flag is given without --parallel data.
    pub(crate) fn refuse_data_parallel_flags(&self) -> anyhow::Result<()> {
        let given = [
            (self.bucket_mb.is_some(), "--bucket-mb"),
            (self.all_reduce.is_some(), "--all-reduce"),
            (self.sync_batch_norm, "--sync-batch-norm"),
        ];
        if let (Parallel::Model, Some((_, flag))) =
            (self.parallel, given.iter().find(|(given, _)| *given))
        {
            anyhow::bail!("{flag} is for data-parallel replicas: add --parallel data");
        }
        Ok(())
    }
}

/// How devices share a network's work.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Parallel {
    /// A two-device layout's layers split over two devices (alexnet-2gpu).
    Model,
    /// A replica per device, each on a shard of the batch.
    Data,
}

#[derive(Clone, Copy, ValueEnum)]
enum LinearChoice {
    Auto,
    Block16,
    SmallBatch,
}

impl DeviceArgs {
    /// The kernel variants the flags force, if any.
    pub(crate) fn variants(&self) -> anyhow::Result<Variants> {
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
            conv_algorithm: match self.conv_algorithm {
                AlgorithmChoice::Auto => ConvAlgorithm::Auto,
                AlgorithmChoice::Direct => ConvAlgorithm::Direct,
                AlgorithmChoice::Winograd2 => ConvAlgorithm::Winograd2,
                AlgorithmChoice::Winograd4 => ConvAlgorithm::Winograd4,
            },
            matmul: self.matmul_kernel.shape(),
            precision: match self.precision {
                PrecisionChoice::F32 => Precision::F32,
                PrecisionChoice::F16 => Precision::F16,
            },
        })
    }

    /// The adapters of each device (see [`gpu::device_choices`]).
    pub(crate) fn choices(&self) -> convnet_wgpu::Result<Vec<AdapterChoice>> {
        gpu::device_choices(
            &self.adapter,
            self.backend.as_deref(),
            usize::from(self.devices),
        )
    }
}

/// Runs one subcommand.
pub(crate) fn run(command: Command, world: &World) -> anyhow::Result<ExitCode> {
    if world.size() > 1
        && !matches!(
            command,
            Command::Train(_) | Command::Bench(_) | Command::Run { .. } | Command::Check { .. }
        )
    {
        anyhow::bail!(
            "under an MPI launcher ({} ranks) only `train`, `bench`, `check` and `run` with \
             --parallel data run",
            world.size()
        );
    }
    match command {
        Command::Adapters { backend } => adapters::list(backend)?,
        Command::Shapes {
            model,
            detail,
            json,
        } => shapes::print(&model, detail, json)?,
        Command::Peak { device } => adapters::peak(&device)?,
        Command::Bench(args) => bench::bench(&args, world)?,
        Command::Check {
            model,
            device,
            source,
            batch_norm,
        } => return check::check(world, &model, &device, &batch_norm, &source),
        Command::Init { network, seed, out } => init::write(&network, seed, &out)?,
        Command::Run {
            network,
            device,
            batch_norm,
            weights,
            input,
            output,
            grads,
            loss,
        } => run::run(
            world,
            &network,
            &device,
            &batch_norm,
            (&weights, &input),
            (output.as_deref(), grads.as_deref()),
            &loss,
        )?,
        Command::Train(args) => train::train(&args, world)?,
        Command::Style(args) => style::style(&args)?,
        Command::Eval(args) => eval::eval(&args)?,
        Command::MakeDataset(args) => eval::make_dataset(&args)?,
        Command::Tune {
            model,
            device,
            seed,
            json,
        } => tune::tune(&model, &device, seed, json.as_deref())?,
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn open_context(device: &DeviceArgs) -> anyhow::Result<GpuContext> {
    open_context_quiet_if(device, false)
}

/// As [`open_context`], printing nothing when `quiet` (a command whose stdout is one JSON
/// document).
pub(crate) fn open_context_quiet_if(
    device: &DeviceArgs,
    quiet: bool,
) -> anyhow::Result<GpuContext> {
    if device.devices > 2 && device.parallel == Parallel::Model {
        anyhow::bail!("--devices above 2 needs --parallel data (bench, check, run, train)");
    }
    device.refuse_data_parallel_flags()?;
    if device.devices != 1 || device.parallel == Parallel::Data {
        anyhow::bail!("this command runs on one device; drop --devices and --parallel");
    }
    let ctx = device.open(&device.choices()?[0])?;
    if !quiet {
        println!("adapter: {}", ctx.describe());
        if let Some(tuned) = describe_tuning(&ctx) {
            println!("{tuned}");
        }
    }
    Ok(ctx)
}

/// Where a context's measured convolution choices come from, if it has any.
fn describe_tuning(ctx: &GpuContext) -> Option<String> {
    let tuning = ctx.tuning();
    let source = tuning.source().filter(|_| !tuning.is_empty())?;
    Some(format!(
        "{} measured convolution choices and {} fully connected from {} (convnet tune)",
        tuning.len(),
        tuning.linear_len(),
        source.display()
    ))
}

/// One context per device of `--devices`, each printed with its adapter.
pub(crate) fn open_contexts(device: &DeviceArgs) -> anyhow::Result<Vec<GpuContext>> {
    device.refuse_data_parallel_flags()?;
    if device.parallel == Parallel::Data {
        anyhow::bail!(
            "--parallel data runs in `bench`, `check`, `run` and `train`; this command splits a \
             two-device layout (alexnet-2gpu) with --devices 2"
        );
    }
    if device.devices > 2 {
        anyhow::bail!("a two-device layout runs on 2 devices; more devices need --parallel data");
    }
    open_replica_contexts(device)
}

/// One context per device of `--devices` (data-parallel replicas, or a two-device layout's
/// halves), each described.
pub(crate) fn open_replica_contexts(device: &DeviceArgs) -> anyhow::Result<Vec<GpuContext>> {
    open_replica_contexts_quiet_if(device, false)
}

/// As [`open_replica_contexts`], described unless `quiet`.
pub(crate) fn open_replica_contexts_quiet_if(
    device: &DeviceArgs,
    quiet: bool,
) -> anyhow::Result<Vec<GpuContext>> {
    let contexts = device
        .choices()?
        .iter()
        .map(|choice| device.open(choice))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (i, ctx) in contexts.iter().enumerate().filter(|_| !quiet) {
        println!(
            "device {i}: {}; convolutions {:?} (3x3 stride 1: {:?}), fully connected {:?} \
             (backward {:?}){}",
            ctx.describe(),
            ctx.conv_kernel(),
            ctx.conv_algorithm(),
            ctx.variants().linear,
            ctx.matmul_kernel(),
            match ctx.precision() {
                Precision::F32 => "",
                Precision::F16 => "; activations and weights stored as f16",
            }
        );
        if let Some(tuned) = describe_tuning(ctx) {
            println!("device {i}: {tuned}");
        }
    }
    if !quiet && contexts.len() > 1 && contexts.iter().all(|c| c.info() == contexts[0].info()) {
        println!(
            "({} devices on one adapter: they share its hardware, so expect no speed-up)",
            contexts.len()
        );
    }
    Ok(contexts)
}

pub(crate) fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

pub(crate) fn describe_memory(memory: &MemoryUse) -> String {
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
pub(crate) fn driver_memory(contexts: &[GpuContext]) -> String {
    library_bench::driver_allocation(contexts).map_or_else(
        || "the driver gives no allocator report".into(),
        |bytes| format!("driver allocation {}", megabytes(bytes)),
    )
}

/// GPU memory a placed network holds, as a phrase for the output.
pub(crate) fn placed_memory(memory: PlacedMemory) -> String {
    match memory {
        PlacedMemory::One(memory) => describe_memory(&memory),
        PlacedMemory::Two([a, b]) => format!(
            "GPU memory {} on device 0, {} on device 1",
            megabytes(a),
            megabytes(b)
        ),
    }
}

/// GPU memory of a network on one device, and the parts its batch runs in where it does.
pub(crate) fn describe_placed(placed: &gpu::PlacedNetwork) -> String {
    match placed {
        gpu::PlacedNetwork::Parts(parts) => format!(
            "{} (the batch {})",
            placed_memory(placed.memory()),
            describe_parts(&parts.sizes())
        ),
        _ => placed_memory(placed.memory()),
    }
}

/// A batch in parts of `sizes` images, as the output says it.
pub(crate) fn describe_parts(sizes: &[usize]) -> String {
    format!(
        "in {} parts along it, as one storage binding holds: {sizes:?} images",
        sizes.len()
    )
}

/// Where `check` and `train` take their weights and images from: files, or drawn from a seed.
#[derive(Args)]
pub(crate) struct SourceArgs {
    /// Weights file (safetensors); default: initialised from --seed, as the post's script
    /// initialises AlexNet.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Input file (.npy, [N, 3, H, W]); default: a random batch drawn from --seed.
    #[arg(long)]
    input: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

impl SourceArgs {
    /// True when the images come from a file.
    pub(crate) fn has_input(&self) -> bool {
        self.input.is_some()
    }

    /// The plan (at the input file's batch, else at `batch`), the weights and the images.
    pub(crate) fn load(
        &self,
        network: &Network,
        batch: usize,
    ) -> anyhow::Result<(Vec<LayerPlan>, Weights, Vec<f32>)> {
        load_or_init(
            network,
            batch,
            self.weights.as_deref(),
            self.input.as_deref(),
            self.seed,
        )
    }
}

/// The loss of a training forward-backward pass.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LossChoice {
    /// TensorFlow's l2_loss(logits) = sum(logits^2) / 2, the seed's benchmark loss.
    L2,
    /// Softmax cross-entropy against --labels, the mean over the batch (PyTorch's default).
    CrossEntropy,
}

/// Which loss a training pass differentiates, and the labels it needs.
#[derive(Args)]
pub(crate) struct LossArgs {
    /// Class labels (.npy, int64 or int32, one per image); with them the loss is softmax
    /// cross-entropy. GoogLeNet with --aux-logits adds 0.3 x each auxiliary head's loss.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// The loss (default: cross-entropy with --labels, else l2, the seed's).
    #[arg(long, value_enum)]
    loss: Option<LossChoice>,
}

impl LossArgs {
    /// True when a loss or labels were asked for.
    pub(crate) fn given(&self) -> bool {
        self.labels.is_some() || self.loss.is_some()
    }

    /// Fails unless the loss is the seed's `l2_loss` (what a two-device layout differentiates).
    pub(crate) fn require_l2(&self) -> anyhow::Result<()> {
        if self.labels.is_some() || matches!(self.loss, Some(LossChoice::CrossEntropy)) {
            anyhow::bail!(
                "on two devices the loss is the seed's l2_loss; drop --labels and --loss"
            );
        }
        Ok(())
    }

    /// The loss over `plan`'s heads (auxiliary heads included), and the labels, checked against
    /// the batch and the classes. `input_given`: the images come from a file (random images
    /// have no labels).
    pub(crate) fn resolve(
        &self,
        plan: &[LayerPlan],
        input_given: bool,
    ) -> anyhow::Result<(Loss, Option<Vec<usize>>)> {
        let kind = match (self.loss, &self.labels) {
            (Some(LossChoice::L2), Some(_)) => {
                anyhow::bail!("--labels are for --loss cross-entropy, not l2")
            }
            (Some(LossChoice::CrossEntropy), None) => {
                anyhow::bail!("--loss cross-entropy needs --labels")
            }
            (_, Some(_)) => LossKind::CrossEntropy,
            (_, None) => LossKind::L2,
        };
        let loss = Loss::with_aux_heads(kind, plan);
        let Some(path) = &self.labels else {
            return Ok((loss, None));
        };
        if !input_given {
            anyhow::bail!("--labels label the images of --input; add --input");
        }
        let labels = convnet_wgpu::npy::read_labels(path)?;
        let batch = plan[0].batch;
        if labels.len() != batch {
            anyhow::bail!(
                "{}: {} labels for {batch} images",
                path.display(),
                labels.len()
            );
        }
        loss.check_labels(plan, &labels)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok((loss, Some(labels)))
    }
}

/// How a loss reads in messages: `l2_loss(logits)`, `cross-entropy (+ 0.3 x 2 auxiliary heads)`.
pub(crate) fn describe_loss(loss: &Loss) -> String {
    let name = match loss.kind {
        LossKind::L2 => "l2_loss(logits)",
        LossKind::CrossEntropy => "cross-entropy",
    };
    match loss.heads.len() {
        1 => name.to_string(),
        n => format!(
            "{name} (+ {} x {} auxiliary heads)",
            model::AUX_LOSS_WEIGHT,
            n - 1
        ),
    }
}

/// Weights and input for check/run/train: from files when given, else drawn from the seed.
pub(crate) fn load_or_init(
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
