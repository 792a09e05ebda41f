//! Style transfer: the objective (content features, Gram matrices, total variation) and its
//! gradient with respect to the image, on every adapter against the f64 reference; the
//! reference's gradient against finite differences; the input gradient of a first convolution
//! (which no training pass computes); the loss falling under Adam.
//!
//! Tolerances:
//! - the three loss terms within 1e-4 relative of the f64 reference, and the image's gradient
//!   within 1e-4 of its largest value (`check::GRADIENT_TOLERANCE`): f32 rounding through eight
//!   convolutions and back measures ~1e-6 here. The feature network pools by averaging in the
//!   tight test: a max pool's gradient goes to the window's maximum, a choice f32 and f64 may
//!   make differently where two values tie within rounding (`check`'s docs), which moves the
//!   image's gradient by more than rounding without either being wrong; the max-pool network is
//!   held to the same tolerance on a shape measured free of such ties.
//! - finite differences of the f64 reference: central differences with h = 1e-4 leave
//!   truncation error of order h^2 times the third derivative, 1e-6 relative here.

mod common;

use common::{contexts, dims, random, random_weights, single_layer};
use convnet_wgpu::check::{self, GRADIENT_TOLERANCE};
use convnet_wgpu::gpu::{
    AdamConfig, GpuContext, GpuNetwork, LbfgsConfig, Optimizer, StyleImages, StyleTransfer,
};
use convnet_wgpu::model::{vgg, Dims, LayerKind, LayerPlan, Network, Pad, Padding, Window};
use convnet_wgpu::reference::{self, Parameters};
use convnet_wgpu::style::{self, Objective, Pooling, Targets};
use convnet_wgpu::weights::Weights;

/// Pixels in [0, 1] from a seed.
fn image(dims: Dims, seed: u64) -> Vec<f32> {
    random(dims.len(), seed)
        .into_iter()
        .map(|v| 0.5 + 0.5 * v)
        .collect()
}

fn objective(depth: usize, content: &[&str], style: &[&str], tv_weight: f32) -> Objective {
    let network = vgg(depth).unwrap();
    let names = |list: &[&str]| -> Vec<String> {
        list.iter()
            .map(|n| style::resolve_layer(&network, n).unwrap())
            .collect()
    };
    Objective {
        content_layers: names(content),
        style_layers: names(style),
        content_weight: 1.0,
        style_weight: 1e3,
        tv_weight,
    }
}

/// A style transfer set up on `ctx`: plans at the content and style sizes, weights, images.
struct Setup {
    /// The feature network at the content image's size.
    network: Network,
    plan: Vec<LayerPlan>,
    style_plan: Vec<LayerPlan>,
    weights: Weights,
    content: Vec<f32>,
    style: Vec<f32>,
    initial: Vec<f32>,
}

fn setup(
    depth: usize,
    pooling: Pooling,
    objective: &Objective,
    (content_dims, style_dims): (Dims, Dims),
) -> Setup {
    let layers = objective.layers();
    let network = style::feature_network(depth, pooling, content_dims, &layers).unwrap();
    let style_network = style::feature_network(depth, pooling, style_dims, &layers).unwrap();
    // Random weights of both signs (torchvision's initialisation leaves deep features tiny).
    let weights = random_weights(&network, 3);
    Setup {
        plan: network.plan(1).unwrap(),
        style_plan: style_network.plan(1).unwrap(),
        network,
        weights,
        content: image(content_dims, 11),
        style: image(style_dims, 12),
        initial: image(content_dims, 13),
    }
}

const ADAM: Optimizer = Optimizer::Adam(AdamConfig {
    learning_rate: 0.05,
    beta1: 0.9,
    beta2: 0.999,
    epsilon: 1e-8,
});

fn f64s(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&x| f64::from(x)).collect()
}

impl Setup {
    /// torchvision's initialisation instead of the random weights, as `convnet style` draws
    /// them without a weights file.
    fn with_torchvision_weights(mut self) -> Self {
        self.weights = Weights::init(&self.network, 3).unwrap();
        self
    }

    /// The reference's parameters and targets, in f64.
    fn reference(&self, objective: &Objective) -> (Parameters<f64>, Targets<f64>) {
        let params = Parameters::<f64>::from_weights(&self.weights);
        let targets = style::reference_targets(
            (&self.plan, &self.style_plan),
            &params,
            objective,
            (&f64s(&self.content), &f64s(&self.style)),
        )
        .unwrap();
        (params, targets)
    }

    /// The style transfer on `ctx`, from the setup's initial image.
    fn transfer<'c>(
        &self,
        ctx: &'c GpuContext,
        objective: &Objective,
        optimizer: Optimizer,
    ) -> StyleTransfer<'c> {
        let images = StyleImages {
            content: &self.content,
            style: &self.style,
            initial: &self.initial,
        };
        let plans = (self.plan.as_slice(), self.style_plan.as_slice());
        StyleTransfer::new(ctx, plans, &self.weights, objective, &images, optimizer).unwrap()
    }
}

/// The reference's loss terms and image gradient in f64.
fn reference_of(s: &Setup, objective: &Objective) -> (style::LossTerms, Vec<f64>) {
    let (params, targets) = s.reference(objective);
    style::reference_objective(&s.plan, &params, objective, &targets, &f64s(&s.initial)).unwrap()
}

fn assert_matches_reference(
    depth: usize,
    pooling: Pooling,
    objective: &Objective,
    sizes: (Dims, Dims),
) {
    let s = setup(depth, pooling, objective, sizes);
    let (terms, grad) = reference_of(&s, objective);
    for ctx in contexts() {
        let transfer = s.transfer(ctx, objective, ADAM);
        let got = transfer.evaluate().unwrap();
        let what = format!("{} vgg{depth} {pooling:?} {objective:?}", ctx.info().name);
        for (name, value, expected) in [
            ("content", got.content, terms.content),
            ("style", got.style, terms.style),
            ("tv", got.tv, terms.tv),
        ] {
            let relative = (value - expected).abs() / expected.abs().max(f64::MIN_POSITIVE);
            assert!(
                relative <= 1e-4 || value == expected,
                "{what}: {name} {value} against {expected} ({relative:e})"
            );
        }
        let image_grad = transfer.read_image_gradient().unwrap();
        let d = check::compare("image gradient", &image_grad, &grad).unwrap();
        assert!(d.within(GRADIENT_TOLERANCE), "{what}: {d:?}");
        assert!(
            d.max_reference > 0.0,
            "{what}: a zero gradient tests nothing"
        );
    }
}

/// Content 35x42 (pools to 17x21, 8x10, 4x5, 2x2) against a 32x32 style image, so the style
/// Gram matrices come from a network planned at another size.
fn sizes() -> (Dims, Dims) {
    (dims(3, 35, 42), dims(3, 32, 32))
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn one_style_layer_after_the_first_convolution_matches_the_reference() {
    // The Gram matrix and its backward, right after the first convolution: the image's gradient
    // is conv1_1's input gradient of the Gram loss's.
    let objective = objective(11, &[], &["conv1_1"], 0.0);
    assert_matches_reference(11, Pooling::Average, &objective, sizes());
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn the_whole_objective_matches_the_reference_with_average_and_max_pools() {
    // Gatys et al.'s layers, plus content at conv1_1, which is a style layer too (the two
    // gradients add) and is read by later layers (whose backward adds to it).
    let content = ["conv4_2", "conv1_1"];
    let style_layers = style::DEFAULT_STYLE_LAYERS;
    let objective = objective(11, &content, style_layers, 0.05);
    assert_matches_reference(11, Pooling::Average, &objective, sizes());
    assert_matches_reference(11, Pooling::Max, &objective, sizes());
}

#[test]
fn the_reference_gradient_of_the_image_matches_finite_differences() {
    // A small VGG-11 prefix (to conv3_1) in f64; a few pixels probed, in every channel.
    let objective = objective(11, &["conv2_1"], &["conv1_1", "conv3_1"], 0.1);
    let s = setup(
        11,
        Pooling::Average,
        &objective,
        (dims(3, 9, 11), dims(3, 8, 8)),
    );
    let (params, targets) = s.reference(&objective);
    let x = f64s(&s.initial);
    let (_, grad) = style::reference_objective(&s.plan, &params, &objective, &targets, &x).unwrap();
    let loss_at = |x: &[f64]| {
        let (terms, _) =
            style::reference_objective(&s.plan, &params, &objective, &targets, x).unwrap();
        terms.total()
    };
    let scale = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    let h = 1e-4;
    for i in (0..x.len()).step_by(37) {
        let mut plus = x.clone();
        plus[i] += h;
        let mut minus = x.clone();
        minus[i] -= h;
        let numeric = (loss_at(&plus) - loss_at(&minus)) / (2.0 * h);
        assert!(
            (numeric - grad[i]).abs() <= 1e-6 * scale,
            "pixel {i}: finite difference {numeric}, gradient {}",
            grad[i]
        );
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn a_first_convolutions_input_gradient_matches_the_reference_and_finite_differences() {
    // Stride 2, asymmetric padding, 5 output channels: the strided input-gradient kernel.
    let window = Window {
        height: 3,
        width: 3,
        stride_height: 2,
        stride_width: 2,
        padding: Padding::Explicit(Pad {
            top: 1,
            bottom: 0,
            left: 0,
            right: 2,
        }),
    };
    let kinds = [window, Window::square(3, 1, Padding::Same)];
    for window in kinds {
        let kind = LayerKind::Conv2d {
            out_channels: 5,
            window,
            groups: 1,
            relu: false,
            bias: true,
        };
        let network = single_layer(dims(3, 9, 7), kind);
        let weights = random_weights(&network, 5);
        let plan = network.plan(2).unwrap();
        let input = random(plan[0].batch * plan[0].input.len(), 6);
        let params = Parameters::<f64>::from_weights(&weights);
        let x: Vec<f64> = input.iter().map(|&v| f64::from(v)).collect();
        let loss_at = |x: &[f64]| {
            let y = reference::forward(&plan, &params, x).unwrap();
            reference::l2_loss(&y[0])
        };
        let y = reference::forward(&plan, &params, &x).unwrap();
        let (_, grad) = reference::backward_to_input(
            &plan,
            &params,
            &x,
            &reference::forward_training(&plan, &params, &x).unwrap(),
            &[(0, y[0].clone())],
        )
        .unwrap();
        // l2_loss is quadratic in the input: central differences are exact but for rounding.
        let scale = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        for i in (0..x.len()).step_by(5) {
            let (mut plus, mut minus) = (x.clone(), x.clone());
            plus[i] += 1e-3;
            minus[i] -= 1e-3;
            let numeric = (loss_at(&plus) - loss_at(&minus)) / 2e-3;
            assert!(
                (numeric - grad[i]).abs() <= 1e-9 * scale.max(1.0),
                "{window:?} input {i}"
            );
        }
        for ctx in contexts() {
            let net = GpuNetwork::with_input_gradient(ctx, &plan, &weights).unwrap();
            net.upload_input(&input).unwrap();
            net.forward_backward().unwrap();
            let got = net.read_input_gradient().unwrap();
            let d = check::compare("input gradient", &got, &grad).unwrap();
            assert!(
                d.within(GRADIENT_TOLERANCE),
                "{} {window:?}: {d:?}",
                ctx.info().name
            );
        }
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn adam_lowers_the_loss_and_keeps_the_image_in_range() {
    let objective = objective(11, &["conv4_2"], style::DEFAULT_STYLE_LAYERS, 0.0);
    let size = dims(3, 32, 32);
    let s = setup(11, Pooling::Max, &objective, (size, size)).with_torchvision_weights();
    for ctx in contexts() {
        let transfer = s.transfer(ctx, &objective, ADAM);
        let first = transfer.step().unwrap().total();
        let mut last = first;
        for _ in 0..14 {
            last = transfer.step().unwrap().total();
        }
        assert_eq!(transfer.steps_taken(), 15);
        // Measured: the loss falls to ~1/8 in 15 steps; a third is asserted.
        assert!(last < first / 3.0, "{}: {first} -> {last}", ctx.info().name);
        let image = transfer.read_image().unwrap();
        assert!(image.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_ne!(image, s.initial, "the image moved");
    }
}

/// `torch.optim.LBFGS` without line search, in f64: one iteration per evaluation of `loss_at`
/// (the loss and its gradient), no move where the direction does not descend, the image clamped
/// to [0, 1] after each update, as the GPU's.
/// Returns the loss at each evaluation, how many pairs passed the curvature test, and the
/// image after the last step.
fn reference_lbfgs(
    loss_at: impl Fn(&[f64]) -> (f64, Vec<f64>),
    mut x: Vec<f64>,
    (lr, history, steps): (f64, usize, usize),
) -> (Vec<f64>, usize, Vec<f64>) {
    let mut accepted = 0;
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let (mut d, mut t, mut g_prev) = (Vec::new(), 0.0, Vec::new());
    let (mut old_s, mut old_y, mut rho): (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<f64>) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut h_diag = 1.0;
    let mut losses = Vec::new();
    for k in 0..steps {
        let (loss, g) = loss_at(&x);
        losses.push(loss);
        if k == 0 {
            d = g.iter().map(|v| -v).collect();
            t = (1.0f64).min(1.0 / g.iter().map(|v| v.abs()).sum::<f64>()) * lr;
        } else {
            let y: Vec<f64> = g.iter().zip(&g_prev).map(|(a, b)| a - b).collect();
            let s: Vec<f64> = d.iter().map(|v| v * t).collect();
            let ys = dot(&y, &s);
            if ys > 1e-10 {
                accepted += 1;
                if old_s.len() == history {
                    old_s.remove(0);
                    old_y.remove(0);
                    rho.remove(0);
                }
                h_diag = ys / dot(&y, &y);
                old_s.push(s);
                old_y.push(y);
                rho.push(1.0 / ys);
            }
            let mut q: Vec<f64> = g.iter().map(|v| -v).collect();
            let mut alpha = vec![0.0; old_s.len()];
            for i in (0..old_s.len()).rev() {
                alpha[i] = dot(&old_s[i], &q) * rho[i];
                q.iter_mut()
                    .zip(&old_y[i])
                    .for_each(|(q, y)| *q -= alpha[i] * y);
            }
            d = q.iter().map(|v| v * h_diag).collect();
            for i in 0..old_s.len() {
                let beta = dot(&old_y[i], &d) * rho[i];
                d.iter_mut()
                    .zip(&old_s[i])
                    .for_each(|(d, s)| *d += (alpha[i] - beta) * s);
            }
            t = lr;
        }
        // PyTorch ends an iteration whose direction does not descend before moving.
        let descends = dot(&g, &d) < -1e-9;
        g_prev = g;
        if descends {
            x.iter_mut()
                .zip(&d)
                .for_each(|(x, d)| *x = (*x + t * d).clamp(0.0, 1.0));
        }
    }
    (losses, accepted, x)
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn lbfgs_takes_pytorchs_steps_through_a_full_history() {
    // A history of 2 pairs over 8 steps: pairs are evicted, and the spare slot rotates.
    let objective = objective(11, &["conv3_1"], &["conv1_1", "conv2_1", "conv3_1"], 0.01);
    let (losses, accepted) = assert_lbfgs_matches_the_reference(&objective, 1.0, false);
    assert_eq!(accepted, 7, "every pair passes the curvature test");
    assert!(
        losses[7] < losses[0] / 2.0,
        "the steps are real: {losses:?}"
    );
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn lbfgs_steps_on_while_its_curvature_test_rejects_pairs() {
    // Steps so short (lr 1e-4) that no pair passes y.s > 1e-10: every direction is -g times the
    // initial Hessian diagonal, 1. The image starts dark (values near 0.005), where f32 resolves
    // moves of ~1e-7 well enough to compare them (measured 0.65% from the f64 moves).
    let objective = objective(11, &["conv3_1"], &["conv1_1", "conv2_1", "conv3_1"], 0.01);
    let (_, accepted) = assert_lbfgs_matches_the_reference(&objective, 1e-4, true);
    assert_eq!(accepted, 0, "the curvature test rejects every pair");
}

/// Runs L-BFGS (a history of 2, 8 steps) on the GPU and in f64 from the same start, and
/// compares the loss at every step and how far the image moved; returns the reference's losses
/// and how many pairs it accepted.
fn assert_lbfgs_matches_the_reference(
    objective: &Objective,
    lr: f64,
    dark_start: bool,
) -> (Vec<f64>, usize) {
    let size = dims(3, 20, 24);
    let mut s =
        setup(11, Pooling::Max, objective, (size, dims(3, 16, 16))).with_torchvision_weights();
    if dark_start {
        s.initial.iter_mut().for_each(|v| *v = 0.001 + 0.01 * *v);
    }
    let (history, steps) = (2, 8);
    let (params, targets) = s.reference(objective);
    let loss_at = |x: &[f64]| {
        let (terms, grad) =
            style::reference_objective(&s.plan, &params, objective, &targets, x).unwrap();
        (terms.total(), grad)
    };
    let start = f64s(&s.initial);
    let (expected, accepted, end) = reference_lbfgs(loss_at, start.clone(), (lr, history, steps));
    let moved: Vec<f64> = end.iter().zip(&start).map(|(e, s)| e - s).collect();
    let config = LbfgsConfig {
        learning_rate: lr as f32,
        history,
    };
    for ctx in contexts() {
        let transfer = s.transfer(ctx, objective, Optimizer::Lbfgs(config));
        for (k, &want) in expected.iter().enumerate() {
            let got = transfer.step().unwrap().total();
            // f32 against f64 along the same iterations: 1e-7 at the first steps, growing to
            // 1e-4 by step 5 as L-BFGS's curvature pairs amplify rounding (PyTorch's own f32
            // run drifts from its f64 one alike: docs/style.md). A pair in the wrong order or
            // slot changes the direction itself, and the loss by percents.
            let relative = (got - want).abs() / want;
            assert!(
                relative < 1e-3,
                "{} step {k}: {got} against {want} ({relative:e})",
                ctx.info().name
            );
        }
        let image = transfer.read_image().unwrap();
        let gpu_moved: Vec<f32> = (image.iter().zip(&s.initial)).map(|(e, s)| e - s).collect();
        let d = check::compare("the image's move", &gpu_moved, &moved).unwrap();
        // Measured 0.8% after 8 steps of the full history: in directions of low curvature, where
        // the loss is flat, rounding moves the image most and the loss least. A wrong pair or
        // a missing step moves it by its whole scale.
        assert!(
            d.max_reference > 0.0 && d.within(2e-2),
            "{}: {d:?}",
            ctx.info().name
        );
    }
    (expected, accepted)
}
