//! `convnet style`: neural style transfer on VGG (docs/style.md).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use convnet_wgpu::gpu::{
    AdamConfig, LbfgsConfig, Optimizer, StyleImages, StyleProfile, StyleTransfer,
};
use convnet_wgpu::model::Network;
use convnet_wgpu::picture::{self, Picture};
use convnet_wgpu::style::{self, LossTerms, Objective, Pooling};
use convnet_wgpu::weights::Weights;
use rand::{Rng, SeedableRng};

use super::{describe_memory, open_context_quiet_if, DeviceArgs};

#[derive(Args)]
pub(crate) struct StyleArgs {
    /// The content image (PNG, JPEG, or .npy [3, H, W] in [0, 1]).
    #[arg(long)]
    content: PathBuf,
    /// The style image (PNG or JPEG resized to --size on its long side, or .npy as is).
    #[arg(long)]
    style: PathBuf,
    /// VGG weights (safetensors, torchvision's names: features.N.weight/bias; the classifier
    /// is not needed). Default: random weights drawn from --seed (random features still
    /// transfer texture, though not as a trained VGG's do).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// vgg19 (Gatys et al.'s), vgg16, vgg13 or vgg11.
    #[arg(long, default_value = "vgg19")]
    model: String,
    /// The long side of the images, in pixels (PNG and JPEG are resized; .npy is taken as is).
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Optimiser steps (one evaluation of the loss and its gradient each).
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// The optimiser: Adam, or L-BFGS (Gatys et al.'s; one step = one evaluation).
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: OptimizerChoice,
    /// The learning rate: Adam's, in the image's [0, 1] units per step (default 0.02); L-BFGS's
    /// step length scale (default 1, PyTorch's).
    #[arg(long)]
    lr: Option<f32>,
    /// L-BFGS's history of pairs (PyTorch's history_size).
    #[arg(long, default_value_t = 100)]
    history: usize,
    #[arg(long, default_value_t = 1.0)]
    content_weight: f32,
    #[arg(long, default_value_t = 1e6)]
    style_weight: f32,
    /// Total variation's weight (a smoothness prior; 0: none).
    #[arg(long, default_value_t = 0.0)]
    tv_weight: f32,
    /// Pooling between VGG's blocks: its max pools, or average pools as Gatys et al. suggest.
    #[arg(long, value_enum, default_value = "max")]
    pool: PoolChoice,
    /// Where the image starts: the content image, uniform noise from --seed, or a file.
    #[arg(long, default_value = "content")]
    init: String,
    /// Content layers, comma-separated (conv4_2, relu4_2 or features.21 name the same layer).
    #[arg(long, value_delimiter = ',', default_values_t = style::DEFAULT_CONTENT_LAYERS.iter().map(|s| s.to_string()))]
    content_layers: Vec<String>,
    /// Style layers, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = style::DEFAULT_STYLE_LAYERS.iter().map(|s| s.to_string()))]
    style_layers: Vec<String>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The result (.png, .jpg or .npy), written atomically at the end.
    #[arg(long)]
    out: PathBuf,
    /// Print a line (when stdout is not a terminal) and write a frame (with --frames) every N
    /// steps.
    #[arg(long, default_value_t = 10)]
    every: usize,
    /// A directory to write the image into every --every steps (step_00010.png, ...).
    #[arg(long)]
    frames: Option<PathBuf>,
    /// Write the loss's gradient with respect to the initial image here (.npy [3, H, W]), for
    /// comparing with another framework.
    #[arg(long)]
    gradient_out: Option<PathBuf>,
    /// Print one JSON document (settings, every step's loss terms, timings) instead of progress.
    #[arg(long)]
    json: bool,
    /// After the steps, time one step phase by phase (forward, losses, backward, image step)
    /// and layer by layer; printed, or in the JSON document.
    #[arg(long)]
    profile: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum OptimizerChoice {
    Adam,
    Lbfgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum PoolChoice {
    Max,
    Avg,
}

/// One step's record for --json.
#[derive(serde::Serialize)]
struct StepRecord {
    step: usize,
    content: f64,
    style: f64,
    tv: f64,
    total: f64,
}

/// `convnet style`.
pub(crate) fn style(args: &StyleArgs) -> anyhow::Result<()> {
    let depth = match args.model.as_str() {
        "vgg11" => 11,
        "vgg13" => 13,
        "vgg16" => 16,
        "vgg19" => 19,
        other => anyhow::bail!("style transfer runs on VGG (vgg11/13/16/19), not {other}"),
    };
    let finite_at_least = |v: f32, min: f32| v.is_finite() && v >= min;
    let lr = args.lr.unwrap_or(match args.optimizer {
        OptimizerChoice::Adam => 0.02,
        OptimizerChoice::Lbfgs => 1.0,
    });
    if !(finite_at_least(lr, 0.0) && lr > 0.0) {
        anyhow::bail!("--lr must be a positive number");
    }
    if args.history == 0 {
        anyhow::bail!("--history must be at least 1");
    }
    if ![args.content_weight, args.style_weight, args.tv_weight]
        .iter()
        .all(|&w| finite_at_least(w, 0.0))
    {
        anyhow::bail!("--content-weight, --style-weight and --tv-weight must be finite and >= 0");
    }
    if args.every == 0 {
        anyhow::bail!("--every must be at least 1");
    }
    picture::check_writable(&args.out)?;
    if let Some(path) = &args.gradient_out {
        if path
            .extension()
            .is_none_or(|e| !e.eq_ignore_ascii_case("npy"))
        {
            anyhow::bail!(
                "{}: --gradient-out writes .npy (an image file would clamp and round it)",
                path.display()
            );
        }
        convnet_wgpu::files::check_writable(path)?;
    }

    let whole = convnet_wgpu::model::vgg(depth)?;
    let objective = Objective {
        content_layers: resolve(&whole, &args.content_layers)?,
        style_layers: resolve(&whole, &args.style_layers)?,
        content_weight: args.content_weight,
        style_weight: args.style_weight,
        tv_weight: args.tv_weight,
    };
    let pooling = match args.pool {
        PoolChoice::Max => Pooling::Max,
        PoolChoice::Avg => Pooling::Average,
    };
    let content = picture::load(&args.content, Some(args.size))?;
    let style_image = picture::load(&args.style, Some(args.size))?;
    let initial = match args.init.as_str() {
        "content" => content.pixels.clone(),
        "noise" => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
            (0..content.dims.len())
                .map(|_| rng.random::<f32>())
                .collect()
        }
        path => {
            let start = picture::load(std::path::Path::new(path), Some(args.size))?;
            if start.dims != content.dims {
                anyhow::bail!(
                    "{path}: the initial image is {}x{}, the content image {}x{}",
                    start.dims.height,
                    start.dims.width,
                    content.dims.height,
                    content.dims.width
                );
            }
            start.pixels
        }
    };
    let layers = objective.layers();
    let plan_at = |what: &str, image: &Picture| -> anyhow::Result<_> {
        let network = style::feature_network(depth, pooling, image.dims, &layers)?;
        network.plan(1).map_err(|e| {
            anyhow::anyhow!(
                "the {what} image ({}x{}) is too small for the deepest feature layer: {e}",
                image.dims.height,
                image.dims.width
            )
        })
    };
    let plan = plan_at("content", &content)?;
    let style_plan = plan_at("style", &style_image)?;
    let features = style::feature_network(depth, pooling, content.dims, &layers)?;
    let weights = match &args.weights {
        Some(path) => Weights::load_part(path, &features, &whole)?,
        None => Weights::init(&features, args.seed)?,
    };

    let ctx = open_context_quiet_if(&args.device, args.json)?;
    let optimizer = match args.optimizer {
        OptimizerChoice::Adam => Optimizer::Adam(AdamConfig {
            learning_rate: lr,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        }),
        OptimizerChoice::Lbfgs => Optimizer::Lbfgs(LbfgsConfig {
            learning_rate: lr,
            history: args.history,
        }),
    };
    let images = StyleImages {
        content: &content.pixels,
        style: &style_image.pixels,
        initial: &initial,
    };
    let transfer = StyleTransfer::new(
        &ctx,
        (&plan, &style_plan),
        &weights,
        &objective,
        &images,
        optimizer,
    )?;
    if let Some(dir) = &args.frames {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("{}: cannot create the frames directory: {e}", dir.display())
        })?;
    }
    if !args.json {
        println!(
            "style transfer on {} ({}), {}x{} image, style {}x{}; content {} x {:?}, style {:e} x \
             {:?}, tv {:e}; {} lr {lr}; {}",
            args.model,
            match &args.weights {
                Some(path) => format!("weights {}", path.display()),
                None => format!("random weights from seed {}", args.seed),
            },
            content.dims.height,
            content.dims.width,
            style_image.dims.height,
            style_image.dims.width,
            args.content_weight,
            args.content_layers,
            args.style_weight,
            args.style_layers,
            args.tv_weight,
            match args.optimizer {
                OptimizerChoice::Adam => "Adam".to_string(),
                OptimizerChoice::Lbfgs => format!("L-BFGS (history {})", args.history),
            },
            describe_memory(&transfer.memory())
        );
    }
    if let Some(path) = &args.gradient_out {
        transfer.evaluate()?;
        let gradient = transfer.read_image_gradient()?;
        picture::save(
            path,
            &Picture {
                dims: content.dims,
                pixels: gradient,
            },
        )?;
    }

    let bar = (!args.json && std::io::stdout().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(args.steps as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]",
            )
            .expect("a valid template"),
        );
        bar
    });
    let mut records = Vec::with_capacity(args.steps);
    // Seconds in the optimiser's steps alone: frames written between steps are not counted.
    let mut seconds = 0.0;
    for step in 0..args.steps {
        let start = Instant::now();
        let terms = transfer.step()?;
        seconds += start.elapsed().as_secs_f64();
        if !terms.total().is_finite() {
            anyhow::bail!(
                "step {step}: the loss is no longer finite ({terms:?}); lower --lr or the weights \
                 (the result is not written)"
            );
        }
        records.push(record(step, &terms));
        let rate = (step + 1) as f64 / seconds;
        let line = format!(
            "step {step}: content {:.4e}, style {:.4e}, tv {:.4e}, total {:.4e}; {rate:.2} steps/s",
            terms.content,
            terms.style,
            terms.tv,
            terms.total()
        );
        match &bar {
            Some(bar) => {
                bar.set_message(line);
                bar.inc(1);
            }
            None if !args.json && (step % args.every == 0 || step + 1 == args.steps) => {
                println!("{line}")
            }
            None => {}
        }
        if let Some(dir) = &args.frames {
            if (step + 1) % args.every == 0 {
                let frame = Picture {
                    dims: content.dims,
                    pixels: transfer.read_image()?,
                };
                picture::save(&dir.join(format!("step_{:05}.png", step + 1)), &frame)?;
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    let per_step = seconds / args.steps.max(1) as f64;
    let gflops = style::step_flops(&plan, &objective)? as f64 / 1e9;
    let profile = match args.profile {
        true => Some(transfer.profile()?),
        false => None,
    };
    let result = Picture {
        dims: content.dims,
        pixels: transfer.read_image()?,
    };
    picture::save(&args.out, &result)?;
    if args.json {
        let document = serde_json::json!({
            "model": args.model,
            "adapter": ctx.info().name,
            "height": content.dims.height,
            "width": content.dims.width,
            "content_layers": objective.content_layers,
            "style_layers": objective.style_layers,
            "content_weight": args.content_weight,
            "style_weight": args.style_weight,
            "tv_weight": args.tv_weight,
            "optimizer": match args.optimizer {
                OptimizerChoice::Adam => "adam",
                OptimizerChoice::Lbfgs => "lbfgs",
            },
            "lr": lr,
            "steps": records,
            "seconds": seconds,
            "seconds_per_step": per_step,
            "gflop_per_step": gflops,
            "profile": profile,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        println!(
            "{} steps in {seconds:.2} s ({per_step:.3} s/step, {gflops:.2} GFLOP/step, {:.1} \
             GFLOP/s); wrote {}",
            args.steps,
            gflops / per_step,
            args.out.display()
        );
        if let Some(profile) = &profile {
            print_profile(profile);
        }
    }
    Ok(())
}

fn record(step: usize, terms: &LossTerms) -> StepRecord {
    StepRecord {
        step,
        content: terms.content,
        style: terms.style,
        tv: terms.tv,
        total: terms.total(),
    }
}

/// Layer names as the user wrote them, resolved to the network's.
fn resolve(network: &Network, names: &[String]) -> anyhow::Result<Vec<String>> {
    names
        .iter()
        .filter(|n| !n.is_empty())
        .map(|n| Ok(style::resolve_layer(network, n.trim())?))
        .collect()
}

/// The step's phases, and each phase's slowest layers.
fn print_profile(profile: &StyleProfile) {
    let mut phases = vec![
        ("forward", &profile.forward),
        ("losses (Gram)", &profile.losses),
        ("backward", &profile.backward),
        ("image gradient", &profile.image),
    ];
    if let Some(optimizer) = &profile.optimizer {
        phases.push(("adam", optimizer));
    }
    let total: f64 = phases.iter().map(|(_, p)| p.seconds()).sum();
    let timer = match profile.forward.gpu_timestamps {
        true => "GPU timestamps",
        false => "host timer",
    };
    println!("profile of one step ({timer}): {:.1} ms", 1e3 * total);
    if profile.optimizer.is_none() {
        println!("  (L-BFGS's dispatches are not profiled: the step's time less these phases)");
    }
    for (name, phase) in phases {
        let mut layers: Vec<_> = phase.layers.iter().collect();
        layers.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        let slowest: Vec<String> = (layers.iter().take(3))
            .map(|l| format!("{} {:.1} ms", l.layer, 1e3 * l.seconds))
            .collect();
        println!(
            "  {name:<14} {:>9.1} ms {:>5.1}%   slowest: {}",
            1e3 * phase.seconds(),
            100.0 * phase.seconds() / total,
            slowest.join(", ")
        );
    }
}
