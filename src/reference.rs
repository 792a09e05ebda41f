//! The CPU reference: every op, forward and backward, plainly, on NCHW slices. This is the
//! specification the GPU kernels are checked against, so it favours being obviously right over
//! being fast. Every op is generic over the float type: f32 to compare with the GPU bit for bit
//! in spirit, f64 as the exact answer that both are measured against (the numerical note in
//! docs/networks.md, 'The seed': f32 frameworks disagree by ~0.6% on conv1's and conv2's weight
//! gradients, so f32 alone cannot be the judge). The one concession to speed is the matrix product,
//! done by the `matrixmultiply` crate (convolution as an explicit im2col followed by that product).

use std::fmt::Debug;
use std::iter::Sum;

use crate::error::{Error, Result};
use crate::model::{Dims, LayerKind, LayerPlan, Pad, Source, Window};
use crate::weights::Weights;

/// The error for an op called with arguments that do not fit together.
fn invalid(op: &str, why: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{op}: {why}"))
}

/// Fails unless `what` holds `expected` values.
fn check_len(op: &str, what: &str, len: usize, expected: usize) -> Result<()> {
    if len == expected {
        Ok(())
    } else {
        Err(invalid(
            op,
            format!("{what} holds {len} values, expected {expected}"),
        ))
    }
}

/// A float type the reference runs in: f32 or f64.
pub trait Real: num_traits::Float + Sum + Default + Debug + Send + Sync + 'static {
    /// Converts from the f32 the files and the GPU use.
    fn from_f32(v: f32) -> Self;
    /// Converts to f32 for comparison with the GPU.
    fn to_f32(self) -> f32;
    /// `c = (accumulate ? c : 0) + a * b` through matrixmultiply, with (row, column) strides.
    ///
    /// # Safety
    /// Every index the strides reach must lie inside the slices.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        a_strides: (isize, isize),
        b: *const Self,
        b_strides: (isize, isize),
        c: *mut Self,
        c_strides: (isize, isize),
        accumulate: bool,
    );
}

macro_rules! real {
    ($t:ty, $gemm:path) => {
        impl Real for $t {
            fn from_f32(v: f32) -> Self {
                v as $t
            }
            fn to_f32(self) -> f32 {
                self as f32
            }
            unsafe fn gemm(
                m: usize,
                k: usize,
                n: usize,
                a: *const Self,
                a_strides: (isize, isize),
                b: *const Self,
                b_strides: (isize, isize),
                c: *mut Self,
                c_strides: (isize, isize),
                accumulate: bool,
            ) {
                let beta = if accumulate { 1.0 } else { 0.0 };
                // SAFETY: the caller guarantees the strides stay inside the slices.
                unsafe {
                    $gemm(
                        m,
                        k,
                        n,
                        1.0,
                        a,
                        a_strides.0,
                        a_strides.1,
                        b,
                        b_strides.0,
                        b_strides.1,
                        beta,
                        c,
                        c_strides.0,
                        c_strides.1,
                    )
                }
            }
        }
    };
}
real!(f32, matrixmultiply::sgemm);
real!(f64, matrixmultiply::dgemm);

/// A matrix operand: a slice read through (row, column) strides.
struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    strides: (usize, usize),
}

impl<'a, T> Mat<'a, T> {
    /// A dense row-major matrix.
    fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            strides: (cols, 1),
        }
    }

    /// The transpose of a dense row-major `rows x cols` matrix.
    fn transposed(data: &'a [T], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows: cols,
            cols: rows,
            strides: (1, cols),
        }
    }

    fn last_index(&self) -> usize {
        (self.rows - 1) * self.strides.0 + (self.cols - 1) * self.strides.1
    }
}

/// `c = (accumulate ? c : 0) + a * b`, c dense row-major. Every caller has checked its slices'
/// lengths against the shapes first; the asserts guard the unsafe product, not the input.
fn matmul<T: Real>(a: &Mat<T>, b: &Mat<T>, c: &mut [T], accumulate: bool) {
    assert_eq!(a.cols, b.rows);
    if a.rows == 0 || b.cols == 0 || a.cols == 0 {
        return;
    }
    assert!(a.last_index() < a.data.len() && b.last_index() < b.data.len());
    assert!(c.len() >= a.rows * b.cols);
    let s = |(r, c): (usize, usize)| (r as isize, c as isize);
    // SAFETY: the asserts above keep every strided index inside the slices.
    unsafe {
        T::gemm(
            a.rows,
            a.cols,
            b.cols,
            a.data.as_ptr(),
            s(a.strides),
            b.data.as_ptr(),
            s(b.strides),
            c.as_mut_ptr(),
            (b.cols as isize, 1),
            accumulate,
        );
    }
}

/// What a convolution needs to know besides its tensors.
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    /// Images in the batch.
    pub batch: usize,
    /// Input dimensions per image.
    pub input: Dims,
    /// Output dimensions per image.
    pub output: Dims,
    /// Kernel size and stride (its padding rule is already resolved into `pad`).
    pub window: Window,
    /// Padding of each side.
    pub pad: Pad,
    /// Channel groups; they must divide both channel counts.
    pub groups: usize,
    /// ReLU applied to the output.
    pub relu: bool,
}

impl ConvSpec {
    /// The convolution of a planned conv layer.
    pub fn of(plan: &LayerPlan) -> Option<Self> {
        match plan.layer.kind {
            LayerKind::Conv2d {
                window,
                groups,
                relu,
                ..
            } => Some(ConvSpec {
                batch: plan.batch,
                input: plan.input,
                output: plan.output,
                window,
                pad: plan.pad,
                groups,
                relu,
            }),
            _ => None,
        }
    }

    /// Fails unless the groups divide both channel counts.
    fn check(&self, op: &str) -> Result<()> {
        if self.groups == 0
            || !self.input.channels.is_multiple_of(self.groups)
            || !self.output.channels.is_multiple_of(self.groups)
        {
            return Err(invalid(
                op,
                format!(
                    "{} input and {} output channels do not divide into {} groups",
                    self.input.channels, self.output.channels, self.groups
                ),
            ));
        }
        Ok(())
    }

    fn in_per_group(&self) -> usize {
        self.input.channels / self.groups
    }

    fn out_per_group(&self) -> usize {
        self.output.channels / self.groups
    }

    /// Reduction length of one output: in/groups x kh x kw.
    fn taps(&self) -> usize {
        self.in_per_group() * self.window.height * self.window.width
    }

    fn out_plane(&self) -> usize {
        self.output.height * self.output.width
    }

    /// Calls `f(row, out_pixel, in_index)` for every im2col entry of `group` that falls inside the
    /// input (padding taps are skipped): row = (c, ky, kx), in_index into one image.
    fn for_each_tap(&self, group: usize, mut f: impl FnMut(usize, usize, usize)) {
        let (h, w) = (self.input.height as isize, self.input.width as isize);
        let (oh, ow) = (self.output.height, self.output.width);
        let win = &self.window;
        let mut row = 0;
        for c in 0..self.in_per_group() {
            let plane = (group * self.in_per_group() + c) * self.input.height * self.input.width;
            for ky in 0..win.height {
                for kx in 0..win.width {
                    for y in 0..oh {
                        let iy = (y * win.stride_height + ky) as isize - self.pad.top as isize;
                        if iy < 0 || iy >= h {
                            continue;
                        }
                        for x in 0..ow {
                            let ix = (x * win.stride_width + kx) as isize - self.pad.left as isize;
                            if ix >= 0 && ix < w {
                                f(row, y * ow + x, plane + (iy * w + ix) as usize);
                            }
                        }
                    }
                    row += 1;
                }
            }
        }
    }

    /// The im2col matrix of one image and group: `[taps, out_h * out_w]`, zero in the padding.
    fn im2col<T: Real>(&self, image: &[T], group: usize) -> Vec<T> {
        let plane = self.out_plane();
        let mut columns = vec![T::zero(); self.taps() * plane];
        self.for_each_tap(group, |row, pixel, at| {
            columns[row * plane + pixel] = image[at]
        });
        columns
    }

    /// Adds an im2col-shaped gradient back into one image's input gradient.
    fn col2im<T: Real>(&self, columns: &[T], group: usize, image: &mut [T]) {
        let plane = self.out_plane();
        self.for_each_tap(group, |row, pixel, at| {
            image[at] = image[at] + columns[row * plane + pixel]
        });
    }
}

/// 2-D convolution with bias and optional ReLU. `weight` is `[out, in/groups, kh, kw]`. Fails
/// when the groups do not divide the channels or a slice's length does not fit `spec`.
pub fn conv2d_forward<T: Real>(
    input: &[T],
    weight: &[T],
    bias: &[T],
    spec: &ConvSpec,
) -> Result<Vec<T>> {
    const OP: &str = "conv2d_forward";
    spec.check(OP)?;
    let (taps, plane, opg) = (spec.taps(), spec.out_plane(), spec.out_per_group());
    check_len(OP, "input", input.len(), spec.batch * spec.input.len())?;
    check_len(OP, "weight", weight.len(), spec.output.channels * taps)?;
    check_len(OP, "bias", bias.len(), spec.output.channels)?;
    let mut output = vec![T::zero(); spec.batch * spec.output.len()];
    for n in 0..spec.batch {
        let image = &input[n * spec.input.len()..][..spec.input.len()];
        for g in 0..spec.groups {
            let columns = spec.im2col(image, g);
            let w = Mat::rows(&weight[g * opg * taps..][..opg * taps], opg, taps);
            let out = &mut output[(n * spec.output.channels + g * opg) * plane..][..opg * plane];
            matmul(&w, &Mat::rows(&columns, taps, plane), out, false);
            for (o, row) in out.chunks_mut(plane).enumerate() {
                let b = bias[g * opg + o];
                for v in row {
                    *v = *v + b;
                    if spec.relu {
                        *v = v.max(T::zero());
                    }
                }
            }
        }
    }
    Ok(output)
}

/// Gradients of a convolution. `grad_output` is the gradient of the convolution's result
/// (after ReLU's backward, where there is one). Returns (input gradient if asked for, weight
/// gradient `[out, in/groups, kh, kw]`, bias gradient). Fails as [`conv2d_forward`] does.
pub fn conv2d_backward<T: Real>(
    input: &[T],
    weight: &[T],
    grad_output: &[T],
    spec: &ConvSpec,
    need_input_grad: bool,
) -> Result<Gradients<T>> {
    const OP: &str = "conv2d_backward";
    spec.check(OP)?;
    let (taps, plane, opg) = (spec.taps(), spec.out_plane(), spec.out_per_group());
    check_len(OP, "input", input.len(), spec.batch * spec.input.len())?;
    check_len(OP, "weight", weight.len(), spec.output.channels * taps)?;
    let out_len = spec.batch * spec.output.len();
    check_len(OP, "grad_output", grad_output.len(), out_len)?;
    let mut grad_weight = vec![T::zero(); weight.len()];
    let mut grad_bias = vec![T::zero(); spec.output.channels];
    let mut grad_input = need_input_grad.then(|| vec![T::zero(); input.len()]);
    for n in 0..spec.batch {
        let image = &input[n * spec.input.len()..][..spec.input.len()];
        for g in 0..spec.groups {
            let dy = &grad_output[(n * spec.output.channels + g * opg) * plane..][..opg * plane];
            let dy = Mat::rows(dy, opg, plane);
            let columns = spec.im2col(image, g);
            let dw = &mut grad_weight[g * opg * taps..][..opg * taps];
            matmul(&dy, &Mat::transposed(&columns, taps, plane), dw, true);
            for (o, row) in dy.data.chunks(plane).enumerate() {
                let b = &mut grad_bias[g * opg + o];
                *b = *b + row.iter().copied().sum();
            }
            if let Some(dx) = grad_input.as_mut() {
                let w = Mat::transposed(&weight[g * opg * taps..][..opg * taps], opg, taps);
                let mut dcol = vec![T::zero(); taps * plane];
                matmul(&w, &dy, &mut dcol, false);
                spec.col2im(
                    &dcol,
                    g,
                    &mut dx[n * spec.input.len()..][..spec.input.len()],
                );
            }
        }
    }
    Ok((grad_input, grad_weight, grad_bias))
}

/// A parameterised layer's gradients: of its input (when asked for), its weight and its bias.
pub type Gradients<T> = (Option<Vec<T>>, Vec<T>, Vec<T>);

/// LRN's parameters, TensorFlow's names.
#[derive(Clone, Copy, Debug)]
pub struct LrnSpec {
    /// Channels on each side of a channel in its window.
    pub depth_radius: usize,
    /// The constant added to the weighted sum of squares.
    pub bias: f32,
    /// The sum of squares' weight (not divided by the window size).
    pub alpha: f32,
    /// The exponent the normaliser is raised to.
    pub beta: f32,
    /// Channel groups the window stays inside; they must divide the channels.
    pub groups: usize,
}

impl LrnSpec {
    /// Fails unless the groups divide `channels`.
    fn check(&self, op: &str, channels: usize) -> Result<()> {
        if self.groups == 0 || !channels.is_multiple_of(self.groups) {
            return Err(invalid(
                op,
                format!(
                    "{channels} channels do not divide into {} groups",
                    self.groups
                ),
            ));
        }
        Ok(())
    }

    /// The channels in `c`'s window: radius `depth_radius`, clipped to `c`'s group.
    fn window(&self, channels: usize, c: usize) -> std::ops::RangeInclusive<usize> {
        let per_group = channels / self.groups;
        let first = c / per_group * per_group;
        let last = first + per_group - 1;
        c.saturating_sub(self.depth_radius).max(first)..=(c + self.depth_radius).min(last)
    }

    /// `bias + alpha * sum_{k in window(c)} x[k]^2` at one position; `at(k)` reads channel k.
    fn normaliser<T: Real>(&self, channels: usize, c: usize, at: impl Fn(usize) -> T) -> T {
        let sum_sq: T = self.window(channels, c).map(|k| at(k) * at(k)).sum();
        T::from_f32(self.bias) + T::from_f32(self.alpha) * sum_sq
    }
}

/// Local response normalisation across channels, TensorFlow's semantics:
/// `x / (bias + alpha * sum_{window} x^2)^beta`, window clipped at the channel ends. Fails when
/// the groups do not divide the channels or `input` is not `batch` images of `dims`.
pub fn lrn_forward<T: Real>(
    input: &[T],
    batch: usize,
    dims: Dims,
    spec: &LrnSpec,
) -> Result<Vec<T>> {
    const OP: &str = "lrn_forward";
    spec.check(OP, dims.channels)?;
    check_len(OP, "input", input.len(), batch * dims.len())?;
    let plane = dims.height * dims.width;
    let beta = T::from_f32(spec.beta);
    let mut output = vec![T::zero(); input.len()];
    for n in 0..batch {
        for p in 0..plane {
            let at = |k: usize| input[(n * dims.channels + k) * plane + p];
            for c in 0..dims.channels {
                let d = spec.normaliser(dims.channels, c, at);
                output[(n * dims.channels + c) * plane + p] = at(c) * d.powf(-beta);
            }
        }
    }
    Ok(output)
}

/// LRN backward: `g[j] d[j]^-beta - 2 alpha beta x[j] sum_{c in window(j)} g[c] x[c] d[c]^(-beta-1)`.
/// Fails as [`lrn_forward`] does, or when `grad_output` is not as long as `input`.
pub fn lrn_backward<T: Real>(
    input: &[T],
    grad_output: &[T],
    batch: usize,
    dims: Dims,
    spec: &LrnSpec,
) -> Result<Vec<T>> {
    const OP: &str = "lrn_backward";
    spec.check(OP, dims.channels)?;
    check_len(OP, "input", input.len(), batch * dims.len())?;
    check_len(OP, "grad_output", grad_output.len(), input.len())?;
    let plane = dims.height * dims.width;
    let (alpha, beta) = (T::from_f32(spec.alpha), T::from_f32(spec.beta));
    let two = T::one() + T::one();
    let mut grad_input = vec![T::zero(); input.len()];
    for n in 0..batch {
        for p in 0..plane {
            let index = |k: usize| (n * dims.channels + k) * plane + p;
            let at = |k: usize| input[index(k)];
            let d: Vec<T> = (0..dims.channels)
                .map(|c| spec.normaliser(dims.channels, c, at))
                .collect();
            for j in 0..dims.channels {
                let cross: T = spec
                    .window(dims.channels, j)
                    .map(|c| grad_output[index(c)] * at(c) * d[c].powf(-beta - T::one()))
                    .sum();
                grad_input[index(j)] =
                    grad_output[index(j)] * d[j].powf(-beta) - two * alpha * beta * at(j) * cross;
            }
        }
    }
    Ok(grad_input)
}

/// A pooling window's geometry at one layer.
#[derive(Clone, Copy, Debug)]
pub struct PoolSpec {
    /// Images in the batch.
    pub batch: usize,
    /// Input dimensions per image.
    pub input: Dims,
    /// Output dimensions per image (the same channels).
    pub output: Dims,
    /// Pooling size and stride (its padding rule is already resolved into `pad`).
    pub window: Window,
    /// Padding of each side; padded positions never win.
    pub pad: Pad,
}

impl PoolSpec {
    /// Fails unless `input` is `batch` images of the input dimensions, both have the same
    /// channels, and every window covers part of the input (so that it has a maximum).
    fn check(&self, op: &str, input: &[impl Sized]) -> Result<()> {
        if self.input.is_empty() || self.input.channels != self.output.channels {
            return Err(invalid(
                op,
                format!("cannot pool {:?} into {:?}", self.input, self.output),
            ));
        }
        check_len(op, "input", input.len(), self.batch * self.input.len())?;
        // Windows start at `i * stride - pad` and are `size` long: the first must end inside the
        // input, the last start inside it.
        let covers = |out: usize, size: usize, stride: usize, pad: usize, input: usize| {
            let last_start = (out.max(1) - 1).checked_mul(stride);
            pad < size && last_start.is_some_and(|s| s < input + pad)
        };
        let w = &self.window;
        if !covers(
            self.output.height,
            w.height,
            w.stride_height,
            self.pad.top,
            self.input.height,
        ) || !covers(
            self.output.width,
            w.width,
            w.stride_width,
            self.pad.left,
            self.input.width,
        ) {
            return Err(invalid(
                op,
                format!(
                    "a {}x{} window with padding {:?} leaves output windows with no input",
                    w.height, w.width, self.pad
                ),
            ));
        }
        Ok(())
    }

    /// Index within the plane of window (oy, ox)'s maximum: the first one in row-major window
    /// order (TensorFlow's tie rule), padding never counted.
    fn argmax<T: Real>(&self, plane: &[T], oy: usize, ox: usize) -> usize {
        let (h, w) = (self.input.height as isize, self.input.width as isize);
        let mut best: Option<(T, usize)> = None;
        for ky in 0..self.window.height {
            for kx in 0..self.window.width {
                let iy = (oy * self.window.stride_height + ky) as isize - self.pad.top as isize;
                let ix = (ox * self.window.stride_width + kx) as isize - self.pad.left as isize;
                if iy >= 0 && iy < h && ix >= 0 && ix < w {
                    let at = (iy * w + ix) as usize;
                    if best.is_none_or(|(v, _)| plane[at] > v) {
                        best = Some((plane[at], at));
                    }
                }
            }
        }
        best.expect("PoolSpec::check: every window covers part of the input")
            .1
    }
}

/// Max pooling over the positions of each window that lie inside the input. Fails when `input`
/// does not fit `spec` or a window lies wholly in the padding.
pub fn max_pool_forward<T: Real>(input: &[T], spec: &PoolSpec) -> Result<Vec<T>> {
    spec.check("max_pool_forward", input)?;
    let mut output = Vec::with_capacity(spec.batch * spec.output.len());
    for plane in input.chunks(spec.input.height * spec.input.width) {
        for oy in 0..spec.output.height {
            for ox in 0..spec.output.width {
                output.push(plane[spec.argmax(plane, oy, ox)]);
            }
        }
    }
    Ok(output)
}

/// Max pooling backward: each output gradient goes to its window's (first) maximum. Fails as
/// [`max_pool_forward`] does, or when `grad_output` does not fit `spec`.
pub fn max_pool_backward<T: Real>(
    input: &[T],
    grad_output: &[T],
    spec: &PoolSpec,
) -> Result<Vec<T>> {
    const OP: &str = "max_pool_backward";
    spec.check(OP, input)?;
    let out_len = spec.batch * spec.output.len();
    check_len(OP, "grad_output", grad_output.len(), out_len)?;
    let in_plane = spec.input.height * spec.input.width;
    let out_plane = spec.output.height * spec.output.width;
    let mut grad_input = vec![T::zero(); input.len()];
    for (p, plane) in input.chunks(in_plane).enumerate() {
        for oy in 0..spec.output.height {
            for ox in 0..spec.output.width {
                let at = p * in_plane + spec.argmax(plane, oy, ox);
                let g = grad_output[p * out_plane + oy * spec.output.width + ox];
                grad_input[at] = grad_input[at] + g;
            }
        }
    }
    Ok(grad_input)
}

/// Fully connected layer: `output[n, o] = sum_i input[n, i] * weight[o, i] + bias[o]`, optional ReLU.
/// Fails when `input` is not `batch` rows or `weight` is not `[bias.len(), row length]`.
pub fn linear_forward<T: Real>(
    input: &[T],
    batch: usize,
    weight: &[T],
    bias: &[T],
    relu: bool,
) -> Result<Vec<T>> {
    const OP: &str = "linear_forward";
    let in_features = rows_of(OP, "input", input.len(), batch)?;
    let out_features = bias.len();
    check_len(OP, "weight", weight.len(), out_features * in_features)?;
    let mut output = vec![T::zero(); batch * out_features];
    matmul(
        &Mat::rows(input, batch, in_features),
        &Mat::transposed(weight, out_features, in_features),
        &mut output,
        false,
    );
    for row in output.chunks_mut(out_features) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v = *v + b;
            if relu {
                *v = v.max(T::zero());
            }
        }
    }
    Ok(output)
}

/// The length of each of `batch` rows that `len` values make, or an error.
fn rows_of(op: &str, what: &str, len: usize, batch: usize) -> Result<usize> {
    if batch == 0 || !len.is_multiple_of(batch) {
        return Err(invalid(
            op,
            format!("{what} of {len} values is not {batch} rows"),
        ));
    }
    Ok(len / batch)
}

/// Gradients of a fully connected layer: (input gradient if asked for, weight gradient
/// `[out, in]`, bias gradient). Fails when `input` and `grad_output` are not `batch` rows or
/// `weight` is not `[out, in]`.
pub fn linear_backward<T: Real>(
    input: &[T],
    weight: &[T],
    grad_output: &[T],
    batch: usize,
    need_input_grad: bool,
) -> Result<Gradients<T>> {
    const OP: &str = "linear_backward";
    let out_features = rows_of(OP, "grad_output", grad_output.len(), batch)?;
    let in_features = rows_of(OP, "input", input.len(), batch)?;
    check_len(OP, "weight", weight.len(), out_features * in_features)?;
    let dy = Mat::rows(grad_output, batch, out_features);
    let mut grad_weight = vec![T::zero(); weight.len()];
    matmul(
        &Mat::transposed(grad_output, batch, out_features),
        &Mat::rows(input, batch, in_features),
        &mut grad_weight,
        false,
    );
    let grad_bias = (0..out_features)
        .map(|o| (0..batch).map(|n| grad_output[n * out_features + o]).sum())
        .collect();
    let grad_input = need_input_grad.then(|| {
        let mut dx = vec![T::zero(); input.len()];
        matmul(
            &dy,
            &Mat::rows(weight, out_features, in_features),
            &mut dx,
            false,
        );
        dx
    });
    Ok((grad_input, grad_weight, grad_bias))
}

/// ReLU backward: the gradient where the output is positive, zero elsewhere.
pub fn relu_backward<T: Real>(output: &[T], grad_output: &[T]) -> Vec<T> {
    output
        .iter()
        .zip(grad_output)
        .map(|(&y, &g)| if y > T::zero() { g } else { T::zero() })
        .collect()
}

/// Batch normalisation at inference: `(x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]`,
/// then ReLU if asked for. `stats` are (weight, bias, running mean, running variance), `[C]` each.
/// Fails when `input` is not whole images of `dims` or a statistic is not `[C]`.
pub fn batch_norm_forward<T: Real>(
    input: &[T],
    dims: Dims,
    stats: [&[T]; 4],
    eps: f32,
    relu: bool,
) -> Result<Vec<T>> {
    const OP: &str = "batch_norm_forward";
    let [weight, bias, mean, var] = stats;
    rows_of(OP, "input", input.len(), dims.len())?;
    for (what, values) in ["weight", "bias", "mean", "variance"].iter().zip(stats) {
        check_len(OP, what, values.len(), dims.channels)?;
    }
    let plane = dims.height * dims.width;
    Ok(input
        .chunks(plane)
        .enumerate()
        .flat_map(|(i, values)| {
            let c = i % dims.channels;
            let scale = weight[c] / (var[c] + T::from_f32(eps)).sqrt();
            values.iter().map(move |&x| {
                let y = (x - mean[c]) * scale + bias[c];
                if relu {
                    y.max(T::zero())
                } else {
                    y
                }
            })
        })
        .collect())
}

/// The element-wise sum of equally shaped tensors, then ReLU if asked for. Fails for no tensors
/// or tensors of different lengths.
pub fn add_forward<T: Real>(inputs: &[&[T]], relu: bool) -> Result<Vec<T>> {
    let Some(first) = inputs.first() else {
        return Err(invalid("add_forward", "no inputs"));
    };
    for (i, x) in inputs.iter().enumerate() {
        check_len("add_forward", &format!("input {i}"), x.len(), first.len())?;
    }
    Ok((0..first.len())
        .map(|i| {
            let sum: T = inputs.iter().map(|x| x[i]).sum();
            if relu {
                sum.max(T::zero())
            } else {
                sum
            }
        })
        .collect())
}

/// PyTorch's adaptive average pooling from `input` dims to `output` dims (same channels). Fails
/// for empty dimensions, different channels, or an `input` that is not whole images.
pub fn adaptive_avg_pool_forward<T: Real>(
    input: &[T],
    input_dims: Dims,
    output: Dims,
) -> Result<Vec<T>> {
    const OP: &str = "adaptive_avg_pool_forward";
    if input_dims.is_empty() || output.is_empty() || input_dims.channels != output.channels {
        return Err(invalid(
            OP,
            format!("cannot pool {input_dims:?} into {output:?}"),
        ));
    }
    rows_of(OP, "input", input.len(), input_dims.len())?;
    // Cell i of n covers floor(i * size / n) .. ceil((i + 1) * size / n).
    let span = |i: usize, n: usize, size: usize| (i * size / n)..((i + 1) * size).div_ceil(n);
    let mut result = Vec::with_capacity(input.len() / input_dims.len() * output.len());
    for plane in input.chunks(input_dims.height * input_dims.width) {
        for oy in 0..output.height {
            for ox in 0..output.width {
                let rows = span(oy, output.height, input_dims.height);
                let cols = span(ox, output.width, input_dims.width);
                let count = T::from_f32((rows.len() * cols.len()) as f32);
                let sum: T = rows
                    .flat_map(|y| cols.clone().map(move |x| plane[y * input_dims.width + x]))
                    .sum();
                result.push(sum / count);
            }
        }
    }
    Ok(result)
}

/// Stacks each image's tensors along channels, in order. `sizes` are the per-image lengths.
/// Fails unless there is one size per input and each input is `batch` images of its size.
pub fn concat_forward<T: Real>(inputs: &[&[T]], sizes: &[usize], batch: usize) -> Result<Vec<T>> {
    const OP: &str = "concat_forward";
    check_len(OP, "sizes", sizes.len(), inputs.len())?;
    for (i, (x, &size)) in inputs.iter().zip(sizes).enumerate() {
        check_len(OP, &format!("input {i}"), x.len(), batch * size)?;
    }
    let mut output = Vec::with_capacity(sizes.iter().sum::<usize>() * batch);
    for n in 0..batch {
        for (x, &size) in inputs.iter().zip(sizes) {
            output.extend_from_slice(&x[n * size..][..size]);
        }
    }
    Ok(output)
}

/// A batch norm in training mode, as PyTorch's `BatchNorm2d.train()` computes it: each channel
/// normalised by the mean and the biased variance of its values over the whole batch (N, H, W),
/// then scaled by `weight[c]`, shifted by `bias[c]`, and ReLU'd if asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormTrain<T> {
    /// The layer's output.
    pub output: Vec<T>,
    /// Each channel's batch mean.
    pub mean: Vec<T>,
    /// Each channel's biased batch variance (divided by the values' count), which normalises.
    pub variance: Vec<T>,
}

/// The per-channel values of `input` (whole images of `dims`): `f(channel, index in input)`.
fn for_each_in_channel(dims: Dims, len: usize, mut f: impl FnMut(usize, usize)) {
    let plane = dims.height * dims.width;
    for (i, c) in (0..len / plane.max(1)).map(|row| (row, row % dims.channels)) {
        for p in 0..plane {
            f(c, i * plane + p);
        }
    }
}

/// A batch norm's forward in training mode (see [`BatchNormTrain`]). Fails when `input` is not
/// whole images of `dims` or `weight`/`bias` are not `[C]`.
pub fn batch_norm_train_forward<T: Real>(
    input: &[T],
    dims: Dims,
    (weight, bias): (&[T], &[T]),
    eps: f32,
    relu: bool,
) -> Result<BatchNormTrain<T>> {
    const OP: &str = "batch_norm_train_forward";
    let images = rows_of(OP, "input", input.len(), dims.len())?;
    check_len(OP, "weight", weight.len(), dims.channels)?;
    check_len(OP, "bias", bias.len(), dims.channels)?;
    let count = T::from_f32((images * dims.height * dims.width) as f32);
    let mut mean = vec![T::zero(); dims.channels];
    for_each_in_channel(dims, input.len(), |c, i| mean[c] = mean[c] + input[i]);
    mean.iter_mut().for_each(|m| *m = *m / count);
    let mut variance = vec![T::zero(); dims.channels];
    for_each_in_channel(dims, input.len(), |c, i| {
        let d = input[i] - mean[c];
        variance[c] = variance[c] + d * d;
    });
    variance.iter_mut().for_each(|v| *v = *v / count);
    let mut output = vec![T::zero(); input.len()];
    for_each_in_channel(dims, input.len(), |c, i| {
        let normalised = (input[i] - mean[c]) / (variance[c] + T::from_f32(eps)).sqrt();
        let y = normalised * weight[c] + bias[c];
        output[i] = if relu { y.max(T::zero()) } else { y };
    });
    Ok(BatchNormTrain {
        output,
        mean,
        variance,
    })
}

/// The backward of [`batch_norm_train_forward`] (the batch statistics are functions of the
/// input, so every input's gradient has a term through them): the gradients of the input, the
/// weight and the bias. `forward` is what the forward returned for this `input`.
pub fn batch_norm_train_backward<T: Real>(
    input: &[T],
    dims: Dims,
    weight: &[T],
    forward: &BatchNormTrain<T>,
    grad_output: &[T],
    (eps, relu): (f32, bool),
) -> Result<Gradients<T>> {
    const OP: &str = "batch_norm_train_backward";
    let images = rows_of(OP, "input", input.len(), dims.len())?;
    check_len(OP, "grad_output", grad_output.len(), input.len())?;
    check_len(OP, "output", forward.output.len(), input.len())?;
    check_len(OP, "weight", weight.len(), dims.channels)?;
    let count = T::from_f32((images * dims.height * dims.width) as f32);
    let dy = if relu {
        relu_backward(&forward.output, grad_output)
    } else {
        grad_output.to_vec()
    };
    let inverse_std: Vec<T> = forward
        .variance
        .iter()
        .map(|&v| T::one() / (v + T::from_f32(eps)).sqrt())
        .collect();
    let normalised = |c: usize, i: usize| (input[i] - forward.mean[c]) * inverse_std[c];
    let mut grad_bias = vec![T::zero(); dims.channels];
    let mut grad_weight = vec![T::zero(); dims.channels];
    for_each_in_channel(dims, input.len(), |c, i| {
        grad_bias[c] = grad_bias[c] + dy[i];
        grad_weight[c] = grad_weight[c] + dy[i] * normalised(c, i);
    });
    // dx = weight / std * (dy - mean(dy) - x_hat * mean(dy * x_hat)), the means per channel.
    let mut grad_input = vec![T::zero(); input.len()];
    for_each_in_channel(dims, input.len(), |c, i| {
        let centred = dy[i] - grad_bias[c] / count - normalised(c, i) * grad_weight[c] / count;
        grad_input[i] = weight[c] * inverse_std[c] * centred;
    });
    Ok((Some(grad_input), grad_weight, grad_bias))
}

/// Running statistics after one training step, as PyTorch updates them: `(1 - momentum) *
/// running + momentum * batch`, with the batch variance unbiased (times count / (count - 1)).
/// `count` is the values per channel in the batch (N * H * W).
pub fn batch_norm_running_update<T: Real>(
    running: (&[T], &[T]),
    batch: (&[T], &[T]),
    count: usize,
    momentum: T,
) -> (Vec<T>, Vec<T>) {
    let m = momentum;
    let keep = T::one() - m;
    let unbiased = T::from_f32(count as f32) / T::from_f32(count.saturating_sub(1).max(1) as f32);
    let mean = running
        .0
        .iter()
        .zip(batch.0)
        .map(|(&r, &b)| keep * r + m * b)
        .collect();
    let variance = running
        .1
        .iter()
        .zip(batch.1)
        .map(|(&r, &b)| keep * r + m * b * unbiased)
        .collect();
    (mean, variance)
}

/// The backward of [`add_forward`]: every input receives the output gradient (zero where a fused
/// ReLU cut the output). `output` is the forward's output.
pub fn add_backward<T: Real>(output: &[T], grad_output: &[T], relu: bool) -> Result<Vec<T>> {
    check_len(
        "add_backward",
        "grad_output",
        grad_output.len(),
        output.len(),
    )?;
    Ok(if relu {
        relu_backward(output, grad_output)
    } else {
        grad_output.to_vec()
    })
}

/// The backward of [`concat_forward`]: each input's slice of the output gradient.
pub fn concat_backward<T: Real>(
    grad_output: &[T],
    sizes: &[usize],
    batch: usize,
) -> Result<Vec<Vec<T>>> {
    let per_image: usize = sizes.iter().sum();
    check_len(
        "concat_backward",
        "grad_output",
        grad_output.len(),
        batch * per_image,
    )?;
    let mut grads: Vec<Vec<T>> = sizes
        .iter()
        .map(|&s| Vec::with_capacity(batch * s))
        .collect();
    for image in grad_output.chunks(per_image.max(1)) {
        let mut offset = 0;
        for (grad, &size) in grads.iter_mut().zip(sizes) {
            grad.extend_from_slice(&image[offset..offset + size]);
            offset += size;
        }
    }
    Ok(grads)
}

/// The backward of [`adaptive_avg_pool_forward`]: each output's gradient spread evenly over the
/// cell of inputs it averaged (cells overlap where the sizes do not divide).
pub fn adaptive_avg_pool_backward<T: Real>(
    grad_output: &[T],
    input_dims: Dims,
    output: Dims,
) -> Result<Vec<T>> {
    const OP: &str = "adaptive_avg_pool_backward";
    if input_dims.is_empty() || output.is_empty() || input_dims.channels != output.channels {
        return Err(invalid(
            OP,
            format!("cannot pool {input_dims:?} into {output:?}"),
        ));
    }
    let images = rows_of(OP, "grad_output", grad_output.len(), output.len())?;
    let span = |i: usize, n: usize, size: usize| (i * size / n)..((i + 1) * size).div_ceil(n);
    let in_plane = input_dims.height * input_dims.width;
    let mut grad_input = vec![T::zero(); images * input_dims.len()];
    let out_planes = grad_output.chunks(output.height * output.width);
    for (grads, plane) in out_planes.zip(grad_input.chunks_mut(in_plane)) {
        for oy in 0..output.height {
            for ox in 0..output.width {
                let rows = span(oy, output.height, input_dims.height);
                let cols = span(ox, output.width, input_dims.width);
                let share =
                    grads[oy * output.width + ox] / T::from_f32((rows.len() * cols.len()) as f32);
                for y in rows {
                    for x in cols.clone() {
                        plane[y * input_dims.width + x] = plane[y * input_dims.width + x] + share;
                    }
                }
            }
        }
    }
    Ok(grad_input)
}

/// The benchmark's loss, TensorFlow's `l2_loss(logits) = sum(logits^2) / 2`. Its gradient is the
/// logits.
pub fn l2_loss<T: Real>(logits: &[T]) -> T {
    logits.iter().map(|&v| v * v).sum::<T>() / (T::one() + T::one())
}

/// Softmax cross-entropy with integer labels, averaged over the batch as PyTorch's
/// `nn.CrossEntropyLoss()` does: the loss, and its gradient with respect to the logits,
/// `(softmax(logits) - one_hot(label)) / batch`. `logits` are `[batch][classes]`. Fails for
/// a label out of range or logits that are not one row of `classes` per label.
pub fn softmax_cross_entropy<T: Real>(
    logits: &[T],
    labels: &[usize],
    classes: usize,
) -> Result<(T, Vec<T>)> {
    const OP: &str = "softmax_cross_entropy";
    if classes == 0 {
        return Err(invalid(OP, "no classes"));
    }
    check_len(OP, "logits", logits.len(), labels.len() * classes)?;
    if let Some((i, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
        return Err(invalid(
            OP,
            format!("label {label} of image {i} is not one of the {classes} classes"),
        ));
    }
    let batch = T::from_f32(labels.len() as f32);
    let mut loss = T::zero();
    let mut grad = Vec::with_capacity(logits.len());
    for (row, &label) in logits.chunks(classes).zip(labels) {
        // Shifted by the row's maximum, so that exp never overflows.
        let max = row.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
        let exps: Vec<T> = row.iter().map(|&v| (v - max).exp()).collect();
        let sum: T = exps.iter().copied().sum();
        loss = loss + (sum.ln() - (row[label] - max)) / batch;
        grad.extend(exps.iter().enumerate().map(|(c, &e)| {
            let target = if c == label { T::one() } else { T::zero() };
            (e / sum - target) / batch
        }));
    }
    Ok((loss, grad))
}

/// A loss's gradient with respect to each head's output: (the head's plan index, the gradient).
pub type HeadGradients<T> = Vec<(usize, Vec<T>)>;

/// Parameter gradients by name, in the network's order.
pub type NamedGradients<T> = Vec<(String, Vec<T>)>;

/// A loss over a network's heads (see [`Loss`](crate::model::Loss)): its value, and its gradient
/// with respect to each head's output. `outputs` are every layer's; `labels` (one per image) are
/// needed by cross-entropy. Fails for missing or out-of-range labels.
pub fn loss<T: Real>(
    loss: &crate::model::Loss,
    plan: &[LayerPlan],
    outputs: &[Vec<T>],
    labels: Option<&[usize]>,
) -> Result<(T, HeadGradients<T>)> {
    let mut total = T::zero();
    let mut grads = Vec::new();
    for &(head, weight) in &loss.heads {
        let (y, layer) = outputs
            .get(head)
            .zip(plan.get(head))
            .ok_or_else(|| invalid("loss", format!("no layer {head} to take a loss of")))?;
        let weight = T::from_f32(weight);
        let (value, grad) = match loss.kind {
            crate::model::LossKind::L2 => (l2_loss(y), y.clone()),
            crate::model::LossKind::CrossEntropy => {
                let labels = labels.ok_or_else(|| invalid("loss", "cross-entropy needs labels"))?;
                softmax_cross_entropy(y, labels, layer.output.len())?
            }
        };
        total = total + weight * value;
        grads.push((head, grad.into_iter().map(|g| weight * g).collect()));
    }
    Ok((total, grads))
}

/// The Gram matrix of one image's features `[channels][plane]` (row-major), normalised as
/// style transfer uses it: `G = F F^T / (channels * plane)`, `[channels][channels]`.
pub fn gram<T: Real>(features: &[T], channels: usize) -> Result<Vec<T>> {
    if channels == 0 || !features.len().is_multiple_of(channels) {
        return Err(invalid(
            "gram",
            format!(
                "{} values are not rows of {channels} channels",
                features.len()
            ),
        ));
    }
    let plane = features.len() / channels;
    let scale = T::one() / T::from_f32(features.len() as f32);
    let mut g = vec![T::zero(); channels * channels];
    for i in 0..channels {
        for j in 0..channels {
            let (fi, fj) = (
                &features[i * plane..(i + 1) * plane],
                &features[j * plane..(j + 1) * plane],
            );
            g[i * channels + j] = fi.iter().zip(fj).map(|(&a, &b)| a * b).sum::<T>() * scale;
        }
    }
    Ok(g)
}

/// The mean squared difference `mean((a - b)^2)` and its gradient with respect to `a`,
/// `2 (a - b) / len`: style transfer's content loss (features against the content image's) and
/// style loss (Gram matrices against the style image's).
pub fn mse<T: Real>(a: &[T], b: &[T]) -> Result<(T, Vec<T>)> {
    check_len("mse", "the target", b.len(), a.len())?;
    let n = T::from_f32(a.len() as f32);
    let two = T::one() + T::one();
    let loss = a.iter().zip(b).map(|(&x, &y)| (x - y) * (x - y)).sum::<T>() / n;
    let grad = a.iter().zip(b).map(|(&x, &y)| two * (x - y) / n).collect();
    Ok((loss, grad))
}

/// The gradient with respect to the features `[channels][plane]` of a loss whose gradient with
/// respect to their Gram matrix ([`gram`]) is `grad_gram`: `(dG + dG^T) F / (channels * plane)`.
pub fn gram_backward<T: Real>(features: &[T], channels: usize, grad_gram: &[T]) -> Result<Vec<T>> {
    check_len(
        "gram_backward",
        "grad_gram",
        grad_gram.len(),
        channels * channels,
    )?;
    let plane = features.len() / channels.max(1);
    let scale = T::one() / T::from_f32(features.len() as f32);
    let mut grad = vec![T::zero(); features.len()];
    for i in 0..channels {
        for j in 0..channels {
            let d = (grad_gram[i * channels + j] + grad_gram[j * channels + i]) * scale;
            for p in 0..plane {
                grad[i * plane + p] = grad[i * plane + p] + d * features[j * plane + p];
            }
        }
    }
    Ok(grad)
}

/// Total variation of images `[channels][height][width]`: the sum of the squared differences
/// between every pixel and its right and lower neighbours (a smoothness prior on the image
/// style transfer optimises), and its gradient.
pub fn total_variation<T: Real>(image: &[T], dims: Dims) -> Result<(T, Vec<T>)> {
    check_len("total_variation", "the image", image.len(), dims.len())?;
    let (h, w) = (dims.height, dims.width);
    let two = T::one() + T::one();
    let mut loss = T::zero();
    let mut grad = vec![T::zero(); image.len()];
    for c in 0..dims.channels {
        for y in 0..h {
            for x in 0..w {
                let at = (c * h + y) * w + x;
                let mut neighbours = Vec::with_capacity(2);
                if y + 1 < h {
                    neighbours.push(at + w);
                }
                if x + 1 < w {
                    neighbours.push(at + 1);
                }
                for next in neighbours {
                    let d = image[next] - image[at];
                    loss = loss + d * d;
                    grad[next] = grad[next] + two * d;
                    grad[at] = grad[at] - two * d;
                }
            }
        }
    }
    Ok((loss, grad))
}

/// A network's parameters in the reference's float type, in the network's order.
#[derive(Clone, Debug)]
pub struct Parameters<T> {
    tensors: Vec<(String, Vec<T>)>,
}

impl<T: Real> Parameters<T> {
    /// Converts f32 weights.
    pub fn from_weights(weights: &Weights) -> Self {
        Parameters {
            tensors: weights
                .iter()
                .map(|(name, t)| {
                    (
                        name.to_string(),
                        t.data.iter().map(|&v| T::from_f32(v)).collect(),
                    )
                })
                .collect(),
        }
    }

    /// Replaces the tensor called `name` (same length), e.g. to probe finite differences. Fails,
    /// changing nothing, when there is no such tensor or `values` has another length.
    pub fn set(&mut self, name: &str, values: Vec<T>) -> Result<()> {
        let slot = self
            .tensors
            .iter_mut()
            .find(|(n, _)| n == name)
            .ok_or_else(|| Error::InvalidArgument(format!("no tensor {name} to set")))?;
        check_len("Parameters::set", name, values.len(), slot.1.len())?;
        slot.1 = values;
        Ok(())
    }

    /// The tensor called `name`, if the network has one.
    pub fn get(&self, name: &str) -> Option<&[T]> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_slice())
    }

    /// The tensor `{layer}.{suffix}`, or an error naming it.
    fn tensor(&self, layer: &str, suffix: &str) -> Result<&[T]> {
        let name = format!("{layer}.{suffix}");
        self.get(&name)
            .ok_or_else(|| Error::InvalidArgument(format!("the parameters hold no tensor {name}")))
    }

    /// A layer's weight and bias, or an error naming the one that is missing.
    pub fn layer(&self, layer: &str) -> Result<(&[T], &[T])> {
        Ok((self.tensor(layer, "weight")?, self.tensor(layer, "bias")?))
    }
}

fn lrn_spec(kind: &LayerKind) -> Option<LrnSpec> {
    match *kind {
        LayerKind::Lrn {
            depth_radius,
            bias,
            alpha,
            beta,
            groups,
        } => Some(LrnSpec {
            depth_radius,
            bias,
            alpha,
            beta,
            groups,
        }),
        _ => None,
    }
}

fn pool_spec(plan: &LayerPlan) -> Option<PoolSpec> {
    match plan.layer.kind {
        LayerKind::MaxPool { window } => Some(PoolSpec {
            batch: plan.batch,
            input: plan.input,
            output: plan.output,
            window,
            pad: plan.pad,
        }),
        _ => None,
    }
}

/// Runs one planned layer on the CPU, given what it reads (see [`LayerPlan::sources`]). Fails
/// when `inputs` are not one slice per source, a parameter is missing, or a length does not fit
/// the plan.
pub fn layer_forward<T: Real>(
    plan: &LayerPlan,
    inputs: &[&[T]],
    params: &Parameters<T>,
) -> Result<Vec<T>> {
    let name = &plan.layer.name;
    check_len(
        &format!("layer {name}"),
        "the list of inputs",
        inputs.len(),
        plan.sources.len(),
    )?;
    let Some(&input) = inputs.first() else {
        return Err(invalid(&format!("layer {name}"), "reads nothing"));
    };
    match &plan.layer.kind {
        LayerKind::Conv2d { bias, .. } => {
            let weight = params.tensor(name, "weight")?;
            let zeros = vec![T::zero(); plan.output.channels];
            let b = if *bias {
                params.tensor(name, "bias")?
            } else {
                &zeros
            };
            conv2d_forward(input, weight, b, &ConvSpec::of(plan).expect("a conv layer"))
        }
        LayerKind::BatchNorm { eps, relu } => {
            let [weight, bias, mean, var] = ["weight", "bias", "running_mean", "running_var"]
                .map(|suffix| params.tensor(name, suffix));
            let stats = [weight?, bias?, mean?, var?];
            batch_norm_forward(input, plan.input, stats, *eps, *relu)
        }
        LayerKind::Add { relu } => add_forward(inputs, *relu),
        LayerKind::AdaptiveAvgPool { .. } => {
            adaptive_avg_pool_forward(input, plan.input, plan.output)
        }
        LayerKind::Concat => {
            let sizes: Vec<usize> = plan.sources.iter().map(|(_, d)| d.len()).collect();
            concat_forward(inputs, &sizes, plan.batch)
        }
        kind @ LayerKind::Lrn { .. } => lrn_forward(
            input,
            plan.batch,
            plan.input,
            &lrn_spec(kind).expect("an LRN layer"),
        ),
        LayerKind::MaxPool { .. } => {
            max_pool_forward(input, &pool_spec(plan).expect("a pooling layer"))
        }
        LayerKind::Linear { relu, .. } => {
            let (w, b) = params.layer(name)?;
            linear_forward(input, plan.batch, w, b, *relu)
        }
    }
}

/// Runs a whole planned network on the CPU and returns every layer's output, in order. Fails
/// when the plan does not pass [`check_plan`](crate::model::check_plan) or a layer fails (see
/// [`layer_forward`]), e.g. for an `input` that is not the plan's batch of images.
pub fn forward<T: Real>(
    plan: &[LayerPlan],
    params: &Parameters<T>,
    input: &[T],
) -> Result<Vec<Vec<T>>> {
    crate::model::check_plan(plan)?;
    let mut outputs: Vec<Vec<T>> = Vec::with_capacity(plan.len());
    for layer in plan {
        let inputs: Vec<&[T]> = layer
            .sources
            .iter()
            .map(|(source, _)| match source {
                Source::Input => input,
                // check_plan: every layer reads layers before it.
                Source::Layer(j) => outputs[*j].as_slice(),
            })
            .collect();
        let y = layer_forward(layer, &inputs, params)?;
        outputs.push(y);
    }
    Ok(outputs)
}

/// A forward pass in training mode: every layer's output, and each batch norm's batch
/// statistics (`None` for the other layers), which its backward needs.
#[derive(Clone, Debug)]
pub struct TrainingForward<T> {
    /// Every layer's output, in order.
    pub outputs: Vec<Vec<T>>,
    /// Per layer, a batch norm's forward in training mode.
    pub batch_norms: Vec<Option<BatchNormTrain<T>>>,
}

/// The sources' tensors of `layer`: the network's input or earlier layers' outputs.
fn sources_of<'t, T>(layer: &LayerPlan, input: &'t [T], outputs: &'t [Vec<T>]) -> Vec<&'t [T]> {
    layer
        .sources
        .iter()
        .map(|(source, _)| match source {
            Source::Input => input,
            // check_plan: every layer reads layers before it.
            Source::Layer(j) => outputs[*j].as_slice(),
        })
        .collect()
}

/// One layer of an inference forward pass, from the network's `input` and the earlier layers'
/// `outputs` (which need not be this reference's: a check feeds it the GPU's). Fails as
/// [`layer_forward`] does.
pub fn layer_forward_from<T: Real>(
    layer: &LayerPlan,
    input: &[T],
    outputs: &[Vec<T>],
    params: &Parameters<T>,
) -> Result<Vec<T>> {
    layer_forward(layer, &sources_of(layer, input, outputs), params)
}

/// One layer of a training forward pass (batch norms by their batch's statistics), from the
/// network's input and the outputs of the layers before it (`outputs` may hold more: only the
/// layer's sources are read). Fails as [`layer_forward`] does.
pub fn layer_training_forward<T: Real>(
    layer: &LayerPlan,
    input: &[T],
    outputs: &[Vec<T>],
    params: &Parameters<T>,
) -> Result<Vec<T>> {
    let inputs = sources_of(layer, input, outputs);
    match layer.layer.kind {
        LayerKind::BatchNorm { eps, relu } => {
            let (weight, bias) = params.layer(&layer.layer.name)?;
            let norm = batch_norm_train_forward(inputs[0], layer.input, (weight, bias), eps, relu)?;
            Ok(norm.output)
        }
        _ => layer_forward(layer, &inputs, params),
    }
}

/// Runs a whole planned network in training mode, as PyTorch's `model.train()` does: as
/// [`forward`], except that batch norms normalise by their batch statistics. Fails as
/// [`forward`] does.
pub fn forward_training<T: Real>(
    plan: &[LayerPlan],
    params: &Parameters<T>,
    input: &[T],
) -> Result<TrainingForward<T>> {
    crate::model::check_plan(plan)?;
    let mut outputs: Vec<Vec<T>> = Vec::with_capacity(plan.len());
    let mut batch_norms = Vec::with_capacity(plan.len());
    for layer in plan {
        let inputs = sources_of(layer, input, &outputs);
        let (y, norm) = match layer.layer.kind {
            LayerKind::BatchNorm { eps, relu } => {
                let name = &layer.layer.name;
                let (weight, bias) = params.layer(name)?;
                let norm =
                    batch_norm_train_forward(inputs[0], layer.input, (weight, bias), eps, relu)?;
                (norm.output.clone(), Some(norm))
            }
            _ => (layer_forward(layer, &inputs, params)?, None),
        };
        outputs.push(y);
        batch_norms.push(norm);
    }
    Ok(TrainingForward {
        outputs,
        batch_norms,
    })
}

/// The gradients of a loss with respect to every parameter tensor of any planned network (a
/// chain or a DAG: residual additions, concatenations), given the training-mode forward pass
/// and the gradient of the loss with respect to the last layer's output. A layer read by several
/// others receives the sum of their gradients. Named as in the weights file, in the network's
/// order.
pub fn backward_training<T: Real>(
    plan: &[LayerPlan],
    params: &Parameters<T>,
    input: &[T],
    forward: &TrainingForward<T>,
    grad_logits: &[T],
) -> Result<Vec<(String, Vec<T>)>> {
    let last = plan.len().saturating_sub(1);
    backward_from_heads(
        plan,
        params,
        input,
        forward,
        &[(last, grad_logits.to_vec())],
    )
}

/// As [`backward_training`], for a loss over several outputs (GoogLeNet's auxiliary heads): the
/// gradient of the loss with respect to each head's output, by plan index.
pub fn backward_from_heads<T: Real>(
    plan: &[LayerPlan],
    params: &Parameters<T>,
    input: &[T],
    forward: &TrainingForward<T>,
    head_grads: &[(usize, Vec<T>)],
) -> Result<Vec<(String, Vec<T>)>> {
    let (parameters, _) = backward_heads(plan, params, input, forward, head_grads, false)?;
    Ok(parameters)
}

/// As [`backward_from_heads`], and the gradient of the network's input too (style transfer
/// optimises the image): the parameter gradients, then the input's.
pub fn backward_to_input<T: Real>(
    plan: &[LayerPlan],
    params: &Parameters<T>,
    input: &[T],
    forward: &TrainingForward<T>,
    head_grads: &[(usize, Vec<T>)],
) -> Result<(NamedGradients<T>, Vec<T>)> {
    let (parameters, grad_input) = backward_heads(plan, params, input, forward, head_grads, true)?;
    let grad_input = grad_input.unwrap_or_else(|| vec![T::zero(); input.len()]);
    Ok((parameters, grad_input))
}

/// The backward pass of [`backward_from_heads`]; with `input_gradient`, also the gradient of
/// the network's input (`None` when no layer that reads it reaches a head).
fn backward_heads<T: Real>(
    plan: &[LayerPlan],
    params: &Parameters<T>,
    input: &[T],
    forward: &TrainingForward<T>,
    head_grads: &[(usize, Vec<T>)],
    input_gradient: bool,
) -> Result<(NamedGradients<T>, Option<Vec<T>>)> {
    const OP: &str = "backward_training";
    crate::model::check_plan(plan)?;
    check_len(OP, "the list of outputs", forward.outputs.len(), plan.len())?;
    check_len(OP, "the batch norms", forward.batch_norms.len(), plan.len())?;
    let mut grads: Vec<Option<Vec<T>>> = vec![None; plan.len()];
    for (head, grad) in head_grads {
        let output = forward
            .outputs
            .get(*head)
            .ok_or_else(|| invalid(OP, format!("no layer {head} to take a loss of")))?;
        check_len(OP, "a head's gradient", grad.len(), output.len())?;
        match &mut grads[*head] {
            Some(sum) => sum.iter_mut().zip(grad).for_each(|(s, &v)| *s = *s + v),
            slot @ None => *slot = Some(grad.clone()),
        }
    }
    let mut parameters: Vec<(String, Vec<T>)> = Vec::new();
    let mut grad_input: Option<Vec<T>> = None;
    for (i, layer) in plan.iter().enumerate().rev() {
        // A layer whose output reaches no loss (an auxiliary head the loss leaves out) has
        // no gradient.
        let Some(g) = grads[i].take() else { continue };
        let name = &layer.layer.name;
        let inputs = sources_of(layer, input, &forward.outputs);
        let output = &forward.outputs[i];
        let reads_layers = input_gradient
            || layer
                .sources
                .iter()
                .any(|(s, _)| matches!(s, Source::Layer(_)));
        let to_sources: Vec<Vec<T>> = match layer.layer.kind {
            LayerKind::BatchNorm { eps, relu } => {
                let norm = forward.batch_norms[i].as_ref().ok_or_else(|| {
                    invalid(OP, format!("batch norm {name} has no batch statistics"))
                })?;
                let (weight, _) = params.layer(name)?;
                let (dx, dw, db) = batch_norm_train_backward(
                    inputs[0],
                    layer.input,
                    weight,
                    norm,
                    &g,
                    (eps, relu),
                )?;
                parameters.push((format!("{name}.bias"), db));
                parameters.push((format!("{name}.weight"), dw));
                dx.into_iter().collect()
            }
            LayerKind::Add { relu } => {
                let d = add_backward(output, &g, relu)?;
                vec![d; inputs.len()]
            }
            LayerKind::Concat => {
                let sizes: Vec<usize> = layer.sources.iter().map(|(_, d)| d.len()).collect();
                concat_backward(&g, &sizes, layer.batch)?
            }
            LayerKind::AdaptiveAvgPool { .. } => {
                vec![adaptive_avg_pool_backward(&g, layer.input, layer.output)?]
            }
            _ => {
                let d = layer_backward(layer, inputs[0], output, &g, params, reads_layers)?;
                if let Some(b) = d.bias {
                    parameters.push((format!("{name}.bias"), b));
                }
                if let Some(w) = d.weight {
                    parameters.push((format!("{name}.weight"), w));
                }
                d.input.into_iter().collect()
            }
        };
        for ((source, _), d) in layer.sources.iter().zip(to_sources) {
            let slot = match *source {
                Source::Layer(j) => &mut grads[j],
                Source::Input if input_gradient => &mut grad_input,
                Source::Input => continue,
            };
            match slot {
                Some(sum) => sum.iter_mut().zip(&d).for_each(|(s, &v)| *s = *s + v),
                None => *slot = Some(d),
            }
        }
    }
    parameters.reverse();
    Ok((parameters, grad_input))
}

/// One layer's gradients: of its input (when asked for) and of its parameters.
#[derive(Clone, Debug, Default)]
pub struct LayerGrads<T> {
    /// The gradient of the layer's input, when asked for.
    pub input: Option<Vec<T>>,
    /// The gradient of its weight (`None` for layers without parameters).
    pub weight: Option<Vec<T>>,
    /// The gradient of its bias (`None` for layers without parameters).
    pub bias: Option<Vec<T>>,
}

/// Backward through one layer, given its input, its output and the gradient of its output.
/// Fails for a layer whose backward needs batch statistics or several inputs (see
/// [`backward_training`]), a missing parameter, or lengths that do not fit the plan.
pub fn layer_backward<T: Real>(
    plan: &LayerPlan,
    input: &[T],
    output: &[T],
    grad_output: &[T],
    params: &Parameters<T>,
    need_input_grad: bool,
) -> Result<LayerGrads<T>> {
    let name = &plan.layer.name;
    let with_params = |(input, weight, bias): Gradients<T>| LayerGrads {
        input,
        weight: Some(weight),
        bias: Some(bias),
    };
    let dy_of = |relu: bool| {
        check_len(
            &format!("layer {name}"),
            "grad_output",
            grad_output.len(),
            output.len(),
        )?;
        Ok::<_, Error>(if relu {
            relu_backward(output, grad_output)
        } else {
            grad_output.to_vec()
        })
    };
    Ok(match &plan.layer.kind {
        LayerKind::Conv2d { relu, bias, .. } => {
            let spec = ConvSpec::of(plan).expect("a conv layer");
            let dy = dy_of(*relu)?;
            let w = params.tensor(name, "weight")?;
            let grads = with_params(conv2d_backward(input, w, &dy, &spec, need_input_grad)?);
            // Without a bias (a batch norm follows), the bias gradient is not a parameter's.
            LayerGrads {
                bias: grads.bias.filter(|_| *bias),
                ..grads
            }
        }
        LayerKind::Linear { relu, .. } => {
            let dy = dy_of(*relu)?;
            let (w, _) = params.layer(name)?;
            with_params(linear_backward(input, w, &dy, plan.batch, need_input_grad)?)
        }
        kind @ LayerKind::Lrn { .. } => LayerGrads {
            input: Some(lrn_backward(
                input,
                grad_output,
                plan.batch,
                plan.input,
                &lrn_spec(kind).expect("an LRN layer"),
            )?),
            ..Default::default()
        },
        LayerKind::MaxPool { .. } => LayerGrads {
            input: Some(max_pool_backward(
                input,
                grad_output,
                &pool_spec(plan).expect("a pooling layer"),
            )?),
            ..Default::default()
        },
        LayerKind::BatchNorm { .. }
        | LayerKind::Add { .. }
        | LayerKind::AdaptiveAvgPool { .. }
        | LayerKind::Concat => return Err(unsupported_backward(plan)),
    })
}

/// The error for [`layer_backward`] on a layer whose backward needs more than its input, output
/// and parameters (batch statistics, several inputs): [`backward_training`] handles those.
fn unsupported_backward(plan: &LayerPlan) -> Error {
    Error::InvalidArgument(format!(
        "layer {}: layer_backward handles convolutions, LRN, max pooling and fully connected \
         layers; backward_training handles every layer",
        plan.layer.name
    ))
}

/// The gradients of `l2_loss(last output)` with respect to every parameter tensor, named as in
/// the weights file and in its layouts, in the network's order, through the given forward
/// pass's layer outputs (see [`backward_through`]).
pub fn backward<T: Real>(
    plan: &[LayerPlan],
    params: &Parameters<T>,
    input: &[T],
    outputs: &[Vec<T>],
) -> Result<Vec<(String, Vec<T>)>> {
    let Some(last) = outputs.last() else {
        return Err(invalid("backward", "the plan has no layers"));
    };
    let head = (outputs.len() - 1, last.clone());
    backward_through(plan, params, input, outputs, &[head])
}

/// The gradients of a loss with respect to every parameter tensor, given its gradient with
/// respect to each head's output (see [`loss`]), through the given forward pass's layer outputs
/// (which may come from the GPU: the gradient then follows the GPU's own max-pooling choices
/// and ReLU masks). Batch norms run in training mode, their batch statistics computed from
/// their inputs among `outputs`. Fails when `outputs` are not one per layer of the plan's
/// lengths.
pub fn backward_through<T: Real>(
    plan: &[LayerPlan],
    params: &Parameters<T>,
    input: &[T],
    outputs: &[Vec<T>],
    head_grads: &[(usize, Vec<T>)],
) -> Result<Vec<(String, Vec<T>)>> {
    check_len("backward", "the list of outputs", outputs.len(), plan.len())?;
    let mut batch_norms = Vec::with_capacity(plan.len());
    for layer in plan {
        let norm = match layer.layer.kind {
            LayerKind::BatchNorm { eps, relu } => {
                let inputs = sources_of(layer, input, outputs);
                let (weight, bias) = params.layer(&layer.layer.name)?;
                let mut norm =
                    batch_norm_train_forward(inputs[0], layer.input, (weight, bias), eps, relu)?;
                // The ReLU mask is the given output's.
                norm.output.clone_from(&outputs[batch_norms.len()]);
                Some(norm)
            }
            _ => None,
        };
        batch_norms.push(norm);
    }
    let forward = TrainingForward {
        outputs: outputs.to_vec(),
        batch_norms,
    };
    backward_from_heads(plan, params, input, &forward, head_grads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Layer, Network, Padding};

    fn dims(channels: usize, height: usize, width: usize) -> Dims {
        Dims {
            channels,
            height,
            width,
        }
    }

    fn invalid<T: Debug>(result: Result<T>) -> String {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        err.to_string()
    }

    fn conv_spec(groups: usize) -> ConvSpec {
        ConvSpec {
            batch: 1,
            input: dims(2, 3, 3),
            output: dims(2, 3, 3),
            window: Window::square(3, 1, Padding::Same),
            pad: Pad {
                top: 1,
                bottom: 1,
                left: 1,
                right: 1,
            },
            groups,
            relu: false,
        }
    }

    #[test]
    fn conv2d_refuses_lengths_and_groups_that_do_not_fit() {
        let spec = conv_spec(1);
        let (x, w, b) = (vec![1.0f32; 18], vec![0.5; 36], vec![0.0; 2]);
        assert_eq!(conv2d_forward(&x, &w, &b, &spec).unwrap().len(), 18);
        assert!(invalid(conv2d_forward(&x[1..], &w, &b, &spec)).contains("input holds 17"));
        invalid(conv2d_forward(&x, &w[1..], &b, &spec));
        invalid(conv2d_forward(&x, &w, &b[1..], &spec));
        invalid(conv2d_forward(&x, &w, &b, &conv_spec(0)));
        invalid(conv2d_forward(&x, &w, &b, &conv_spec(3)));
        let dy = vec![1.0f32; 18];
        assert!(conv2d_backward(&x, &w, &dy, &spec, true).is_ok());
        invalid(conv2d_backward(&x, &w, &dy[1..], &spec, true));
        invalid(conv2d_backward(&x, &w[1..], &dy, &spec, true));
        invalid(conv2d_backward(&x, &w, &dy, &conv_spec(0), true));
    }

    #[test]
    fn lrn_refuses_lengths_and_groups_that_do_not_fit() {
        let spec = |groups| LrnSpec {
            depth_radius: 2,
            bias: 1.0,
            alpha: 1e-4,
            beta: 0.75,
            groups,
        };
        let x = vec![1.0f64; 2 * 4 * 2];
        assert!(lrn_forward(&x, 2, dims(4, 2, 1), &spec(2)).is_ok());
        invalid(lrn_forward(&x, 3, dims(4, 2, 1), &spec(1)));
        invalid(lrn_forward(&x, 2, dims(4, 2, 1), &spec(0)));
        invalid(lrn_forward(&x, 2, dims(4, 2, 1), &spec(3)));
        assert!(lrn_backward(&x, &x, 2, dims(4, 2, 1), &spec(1)).is_ok());
        invalid(lrn_backward(&x, &x[1..], 2, dims(4, 2, 1), &spec(1)));
        invalid(lrn_backward(&x, &x, 2, dims(4, 2, 1), &spec(0)));
    }

    #[test]
    fn max_pool_refuses_lengths_and_windows_without_input() {
        let spec = |input: Dims, output: Dims, pad: Pad| PoolSpec {
            batch: 1,
            input,
            output,
            window: Window::square(2, 2, Padding::Valid),
            pad,
        };
        let good = spec(dims(1, 4, 4), dims(1, 2, 2), Pad::default());
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(max_pool_forward(&x, &good).unwrap(), [5.0, 7.0, 13.0, 15.0]);
        invalid(max_pool_forward(&x[1..], &good));
        // Padding as large as the window: the first window holds padding only.
        let padded = Pad {
            top: 2,
            ..Pad::default()
        };
        invalid(max_pool_forward(
            &x,
            &spec(dims(1, 4, 4), dims(1, 2, 2), padded),
        ));
        // More outputs than windows that reach the input.
        invalid(max_pool_forward(
            &x,
            &spec(dims(1, 4, 4), dims(1, 3, 2), Pad::default()),
        ));
        invalid(max_pool_forward::<f32>(
            &[],
            &spec(dims(1, 0, 0), dims(1, 0, 0), Pad::default()),
        ));
        invalid(max_pool_forward(
            &x,
            &spec(dims(1, 4, 4), dims(2, 2, 2), Pad::default()),
        ));
        assert!(max_pool_backward(&x, &[1.0; 4], &good).is_ok());
        invalid(max_pool_backward(&x, &[1.0; 3], &good));
    }

    #[test]
    fn linear_refuses_rows_and_weights_that_do_not_fit() {
        let (x, w, b) = (vec![1.0f32; 6], vec![1.0; 6], vec![0.0; 2]);
        assert_eq!(linear_forward(&x, 2, &w, &b, true).unwrap(), [3.0; 4]);
        invalid(linear_forward(&x, 0, &w, &b, true));
        invalid(linear_forward(&x, 4, &w, &b, true));
        invalid(linear_forward(&x, 2, &w[1..], &b, true));
        let dy = vec![1.0f32; 4];
        assert!(linear_backward(&x, &w, &dy, 2, true).is_ok());
        invalid(linear_backward(&x, &w, &dy, 0, true));
        invalid(linear_backward(&x, &w, &dy[1..], 2, true));
        invalid(linear_backward(&x, &w[1..], &dy, 2, true));
    }

    #[test]
    fn batch_norm_add_pool_and_concat_refuse_lengths_that_do_not_fit() {
        let x = vec![1.0f32; 8];
        let stat = [1.0f32; 2];
        let stats = [&stat[..]; 4];
        assert!(batch_norm_forward(&x, dims(2, 2, 1), stats, 1e-5, false).is_ok());
        invalid(batch_norm_forward(
            &x[1..],
            dims(2, 2, 1),
            stats,
            1e-5,
            false,
        ));
        invalid(batch_norm_forward(&x, dims(2, 0, 1), stats, 1e-5, false));
        let short = [&stat[..], &stat[..], &stat[..1], &stat[..]];
        invalid(batch_norm_forward(&x, dims(2, 2, 1), short, 1e-5, false));

        assert_eq!(add_forward(&[&x[..2], &x[2..4]], false).unwrap(), [2.0; 2]);
        invalid(add_forward::<f32>(&[], false));
        invalid(add_forward(&[&x[..2], &x[2..5]], false));

        assert!(adaptive_avg_pool_forward(&x, dims(2, 2, 2), dims(2, 1, 1)).is_ok());
        invalid(adaptive_avg_pool_forward(&x, dims(2, 2, 2), dims(2, 0, 1)));
        invalid(adaptive_avg_pool_forward(&x, dims(2, 0, 2), dims(2, 1, 1)));
        invalid(adaptive_avg_pool_forward(&x, dims(2, 2, 2), dims(3, 1, 1)));
        invalid(adaptive_avg_pool_forward(
            &x[1..],
            dims(2, 2, 2),
            dims(2, 1, 1),
        ));

        assert_eq!(
            concat_forward(&[&x[..2], &x[..4]], &[1, 2], 2)
                .unwrap()
                .len(),
            6
        );
        invalid(concat_forward(&[&x[..2], &x[..4]], &[1], 2));
        invalid(concat_forward(&[&x[..2], &x[..3]], &[1, 2], 2));
    }

    fn network() -> (Network, Vec<LayerPlan>, Parameters<f64>) {
        let layers = vec![
            Layer::new(
                "conv1",
                LayerKind::Conv2d {
                    out_channels: 2,
                    window: Window::square(3, 1, Padding::Same),
                    groups: 1,
                    relu: true,
                    bias: true,
                },
            ),
            Layer::new(
                "fc1",
                LayerKind::Linear {
                    out_features: 3,
                    relu: false,
                },
            ),
        ];
        let network = Network::new("small", dims(2, 3, 3), layers);
        let plan = network.plan(2).unwrap();
        let weights = Weights::init(&network, 5).unwrap();
        (network, plan, Parameters::from_weights(&weights))
    }

    #[test]
    fn parameters_refuse_a_missing_tensor_or_a_new_length() {
        let (_, _, mut params) = network();
        params.set("fc1.bias", vec![0.0; 3]).unwrap();
        assert_eq!(params.get("fc1.bias").unwrap(), [0.0; 3]);
        assert!(invalid(params.set("fc9.bias", vec![0.0; 3])).contains("fc9.bias"));
        invalid(params.set("fc1.bias", vec![0.0; 4]));
        assert_eq!(params.get("fc1.bias").unwrap(), [0.0; 3]);
        assert_eq!(params.layer("fc1").unwrap().1.len(), 3);
        assert!(invalid(params.layer("fc9")).contains("fc9.weight"));
    }

    #[test]
    fn layers_refuse_inputs_parameters_and_kinds_that_do_not_fit() {
        let (_, plan, params) = network();
        let x = vec![0.5f64; 2 * 18];
        let y = layer_forward(&plan[0], &[&x], &params).unwrap();
        invalid(layer_forward(&plan[0], &[], &params));
        invalid(layer_forward(&plan[0], &[&x, &x], &params));
        invalid(layer_forward(&plan[0], &[&x[1..]], &params));
        let empty = Parameters::<f64> {
            tensors: Vec::new(),
        };
        assert!(invalid(layer_forward(&plan[0], &[&x], &empty)).contains("conv1.weight"));

        assert!(layer_backward(&plan[0], &x, &y, &y, &params, true).is_ok());
        invalid(layer_backward(&plan[0], &x, &y, &y[1..], &params, true));
        invalid(layer_backward(&plan[0], &x, &y, &y, &empty, true));
        let mut norm = plan[0].clone();
        norm.layer.kind = LayerKind::BatchNorm {
            eps: 1e-5,
            relu: false,
        };
        assert!(invalid(layer_backward(&norm, &x, &x, &x, &params, true)).contains("backward"));
    }

    #[test]
    fn forward_and_backward_refuse_inputs_and_plans_that_do_not_fit() {
        let (network, plan, params) = network();
        let x = vec![0.5f64; 2 * 18];
        let outputs = forward(&plan, &params, &x).unwrap();
        assert_eq!(backward(&plan, &params, &x, &outputs).unwrap().len(), 4);
        invalid(forward(&plan, &params, &x[1..]));
        invalid(forward(&[], &params, &x));
        invalid(backward(&plan, &params, &x, &outputs[1..]));
        invalid(backward(&[], &params, &x, &[]));
        let mut unsupported = network;
        unsupported.layers.push(Layer::new(
            "norm",
            LayerKind::BatchNorm {
                eps: 1e-5,
                relu: false,
            },
        ));
        let plan = unsupported.plan(2).unwrap();
        invalid(backward(&plan, &params, &x, &outputs));
    }
}
