//! Every forward kernel against the CPU reference, on every adapter, over shapes chosen to be
//! awkward: odd sizes, stride > 1, asymmetric padding, groups, batch 1, channel counts that are
//! not a multiple of the 16-wide register block, windows larger than the input.
//!
//! Tolerance: a single layer sums at most a few hundred products here, so the f32 reordering
//! error is ~1e-6 of the layer's scale; 1e-5 catches any indexing or padding mistake (errors of
//! order 1) with margin. LRN's pow may run a few ulp apart between GPU and CPU libm.

mod common;

use common::{contexts, random, random_weights, relative_error, single_layer};
use convnet_wgpu::gpu::GpuNetwork;
use convnet_wgpu::model::{Dims, LayerKind, Network, Pad, Padding, Window};
use convnet_wgpu::reference;

const TOLERANCE: f32 = 1e-5;

fn dims(channels: usize, height: usize, width: usize) -> Dims {
    Dims {
        channels,
        height,
        width,
    }
}

/// Runs a one-layer network on every adapter and compares with the CPU reference.
fn check_layer(network: &Network, batch: usize, seed: u64) {
    let plan = network.plan(batch).expect("test shape plans");
    let weights = random_weights(network, seed);
    let input = random(batch * network.input.len(), seed + 7);
    let expected = reference::layer_forward(&plan[0], &input, &weights);
    for ctx in contexts() {
        let net = GpuNetwork::new(ctx, &plan, &weights).expect("network builds");
        net.upload_input(&input).unwrap();
        net.forward().unwrap();
        let got = net.read_output().unwrap();
        let err = relative_error(&got, &expected);
        assert!(
            err <= TOLERANCE,
            "{} on {}: relative error {err:e} for {:?} at batch {batch}, input {:?}",
            network.layers[0].name,
            ctx.info.name,
            network.layers[0].kind,
            network.input
        );
    }
}

fn conv(out_channels: usize, window: Window, groups: usize, relu: bool) -> LayerKind {
    LayerKind::Conv2d {
        out_channels,
        window,
        groups,
        relu,
    }
}

fn window(h: usize, w: usize, sh: usize, sw: usize, padding: Padding) -> Window {
    Window {
        height: h,
        width: w,
        stride_height: sh,
        stride_width: sw,
        padding,
    }
}

fn pad(top: usize, bottom: usize, left: usize, right: usize) -> Padding {
    Padding::Explicit(Pad {
        top,
        bottom,
        left,
        right,
    })
}

#[test]
fn conv2d_forward_matches_reference() {
    let cases = [
        // (batch, input, out channels, window, groups, relu)
        (
            1,
            dims(3, 7, 9),
            5,
            window(3, 3, 1, 1, Padding::Same),
            1,
            true,
        ),
        // conv1's shape in small: 11x11 stride 4 SAME pads 3 before, 4 after.
        (
            2,
            dims(3, 23, 23),
            17,
            window(11, 11, 4, 4, Padding::Same),
            1,
            true,
        ),
        (
            2,
            dims(4, 11, 10),
            6,
            window(5, 3, 2, 2, Padding::Same),
            2,
            false,
        ),
        (
            3,
            dims(6, 13, 13),
            21,
            window(3, 3, 1, 1, Padding::Valid),
            3,
            true,
        ),
        (
            1,
            dims(8, 6, 5),
            33,
            window(1, 1, 1, 1, Padding::Valid),
            1,
            false,
        ),
        (
            1,
            dims(5, 9, 7),
            7,
            window(4, 2, 2, 3, pad(0, 2, 1, 1)),
            1,
            false,
        ),
        (
            1,
            dims(2, 4, 4),
            2,
            window(5, 5, 1, 1, Padding::Same),
            1,
            false,
        ),
        (
            2,
            dims(8, 5, 6),
            12,
            window(3, 3, 1, 1, pad(2, 0, 0, 2)),
            4,
            true,
        ),
        (
            1,
            dims(1, 1, 1),
            1,
            window(1, 1, 1, 1, Padding::Valid),
            1,
            false,
        ),
    ];
    for (i, (batch, input, out, win, groups, relu)) in cases.into_iter().enumerate() {
        let network = single_layer(input, conv(out, win, groups, relu));
        check_layer(&network, batch, 100 + i as u64);
    }
}

#[test]
fn gemm_matches_reference() {
    for (i, (batch, features, out, relu)) in [
        (1, 1, 1, false),
        (3, 7, 5, true),
        (17, 300, 37, false),
        (33, 64, 16, true),
        (2, 129, 100, false),
    ]
    .into_iter()
    .enumerate()
    {
        let network = single_layer(
            dims(features, 1, 1),
            LayerKind::Linear {
                out_features: out,
                relu,
            },
        );
        check_layer(&network, batch, 200 + i as u64);
    }
}

#[test]
fn gemm_splits_a_weight_larger_than_one_binding() {
    // Lower the binding limit this network sees so that fc's weight (300 x 100 floats, 120 kB)
    // must be split into column slices, as fc1's 151 MB is on lavapipe's 128 MiB bindings.
    let network = single_layer(
        dims(300, 1, 1),
        LayerKind::Linear {
            out_features: 100,
            relu: true,
        },
    );
    let batch = 5;
    let plan = network.plan(batch).unwrap();
    let weights = random_weights(&network, 300);
    let input = random(batch * 300, 301);
    let expected = reference::layer_forward(&plan[0], &input, &weights);
    for shared in contexts() {
        let choice = convnet_wgpu::gpu::AdapterChoice {
            adapter: Some(shared.info.name.clone()),
            backend: Some(format!("{:?}", shared.info.backend)),
        };
        let mut ctx = convnet_wgpu::gpu::GpuContext::new(&choice).unwrap();
        ctx.limits.max_storage_buffer_binding_size = 64 * 1024;
        let net = GpuNetwork::new(&ctx, &plan, &weights).unwrap();
        net.upload_input(&input).unwrap();
        net.forward().unwrap();
        let err = relative_error(&net.read_output().unwrap(), &expected);
        assert!(err <= TOLERANCE, "{}: {err:e}", ctx.info.name);
    }
}

#[test]
fn lrn_forward_matches_reference() {
    let seed_lrn = convnet_wgpu::model::seed_lrn();
    let cases = [
        (2, dims(16, 5, 7), seed_lrn.clone()),
        // Fewer channels than the window: every window is clipped on both sides.
        (1, dims(3, 4, 4), seed_lrn),
        // A large alpha, so the normaliser is far from 1 and its exponent matters.
        (
            3,
            dims(20, 3, 3),
            LayerKind::Lrn {
                depth_radius: 2,
                bias: 2.0,
                alpha: 1e-2,
                beta: 0.5,
            },
        ),
        (
            1,
            dims(9, 1, 13),
            LayerKind::Lrn {
                depth_radius: 0,
                bias: 0.5,
                alpha: 0.3,
                beta: 1.2,
            },
        ),
    ];
    for (i, (batch, input, kind)) in cases.into_iter().enumerate() {
        check_layer(&single_layer(input, kind), batch, 400 + i as u64);
    }
}

#[test]
fn max_pool_forward_matches_reference() {
    let cases = [
        (2, dims(3, 13, 13), window(3, 3, 2, 2, Padding::Valid)),
        (1, dims(2, 7, 9), window(2, 2, 2, 2, Padding::Same)),
        (3, dims(4, 6, 5), window(3, 3, 1, 1, Padding::Same)),
        (1, dims(1, 5, 5), window(1, 1, 1, 1, Padding::Valid)),
        (2, dims(5, 8, 11), window(3, 2, 3, 2, pad(2, 0, 1, 1))),
        (1, dims(2, 27, 27), window(3, 3, 2, 2, Padding::Valid)),
    ];
    for (i, (batch, input, win)) in cases.into_iter().enumerate() {
        let network = single_layer(input, LayerKind::MaxPool { window: win });
        check_layer(&network, batch, 500 + i as u64);
    }
}
