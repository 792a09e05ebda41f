//! The benchmark: `burn_in` untimed steps, then `batches` timed ones, each a whole pass over one
//! batch, timed from submission until the GPU has finished (a queue wait, not just the submit).
//! Nothing is allocated, compiled or read back inside the loop: the network's buffers and bind
//! groups exist before it starts. Results are typed ([`BenchResult`], [`PassResult`],
//! [`PassProfile`]) and serialise to the JSON that `convnet bench --json` writes, whose layout
//! [`SCHEMA_VERSION`] names.

use std::time::Instant;

use crate::error::Result;
use crate::gpu::{
    self, AllReduce, AllReduceStats, DataParallel, ExchangeStats, GpuContext, GpuNetwork, Peak,
    PlacedMemory, PlacedNetwork, Runner, StepStats,
};
use crate::model::{self, Direction, LayerPlan};

/// The layout of [`BenchResult`]'s JSON (docs/commands.md, `bench --json`). Raised whenever a
/// field is renamed, removed or changes meaning; adding a field keeps it.
pub const SCHEMA_VERSION: u32 = 1;

/// Timed and warm-up steps per pass when the user sets neither: the post's 100 after 10, or 5
/// after 1 on a software adapter, where a batch of 32 takes seconds.
pub fn default_steps(software: bool) -> (usize, usize) {
    if software {
        (5, 1)
    } else {
        (100, 10)
    }
}

/// Timings of one benchmark run, in seconds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Timings {
    /// The untimed warm-up steps (the first includes shader compilation on some drivers).
    pub burn_in: Vec<f64>,
    /// The timed steps.
    pub steps: Vec<f64>,
    /// Mean over the timed steps.
    pub mean: f64,
    /// Standard deviation over the timed steps (population form, as the seed computes it, but
    /// without the post's slip of counting the burn-in steps).
    pub sd: f64,
}

/// Mean and population standard deviation.
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// What one benchmark step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Pass {
    /// The forward pass to the logits (the post's "Forward").
    Forward,
    /// Forward, then the gradients of `l2_loss(logits)` for every parameter, no update (the
    /// seed's "Forward_backward").
    ForwardBackward,
    /// Forward, backward and an SGD update with momentum and weight decay: a training step as
    /// tf_cnn_benchmarks times it.
    TrainingStep,
}

/// The update a [`Pass::TrainingStep`] applies: PyTorch's ImageNet recipe's momentum and weight
/// decay, and a rate small enough for the seed's `l2_loss` on AlexNet (whose gradients are
/// ~1e10: `convnet train` diverges at 1e-10) to keep the weights finite over a benchmark, where
/// non-finite values could run at another speed. The values change nothing in the work.
pub const BENCH_SGD: crate::gpu::SgdConfig = crate::gpu::SgdConfig {
    learning_rate: 1e-13,
    momentum: 0.9,
    weight_decay: 1e-4,
};

impl Pass {
    /// The pass's name in the summary line, as the 2017 post's script prints it.
    pub fn summary_name(self) -> &'static str {
        match self {
            Pass::Forward => "Forward",
            Pass::ForwardBackward => "Forward_backward",
            Pass::TrainingStep => "Training_step",
        }
    }

    /// FLOPs of one step over `plan`: the forward, plus for forward-backward every layer's
    /// weight and input gradients (the first layer's input gradient skipped); the update's
    /// few FLOPs per parameter are not counted.
    pub fn flops_per_batch(self, plan: &[LayerPlan]) -> f64 {
        let batch = plan.first().map_or(0, |l| l.batch) as f64;
        let forward = model::total_flops_per_image(plan) as f64;
        let backward = match self {
            Pass::Forward => 0.0,
            Pass::ForwardBackward | Pass::TrainingStep => {
                model::total_backward_flops_per_image(plan) as f64
            }
        };
        batch * (forward + backward)
    }
}

/// Runs `burn_in + batches` passes; `on_step(i, seconds)` is called after each, `i` counting the
/// timed steps from 0 (burn-in steps get `None`). A forward-backward pass needs a network built
/// with gradients.
pub fn run(
    net: &dyn Runner,
    pass: Pass,
    batches: usize,
    burn_in: usize,
    on_step: impl FnMut(Option<usize>, f64),
) -> Result<Timings> {
    match pass {
        Pass::Forward => run_steps(|| net.forward(), batches, burn_in, on_step),
        Pass::ForwardBackward => run_steps(|| net.forward_backward(), batches, burn_in, on_step),
        Pass::TrainingStep => Err(crate::Error::InvalidArgument(
            "a training step needs an optimiser: see bench_pass".into(),
        )),
    }
}

/// Runs `burn_in + batches` calls of `step` (each waits for the GPU), timing each.
fn run_steps(
    mut step: impl FnMut() -> Result<()>,
    batches: usize,
    burn_in: usize,
    mut on_step: impl FnMut(Option<usize>, f64),
) -> Result<Timings> {
    let mut warm = Vec::with_capacity(burn_in);
    let mut steps = Vec::with_capacity(batches);
    for i in 0..burn_in + batches {
        let start = Instant::now();
        step()?;
        let seconds = start.elapsed().as_secs_f64();
        if i < burn_in {
            warm.push(seconds);
            on_step(None, seconds);
        } else {
            steps.push(seconds);
            on_step(Some(i - burn_in), seconds);
        }
    }
    Ok(Timings::new(warm, steps))
}

impl Timings {
    /// Warm-up and timed steps, with the timed steps' mean and deviation.
    fn new(burn_in: Vec<f64>, steps: Vec<f64>) -> Self {
        let (mean, sd) = mean_sd(&steps);
        Timings {
            burn_in,
            steps,
            mean,
            sd,
        }
    }
}

/// One benchmarked pass: its timings and rates.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PassResult {
    /// Which pass.
    pub pass: Pass,
    /// Devices it ran on.
    pub devices: usize,
    /// FLOPs of one step (see [`Pass::flops_per_batch`]).
    pub flops_per_batch: f64,
    /// The warm-up and timed steps.
    #[serde(rename = "timings_s")]
    pub timings: Timings,
    /// Images per second over the timed steps.
    pub images_per_s: f64,
    /// FLOP/s over the timed steps, in GFLOP/s.
    pub gflops_per_s: f64,
    /// The drivers' allocation after the first timed step, where they report one.
    pub driver_allocated_bytes_first_step: Option<u64>,
    /// The drivers' allocation after the last timed step: equal to the first when nothing is
    /// allocated inside the loop.
    pub driver_allocated_bytes_last_step: Option<u64>,
    /// Two devices: the mean over the timed steps of each device's busy time and each exchange.
    pub two_devices_mean_per_step: Option<StepStats>,
    /// Data-parallel replicas: the all-reduce's cost and the scaling against one device.
    pub data_parallel: Option<DataParallelStats>,
}

/// What a data-parallel pass costs beyond its replicas' own work, and how it scales: each
/// figure the mean of a timed loop of its own, in the same run as the pass.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DataParallelStats {
    /// Images per replica.
    pub shards: Vec<usize>,
    /// Passes with a backward: the all-reduce's bytes and time.
    pub all_reduce: Option<AllReduceCost>,
    /// The same pass on device 0 alone at the largest shard (weak scaling, as tf_cnn_benchmarks'
    /// per-device batch), where there is more than one replica.
    pub one_device: Option<OneDeviceBaseline>,
}

/// The all-reduce's cost in one pass, from three loops of the same steps.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AllReduceCost {
    /// Bytes read back from and written to this process's devices per step.
    pub bytes: u64,
    /// Bytes this process sent to and received from the other MPI ranks per step.
    pub rank_bytes: u64,
    /// Buckets per step.
    pub buckets: usize,
    /// Mean seconds of a step with every replica on its own shard's gradients (no all-reduce).
    pub compute_s: f64,
    /// Mean seconds of a step with the all-reduce after the whole backward pass.
    pub after_backward_s: f64,
    /// Mean host seconds of that all-reduce alone.
    pub after_backward_host_s: f64,
    /// Mean seconds of a step with the all-reduce overlapped with the backward pass.
    pub overlapped_s: f64,
    /// Which of the two the pass's own timings are (the replicas' setting).
    pub chosen: AllReduce,
}

impl AllReduceCost {
    /// The all-reduce's share of a step when it follows the whole backward pass.
    pub fn share_after_backward(&self) -> f64 {
        (self.after_backward_s - self.compute_s) / self.after_backward_s
    }

    /// The share of an overlapped step the all-reduce still adds.
    pub fn share_overlapped(&self) -> f64 {
        (self.overlapped_s - self.compute_s) / self.overlapped_s
    }
}

/// One device's run of a data-parallel pass, for its scaling.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OneDeviceBaseline {
    /// Its batch: the largest shard.
    pub batch: usize,
    /// Its timed steps.
    #[serde(rename = "timings_s")]
    pub timings: Timings,
    /// Its images per second.
    pub images_per_s: f64,
    /// Images/s over N devices / (N x images/s on one): 1 for perfect scaling.
    pub scaling_efficiency: f64,
}

/// Benchmarks `pass` over data-parallel `replicas` (built to train with the seed's `l2_loss`,
/// the batch uploaded): the pass with the all-reduce the replicas are set to, timed as
/// [`bench_pass`] does, and, where it has a backward and more than one replica, the same steps
/// without the all-reduce and with the other one, for [`AllReduceCost`]. The steps
/// without the all-reduce leave the replicas apart; a benchmark's weights are not used after.
pub fn bench_data_parallel(
    replicas: &DataParallel,
    pass: Pass,
    (batches, burn_in): (usize, usize),
    mut on_step: impl FnMut(Option<usize>, f64),
) -> Result<PassResult> {
    require_timed_steps(batches)?;
    let devices: Vec<&GpuContext> = replicas.replicas().iter().map(|r| r.context()).collect();
    let allocation = || {
        devices
            .iter()
            .map(|c| c.allocated_bytes())
            .sum::<Option<u64>>()
    };
    let optimizers = match pass {
        Pass::TrainingStep => replicas.optimizers(BENCH_SGD)?,
        _ => Vec::new(),
    };
    let step = |all_reduce: Option<AllReduce>| -> Result<AllReduceStats> {
        match (pass, all_reduce) {
            (Pass::Forward, _) => replicas.forward().map(|()| AllReduceStats::default()),
            (_, None) => {
                replicas.forward_backward()?;
                for optimizer in &optimizers {
                    optimizer.submit_update()?;
                }
                for ctx in &devices {
                    ctx.wait("data-parallel update")?;
                }
                Ok(AllReduceStats::default())
            }
            (Pass::ForwardBackward, Some(mode)) => {
                replicas.set_all_reduce(mode);
                replicas.gradients()
            }
            (Pass::TrainingStep, Some(mode)) => {
                replicas.set_all_reduce(mode);
                replicas.step(&optimizers)
            }
        }
    };
    // The pass's own steps (the all-reduce overlapped) and, where it has one to measure, the
    // same steps without the all-reduce and with it after the whole backward pass, taken in
    // turn step by step, so that a machine's drift and noise fall on all three alike.
    let chosen = replicas.all_reduce();
    let other = match chosen {
        AllReduce::Overlapped => AllReduce::AfterBackward,
        AllReduce::AfterBackward => AllReduce::Overlapped,
    };
    let modes: &[Option<AllReduce>] = if pass != Pass::Forward && replicas.replicas_in_all() > 1 {
        &[Some(chosen), None, Some(other)]
    } else {
        &[Some(chosen)]
    };
    let mut times = vec![(Vec::new(), Vec::new()); modes.len()];
    let (mut stats, mut host_seconds, mut allocated_first) = (AllReduceStats::default(), 0.0, None);
    for i in 0..burn_in + batches {
        for (&mode, (warm, timed)) in modes.iter().zip(&mut times) {
            let start = Instant::now();
            let step_stats = step(mode)?;
            let seconds = start.elapsed().as_secs_f64();
            if i < burn_in {
                warm.push(seconds);
            } else {
                timed.push(seconds);
            }
            if mode == Some(chosen) {
                stats = step_stats;
                if i == burn_in {
                    allocated_first = allocation();
                }
                on_step(i.checked_sub(burn_in), seconds);
            }
            if mode == Some(AllReduce::AfterBackward) && i >= burn_in {
                host_seconds += step_stats.seconds;
            }
        }
    }
    replicas.set_all_reduce(chosen);
    let allocated_last = allocation();
    let mut times = times
        .into_iter()
        .map(|(warm, timed)| Timings::new(warm, timed));
    let timings = times.next().expect("the pass's own steps");
    let all_reduce = match (times.next(), times.next()) {
        (Some(compute), Some(other)) => {
            let (overlapped, after) = match chosen {
                AllReduce::Overlapped => (&timings, &other),
                AllReduce::AfterBackward => (&other, &timings),
            };
            Some(AllReduceCost {
                chosen,
                rank_bytes: stats.rank_bytes,
                bytes: stats.bytes,
                buckets: stats.buckets,
                compute_s: compute.mean,
                after_backward_s: after.mean,
                after_backward_host_s: host_seconds / batches as f64,
                overlapped_s: overlapped.mean,
            })
        }
        _ => None,
    };
    let plan = replicas.replicas()[0].plan();
    let batch = replicas.batch();
    let flops = pass.flops_per_batch(plan) * batch as f64 / plan[0].batch as f64;
    Ok(PassResult {
        pass,
        devices: replicas.replicas_in_all(),
        flops_per_batch: flops,
        images_per_s: batch as f64 / timings.mean,
        gflops_per_s: flops / timings.mean / 1e9,
        timings,
        driver_allocated_bytes_first_step: allocated_first,
        driver_allocated_bytes_last_step: allocated_last,
        two_devices_mean_per_step: None,
        data_parallel: Some(DataParallelStats {
            shards: replicas.shards().to_vec(),
            all_reduce,
            one_device: None,
        }),
    })
}

impl PassResult {
    /// Adds the scaling of this data-parallel pass against `one`, the same pass on one device
    /// at the largest shard.
    pub fn add_one_device_baseline(&mut self, one: &PassResult) {
        let devices = self.devices as f64;
        let images_per_s = self.images_per_s;
        if let Some(stats) = &mut self.data_parallel {
            stats.one_device = Some(OneDeviceBaseline {
                batch: stats.shards[0],
                timings: one.timings.clone(),
                images_per_s: one.images_per_s,
                scaling_efficiency: images_per_s / (devices * one.images_per_s),
            });
        }
    }
}

/// Bytes the drivers of `contexts` have allocated, where every one reports it.
pub fn driver_allocation(contexts: &[GpuContext]) -> Option<u64> {
    contexts.iter().map(GpuContext::allocated_bytes).sum()
}

/// Benchmarks `pass` on `placed` (built on `contexts`): `burn_in` untimed steps then `batches`
/// timed ones; `on_step(i, seconds)` as for [`run`].
pub fn bench_pass(
    placed: &PlacedNetwork,
    contexts: &[GpuContext],
    pass: Pass,
    (batches, burn_in): (usize, usize),
    mut on_step: impl FnMut(Option<usize>, f64),
) -> Result<PassResult> {
    require_timed_steps(batches)?;
    let net = placed.runner();
    let mut allocated_first = None;
    let mut two_devices: Option<StepStats> = None;
    let record = |step: Option<usize>, seconds| {
        if step == Some(0) {
            allocated_first = driver_allocation(contexts);
        }
        if let (Some(_), PlacedNetwork::Two(two)) = (step, placed) {
            add_step(&mut two_devices, two.last_step(), batches);
        }
        on_step(step, seconds);
    };
    let timings = match (pass, placed) {
        (Pass::TrainingStep, PlacedNetwork::One(one)) => {
            // The optimiser's buffers and pipelines are made before the timed loop.
            let sgd = crate::gpu::Sgd::new(one, BENCH_SGD)?;
            run_steps(|| sgd.step(), batches, burn_in, record)?
        }
        (Pass::TrainingStep, PlacedNetwork::Parts(parts)) => {
            // One optimiser over the parameters every part shares, updated from the parts'
            // summed gradients.
            let sgd = crate::gpu::Sgd::new(parts.first(), BENCH_SGD)?;
            let step = || {
                parts.forward_backward()?;
                sgd.update()
            };
            run_steps(step, batches, burn_in, record)?
        }
        (Pass::TrainingStep, PlacedNetwork::Two(_)) => {
            return Err(crate::Error::InvalidArgument(
                "a training step (--update) runs on one device".into(),
            ))
        }
        _ => run(net, pass, batches, burn_in, record)?,
    };
    let batch = net.plan().first().map_or(0, |l| l.batch) as f64;
    let flops = pass.flops_per_batch(net.plan());
    Ok(PassResult {
        pass,
        devices: contexts.len(),
        flops_per_batch: flops,
        images_per_s: batch / timings.mean,
        gflops_per_s: flops / timings.mean / 1e9,
        timings,
        driver_allocated_bytes_first_step: allocated_first,
        driver_allocated_bytes_last_step: driver_allocation(contexts),
        two_devices_mean_per_step: two_devices,
        data_parallel: None,
    })
}

/// Fails unless a benchmark has a timed step.
fn require_timed_steps(batches: usize) -> Result<()> {
    match batches {
        0 => Err(crate::Error::InvalidArgument(
            "a benchmark needs at least 1 timed step".into(),
        )),
        _ => Ok(()),
    }
}

/// Adds one step's stats, divided by the number of steps, into `totals`.
fn add_step(totals: &mut Option<StepStats>, step: StepStats, steps: usize) {
    let n = steps as f64;
    let totals = totals.get_or_insert_with(|| StepStats {
        device_busy_s: [0.0; 2],
        exchanges: step
            .exchanges
            .iter()
            .map(|e| ExchangeStats {
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

/// The adapter and kernel choices a result was measured with.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceInfo {
    /// The adapter's name.
    pub name: String,
    /// Vulkan, Metal, Dx12 or Gl.
    pub backend: String,
    /// DiscreteGpu, IntegratedGpu, Cpu, ...
    pub device_type: String,
    /// The driver's name and version, as the adapter reports them.
    pub driver: String,
    /// More of the driver's description.
    pub driver_info: String,
    /// Whether it runs on the CPU.
    pub software: bool,
    /// Seconds spent creating pipelines.
    pub pipeline_creation_s: f64,
    /// The convolutions' kernel shape (where the tune cache does not set a layer's).
    pub conv_kernel: String,
    /// How the 3x3 and 5x5 stride-1 convolutions are computed, as asked (`Auto`: the tune
    /// cache's choice, else the heuristic).
    pub conv_algorithm: String,
    /// The per-layer convolution choices read from `convnet tune`'s cache for this adapter.
    pub tuned_choices: usize,
    /// The fully connected layer shapes it holds a forward kernel for.
    pub tuned_linear_choices: usize,
    /// The fully connected layers' forward kernel.
    pub linear_kernel: String,
    /// The fully connected layers' backward kernel shape.
    pub matmul_kernel: String,
    /// How activations and conv and linear weights are stored (`F32`, `F16`).
    pub precision: String,
}

impl DeviceInfo {
    /// What `ctx` is and resolved to.
    pub fn of(ctx: &GpuContext) -> Self {
        let info = ctx.info();
        DeviceInfo {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            software: ctx.software(),
            pipeline_creation_s: ctx.pipeline_seconds(),
            conv_kernel: format!("{:?}", ctx.conv_kernel()),
            conv_algorithm: format!("{:?}", ctx.conv_algorithm()),
            tuned_choices: ctx.tuning().len(),
            tuned_linear_choices: ctx.tuning().linear_len(),
            linear_kernel: format!("{:?}", ctx.variants().linear),
            matmul_kernel: format!("{:?}", ctx.matmul_kernel()),
            precision: format!("{:?}", ctx.precision()),
        }
    }
}

/// A whole benchmark run, as `convnet bench --json` writes it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The network's name.
    pub model: String,
    /// Each device's adapter and kernel choices.
    pub devices: Vec<DeviceInfo>,
    /// Images per step.
    pub batch: usize,
    /// Timed steps per pass.
    pub batches: usize,
    /// Warm-up steps per pass.
    pub burn_in: usize,
    /// The random seed of the weights and input.
    pub seed: u64,
    /// GPU memory the network held.
    pub memory: PlacedMemory,
    /// Each pass benchmarked.
    pub passes: Vec<PassResult>,
    /// With two devices and a comparison asked for: the same layout on device 0 alone.
    pub one_device_comparison: Vec<PassResult>,
    /// Per-layer profiles, when asked for (replica 0's, with --parallel data).
    pub profiles: Vec<PassProfile>,
    /// With --parallel data and a profile: each all-reduce bucket's layers, bytes and host time.
    pub buckets: Vec<crate::gpu::BucketReport>,
}

/// One layer's share of a profiled pass, with its rates.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerProfile {
    /// The layer's name.
    pub layer: String,
    /// Dispatches it ran.
    pub dispatches: usize,
    /// The kernels its dispatches ran, each named once, in order.
    pub kernels: Vec<&'static str>,
    /// For a convolution, its algorithm and kernel shape; for a fully connected layer, its
    /// forward kernel; and whether `convnet tune`, a flag or the heuristic chose them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choice: Option<String>,
    /// Mean seconds over the profile's runs.
    pub seconds: f64,
    /// Mean seconds by kernel, each dispatch timed alone (empty where the pass was not split):
    /// their shares split `seconds`.
    pub kernel_seconds: Vec<gpu::KernelTime>,
    /// FLOPs of the layer's products in this pass, for the whole batch.
    pub flops: f64,
    /// `flops` per second, in GFLOP/s.
    pub gflops_per_s: f64,
    /// The least bytes the layer must move in this pass, for the whole batch.
    pub bytes: f64,
    /// `bytes` per second, in GB/s.
    pub gb_per_s: f64,
}

impl LayerProfile {
    /// The share of the adapter's peak this layer reached: of FMA throughput where it has
    /// products, else of bandwidth.
    pub fn of_peak(&self, peak: &Peak) -> f64 {
        if self.flops > 0.0 {
            self.gflops_per_s / peak.fma_gflops
        } else {
            self.gb_per_s / peak.bandwidth_gbs
        }
    }
}

/// A pass, layer by layer, against the adapter's measured peak.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PassProfile {
    /// `forward` or `backward` (the backward's dispatches alone, after an untimed forward).
    pub pass: &'static str,
    /// True when timed by GPU timestamps, false when by the host around each layer.
    pub gpu_timestamps: bool,
    /// Runs averaged.
    pub runs: usize,
    /// The adapter's measured peak.
    pub peak: Peak,
    /// Every layer, in the order the pass runs them.
    pub layers: Vec<LayerProfile>,
}

impl PassProfile {
    /// Seconds of all layers together.
    pub fn seconds(&self) -> f64 {
        self.layers.iter().map(|l| l.seconds).sum()
    }
}

/// Profiles each of `passes` on `net`, `runs` times each (averaged), against the adapter's peak
/// measured once (with buffers of at most 256 MiB).
pub fn profile_passes(net: &GpuNetwork, passes: &[Pass], runs: usize) -> Result<Vec<PassProfile>> {
    let ctx = net.context();
    let peak = gpu::measure_peak(ctx, 256 << 20)?;
    let plan = net.plan();
    let runs = runs.max(1);
    let mut profiles = Vec::new();
    for &pass in passes {
        let mut measured = Vec::with_capacity(runs);
        for _ in 0..runs {
            measured.push(match pass {
                Pass::Forward => net.profile_forward()?,
                // A training step's profile is its backward's (the update is not profiled).
                Pass::ForwardBackward | Pass::TrainingStep => net.profile_backward()?,
            });
        }
        let (name, direction) = match pass {
            Pass::Forward => ("forward", Direction::Forward),
            Pass::ForwardBackward | Pass::TrainingStep => ("backward", Direction::Backward),
        };
        let layers = measured[0]
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let seconds =
                    measured.iter().map(|r| r.layers[i].seconds).sum::<f64>() / runs as f64;
                let mut kernel_seconds = layer.kernel_seconds.clone();
                for (k, kernel) in kernel_seconds.iter_mut().enumerate() {
                    kernel.seconds = (measured.iter())
                        .map(|r| r.layers[i].kernel_seconds[k].seconds)
                        .sum::<f64>()
                        / runs as f64;
                }
                let (index, planned) = plan
                    .iter()
                    .enumerate()
                    .find(|(_, l)| l.layer.name == layer.layer)
                    .ok_or_else(|| {
                        crate::Error::Internal(format!(
                            "profiled layer {} is not in the plan",
                            layer.layer
                        ))
                    })?;
                let cost = model::layer_cost(planned, direction, index > 0);
                // The bytes as the network stores its tensors and weights (f16 halves them; its
                // f32 biases are a rounding error of the count).
                let stored = net.stored_element().bytes() as f64 / 4.0;
                let (flops, bytes) = (cost.flops as f64, cost.bytes as f64 * stored);
                Ok(LayerProfile {
                    layer: layer.layer.clone(),
                    dispatches: layer.dispatches,
                    kernels: layer.kernels.clone(),
                    // A fully connected layer's choice is its forward product's kernel.
                    choice: (net.layer_choice(&layer.layer).map(|c| c.to_string())).or_else(|| {
                        (direction == Direction::Forward)
                            .then(|| net.linear_choice(&layer.layer))?
                            .map(|c| c.to_string())
                    }),
                    seconds,
                    kernel_seconds,
                    flops,
                    gflops_per_s: flops / seconds / 1e9,
                    bytes,
                    gb_per_s: bytes / seconds / 1e9,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        profiles.push(PassProfile {
            pass: name,
            gpu_timestamps: measured[0].gpu_timestamps,
            runs,
            peak,
            layers,
        });
    }
    Ok(profiles)
}

#[cfg(test)]
mod tests {
    use super::mean_sd;

    #[test]
    fn mean_and_population_sd() {
        let (mean, sd) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert!((mean - 2.5).abs() < 1e-12);
        assert!((sd - 1.25f64.sqrt()).abs() < 1e-12);
        assert_eq!(mean_sd(&[]), (0.0, 0.0));
    }
}
