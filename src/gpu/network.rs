//! A planned network on the GPU: every buffer, uniform and bind group created once, so that a
//! forward (or forward-backward) pass is one command buffer of dispatches and nothing else.
//!
//! Activations are NCHW, one buffer per layer output, all kept (the backward pass reads them,
//! and `check` reads any layer back). Weights are repacked at upload into the layouts the kernels
//! read as vec4s; parameter gradients are computed in the same layouts and unpacked to PyTorch's
//! only when read back.

use crate::error::{Error, Result};
use crate::gpu::backward::{self, ForwardBuffers, Gradients, OutputGradient};
use crate::gpu::builder::{
    encode_pass, pool_tile, u32_of, words, BatchNormParams, Builder, Conv2dParams, Dispatch,
    GemmParams, LrnParams, MaxPoolParams, MemoryUse, Purpose, Words4, BLOCK,
};
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::{
    Kernel, KernelShape, LinearKernel, TILED_INVOCATIONS, TILED_WORKGROUP_BYTES,
};
use crate::model::{LayerKind, LayerPlan, Source};
use crate::shaders;
use crate::weights::{Tensor, Weights};

/// A column slice of a linear layer's weight: as many columns as one storage binding holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slice {
    pub first: usize,
    pub count: usize,
    /// `count` rounded up to [`BLOCK`]: the row length of the packed slice.
    pub packed_columns: usize,
}

/// How a layer's weight is laid out on the GPU.
#[derive(Clone, Debug)]
pub(crate) enum Packing {
    /// `[group][k][out_per_group rounded up to BLOCK]`, k = (in channel, ky, kx).
    Conv {
        out_channels: usize,
        groups: usize,
        taps: usize,
        packed_out: usize,
    },
    /// Per slice: `[in][packed_columns]` (transposed).
    Linear {
        depth: usize,
        out_features: usize,
        slices: Vec<Slice>,
    },
    /// A batch norm's `[4][channels]` statistics (weight, bias, mean, variance), never unpacked:
    /// they have no gradients here.
    Norm,
}

/// A parameterised layer's weight (one buffer per slice) and bias on the GPU.
pub(crate) struct LayerParams {
    /// Index of the layer in the plan.
    pub layer: usize,
    pub packing: Packing,
    pub weights: Vec<wgpu::Buffer>,
    pub bias: wgpu::Buffer,
}

impl Packing {
    fn conv(out_channels: usize, groups: usize, weight_len: usize) -> Self {
        Packing::Conv {
            out_channels,
            groups,
            taps: weight_len / out_channels,
            packed_out: (out_channels / groups).next_multiple_of(BLOCK),
        }
    }

    /// Floats in each packed buffer.
    pub fn buffer_lens(&self) -> Vec<usize> {
        match self {
            Packing::Conv {
                groups,
                taps,
                packed_out,
                ..
            } => vec![groups * taps * packed_out],
            Packing::Linear { depth, slices, .. } => {
                slices.iter().map(|s| depth * s.packed_columns).collect()
            }
            Packing::Norm => Vec::new(),
        }
    }

    /// PyTorch layout → the GPU's packed buffers, zero-padded.
    fn pack(&self, weight: &[f32]) -> Vec<Vec<f32>> {
        let mut packed: Vec<Vec<f32>> = self.buffer_lens().iter().map(|&n| vec![0.0; n]).collect();
        self.for_each_index(|buffer, at, original| packed[buffer][at] = weight[original]);
        packed
    }

    /// The GPU's packed buffers → PyTorch layout.
    pub fn unpack(&self, packed: &[Vec<f32>], len: usize) -> Vec<f32> {
        let mut weight = vec![0.0; len];
        self.for_each_index(|buffer, at, original| weight[original] = packed[buffer][at]);
        weight
    }

    /// Calls `f(buffer, packed index, PyTorch index)` for every weight element.
    fn for_each_index(&self, mut f: impl FnMut(usize, usize, usize)) {
        match self {
            Packing::Conv {
                out_channels,
                groups,
                taps,
                packed_out,
            } => {
                let per_group = out_channels / groups;
                for g in 0..*groups {
                    for o in 0..per_group {
                        for k in 0..*taps {
                            f(
                                0,
                                (g * taps + k) * packed_out + o,
                                (g * per_group + o) * taps + k,
                            );
                        }
                    }
                }
            }
            Packing::Linear { depth, slices, .. } => {
                for (s, slice) in slices.iter().enumerate() {
                    for c in 0..slice.count {
                        for k in 0..*depth {
                            f(
                                s,
                                k * slice.packed_columns + c,
                                (slice.first + c) * depth + k,
                            );
                        }
                    }
                }
            }
            Packing::Norm => {}
        }
    }
}

/// A network resident on one device, ready to run forward passes and, when built with
/// [`GpuNetwork::with_gradients`], backward passes.
pub struct GpuNetwork<'a> {
    pub(crate) ctx: &'a GpuContext,
    pub(crate) plan: Vec<LayerPlan>,
    pub(crate) input: wgpu::Buffer,
    pub(crate) outputs: Vec<wgpu::Buffer>,
    pub(crate) params: Vec<LayerParams>,
    forward: Vec<Dispatch>,
    pub(crate) gradients: Option<Gradients>,
    memory: MemoryUse,
}

impl<'a> GpuNetwork<'a> {
    /// Uploads the weights and creates every buffer, uniform and bind group of the forward pass.
    /// Refuses, with the numbers, any activation larger than one storage binding; splits a
    /// linear layer whose weight is larger into column slices.
    pub fn new(ctx: &'a GpuContext, plan: &[LayerPlan], weights: &Weights) -> Result<Self> {
        ctx.scoped("network setup", |_| build(ctx, plan, weights, None))?
    }

    /// As [`GpuNetwork::new`], plus everything the backward pass of `l2_loss(last output)` needs.
    pub fn with_gradients(
        ctx: &'a GpuContext,
        plan: &[LayerPlan],
        weights: &Weights,
    ) -> Result<Self> {
        let gradients = Some((OutputGradient::L2Loss, false));
        ctx.scoped("network setup", |_| build(ctx, plan, weights, gradients))?
    }

    /// As [`GpuNetwork::with_gradients`], and the gradient of the input too (which a network's
    /// first layer otherwise skips): one layer benchmarked alone does all a layer inside a
    /// network does.
    pub fn with_input_gradient(
        ctx: &'a GpuContext,
        plan: &[LayerPlan],
        weights: &Weights,
    ) -> Result<Self> {
        let gradients = Some((OutputGradient::L2Loss, true));
        ctx.scoped("network setup", |_| build(ctx, plan, weights, gradients))?
    }

    /// Runs the backward pass alone (after a forward pass) and waits for the GPU.
    pub fn backward(&self) -> Result<()> {
        self.run("backward pass", |encoder| self.encode_backward(encoder))
    }

    /// A segment of a multi-device layout: with gradients, its output gradient provided by the
    /// caller and its input gradient computed.
    pub(crate) fn segment(
        ctx: &'a GpuContext,
        plan: &[LayerPlan],
        weights: &Weights,
        last: bool,
        first: bool,
    ) -> Result<Self> {
        let output_gradient = if last {
            OutputGradient::L2Loss
        } else {
            OutputGradient::External
        };
        let gradients = Some((output_gradient, !first));
        ctx.scoped("network setup", |_| build(ctx, plan, weights, gradients))?
    }

    /// The plan this network runs.
    pub fn plan(&self) -> &[LayerPlan] {
        &self.plan
    }

    /// The context (adapter, device, queue) the network lives on.
    pub fn context(&self) -> &'a GpuContext {
        self.ctx
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

    /// Records the whole forward pass into `encoder`.
    pub fn encode_forward(&self, encoder: &mut wgpu::CommandEncoder) {
        encode_pass(encoder, "forward", &self.forward);
    }

    /// Records the backward pass of `l2_loss(last output)` into `encoder`, after a forward pass.
    /// Fails when the network was built without gradients.
    pub fn encode_backward(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let gradients = self.gradients_or_err()?;
        gradients.encode(encoder, self.outputs.last().expect("a network has layers"));
        Ok(())
    }

    fn gradients_or_err(&self) -> Result<&Gradients> {
        self.gradients.as_ref().ok_or_else(|| {
            Error::InvalidArgument("this network was built without gradients".into())
        })
    }

    /// Submits what `record` encodes and waits until the GPU has finished it.
    pub(crate) fn run(
        &self,
        during: &str,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<()> {
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some(during),
            });
        record(&mut encoder)?;
        self.ctx.queue.submit([encoder.finish()]);
        self.ctx.wait(during)
    }

    /// Runs one forward pass and waits until the GPU has finished it.
    pub fn forward(&self) -> Result<()> {
        self.run("forward pass", |encoder| {
            self.encode_forward(encoder);
            Ok(())
        })
    }

    /// Runs one forward and backward pass (one command buffer) and waits for the GPU.
    pub fn forward_backward(&self) -> Result<()> {
        self.run("forward-backward pass", |encoder| {
            self.encode_forward(encoder);
            self.encode_backward(encoder)
        })
    }

    /// Times the forward pass layer by layer (see [`Profile`](crate::gpu::Profile)).
    pub fn profile_forward(&self) -> Result<crate::gpu::Profile> {
        crate::gpu::profile::profile(self.ctx, |_| {}, &self.forward)
    }

    /// Times the backward pass layer by layer, after an untimed forward pass and loss gradient.
    pub fn profile_backward(&self) -> Result<crate::gpu::Profile> {
        let gradients = self.gradients_or_err()?;
        let logits = self.outputs.last().expect("a network has layers");
        let prelude = |encoder: &mut wgpu::CommandEncoder| {
            self.encode_forward(encoder);
            gradients.encode_loss(encoder, logits);
        };
        crate::gpu::profile::profile(self.ctx, prelude, gradients.dispatches())
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

    /// Reads back the gradient of `l2_loss` with respect to layer `index`'s output, after a
    /// backward pass (for the last layer: the logits themselves).
    pub fn read_output_gradient(&self, index: usize) -> Result<Vec<f32>> {
        let layer = &self.plan[index];
        let gradients = self.gradients_or_err()?;
        self.ctx
            .read_f32(&gradients.outputs[index], layer.batch * layer.output.len())
    }

    /// Reads back the parameter gradients of the last backward pass, named and shaped as in the
    /// weights file (PyTorch's layouts), in the network's order.
    pub fn read_gradients(&self) -> Result<Weights> {
        let gradients = self.gradients_or_err()?;
        let mut tensors = Vec::new();
        for (params, grads) in self.params.iter().zip(&gradients.params) {
            tensors.extend(self.read_param_pair(params, &grads.weights, &grads.bias)?);
        }
        Ok(Weights::from_tensors(tensors))
    }

    /// Reads back the current weights (after training steps), in the weights file's layouts.
    pub fn read_weights(&self) -> Result<Weights> {
        let mut tensors = Vec::new();
        for params in &self.params {
            tensors.extend(self.read_param_pair(params, &params.weights, &params.bias)?);
        }
        Ok(Weights::from_tensors(tensors))
    }

    fn read_param_pair(
        &self,
        params: &LayerParams,
        weights: &[wgpu::Buffer],
        bias: &wgpu::Buffer,
    ) -> Result<[(String, Tensor); 2]> {
        let layer = &self.plan[params.layer];
        let shapes = layer.parameter_shapes();
        let lens = params.packing.buffer_lens();
        let packed = weights
            .iter()
            .zip(&lens)
            .map(|(buffer, &len)| self.ctx.read_f32(buffer, len))
            .collect::<Result<Vec<_>>>()?;
        let (weight_name, weight_shape) = shapes[0].clone();
        let (bias_name, bias_shape) = shapes[1].clone();
        let weight = params
            .packing
            .unpack(&packed, weight_shape.iter().product());
        let bias = self.ctx.read_f32(bias, bias_shape[0])?;
        Ok([
            (
                weight_name,
                Tensor {
                    shape: weight_shape,
                    data: weight,
                },
            ),
            (
                bias_name,
                Tensor {
                    shape: bias_shape,
                    data: bias,
                },
            ),
        ])
    }
}

fn build<'a>(
    ctx: &'a GpuContext,
    plan: &[LayerPlan],
    weights: &Weights,
    gradients: Option<(OutputGradient, bool)>,
) -> Result<GpuNetwork<'a>> {
    let mut b = Builder::new(ctx);
    let first = plan
        .first()
        .ok_or_else(|| Error::InvalidArgument("empty network".into()))?;
    if gradients.is_some() {
        if let Some(layer) = plan.iter().find(|l| !l.supports_backward()) {
            return Err(Error::InvalidArgument(format!(
                "layer {}: the backward pass is implemented for chains of convolutions, LRN, \
                 max pooling and fully connected layers (the AlexNets); this network runs forward only",
                layer.layer.name
            )));
        }
    }
    let batch = first.batch;
    for layer in plan {
        let bytes = (batch * layer.output.len() * 4) as u64;
        if bytes > b.max_binding {
            let per_image = (layer.output.len() * 4) as u64;
            return Err(b.too_large(
                format!("batch {batch}"),
                format!(
                    "layer {}'s output is {} MB, one storage binding holds at most {} MB; \
                     the largest batch that fits is {}",
                    layer.layer.name,
                    bytes / 1_000_000,
                    b.max_binding / 1_000_000,
                    b.max_binding / per_image
                ),
            ));
        }
    }
    b.check_binding("the input batch", (batch * first.input.len() * 4) as u64)?;
    let input = b.storage("input", batch * first.input.len(), Purpose::Activations);

    let mut outputs: Vec<wgpu::Buffer> = Vec::with_capacity(plan.len());
    let mut argmax: Vec<Option<wgpu::Buffer>> = Vec::with_capacity(plan.len());
    let mut params = Vec::new();
    let mut forward = Vec::new();
    for (index, layer) in plan.iter().enumerate() {
        let name = &layer.layer.name;
        let output = b.storage(
            &format!("{name} output"),
            batch * layer.output.len(),
            Purpose::Activations,
        );
        let sources: Vec<&wgpu::Buffer> = layer
            .sources
            .iter()
            .map(|(source, _)| match source {
                Source::Input => &input,
                Source::Layer(j) => &outputs[*j],
            })
            .collect();
        let layer_params = upload_params(&mut b, index, layer, weights)?;
        // Training records where each pooling window's maximum lies, for the backward pass.
        let maxima = (gradients.is_some() && matches!(layer.layer.kind, LayerKind::MaxPool { .. }))
            .then(|| {
                let len = batch * layer.output.len();
                b.storage(&format!("{name} argmax"), len, Purpose::Activations)
            });
        forward.extend(forward_dispatches(
            &mut b,
            layer,
            layer_params.as_ref(),
            &sources,
            &output,
            maxima.as_ref(),
        )?);
        params.extend(layer_params);
        outputs.push(output);
        argmax.push(maxima);
    }
    let gradients = match gradients {
        Some((output_gradient, input_gradient)) => Some(backward::build(
            &mut b,
            plan,
            ForwardBuffers {
                input: &input,
                outputs: &outputs,
                argmax: &argmax,
            },
            &params,
            output_gradient,
            input_gradient,
        )?),
        None => None,
    };
    Ok(GpuNetwork {
        ctx,
        plan: plan.to_vec(),
        input,
        outputs,
        params,
        forward,
        gradients,
        memory: b.memory,
    })
}

/// Packs and uploads a layer's weight and bias (a batch norm's statistics); `None` for layers
/// without parameters.
fn upload_params(
    b: &mut Builder,
    index: usize,
    layer: &LayerPlan,
    weights: &Weights,
) -> Result<Option<LayerParams>> {
    let name = &layer.layer.name;
    let packing = match &layer.layer.kind {
        LayerKind::Conv2d {
            out_channels,
            groups,
            ..
        } => Packing::conv(*out_channels, *groups, weights.tensor(name, "weight").len()),
        LayerKind::Linear { out_features, .. } => {
            let depth = layer.input.len();
            // Columns per slice: as many as one storage binding holds, in whole register blocks.
            let block_bytes = (depth * BLOCK * 4) as u64;
            b.check_binding(
                &format!("one {BLOCK}-column slice of {name}.weight"),
                block_bytes,
            )?;
            let slice_columns = (b.max_binding / block_bytes) as usize * BLOCK;
            let slices = (0..*out_features)
                .step_by(slice_columns)
                .map(|first| {
                    let count = slice_columns.min(out_features - first);
                    Slice {
                        first,
                        count,
                        packed_columns: count.next_multiple_of(BLOCK),
                    }
                })
                .collect();
            Packing::Linear {
                depth,
                out_features: *out_features,
                slices,
            }
        }
        LayerKind::BatchNorm { .. } => {
            // One buffer of the four per-channel vectors; it takes the weight's place.
            let stats: Vec<f32> = ["weight", "bias", "running_mean", "running_var"]
                .iter()
                .flat_map(|suffix| weights.tensor(name, suffix))
                .copied()
                .collect();
            return Ok(Some(LayerParams {
                layer: index,
                packing: Packing::Norm,
                weights: vec![b.weights(&format!("{name} statistics"), &stats)],
                bias: b.weights(&format!("{name}.bias"), &[]),
            }));
        }
        LayerKind::Lrn { .. }
        | LayerKind::MaxPool { .. }
        | LayerKind::Add { .. }
        | LayerKind::AdaptiveAvgPool { .. }
        | LayerKind::Concat => return Ok(None),
    };
    let weight = weights.tensor(name, "weight");
    let mut buffers = Vec::new();
    for (i, packed) in packing.pack(weight).iter().enumerate() {
        b.check_binding(&format!("{name}.weight"), (packed.len() * 4) as u64)?;
        buffers.push(b.weights(&format!("{name}.weight[{i}]"), packed));
    }
    // A convolution without bias (a batch norm follows it) adds zeros: the kernel stays one.
    let zeros = vec![0.0; layer.output.channels];
    let bias = weights
        .get(&format!("{name}.bias"))
        .map_or(zeros.as_slice(), |t| t.data.as_slice());
    let bias = b.weights(&format!("{name}.bias"), bias);
    Ok(Some(LayerParams {
        layer: index,
        packing,
        weights: buffers,
        bias,
    }))
}

/// A convolution by the kernel variant the device uses: `conv2d_forward` (register blocks) or
/// `conv2d_forward_tiled` (workgroup tiles). `args` are input, packed weights, bias, output.
pub(crate) fn conv2d_dispatch<'a>(
    b: &mut Builder<'a>,
    label: &str,
    params: &Conv2dParams,
    args: [&wgpu::Buffer; 4],
) -> Result<Dispatch> {
    let pixels = (params.batch * params.out_height * params.out_width) as usize;
    let packed_out = params.packed_out_per_group as usize;
    let groups = params.groups as usize;
    let (kernel, workgroups) = match b.ctx.conv_kernel() {
        KernelShape::WorkgroupTile => (
            tiled_kernel(
                b,
                b.ctx.kernels.conv2d_forward_tiled.as_ref(),
                "convolution",
            )?,
            b.workgroups(
                label,
                [pixels.div_ceil(64), packed_out.div_ceil(64), groups],
            )?,
        ),
        _ => (
            &b.ctx.kernels.conv2d_forward,
            b.grid_3d(label, pixels.div_ceil(BLOCK), packed_out / BLOCK, groups)?,
        ),
    };
    Ok(b.dispatch(label, kernel, params, &args, workgroups))
}

/// A workgroup-tiled kernel, or the error that the adapter's limits cannot run it (where forced;
/// `auto` never chooses it there).
pub(crate) fn tiled_kernel<'k>(
    b: &Builder,
    kernel: Option<&'k Kernel>,
    what: &str,
) -> Result<&'k Kernel> {
    kernel.ok_or_else(|| {
        b.too_large(
            format!("the workgroup-tiled {what}"),
            format!(
                "it needs {TILED_INVOCATIONS} invocations and {TILED_WORKGROUP_BYTES} bytes of \
                 workgroup memory, the adapter allows {} and {}",
                b.ctx.limits.max_compute_invocations_per_workgroup,
                b.ctx.limits.max_compute_workgroup_storage_size
            ),
        )
    })
}

/// For a padded convolution: a zero-bordered copy of its input, the dispatch that fills it each
/// pass (pushed onto `dispatches`), and `params` changed to read it unpadded. `None` for a
/// convolution without padding.
fn pad_input<'a>(
    b: &mut Builder<'a>,
    layer: &LayerPlan,
    input: &wgpu::Buffer,
    params: &mut Conv2dParams,
    dispatches: &mut Vec<Dispatch>,
) -> Result<Option<wgpu::Buffer>> {
    let pad = layer.pad;
    if pad == crate::model::Pad::default() {
        return Ok(None);
    }
    let name = &layer.layer.name;
    let (height, width) = (layer.input.height, layer.input.width);
    let padded_height = height + pad.top + pad.bottom;
    let padded_width = width + pad.left + pad.right;
    let planes = layer.batch * layer.input.channels;
    let len = planes * padded_height * padded_width;
    b.check_binding(&format!("{name}'s padded input"), (len * 4) as u64)?;
    let padded = b.storage(&format!("{name} padded input"), len, Purpose::Scratch);
    let rows = planes * height;
    let uniform = words(
        [
            rows,
            height,
            width,
            padded_height,
            padded_width,
            pad.top,
            pad.left,
            0,
        ],
        "padded input size",
    )?;
    let label = format!("{name} pad input");
    let workgroups = b.grid_1d(&label, rows)?;
    let kernel = &b.ctx.kernels.conv2d_pad_input;
    dispatches.push(b.dispatch(&label, kernel, &uniform, &[input, &padded], workgroups));
    params.in_height = u32_of(padded_height, "height")?;
    params.in_width = u32_of(padded_width, "width")?;
    params.pad_top = 0;
    params.pad_left = 0;
    Ok(Some(padded))
}

/// A fully connected layer's sizes, as the small-batch GEMM needs them.
struct LinearShape<'n> {
    name: &'n str,
    batch: usize,
    depth: usize,
    out_features: usize,
    relu: bool,
}

/// A fully connected layer by `gemm_small_batch`, one dispatch per weight slice; split along the
/// reduction into `chunks`, summed by `gemm_split_k_reduce`, when `chunks` > 1.
fn small_batch_linear<'a>(
    b: &mut Builder<'a>,
    layer: &LinearShape,
    p: &LayerParams,
    slices: &[Slice],
    chunks: usize,
    input: &wgpu::Buffer,
    output: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let name = layer.name;
    let kernels = &b.ctx.kernels;
    let len = layer.batch * layer.out_features;
    // No more chunks than the partial sums' binding holds.
    let chunks = chunks.min((b.max_binding / (len * 4) as u64).max(1) as usize);
    let partial = (chunks > 1).then(|| {
        b.storage(
            &format!("{name} partial sums"),
            chunks * len,
            Purpose::Scratch,
        )
    });
    let target = partial.as_ref().unwrap_or(output);
    let chunk_depth = layer.depth.div_ceil(chunks);
    let mut dispatches = Vec::new();
    for (slice, weight) in slices.iter().zip(&p.weights) {
        let params = words(
            [
                layer.batch,
                layer.depth,
                slice.count,
                slice.packed_columns,
                slice.first,
                layer.out_features,
                usize::from(layer.relu),
                chunk_depth,
                chunks,
                0,
                0,
                0,
            ],
            "fully connected size",
        )?;
        let label = format!("{name}[{}..{}]", slice.first, slice.first + slice.count);
        let workgroups = b.grid_3d(
            name,
            slice.count.div_ceil(BLOCK),
            layer.batch.div_ceil(4),
            chunks,
        )?;
        let args = [input, weight, &p.bias, target];
        let kernel = &kernels.gemm_small_batch;
        dispatches.push(b.dispatch(&label, kernel, &params, &args, workgroups));
    }
    if let Some(partial) = &partial {
        let params = Words4([
            u32_of(len, "fully connected size")?,
            u32_of(layer.out_features, "features")?,
            u32_of(chunks, "chunks")?,
            u32::from(layer.relu),
        ]);
        let workgroups = b.grid_1d(name, len.div_ceil(4))?;
        let args = [partial, &p.bias, output];
        let kernel = &kernels.gemm_split_k_reduce;
        dispatches.push(b.dispatch(
            &format!("{name} reduce"),
            kernel,
            &params,
            &args,
            workgroups,
        ));
    }
    Ok(dispatches)
}

/// The dispatches of one layer's forward pass. `argmax`, given for a max pool of a network that
/// trains, receives each window's maximum position for the backward pass.
fn forward_dispatches<'a>(
    b: &mut Builder<'a>,
    layer: &LayerPlan,
    params: Option<&LayerParams>,
    inputs: &[&wgpu::Buffer],
    output: &wgpu::Buffer,
    argmax: Option<&wgpu::Buffer>,
) -> Result<Vec<Dispatch>> {
    let name = layer.layer.name.as_str();
    let input = inputs[0];
    let kernels = &b.ctx.kernels;
    let batch = layer.batch;
    let mut dispatches = Vec::new();
    match (&layer.layer.kind, params) {
        (LayerKind::Conv2d { .. }, Some(p)) => {
            let Packing::Conv { packed_out, .. } = p.packing else {
                unreachable!("a conv layer's weight is packed as a conv's")
            };
            let mut params = Conv2dParams::of(layer, packed_out)?;
            let padded = match b.ctx.conv_kernel() {
                // The tiled kernel checks the bounds as it stages its tiles.
                KernelShape::WorkgroupTile => None,
                _ => pad_input(b, layer, input, &mut params, &mut dispatches)?,
            };
            let source = padded.as_ref().unwrap_or(input);
            let args = [source, &p.weights[0], &p.bias, output];
            dispatches.push(conv2d_dispatch(b, name, &params, args)?);
        }
        (LayerKind::Linear { out_features, relu }, Some(p)) => {
            let Packing::Linear { depth, slices, .. } = &p.packing else {
                unreachable!("a linear layer's weight is packed as a linear's")
            };
            let kernel =
                b.ctx
                    .variants
                    .linear
                    .resolve(batch, *depth, *out_features, b.ctx.software);
            if let LinearKernel::SmallBatch { chunks } = kernel {
                let shape = LinearShape {
                    name,
                    batch,
                    depth: *depth,
                    out_features: *out_features,
                    relu: *relu,
                };
                return small_batch_linear(b, &shape, p, slices, chunks, input, output);
            }
            for (slice, weight) in slices.iter().zip(&p.weights) {
                let params = GemmParams {
                    rows: u32_of(batch, "batch")?,
                    depth: u32_of(*depth, "features")?,
                    columns: u32_of(slice.count, "features")?,
                    packed_columns: u32_of(slice.packed_columns, "features")?,
                    column_offset: u32_of(slice.first, "features")?,
                    output_stride: u32_of(*out_features, "features")?,
                    relu: u32::from(*relu),
                    _pad: 0,
                };
                let label = format!("{name}[{}..{}]", slice.first, slice.first + slice.count);
                let workgroups =
                    b.grid_3d(name, slice.count.div_ceil(BLOCK), batch.div_ceil(BLOCK), 1)?;
                let args = [input, weight, &p.bias, output];
                dispatches.push(b.dispatch(&label, &kernels.gemm, &params, &args, workgroups));
            }
        }
        (LayerKind::Lrn { .. }, None) => {
            let positions = batch * layer.input.height * layer.input.width;
            let workgroups = b.grid_1d(name, positions)?;
            let (params, overrides) = LrnParams::of(layer)?;
            let kernel = b.specialised(&shaders::LRN_FORWARD, &overrides);
            dispatches.push(b.dispatch(name, &kernel, &params, &[input, output], workgroups));
        }
        (LayerKind::MaxPool { .. }, None) => {
            let (params, mut overrides) = MaxPoolParams::of(layer)?;
            let (height, width) = (layer.output.height, layer.output.width);
            let tile = pool_tile(height, width);
            overrides.push(("TILE", tile as f64));
            let tiles = batch * layer.input.channels * height.div_ceil(tile) * width.div_ceil(tile);
            let workgroups = b.grid_1d(name, tiles)?;
            let dispatch = match argmax {
                Some(argmax) => {
                    let kernel = b.specialised(&shaders::MAX_POOL_ARGMAX, &overrides);
                    let args = [input, output, argmax];
                    b.dispatch(name, &kernel, &params, &args, workgroups)
                }
                None => {
                    let kernel = b.specialised(&shaders::MAX_POOL_FORWARD, &overrides);
                    b.dispatch(name, &kernel, &params, &[input, output], workgroups)
                }
            };
            dispatches.push(dispatch);
        }
        (LayerKind::BatchNorm { eps, relu }, Some(p)) => {
            let len = batch * layer.output.len();
            let params = BatchNormParams {
                len: u32_of(len, "batch norm size")?,
                plane: u32_of(layer.output.height * layer.output.width, "plane")?,
                channels: u32_of(layer.output.channels, "channels")?,
                eps: *eps,
                relu: u32::from(*relu),
                _pad: [0; 3],
            };
            let workgroups = b.grid_1d(name, len.div_ceil(4))?;
            let args = [input, &p.weights[0], output];
            let kernel = &kernels.batch_norm_forward;
            dispatches.push(b.dispatch(name, kernel, &params, &args, workgroups));
        }
        (LayerKind::Add { relu }, None) => {
            let &[first, second] = inputs else {
                return Err(Error::InvalidArgument(format!(
                    "layer {name}: the GPU adds two tensors, not {}",
                    inputs.len()
                )));
            };
            let len = batch * layer.output.len();
            let params = Words4([u32_of(len, "addition size")?, u32::from(*relu), 0, 0]);
            let workgroups = b.grid_1d(name, len.div_ceil(4))?;
            let args = [first, second, output];
            dispatches.push(b.dispatch(name, &kernels.add_forward, &params, &args, workgroups));
        }
        (LayerKind::AdaptiveAvgPool { .. }, None) => {
            let (i, o) = (layer.input, layer.output);
            let params = words(
                [
                    batch * i.channels,
                    i.height,
                    i.width,
                    o.height,
                    o.width,
                    0,
                    0,
                    0,
                ],
                "pooling size",
            )?;
            let workgroups = b.grid_1d(name, batch * o.len())?;
            let kernel = &kernels.adaptive_avg_pool_forward;
            dispatches.push(b.dispatch(name, kernel, &params, &[input, output], workgroups));
        }
        (LayerKind::Concat, None) => {
            let mut offset = 0;
            for (source, (_, dims)) in inputs.iter().zip(&layer.sources) {
                let len = batch * dims.len();
                let params = Words4([
                    u32_of(len, "concatenation size")?,
                    u32_of(dims.len(), "concatenation size")?,
                    u32_of(layer.output.len(), "concatenation size")?,
                    u32_of(offset, "concatenation size")?,
                ]);
                offset += dims.len();
                let workgroups = b.grid_1d(name, len.div_ceil(4))?;
                let kernel = &kernels.concat_forward;
                let args = [*source, output];
                dispatches.push(b.dispatch(name, kernel, &params, &args, workgroups));
            }
        }
        _ => unreachable!("parameters exist exactly for conv, linear and batch norm layers"),
    }
    Ok(dispatches)
}
