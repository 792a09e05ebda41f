//! `convnet tune`: every convolution of a network timed under each candidate way of computing
//! it on the adapter at hand, and the fastest that matches the CPU reference kept per layer
//! shape and pass ([`crate::gpu::tuning`] holds the choices and their cache file).
//!
//! The candidates are the convolution algorithms (direct; winograd2: F(2x2, 3x3) or F(2x2,
//! 5x5); winograd4: F(4x4, 3x3)) crossed with the kernel shapes (register blocks, workgroup tiles where the adapter's limits
//! run them). Each candidate is forced on the whole network, so that every layer is timed in
//! context, by GPU timestamps where the adapter has them:
//!
//! 1. The network at batch 1 runs a forward-backward pass, untimed: a driver such as llvmpipe
//!    compiles a shader at its first dispatch, and the pipelines (specialised by window and
//!    stride, never by batch) are then compiled for the network at the tuned batch.
//! 2. That network runs a profiled forward pass (on a GPU five, each layer's fastest kept:
//!    `profiled_runs`). A candidate whose forward took at least
//!    [`PRUNE_FACTOR`] times the best candidate's so far on every layer it applies to can win
//!    nothing and stops there (on lavapipe the workgroup-tiled kernels run 3-4x slower, and
//!    their backward passes were most of a tune's time).
//! 3. The others run a profiled backward pass (after an untimed forward; on a GPU five).
//!
//! The candidates run kernel shape by kernel shape, direct first. A kernel shape whose direct
//! forward took at least [`PRUNE_FACTOR`] times another shape's direct forward on every layer is
//! not tried with the Winograd algorithms, whose products run on the same kernels (on lavapipe the workgroup tiles' three forwards were a
//! third of AlexNet's tune).
//!
//! A candidate that does not apply to a layer (Winograd on an 11x11 or strided layer, or one
//! whose transforms do not fit a binding) is not timed for it; one that fails on the adapter
//! (too large, out of memory) is reported and left out. Before a candidate may win a layer, the
//! layer alone under it (batch 1, its input cropped to at most 12x12 or the window, same
//! channels, window, stride, padding and groups) must match the CPU reference within
//! `check::TOLERANCE` in its output, its input gradient and its parameter gradients: one chunk
//! of tiles and of pixels (the chunked paths are the kernel tests' to cover).
//!
//! The network is tuned whole at the batch it is given: a batch that runs in parts (larger than
//! one storage binding holds) or in data-parallel shards plans its layers at the part's batch,
//! which the cache keys separately; tune at that batch for those runs.
//!
//! The winner for inference is the fastest forward; for training, the fastest forward plus
//! backward. Layers of one shape (ResNet's repeated blocks) share one entry, their times
//! summed.
//!
//! The fully connected layers are tuned apart, shape by shape, each alone (a network of that
//! one layer at the tuned batch): every forward kernel (the 16-row block; the 4-row small-batch
//! kernel whole and, on a GPU, with its reduction split into 2 to 64 chunks of at least 256
//! steps: [`linear_candidates`]) after an untimed pass, its output checked against the CPU
//! reference. Only the forward product has
//! candidates, so one winner serves both passes ([`LinearShapeResult`]).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::check::{compare, TOLERANCE};
use crate::error::{Error, Result};
use crate::gpu::tuning::{
    conv_key, driver_of, linear_key, Cache, CacheEntry, ConvChoice, LayerChoice, LinearEntry,
    TunedPass,
};
use crate::gpu::MIN_CHUNK_DEPTH;
use crate::gpu::{ConvAlgorithm, GpuContext, GpuNetwork, KernelShape, LinearKernel, Variants};
use crate::model::{Dims, Layer, LayerKind, LayerPlan, Network, Padding, Window};
use crate::reference::{self, Parameters};
use crate::weights::{self, Weights};

/// How many times the best forward time a candidate's forward must take, on every layer, to be
/// dropped without timing its backward.
pub const PRUNE_FACTOR: f64 = 2.0;

/// The largest side of the cropped input a candidate is checked on, unless the window needs
/// more.
const CHECK_SIDE: usize = 12;

/// One candidate's measurements on one layer shape.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CandidateTime {
    /// The algorithm and kernel shape.
    pub choice: ConvChoice,
    /// Seconds of the forward pass spent in the layers of this shape.
    pub forward_s: f64,
    /// Seconds of the backward pass spent in them; `None` where the candidate was dropped after
    /// its forward (see [`PRUNE_FACTOR`]).
    pub backward_s: Option<f64>,
    /// Why it may not win: its check against the reference failed, or it was dropped (`None`:
    /// it may).
    pub rejected: Option<String>,
}

impl CandidateTime {
    /// Its forward plus backward seconds, where both were timed.
    pub fn training_s(&self) -> Option<f64> {
        self.backward_s.map(|b| self.forward_s + b)
    }
}

/// One layer shape's candidates and winners.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ShapeResult {
    /// The layers of this shape, by name.
    pub layers: Vec<String>,
    /// Their [`conv_key`].
    pub key: String,
    /// Every candidate that applied, in the order measured.
    pub candidates: Vec<CandidateTime>,
    /// The fastest checked candidate for the forward pass alone.
    pub inference: Option<ConvChoice>,
    /// The fastest checked candidate for the forward and backward passes.
    pub training: Option<ConvChoice>,
}

/// One fully connected candidate's forward on one layer shape.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LinearCandidateTime {
    /// The forward kernel.
    pub kernel: LinearKernel,
    /// Seconds of the layer's forward product (its fastest run).
    pub forward_s: f64,
    /// Why it may not win (its output did not match the reference), or `None`.
    pub rejected: Option<String>,
}

/// One fully connected layer shape's candidates and winner.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LinearShapeResult {
    /// The layers of this shape, by name.
    pub layers: Vec<String>,
    /// Their [`linear_key`].
    pub key: String,
    /// Every candidate, in the order measured.
    pub candidates: Vec<LinearCandidateTime>,
    /// The fastest checked candidate (for both passes: the backward's kernels do not depend on
    /// it).
    pub fastest: Option<LinearKernel>,
}

/// What a tune measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TuneReport {
    /// Every convolution shape, in the order of the network.
    pub shapes: Vec<ShapeResult>,
    /// Every fully connected layer shape, in the order of the network.
    pub linear: Vec<LinearShapeResult>,
    /// Wall-clock seconds the whole tune took.
    pub seconds: f64,
}

impl TuneReport {
    /// Every tuned layer shape's key (convolutions', then fully connected layers').
    pub fn keys(&self) -> Vec<String> {
        (self.shapes.iter().map(|s| s.key.clone()))
            .chain(self.linear.iter().map(|s| s.key.clone()))
            .collect()
    }

    /// The winners as the cache's entries for the adapter `info`.
    pub fn cache(&self, info: &wgpu::AdapterInfo) -> Cache {
        let linear = (self.linear.iter())
            .filter_map(|shape| {
                Some(LinearEntry {
                    adapter: info.name.clone(),
                    backend: format!("{:?}", info.backend),
                    driver: driver_of(info),
                    layer: shape.key.clone(),
                    kernel: shape.fastest?,
                    seconds: (shape.candidates.iter())
                        .map(|c| (c.kernel.to_string(), c.forward_s))
                        .collect(),
                })
            })
            .collect();
        Cache {
            entries: self.entries(info),
            linear,
        }
    }

    /// The convolutions' winners as cache entries for the adapter `info`.
    fn entries(&self, info: &wgpu::AdapterInfo) -> Vec<CacheEntry> {
        let mut entries = Vec::new();
        for shape in &self.shapes {
            let passes = [
                (TunedPass::Inference, shape.inference),
                (TunedPass::Training, shape.training),
            ];
            for (pass, choice) in passes {
                let Some(choice) = choice else { continue };
                let seconds = (shape.candidates.iter())
                    .filter_map(|c| {
                        let s = match pass {
                            TunedPass::Inference => Some(c.forward_s),
                            TunedPass::Training => c.training_s(),
                        };
                        Some((c.choice.to_string(), s?))
                    })
                    .collect();
                entries.push(CacheEntry {
                    adapter: info.name.clone(),
                    backend: format!("{:?}", info.backend),
                    driver: driver_of(info),
                    layer: shape.key.clone(),
                    pass,
                    choice,
                    seconds,
                });
            }
        }
        entries
    }
}

/// The candidates on `ctx`: what its flags force, else every algorithm and every kernel shape
/// its limits run.
pub fn candidates(ctx: &GpuContext) -> Vec<ConvChoice> {
    let asked = ctx.variants();
    let algorithms = match asked.conv_algorithm {
        ConvAlgorithm::Auto => vec![
            ConvAlgorithm::Direct,
            ConvAlgorithm::Winograd2,
            ConvAlgorithm::Winograd4,
        ],
        forced => vec![forced],
    };
    let kernels = match asked.conv {
        KernelShape::Auto if ctx.tiled_kernels_fit() => {
            vec![KernelShape::RegisterBlock, KernelShape::WorkgroupTile]
        }
        KernelShape::Auto => vec![KernelShape::RegisterBlock],
        forced => vec![forced],
    };
    let mut all = Vec::new();
    for &kernel in &kernels {
        for &algorithm in &algorithms {
            all.push(ConvChoice { algorithm, kernel });
        }
    }
    all
}

/// Tunes every convolution of `network` at `batch` on `ctx` (whose flags may narrow the
/// candidates; its variants are restored afterwards). `progress` hears a line per step.
pub fn tune(
    ctx: &mut GpuContext,
    network: &Network,
    batch: usize,
    seed: u64,
    mut progress: impl FnMut(&str),
) -> Result<TuneReport> {
    let start = Instant::now();
    let plan = network.plan(batch)?;
    let warm_up_plan = network.plan(1)?;
    // Layers by shape, in the order of the network.
    let mut shapes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut order = Vec::new();
    for (index, layer) in plan.iter().enumerate() {
        if let Some(key) = conv_key(layer) {
            if !shapes.contains_key(&key) {
                order.push(key.clone());
            }
            shapes.entry(key).or_default().push(index);
        }
    }
    let linear = tune_linear(ctx, &plan, seed, &mut progress)?;
    if order.is_empty() && linear.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} has no convolutions or fully connected layers to tune",
            network.name
        )));
    }
    let weights = Weights::init(network, seed)?;
    let input = weights::random_input(&plan, seed.wrapping_add(1));
    let asked = ctx.variants();
    let runs = profiled_runs(ctx);
    let mut results: Vec<ShapeResult> = (order.iter())
        .map(|key| ShapeResult {
            layers: (shapes[key].iter())
                .map(|&i| plan[i].layer.name.clone())
                .collect(),
            key: key.clone(),
            candidates: Vec::new(),
            inference: None,
            training: None,
        })
        .collect();
    // Kernel shapes whose direct forward took PRUNE_FACTOR times another shape's everywhere.
    let mut slow_kernels: Vec<KernelShape> = Vec::new();
    for choice in candidates(ctx) {
        if slow_kernels.contains(&choice.kernel) {
            progress(&format!(
                "skipping {choice}: its kernel shape's direct forward took at least \
                 {PRUNE_FACTOR}x another shape's on every layer"
            ));
            continue;
        }
        ctx.set_variants(Variants {
            conv: choice.kernel,
            conv_algorithm: choice.algorithm,
            ..asked
        });
        progress(&format!("timing {choice}"));
        // A candidate that fails (too large for the adapter, out of memory) is no candidate;
        // the others go on.
        let outcome = (|| -> Result<bool> {
            let warm_up = GpuNetwork::with_gradients(ctx, &warm_up_plan, &weights)?;
            warm_up.upload_input(&input[..warm_up_plan[0].input.len()])?;
            warm_up.forward_backward()?;
            drop(warm_up);
            let net = GpuNetwork::with_gradients(ctx, &plan, &weights)?;
            net.upload_input(&input)?;
            if !ctx.software() {
                let warming = Instant::now();
                while warming.elapsed().as_secs_f64() < GPU_WARM_UP_SECONDS {
                    net.forward_backward()?;
                }
            }
            let forward = fastest_by_layer(runs, || net.profile_forward_layers())?;
            let ran: BTreeMap<&str, LayerChoice> = (net.layer_choices().iter())
                .map(|(layer, choice)| (layer.as_str(), *choice))
                .collect();
            let sum = |times: &LayerSeconds, layers: &[usize]| -> f64 {
                (layers.iter())
                    .map(|&i| times.get(&plan[i].layer.name).copied().unwrap_or(0.0))
                    .sum()
            };
            // The shapes this candidate applies to, with their forward seconds. A candidate
            // whose algorithm a layer could not take ran the direct one there: it is the direct
            // candidate again, not timed twice (so is Winograd4 on a 5x5 layer, which runs and
            // reports Winograd2's F(2x2, 5x5)).
            let applied: Vec<(usize, f64)> = (order.iter().enumerate())
                .filter(|(_, key)| {
                    shapes[*key].iter().all(|&i| {
                        let used = ran.get(plan[i].layer.name.as_str());
                        used.is_some_and(|c| c.choice.algorithm == choice.algorithm)
                    })
                })
                .map(|(s, key)| (s, sum(&forward, &shapes[key])))
                .collect();
            // Whether this forward took PRUNE_FACTOR times the best kept one's on every layer
            // it applies to, among the candidates `among` admits.
            let slower_everywhere = |among: &dyn Fn(&CandidateTime) -> bool| {
                applied.iter().all(|&(s, seconds)| {
                    (results[s].candidates.iter())
                        .filter(|c| c.rejected.is_none() && among(c))
                        .map(|c| c.forward_s)
                        .min_by(f64::total_cmp)
                        .is_some_and(|best| seconds >= PRUNE_FACTOR * best)
                })
            };
            let dropped = slower_everywhere(&|_| true);
            // A direct candidate that slow against another kernel shape's direct one marks its
            // kernel shape slow (not its algorithm: the comparison is direct against direct).
            let slow_kernel = choice.algorithm == ConvAlgorithm::Direct
                && slower_everywhere(&|c| c.choice.algorithm == ConvAlgorithm::Direct);
            let backward = match dropped {
                true => None,
                false => Some(fastest_by_layer(runs, || net.profile_backward_layers())?),
            };
            drop(net);
            for (s, forward_s) in applied {
                let layers = &shapes[&order[s]];
                let rejected = match &backward {
                    None => Some(format!(
                        "forward at least {PRUNE_FACTOR}x the best on every layer; backward not \
                         timed"
                    )),
                    Some(_) => check_layer(ctx, &plan[layers[0]], seed)?,
                };
                if let (Some(why), Some(_)) = (&rejected, &backward) {
                    progress(&format!(
                        "{choice} rejected on {}: {why}",
                        results[s].layers[0]
                    ));
                }
                results[s].candidates.push(CandidateTime {
                    choice,
                    forward_s,
                    backward_s: backward.as_ref().map(|b| sum(b, layers)),
                    rejected,
                });
            }
            Ok(slow_kernel)
        })();
        match outcome {
            Ok(true) => slow_kernels.push(choice.kernel),
            Ok(false) => {}
            Err(e) => progress(&format!("{choice} failed, not a candidate: {e}")),
        }
    }
    ctx.set_variants(asked);
    for shape in &mut results {
        let fastest = |cost: &dyn Fn(&CandidateTime) -> f64| {
            (shape.candidates.iter())
                .filter(|c| c.rejected.is_none())
                .min_by(|a, b| cost(a).total_cmp(&cost(b)))
                .map(|c| c.choice)
        };
        shape.inference = fastest(&|c| c.forward_s);
        shape.training = fastest(&|c| c.training_s().unwrap_or(f64::INFINITY));
    }
    Ok(TuneReport {
        shapes: results,
        linear,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The fully connected candidates for a layer of `depth` input features: the kernel `asked`
/// forces, else the 16-row block and the small-batch kernel whole and, on a GPU, split into 2
/// to 64 chunks of at least 256 steps (`MIN_CHUNK_DEPTH`). A software adapter runs a workgroup per
/// thread, so split-K only adds a pass there: on lavapipe every split of AlexNet's fully
/// connected layers, at batch 2 and 32, timed within noise of the whole kernel or slower
/// (docs/kernels.md#a-measured-tune-convnet-tune).
pub fn linear_candidates(asked: LinearKernel, depth: usize, software: bool) -> Vec<LinearKernel> {
    let splits: &[usize] = match software {
        true => &[1],
        false => &[1, 2, 4, 8, 16, 32, 64],
    };
    match asked {
        LinearKernel::Auto => std::iter::once(LinearKernel::Block16)
            .chain(
                (splits.iter().copied())
                    .filter(|&chunks| chunks == 1 || depth / chunks >= MIN_CHUNK_DEPTH)
                    .map(|chunks| LinearKernel::SmallBatch { chunks }),
            )
            .collect(),
        forced => vec![forced],
    }
}

/// Tunes every fully connected layer shape of `plan` alone on `ctx` (its variants restored
/// afterwards): each candidate's forward timed after an untimed pass (on a GPU, after
/// [`GPU_WARM_UP_SECONDS`] of them), its fastest of at least three runs, and its output checked
/// against the CPU reference.
fn tune_linear(
    ctx: &mut GpuContext,
    plan: &[LayerPlan],
    seed: u64,
    progress: &mut impl FnMut(&str),
) -> Result<Vec<LinearShapeResult>> {
    let asked = ctx.variants();
    // A layer alone costs a fraction of a pass: three runs at least, even on a CPU adapter, where
    // one run of AlexNet's fc2 at batch 32 read 48 ms in one tune and 73 in the next.
    let runs = profiled_runs(ctx).max(3);
    let mut results: Vec<LinearShapeResult> = Vec::new();
    for layer in plan {
        let Some(key) = linear_key(layer) else {
            continue;
        };
        if let Some(shape) = results.iter_mut().find(|s| s.key == key) {
            shape.layers.push(layer.layer.name.clone());
            continue;
        }
        let network = Network::new(
            "tune linear",
            layer.input,
            vec![Layer::new("layer", layer.layer.kind.clone())],
        );
        let alone = network.plan(layer.batch)?;
        let weights = Weights::init(&network, seed)?;
        let input = weights::random_input(&alone, seed.wrapping_add(3));
        let params = Parameters::<f32>::from_weights(&weights);
        let expected = reference::layer_forward(&alone[0], &[&input], &params)?;
        let mut candidates = Vec::new();
        for kernel in linear_candidates(asked.linear, layer.input.len(), ctx.software()) {
            ctx.set_variants(Variants {
                linear: kernel,
                ..asked
            });
            progress(&format!("timing {kernel} on {}", layer.layer.name));
            let outcome = (|| -> Result<LinearCandidateTime> {
                let net = GpuNetwork::new(ctx, &alone, &weights)?;
                net.upload_input(&input)?;
                net.forward()?;
                if !ctx.software() {
                    let warming = Instant::now();
                    while warming.elapsed().as_secs_f64() < GPU_WARM_UP_SECONDS {
                        net.forward()?;
                    }
                }
                let forward = fastest_by_layer(runs, || net.profile_forward_layers())?;
                let output = compare("output", &net.read_output()?, &expected)?;
                Ok(LinearCandidateTime {
                    kernel,
                    forward_s: forward.values().sum(),
                    rejected: (!output.within(TOLERANCE))
                        .then(|| format!("output off by {:.1e} of its scale", output.relative)),
                })
            })();
            match outcome {
                Ok(candidate) => candidates.push(candidate),
                Err(e) => progress(&format!("{kernel} failed, not a candidate: {e}")),
            }
        }
        let fastest = (candidates.iter())
            .filter(|c| c.rejected.is_none())
            .min_by(|a, b| a.forward_s.total_cmp(&b.forward_s))
            .map(|c| c.kernel);
        results.push(LinearShapeResult {
            layers: vec![layer.layer.name.clone()],
            key,
            candidates,
            fastest,
        });
    }
    ctx.set_variants(asked);
    Ok(results)
}

/// Seconds per layer of one profiled pass.
type LayerSeconds = BTreeMap<String, f64>;

fn by_layer(profile: crate::gpu::Profile) -> LayerSeconds {
    let mut seconds = LayerSeconds::new();
    for layer in profile.layers {
        *seconds.entry(layer.layer).or_default() += layer.seconds;
    }
    seconds
}

/// On a GPU, seconds of untimed forward-backward passes at the tuned batch before a candidate
/// is timed. Clocks fall while the host checks the previous candidate against the CPU reference
/// (an idle H200 read 345 MHz against 1980 under load) and take tenths of a second to rise: on
/// an H200, Winograd timed after such a pause read 1.7-2x the benchmark's profile of the same
/// layers, and the tune chose direct convolutions that benchmarked 1.3x slower.
const GPU_WARM_UP_SECONDS: f64 = 0.5;

/// Profiled runs of each pass per candidate, each layer's fastest kept. On a GPU a layer takes
/// a fraction of a millisecond and one run is at the mercy of clocks still rising from idle: on
/// an H200 one run after the compile pass timed AlexNet's Winograd conv2 forward at 2.05 ms,
/// where the benchmark's profile (after its warm-up) read 0.87 ms. On a CPU adapter a run takes
/// seconds and varies by a few percent, so one does.
fn profiled_runs(ctx: &GpuContext) -> usize {
    if ctx.software() {
        1
    } else {
        5
    }
}

/// Each layer's fastest time over `runs` runs of `profile`.
fn fastest_by_layer(
    runs: usize,
    profile: impl Fn() -> Result<crate::gpu::Profile>,
) -> Result<LayerSeconds> {
    let mut fastest = by_layer(profile()?);
    for _ in 1..runs {
        for (layer, seconds) in by_layer(profile()?) {
            let best = fastest.entry(layer).or_insert(seconds);
            *best = best.min(seconds);
        }
    }
    Ok(fastest)
}

/// The convolution `layer` alone on `ctx` as it is set, at batch 1 on a cropped input, against
/// the CPU reference: `None` when its output, input gradient and parameter gradients all match
/// within [`TOLERANCE`], else what did not.
fn check_layer(ctx: &GpuContext, layer: &LayerPlan, seed: u64) -> Result<Option<String>> {
    let LayerKind::Conv2d { window, .. } = layer.layer.kind else {
        return Err(Error::Internal(format!(
            "{} is not a convolution",
            layer.layer.name
        )));
    };
    let side =
        |size: usize, kernel: usize, stride: usize| size.min(CHECK_SIDE.max(kernel + stride));
    let input = Dims {
        channels: layer.input.channels,
        height: side(layer.input.height, window.height, window.stride_height),
        width: side(layer.input.width, window.width, window.stride_width),
    };
    // Behind a 1x1 max pool (an identity), so that the layer computes its input gradient.
    let identity = LayerKind::MaxPool {
        window: Window::square(1, 1, Padding::Valid),
    };
    let network = Network::new(
        "tune check",
        input,
        vec![
            Layer::new("identity", identity),
            Layer::new("layer", layer.layer.kind.clone()),
        ],
    );
    let plan = network.plan(1)?;
    let weights = Weights::init(&network, seed)?;
    let params = Parameters::<f32>::from_weights(&weights);
    let image = weights::random_input(&plan, seed.wrapping_add(2));
    let output = reference::layer_forward(&plan[1], &[&image], &params)?;
    // The gradient of l2_loss(output) is the output itself.
    let grads = reference::layer_backward(&plan[1], &image, &output, &output, &params, true)?;
    let net = GpuNetwork::with_gradients(ctx, &plan, &weights)?;
    net.upload_input(&image)?;
    net.forward_backward()?;
    let gpu_grads = net.read_gradients()?;
    let mut compared = vec![
        compare("output", &net.read_output()?, &output)?,
        compare(
            "input gradient",
            &net.read_output_gradient(0)?,
            grads.input.as_deref().unwrap_or_default(),
        )?,
    ];
    for (name, expected) in [("layer.weight", &grads.weight), ("layer.bias", &grads.bias)] {
        if let (Some(expected), Some(got)) = (expected, gpu_grads.get(name)) {
            compared.push(compare(name, &got.data, expected)?);
        }
    }
    Ok(compared
        .iter()
        .find(|d| !d.within(TOLERANCE))
        .map(|d| format!("{} off by {:.1e} of its scale", d.name, d.relative)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fully_connected_candidates_split_only_on_gpus_and_by_chunks_of_256_or_more() {
        use LinearKernel::{Block16, SmallBatch};
        let whole = SmallBatch { chunks: 1 };
        assert_eq!(
            linear_candidates(LinearKernel::Auto, 9216, true),
            [Block16, whole]
        );
        // AlexNet's fc1 on a GPU: 9216 / 32 = 288 steps a chunk, / 64 = 144 too few.
        let gpu = linear_candidates(LinearKernel::Auto, 9216, false);
        let chunks: Vec<usize> = (gpu.iter())
            .filter_map(|k| match k {
                SmallBatch { chunks } => Some(*chunks),
                _ => None,
            })
            .collect();
        assert_eq!(gpu[0], Block16);
        assert_eq!(chunks, [1, 2, 4, 8, 16, 32]);
        assert_eq!(
            linear_candidates(LinearKernel::Auto, 300, false),
            [Block16, whole]
        );
        let forced = SmallBatch { chunks: 5 };
        assert_eq!(linear_candidates(forced, 9216, false), [forced]);
    }
}
