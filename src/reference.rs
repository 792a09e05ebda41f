//! The CPU reference: every op, plainly, on NCHW f32 slices. This is the specification the GPU
//! kernels are checked against, so it favours being obviously right over being fast. The one
//! concession to speed is the matrix product, done by the `matrixmultiply` crate (convolution as
//! an explicit im2col followed by that product), so a batch of 32 checks in seconds.

use crate::model::{Dims, LayerKind, LayerPlan, Pad, Window};
use crate::weights::Weights;

/// `c[m, n] = sum_k a[m, k] * b[k, n]` with explicit row and column strides for a and b,
/// written into a dense row-major `c` (overwritten).
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_strides: (isize, isize),
    b: &[f32],
    b_strides: (isize, isize),
    c: &mut [f32],
) {
    assert!(c.len() >= m * n);
    // SAFETY: the callers pass slices that cover every index the strides reach
    // (checked by the asserts in conv2d_forward and linear_forward).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            a_strides.0,
            a_strides.1,
            b.as_ptr(),
            b_strides.0,
            b_strides.1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
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

/// The im2col matrix of one image and group: `[in_per_group * kh * kw, out_h * out_w]`,
/// zero where a tap falls into the padding.
fn im2col(image: &[f32], spec: &ConvSpec, group: usize) -> Vec<f32> {
    let in_per_group = spec.input.channels / spec.groups;
    let (h, w) = (spec.input.height, spec.input.width);
    let (oh, ow) = (spec.output.height, spec.output.width);
    let win = &spec.window;
    let mut columns = vec![0.0f32; in_per_group * win.height * win.width * oh * ow];
    let mut row = 0;
    for c in 0..in_per_group {
        let plane = &image[(group * in_per_group + c) * h * w..][..h * w];
        for ky in 0..win.height {
            for kx in 0..win.width {
                let out_row = &mut columns[row * oh * ow..][..oh * ow];
                for y in 0..oh {
                    let iy = (y * win.stride_height + ky) as isize - spec.pad.top as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for x in 0..ow {
                        let ix = (x * win.stride_width + kx) as isize - spec.pad.left as isize;
                        if ix >= 0 && ix < w as isize {
                            out_row[y * ow + x] = plane[iy as usize * w + ix as usize];
                        }
                    }
                }
                row += 1;
            }
        }
    }
    columns
}

/// 2-D convolution with bias and optional ReLU. `weight` is `[out, in/groups, kh, kw]`.
pub fn conv2d_forward(input: &[f32], weight: &[f32], bias: &[f32], spec: &ConvSpec) -> Vec<f32> {
    let in_per_group = spec.input.channels / spec.groups;
    let out_per_group = spec.output.channels / spec.groups;
    let taps = in_per_group * spec.window.height * spec.window.width;
    let plane = spec.output.height * spec.output.width;
    assert_eq!(input.len(), spec.batch * spec.input.len());
    assert_eq!(weight.len(), spec.output.channels * taps);
    assert_eq!(bias.len(), spec.output.channels);
    let mut output = vec![0.0f32; spec.batch * spec.output.len()];
    for n in 0..spec.batch {
        let image = &input[n * spec.input.len()..][..spec.input.len()];
        for g in 0..spec.groups {
            let columns = im2col(image, spec, g);
            let w = &weight[g * out_per_group * taps..][..out_per_group * taps];
            let out = &mut output[(n * spec.output.channels + g * out_per_group) * plane..]
                [..out_per_group * plane];
            matmul(
                out_per_group,
                taps,
                plane,
                w,
                (taps as isize, 1),
                &columns,
                (plane as isize, 1),
                out,
            );
            for (o, row) in out.chunks_mut(plane).enumerate() {
                let b = bias[g * out_per_group + o];
                for v in row {
                    *v += b;
                    if spec.relu {
                        *v = v.max(0.0);
                    }
                }
            }
        }
    }
    output
}

/// Local response normalisation across channels, TensorFlow's semantics:
/// `x / (bias + alpha * sum_{window} x^2)^beta`, window clipped at the channel ends.
pub fn lrn_forward(
    input: &[f32],
    batch: usize,
    dims: Dims,
    depth_radius: usize,
    bias: f32,
    alpha: f32,
    beta: f32,
) -> Vec<f32> {
    let plane = dims.height * dims.width;
    let mut output = vec![0.0f32; input.len()];
    for n in 0..batch {
        for c in 0..dims.channels {
            let lo = c.saturating_sub(depth_radius);
            let hi = (c + depth_radius).min(dims.channels - 1);
            for p in 0..plane {
                let at = |k: usize| input[(n * dims.channels + k) * plane + p];
                let sum_sq: f32 = (lo..=hi).map(|k| at(k) * at(k)).sum();
                output[(n * dims.channels + c) * plane + p] =
                    at(c) * (bias + alpha * sum_sq).powf(-beta);
            }
        }
    }
    output
}

/// Max pooling over the positions of each window that lie inside the input.
pub fn max_pool_forward(
    input: &[f32],
    batch: usize,
    input_dims: Dims,
    output_dims: Dims,
    window: &Window,
    pad: &Pad,
) -> Vec<f32> {
    let (h, w) = (input_dims.height, input_dims.width);
    let mut output = Vec::with_capacity(batch * output_dims.len());
    for plane in input.chunks(h * w) {
        for oy in 0..output_dims.height {
            for ox in 0..output_dims.width {
                let mut best = f32::NEG_INFINITY;
                for ky in 0..window.height {
                    for kx in 0..window.width {
                        let iy = (oy * window.stride_height + ky) as isize - pad.top as isize;
                        let ix = (ox * window.stride_width + kx) as isize - pad.left as isize;
                        if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                            best = best.max(plane[iy as usize * w + ix as usize]);
                        }
                    }
                }
                output.push(best);
            }
        }
    }
    output
}

/// Fully connected layer: `output[n, o] = sum_i input[n, i] * weight[o, i] + bias[o]`, optional ReLU.
pub fn linear_forward(
    input: &[f32],
    batch: usize,
    weight: &[f32],
    bias: &[f32],
    relu: bool,
) -> Vec<f32> {
    let out_features = bias.len();
    let in_features = input.len() / batch;
    assert_eq!(input.len(), batch * in_features);
    assert_eq!(weight.len(), out_features * in_features);
    let mut output = vec![0.0f32; batch * out_features];
    matmul(
        batch,
        in_features,
        out_features,
        input,
        (in_features as isize, 1),
        weight,
        (1, in_features as isize),
        &mut output,
    );
    for row in output.chunks_mut(out_features) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
            if relu {
                *v = v.max(0.0);
            }
        }
    }
    output
}

/// Runs one planned layer on the CPU.
pub fn layer_forward(plan: &LayerPlan, input: &[f32], weights: &Weights) -> Vec<f32> {
    let name = &plan.layer.name;
    match &plan.layer.kind {
        LayerKind::Conv2d {
            window,
            groups,
            relu,
            ..
        } => {
            let spec = ConvSpec {
                batch: plan.batch,
                input: plan.input,
                output: plan.output,
                window: *window,
                pad: plan.pad,
                groups: *groups,
                relu: *relu,
            };
            let (w, b) = weights.layer(name);
            conv2d_forward(input, w, b, &spec)
        }
        LayerKind::Lrn {
            depth_radius,
            bias,
            alpha,
            beta,
        } => lrn_forward(
            input,
            plan.batch,
            plan.input,
            *depth_radius,
            *bias,
            *alpha,
            *beta,
        ),
        LayerKind::MaxPool { window } => max_pool_forward(
            input,
            plan.batch,
            plan.input,
            plan.output,
            window,
            &plan.pad,
        ),
        LayerKind::Linear { relu, .. } => {
            let (w, b) = weights.layer(name);
            linear_forward(input, plan.batch, w, b, *relu)
        }
    }
}

/// Runs a whole planned network on the CPU and returns every layer's output, in order.
pub fn forward(plan: &[LayerPlan], weights: &Weights, input: &[f32]) -> Vec<Vec<f32>> {
    let mut outputs: Vec<Vec<f32>> = Vec::with_capacity(plan.len());
    for layer in plan {
        let x = outputs.last().map_or(input, Vec::as_slice);
        let y = layer_forward(layer, x, weights);
        outputs.push(y);
    }
    outputs
}
