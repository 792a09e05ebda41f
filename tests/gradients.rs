//! Every CPU backward op against central finite differences of its CPU forward, in f64, on small
//! shapes (no GPU). The loss is `sum(r * y)` with a fixed random `r`, so the output gradient is
//! `r` and every input and parameter element is probed.
//!
//! Tolerance: with h = 1e-6 the central difference's truncation error is O(h^2 * f''') ~ 1e-12
//! and its rounding error ~ eps * |L| / h ~ 1e-10 * |L|; 1e-6 relative to the gradient's scale
//! leaves room for both and catches any wrong term (errors of order 1). Inputs are random
//! continuous values, so no ReLU kink or max-pool tie lies within h of a probe.

mod common;

use common::{dims, random};
use convnet_wgpu::model::{Dims, Layer, LayerKind, LayerPlan, Network, Pad, Padding, Window};
use convnet_wgpu::reference::{self, Parameters};
use convnet_wgpu::weights::Weights;

const H: f64 = 1e-6;
const TOLERANCE: f64 = 1e-6;

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn loss(plan: &LayerPlan, x: &[f64], params: &Parameters<f64>, r: &[f64]) -> f64 {
    let y = reference::layer_forward(plan, &[x], params).unwrap();
    y.iter().zip(r).map(|(a, b)| a * b).sum()
}

/// Central differences of `f` at every element of `at`, against `analytic`.
fn assert_matches_differences(
    what: &str,
    at: &mut [f64],
    analytic: &[f64],
    f: &dyn Fn(&[f64]) -> f64,
) {
    let scale = analytic
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-12);
    for i in 0..at.len() {
        let keep = at[i];
        at[i] = keep + H;
        let up = f(at);
        at[i] = keep - H;
        let down = f(at);
        at[i] = keep;
        let numeric = (up - down) / (2.0 * H);
        let err = (numeric - analytic[i]).abs() / scale;
        assert!(
            err <= TOLERANCE,
            "{what}[{i}]: analytic {} numeric {numeric} (relative to scale {err:e})",
            analytic[i]
        );
    }
}

fn check_layer(input: Dims, kind: LayerKind, batch: usize, seed: u64) {
    let network = Network::new("test", input, vec![Layer::new("layer", kind)]);
    let plan = network.plan(batch).unwrap();
    let layer = &plan[0];
    let mut weights = Weights::init(&network, seed).unwrap();
    let names: Vec<String> = weights.iter().map(|(n, _)| n.to_string()).collect();
    for (i, name) in names.iter().enumerate() {
        let t = weights.get_mut(name).unwrap();
        t.data = random(t.data.len(), seed * 10 + i as u64);
    }
    let params = Parameters::<f64>::from_weights(&weights);
    let x = f64s(&random(batch * input.len(), seed + 1));
    let r = f64s(&random(batch * layer.output.len(), seed + 2));
    let y = reference::layer_forward(layer, &[&x], &params).unwrap();
    let grads = reference::layer_backward(layer, &x, &y, &r, &params, true).unwrap();
    let what = format!("{:?}", layer.layer.kind);

    let analytic = grads.input.clone().unwrap();
    assert_matches_differences(&format!("{what} input"), &mut x.clone(), &analytic, &|x| {
        loss(layer, x, &params, &r)
    });
    for (suffix, analytic) in [("weight", grads.weight), ("bias", grads.bias)] {
        let Some(analytic) = analytic else { continue };
        let name = format!("layer.{suffix}");
        let mut values = f64s(&weights.get(&name).unwrap().data);
        assert_matches_differences(&format!("{what} {suffix}"), &mut values, &analytic, &|v| {
            let mut p = params.clone();
            p.set(&name, v.to_vec()).unwrap();
            loss(layer, &x, &p, &r)
        });
    }
}

#[test]
fn conv2d_backward_matches_finite_differences() {
    let cases = [
        (
            dims(2, 5, 4),
            3,
            Window::square(3, 1, Padding::Same),
            1,
            true,
        ),
        (
            dims(4, 7, 6),
            4,
            Window {
                height: 3,
                width: 2,
                stride_height: 2,
                stride_width: 3,
                padding: Padding::Explicit(Pad {
                    top: 1,
                    bottom: 0,
                    left: 0,
                    right: 1,
                }),
            },
            2,
            false,
        ),
        (
            dims(3, 9, 9),
            2,
            Window::square(5, 4, Padding::Same),
            1,
            true,
        ),
    ];
    for (i, (input, out_channels, window, groups, relu)) in cases.into_iter().enumerate() {
        // With a bias, and without one (the convolutions a batch norm follows).
        for bias in [true, false] {
            let kind = LayerKind::Conv2d {
                out_channels,
                window,
                groups,
                relu,
                bias,
            };
            check_layer(input, kind, 2, 10 + i as u64);
        }
    }
}

#[test]
fn linear_backward_matches_finite_differences() {
    for relu in [false, true] {
        let kind = LayerKind::Linear {
            out_features: 5,
            relu,
        };
        check_layer(dims(3, 2, 2), kind, 3, 20 + u64::from(relu));
    }
}

#[test]
fn lrn_backward_matches_finite_differences() {
    let large_alpha = LayerKind::Lrn {
        depth_radius: 2,
        bias: 0.5,
        alpha: 0.7,
        beta: 0.75,
        groups: 1,
    };
    let grouped = LayerKind::Lrn {
        depth_radius: 3,
        bias: 1.0,
        alpha: 0.5,
        beta: 0.6,
        groups: 2,
    };
    check_layer(dims(8, 1, 3), grouped, 2, 32);
    check_layer(dims(7, 2, 3), large_alpha, 2, 30);
    check_layer(dims(3, 2, 2), convnet_wgpu::model::tf_lrn(), 1, 31);
}

#[test]
fn max_pool_backward_matches_finite_differences() {
    let overlapping = LayerKind::MaxPool {
        window: Window::square(3, 2, Padding::Valid),
    };
    check_layer(dims(2, 7, 7), overlapping, 2, 40);
    let same = LayerKind::MaxPool {
        window: Window::square(2, 2, Padding::Same),
    };
    check_layer(dims(3, 5, 3), same, 1, 41);
}

#[test]
fn max_pool_ties_go_to_the_first_maximum() {
    let network = Network::new(
        "test",
        dims(1, 2, 2),
        vec![Layer::new(
            "pool",
            LayerKind::MaxPool {
                window: Window::square(2, 2, Padding::Valid),
            },
        )],
    );
    let plan = network.plan(1).unwrap();
    let params = Parameters::<f64>::from_weights(&Weights::init(&network, 0).unwrap());
    let x = [1.0, 3.0, 3.0, 3.0];
    let y = reference::layer_forward(&plan[0], &[&x], &params).unwrap();
    let g = reference::layer_backward(&plan[0], &x, &y, &[5.0], &params, true).unwrap();
    assert_eq!(g.input.unwrap(), vec![0.0, 5.0, 0.0, 0.0]);
}

/// `r` and a loss `sum(r * y)` for an op's output `y`.
fn weighted(len: usize, seed: u64) -> Vec<f64> {
    f64s(&random(len, seed))
}

fn dot(y: &[f64], r: &[f64]) -> f64 {
    y.iter().zip(r).map(|(a, b)| a * b).sum()
}

#[test]
fn batch_norm_in_training_mode_matches_finite_differences() {
    // Batch statistics over (N, H, W): every input moves every output of its channel. Odd
    // planes, batch 1 and 3, with and without the fused ReLU.
    for (batch, d, relu) in [(3, dims(2, 3, 5), false), (1, dims(3, 2, 3), true)] {
        let len = batch * d.len();
        let mut x = f64s(&random(len, 70));
        let mut weight = f64s(&random(d.channels, 71));
        let mut bias = f64s(&random(d.channels, 72));
        let r = weighted(len, 73);
        let eps = 1e-3;
        let forward = |x: &[f64], w: &[f64], b: &[f64]| {
            reference::batch_norm_train_forward(x, d, (w, b), eps, relu).unwrap()
        };
        let f = forward(&x, &weight, &bias);
        let (dx, dw, db) =
            reference::batch_norm_train_backward(&x, d, &weight, &f, &r, (eps, relu)).unwrap();
        let (w0, b0, x0) = (weight.clone(), bias.clone(), x.clone());
        assert_matches_differences("bn input", &mut x, &dx.unwrap(), &|x| {
            dot(&forward(x, &w0, &b0).output, &r)
        });
        assert_matches_differences("bn weight", &mut weight, &dw, &|w| {
            dot(&forward(&x0, w, &b0).output, &r)
        });
        assert_matches_differences("bn bias", &mut bias, &db, &|b| {
            dot(&forward(&x0, &w0, b).output, &r)
        });
        // The statistics themselves: mean and biased variance of channel 0, by hand.
        let plane = d.height * d.width;
        let values: Vec<f64> = (0..batch)
            .flat_map(|n| x0[n * d.len()..][..plane].to_vec())
            .collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
        assert!((f.mean[0] - mean).abs() < 1e-12 && (f.variance[0] - var).abs() < 1e-12);
    }
}

#[test]
fn running_statistics_update_as_pytorch_does() {
    // momentum 0.1; the batch variance enters unbiased: 4 values per channel, so times 4/3.
    let (mean, var) =
        reference::batch_norm_running_update::<f64>((&[1.0], &[2.0]), (&[3.0], &[0.75]), 4, 0.1);
    assert!((mean[0] - (0.9 * 1.0 + 0.1 * 3.0)).abs() < 1e-12);
    assert!((var[0] - (0.9 * 2.0 + 0.1 * 1.0)).abs() < 1e-12);
}

#[test]
fn add_concat_and_adaptive_pool_backward_match_finite_differences() {
    let batch = 2;
    // A residual add with its fused ReLU: each input receives the masked output gradient.
    let len = 2 * 3 * 5;
    let (mut a, b) = (f64s(&random(len, 80)), f64s(&random(len, 81)));
    let r = weighted(len, 82);
    for relu in [false, true] {
        let y = reference::add_forward(&[&a, &b], relu).unwrap();
        let da = reference::add_backward(&y, &r, relu).unwrap();
        let b0 = b.clone();
        assert_matches_differences("add input", &mut a, &da, &|a| {
            dot(&reference::add_forward(&[a, &b0], relu).unwrap(), &r)
        });
    }
    // A concatenation of odd sizes: each input's slice of every image.
    let sizes = [3, 1, 5];
    let mut parts: Vec<Vec<f64>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| f64s(&random(batch * s, 90 + i as u64)))
        .collect();
    let r = weighted(batch * 9, 93);
    let grads = reference::concat_backward(&r, &sizes, batch).unwrap();
    for i in 0..sizes.len() {
        let others = parts.clone();
        let f = |p: &[f64]| {
            let mut inputs: Vec<&[f64]> = others.iter().map(Vec::as_slice).collect();
            inputs[i] = p;
            dot(
                &reference::concat_forward(&inputs, &sizes, batch).unwrap(),
                &r,
            )
        };
        assert_matches_differences("concat input", &mut parts[i], &grads[i], &f);
    }
    // Adaptive pooling with cells that overlap (5x7 to 3x2) and that repeat inputs (3x2 to 4x5).
    for (from, to) in [
        (dims(2, 5, 7), dims(2, 3, 2)),
        (dims(2, 3, 2), dims(2, 4, 5)),
    ] {
        let mut x = f64s(&random(batch * from.len(), 95));
        let r = weighted(batch * to.len(), 96);
        let dx = reference::adaptive_avg_pool_backward(&r, from, to).unwrap();
        assert_matches_differences("adaptive pool input", &mut x, &dx, &|x| {
            dot(
                &reference::adaptive_avg_pool_forward(x, from, to).unwrap(),
                &r,
            )
        });
    }
}

#[test]
fn a_residual_network_in_training_mode_matches_finite_differences() {
    // Every parameter of a small DAG: convolutions without bias, batch norms in training mode
    // (batch statistics) with and without ReLU, a residual addition reading a layer twice
    // removed, a concatenation with a 1x1 branch from the input, adaptive pooling, a linear head.
    // The loss is sum(r * logits); every parameter element is probed.
    let conv = |out_channels, size, bias| LayerKind::Conv2d {
        out_channels,
        window: Window::square(size, 1, Padding::Same),
        groups: 1,
        relu: false,
        bias,
    };
    let norm = |relu| LayerKind::BatchNorm { eps: 1e-3, relu };
    let layers = vec![
        Layer::new("conv1", conv(3, 3, false)),
        Layer::new("bn1", norm(true)),
        Layer::new("conv2", conv(3, 3, false)),
        Layer::new("bn2", norm(false)),
        Layer::new("sum", LayerKind::Add { relu: true }).reading(&["bn1", "bn2"]),
        Layer::new("side", conv(2, 1, true)).reading(&[convnet_wgpu::model::INPUT]),
        Layer::new("cat", LayerKind::Concat).reading(&["sum", "side"]),
        Layer::new(
            "pool",
            LayerKind::AdaptiveAvgPool {
                height: 2,
                width: 2,
            },
        ),
        Layer::new(
            "fc",
            LayerKind::Linear {
                out_features: 3,
                relu: false,
            },
        ),
    ];
    let network = Network::new("residual", dims(2, 5, 4), layers);
    let batch = 3;
    let plan = network.plan(batch).unwrap();
    let mut weights = Weights::init(&network, 3).unwrap();
    let names: Vec<String> = weights.iter().map(|(n, _)| n.to_string()).collect();
    for (i, name) in names.iter().enumerate() {
        let t = weights.get_mut(name).unwrap();
        t.data = random(t.data.len(), 100 + i as u64);
    }
    let params = Parameters::<f64>::from_weights(&weights);
    let x = f64s(&random(batch * network.input.len(), 120));
    let r = f64s(&random(batch * 3, 121));
    let loss = |p: &Parameters<f64>| {
        let forward = reference::forward_training(&plan, p, &x).unwrap();
        dot(forward.outputs.last().unwrap(), &r)
    };
    let forward = reference::forward_training(&plan, &params, &x).unwrap();
    let grads = reference::backward_training(&plan, &params, &x, &forward, &r).unwrap();
    let trained: Vec<&str> = grads.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        trained,
        [
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "conv2.weight",
            "bn2.weight",
            "bn2.bias",
            "side.weight",
            "side.bias",
            "fc.weight",
            "fc.bias"
        ],
        "every trained tensor once, in the network's order (running statistics are not trained)"
    );
    for (name, analytic) in &grads {
        let mut values = f64s(&weights.get(name).unwrap().data);
        assert_matches_differences(name, &mut values, analytic, &|v| {
            let mut p = params.clone();
            p.set(name, v.to_vec()).unwrap();
            loss(&p)
        });
    }
}

#[test]
fn softmax_cross_entropy_matches_finite_differences_and_pytorchs_mean() {
    let (batch, classes) = (3, 5);
    let mut logits: Vec<f64> = f64s(&random(batch * classes, 130))
        .iter()
        .map(|v| 4.0 * v)
        .collect();
    let labels = [4, 0, 2];
    let (loss, grad) = reference::softmax_cross_entropy(&logits, &labels, classes).unwrap();
    // By hand: the mean over images of log(sum exp) - the label's logit.
    let by_hand: f64 = logits
        .chunks(classes)
        .zip(labels)
        .map(|(row, l)| row.iter().map(|v| v.exp()).sum::<f64>().ln() - row[l])
        .sum::<f64>()
        / batch as f64;
    assert!((loss - by_hand).abs() < 1e-12, "{loss} vs {by_hand}");
    assert_matches_differences("cross-entropy logits", &mut logits, &grad, &|x| {
        reference::softmax_cross_entropy(x, &labels, classes)
            .unwrap()
            .0
    });
    // Large logits do not overflow; bad labels and shapes are errors.
    let (big, _) = reference::softmax_cross_entropy(&[1000.0f64, 0.0], &[1], 2).unwrap();
    assert!((big - 1000.0).abs() < 1e-9, "{big}");
    assert!(reference::softmax_cross_entropy(&logits, &[5, 0, 2], classes).is_err());
    assert!(reference::softmax_cross_entropy(&logits, &[0, 1], classes).is_err());
}
