//! L-BFGS on the GPU, as `torch.optim.LBFGS` takes its steps (no line search, f32), for the
//! image style transfer optimises. Every vector (the gradient, the direction, the history of
//! steps `s` and gradient changes `y`) and every scalar of the two-loop recursion stays on the
//! GPU; the host keeps only the history's order, for which it reads back one flag a step (whether
//! the last pair passed the curvature test `y.s > 1e-10`).
//!
//! One iteration, after the loss and gradient `g` at the image are evaluated:
//! 1. (from the second on) the new pair `y = g - g_prev`, `s = t d` goes into a spare slot and
//!    the curvature test decides whether it joins the history (evicting the oldest when full);
//! 2. the direction: `d = -g` and `t = min(1, 1/|g|_1) lr` the first time; then the two-loop
//!    recursion over the history (newest to oldest, `d *= h_diag`, oldest to newest) and `t = lr`;
//! 3. `g_prev = g`, and the image moves by `t d`, clamped to [0, 1] — unless `g . d >= -1e-9`
//!    (not a descent direction), where PyTorch ends the iteration before moving and so does this.
//!
//! PyTorch's other stopping tests (a gradient below `tolerance_grad`, a step or loss change below
//! `tolerance_change`, `max_eval`) end a `step()` call after the image moved; the next call goes on
//! from the same state with one more evaluation at the same image. One step here is one
//! evaluation and one iteration, always: those extra evaluations are not modelled.
//!
//! Every dispatch is recorded once, per history slot; a step encodes them in the history's
//! order. The history holds `history` pairs in `history + 1` slots: a new pair is written into
//! the spare one before the test says whether it replaces the oldest.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::gpu::builder::{Builder, Purpose};
use crate::gpu::kernel::{record_dispatches, Dispatch};
use crate::gpu::ops::lbfgs::{self as ops, Coefficient, ScalarOp, Scalars};
use crate::model::Dims;

/// L-BFGS's settings (PyTorch's defaults but the iteration count, which the caller drives).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LbfgsConfig {
    /// The step length's scale (PyTorch's `lr`, default 1).
    pub learning_rate: f32,
    /// Pairs of the history (PyTorch's `history_size`, default 100).
    pub history: usize,
}

/// The buffers the optimiser works on, which the style transfer owns.
pub(crate) struct LbfgsBuffers<'b> {
    pub grad: &'b wgpu::Buffer,
    pub normalization: &'b wgpu::Buffer,
    pub image: &'b wgpu::Buffer,
    pub input: &'b wgpu::Buffer,
}

/// One history slot's dispatches.
struct Slot {
    /// The first loop's step: `alpha = rho s.q`, `q -= alpha y`.
    newest_first: Vec<Dispatch>,
    /// The second loop's step: `beta = rho y.r`, `r += (alpha - beta) s`.
    oldest_first: Vec<Dispatch>,
    /// A new pair written into this slot, and its curvature test.
    pair: Vec<Dispatch>,
}

/// L-BFGS's state and dispatches.
pub(crate) struct Lbfgs {
    slots: Vec<Slot>,
    /// `|g|_1`, the first step's length, `d = -g`.
    first: Vec<Dispatch>,
    /// `t = lr`, then `d = -g` (the two-loop's `q`).
    start: Vec<Dispatch>,
    /// `d *= h_diag`, between the two loops.
    scale: Dispatch,
    /// `g . d` and the step the image takes, `g_prev = g`, then the image update.
    finish: Vec<Dispatch>,
    /// The history's slots, oldest first.
    history: RefCell<VecDeque<usize>>,
    /// The slot a new pair is written into.
    spare: Cell<usize>,
    capacity: usize,
    scalars: wgpu::Buffer,
    layout: Scalars,
}

impl Lbfgs {
    /// Allocates the history and records every dispatch, for an image of `dims`.
    pub fn new(
        b: &mut Builder,
        dims: Dims,
        config: LbfgsConfig,
        buffers: &LbfgsBuffers,
    ) -> Result<Self> {
        if config.history == 0 {
            return Err(Error::InvalidArgument(
                "L-BFGS needs a history of at least 1 pair".into(),
            ));
        }
        let len = dims.len();
        let slot_count = config.history + 1;
        let layout = Scalars { slots: slot_count };
        let scalars = b.storage("lbfgs scalars", layout.len(), Purpose::Scratch);
        let (_, count) = crate::gpu::ops::chunks(b, len);
        let partials = b.storage("lbfgs partial sums", 2 * count, Purpose::Scratch);
        let direction = b.storage("lbfgs direction", len, Purpose::Scratch);
        let previous = b.storage("lbfgs previous gradient", len, Purpose::Scratch);
        let lr = config.learning_rate;
        let g = buffers.grad;
        let scalar = |b: &mut Builder, label: &str, op, slot| {
            ops::scalar_step(
                b,
                label,
                (op, slot, layout),
                (&partials, count),
                (&scalars, lr),
            )
        };
        let negate_gradient = |b: &mut Builder| {
            let label = "lbfgs direction";
            let b_coefficient = Coefficient::constant(-1.0);
            ops::axpy(
                b,
                label,
                len,
                (Coefficient::ZERO, &direction),
                (b_coefficient, g),
                &scalars,
            )
        };
        let first = vec![
            ops::dot(b, "lbfgs gradient norm", len, (g, g, true), (&partials, 0))?,
            scalar(b, "lbfgs first step", ScalarOp::FirstStep, 0)?,
            negate_gradient(b)?,
        ];
        let start = vec![
            scalar(b, "lbfgs step", ScalarOp::SetStep, 0)?,
            negate_gradient(b)?,
        ];
        let scale = ops::axpy(
            b,
            "lbfgs initial hessian",
            len,
            (Coefficient::scalar(1.0, layout.h_diag()), &direction),
            (Coefficient::ZERO, g),
            &scalars,
        )?;
        let finish = vec![
            ops::dot(
                b,
                "lbfgs descent",
                len,
                (g, &direction, false),
                (&partials, 0),
            )?,
            scalar(b, "lbfgs descent", ScalarOp::Descent, 0)?,
            ops::axpy(
                b,
                "lbfgs previous gradient",
                len,
                (Coefficient::ZERO, &previous),
                (Coefficient::ONE, g),
                &scalars,
            )?,
            ops::image_update(
                b,
                "lbfgs image update",
                dims,
                (&direction, &scalars, layout.step_taken()),
                buffers.normalization,
                (buffers.image, buffers.input),
            )?,
        ];
        let mut slots = Vec::with_capacity(slot_count);
        for j in 0..slot_count {
            let s = b.storage(&format!("lbfgs s[{j}]"), len, Purpose::Scratch);
            let y = b.storage(&format!("lbfgs y[{j}]"), len, Purpose::Scratch);
            let label = format!("lbfgs history {j}");
            let newest_first = vec![
                ops::dot(b, &label, len, (&s, &direction, false), (&partials, 0))?,
                scalar(b, &label, ScalarOp::Alpha, j)?,
                ops::axpy(
                    b,
                    &label,
                    len,
                    (Coefficient::ONE, &direction),
                    (Coefficient::scalar(-1.0, layout.alpha(j)), &y),
                    &scalars,
                )?,
            ];
            let oldest_first = vec![
                ops::dot(b, &label, len, (&y, &direction, false), (&partials, 0))?,
                scalar(b, &label, ScalarOp::Coef, j)?,
                ops::axpy(
                    b,
                    &label,
                    len,
                    (Coefficient::ONE, &direction),
                    (Coefficient::scalar(1.0, layout.coef()), &s),
                    &scalars,
                )?,
            ];
            let pair = vec![
                ops::axpy(
                    b,
                    &label,
                    len,
                    (Coefficient::ZERO, &y),
                    (Coefficient::ONE, g),
                    &scalars,
                )?,
                ops::axpy(
                    b,
                    &label,
                    len,
                    (Coefficient::ONE, &y),
                    (Coefficient::constant(-1.0), &previous),
                    &scalars,
                )?,
                ops::axpy(
                    b,
                    &label,
                    len,
                    (Coefficient::ZERO, &s),
                    (Coefficient::scalar(1.0, layout.step()), &direction),
                    &scalars,
                )?,
                ops::dot(b, &label, len, (&y, &s, false), (&partials, 0))?,
                ops::dot(b, &label, len, (&y, &y, false), (&partials, count))?,
                scalar(b, &label, ScalarOp::Curvature, j)?,
            ];
            slots.push(Slot {
                newest_first,
                oldest_first,
                pair,
            });
        }
        Ok(Lbfgs {
            slots,
            first,
            start,
            scale,
            finish,
            history: RefCell::new(VecDeque::new()),
            spare: Cell::new(0),
            capacity: config.history,
            scalars,
            layout,
        })
    }

    /// What runs right after the loss and gradient are evaluated: the new pair and its
    /// curvature test (nothing on the `first` iteration).
    pub fn after_evaluation(&self, first: bool) -> &[Dispatch] {
        match first {
            true => &[],
            false => &self.slots[self.spare.get()].pair,
        }
    }

    /// Copies the curvature test's flag (1.0: the pair entered the history) to `offset` in
    /// `staging`, for reading back after the evaluation.
    pub fn encode_flag_copy(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        staging: &wgpu::Buffer,
        offset: u64,
    ) {
        let flag = (self.layout.accepted() * 4) as u64;
        encoder.copy_buffer_to_buffer(&self.scalars, flag, staging, offset, 4);
    }

    /// Records the rest of the iteration into `pass`, given the curvature test's result
    /// (ignored on the `first` iteration): the direction and the image update, over the history
    /// as it will stand once [`Lbfgs::commit`] takes the result (the new pair newest, the
    /// oldest evicted when the history is full).
    pub fn encode_direction_and_update(
        &self,
        pass: &mut wgpu::ComputePass,
        first: bool,
        accepted: bool,
    ) {
        let record = |pass: &mut wgpu::ComputePass, dispatches: &[Dispatch]| {
            record_dispatches(pass, dispatches)
        };
        if first {
            record(pass, &self.first);
        } else {
            let history = self.history.borrow();
            let new_pair = accepted.then_some(self.spare.get());
            let evicted = usize::from(new_pair.is_some() && history.len() == self.capacity);
            let order = || history.iter().copied().skip(evicted).chain(new_pair);
            record(pass, &self.start);
            for j in order().rev() {
                record(pass, &self.slots[j].newest_first);
            }
            record(pass, std::slice::from_ref(&self.scale));
            for j in order() {
                record(pass, &self.slots[j].oldest_first);
            }
        }
        record(pass, &self.finish);
    }

    /// Takes the curvature test's result into the history once the step's work is submitted:
    /// an accepted pair becomes the newest, evicting the oldest when the history is full, whose
    /// slot becomes the spare.
    pub fn commit(&self, first: bool, accepted: bool) {
        if first || !accepted {
            return;
        }
        let mut history = self.history.borrow_mut();
        history.push_back(self.spare.get());
        let spare = match history.len() > self.capacity {
            true => history.pop_front().expect("the history is not empty"),
            // Slots fill in order until the history is full.
            false => history.len(),
        };
        self.spare.set(spare);
    }
}
