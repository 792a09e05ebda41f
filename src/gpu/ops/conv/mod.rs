//! 2-D convolution (NCHW; groups, stride, per-side padding, fused bias and ReLU): the forward, the
//! filter gradient, the input gradient, and the layout transposes between them.
//!
//! Two shapes of kernel compute the forward, the filter gradient and the stride-1 input gradient
//! (see [`Variant`]): a 16x16 register block per invocation (CPU-shaped, for lavapipe and
//! llvmpipe) or 64x64 workgroup tiles staged in workgroup memory (GPU-shaped). Weights are packed
//! `[group][k][out_per_group rounded up to BLOCK]`, k = (input channel, kernel row, kernel
//! column), so four output channels are one vec4 load.

use crate::error::{Error, Result};
use crate::gpu::builder::{u32_of, Builder, Purpose};
use crate::gpu::kernel::{kernel_params, Dispatch, KernelDef};
use crate::gpu::ops::elementwise;
use crate::gpu::ops::{check_tiled_fits, BackwardBuffers};
use crate::gpu::packing::{PackedGrads, PackedWeights, Packing};
use crate::gpu::tuning::{ChoiceSource, ConvChoice, LayerChoice, TunedPass};
use crate::gpu::variants::{ConvAlgorithm, KernelShape};
use crate::model::{LayerKind, LayerPlan, Pad};
use crate::shaders::{self, Element, Elements, BLOCK, TILE};

mod winograd;

kernel_params! {
    /// Every convolution kernel's parameters (`shaders/common/conv2d_params.wgsl`).
    pub(crate) struct Conv2dParams {
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
        /// Only conv2d_backward_filter reads this.
        pixels_per_chunk: u32,
        /// Only conv2d_backward_data reads this: in_channels / groups rounded up to BLOCK, the
        /// row length of the rotated weights.
        packed_in_per_group: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

kernel_params! {
    /// conv2d_pad_input's parameters: a zero-bordered copy of `rows` rows of planes, spread
    /// apart by the stride (1: a plain border).
    pub(crate) struct PadParams {
        rows: u32,
        height: u32,
        width: u32,
        padded_height: u32,
        padded_width: u32,
        top: u32,
        left: u32,
        stride_height: u32,
        stride_width: u32,
        parts: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

kernel_params! {
    /// conv2d_transpose_weights's parameters.
    pub(crate) struct TransposeWeightsParams {
        len: u32,
        in_per_group: u32,
        out_per_group: u32,
        taps: u32,
        packed_out: u32,
        packed_in: u32,
        parts: u32,
        _pad: u32,
    }
}

kernel_params! {
    /// conv2d_transpose_grad_output's parameters.
    pub(crate) struct TransposeGradOutputParams {
        len: u32,
        out_plane: u32,
        out_channels: u32,
        groups: u32,
        packed_out: u32,
        parts: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

kernel_params! {
    /// sum_chunks's parameters: `chunks` partial filter gradients of `len` floats each.
    pub(crate) struct SumChunksParams {
        len: u32,
        chunks: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

const FORWARD: KernelDef<Conv2dParams> = KernelDef::flat(shaders::CONV2D_FORWARD);
const FORWARD_1X1: KernelDef<Conv2dParams> = KernelDef::flat(shaders::CONV2D_FORWARD_1X1);
const FORWARD_TILED: KernelDef<Conv2dParams> = KernelDef::tiled(shaders::CONV2D_FORWARD_TILED);
const PAD_INPUT: KernelDef<PadParams> = KernelDef::flat(shaders::CONV2D_PAD_INPUT);
const BACKWARD_DATA: KernelDef<Conv2dParams> = KernelDef::flat(shaders::CONV2D_BACKWARD_DATA);
const BACKWARD_FILTER: KernelDef<Conv2dParams> = KernelDef::flat(shaders::CONV2D_BACKWARD_FILTER);
const BACKWARD_FILTER_TILED: KernelDef<Conv2dParams> =
    KernelDef::tiled(shaders::CONV2D_BACKWARD_FILTER_TILED);
const TRANSPOSE_WEIGHTS: KernelDef<TransposeWeightsParams> =
    KernelDef::flat(shaders::CONV2D_TRANSPOSE_WEIGHTS);
const TRANSPOSE_GRAD_OUTPUT: KernelDef<TransposeGradOutputParams> =
    KernelDef::flat(shaders::CONV2D_TRANSPOSE_GRAD_OUTPUT);
const SUM_CHUNKS: KernelDef<SumChunksParams> = KernelDef::flat(shaders::SUM_CHUNKS);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    vec![
        FORWARD.contract(),
        FORWARD_1X1.contract(),
        FORWARD_TILED.contract(),
        PAD_INPUT.contract(),
        BACKWARD_DATA.contract(),
        BACKWARD_FILTER.contract(),
        BACKWARD_FILTER_TILED.contract(),
        TRANSPOSE_WEIGHTS.contract(),
        TRANSPOSE_GRAD_OUTPUT.contract(),
        SUM_CHUNKS.contract(),
    ]
    .into_iter()
    .chain(winograd::contracts())
    .collect()
}

/// Fewest pixels one chunk of a filter-gradient reduction sums: enough work per invocation that
/// adding the chunks stays cheap, few enough that the serial f32 sums stay short.
const MIN_PIXELS_PER_CHUNK: usize = 1024;

impl Conv2dParams {
    /// Whether the convolution is 1x1, stride 1, unpadded, on planes of a multiple of 4 pixels:
    /// `conv2d_forward_1x1` then reads four pixels as one vec4.
    fn is_pointwise(&self) -> bool {
        let plane = self.out_height * self.out_width;
        (self.kernel_height, self.kernel_width) == (1, 1)
            && (self.stride_height, self.stride_width) == (1, 1)
            && (self.pad_top, self.pad_left) == (0, 0)
            && (self.in_height, self.in_width) == (self.out_height, self.out_width)
            && plane.is_multiple_of(4)
    }

    /// The parameters of a planned conv layer whose weights are packed `packed_out` wide.
    pub fn of(layer: &LayerPlan, packed_out: usize) -> Result<Self> {
        let LayerKind::Conv2d {
            out_channels,
            window,
            groups,
            relu,
            ..
        } = layer.layer.kind
        else {
            return Err(Error::Internal(format!(
                "{} is not a convolution",
                layer.layer.name
            )));
        };
        Ok(Conv2dParams {
            batch: u32_of(layer.batch, "batch")?,
            in_channels: u32_of(layer.input.channels, "channels")?,
            in_height: u32_of(layer.input.height, "height")?,
            in_width: u32_of(layer.input.width, "width")?,
            out_channels: u32_of(out_channels, "channels")?,
            out_height: u32_of(layer.output.height, "height")?,
            out_width: u32_of(layer.output.width, "width")?,
            groups: u32_of(groups, "groups")?,
            kernel_height: u32_of(window.height, "kernel")?,
            kernel_width: u32_of(window.width, "kernel")?,
            stride_height: u32_of(window.stride_height, "stride")?,
            stride_width: u32_of(window.stride_width, "stride")?,
            pad_top: u32_of(layer.pad.top, "padding")?,
            pad_left: u32_of(layer.pad.left, "padding")?,
            relu: u32::from(relu),
            packed_out_per_group: u32_of(packed_out, "channels")?,
            pixels_per_chunk: 0,
            packed_in_per_group: u32_of(
                (layer.input.channels / groups).next_multiple_of(BLOCK),
                "channels",
            )?,
            ..Default::default()
        })
    }
}

/// The shape of convolution kernel a device uses, resolved once per dispatch builder from the
/// context's choice: the one place that maps [`KernelShape`] to kernels and grids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// conv2d_forward / conv2d_backward_filter: a BLOCK x BLOCK register block per invocation,
    /// every tap read unchecked from a zero-bordered copy of a padded input.
    RegisterBlock,
    /// conv2d_forward_tiled / conv2d_backward_filter_tiled: TILE x TILE outputs per workgroup,
    /// bounds checked while staging (no padded copy).
    WorkgroupTile,
}

impl Variant {
    fn of(b: &Builder, shape: KernelShape) -> Result<Self> {
        match shape {
            KernelShape::WorkgroupTile => {
                check_tiled_fits(b, "convolution")?;
                Ok(Variant::WorkgroupTile)
            }
            _ => Ok(Variant::RegisterBlock),
        }
    }

    /// A convolution of `params`; `args` are input, packed weights, bias, output, the input and
    /// weights stored as `elements.read`, the output as `elements.written`.
    fn forward(
        self,
        b: &mut Builder,
        label: &str,
        elements: Elements,
        params: &Conv2dParams,
        args: [&wgpu::Buffer; 4],
    ) -> Result<Dispatch> {
        let pixels = (params.batch * params.out_height * params.out_width) as usize;
        let packed_out = params.packed_out_per_group as usize;
        let groups = params.groups as usize;
        let (kernel, workgroups) = match self {
            Variant::WorkgroupTile => (
                &FORWARD_TILED,
                b.workgroups(
                    label,
                    [pixels.div_ceil(TILE), packed_out.div_ceil(TILE), groups],
                )?,
            ),
            Variant::RegisterBlock => (
                match params.is_pointwise() {
                    true => &FORWARD_1X1,
                    false => &FORWARD,
                },
                b.grid_3d(label, pixels.div_ceil(BLOCK), packed_out / BLOCK, groups)?,
            ),
        };
        Ok(b.dispatch_elements(label, kernel, elements, &[], params, &args, workgroups))
    }

    /// The filter gradient in `chunks` chunks of pixels; `args` are input (of `input`
    /// elements), transposed output gradient, partial sums (or the gradient itself for one
    /// chunk).
    fn filter(
        self,
        b: &mut Builder,
        label: &str,
        params: &Conv2dParams,
        (taps, input): (usize, Element),
        chunks: usize,
        args: [&wgpu::Buffer; 3],
    ) -> Result<Dispatch> {
        let packed_out = params.packed_out_per_group as usize;
        let groups = params.groups as usize;
        let (kernel, workgroups) = match self {
            Variant::WorkgroupTile => (
                &BACKWARD_FILTER_TILED,
                b.workgroups(
                    label,
                    [
                        taps.div_ceil(TILE),
                        packed_out.div_ceil(TILE),
                        chunks * groups,
                    ],
                )?,
            ),
            Variant::RegisterBlock => (
                &BACKWARD_FILTER,
                b.grid_3d(
                    label,
                    taps.div_ceil(BLOCK),
                    packed_out / BLOCK,
                    chunks * groups,
                )?,
            ),
        };
        let elements = Elements::reading(input);
        Ok(b.dispatch_elements(label, kernel, elements, &[], params, &args, workgroups))
    }
}

/// How one conv layer is computed, forward and backward alike: what a flag forces, else what
/// `convnet tune` measured for its shape and pass (the context's tuning), else the adapter's
/// heuristic (register blocks on software adapters, Winograd from 16 channels a side).
#[derive(Clone, Copy, Debug)]
struct Choice {
    variant: Variant,
    /// How its 3x3 or 5x5 stride-1 convolutions are computed, never `Auto` (Winograd where
    /// [`winograd::fits`]).
    algorithm: ConvAlgorithm,
    /// Where it came from.
    source: ChoiceSource,
}

impl Choice {
    fn of(b: &Builder, layer: &LayerPlan) -> Result<Self> {
        let LayerKind::Conv2d {
            out_channels,
            groups,
            window,
            ..
        } = layer.layer.kind
        else {
            return Err(Error::Internal(format!(
                "{} is not a convolution",
                layer.layer.name
            )));
        };
        let asked = b.ctx.variants();
        let pass = match b.trains {
            true => TunedPass::Training,
            false => TunedPass::Inference,
        };
        let tuned = b.ctx.tuning().conv_choice(layer, pass);
        let tuned_kernel = tuned.map(|t| t.kernel).filter(|&kernel| {
            asked.conv == KernelShape::Auto
                && (kernel != KernelShape::WorkgroupTile || b.ctx.tiled_kernels_fit())
        });
        let tuned_algorithm = tuned
            .map(|t| t.algorithm)
            .filter(|_| asked.conv_algorithm == ConvAlgorithm::Auto);
        let variant = Variant::of(b, tuned_kernel.unwrap_or_else(|| b.ctx.conv_kernel()))?;
        let algorithm = tuned_algorithm.unwrap_or(asked.conv_algorithm).resolve(
            layer.input.channels / groups,
            out_channels / groups,
            window.height.max(window.width),
            [layer.batch, layer.output.height, layer.output.width],
            b.ctx.software(),
        );
        let forced = asked.conv != KernelShape::Auto || asked.conv_algorithm != ConvAlgorithm::Auto;
        let source = match (tuned_kernel.is_some() || tuned_algorithm.is_some(), forced) {
            (true, _) => ChoiceSource::Tuned,
            (false, true) => ChoiceSource::Forced,
            (false, false) => ChoiceSource::Heuristic,
        };
        Ok(Choice {
            variant,
            algorithm,
            source,
        })
    }

    /// The layer's choice as the network reports it (for profiles and the tune), with
    /// `winograd` whether its forward did go through Winograd.
    fn report(&self, winograd: bool) -> LayerChoice {
        let algorithm = match winograd {
            true => self.algorithm,
            false => ConvAlgorithm::Direct,
        };
        let kernel = match self.variant {
            Variant::RegisterBlock => KernelShape::RegisterBlock,
            Variant::WorkgroupTile => KernelShape::WorkgroupTile,
        };
        LayerChoice {
            choice: ConvChoice { algorithm, kernel },
            source: self.source,
        }
    }
}

/// A zero-bordered copy of `planes` planes of `height` x `width` into planes padded to
/// `padded_height` x `padded_width`, value (y, x) at (`top` + y * `stride_height`, `left` + x *
/// `stride_width`), both stored as `element`: the dispatch that fills it, border and gaps
/// included, each pass, its rows split into parts as `variant`'s kernels want
/// ([`transpose_parts`]).
#[allow(clippy::too_many_arguments)]
fn pad_planes(
    b: &mut Builder,
    label: &str,
    planes: usize,
    (height, width): (usize, usize),
    (padded_height, padded_width): (usize, usize),
    (top, left): (usize, usize),
    (stride_height, stride_width): (usize, usize),
    (source, padded): (&wgpu::Buffer, &wgpu::Buffer),
    (element, variant): (Element, Variant),
) -> Result<Dispatch> {
    let rows = planes * padded_height;
    let parts = transpose_parts(variant, padded_width).max(1);
    let params = PadParams {
        rows: u32_of(rows, "padded rows")?,
        height: u32_of(height, "height")?,
        width: u32_of(width, "width")?,
        padded_height: u32_of(padded_height, "height")?,
        padded_width: u32_of(padded_width, "width")?,
        top: u32_of(top, "padding")?,
        left: u32_of(left, "padding")?,
        stride_height: u32_of(stride_height, "stride")?,
        stride_width: u32_of(stride_width, "stride")?,
        parts,
        ..Default::default()
    };
    let workgroups = b.grid_1d(label, rows * parts as usize)?;
    let args = [source, padded];
    let elements = Elements::both(element);
    Ok(b.dispatch_elements(label, &PAD_INPUT, elements, &[], &params, &args, workgroups))
}

/// For a padded convolution on the register-block kernel: a zero-bordered copy of its input,
/// the dispatch that fills it each pass (pushed onto `dispatches`), and `params` changed to read
/// it unpadded. `None` for a convolution without padding.
fn pad_input(
    b: &mut Builder,
    layer: &LayerPlan,
    input: &wgpu::Buffer,
    params: &mut Conv2dParams,
    dispatches: &mut Vec<Dispatch>,
) -> Result<Option<wgpu::Buffer>> {
    let pad = layer.pad;
    if pad == Pad::default() {
        return Ok(None);
    }
    let name = &layer.layer.name;
    let (height, width) = (layer.input.height, layer.input.width);
    let padded_height = height + pad.top + pad.bottom;
    let padded_width = width + pad.left + pad.right;
    let planes = layer.batch * layer.input.channels;
    let len = planes * padded_height * padded_width;
    let element = b.stored;
    b.check_binding(
        &format!("{name}'s padded input"),
        (len * element.bytes()) as u64,
    )?;
    let padded = b.scratch_of(&format!("{name} padded input"), len, element);
    dispatches.push(pad_planes(
        b,
        &format!("{name} pad input"),
        planes,
        (height, width),
        (padded_height, padded_width),
        (pad.top, pad.left),
        (1, 1),
        (input, &padded),
        (element, Variant::RegisterBlock),
    )?);
    params.in_height = u32_of(padded_height, "height")?;
    params.in_width = u32_of(padded_width, "width")?;
    params.pad_top = 0;
    params.pad_left = 0;
    Ok(Some(padded))
}

/// The dispatches of a conv layer's forward pass.
pub(crate) fn forward(
    b: &mut Builder,
    layer: &LayerPlan,
    params: &PackedWeights,
    input: &wgpu::Buffer,
    output: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let Packing::Conv { packed_out, .. } = params.packing else {
        return Err(Error::Internal(format!(
            "{}: a conv layer's weight is packed as a conv's",
            layer.layer.name
        )));
    };
    let choice = Choice::of(b, layer)?;
    let variant = choice.variant;
    let mut conv = Conv2dParams::of(layer, packed_out)?;
    let winograd = winograd::fits(b, &conv, choice.algorithm);
    b.note_choice(&layer.layer.name, choice.report(winograd));
    if winograd {
        let args = [input, &params.weights[0], &params.bias, output];
        let name = &layer.layer.name;
        let stored = b.stored;
        return winograd::convolution(b, variant, choice.algorithm, name, &conv, args, stored);
    }
    let mut dispatches = Vec::new();
    let padded = match variant {
        // The tiled kernel checks the bounds as it stages its tiles.
        Variant::WorkgroupTile => None,
        Variant::RegisterBlock => pad_input(b, layer, input, &mut conv, &mut dispatches)?,
    };
    let source = padded.as_ref().unwrap_or(input);
    let args = [source, &params.weights[0], &params.bias, output];
    let elements = Elements::both(b.stored);
    dispatches.push(variant.forward(b, &layer.layer.name, elements, &conv, args)?);
    Ok(dispatches)
}

/// The dispatches of a conv layer's backward pass: its fused ReLU's backward (in place on the
/// output gradient), the filter gradient in chunks of pixels (then the chunks summed), the bias
/// gradient where the layer has a bias, and the input gradient where one is wanted.
pub(crate) fn backward(
    b: &mut Builder,
    layer: &LayerPlan,
    buf: &BackwardBuffers,
    params: &PackedWeights,
    grads: Option<&PackedGrads>,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let Packing::Conv {
        groups,
        taps,
        packed_out,
        ..
    } = params.packing
    else {
        return Err(Error::Internal(format!(
            "{name}: a conv layer's weight is packed as a conv's"
        )));
    };
    let choice = Choice::of(b, layer)?;
    let mut dispatches = Vec::new();
    if let LayerKind::Conv2d { relu: true, .. } = layer.layer.kind {
        dispatches.push(elementwise::relu_backward(b, layer, buf)?);
    }
    if let Some(grads) = grads {
        let packing = (groups, taps, packed_out);
        dispatches.extend(parameter_gradients(b, layer, buf, packing, grads, choice)?);
    }
    if let Some(grad_input) = buf.grad_input {
        let weights = &params.weights[0];
        let (rotated, rotate) =
            rotated_weights(b, choice.variant, layer, weights, groups, packed_out)?;
        dispatches.push(rotate);
        dispatches.extend(input_gradient(
            b,
            choice,
            layer,
            buf.grad_output,
            &rotated,
            grad_input,
        )?);
    }
    Ok(dispatches)
}

/// The dispatches of a convolution's weight gradient (and bias gradient, where it has a bias),
/// from its input and its output gradient (through the ReLU mask already), in the packing of
/// its weights (`groups`, `taps` per group, `packed_out` channels).
fn parameter_gradients(
    b: &mut Builder,
    layer: &LayerPlan,
    buf: &BackwardBuffers,
    (groups, taps, packed_out): (usize, usize, usize),
    grads: &PackedGrads,
    choice: Choice,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let variant = choice.variant;
    let conv = Conv2dParams::of(layer, packed_out)?;
    let mut dispatches = if winograd::fits(b, &conv, choice.algorithm) {
        let args = [buf.input, buf.grad_output, &grads.weights[0]];
        winograd::filter_gradient(b, variant, choice.algorithm, name, &conv, args)?
    } else {
        let (transposed, transpose) =
            transpose_grad_output(b, variant, layer, buf.grad_output, groups, packed_out)?;
        let label = format!("{name} filter backward");
        // `taps` counts the reduction entries (input channel, kernel row, kernel column) of a
        // group.
        let args = [buf.input, &transposed, &grads.weights[0]];
        let mut dispatches = vec![transpose];
        let stored = b.stored;
        dispatches.extend(filter_sums(
            b,
            variant,
            &label,
            &conv,
            (taps, stored),
            args,
            &mut None,
        )?);
        dispatches
    };

    // A convolution without a bias (a batch norm follows it) has no bias gradient.
    if let LayerKind::Conv2d { bias: true, .. } = layer.layer.kind {
        dispatches.push(elementwise::bias_backward(
            b,
            layer,
            buf.grad_output,
            &grads.bias,
        )?);
    }
    Ok(dispatches)
}

/// The dispatches of the filter gradient of the convolution of `params` (`taps` reduction entries
/// per group): the sums over its output pixels in chunks of pixels, as many as fit one binding
/// and the dispatch limit, then the chunks added. `args` are the input (of `input_element`s),
/// the output gradient as [`transpose_grad_output`] lays it out, and the gradient in the packed
/// weights' layout.
/// `partial_sums` keeps the chunks' scratch for a caller that sums several batches of pixels in
/// turn (Winograd's chunks of tiles), so that they share one buffer.
fn filter_sums(
    b: &mut Builder,
    variant: Variant,
    label: &str,
    params: &Conv2dParams,
    (taps, input_element): (usize, Element),
    [input, transposed, gradient]: [&wgpu::Buffer; 3],
    partial_sums: &mut Option<wgpu::Buffer>,
) -> Result<Vec<Dispatch>> {
    let groups = params.groups as usize;
    let pixels = (params.batch * params.out_height * params.out_width) as usize;
    let packed_len = groups * taps * params.packed_out_per_group as usize;
    let max_chunks = ((b.max_binding / (packed_len as u64 * 4)) as usize)
        .min(b.ctx.limits().max_compute_workgroups_per_dimension as usize / groups)
        .max(1);
    let wanted = pixels.div_ceil(MIN_PIXELS_PER_CHUNK).clamp(1, max_chunks);
    let pixels_per_chunk = pixels.div_ceil(wanted);
    let chunks = pixels.div_ceil(pixels_per_chunk);
    let needed = chunks * packed_len;
    if chunks > 1
        && partial_sums
            .as_ref()
            .is_none_or(|p| p.size() < (needed * 4) as u64)
    {
        *partial_sums = Some(b.scratch(&format!("{label} partial sums"), needed));
    }
    let scratch = partial_sums.clone().filter(|_| chunks > 1);
    let partial = scratch.as_ref().unwrap_or(gradient);
    let params = Conv2dParams {
        pixels_per_chunk: u32_of(pixels_per_chunk, "pixels")?,
        ..*params
    };
    let args = [input, transposed, partial];
    let taps = (taps, input_element);
    let mut dispatches = vec![variant.filter(b, label, &params, taps, chunks, args)?];
    if let Some(scratch) = &scratch {
        let label = format!("{label} chunk sum");
        let params = SumChunksParams {
            len: u32_of(packed_len, "weights")?,
            chunks: u32_of(chunks, "chunks")?,
            ..Default::default()
        };
        let workgroups = b.grid_1d(&label, packed_len.div_ceil(4))?;
        let args = [scratch, gradient];
        dispatches.push(b.dispatch(&label, &SUM_CHUNKS, &params, &args, workgroups));
    }
    Ok(dispatches)
}

/// Invocations per row of the layout transposes (conv2d_transpose_weights,
/// conv2d_transpose_grad_output) for rows of `row` floats, by the layer's kernel shape: one for
/// register blocks (CPU adapters: the index divisions once per row), one per vec4 for workgroup
/// tiles (GPUs: rows alone are too few invocations, a 2048-channel 1x1 layer's weights are 512
/// rows, and one invocation's writes are a row from its neighbour's). The padded copies
/// (`conv2d_pad_input`) split their rows the same way.
fn transpose_parts(variant: Variant, row: usize) -> u32 {
    match variant {
        Variant::RegisterBlock => 1,
        Variant::WorkgroupTile => (row / 4) as u32,
    }
}

/// A conv layer's output gradient transposed for the filter gradient (see
/// conv2d_transpose_grad_output.wgsl), and the dispatch that makes it.
fn transpose_grad_output(
    b: &mut Builder,
    variant: Variant,
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
    let transposed = b.scratch(&format!("{name} transposed output gradient"), len);
    let params = TransposeGradOutputParams {
        len: u32_of(len, "output gradient size")?,
        out_plane: u32_of(out_plane, "output gradient size")?,
        out_channels: u32_of(layer.output.channels, "channels")?,
        groups: u32_of(groups, "groups")?,
        packed_out: u32_of(packed_out, "channels")?,
        parts: transpose_parts(variant, groups * packed_out),
        ..Default::default()
    };
    let label = format!("{name} output gradient transpose");
    let workgroups = b.grid_1d(&label, layer.batch * out_plane * params.parts as usize)?;
    let args = [grad_output, &transposed];
    let dispatch = b.dispatch(&label, &TRANSPOSE_GRAD_OUTPUT, &params, &args, workgroups);
    Ok((transposed, dispatch))
}

/// A conv layer's weights transposed and rotated for the input gradient
/// (conv2d_transpose_weights.wgsl), and the dispatch that makes them.
fn rotated_weights(
    b: &mut Builder,
    variant: Variant,
    layer: &LayerPlan,
    weights: &wgpu::Buffer,
    groups: usize,
    packed_out: usize,
) -> Result<(wgpu::Buffer, Dispatch)> {
    let name = &layer.layer.name;
    let in_per_group = layer.input.channels / groups;
    let out_per_group = layer.output.channels / groups;
    let packed_in = in_per_group.next_multiple_of(BLOCK);
    let LayerKind::Conv2d { window, .. } = layer.layer.kind else {
        return Err(Error::Internal(format!("{name} is not a convolution")));
    };
    let taps = window.height * window.width;
    let len = groups * out_per_group * taps * packed_in;
    b.check_binding(&format!("{name}'s rotated weights"), (len * 4) as u64)?;
    let rotated = b.scratch(&format!("{name} rotated weights"), len);
    let params = TransposeWeightsParams {
        len: u32_of(len, "weights")?,
        in_per_group: u32_of(in_per_group, "channels")?,
        out_per_group: u32_of(out_per_group, "channels")?,
        taps: u32_of(taps, "kernel")?,
        packed_out: u32_of(packed_out, "channels")?,
        packed_in: u32_of(packed_in, "channels")?,
        parts: transpose_parts(variant, packed_in),
        ..Default::default()
    };
    let label = format!("{name} weights rotate");
    let workgroups = b.grid_1d(&label, len / packed_in * params.parts as usize)?;
    let args = [weights, &rotated];
    let kernel = &TRANSPOSE_WEIGHTS;
    let dispatch = b.dispatch_reading_stored(&label, kernel, &[], &params, &args, workgroups);
    Ok((rotated, dispatch))
}

/// The dispatches of a conv layer's input gradient, a convolution of the output gradient with
/// the rotated weights (docs/kernels.md#strided-input-gradients):
///
/// - stride 1: a forward convolution (on the device's variant, or Winograd) of the output
///   gradient, zero-bordered to the full size (input + kernel - 1; a 1x1 convolution's is read
///   as it is);
/// - strided, on workgroup tiles (GPUs): the same, of the output gradient spread apart by the
///   stride (zeros between), which spends stride² times the multiply-adds on the tiled kernel's
///   speed;
/// - strided, on register blocks (CPU adapters), or where the spread copy exceeds a binding:
///   conv2d_backward_data, phase by phase, no multiply-add on a zero.
fn input_gradient(
    b: &mut Builder,
    choice: Choice,
    layer: &LayerPlan,
    grad_output: &wgpu::Buffer,
    rotated: &wgpu::Buffer,
    grad_input: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let variant = choice.variant;
    let LayerKind::Conv2d { window, groups, .. } = layer.layer.kind else {
        return Err(Error::Internal(format!("{name} is not a convolution")));
    };
    let (input, output) = (layer.input, layer.output);
    let packed_in = (input.channels / groups).next_multiple_of(BLOCK);
    let label = format!("{name} data backward");
    let (sy, sx) = (window.stride_height, window.stride_width);
    let strided = (sy, sx) != (1, 1);
    let padded_height = input.height + window.height - 1;
    let padded_width = input.width + window.width - 1;
    let spread_bytes = (layer.batch * output.channels * padded_height * padded_width * 4) as u64;
    if strided && (variant == Variant::RegisterBlock || spread_bytes > b.max_binding) {
        let conv = Conv2dParams::of(layer, packed_in)?;
        // Blocks of BLOCK pixels phase by phase (pixels sharing their position modulo the
        // stride).
        let grid_pixels = input.height.div_ceil(sy) * input.width.div_ceil(sx);
        let workgroups = b.grid_3d(
            &label,
            layer.batch * sy * sx * grid_pixels.div_ceil(BLOCK),
            packed_in / BLOCK,
            groups,
        )?;
        let args = [grad_output, rotated, grad_input];
        return Ok(vec![b.dispatch(
            &label,
            &BACKWARD_DATA,
            &conv,
            &args,
            workgroups,
        )]);
    }
    let pad = layer.pad;
    let (top, left) = (window.height - 1 - pad.top, window.width - 1 - pad.left);
    // The convolution from the output gradient to the input gradient: channels swapped, padded
    // by what the forward's padding leaves of the full size (input + kernel - 1), no bias
    // (zeros as created, never written: not shared scratch).
    let full = Conv2dParams {
        in_channels: u32_of(output.channels, "channels")?,
        in_height: u32_of(output.height, "height")?,
        in_width: u32_of(output.width, "width")?,
        out_channels: u32_of(input.channels, "channels")?,
        out_height: u32_of(input.height, "height")?,
        out_width: u32_of(input.width, "width")?,
        stride_height: 1,
        stride_width: 1,
        pad_top: u32_of(top, "padding")?,
        pad_left: u32_of(left, "padding")?,
        relu: 0,
        packed_out_per_group: u32_of(packed_in, "channels")?,
        ..Conv2dParams::of(layer, packed_in)?
    };
    let zero_bias = b.storage(
        &format!("{name} zero bias"),
        input.channels,
        Purpose::Scratch,
    );
    if !strided && winograd::fits(b, &full, choice.algorithm) {
        let args = [grad_output, rotated, &zero_bias, grad_input];
        let algorithm = choice.algorithm;
        return winograd::convolution(b, variant, algorithm, &label, &full, args, Element::F32);
    }
    let (padded, mut dispatches) = if !strided
        && (padded_height, padded_width, top, left) == (output.height, output.width, 0, 0)
    {
        // A 1x1 convolution without padding: the output gradient needs no border, and a copy
        // of it would cost a pass over memory.
        (grad_output.clone(), Vec::new())
    } else {
        let planes = layer.batch * output.channels;
        let len = planes * padded_height * padded_width;
        b.check_binding(
            &format!("{name}'s padded output gradient"),
            (len * 4) as u64,
        )?;
        let padded = b.scratch(&format!("{name} padded output gradient"), len);
        let pad = pad_planes(
            b,
            &format!("{name} pad output gradient"),
            planes,
            (output.height, output.width),
            (padded_height, padded_width),
            (top, left),
            (sy, sx),
            (grad_output, &padded),
            (Element::F32, variant),
        )?;
        (padded, vec![pad])
    };
    // The same convolution over the zero-bordered copy.
    let conv = Conv2dParams {
        in_height: u32_of(padded_height, "height")?,
        in_width: u32_of(padded_width, "width")?,
        pad_top: 0,
        pad_left: 0,
        ..full
    };
    let args = [&padded, rotated, &zero_bias, grad_input];
    dispatches.push(variant.forward(b, &label, Elements::F32, &conv, args)?);
    Ok(dispatches)
}
