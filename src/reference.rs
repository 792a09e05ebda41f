//! The CPU reference: every op, forward and backward, plainly, on NCHW slices. This is the
//! specification the GPU kernels are checked against, so it favours being obviously right over
//! being fast. Every op is generic over the float type: f32 to compare with the GPU bit for bit
//! in spirit, f64 as the exact answer that both are measured against (the numerical note in
//! docs/networks.md, 'The seed': f32 frameworks disagree by ~0.6% on conv1's and conv2's weight
//! gradients, so f32 alone cannot be the judge). The one concession to speed is the matrix product,
//! done by the `matrixmultiply` crate (convolution as an explicit im2col followed by that product).

use std::fmt::Debug;
use std::iter::Sum;

use crate::model::{Dims, LayerKind, LayerPlan, Pad, Source, Window};
use crate::weights::Weights;

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

/// `c = (accumulate ? c : 0) + a * b`, c dense row-major.
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
    pub batch: usize,
    pub input: Dims,
    pub output: Dims,
    pub window: Window,
    pub pad: Pad,
    pub groups: usize,
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

/// 2-D convolution with bias and optional ReLU. `weight` is `[out, in/groups, kh, kw]`.
pub fn conv2d_forward<T: Real>(input: &[T], weight: &[T], bias: &[T], spec: &ConvSpec) -> Vec<T> {
    let (taps, plane, opg) = (spec.taps(), spec.out_plane(), spec.out_per_group());
    assert_eq!(input.len(), spec.batch * spec.input.len());
    assert_eq!(weight.len(), spec.output.channels * taps);
    assert_eq!(bias.len(), spec.output.channels);
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
    output
}

/// Gradients of a convolution. `grad_output` is the gradient of the convolution's result
/// (after ReLU's backward, where there is one). Returns (input gradient if asked for, weight
/// gradient `[out, in/groups, kh, kw]`, bias gradient).
pub fn conv2d_backward<T: Real>(
    input: &[T],
    weight: &[T],
    grad_output: &[T],
    spec: &ConvSpec,
    need_input_grad: bool,
) -> (Option<Vec<T>>, Vec<T>, Vec<T>) {
    let (taps, plane, opg) = (spec.taps(), spec.out_plane(), spec.out_per_group());
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
    (grad_input, grad_weight, grad_bias)
}

/// LRN's parameters, TensorFlow's names.
#[derive(Clone, Copy, Debug)]
pub struct LrnSpec {
    pub depth_radius: usize,
    pub bias: f32,
    pub alpha: f32,
    pub beta: f32,
    pub groups: usize,
}

impl LrnSpec {
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
/// `x / (bias + alpha * sum_{window} x^2)^beta`, window clipped at the channel ends.
pub fn lrn_forward<T: Real>(input: &[T], batch: usize, dims: Dims, spec: &LrnSpec) -> Vec<T> {
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
    output
}

/// LRN backward: `g[j] d[j]^-beta - 2 alpha beta x[j] sum_{c in window(j)} g[c] x[c] d[c]^(-beta-1)`.
pub fn lrn_backward<T: Real>(
    input: &[T],
    grad_output: &[T],
    batch: usize,
    dims: Dims,
    spec: &LrnSpec,
) -> Vec<T> {
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
    grad_input
}

/// A pooling window's geometry at one layer.
#[derive(Clone, Copy, Debug)]
pub struct PoolSpec {
    pub batch: usize,
    pub input: Dims,
    pub output: Dims,
    pub window: Window,
    pub pad: Pad,
}

impl PoolSpec {
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
        best.expect("a window always covers part of the input").1
    }
}

/// Max pooling over the positions of each window that lie inside the input.
pub fn max_pool_forward<T: Real>(input: &[T], spec: &PoolSpec) -> Vec<T> {
    let mut output = Vec::with_capacity(spec.batch * spec.output.len());
    for plane in input.chunks(spec.input.height * spec.input.width) {
        for oy in 0..spec.output.height {
            for ox in 0..spec.output.width {
                output.push(plane[spec.argmax(plane, oy, ox)]);
            }
        }
    }
    output
}

/// Max pooling backward: each output gradient goes to its window's (first) maximum.
pub fn max_pool_backward<T: Real>(input: &[T], grad_output: &[T], spec: &PoolSpec) -> Vec<T> {
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
    grad_input
}

/// Fully connected layer: `output[n, o] = sum_i input[n, i] * weight[o, i] + bias[o]`, optional ReLU.
pub fn linear_forward<T: Real>(
    input: &[T],
    batch: usize,
    weight: &[T],
    bias: &[T],
    relu: bool,
) -> Vec<T> {
    let (out_features, in_features) = (bias.len(), input.len() / batch);
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
    output
}

/// Gradients of a fully connected layer: (input gradient if asked for, weight gradient
/// `[out, in]`, bias gradient).
pub fn linear_backward<T: Real>(
    input: &[T],
    weight: &[T],
    grad_output: &[T],
    batch: usize,
    need_input_grad: bool,
) -> (Option<Vec<T>>, Vec<T>, Vec<T>) {
    let out_features = grad_output.len() / batch;
    let in_features = input.len() / batch;
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
    (grad_input, grad_weight, grad_bias)
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
pub fn batch_norm_forward<T: Real>(
    input: &[T],
    dims: Dims,
    stats: [&[T]; 4],
    eps: f32,
    relu: bool,
) -> Vec<T> {
    let [weight, bias, mean, var] = stats;
    let plane = dims.height * dims.width;
    input
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
        .collect()
}

/// The element-wise sum of equally shaped tensors, then ReLU if asked for.
pub fn add_forward<T: Real>(inputs: &[&[T]], relu: bool) -> Vec<T> {
    (0..inputs[0].len())
        .map(|i| {
            let sum: T = inputs.iter().map(|x| x[i]).sum();
            if relu {
                sum.max(T::zero())
            } else {
                sum
            }
        })
        .collect()
}

/// PyTorch's adaptive average pooling from `input` dims to `output` dims (same channels).
pub fn adaptive_avg_pool_forward<T: Real>(input: &[T], input_dims: Dims, output: Dims) -> Vec<T> {
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
    result
}

/// Stacks each image's tensors along channels, in order. `sizes` are the per-image lengths.
pub fn concat_forward<T: Real>(inputs: &[&[T]], sizes: &[usize], batch: usize) -> Vec<T> {
    let mut output = Vec::with_capacity(sizes.iter().sum::<usize>() * batch);
    for n in 0..batch {
        for (x, &size) in inputs.iter().zip(sizes) {
            output.extend_from_slice(&x[n * size..][..size]);
        }
    }
    output
}

/// The benchmark's loss, TensorFlow's `l2_loss(logits) = sum(logits^2) / 2`. Its gradient is the
/// logits.
pub fn l2_loss<T: Real>(logits: &[T]) -> T {
    logits.iter().map(|&v| v * v).sum::<T>() / (T::one() + T::one())
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

    /// Replaces the tensor called `name` (same length), e.g. to probe finite differences.
    pub fn set(&mut self, name: &str, values: Vec<T>) {
        let slot = self
            .tensors
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no tensor {name}"));
        assert_eq!(slot.1.len(), values.len(), "{name}: length changes");
        slot.1 = values;
    }

    /// The tensor called `name`, if the network has one.
    pub fn get(&self, name: &str) -> Option<&[T]> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_slice())
    }

    /// The tensor `{layer}.{suffix}`. Panics if missing: parameters are built for their network.
    fn tensor(&self, layer: &str, suffix: &str) -> &[T] {
        let name = format!("{layer}.{suffix}");
        self.get(&name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }

    /// A layer's weight and bias.
    pub fn layer(&self, layer: &str) -> (&[T], &[T]) {
        (self.tensor(layer, "weight"), self.tensor(layer, "bias"))
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

/// Runs one planned layer on the CPU, given what it reads (see [`LayerPlan::sources`]).
pub fn layer_forward<T: Real>(plan: &LayerPlan, inputs: &[&[T]], params: &Parameters<T>) -> Vec<T> {
    let name = &plan.layer.name;
    let input = inputs[0];
    match &plan.layer.kind {
        LayerKind::Conv2d { bias, .. } => {
            let weight = params.tensor(name, "weight");
            let zeros = vec![T::zero(); plan.output.channels];
            let b = if *bias {
                params.tensor(name, "bias")
            } else {
                &zeros
            };
            conv2d_forward(input, weight, b, &ConvSpec::of(plan).expect("a conv layer"))
        }
        LayerKind::BatchNorm { eps, relu } => {
            let stats = ["weight", "bias", "running_mean", "running_var"]
                .map(|suffix| params.tensor(name, suffix));
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
            let (w, b) = params.layer(name);
            linear_forward(input, plan.batch, w, b, *relu)
        }
    }
}

/// Runs a whole planned network on the CPU and returns every layer's output, in order.
pub fn forward<T: Real>(plan: &[LayerPlan], params: &Parameters<T>, input: &[T]) -> Vec<Vec<T>> {
    let mut outputs: Vec<Vec<T>> = Vec::with_capacity(plan.len());
    for layer in plan {
        let inputs: Vec<&[T]> = layer
            .sources
            .iter()
            .map(|(source, _)| match source {
                Source::Input => input,
                Source::Layer(j) => outputs[*j].as_slice(),
            })
            .collect();
        let y = layer_forward(layer, &inputs, params);
        outputs.push(y);
    }
    outputs
}

/// One layer's gradients: of its input (when asked for) and of its parameters.
#[derive(Clone, Debug, Default)]
pub struct LayerGrads<T> {
    pub input: Option<Vec<T>>,
    pub weight: Option<Vec<T>>,
    pub bias: Option<Vec<T>>,
}

/// Backward through one layer, given its input, its output and the gradient of its output.
pub fn layer_backward<T: Real>(
    plan: &LayerPlan,
    input: &[T],
    output: &[T],
    grad_output: &[T],
    params: &Parameters<T>,
    need_input_grad: bool,
) -> LayerGrads<T> {
    let name = &plan.layer.name;
    let with_params = |(input, weight, bias): (Option<Vec<T>>, Vec<T>, Vec<T>)| LayerGrads {
        input,
        weight: Some(weight),
        bias: Some(bias),
    };
    match &plan.layer.kind {
        LayerKind::Conv2d { relu, .. } => {
            let spec = ConvSpec::of(plan).expect("a conv layer");
            let dy = if *relu {
                relu_backward(output, grad_output)
            } else {
                grad_output.to_vec()
            };
            let (w, _) = params.layer(name);
            with_params(conv2d_backward(input, w, &dy, &spec, need_input_grad))
        }
        LayerKind::Linear { relu, .. } => {
            let dy = if *relu {
                relu_backward(output, grad_output)
            } else {
                grad_output.to_vec()
            };
            let (w, _) = params.layer(name);
            with_params(linear_backward(input, w, &dy, plan.batch, need_input_grad))
        }
        kind @ LayerKind::Lrn { .. } => LayerGrads {
            input: Some(lrn_backward(
                input,
                grad_output,
                plan.batch,
                plan.input,
                &lrn_spec(kind).expect("an LRN layer"),
            )),
            ..Default::default()
        },
        LayerKind::MaxPool { .. } => LayerGrads {
            input: Some(max_pool_backward(
                input,
                grad_output,
                &pool_spec(plan).expect("a pooling layer"),
            )),
            ..Default::default()
        },
        LayerKind::BatchNorm { .. }
        | LayerKind::Add { .. }
        | LayerKind::AdaptiveAvgPool { .. }
        | LayerKind::Concat => {
            unreachable!("backward runs only where Network::supports_backward")
        }
    }
}

/// The gradients of `l2_loss(last output)` with respect to every parameter tensor, named as in
/// the weights file and in its layouts, in the network's order. `outputs` are the forward
/// pass's layer outputs. For the networks that [`supports_backward`] (chains).
///
/// [`supports_backward`]: crate::model::Network::supports_backward
pub fn backward<T: Real>(
    plan: &[LayerPlan],
    params: &Parameters<T>,
    input: &[T],
    outputs: &[Vec<T>],
) -> Vec<(String, Vec<T>)> {
    let mut grads = Vec::new();
    let mut grad = outputs.last().expect("a network has layers").clone();
    for (i, layer) in plan.iter().enumerate().rev() {
        let x = if i == 0 { input } else { &outputs[i - 1] };
        let g = layer_backward(layer, x, &outputs[i], &grad, params, i > 0);
        let name = &layer.layer.name;
        if let (Some(w), Some(b)) = (g.weight, g.bias) {
            grads.push((format!("{name}.bias"), b));
            grads.push((format!("{name}.weight"), w));
        }
        if let Some(dx) = g.input {
            grad = dx;
        }
    }
    grads.reverse();
    grads
}
