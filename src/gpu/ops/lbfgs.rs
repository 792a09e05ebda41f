//! L-BFGS's ops for style transfer (the optimiser itself: `gpu::lbfgs`): dot products of
//! image-sized vectors in chunks, `out = a out + b x` with coefficients from scalars kept on the
//! GPU, the scalar steps of the two-loop recursion, and the image update.

use crate::error::Result;
use crate::gpu::builder::{u32_of, Builder};
use crate::gpu::kernel::{kernel_params, Dispatch, KernelDef};
use crate::gpu::ops::chunks;
use crate::model::Dims;
use crate::shaders;

kernel_params! {
    /// dot's parameters.
    pub(crate) struct DotParams {
        len: u32,
        chunk: u32,
        offset: u32,
        absolute: u32,
    }
}

kernel_params! {
    /// axpy's parameters.
    pub(crate) struct AxpyParams {
        len: u32,
        a_scalar: u32,
        b_scalar: u32,
        _pad: u32,
        a_constant: f32,
        b_constant: f32,
        _pad1: u32,
        _pad2: u32,
    }
}

kernel_params! {
    /// lbfgs_scalars's parameters.
    pub(crate) struct LbfgsScalarsParams {
        op: u32,
        slot: u32,
        slots: u32,
        count: u32,
        learning_rate: f32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

kernel_params! {
    /// image_update's parameters.
    pub(crate) struct ImageUpdateParams {
        len: u32,
        plane: u32,
        step: u32,
        _pad: u32,
    }
}

const DOT: KernelDef<DotParams> = KernelDef::reduction(shaders::DOT);
const AXPY: KernelDef<AxpyParams> = KernelDef::flat(shaders::AXPY);
const LBFGS_SCALARS: KernelDef<LbfgsScalarsParams> = KernelDef::reduction(shaders::LBFGS_SCALARS);
const IMAGE_UPDATE: KernelDef<ImageUpdateParams> = KernelDef::flat(shaders::IMAGE_UPDATE);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    vec![
        DOT.contract(),
        AXPY.contract(),
        LBFGS_SCALARS.contract(),
        IMAGE_UPDATE.contract(),
    ]
}

/// Where each of L-BFGS's scalars lies in its buffer, for `slots` history slots: `rho[slots]`,
/// `alpha[slots]`, then the step length, the initial Hessian's diagonal, the two-loop's current
/// coefficient, whether the last pair entered the history (1.0 or 0.0), and the step the image
/// takes (the step length, or 0 where the direction does not descend).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalars {
    pub slots: usize,
}

impl Scalars {
    pub fn alpha(self, slot: usize) -> usize {
        self.slots + slot
    }
    pub fn step(self) -> usize {
        2 * self.slots
    }
    pub fn h_diag(self) -> usize {
        2 * self.slots + 1
    }
    pub fn coef(self) -> usize {
        2 * self.slots + 2
    }
    pub fn accepted(self) -> usize {
        2 * self.slots + 3
    }
    pub fn step_taken(self) -> usize {
        2 * self.slots + 4
    }
    pub fn len(self) -> usize {
        2 * self.slots + 5
    }
}

/// A scalar step of `lbfgs_scalars.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScalarOp {
    /// `alpha[slot] = rho[slot] * sum`.
    Alpha,
    /// `coef = alpha[slot] - rho[slot] * sum`.
    Coef,
    /// The curvature test of the pair in `slot` (sums of `y.s` and then `y.y`).
    Curvature,
    /// The first iteration's step length from the gradient's L1 norm, and the initial
    /// Hessian's diagonal 1.
    FirstStep,
    /// The step length of every later iteration, the learning rate.
    SetStep,
    /// The step the image takes: the step length where `g . d` (the sum) is below -1e-9, else 0.
    Descent,
}

/// The partial sums of `a . b` (or of `|a|`, with `absolute`: `b` is then not read) over `len`
/// elements into `partials[offset..]`.
pub(crate) fn dot(
    b: &mut Builder,
    label: &str,
    len: usize,
    (x, y, absolute): (&wgpu::Buffer, &wgpu::Buffer, bool),
    (partials, offset): (&wgpu::Buffer, usize),
) -> Result<Dispatch> {
    let (chunk, count) = chunks(b, len);
    let params = DotParams {
        len: u32_of(len, "elements")?,
        chunk: u32_of(chunk, "chunk")?,
        offset: u32_of(offset, "offset")?,
        absolute: u32::from(absolute),
    };
    let workgroups = b.workgroups(label, [count, 1, 1])?;
    Ok(b.dispatch(label, &DOT, &params, &[x, y, partials], workgroups))
}

/// A coefficient of [`axpy`]: a constant, times one of the scalars where given.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Coefficient {
    pub constant: f32,
    pub scalar: Option<usize>,
}

impl Coefficient {
    pub const ZERO: Coefficient = Coefficient::constant(0.0);
    pub const ONE: Coefficient = Coefficient::constant(1.0);

    pub const fn constant(constant: f32) -> Self {
        Coefficient {
            constant,
            scalar: None,
        }
    }

    pub const fn scalar(constant: f32, scalar: usize) -> Self {
        Coefficient {
            constant,
            scalar: Some(scalar),
        }
    }

    fn index(self) -> Result<u32> {
        match self.scalar {
            // axpy.wgsl's NONE.
            None => Ok(u32::MAX),
            Some(i) => u32_of(i, "scalar index"),
        }
    }
}

/// `out = a out + b x` over `len` elements (`out` not read where `a` is zero).
pub(crate) fn axpy(
    b: &mut Builder,
    label: &str,
    len: usize,
    (a, out): (Coefficient, &wgpu::Buffer),
    (coefficient, x): (Coefficient, &wgpu::Buffer),
    scalars: &wgpu::Buffer,
) -> Result<Dispatch> {
    let params = AxpyParams {
        len: u32_of(len, "elements")?,
        a_scalar: a.index()?,
        b_scalar: coefficient.index()?,
        a_constant: a.constant,
        b_constant: coefficient.constant,
        ..Default::default()
    };
    let workgroups = b.grid_1d(label, len)?;
    Ok(b.dispatch(label, &AXPY, &params, &[x, scalars, out], workgroups))
}

/// A scalar step on `slot` from `count` partial sums (twice `count` for the curvature test).
pub(crate) fn scalar_step(
    b: &mut Builder,
    label: &str,
    (op, slot, layout): (ScalarOp, usize, Scalars),
    (partials, count): (&wgpu::Buffer, usize),
    (scalars, learning_rate): (&wgpu::Buffer, f32),
) -> Result<Dispatch> {
    let params = LbfgsScalarsParams {
        op: match op {
            ScalarOp::Alpha => 0,
            ScalarOp::Coef => 1,
            ScalarOp::Curvature => 2,
            ScalarOp::FirstStep => 3,
            ScalarOp::SetStep => 4,
            ScalarOp::Descent => 5,
        },
        slot: u32_of(slot, "slot")?,
        slots: u32_of(layout.slots, "slots")?,
        count: u32_of(count, "partial sums")?,
        learning_rate,
        ..Default::default()
    };
    Ok(b.dispatch(
        label,
        &LBFGS_SCALARS,
        &params,
        &[partials, scalars],
        [1, 1, 1],
    ))
}

/// `image = clamp(image + t direction, 0, 1)`, normalised into `input`; `t` is
/// `scalars[step]`.
pub(crate) fn image_update(
    b: &mut Builder,
    label: &str,
    dims: Dims,
    (direction, scalars, step): (&wgpu::Buffer, &wgpu::Buffer, usize),
    normalization: &wgpu::Buffer,
    (image, input): (&wgpu::Buffer, &wgpu::Buffer),
) -> Result<Dispatch> {
    let params = ImageUpdateParams {
        len: u32_of(dims.len(), "image")?,
        plane: u32_of(dims.height * dims.width, "image plane")?,
        step: u32_of(step, "scalar index")?,
        _pad: 0,
    };
    let workgroups = b.grid_1d(label, dims.len())?;
    let args = [direction, scalars, normalization, image, input];
    Ok(b.dispatch(label, &IMAGE_UPDATE, &params, &args, workgroups))
}
