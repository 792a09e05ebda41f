//! Every CPU backward op against central finite differences of its CPU forward, in f64, on small
//! shapes (no GPU). The loss is `sum(r * y)` with a fixed random `r`, so the output gradient is
//! `r` and every input and parameter element is probed.
//!
//! Tolerance: with h = 1e-6 the central difference's truncation error is O(h^2 * f''') ~ 1e-12
//! and its rounding error ~ eps * |L| / h ~ 1e-10 * |L|; 1e-6 relative to the gradient's scale
//! leaves room for both and catches any wrong term (errors of order 1). Inputs are random
//! continuous values, so no ReLU kink or max-pool tie lies within h of a probe.

mod common;

use common::random;
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

fn dims(channels: usize, height: usize, width: usize) -> Dims {
    Dims {
        channels,
        height,
        width,
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
        let kind = LayerKind::Conv2d {
            out_channels,
            window,
            groups,
            relu,
            bias: true,
        };
        check_layer(input, kind, 2, 10 + i as u64);
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
