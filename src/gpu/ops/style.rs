//! Style transfer's ops (see [`crate::style`] for the objective): Gram matrices and their
//! backward as strided matrix products on the fully connected layers' `matmul` kernels, the
//! content and style losses' squared differences reduced in chunks, the image's gradient with
//! total variation, and the Adam step on the image.

use crate::error::Result;
use crate::gpu::builder::{u32_of, Builder, Purpose};
use crate::gpu::kernel::{kernel_params, Dispatch, KernelDef};
use crate::gpu::ops::chunks;
use crate::gpu::ops::linear::{matmul, MatmulParams};
use crate::model::Dims;
use crate::shaders::{self, Element};

kernel_params! {
    /// squared_difference's parameters.
    pub(crate) struct SquaredDifferenceParams {
        len: u32,
        chunk: u32,
        a_scale: f32,
        b_scale: f32,
        gradient_scale: f32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

kernel_params! {
    /// sum_to_loss's parameters.
    pub(crate) struct SumToLossParams {
        count: u32,
        slot: u32,
        weight: f32,
        _pad: u32,
    }
}

kernel_params! {
    /// image_gradient's parameters.
    pub(crate) struct ImageGradientParams {
        channels: u32,
        height: u32,
        width: u32,
        chunk: u32,
        tv_weight: f32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

kernel_params! {
    /// adam's parameters (the per-step scales are in a buffer the host writes).
    pub(crate) struct AdamParams {
        len: u32,
        plane: u32,
        beta1: f32,
        beta2: f32,
        epsilon: f32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

const SQUARED_DIFFERENCE: KernelDef<SquaredDifferenceParams> =
    KernelDef::reduction(shaders::SQUARED_DIFFERENCE);
const SUM_TO_LOSS: KernelDef<SumToLossParams> = KernelDef::reduction(shaders::SUM_TO_LOSS);
const IMAGE_GRADIENT: KernelDef<ImageGradientParams> =
    KernelDef::reduction(shaders::IMAGE_GRADIENT);
const ADAM: KernelDef<AdamParams> = KernelDef::flat(shaders::ADAM);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    vec![
        SQUARED_DIFFERENCE.contract(),
        SUM_TO_LOSS.contract(),
        IMAGE_GRADIENT.contract(),
        ADAM.contract(),
    ]
}

/// A chunked reduction over `len` elements: its dispatch, the buffer of its partial sums, and
/// how many there are (for [`sum_to_loss`]).
pub(crate) struct Reduction {
    pub dispatch: Dispatch,
    pub partials: wgpu::Buffer,
    pub count: usize,
}

/// `c = F F^T` for features `[channels][plane]` (unnormalised: the losses divide by
/// `channels * plane`), `[channels][channels]` into `gram`.
pub(crate) fn gram(
    b: &mut Builder,
    label: &str,
    features: &wgpu::Buffer,
    (channels, plane): (usize, usize),
    gram: &wgpu::Buffer,
) -> Result<Dispatch> {
    let (c, p) = (u32_of(channels, "channels")?, u32_of(plane, "plane")?);
    let product = MatmulParams {
        m: c,
        n: c,
        k: p,
        accumulate: 0,
        a_offset: 0,
        a_row_stride: p,
        a_col_stride: 1,
        // b[k, n] = F[n, k]: F read transposed in place.
        b_offset: 0,
        b_row_stride: 1,
        b_col_stride: p,
        c_row_stride: c,
        c_col_stride: 1,
    };
    matmul(b, label, &product, Element::F32, [features, features, gram])
}

/// The features' gradient of a style loss, `grad (+)= D F` for `D` (`[channels][channels]`,
/// symmetric, already scaled by [`squared_difference`]) and features `[channels][plane]`;
/// `accumulate` adds to what the gradient buffer holds (another loss at the same layer).
pub(crate) fn gram_backward(
    b: &mut Builder,
    label: &str,
    (difference, features): (&wgpu::Buffer, &wgpu::Buffer),
    (channels, plane): (usize, usize),
    (grad, accumulate): (&wgpu::Buffer, bool),
) -> Result<Dispatch> {
    let (c, p) = (u32_of(channels, "channels")?, u32_of(plane, "plane")?);
    let product = MatmulParams {
        m: c,
        n: p,
        k: c,
        accumulate: u32::from(accumulate),
        a_offset: 0,
        a_row_stride: c,
        a_col_stride: 1,
        b_offset: 0,
        b_row_stride: p,
        b_col_stride: 1,
        c_row_stride: p,
        c_col_stride: 1,
    };
    matmul(
        b,
        label,
        &product,
        Element::F32,
        [difference, features, grad],
    )
}

/// `d = a_scale a - b_scale b` over `len` elements: `gradient_scale d` into `difference`, and
/// the chunks' sums of `d^2`.
pub(crate) fn squared_difference(
    b: &mut Builder,
    label: &str,
    len: usize,
    (a, a_scale): (&wgpu::Buffer, f32),
    (target, b_scale): (&wgpu::Buffer, f32),
    (difference, gradient_scale): (&wgpu::Buffer, f32),
) -> Result<Reduction> {
    let (chunk, count) = chunks(b, len);
    let params = SquaredDifferenceParams {
        len: u32_of(len, "elements")?,
        chunk: u32_of(chunk, "chunk")?,
        a_scale,
        b_scale,
        gradient_scale,
        ..Default::default()
    };
    let partials = b.storage(&format!("{label} partial sums"), count, Purpose::Scratch);
    let workgroups = b.workgroups(label, [count, 1, 1])?;
    let args = [a, target, difference, &partials];
    let dispatch = b.dispatch(label, &SQUARED_DIFFERENCE, &params, &args, workgroups);
    Ok(Reduction {
        dispatch,
        partials,
        count,
    })
}

/// `losses[slot] = weight * sum of the reduction's partial sums`.
pub(crate) fn sum_to_loss(
    b: &mut Builder,
    label: &str,
    reduction: &Reduction,
    (losses, slot): (&wgpu::Buffer, usize),
    weight: f32,
) -> Result<Dispatch> {
    let params = SumToLossParams {
        count: u32_of(reduction.count, "partial sums")?,
        slot: u32_of(slot, "loss slot")?,
        weight,
        _pad: 0,
    };
    let args = [&reduction.partials, losses];
    Ok(b.dispatch(label, &SUM_TO_LOSS, &params, &args, [1, 1, 1]))
}

/// The image's gradient (the network input's through the normalisation, plus `tv_weight` times
/// total variation's) into `grad`, and total variation's chunk sums.
pub(crate) fn image_gradient(
    b: &mut Builder,
    label: &str,
    (dims, tv_weight): (Dims, f32),
    (image, normalization, input_grad): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
    grad: &wgpu::Buffer,
) -> Result<Reduction> {
    let (chunk, count) = chunks(b, dims.len());
    let params = ImageGradientParams {
        channels: u32_of(dims.channels, "channels")?,
        height: u32_of(dims.height, "height")?,
        width: u32_of(dims.width, "width")?,
        chunk: u32_of(chunk, "chunk")?,
        tv_weight,
        ..Default::default()
    };
    let partials = b.storage(&format!("{label} partial sums"), count, Purpose::Scratch);
    let workgroups = b.workgroups(label, [count, 1, 1])?;
    let args = [image, normalization, input_grad, grad, &partials];
    let dispatch = b.dispatch(label, &IMAGE_GRADIENT, &params, &args, workgroups);
    Ok(Reduction {
        dispatch,
        partials,
        count,
    })
}

/// Adam's settings (PyTorch's defaults but the learning rate).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// The step's scale, in the image's [0, 1] units.
    pub learning_rate: f32,
    /// The first moment's decay per step.
    pub beta1: f32,
    /// The second moment's decay per step.
    pub beta2: f32,
    /// Added to the second moment's root.
    pub epsilon: f32,
}

/// The buffers one Adam step on an image reads and writes.
pub(crate) struct AdamBuffers<'b> {
    pub grad: &'b wgpu::Buffer,
    /// `[lr / (1 - beta1^t), sqrt(1 - beta2^t)]`, written by the host before each step.
    pub step_scales: &'b wgpu::Buffer,
    pub normalization: &'b wgpu::Buffer,
    /// `[2][len]`: the first moments, then the second.
    pub moments: &'b wgpu::Buffer,
    pub image: &'b wgpu::Buffer,
    /// The network's input, written normalised from the updated image.
    pub input: &'b wgpu::Buffer,
}

/// One Adam step on an image of `dims`, clamped to [0, 1], normalised into the network's input.
pub(crate) fn adam(
    b: &mut Builder,
    label: &str,
    dims: Dims,
    config: AdamConfig,
    buffers: &AdamBuffers,
) -> Result<Dispatch> {
    let params = AdamParams {
        len: u32_of(dims.len(), "image")?,
        plane: u32_of(dims.height * dims.width, "image plane")?,
        beta1: config.beta1,
        beta2: config.beta2,
        epsilon: config.epsilon,
        ..Default::default()
    };
    let workgroups = b.grid_1d(label, dims.len())?;
    let args = [
        buffers.grad,
        buffers.step_scales,
        buffers.normalization,
        buffers.moments,
        buffers.image,
        buffers.input,
    ];
    Ok(b.dispatch(label, &ADAM, &params, &args, workgroups))
}
