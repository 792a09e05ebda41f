//! A network with a two-device layout ([`crate::model::Towers`]) run across two devices.
//!
//! Each device holds, per segment (the run of layers between two exchanges), a [`GpuNetwork`]
//! of its half: its own queue, buffers, pipelines and half of the weights. wgpu has no
//! device-to-device copy, so the exchanges go through the host: each device copies its half into
//! a mapped staging buffer, the host concatenates the halves along channels (image by image,
//! NCHW), and writes the whole into each next segment's input through a mapped staging buffer.
//! Backward, each device's segment computes the gradient of its whole input; the host adds the
//! two and hands each device the half that belongs to its previous segment's output.
//!
//! What overlaps: within a segment both devices run at once (one thread each submits and waits,
//! no lock between them). What cannot: an exchange needs both halves, so each segment boundary
//! waits for the slower device, and the host copy sits between the two segments.

use std::cell::RefCell;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::context::GpuContext;
use crate::gpu::network::GpuNetwork;
use crate::gpu::sgd::{Sgd, SgdConfig};
use crate::gpu::variants::Precision;
use crate::model::{LayerPlan, Network, Segment};
use crate::weights::{Tensor, Weights};

/// Timings and traffic of the last step.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StepStats {
    /// Per device, the time from its submissions to the end of its work, summed over segments.
    pub device_busy_s: [f64; 2],
    /// Every exchange of the step, in order.
    pub exchanges: Vec<ExchangeStats>,
}

/// One exchange of one step.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExchangeStats {
    /// Where it sits, e.g. `forward, before conv3`.
    pub name: String,
    /// Bytes copied from the devices to the host.
    pub bytes_to_host: u64,
    /// Bytes copied from the host to the devices.
    pub bytes_to_devices: u64,
    /// Wall-clock seconds of the whole exchange: reading the halves back, joining (or summing)
    /// them on the host, writing them to the devices.
    pub seconds: f64,
}

/// One device's part of a segment, with the staging buffers of the exchanges around it.
struct Tower<'a> {
    device: usize,
    net: GpuNetwork<'a>,
    /// Mappable copy of the last layer's output, for the exchange after the segment.
    output_read: Option<wgpu::Buffer>,
    /// Mappable source of the segment's input, from the exchange before it.
    input_write: Option<wgpu::Buffer>,
    /// Mappable copy of the segment's input gradient, for the exchange before it.
    input_grad_read: Option<wgpu::Buffer>,
    /// Mappable source of the segment's output gradient, from the exchange after it.
    output_grad_write: Option<wgpu::Buffer>,
}

struct SegmentRun<'a> {
    segment: Segment,
    towers: Vec<Tower<'a>>,
    /// Each tower's output values per image: the halves an exchange joins or splits.
    output_lens: Vec<usize>,
}

/// A two-device layout resident on two devices.
pub struct TwoDeviceNetwork<'a> {
    plan: Vec<LayerPlan>,
    segments: Vec<SegmentRun<'a>>,
    /// The host's side of the exchanges, allocated once.
    host: RefCell<Vec<f32>>,
    /// The step's stats: every exchange a forward-backward step makes is named here once, in
    /// order, so that a step only fills in its numbers (allocating nothing).
    stats: RefCell<StepStats>,
    /// How many of `stats`'s exchanges the current step has made.
    exchanges_made: std::cell::Cell<usize>,
}

fn staging(ctx: &GpuContext, label: &str, bytes: u64, read: bool) -> wgpu::Buffer {
    let usage = if read {
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST
    } else {
        wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC
    };
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes,
        usage,
        mapped_at_creation: false,
    })
}

fn bytes_of(plan_len: usize) -> u64 {
    (plan_len * 4) as u64
}

impl<'a> TwoDeviceNetwork<'a> {
    /// Splits `network` over `contexts` (two devices) at `batch`, each device with its half of
    /// `weights`. Fails for a network without a two-device layout.
    pub fn new(
        contexts: [&'a GpuContext; 2],
        network: &Network,
        batch: usize,
        weights: &Weights,
    ) -> Result<Self> {
        if contexts.iter().any(|c| c.precision() != Precision::F32) {
            return Err(Error::InvalidArgument(
                "--precision f16 trains one network on one device; the two-device layout keeps f32 \
                 (use --precision f32)"
                    .into(),
            ));
        }
        let towers = network.towers.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} has no two-device layout (alexnet-2gpu has one); use --devices 1, or \
                 --parallel data to give each device a replica",
                network.name
            ))
        })?;
        let plan = network.plan(batch)?;
        let all = towers.segments(plan.len())?;
        let mut segments = Vec::with_capacity(all.len());
        let mut largest = 0;
        for (s, segment) in all.iter().enumerate() {
            let (first, last) = (s == 0, s + 1 == all.len());
            let start = segment.layers.start;
            let input = if start == 0 {
                network.input
            } else {
                plan[start - 1].output
            };
            let devices = if segment.split { 2 } else { 1 };
            let mut run = Vec::with_capacity(devices);
            for (device, &ctx) in contexts.iter().enumerate().take(devices) {
                let part = if segment.split {
                    network.tower(segment, input)?
                } else {
                    network.whole(segment, input)?
                };
                let part_plan = part.plan(batch)?;
                let net = GpuNetwork::segment(
                    ctx,
                    &part_plan,
                    &weights.slice_for(&part, device)?,
                    last,
                    first,
                )?;
                let out_len = part_plan.last().map_or(0, |l| batch * l.output.len());
                let in_len = batch * input.len();
                largest = largest.max(in_len).max(out_len * devices);
                let label = |what: &str| format!("{} {what}", part_plan[0].layer.name);
                run.push(Tower {
                    device,
                    output_read: (!last)
                        .then(|| staging(ctx, &label("output"), bytes_of(out_len), true)),
                    input_write: (!first)
                        .then(|| staging(ctx, &label("input"), bytes_of(in_len), false)),
                    input_grad_read: (!first)
                        .then(|| staging(ctx, &label("input gradient"), bytes_of(in_len), true)),
                    output_grad_write: (!last)
                        .then(|| staging(ctx, &label("output gradient"), bytes_of(out_len), false)),
                    net,
                });
            }
            let output_lens = run.iter().map(|t| output_len(&t.net)).collect();
            segments.push(SegmentRun {
                segment: segment.clone(),
                towers: run,
                output_lens,
            });
        }
        Ok(TwoDeviceNetwork {
            plan,
            // A whole exchanged tensor and one half of it.
            host: RefCell::new(vec![0.0; largest * 2]),
            stats: RefCell::new(StepStats {
                device_busy_s: [0.0; 2],
                exchanges: exchange_slots(&segments),
            }),
            exchanges_made: std::cell::Cell::new(0),
            segments,
        })
    }

    /// The whole network's plan.
    pub fn plan(&self) -> &[LayerPlan] {
        &self.plan
    }

    /// The timings and traffic of the last step.
    pub fn last_step(&self) -> StepStats {
        let stats = self.stats.borrow();
        StepStats {
            device_busy_s: stats.device_busy_s,
            exchanges: stats.exchanges[..self.exchanges_made.get()].to_vec(),
        }
    }

    /// Starts a step's stats afresh.
    fn reset_stats(&self) {
        self.stats.borrow_mut().device_busy_s = [0.0; 2];
        self.exchanges_made.set(0);
    }

    /// GPU memory held on each device, in bytes (the program's count).
    pub fn memory(&self) -> [u64; 2] {
        let mut total = [0; 2];
        for tower in self.segments.iter().flat_map(|s| &s.towers) {
            total[tower.device] += tower.net.memory().total();
        }
        total
    }

    /// Copies the images to both devices' first segments.
    pub fn upload_input(&self, input: &[f32]) -> Result<()> {
        self.segments[0]
            .towers
            .iter()
            .try_for_each(|t| t.net.upload_input(input))
    }

    /// Records `record` for every tower of a segment on its own device, submits, and waits for
    /// all of them, each from its own thread so that the devices run at once.
    fn run_segment(
        &self,
        segment: &SegmentRun<'a>,
        during: &str,
        record: impl Fn(&Tower<'a>, &mut wgpu::CommandEncoder) -> Result<()> + Sync,
    ) -> Result<()> {
        let results: Vec<Result<(usize, f64)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = segment
                .towers
                .iter()
                .map(|tower| {
                    let record = &record;
                    scope.spawn(move || {
                        let start = Instant::now();
                        tower.net.run(during, |encoder| record(tower, encoder))?;
                        Ok((tower.device, start.elapsed().as_secs_f64()))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::InvalidArgument(format!(
                            "{during}: a device thread panicked"
                        )))
                    })
                })
                .collect()
        });
        let mut stats = self.stats.borrow_mut();
        for result in results {
            let (device, seconds) = result?;
            stats.device_busy_s[device] += seconds;
        }
        Ok(())
    }

    /// Runs one forward pass across both devices.
    pub fn forward(&self) -> Result<()> {
        self.reset_stats();
        self.forward_segments()
    }

    fn forward_segments(&self) -> Result<()> {
        for (s, segment) in self.segments.iter().enumerate() {
            self.run_segment(segment, "forward pass", |tower, encoder| {
                if let Some(staging) = &tower.input_write {
                    encoder.copy_buffer_to_buffer(
                        staging,
                        0,
                        tower.net.input_buffer(),
                        0,
                        staging.size(),
                    );
                }
                tower.net.encode_forward(encoder);
                if let Some(staging) = &tower.output_read {
                    let output = tower.net.logits_buffer();
                    encoder.copy_buffer_to_buffer(output, 0, staging, 0, staging.size());
                }
                Ok(())
            })?;
            if let Some(next) = self.segments.get(s + 1) {
                self.exchange_forward(segment, next)?;
            }
        }
        Ok(())
    }

    /// Runs one forward and backward pass of `l2_loss(logits)` across both devices.
    pub fn forward_backward(&self) -> Result<()> {
        self.reset_stats();
        self.forward_segments()?;
        for (s, segment) in self.segments.iter().enumerate().rev() {
            self.run_segment(segment, "backward pass", |tower, encoder| {
                if let Some(staging) = &tower.output_grad_write {
                    let last = tower.net.logits_gradient_buffer()?;
                    encoder.copy_buffer_to_buffer(staging, 0, last, 0, staging.size());
                }
                tower.net.encode_backward(encoder)?;
                let input_grad = tower.net.input_gradient_buffer();
                if let (Some(staging), Some(grad)) = (&tower.input_grad_read, input_grad) {
                    encoder.copy_buffer_to_buffer(grad, 0, staging, 0, staging.size());
                }
                Ok(())
            })?;
            if s > 0 {
                self.exchange_backward(&self.segments[s - 1], segment)?;
            }
        }
        Ok(())
    }

    /// Each tower's output half → the host, concatenated along channels → each next tower's input.
    fn exchange_forward(&self, from: &SegmentRun, to: &SegmentRun) -> Result<()> {
        let start = Instant::now();
        let batch = self.plan[0].batch;
        let halves = &from.output_lens;
        let per_image: usize = halves.iter().sum();
        let mut host = self.host.borrow_mut();
        let whole = &mut host[..batch * per_image];
        let mut to_host = 0;
        let mut offset = 0;
        for (tower, &len) in from.towers.iter().zip(halves) {
            let staging = tower
                .output_read
                .as_ref()
                .expect("staging exists between segments");
            to_host += read_staging(&tower.net, staging, |data| {
                for n in 0..batch {
                    whole[n * per_image + offset..][..len].copy_from_slice(&data[n * len..][..len]);
                }
            })?;
            offset += len;
        }
        let mut to_devices = 0;
        for tower in &to.towers {
            let staging = tower
                .input_write
                .as_ref()
                .expect("staging exists between segments");
            to_devices += write_staging(&tower.net, staging, whole)?;
        }
        self.record(to_host, to_devices, start);
        Ok(())
    }

    /// Each tower's input gradient → the host, summed → each previous tower's half.
    fn exchange_backward(&self, to: &SegmentRun, from: &SegmentRun) -> Result<()> {
        let start = Instant::now();
        let batch = self.plan[0].batch;
        let halves = &to.output_lens;
        let per_image: usize = halves.iter().sum();
        let mut host = self.host.borrow_mut();
        let (whole, half) = host.split_at_mut(batch * per_image);
        let mut to_host = 0;
        for (i, tower) in from.towers.iter().enumerate() {
            let staging = tower
                .input_grad_read
                .as_ref()
                .expect("staging exists between segments");
            to_host += read_staging(&tower.net, staging, |data| {
                if i == 0 {
                    whole.copy_from_slice(data);
                } else {
                    whole.iter_mut().zip(data).for_each(|(w, d)| *w += d);
                }
            })?;
        }
        let mut to_devices = 0;
        let mut offset = 0;
        for (tower, &len) in to.towers.iter().zip(halves) {
            let staging = tower
                .output_grad_write
                .as_ref()
                .expect("staging exists between segments");
            for n in 0..batch {
                half[n * len..][..len].copy_from_slice(&whole[n * per_image + offset..][..len]);
            }
            to_devices += write_staging(&tower.net, staging, &half[..batch * len])?;
            offset += len;
        }
        self.record(to_host, to_devices, start);
        Ok(())
    }

    /// Fills in the step's next exchange.
    fn record(&self, bytes_to_host: u64, bytes_to_devices: u64, start: Instant) {
        let mut stats = self.stats.borrow_mut();
        let made = self.exchanges_made.get();
        debug_assert!(made < stats.exchanges.len(), "an exchange no slot names");
        if let Some(exchange) = stats.exchanges.get_mut(made) {
            exchange.bytes_to_host = bytes_to_host;
            exchange.bytes_to_devices = bytes_to_devices;
            exchange.seconds = start.elapsed().as_secs_f64();
            self.exchanges_made.set(made + 1);
        }
    }

    /// The segment that runs layer `layer`, and the layer's index within it.
    fn locate(&self, layer: usize) -> Result<(&SegmentRun<'a>, usize)> {
        let segment = self
            .segments
            .iter()
            .find(|s| s.segment.layers.contains(&layer))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "no layer {layer}: the network has {} layers",
                    self.plan.len()
                ))
            })?;
        Ok((segment, layer - segment.segment.layers.start))
    }

    /// Layer `index`'s whole output, the towers' halves concatenated along channels. Fails for
    /// an index past the last layer.
    pub fn read_layer(&self, index: usize) -> Result<Vec<f32>> {
        let (segment, local) = self.locate(index)?;
        let halves = segment
            .towers
            .iter()
            .map(|t| t.net.read_layer(local))
            .collect::<Result<Vec<_>>>()?;
        Ok(concat_images(&halves, self.plan[0].batch))
    }

    /// The logits.
    pub fn read_output(&self) -> Result<Vec<f32>> {
        self.read_layer(self.plan.len() - 1)
    }

    /// Every parameter gradient, whole: the towers' rows stacked (device 0 first).
    pub fn read_gradients(&self) -> Result<Weights> {
        self.read_stacked(GpuNetwork::read_gradients)
    }

    /// The current weights (after training steps), whole, as [`TwoDeviceNetwork::read_gradients`].
    pub fn read_weights(&self) -> Result<Weights> {
        self.read_stacked(GpuNetwork::read_weights)
    }

    /// One SGD optimiser per tower, each updating the parameter rows its device holds (every
    /// parameter of the layout is split between the towers, none is held twice).
    pub fn optimizers(&self, config: SgdConfig) -> Result<Vec<Sgd<'_, 'a>>> {
        (self.segments.iter())
            .flat_map(|s| &s.towers)
            .map(|t| Sgd::new(&t.net, config))
            .collect()
    }

    /// What `read` reads from every tower, whole: the towers' rows stacked (device 0 first).
    fn read_stacked(&self, read: impl Fn(&GpuNetwork<'a>) -> Result<Weights>) -> Result<Weights> {
        let mut tensors = Vec::new();
        for segment in &self.segments {
            let parts = segment
                .towers
                .iter()
                .map(|t| read(&t.net))
                .collect::<Result<Vec<_>>>()?;
            for (name, first) in parts[0].iter() {
                let mut shape = first.shape.clone();
                let mut data = Vec::new();
                for part in &parts {
                    let half = part.get(name).ok_or_else(|| {
                        Error::Internal(format!("the towers of one segment disagree on {name}"))
                    })?;
                    data.extend_from_slice(&half.data);
                }
                shape[0] *= parts.len();
                tensors.push((name.to_string(), Tensor { shape, data }));
            }
        }
        Ok(Weights::from_tensors(tensors))
    }
}

fn output_len(net: &GpuNetwork) -> usize {
    net.plan().last().map_or(0, |l| l.output.len())
}

fn first_layer(segment: &SegmentRun) -> String {
    segment.towers[0].net.plan()[0].layer.name.clone()
}

/// Every exchange of a forward-backward step, in the order it makes them, named and zeroed: the
/// forward ones before each later segment, then the backward ones before each earlier segment's
/// backward, last segment first.
fn exchange_slots(segments: &[SegmentRun]) -> Vec<ExchangeStats> {
    let slot = |name: String| ExchangeStats {
        name,
        bytes_to_host: 0,
        bytes_to_devices: 0,
        seconds: 0.0,
    };
    let forward =
        (segments.iter().skip(1)).map(|to| slot(format!("forward, before {}", first_layer(to))));
    let backward = (segments.iter().skip(1).rev())
        .map(|from| slot(format!("backward, before {}", first_layer(from))));
    forward.chain(backward).collect()
}

/// Concatenates per-image halves `[N][len_d]` into `[N][sum len_d]`.
fn concat_images(parts: &[Vec<f32>], batch: usize) -> Vec<f32> {
    let lens: Vec<usize> = parts.iter().map(|p| p.len() / batch).collect();
    let mut whole = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for n in 0..batch {
        for (part, &len) in parts.iter().zip(&lens) {
            whole.extend_from_slice(&part[n * len..][..len]);
        }
    }
    whole
}

/// Maps a MAP_READ staging buffer, hands its f32s to `use_data`, unmaps; returns the bytes read.
fn read_staging(
    net: &GpuNetwork,
    staging: &wgpu::Buffer,
    use_data: impl FnOnce(&[f32]),
) -> Result<u64> {
    let ctx = net.context();
    ctx.map(staging, wgpu::MapMode::Read, "exchange")?;
    {
        let view = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| ctx.error("exchange", e))?;
        use_data(bytemuck::cast_slice(&view));
    }
    staging.unmap();
    Ok(staging.size())
}

/// Maps a MAP_WRITE staging buffer, copies `data` into it, unmaps; returns the bytes written.
fn write_staging(net: &GpuNetwork, staging: &wgpu::Buffer, data: &[f32]) -> Result<u64> {
    let ctx = net.context();
    ctx.map(staging, wgpu::MapMode::Write, "exchange")?;
    {
        let mut view = staging
            .slice(..)
            .get_mapped_range_mut()
            .map_err(|e| ctx.error("exchange", e))?;
        view.copy_from_slice(bytemuck::cast_slice(data));
    }
    staging.unmap();
    Ok(staging.size())
}
