//! The backward pass of `l2_loss(last output) = sum(y^2) / 2` on the GPU: the dispatches, the
//! gradient of every layer's output, and the parameter gradients (in the packed layouts of the
//! weights, so an SGD step is element by element).
//!
//! Per layer, last to first:
//! - conv: ReLU backward (in place), the filter gradient in chunks of pixels (then the chunks
//!   summed), the bias gradient, and the input gradient (skipped for the first layer, whose input
//!   is the images);
//! - linear: ReLU backward, per weight slice the weight gradient `X^T dY` and the input gradient
//!   `dY W` (summed over slices), the bias gradient;
//! - LRN: its one-pass backward; max pool: the gather backward, routed by the window maxima
//!   positions its training forward pass recorded.

use crate::error::{Error, Result};
use crate::gpu::builder::{
    encode_pass, u32_of, words, Builder, Conv2dParams, Dispatch, LrnParams, MatmulParams,
    MaxPoolParams, Purpose, Words4, BLOCK, POOL_TILE,
};
use crate::gpu::kernels::KernelShape;
use crate::gpu::network::{conv2d_dispatch, tiled_kernel, LayerParams, Packing};
use crate::model::{LayerKind, LayerPlan};
use crate::shaders;

/// Fewest pixels one chunk of a filter-gradient reduction sums: enough work per invocation that
/// adding the chunks stays cheap, few enough that the serial f32 sums stay short.
const MIN_PIXELS_PER_CHUNK: usize = 1024;

/// A parameterised layer's weight and bias gradients, shaped like its [`LayerParams`].
pub(crate) struct ParamGrads {
    pub weights: Vec<wgpu::Buffer>,
    pub bias: wgpu::Buffer,
}

/// Where the gradient of the last layer's output comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutputGradient {
    /// The seed's loss, `l2_loss(last output)`: its gradient is the output itself.
    L2Loss,
    /// Written into the buffer by the caller before the backward pass (a later segment's
    /// input gradient, on a multi-device layout).
    External,
}

/// Everything the backward pass holds on the GPU.
pub(crate) struct Gradients {
    dispatches: Vec<Dispatch>,
    output_gradient: OutputGradient,
    /// The gradient of every layer's output.
    pub outputs: Vec<wgpu::Buffer>,
    /// The gradient of the network's input, when it was asked for.
    pub input: Option<wgpu::Buffer>,
    /// Parallel to the network's parameterised layers.
    pub params: Vec<ParamGrads>,
}

impl Gradients {
    /// Records the backward pass: the loss gradient (the logits themselves, unless the caller
    /// provides it), then every layer.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, logits: &wgpu::Buffer) {
        self.encode_loss(encoder, logits);
        encode_pass(encoder, "backward", &self.dispatches);
    }

    /// Records the loss gradient: a copy of the logits (nothing when the caller provides it).
    pub fn encode_loss(&self, encoder: &mut wgpu::CommandEncoder, logits: &wgpu::Buffer) {
        if self.output_gradient == OutputGradient::L2Loss {
            let last = self.outputs.last().expect("a network has layers");
            encoder.copy_buffer_to_buffer(logits, 0, last, 0, logits.size());
        }
    }

    /// The backward dispatches, last layer first.
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }
}

/// The buffers one layer's backward reads and writes.
struct LayerBuffers<'b> {
    input: &'b wgpu::Buffer,
    output: &'b wgpu::Buffer,
    grad_output: &'b wgpu::Buffer,
    /// None for the first layer: nobody needs the images' gradient.
    grad_input: Option<&'b wgpu::Buffer>,
    /// A max pool's window maxima positions, recorded by the forward pass.
    argmax: Option<&'b wgpu::Buffer>,
}

/// What the forward pass leaves for the backward pass to read: the network's input, every layer's
/// output and every max pool's window maxima positions (`None` for other layers).
pub(crate) struct ForwardBuffers<'f> {
    pub input: &'f wgpu::Buffer,
    pub outputs: &'f [wgpu::Buffer],
    pub argmax: &'f [Option<wgpu::Buffer>],
}

/// Builds the backward pass. `input_gradient` asks for the gradient of the network's input too
/// (skipped otherwise: nobody needs the images' gradient).
pub(crate) fn build<'a>(
    b: &mut Builder<'a>,
    plan: &[LayerPlan],
    forward: ForwardBuffers,
    params: &[LayerParams],
    output_gradient: OutputGradient,
    input_gradient: bool,
) -> Result<Gradients> {
    let ForwardBuffers {
        input,
        outputs,
        argmax,
    } = forward;
    let first = &plan[0];
    let input_grad = input_gradient.then(|| {
        b.storage(
            "input gradient",
            first.batch * first.input.len(),
            Purpose::Gradients,
        )
    });
    let grads: Vec<wgpu::Buffer> = plan
        .iter()
        .map(|l| {
            let label = format!("{} output gradient", l.layer.name);
            b.storage(&label, l.batch * l.output.len(), Purpose::Gradients)
        })
        .collect();
    let param_grads: Vec<ParamGrads> = params
        .iter()
        .map(|p| {
            let name = &plan[p.layer].layer.name;
            ParamGrads {
                weights: p
                    .packing
                    .buffer_lens()
                    .iter()
                    .map(|&len| {
                        b.storage(&format!("{name}.weight gradient"), len, Purpose::Gradients)
                    })
                    .collect(),
                bias: b.storage(
                    &format!("{name}.bias gradient"),
                    plan[p.layer].output.channels,
                    Purpose::Gradients,
                ),
            }
        })
        .collect();

    let mut dispatches = Vec::new();
    for (i, layer) in plan.iter().enumerate().rev() {
        let buffers = LayerBuffers {
            input: if i == 0 { input } else { &outputs[i - 1] },
            output: &outputs[i],
            grad_output: &grads[i],
            grad_input: if i == 0 {
                input_grad.as_ref()
            } else {
                Some(&grads[i - 1])
            },
            argmax: argmax[i].as_ref(),
        };
        let layer_params = params.iter().zip(&param_grads).find(|(p, _)| p.layer == i);
        match (&layer.layer.kind, layer_params) {
            (LayerKind::Conv2d { relu, .. }, Some((p, g))) => {
                if *relu {
                    dispatches.push(relu_backward(b, layer, &buffers)?);
                }
                dispatches.extend(conv_backward(b, layer, &buffers, p, g)?);
            }
            (LayerKind::Linear { relu, .. }, Some((p, g))) => {
                if *relu {
                    dispatches.push(relu_backward(b, layer, &buffers)?);
                }
                dispatches.extend(linear_backward(b, layer, &buffers, p, g)?);
            }
            (LayerKind::Lrn { .. }, None) => dispatches.extend(lrn_backward(b, layer, &buffers)?),
            (LayerKind::MaxPool { .. }, None) => {
                dispatches.extend(max_pool_backward(b, layer, &buffers)?)
            }
            _ => unreachable!("parameters exist exactly for conv and linear layers"),
        }
    }
    Ok(Gradients {
        dispatches,
        output_gradient,
        outputs: grads,
        input: input_grad,
        params: param_grads,
    })
}

fn relu_backward<'a>(
    b: &mut Builder<'a>,
    layer: &LayerPlan,
    buf: &LayerBuffers,
) -> Result<Dispatch> {
    let len = layer.batch * layer.output.len();
    let label = format!("{} relu backward", layer.layer.name);
    let workgroups = b.grid_1d(&label, len.div_ceil(4))?;
    let params = Words4([u32_of(len, "elements")?, 0, 0, 0]);
    let args = [buf.output, buf.grad_output];
    Ok(b.dispatch(
        &label,
        &b.ctx.kernels.relu_backward,
        &params,
        &args,
        workgroups,
    ))
}

fn bias_backward<'a>(
    b: &mut Builder<'a>,
    layer: &LayerPlan,
    grad_output: &wgpu::Buffer,
    grad_bias: &wgpu::Buffer,
) -> Result<Dispatch> {
    let label = format!("{} bias backward", layer.layer.name);
    let channels = layer.output.channels;
    let plane = layer.output.height * layer.output.width;
    let params = Words4([
        u32_of(layer.batch, "batch")?,
        u32_of(channels, "channels")?,
        u32_of(plane, "plane")?,
        0,
    ]);
    let workgroups = b.grid_3d(&label, channels, 1, 1)?;
    let args = [grad_output, grad_bias];
    Ok(b.dispatch(
        &label,
        &b.ctx.kernels.bias_backward,
        &params,
        &args,
        workgroups,
    ))
}

/// A conv layer's output gradient transposed for the filter gradient (see
/// conv2d_transpose_grad_output.wgsl), and the dispatch that makes it.
fn transpose_grad_output<'a>(
    b: &mut Builder<'a>,
    layer: &LayerPlan,
    grad_output: &wgpu::Buffer,
    groups: usize,
    packed_out: usize,
) -> Result<(wgpu::Buffer, Dispatch)> {
    let name = &layer.layer.name;
    let out_plane = layer.output.height * layer.output.width;
    let len = layer.batch * out_plane * groups * packed_out;
    b.check_binding(
        &format!("{name}'s transposed output gradient"),
        (len * 4) as u64,
    )?;
    let transposed = b.storage(
        &format!("{name} transposed output gradient"),
        len,
        Purpose::Scratch,
    );
    let uniform = words(
        [
            len,
            out_plane,
            layer.output.channels,
            groups,
            packed_out,
            0,
            0,
            0,
        ],
        "output gradient size",
    )?;
    let label = format!("{name} output gradient transpose");
    let workgroups = b.grid_1d(&label, len)?;
    let kernel = &b.ctx.kernels.conv2d_transpose_grad_output;
    let dispatch = b.dispatch(
        &label,
        kernel,
        &uniform,
        &[grad_output, &transposed],
        workgroups,
    );
    Ok((transposed, dispatch))
}

fn conv_backward<'a>(
    b: &mut Builder<'a>,
    layer: &LayerPlan,
    buf: &LayerBuffers,
    params: &LayerParams,
    grads: &ParamGrads,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let kernels = &b.ctx.kernels;
    let Packing::Conv {
        groups,
        taps,
        packed_out,
        ..
    } = params.packing
    else {
        unreachable!("a conv layer's weight is packed as a conv's")
    };
    let mut dispatches = Vec::new();

    // Filter gradient: chunks of pixels, as many as fit one binding and the dispatch limit.
    let pixels = layer.batch * layer.output.height * layer.output.width;
    let packed_len = groups * taps * packed_out;
    let max_chunks = ((b.max_binding / (packed_len as u64 * 4)) as usize)
        .min(b.ctx.limits.max_compute_workgroups_per_dimension as usize / groups)
        .max(1);
    let wanted = pixels.div_ceil(MIN_PIXELS_PER_CHUNK).clamp(1, max_chunks);
    let pixels_per_chunk = pixels.div_ceil(wanted);
    let chunks = pixels.div_ceil(pixels_per_chunk);
    let scratch = (chunks > 1).then(|| {
        b.storage(
            &format!("{name} filter partial sums"),
            chunks * packed_len,
            Purpose::Scratch,
        )
    });
    let partial = scratch.as_ref().unwrap_or(&grads.weights[0]);
    let mut conv = Conv2dParams::of(layer, packed_out)?;
    conv.pixels_per_chunk = u32_of(pixels_per_chunk, "pixels")?;
    let label = format!("{name} filter backward");
    // `taps` counts the reduction entries (input channel, kernel row, kernel column) of a group.
    let (kernel, workgroups) = match b.ctx.conv_kernel() {
        KernelShape::WorkgroupTile => (
            tiled_kernel(
                b,
                kernels.conv2d_backward_filter_tiled.as_ref(),
                "filter gradient",
            )?,
            b.workgroups(
                &label,
                [taps.div_ceil(64), packed_out.div_ceil(64), chunks * groups],
            )?,
        ),
        _ => (
            &kernels.conv2d_backward_filter,
            b.grid_3d(
                &label,
                taps.div_ceil(BLOCK),
                packed_out / BLOCK,
                chunks * groups,
            )?,
        ),
    };
    let grad_output = transpose_grad_output(b, layer, buf.grad_output, groups, packed_out)?;
    dispatches.push(grad_output.1);
    let args = [buf.input, &grad_output.0, partial];
    dispatches.push(b.dispatch(&label, kernel, &conv, &args, workgroups));
    if let Some(scratch) = &scratch {
        let label = format!("{name} filter chunk sum");
        let params = Words4([
            u32_of(packed_len, "weights")?,
            u32_of(chunks, "chunks")?,
            0,
            0,
        ]);
        let workgroups = b.grid_1d(&label, packed_len.div_ceil(4))?;
        let args = [scratch, &grads.weights[0]];
        dispatches.push(b.dispatch(&label, &kernels.sum_chunks, &params, &args, workgroups));
    }

    dispatches.push(bias_backward(b, layer, buf.grad_output, &grads.bias)?);

    if let Some(grad_input) = buf.grad_input {
        let (rotated, rotate) = rotated_weights(b, layer, &params.weights[0], groups, packed_out)?;
        dispatches.push(rotate);
        dispatches.extend(input_gradient(
            b,
            layer,
            buf.grad_output,
            &rotated,
            grad_input,
        )?);
    }
    Ok(dispatches)
}

/// A conv layer's weights transposed and rotated for the input gradient
/// (conv2d_transpose_weights.wgsl), and the dispatch that makes them.
fn rotated_weights<'a>(
    b: &mut Builder<'a>,
    layer: &LayerPlan,
    weights: &wgpu::Buffer,
    groups: usize,
    packed_out: usize,
) -> Result<(wgpu::Buffer, Dispatch)> {
    let name = &layer.layer.name;
    let in_per_group = layer.input.channels / groups;
    let out_per_group = layer.output.channels / groups;
    let packed_in = in_per_group.next_multiple_of(BLOCK);
    let taps = match layer.layer.kind {
        LayerKind::Conv2d { window, .. } => window.height * window.width,
        _ => unreachable!("a conv layer"),
    };
    let len = groups * out_per_group * taps * packed_in;
    b.check_binding(&format!("{name}'s rotated weights"), (len * 4) as u64)?;
    let rotated = b.storage(&format!("{name} rotated weights"), len, Purpose::Scratch);
    let uniform = words(
        [
            len,
            in_per_group,
            out_per_group,
            taps,
            packed_out,
            packed_in,
            0,
            0,
        ],
        "weights",
    )?;
    let label = format!("{name} weights rotate");
    let workgroups = b.grid_1d(&label, len)?;
    let kernel = &b.ctx.kernels.conv2d_transpose_weights;
    let dispatch = b.dispatch(&label, kernel, &uniform, &[weights, &rotated], workgroups);
    Ok((rotated, dispatch))
}

/// The dispatches of a conv layer's input gradient. Stride 1: a forward convolution (either
/// variant the adapter uses) of the output gradient, zero-bordered to the full size (input +
/// kernel - 1), with the rotated weights. Strided: conv2d_backward_data.
fn input_gradient<'a>(
    b: &mut Builder<'a>,
    layer: &LayerPlan,
    grad_output: &wgpu::Buffer,
    rotated: &wgpu::Buffer,
    grad_input: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let LayerKind::Conv2d { window, groups, .. } = layer.layer.kind else {
        unreachable!("a conv layer")
    };
    let (input, output) = (layer.input, layer.output);
    let packed_in = (input.channels / groups).next_multiple_of(BLOCK);
    let label = format!("{name} data backward");
    if window.stride_height != 1 || window.stride_width != 1 {
        let conv = Conv2dParams::of(layer, packed_in)?;
        // Blocks of 16 pixels phase by phase (pixels sharing their position modulo the stride).
        let (sy, sx) = (window.stride_height, window.stride_width);
        let grid_pixels = input.height.div_ceil(sy) * input.width.div_ceil(sx);
        let workgroups = b.grid_3d(
            &label,
            layer.batch * sy * sx * grid_pixels.div_ceil(BLOCK),
            packed_in / BLOCK,
            groups,
        )?;
        let kernel = &b.ctx.kernels.conv2d_backward_data;
        let args = [grad_output, rotated, grad_input];
        return Ok(vec![b.dispatch(&label, kernel, &conv, &args, workgroups)]);
    }
    let pad = layer.pad;
    let (top, left) = (window.height - 1 - pad.top, window.width - 1 - pad.left);
    let padded_height = input.height + window.height - 1;
    let padded_width = input.width + window.width - 1;
    let planes = layer.batch * output.channels;
    let len = planes * padded_height * padded_width;
    b.check_binding(
        &format!("{name}'s padded output gradient"),
        (len * 4) as u64,
    )?;
    let padded = b.storage(
        &format!("{name} padded output gradient"),
        len,
        Purpose::Scratch,
    );
    let rows = planes * output.height;
    let uniform = words(
        [
            rows,
            output.height,
            output.width,
            padded_height,
            padded_width,
            top,
            left,
            0,
        ],
        "padded gradient size",
    )?;
    let pad_label = format!("{name} pad output gradient");
    let workgroups = b.grid_1d(&pad_label, rows)?;
    let kernel = &b.ctx.kernels.conv2d_pad_input;
    let mut dispatches = vec![b.dispatch(
        &pad_label,
        kernel,
        &uniform,
        &[grad_output, &padded],
        workgroups,
    )];
    // The convolution from the output gradient to the input gradient: channels swapped, no bias.
    let zero_bias = b.storage(
        &format!("{name} zero bias"),
        input.channels,
        Purpose::Scratch,
    );
    let conv = Conv2dParams {
        in_channels: u32_of(output.channels, "channels")?,
        in_height: u32_of(padded_height, "height")?,
        in_width: u32_of(padded_width, "width")?,
        out_channels: u32_of(input.channels, "channels")?,
        out_height: u32_of(input.height, "height")?,
        out_width: u32_of(input.width, "width")?,
        pad_top: 0,
        pad_left: 0,
        relu: 0,
        packed_out_per_group: u32_of(packed_in, "channels")?,
        ..Conv2dParams::of(layer, packed_in)?
    };
    let args = [&padded, rotated, &zero_bias, grad_input];
    dispatches.push(conv2d_dispatch(b, &label, &conv, args)?);
    Ok(dispatches)
}

fn linear_backward<'a>(
    b: &mut Builder<'a>,
    layer: &LayerPlan,
    buf: &LayerBuffers,
    params: &LayerParams,
    grads: &ParamGrads,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let Packing::Linear {
        depth,
        out_features,
        slices,
    } = &params.packing
    else {
        unreachable!("a linear layer's weight is packed as a linear's")
    };
    let batch = layer.batch;
    let mut dispatches = Vec::new();
    for (s, slice) in slices.iter().enumerate() {
        // Weight gradient of the slice, packed [in][packed_columns]: X^T dY[:, slice].
        let label = format!("{name}[{}..] weight backward", slice.first);
        let product = MatmulParams {
            m: u32_of(*depth, "features")?,
            n: u32_of(slice.count, "features")?,
            k: u32_of(batch, "batch")?,
            accumulate: 0,
            a_offset: 0,
            a_row_stride: 1,
            a_col_stride: u32_of(*depth, "features")?,
            b_offset: u32_of(slice.first, "features")?,
            b_row_stride: u32_of(*out_features, "features")?,
            b_col_stride: 1,
            c_row_stride: u32_of(slice.packed_columns, "features")?,
            _pad: 0,
        };
        let args = [buf.input, buf.grad_output, &grads.weights[s]];
        dispatches.push(matmul_dispatch(b, &label, &product, args)?);

        // Input gradient, summed over slices: dY[:, slice] W[slice, :].
        if let Some(grad_input) = buf.grad_input {
            let label = format!("{name}[{}..] input backward", slice.first);
            let product = MatmulParams {
                m: u32_of(batch, "batch")?,
                n: u32_of(*depth, "features")?,
                k: u32_of(slice.count, "features")?,
                accumulate: u32::from(s > 0),
                a_offset: u32_of(slice.first, "features")?,
                a_row_stride: u32_of(*out_features, "features")?,
                a_col_stride: 1,
                b_offset: 0,
                b_row_stride: 1,
                b_col_stride: u32_of(slice.packed_columns, "features")?,
                c_row_stride: u32_of(*depth, "features")?,
                _pad: 0,
            };
            let args = [buf.grad_output, &params.weights[s], grad_input];
            dispatches.push(matmul_dispatch(b, &label, &product, args)?);
        }
    }
    dispatches.push(bias_backward(b, layer, buf.grad_output, &grads.bias)?);
    Ok(dispatches)
}

/// The dispatch of `product` (a, b, c) on the matmul kernel this device uses: `matmul` (register
/// block) or `matmul_tiled` (workgroup tiles).
fn matmul_dispatch(
    b: &mut Builder,
    label: &str,
    product: &MatmulParams,
    args: [&wgpu::Buffer; 3],
) -> Result<Dispatch> {
    let (m, n) = (product.m as usize, product.n as usize);
    let (kernel, workgroups) = match b.ctx.matmul_kernel() {
        KernelShape::WorkgroupTile => (
            tiled_kernel(b, b.ctx.kernels.matmul_tiled.as_ref(), "matrix product")?,
            b.workgroups(label, [n.div_ceil(64), m.div_ceil(64), 1])?,
        ),
        _ => (
            &b.ctx.kernels.matmul,
            b.grid_3d(label, n.div_ceil(BLOCK), m.div_ceil(BLOCK), 1)?,
        ),
    };
    Ok(b.dispatch(label, kernel, product, &args, workgroups))
}

fn lrn_backward<'a>(
    b: &mut Builder<'a>,
    layer: &LayerPlan,
    buf: &LayerBuffers,
) -> Result<Vec<Dispatch>> {
    let Some(grad_input) = buf.grad_input else {
        return Ok(Vec::new());
    };
    let name = &layer.layer.name;
    let (params, overrides) = LrnParams::of(layer)?;
    let positions = layer.batch * layer.input.height * layer.input.width;
    let workgroups = b.grid_1d(name, positions)?;
    let kernel = b.specialised(&shaders::LRN_BACKWARD, &overrides);
    let args = [buf.input, buf.grad_output, grad_input];
    Ok(vec![b.dispatch(
        &format!("{name} backward"),
        &kernel,
        &params,
        &args,
        workgroups,
    )])
}

fn max_pool_backward<'a>(
    b: &mut Builder<'a>,
    layer: &LayerPlan,
    buf: &LayerBuffers,
) -> Result<Vec<Dispatch>> {
    let Some(grad_input) = buf.grad_input else {
        return Ok(Vec::new());
    };
    let name = &layer.layer.name;
    let argmax = buf.argmax.ok_or_else(|| {
        Error::InvalidArgument(format!(
            "layer {name}: its forward pass did not record the window maxima"
        ))
    })?;
    let (params, overrides) = MaxPoolParams::of(layer)?;
    let tiles = layer.batch
        * layer.input.channels
        * layer.input.height.div_ceil(POOL_TILE)
        * layer.input.width.div_ceil(POOL_TILE);
    let label = format!("{name} backward");
    let workgroups = b.grid_1d(&label, tiles)?;
    let kernel = b.specialised(&shaders::MAX_POOL_BACKWARD, &overrides);
    let args = [argmax, buf.grad_output, grad_input];
    Ok(vec![b.dispatch(&label, &kernel, &params, &args, workgroups)])
}
