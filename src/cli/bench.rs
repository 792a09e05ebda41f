//! `convnet bench`: the post's benchmark of forward and forward-backward passes, with a per-layer
//! profile against the adapter's peak, JSON and an SVG chart where asked.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use convnet_wgpu::bench::{
    self, BenchResult, DeviceInfo, LayerProfile, Pass, PassProfile, PassResult,
};
use convnet_wgpu::distributed::World;
use convnet_wgpu::gpu::{
    AllReduce, BucketReport, DataParallel, GpuContext, Keep, MemoryUse, PlacedMemory, PlacedNetwork,
};
use convnet_wgpu::model::{LossKind, Network};
use convnet_wgpu::watchdog::Watchdog;
use convnet_wgpu::weights::{self, Weights};
use convnet_wgpu::{chart, files};

use super::{
    describe_memory, describe_placed, driver_memory, megabytes, open_contexts,
    open_replica_contexts, BatchNormArgs, DeviceArgs, NetworkArgs, Parallel,
};

/// Which passes `bench` times.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum PassChoice {
    Forward,
    ForwardBackward,
    Both,
}

impl PassChoice {
    /// The passes timed; with `update`, a training step (forward, backward, SGD) in place of
    /// the forward-backward pass.
    pub(crate) fn passes(self, update: bool) -> &'static [Pass] {
        match (self, update) {
            (PassChoice::Forward, _) => &[Pass::Forward],
            (PassChoice::ForwardBackward, false) => &[Pass::ForwardBackward],
            (PassChoice::ForwardBackward, true) => &[Pass::TrainingStep],
            (PassChoice::Both, false) => &[Pass::Forward, Pass::ForwardBackward],
            (PassChoice::Both, true) => &[Pass::Forward, Pass::TrainingStep],
        }
    }
}

#[derive(Args)]
pub(crate) struct BenchArgs {
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
    /// Which passes to time (default both). Forward-backward runs in training mode (batch norms by
    /// the batch's statistics, unfolded), and so does the forward it is compared with.
    #[arg(long, value_enum)]
    pass: Option<PassChoice>,
    /// Time a training step (forward, backward and an SGD update with momentum and weight
    /// decay, as tf_cnn_benchmarks does) instead of the forward-backward pass.
    #[arg(long)]
    update: bool,
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

/// Runs of each profile, averaged.
const PROFILE_RUNS: usize = 3;

/// `convnet bench`: the benchmark, and its profile, JSON and chart where asked.
pub(crate) fn bench(args: &BenchArgs, world: &World) -> anyhow::Result<()> {
    if world.size() > 1 && (args.device.parallel != Parallel::Data || args.profile) {
        anyhow::bail!(
            "under an MPI launcher, `bench` runs with --parallel data (and without --profile)"
        );
    }
    if let Some(path) = &args.json {
        files::check_writable(path)?;
    }
    if let Some(path) = &args.svg {
        if !args.profile {
            anyhow::bail!("--svg draws the profile; add --profile");
        }
        files::check_writable(path)?;
    }
    if args.profile && args.device.devices != 1 && args.device.parallel == Parallel::Model {
        anyhow::bail!("--profile times one device; drop --devices, or add --parallel data");
    }
    if args.compare_devices && args.device.devices != 2 {
        anyhow::bail!("--compare-devices compares --devices 2 with one device; add --devices 2");
    }
    let network = args.network.build()?;
    let plan = network.plan(args.batch)?;
    let pass = args.pass.unwrap_or(PassChoice::Both);
    let data_parallel = args.device.parallel == Parallel::Data;
    let contexts = if data_parallel {
        open_replica_contexts(&args.device)?
    } else {
        open_contexts(&args.device)?
    };
    let watchdog = Watchdog::start(
        args.device.timeout,
        format!("bench on {}", contexts[0].info().name),
    )?;
    // Every rank of an MPI run takes the same steps (each step's all-reduce waits for all).
    let software = contexts.iter().any(|c| c.software());
    let software = world.gather(u32::from(software)).contains(&1);
    let steps = match (args.batches, args.burn_in) {
        (None, None) if software => {
            let (batches, burn_in) = bench::default_steps(true);
            println!(
                "software adapter: {batches} timed steps after {burn_in} warm-up per pass instead \
                 of the post's 100 after 10 (set --batches / --burn-in to choose)"
            );
            (batches, burn_in)
        }
        (batches, burn_in) => {
            let (default_batches, default_burn_in) = bench::default_steps(false);
            (
                batches.unwrap_or(default_batches),
                burn_in.unwrap_or(default_burn_in),
            )
        }
    };
    if steps.0 == 0 {
        anyhow::bail!("--batches must be at least 1");
    }
    if args.update && matches!(pass, PassChoice::Forward) {
        anyhow::bail!("--update adds an SGD step to the backward pass; drop --pass forward");
    }
    if args.update && args.device.devices != 1 && !data_parallel {
        anyhow::bail!("--update runs on one device or --parallel data; drop --devices");
    }
    let passes = pass.passes(args.update);
    let gradients = passes.iter().any(|&p| p != Pass::Forward);
    let (gpu_network, params) =
        args.batch_norm
            .on_gpu(&network, &Weights::init(&network, args.seed)?, gradients)?;
    let gpu_plan = gpu_network.plan(args.batch)?;
    let input = weights::random_input(&plan, args.seed);
    let mut memory = None;
    let mut profiles = Vec::new();
    let mut run_all = |contexts: &[GpuContext]| -> anyhow::Result<Vec<PassResult>> {
        let placed = PlacedNetwork::new(
            contexts,
            &gpu_network,
            &gpu_plan,
            &params,
            gradients.then_some(Keep::WhatBackwardReads),
        )?;
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
            describe_placed(&placed),
            driver_memory(contexts)
        );
        memory.get_or_insert(placed.memory());
        let mut results = Vec::new();
        for &pass in passes {
            let result = with_progress(steps, &watchdog, |on_step| {
                bench::bench_pass(&placed, contexts, pass, steps, on_step)
            })?;
            print_pass(&result, args.batch, contexts);
            results.push(result);
        }
        let profiled = match &placed {
            PlacedNetwork::One(net) => Some(net),
            PlacedNetwork::Parts(parts) => {
                if args.profile {
                    println!(
                        "profiling the first part alone ({} images): the others run the same \
                         kernels on their own images",
                        parts.first().plan()[0].batch
                    );
                }
                Some(parts.first())
            }
            PlacedNetwork::Two(_) => None,
        };
        if let (true, Some(net)) = (args.profile, profiled) {
            Watchdog::alive(&watchdog);
            profiles = bench::profile_passes(net, passes, PROFILE_RUNS)?;
            for profile in &profiles {
                print_profile(profile);
            }
        }
        Ok(results)
    };
    let mut replica_memory = None;
    let (mut buckets, mut replica_profiles) = (Vec::new(), Vec::new());
    let results = if data_parallel {
        let input = (input.as_slice(), &args.device);
        let replicas = bench_replicas(
            (world, &contexts),
            (&gpu_network, &params),
            input,
            (passes, steps, args.profile),
            &watchdog,
        )?;
        replica_memory = Some(PlacedMemory::One(replicas.memory));
        (replica_profiles, buckets) = (replicas.profiles, replicas.buckets);
        replicas.results
    } else {
        run_all(&contexts)?
    };
    if let [forward, backward] = results.as_slice() {
        println!(
            "{} / forward = {:.2} (FLOP ratio {:.2})",
            backward.pass.summary_name().to_lowercase(),
            backward.timings.mean / forward.timings.mean,
            backward.flops_per_batch / forward.flops_per_batch
        );
    }
    let compared = if args.compare_devices {
        println!("\nthe same layout on device 0 alone:");
        let one = run_all(&contexts[..1])?;
        for (two, one) in results.iter().zip(&one) {
            println!(
                "{}: two devices {:.3} s, one device {:.3} s per batch: {:.2}x the one-device time",
                two.pass.summary_name(),
                two.timings.mean,
                one.timings.mean,
                two.timings.mean / one.timings.mean
            );
        }
        one
    } else {
        Vec::new()
    };
    if data_parallel {
        profiles = std::mem::take(&mut replica_profiles);
    }
    if let Some(path) = &args.svg {
        let panels = chart::profile_panels(&profiles, &contexts[0].info().name);
        files::write_atomically(path, chart::profile_svg(&panels).as_bytes())?;
        println!("wrote {}", path.display());
    }
    if let (Some(path), 0) = (&args.json, world.rank()) {
        let result = BenchResult {
            schema_version: bench::SCHEMA_VERSION,
            model: network.name.clone(),
            devices: contexts.iter().map(DeviceInfo::of).collect(),
            batch: args.batch,
            batches: steps.0,
            burn_in: steps.1,
            seed: args.seed,
            memory: (memory.or(replica_memory)).expect("the benchmark placed the network"),
            passes: results,
            one_device_comparison: compared,
            profiles,
            buckets,
        };
        files::write_atomically(path, serde_json::to_string_pretty(&result)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `bench --parallel data`: every pass over the replicas (the all-reduce overlapped, then
/// without it and after the whole backward pass), then, with more than one replica, the same
/// passes on device 0 alone at the largest shard for the scaling.
fn bench_replicas(
    (world, contexts): (&World, &[GpuContext]),
    (network, params): (&Network, &Weights),
    (input, device): (&[f32], &DeviceArgs),
    (passes, steps, profile): (&[Pass], (usize, usize), bool),
    watchdog: &Option<Watchdog>,
) -> anyhow::Result<ReplicaBench> {
    let batch = input.len() / network.input.len();
    let run = |world, contexts: &[GpuContext], batch: usize, input: &[f32], profile: bool| {
        let devices: Vec<&GpuContext> = contexts.iter().collect();
        let kind = (LossKind::L2, device.sync_batch_norm);
        let mut replicas = DataParallel::over_ranks(world, &devices, network, batch, params, kind)?;
        device.configure(&mut replicas);
        replicas.upload(input, None)?;
        let memory = replicas.replicas()[0].memory();
        let ranks = match world.map_or(1, World::size) {
            1 => String::new(),
            n => format!(" on each of {n} MPI ranks (this rank's shards)"),
        };
        println!(
            "{}: batch {batch} as shards {:?} over {} replica(s){ranks}, {} timed steps after \
             {} warm-up per pass; per replica {}; {}",
            network.name,
            replicas.shards(),
            contexts.len(),
            steps.0,
            steps.1,
            describe_memory(&memory),
            driver_memory(contexts)
        );
        let mut results = Vec::new();
        for &pass in passes {
            let result = with_progress(steps, watchdog, |on_step| {
                bench::bench_data_parallel(&replicas, pass, steps, on_step)
            })?;
            print_pass(&result, batch, contexts);
            results.push(result);
        }
        let (mut profiles, mut buckets) = (Vec::new(), Vec::new());
        if profile {
            Watchdog::alive(watchdog);
            profiles = bench::profile_passes(&replicas.replicas()[0], passes, PROFILE_RUNS)?;
            for profile in &profiles {
                print_profile(profile);
            }
            if passes.iter().any(|&p| p != Pass::Forward) && replicas.replicas_in_all() > 1 {
                buckets = profile_buckets(&replicas, profiles.last())?;
            }
        }
        anyhow::Ok(ReplicaBench {
            results,
            memory,
            profiles,
            buckets,
        })
    };
    let bench = run(Some(world), contexts, batch, input, profile)?;
    let mut results = bench.results;
    let replicas = contexts.len() * world.size();
    // Rank 0's device alone (the other ranks' would share a machine's cores or GPU with it).
    if replicas > 1 && world.rank() == 0 {
        let largest = convnet_wgpu::gpu::shards(batch, replicas)?[0];
        println!("\nthe same passes on device 0 alone at the largest shard, for the scaling:");
        let one = run(
            None,
            &contexts[..1],
            largest,
            &input[..largest * network.input.len()],
            false,
        )?
        .results;
        for (result, one) in results.iter_mut().zip(&one) {
            result.add_one_device_baseline(one);
            println!(
                "{}: {:.1} images/s over {} devices, {:.1} on one at batch {largest}: scaling \
                 efficiency {:.2}",
                result.pass.summary_name(),
                result.images_per_s,
                replicas,
                one.images_per_s,
                result.images_per_s / (replicas as f64 * one.images_per_s)
            );
        }
    }
    Ok(ReplicaBench { results, ..bench })
}

/// What `bench --parallel data` measured.
struct ReplicaBench {
    results: Vec<PassResult>,
    /// One replica's.
    memory: MemoryUse,
    /// Replica 0's per-layer profiles, with --profile.
    profiles: Vec<PassProfile>,
    /// The all-reduce's buckets, with --profile.
    buckets: Vec<BucketReport>,
}

/// Times each bucket of the all-reduce (after the backward pass, mean of a few) and prints it
/// beside `backward`, replica 0's backward profile: when in the backward pass its gradients
/// are final and how much backward is left to hide its all-reduce behind.
fn profile_buckets(
    replicas: &DataParallel,
    backward: Option<&PassProfile>,
) -> anyhow::Result<Vec<BucketReport>> {
    let chosen = replicas.all_reduce();
    replicas.set_all_reduce(AllReduce::AfterBackward);
    let mut runs = Vec::with_capacity(PROFILE_RUNS);
    for _ in 0..PROFILE_RUNS {
        replicas.gradients()?;
        runs.push(replicas.bucket_reports());
    }
    replicas.set_all_reduce(chosen);
    let mut buckets = runs[0].clone();
    for (k, bucket) in buckets.iter_mut().enumerate() {
        bucket.seconds = runs.iter().map(|r| r[k].seconds).sum::<f64>() / runs.len() as f64;
    }
    // Backward milliseconds up to and including each layer, in the profile's order.
    let mut elapsed = 0.0;
    let finished: Vec<(&str, f64)> = (backward.map_or(&[][..], |p| &p.layers).iter())
        .map(|l| {
            elapsed += l.seconds;
            (l.layer.as_str(), elapsed)
        })
        .collect();
    println!(
        "\nall-reduce buckets beside the backward pass (host time after each bucket's readback, \
         mean of {PROFILE_RUNS} all-reduces after the backward; backward times from the profile \
         above)"
    );
    println!(
        "{:>6} {:>9} {:>14} {:>16} {:>18}  layers",
        "bucket", "MB", "all-reduce ms", "final at ms", "backward left ms"
    );
    for (k, bucket) in buckets.iter().enumerate() {
        let at = finished.iter().find(|(layer, _)| *layer == bucket.layers.1);
        let (at, left) = match at {
            Some(&(_, at)) => (
                format!("{:.1}", at * 1e3),
                format!("{:.1}", (elapsed - at) * 1e3),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{k:>6} {:>9.1} {:>14.1} {at:>16} {left:>18}  {} .. {}",
            bucket.bytes as f64 / 1e6,
            bucket.seconds * 1e3,
            bucket.layers.0,
            bucket.layers.1
        );
    }
    Ok(buckets)
}

/// Runs a benchmark with the post's per-step lines (every tenth timed step) or a progress bar on
/// a terminal: `bench` gets the step callback to call after each step.
fn with_progress<R>(
    (batches, burn_in): (usize, usize),
    watchdog: &Option<Watchdog>,
    bench: impl FnOnce(&mut dyn FnMut(Option<usize>, f64)) -> convnet_wgpu::Result<R>,
) -> anyhow::Result<R> {
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
    let mut done = 0;
    let result = bench(&mut |step, seconds| {
        done += 1;
        Watchdog::step(watchdog, done);
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
    Ok(result)
}

/// The post's summary line of a pass, its rates, and what else was measured.
fn print_pass(result: &PassResult, batch: usize, contexts: &[GpuContext]) {
    let mean = result.timings.mean;
    println!(
        "{} across {} steps, {:.3} +/- {:.3} sec / batch",
        result.pass.summary_name(),
        result.timings.steps.len(),
        mean,
        result.timings.sd
    );
    println!(
        "{:.1} images/s, {:.2} GFLOP/s ({:.1} GFLOP per batch) on {} device(s): {}",
        batch as f64 / mean,
        result.gflops_per_s,
        result.flops_per_batch / 1e9,
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
    if let Some(stats) = &result.two_devices_mean_per_step {
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
    if let Some(cost) = result
        .data_parallel
        .as_ref()
        .and_then(|d| d.all_reduce.as_ref())
    {
        println!(
            "all-reduce ({:?} timed above): {}{} per step in {} bucket(s); a step without it \
             {:.3} s; with it after the backward pass {:.3} s ({:.1}% of the step; {:.3} s on \
             the host); overlapped with the backward {:.3} s ({:.1}% left exposed)",
            cost.chosen,
            megabytes(cost.bytes),
            match cost.rank_bytes {
                0 => String::new(),
                bytes => format!(" and {} to and from the other ranks", megabytes(bytes)),
            },
            cost.buckets,
            cost.compute_s,
            cost.after_backward_s,
            100.0 * cost.share_after_backward(),
            cost.after_backward_host_s,
            cost.overlapped_s,
            100.0 * cost.share_overlapped()
        );
    }
    if let (Some(before), Some(after)) = (
        result.driver_allocated_bytes_first_step,
        result.driver_allocated_bytes_last_step,
    ) {
        println!(
            "driver allocation {} after the first timed step, {} after the last",
            megabytes(before),
            megabytes(after)
        );
    }
}

/// The kernels a layer ran, each with its share of the layer's time where its dispatches were
/// timed alone.
fn describe_kernels(layer: &LayerProfile) -> String {
    let alone: f64 = layer.kernel_seconds.iter().map(|k| k.seconds).sum();
    let kernels = if alone <= 0.0 {
        layer.kernels.join(", ")
    } else {
        let shares: Vec<String> = (layer.kernel_seconds.iter())
            .map(|k| format!("{} {:.0}%", k.kernel, 100.0 * k.seconds / alone))
            .collect();
        shares.join(", ")
    };
    match &layer.choice {
        Some(choice) => format!("[{choice}] {kernels}"),
        None => kernels,
    }
}

/// A profile as a table: a row per layer, its time, share and rate against the peak.
fn print_profile(profile: &PassProfile) {
    let total = profile.seconds();
    let peak = &profile.peak;
    println!(
        "\nprofile of the {} pass ({}, mean of {} runs, {total:.3} s in all); adapter peak \
         {:.1} GFLOP/s FMA, {:.2} GB/s",
        profile.pass,
        if profile.gpu_timestamps {
            "GPU timestamps"
        } else {
            "host-timed per layer: no timestamp queries"
        },
        profile.runs,
        peak.fma_gflops,
        peak.bandwidth_gbs
    );
    let width = profile
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
    for layer in &profile.layers {
        let rate = if layer.flops > 0.0 {
            format!("{:.2}", layer.gflops_per_s)
        } else {
            String::new()
        };
        println!(
            "{:<width$} {:>10} {:>10.2} {:>6.1}% {:>9} {:>7.0}% {:>9.1} {:>7.2}  {}",
            layer.layer,
            layer.dispatches,
            layer.seconds * 1e3,
            100.0 * layer.seconds / total,
            rate,
            100.0 * layer.of_peak(peak),
            layer.bytes / 1e6,
            layer.gb_per_s,
            describe_kernels(layer)
        );
    }
}
