//! `convnet eval` (a classifier scored on a labelled set) and `convnet make-dataset` (the
//! project's own small labelled set).

use std::path::PathBuf;

use clap::Args;
use convnet_wgpu::gpu::GpuNetwork;
use convnet_wgpu::training::data::LabelledImages;
use convnet_wgpu::{dataset, eval, npy, weights};

use super::{open_context_quiet_if, BatchNormArgs, DeviceArgs, NetworkArgs, NormalisationArgs};

#[derive(Args)]
pub(crate) struct EvalArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    batch_norm: BatchNormArgs,
    /// The weights (safetensors).
    #[arg(long)]
    weights: PathBuf,
    /// The images (.npy: float32 `[N, C, H, W]` as the network takes them, or uint8
    /// `[N, C, H, W]` or `[N, H, W, C]`, decoded with --mean and --std).
    #[arg(long)]
    input: PathBuf,
    /// One class index per image (.npy int64 or int32, shape `[N]`).
    #[arg(long)]
    labels: PathBuf,
    /// Images per forward pass (the last batch is padded; padding is not scored).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Print the scores as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    normalisation: NormalisationArgs,
}

/// `convnet eval`.
pub(crate) fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    if args.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    let network = args.network.build()?;
    let params = weights::Weights::load(&args.weights, &network)?;
    let set = LabelledImages::load(&args.input, &args.labels, &network)?;
    let format = args.normalisation.format_for(&set)?;
    // The whole set, as f32: 8-bit pixels decoded on the host.
    let images = set.to_f32(format.as_ref())?;
    let (count, labels) = (set.len(), set.labels().to_vec());
    let (gpu_network, params) = args.batch_norm.on_gpu(&network, &params, false)?;
    let plan = gpu_network.plan(args.batch.min(count))?;
    let ctx = open_context_quiet_if(&args.device, args.json)?;
    let net = GpuNetwork::new(&ctx, &plan, &params)?;
    let scores = eval::evaluate(&net, &images, &labels)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.labels.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&scores)?);
    } else {
        println!(
            "{} images: loss {:.6}, top-1 {:.2}%, top-5 {:.2}%; {:.1} images/s (batch {}, uploads \
             and readbacks included)",
            scores.images,
            scores.loss,
            100.0 * scores.top1,
            100.0 * scores.top5,
            scores.images_per_s(),
            plan[0].batch
        );
    }
    Ok(())
}

#[derive(Args)]
pub(crate) struct MakeDatasetArgs {
    /// The kind of set: `shapes` (noisy shapes, stripes and textures; docs/networks.md).
    kind: String,
    /// Classes, 2 to 10.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Height and width of the images.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Images.
    #[arg(long, default_value_t = 6000)]
    count: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the images as 8-bit pixels, channels last ([N, size, size, 3] uint8, each value
    /// round(255 x)), as image files store them: a quarter of the bytes.
    #[arg(long)]
    uint8: bool,
    /// The directory to write images.npy (`[N, 3, size, size]` float32 in [0, 1], or with
    /// --uint8 `[N, size, size, 3]` uint8) and labels.npy (int64) into; created if missing.
    #[arg(long)]
    out: PathBuf,
}

/// `convnet make-dataset`.
pub(crate) fn make_dataset(args: &MakeDatasetArgs) -> anyhow::Result<()> {
    if args.kind != "shapes" {
        anyhow::bail!("make-dataset draws `shapes`, not {:?}", args.kind);
    }
    let set = dataset::shapes(args.classes, args.size, args.count, args.seed)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("{}: cannot create the directory: {e}", args.out.display()))?;
    let images = args.out.join("images.npy");
    if args.uint8 {
        let plane = args.size * args.size;
        let mut pixels = vec![0u8; set.images.len()];
        for (n, image) in set.images.chunks(3 * plane).enumerate() {
            for (i, &v) in image.iter().enumerate() {
                let (c, p) = (i / plane, i % plane);
                pixels[(n * plane + p) * 3 + c] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        npy::write_u8(&images, &[args.count, args.size, args.size, 3], &pixels)?;
    } else {
        npy::write(&images, &[args.count, 3, args.size, args.size], &set.images)?;
    }
    npy::write_labels(&args.out.join("labels.npy"), &set.labels)?;
    println!(
        "wrote {} images of {}x{} over {} classes ({}) into {}",
        args.count,
        args.size,
        args.size,
        args.classes,
        dataset::SHAPE_CLASSES[..args.classes].join(", "),
        args.out.display()
    );
    Ok(())
}
