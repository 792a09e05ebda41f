//! A planned network on the GPU: every buffer, uniform and bind group created once, so that a
//! forward pass is one command buffer of dispatches and nothing else.
//!
//! Activations are NCHW, one buffer per layer output (kept, so any layer can be read back and,
//! later, the backward pass can use them).

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::context::GpuContext;
use crate::model::{LayerKind, LayerPlan};
use crate::weights::Weights;

/// Register block edge of conv2d_forward and gemm: 16 outputs by 16 outputs per invocation.
const BLOCK: usize = 16;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Conv2dParams {
    batch: u32,
    in_channels: u32,
    in_height: u32,
    in_width: u32,
    out_channels: u32,
    out_height: u32,
    out_width: u32,
    groups: u32,
    kernel_height: u32,
    kernel_width: u32,
    stride_height: u32,
    stride_width: u32,
    pad_top: u32,
    pad_left: u32,
    relu: u32,
    packed_out_per_group: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GemmParams {
    rows: u32,
    depth: u32,
    columns: u32,
    packed_columns: u32,
    column_offset: u32,
    output_stride: u32,
    relu: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct LrnParams {
    batch: u32,
    channels: u32,
    plane: u32,
    depth_radius: u32,
    bias: f32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MaxPoolParams {
    planes: u32,
    in_height: u32,
    in_width: u32,
    out_height: u32,
    out_width: u32,
    window_height: u32,
    window_width: u32,
    stride_height: u32,
    stride_width: u32,
    pad_top: u32,
    pad_left: u32,
    _pad: u32,
}

/// GPU memory a network holds, in bytes, by purpose. It is fixed at construction: a forward pass
/// allocates nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryUse {
    /// Packed weights and biases.
    pub weights: u64,
    /// The input and every layer's output.
    pub activations: u64,
    /// Per-dispatch parameters.
    pub uniforms: u64,
}

impl MemoryUse {
    /// Everything together.
    pub fn total(&self) -> u64 {
        self.weights + self.activations + self.uniforms
    }
}

/// One recorded kernel launch: which pipeline, its arguments, how many workgroups.
struct Dispatch<'a> {
    pipeline: &'a wgpu::ComputePipeline,
    /// The kernel's arguments (uniform parameters and buffers).
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
}

/// A network resident on one device, ready to run forward passes.
pub struct GpuNetwork<'a> {
    ctx: &'a GpuContext,
    plan: Vec<LayerPlan>,
    input: wgpu::Buffer,
    outputs: Vec<wgpu::Buffer>,
    dispatches: Vec<Dispatch<'a>>,
    memory: MemoryUse,
}

fn u32_of(value: usize, what: &str) -> Result<u32> {
    u32::try_from(value)
        .map_err(|_| Error::InvalidArgument(format!("{what} ({value}) exceeds 2^32")))
}

/// Everything a builder needs while it creates buffers for one network.
struct Builder<'a> {
    ctx: &'a GpuContext,
    memory: MemoryUse,
    max_binding: u64,
}

impl<'a> Builder<'a> {
    fn too_large(&self, what: String, detail: String) -> Error {
        Error::TooLarge {
            what,
            adapter: self.ctx.info.name.clone(),
            detail,
        }
    }

    fn check_binding(&self, what: &str, bytes: u64) -> Result<()> {
        if bytes > self.max_binding {
            return Err(self.too_large(
                what.to_string(),
                format!(
                    "{} MB, but one storage binding may hold at most {} MB (max_storage_buffer_binding_size)",
                    bytes / 1_000_000,
                    self.max_binding / 1_000_000
                ),
            ));
        }
        Ok(())
    }

    fn storage(&mut self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.memory.activations += bytes;
        self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    fn weights(&mut self, label: &str, data: &[f32]) -> wgpu::Buffer {
        self.memory.weights += (data.len() * 4) as u64;
        self.ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage: wgpu::BufferUsages::STORAGE,
            })
    }

    fn uniform<T: Pod>(&mut self, label: &str, params: &T) -> wgpu::Buffer {
        self.memory.uniforms += std::mem::size_of::<T>() as u64;
        self.ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    /// A workgroup grid for `invocations` independent invocations, folded into two dimensions
    /// when one would exceed the adapter's limit (the kernels unfold it with `num_workgroups`).
    fn grid_1d(&self, what: &str, invocations: usize) -> Result<[u32; 3]> {
        let size = self.ctx.kernels.workgroup_size as usize;
        let max = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        let groups = invocations.div_ceil(size);
        let x = groups.min(max);
        let y = groups.div_ceil(x.max(1));
        if y > max {
            return Err(self.too_large(
                what.into(),
                format!("{invocations} invocations exceed the dispatch limit"),
            ));
        }
        Ok([x as u32, y as u32, 1])
    }

    fn grid_3d(&self, what: &str, x_invocations: usize, y: usize, z: usize) -> Result<[u32; 3]> {
        let x = x_invocations.div_ceil(self.ctx.kernels.workgroup_size as usize);
        let max = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        if x > max || y > max || z > max {
            return Err(self.too_large(
                what.into(),
                format!("a {x}x{y}x{z} workgroup grid exceeds the limit of {max} per dimension"),
            ));
        }
        Ok([x as u32, y as u32, z as u32])
    }

    fn bind(
        &self,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, buffer)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        self.ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
    }
}

/// Repacks a conv weight `[out, in/groups, kh, kw]` as `[group][k][out_per_group rounded up to
/// BLOCK]`, zero-padded, the layout conv2d_forward reads as vec4s.
fn pack_conv_weight(weight: &[f32], out_channels: usize, groups: usize) -> (Vec<f32>, usize) {
    let out_per_group = out_channels / groups;
    let taps = weight.len() / out_channels;
    let packed_out = out_per_group.next_multiple_of(BLOCK);
    let mut packed = vec![0.0f32; groups * taps * packed_out];
    for g in 0..groups {
        for o in 0..out_per_group {
            let row = &weight[(g * out_per_group + o) * taps..][..taps];
            for (k, &w) in row.iter().enumerate() {
                packed[(g * taps + k) * packed_out + o] = w;
            }
        }
    }
    (packed, packed_out)
}

/// Repacks columns `first..first + count` of a linear weight `[out, in]` transposed, as
/// `[in][count rounded up to BLOCK]`, zero-padded, the layout gemm reads as vec4s.
fn pack_linear_slice(
    weight: &[f32],
    depth: usize,
    first: usize,
    count: usize,
) -> (Vec<f32>, usize) {
    let packed_columns = count.next_multiple_of(BLOCK);
    let mut packed = vec![0.0f32; depth * packed_columns];
    for c in 0..count {
        let row = &weight[(first + c) * depth..][..depth];
        for (k, &w) in row.iter().enumerate() {
            packed[k * packed_columns + c] = w;
        }
    }
    (packed, packed_columns)
}

impl<'a> GpuNetwork<'a> {
    /// Uploads the weights and creates every buffer, uniform and bind group for `plan`.
    /// Refuses, with the numbers, any activation larger than one storage binding; splits a
    /// linear layer whose weight is larger into column slices.
    pub fn new(ctx: &'a GpuContext, plan: &[LayerPlan], weights: &Weights) -> Result<Self> {
        ctx.scoped("network setup", |_| build(ctx, plan, weights))?
    }

    /// The plan this network runs.
    pub fn plan(&self) -> &[LayerPlan] {
        &self.plan
    }

    /// GPU memory held, by purpose.
    pub fn memory(&self) -> MemoryUse {
        self.memory
    }

    /// Copies a batch of input images (`[N, C, H, W]`, the plan's batch) to the GPU.
    pub fn upload_input(&self, input: &[f32]) -> Result<()> {
        let expected = self.plan[0].batch * self.plan[0].input.len();
        if input.len() != expected {
            return Err(Error::InvalidArgument(format!(
                "input holds {} values, the network at batch {} expects {expected}",
                input.len(),
                self.plan[0].batch
            )));
        }
        self.ctx.scoped("input upload", |ctx| {
            ctx.queue
                .write_buffer(&self.input, 0, bytemuck::cast_slice(input))
        })
    }

    /// Records the whole forward pass into `encoder`: one compute pass, one dispatch per kernel
    /// launch, in layer order (wgpu orders dependent dispatches).
    pub fn encode_forward(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("forward"),
            timestamp_writes: None,
        });
        for dispatch in &self.dispatches {
            pass.set_pipeline(dispatch.pipeline);
            pass.set_bind_group(0, &dispatch.bind_group, &[]);
            let [x, y, z] = dispatch.workgroups;
            pass.dispatch_workgroups(x, y, z);
        }
    }

    /// Runs one forward pass and waits until the GPU has finished it.
    pub fn forward(&self) -> Result<()> {
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("forward"),
            });
        self.encode_forward(&mut encoder);
        self.ctx.queue.submit([encoder.finish()]);
        self.ctx.wait("forward pass")
    }

    /// Reads back layer `index`'s output (`[N, C, H, W]`, or `[N, features]`).
    pub fn read_layer(&self, index: usize) -> Result<Vec<f32>> {
        let layer = &self.plan[index];
        self.ctx
            .read_f32(&self.outputs[index], layer.batch * layer.output.len())
    }

    /// Reads back the last layer's output: the logits.
    pub fn read_output(&self) -> Result<Vec<f32>> {
        self.read_layer(self.plan.len() - 1)
    }
}

fn build<'a>(ctx: &'a GpuContext, plan: &[LayerPlan], weights: &Weights) -> Result<GpuNetwork<'a>> {
    let max_binding = ctx
        .limits
        .max_storage_buffer_binding_size
        .min(ctx.limits.max_buffer_size);
    let mut b = Builder {
        ctx,
        memory: MemoryUse::default(),
        max_binding,
    };
    let first = plan
        .first()
        .ok_or_else(|| Error::InvalidArgument("empty network".into()))?;
    let batch = first.batch;
    for layer in plan {
        let bytes = (batch * layer.output.len() * 4) as u64;
        if bytes > max_binding {
            let per_image = (layer.output.len() * 4) as u64;
            return Err(b.too_large(
                format!("batch {batch}"),
                format!(
                    "layer {}'s output is {} MB, one storage binding holds at most {} MB; \
                     the largest batch that fits is {}",
                    layer.layer.name,
                    bytes / 1_000_000,
                    max_binding / 1_000_000,
                    max_binding / per_image
                ),
            ));
        }
    }
    let input_bytes = (batch * first.input.len() * 4) as u64;
    b.check_binding("the input batch", input_bytes)?;
    let input = b.storage("input", input_bytes);

    let mut outputs: Vec<wgpu::Buffer> = Vec::with_capacity(plan.len());
    let mut dispatches = Vec::new();
    for layer in plan {
        let output = b.storage(
            &format!("{} output", layer.layer.name),
            (batch * layer.output.len() * 4) as u64,
        );
        let source = outputs.last().unwrap_or(&input);
        layer_dispatches(&mut b, layer, weights, source, &output, &mut dispatches)?;
        outputs.push(output);
    }
    Ok(GpuNetwork {
        ctx,
        plan: plan.to_vec(),
        input,
        outputs,
        dispatches,
        memory: b.memory,
    })
}

fn layer_dispatches<'a>(
    b: &mut Builder<'a>,
    layer: &LayerPlan,
    weights: &Weights,
    input: &wgpu::Buffer,
    output: &wgpu::Buffer,
    dispatches: &mut Vec<Dispatch<'a>>,
) -> Result<()> {
    let name = layer.layer.name.as_str();
    let kernels = &b.ctx.kernels;
    let batch = layer.batch;
    match &layer.layer.kind {
        LayerKind::Conv2d {
            out_channels,
            window,
            groups,
            relu,
        } => {
            let (weight, bias) = weights.layer(name);
            let (packed, packed_out) = pack_conv_weight(weight, *out_channels, *groups);
            b.check_binding(&format!("{name}.weight"), (packed.len() * 4) as u64)?;
            let params = Conv2dParams {
                batch: u32_of(batch, "batch")?,
                in_channels: u32_of(layer.input.channels, "channels")?,
                in_height: u32_of(layer.input.height, "height")?,
                in_width: u32_of(layer.input.width, "width")?,
                out_channels: u32_of(*out_channels, "channels")?,
                out_height: u32_of(layer.output.height, "height")?,
                out_width: u32_of(layer.output.width, "width")?,
                groups: u32_of(*groups, "groups")?,
                kernel_height: u32_of(window.height, "kernel")?,
                kernel_width: u32_of(window.width, "kernel")?,
                stride_height: u32_of(window.stride_height, "stride")?,
                stride_width: u32_of(window.stride_width, "stride")?,
                pad_top: u32_of(layer.pad.top, "padding")?,
                pad_left: u32_of(layer.pad.left, "padding")?,
                relu: u32::from(*relu),
                packed_out_per_group: u32_of(packed_out, "channels")?,
            };
            let pixels = batch * layer.output.height * layer.output.width;
            let workgroups =
                b.grid_3d(name, pixels.div_ceil(BLOCK), packed_out / BLOCK, *groups)?;
            let uniform = b.uniform(name, &params);
            let weight = b.weights(&format!("{name}.weight"), &packed);
            let bias = b.weights(&format!("{name}.bias"), bias);
            let bind_group = b.bind(
                name,
                &kernels.conv2d_forward,
                &[&uniform, input, &weight, &bias, output],
            );
            dispatches.push(Dispatch {
                pipeline: &kernels.conv2d_forward,
                bind_group,
                workgroups,
            });
        }
        LayerKind::Linear { out_features, relu } => {
            let (weight, bias_data) = weights.layer(name);
            let depth = layer.input.len();
            let bias = b.weights(&format!("{name}.bias"), bias_data);
            // Columns per slice: as many as one storage binding holds, in whole register blocks.
            let bytes_per_block = (depth * BLOCK * 4) as u64;
            let blocks_per_slice = (b.max_binding / bytes_per_block).max(1) as usize;
            if bytes_per_block > b.max_binding {
                b.check_binding(
                    &format!("one {BLOCK}-column slice of {name}.weight"),
                    bytes_per_block,
                )?;
            }
            let slice_columns = blocks_per_slice * BLOCK;
            for first in (0..*out_features).step_by(slice_columns) {
                let count = slice_columns.min(out_features - first);
                let (packed, packed_columns) = pack_linear_slice(weight, depth, first, count);
                let params = GemmParams {
                    rows: u32_of(batch, "batch")?,
                    depth: u32_of(depth, "features")?,
                    columns: u32_of(count, "features")?,
                    packed_columns: u32_of(packed_columns, "features")?,
                    column_offset: u32_of(first, "features")?,
                    output_stride: u32_of(*out_features, "features")?,
                    relu: u32::from(*relu),
                    _pad: 0,
                };
                let label = format!("{name}[{first}..{}]", first + count);
                let workgroups =
                    b.grid_3d(name, count.div_ceil(BLOCK), batch.div_ceil(BLOCK), 1)?;
                let uniform = b.uniform(&label, &params);
                let weight = b.weights(&label, &packed);
                let bind_group = b.bind(
                    &label,
                    &kernels.gemm,
                    &[&uniform, input, &weight, &bias, output],
                );
                dispatches.push(Dispatch {
                    pipeline: &kernels.gemm,
                    bind_group,
                    workgroups,
                });
            }
        }
        LayerKind::Lrn {
            depth_radius,
            bias,
            alpha,
            beta,
        } => {
            let plane = layer.input.height * layer.input.width;
            let params = LrnParams {
                batch: u32_of(batch, "batch")?,
                channels: u32_of(layer.input.channels, "channels")?,
                plane: u32_of(plane, "plane")?,
                depth_radius: u32_of(*depth_radius, "depth_radius")?,
                bias: *bias,
                alpha: *alpha,
                beta: *beta,
                _pad: 0,
            };
            let workgroups = b.grid_1d(name, batch * plane)?;
            let uniform = b.uniform(name, &params);
            let bind_group = b.bind(name, &kernels.lrn_forward, &[&uniform, input, output]);
            dispatches.push(Dispatch {
                pipeline: &kernels.lrn_forward,
                bind_group,
                workgroups,
            });
        }
        LayerKind::MaxPool { window } => {
            let params = MaxPoolParams {
                planes: u32_of(batch * layer.input.channels, "planes")?,
                in_height: u32_of(layer.input.height, "height")?,
                in_width: u32_of(layer.input.width, "width")?,
                out_height: u32_of(layer.output.height, "height")?,
                out_width: u32_of(layer.output.width, "width")?,
                window_height: u32_of(window.height, "window")?,
                window_width: u32_of(window.width, "window")?,
                stride_height: u32_of(window.stride_height, "stride")?,
                stride_width: u32_of(window.stride_width, "stride")?,
                pad_top: u32_of(layer.pad.top, "padding")?,
                pad_left: u32_of(layer.pad.left, "padding")?,
                _pad: 0,
            };
            // Each invocation writes up to 4 outputs of one row (OUTPUTS_PER_INVOCATION).
            let segments =
                batch * layer.input.channels * layer.output.height * layer.output.width.div_ceil(4);
            let workgroups = b.grid_1d(name, segments)?;
            let uniform = b.uniform(name, &params);
            let bind_group = b.bind(name, &kernels.max_pool_forward, &[&uniform, input, output]);
            dispatches.push(Dispatch {
                pipeline: &kernels.max_pool_forward,
                bind_group,
                workgroups,
            });
        }
    }
    Ok(())
}
