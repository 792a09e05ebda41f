//! The memory-bound layers of training (batch norm, residual add, concatenation, max and adaptive
//! average pooling) alone, at ResNet-50's and GoogLeNet's layer shapes, forward and backward, on
//! the default adapter: each layer's GPU time (the best of several timestamped runs) and its
//! bytes per second against `convnet peak`'s copy bandwidth, measured in the same run. The bytes
//! are `model::layer_cost`'s, the profile's count: every tensor the pass must read or write,
//! once.
//!
//!   cargo bench --bench memory_bound -- [batch, default 8]
//!
//! The target the project holds these layers to is 50% of the copy bandwidth
//! (docs/results.md, "Training VGG, GoogLeNet and ResNet").

use convnet_wgpu::gpu::{measure_peak, AdapterChoice, GpuContext, GpuNetwork};
use convnet_wgpu::model::{
    layer_cost, Dims, Direction, Layer, LayerKind, Network, Pad, Padding, Window, INPUT,
};
use convnet_wgpu::weights::{self, Weights};
use convnet_wgpu::Result;

/// Timestamped runs of each pass; the fastest counts (the machine is shared).
const RUNS: usize = 5;

/// The layer under test is named this; the networks below may hold others it reads.
const MEASURED: &str = "measured";

fn dims(channels: usize, height: usize, width: usize) -> Dims {
    Dims {
        channels,
        height,
        width,
    }
}

/// A network whose layer `MEASURED` reads the input and, for the two-input ops, a batch norm of
/// it (any tensor of the same shape would do).
fn network(input: Dims, kind: LayerKind) -> Network {
    let two_inputs = matches!(kind, LayerKind::Add { .. } | LayerKind::Concat);
    let mut layers = Vec::new();
    if two_inputs {
        let other = LayerKind::BatchNorm {
            eps: 1e-5,
            relu: false,
        };
        layers.push(Layer::new("other", other));
        layers.push(Layer::new(MEASURED, kind).reading(&[INPUT, "other"]));
    } else {
        layers.push(Layer::new(MEASURED, kind));
    }
    Network::new("memory-bound", input, layers)
}

/// The layers: ResNet-50's batch norms (with and without ReLU, from 112x112 to 7x7), residual
/// adds and pools, and GoogLeNet's concatenations and pools (3x3 stride 2 with ceil mode between
/// stages, 3x3 stride 1 in every Inception block).
fn layers() -> Vec<(&'static str, Dims, LayerKind)> {
    let norm = |relu| LayerKind::BatchNorm { eps: 1e-5, relu };
    let one = Pad {
        top: 1,
        bottom: 1,
        left: 1,
        right: 1,
    };
    let max_pool = |size, stride, padding| LayerKind::MaxPool {
        window: Window::square(size, stride, padding),
    };
    vec![
        ("resnet50 bn1", dims(64, 112, 112), norm(true)),
        ("resnet50 layer1 bn3", dims(256, 56, 56), norm(false)),
        ("resnet50 layer2 bn1", dims(128, 28, 28), norm(true)),
        ("resnet50 layer2 bn3", dims(512, 28, 28), norm(false)),
        ("resnet50 layer3 bn1", dims(256, 14, 14), norm(true)),
        ("resnet50 layer4 bn3", dims(2048, 7, 7), norm(false)),
        (
            "resnet50 layer1 add",
            dims(256, 56, 56),
            LayerKind::Add { relu: true },
        ),
        (
            "resnet50 layer3 add",
            dims(1024, 14, 14),
            LayerKind::Add { relu: true },
        ),
        (
            "resnet50 layer4 add",
            dims(2048, 7, 7),
            LayerKind::Add { relu: true },
        ),
        ("googlenet 3a concat", dims(128, 28, 28), LayerKind::Concat),
        ("googlenet 4a concat", dims(256, 14, 14), LayerKind::Concat),
        ("googlenet 5a concat", dims(416, 7, 7), LayerKind::Concat),
        (
            "resnet50 maxpool",
            dims(64, 112, 112),
            max_pool(3, 2, Padding::Explicit(one)),
        ),
        (
            "googlenet maxpool2",
            dims(192, 56, 56),
            max_pool(3, 2, Padding::Ceil(Pad::default())),
        ),
        (
            "googlenet 3a pool",
            dims(192, 28, 28),
            max_pool(3, 1, Padding::Explicit(one)),
        ),
        (
            "resnet50 avgpool",
            dims(2048, 7, 7),
            LayerKind::AdaptiveAvgPool {
                height: 1,
                width: 1,
            },
        ),
    ]
}

/// The fastest of `RUNS` timestamped runs of `MEASURED`'s dispatches in one pass.
fn fastest(profile: impl Fn() -> Result<convnet_wgpu::gpu::Profile>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..RUNS {
        let seconds = (profile()?.layers.iter())
            .filter(|l| l.layer == MEASURED)
            .map(|l| l.seconds)
            .sum::<f64>();
        best = best.min(seconds);
    }
    Ok(best)
}

fn main() -> Result<()> {
    // cargo bench passes "--bench"; the number is ours.
    let batch = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(8);
    let ctx = GpuContext::new(&AdapterChoice::default())?;
    let peak = measure_peak(&ctx, 256 << 20)?;
    println!(
        "memory-bound layers at batch {batch} on {}; copy bandwidth {:.2} GB/s (convnet peak)",
        ctx.describe(),
        peak.bandwidth_gbs
    );
    println!(
        "{:<22} {:>16} {:>10} {:>8} {:>6} {:>10} {:>8} {:>6}",
        "layer", "shape", "fwd ms", "GB/s", "peak", "bwd ms", "GB/s", "peak"
    );
    for (name, input, kind) in layers() {
        let network = network(input, kind);
        let plan = network.plan(batch)?;
        let params = Weights::init(&network, 1)?;
        let net = GpuNetwork::with_input_gradient(&ctx, &plan, &params)?;
        net.upload_input(&weights::random_input(&plan, 1))?;
        // Compiles every kernel (llvmpipe does at the first dispatch).
        net.forward_backward()?;
        let forward = fastest(|| net.profile_forward())?;
        let backward = fastest(|| net.profile_backward())?;
        let layer = (plan.iter())
            .find(|l| l.layer.name == MEASURED)
            .expect("the network holds the measured layer");
        let rate = |direction, seconds: f64| {
            let bytes = layer_cost(layer, direction, true).bytes as f64;
            let gbs = bytes / seconds / 1e9;
            (gbs, 100.0 * gbs / peak.bandwidth_gbs)
        };
        let (forward_gbs, forward_share) = rate(Direction::Forward, forward);
        let (backward_gbs, backward_share) = rate(Direction::Backward, backward);
        let shape = format!("{}x{}x{}", input.channels, input.height, input.width);
        println!(
            "{name:<22} {shape:>16} {:>10.2} {forward_gbs:>8.2} {forward_share:>5.0}% {:>10.2} \
             {backward_gbs:>8.2} {backward_share:>5.0}%",
            forward * 1e3,
            backward * 1e3,
        );
    }
    Ok(())
}
