//! Where a pass's time goes, layer by layer and kernel by kernel. The pass's dispatches are
//! grouped by layer (consecutive dispatches whose labels start with the same layer name). Where
//! the adapter has timestamp queries, each group runs in a compute pass of its own with GPU
//! timestamps at its start and end; then, in a second run, each dispatch alone, which splits a
//! layer's time by kernel (a pass of its own per dispatch changes the timing: on lavapipe a
//! ResNet-50 backward pass summed by dispatch came to 0.88x and 1.2x its sum by layer in two
//! runs, so the split is given as shares of the layer's own time; a pass of more dispatches than
//! one query set holds, or one that changes state at every run, is not split). Elsewhere each layer's group is submitted alone and timed by the host
//! until the queue is idle, which the profile says.

use std::time::Instant;

use crate::error::Result;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{encode_pass, record_dispatches, Dispatch};

/// One layer's share of a pass.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerTime {
    /// The layer's name (the start of its dispatches' labels).
    pub layer: String,
    /// How many dispatches it ran.
    pub dispatches: usize,
    /// The kernels its dispatches ran, each named once, in the order they ran.
    pub kernels: Vec<&'static str>,
    /// Its time in seconds.
    pub seconds: f64,
    /// Its dispatches' times by kernel, each dispatch timed alone, in the order the kernels
    /// first ran (empty where the pass was not split): their shares are the layer's.
    pub kernel_seconds: Vec<KernelTime>,
}

/// One kernel's share of a layer's time.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelTime {
    /// The kernel's entry point.
    pub kernel: &'static str,
    /// Seconds of all its dispatches in the layer.
    pub seconds: f64,
}

/// A pass, layer by layer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Profile {
    /// True when timed by GPU timestamps, false when by the host around each layer.
    pub gpu_timestamps: bool,
    /// Every layer, in the order the pass runs them.
    pub layers: Vec<LayerTime>,
}

impl Profile {
    /// Seconds of all layers together.
    pub fn seconds(&self) -> f64 {
        self.layers.iter().map(|l| l.seconds).sum()
    }
}

/// The layer a dispatch belongs to: its label's first word.
pub(crate) fn layer_of(label: &str) -> &str {
    label.split([' ', '[']).next().unwrap_or(label)
}

fn kernels_of(group: &[Dispatch]) -> Vec<&'static str> {
    let mut kernels = Vec::new();
    for dispatch in group {
        if !kernels.contains(&dispatch.kernel) {
            kernels.push(dispatch.kernel);
        }
    }
    kernels
}

/// Consecutive runs of dispatches of one layer.
fn groups(dispatches: &[Dispatch]) -> Vec<&[Dispatch]> {
    let mut groups: Vec<&[Dispatch]> = Vec::new();
    let mut start = 0;
    for i in 1..=dispatches.len() {
        if i == dispatches.len()
            || layer_of(&dispatches[i].label) != layer_of(&dispatches[start].label)
        {
            groups.push(&dispatches[start..i]);
            start = i;
        }
    }
    groups
}

/// Profiles `dispatches` after `prelude` (work the pass depends on, not timed), layer by layer
/// and then kernel by kernel: the pass runs twice.
pub(crate) fn profile(
    ctx: &GpuContext,
    prelude: impl Fn(&mut wgpu::CommandEncoder),
    dispatches: &[Dispatch],
) -> Result<Profile> {
    profile_with(ctx, prelude, dispatches, true)
}

/// As [`profile`], layer by layer only: the pass runs once (for a pass whose every run changes
/// what it leaves, as an optimiser's update does).
pub(crate) fn profile_layers(
    ctx: &GpuContext,
    prelude: impl Fn(&mut wgpu::CommandEncoder),
    dispatches: &[Dispatch],
) -> Result<Profile> {
    profile_with(ctx, prelude, dispatches, false)
}

fn profile_with(
    ctx: &GpuContext,
    prelude: impl Fn(&mut wgpu::CommandEncoder),
    dispatches: &[Dispatch],
    by_kernel: bool,
) -> Result<Profile> {
    let groups = groups(dispatches);
    let times = match ctx.timestamps() {
        true => gpu_timed(ctx, &prelude, &groups)?,
        false => host_timed(ctx, &prelude, &groups)?,
    };
    // Every dispatch alone, summed by layer and kernel.
    let mut by_dispatch = match by_kernel && ctx.timestamps() && 2 * dispatches.len() <= MAX_QUERIES
    {
        true => {
            let singles: Vec<&[Dispatch]> = dispatches.chunks(1).collect();
            Some(gpu_timed(ctx, &prelude, &singles)?.into_iter())
        }
        false => None,
    };
    let layers = (groups.iter().zip(times))
        .map(|(group, seconds)| {
            let mut kernel_seconds: Vec<KernelTime> = Vec::new();
            if let Some(times) = by_dispatch.as_mut() {
                for (dispatch, alone) in group.iter().zip(times) {
                    match kernel_seconds
                        .iter_mut()
                        .find(|k| k.kernel == dispatch.kernel)
                    {
                        Some(kernel) => kernel.seconds += alone,
                        None => kernel_seconds.push(KernelTime {
                            kernel: dispatch.kernel,
                            seconds: alone,
                        }),
                    }
                }
            }
            LayerTime {
                layer: layer_of(&group[0].label).to_string(),
                dispatches: group.len(),
                kernels: kernels_of(group),
                seconds,
                kernel_seconds,
            }
        })
        .collect();
    Ok(Profile {
        gpu_timestamps: ctx.timestamps(),
        layers,
    })
}

/// Timestamps one query set holds (wgpu's limit): two per timed group.
const MAX_QUERIES: usize = wgpu::QUERY_SET_MAX_QUERIES as usize;

fn gpu_timed(
    ctx: &GpuContext,
    prelude: &dyn Fn(&mut wgpu::CommandEncoder),
    groups: &[&[Dispatch]],
) -> Result<Vec<f64>> {
    let count = 2 * groups.len() as u32;
    let (query_set, resolved) = ctx.scoped("profile setup", |ctx| {
        let query_set = ctx.device().create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolved = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile timestamps"),
            size: u64::from(count) * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        (query_set, resolved)
    })?;
    ctx.scoped("profiled pass", |ctx| {
        let mut encoder = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("profile"),
            });
        prelude(&mut encoder);
        for (i, group) in groups.iter().enumerate() {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&group[0].label),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &query_set,
                    beginning_of_pass_write_index: Some(2 * i as u32),
                    end_of_pass_write_index: Some(2 * i as u32 + 1),
                }),
            });
            record_dispatches(&mut pass, group);
        }
        encoder.resolve_query_set(&query_set, 0..count, &resolved, 0);
        ctx.queue().submit([encoder.finish()]);
    })?;
    ctx.wait("profiled pass")?;
    let ticks: Vec<u64> =
        bytemuck::pod_collect_to_vec(&ctx.read_f32(&resolved, 2 * count as usize)?);
    let period = f64::from(ctx.queue().get_timestamp_period());
    Ok(ticks
        .chunks(2)
        .map(|t| t[1].saturating_sub(t[0]) as f64 * period / 1e9)
        .collect())
}

fn host_timed(
    ctx: &GpuContext,
    prelude: &dyn Fn(&mut wgpu::CommandEncoder),
    groups: &[&[Dispatch]],
) -> Result<Vec<f64>> {
    let submit = |record: &dyn Fn(&mut wgpu::CommandEncoder)| -> Result<f64> {
        let mut encoder = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("profile"),
            });
        record(&mut encoder);
        let start = Instant::now();
        ctx.queue().submit([encoder.finish()]);
        ctx.wait("profiled pass")?;
        Ok(start.elapsed().as_secs_f64())
    };
    submit(prelude)?;
    groups
        .iter()
        .map(|group| submit(&|encoder| encode_pass(encoder, &group[0].label, group)))
        .collect()
}
