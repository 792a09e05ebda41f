//! The adapter's measured peak: f32 FMA throughput and shader memory bandwidth, each by a small
//! dedicated kernel (`shaders/peak_*.wgsl`), timed from submission until the queue has finished,
//! best of several runs after a warm-up that also compiles the kernel.

use std::time::Instant;

use crate::error::Result;
use crate::gpu::builder::{u32_of, Builder, Purpose};
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{encode_pass, kernel_params, Dispatch, KernelDef};
use crate::shaders;

kernel_params! {
    /// peak_fma's parameters.
    struct FmaParams {
        iterations: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

kernel_params! {
    /// peak_bandwidth's parameters.
    struct BandwidthParams {
        vec4s: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

const FMA: KernelDef<FmaParams> = KernelDef::flat(shaders::PEAK_FMA);
const BANDWIDTH: KernelDef<BandwidthParams> = KernelDef::flat(shaders::PEAK_BANDWIDTH);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    vec![FMA.contract(), BANDWIDTH.contract()]
}

/// What the adapter measured.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Peak {
    /// f32 multiply-adds, counted as 2 FLOP each.
    pub fma_gflops: f64,
    /// Bytes read plus bytes written by a shader per second, in GB/s.
    pub bandwidth_gbs: f64,
}

/// Invocations of the FMA kernel: enough workgroups for any adapter's cores.
const FMA_INVOCATIONS: usize = 1 << 16;
/// FLOP per invocation and iteration: eight vec4 FMAs.
const FLOP_PER_ITERATION: f64 = 64.0;
/// A run shorter than this is repeated with more work, so that timer and submission overheads
/// stay small beside it.
const MIN_SECONDS: f64 = 0.05;
const RUNS: usize = 3;
/// The most copies one bandwidth run records.
const MAX_REPEATS: usize = 1 << 12;

/// The fastest of [`RUNS`] submissions of `dispatch` recorded `repeats` times over, in seconds.
fn best_of(ctx: &GpuContext, dispatch: &Dispatch, repeats: usize) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..RUNS {
        let mut encoder = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("peak"),
            });
        for _ in 0..repeats {
            encode_pass(&mut encoder, "peak", std::slice::from_ref(dispatch));
        }
        let start = Instant::now();
        ctx.queue().submit([encoder.finish()]);
        ctx.wait("peak measurement")?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Measures the adapter's FMA throughput and shader bandwidth, using at most `max_bytes` of
/// buffers for the bandwidth test.
pub fn measure(ctx: &GpuContext, max_bytes: u64) -> Result<Peak> {
    let fma_gflops = ctx.scoped("FMA peak", |ctx| -> Result<f64> {
        let mut b = Builder::new(ctx);
        let sink = b.storage("peak sink", FMA_INVOCATIONS * 4, Purpose::Scratch);
        let workgroups = b.grid_1d("peak_fma", FMA_INVOCATIONS)?;
        let mut iterations = 64usize;
        loop {
            let params = FmaParams {
                iterations: u32_of(iterations, "iterations")?,
                ..Default::default()
            };
            let dispatch = b.dispatch("peak_fma", &FMA, &params, &[&sink], workgroups);
            best_of(ctx, &dispatch, 1)?; // warm-up: compiles on first use
            let seconds = best_of(ctx, &dispatch, 1)?;
            if seconds >= MIN_SECONDS || iterations >= 1 << 22 {
                let flop = FMA_INVOCATIONS as f64 * iterations as f64 * FLOP_PER_ITERATION;
                return Ok(flop / seconds / 1e9);
            }
            iterations *= 4;
        }
    })??;
    let bandwidth_gbs = ctx.scoped("bandwidth peak", |ctx| -> Result<f64> {
        let mut b = Builder::new(ctx);
        let bytes = (64u64 << 20).min(b.max_binding).min(max_bytes / 2);
        let floats = (bytes / 4) as usize;
        let source = b.storage("peak source", floats, Purpose::Scratch);
        let destination = b.storage("peak destination", floats, Purpose::Scratch);
        let vec4s = floats / 4;
        let workgroups = b.grid_1d("peak_bandwidth", vec4s.div_ceil(4))?;
        let params = BandwidthParams {
            vec4s: u32_of(vec4s, "vec4s")?,
            ..Default::default()
        };
        let args = [&source, &destination];
        let dispatch = b.dispatch("peak_bandwidth", &BANDWIDTH, &params, &args, workgroups);
        // A warm-up, then the copy repeated within one submission until the run is long
        // enough: on an H200 one 128 MB copy takes tens of microseconds, less than a
        // submission's round trip, and a single copy read 475 GB/s.
        best_of(ctx, &dispatch, 1)?;
        let mut repeats = 1;
        loop {
            let seconds = best_of(ctx, &dispatch, repeats)?;
            if seconds >= MIN_SECONDS || repeats >= MAX_REPEATS {
                return Ok(2.0 * (vec4s * 16 * repeats) as f64 / seconds / 1e9);
            }
            repeats *= 4;
        }
    })??;
    Ok(Peak {
        fma_gflops,
        bandwidth_gbs,
    })
}
