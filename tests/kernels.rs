//! Every kernel, forward and backward, against the CPU reference, on every adapter, over shapes
//! chosen to be awkward: odd sizes, stride > 1, asymmetric padding, groups, batch 1, channel
//! counts that are not a multiple of the 16-wide register block, windows larger than the input.
//!
//! Each case is a network of two layers: an identity (1x1 max pool) and the layer under test, so
//! that the backward pass computes the layer's input gradient too (the first layer skips it).
//! The loss is the seed's `l2_loss` of the layer's output, so the output gradient is the output.
//!
//! Tolerance: a test layer sums at most a few thousand products, so the f32 reordering error is
//! ~1e-6 of a tensor's scale; 1e-5 catches any indexing or padding mistake (errors of order 1)
//! with margin. LRN's pow may run a few ulp apart between GPU and CPU libm.

mod common;

use common::{contexts, dims, random, random_weights, relative_error};
use convnet_wgpu::gpu::{ConvAlgorithm, GpuContext, GpuNetwork, KernelShape, Variants};
use convnet_wgpu::model::{Dims, Layer, LayerKind, Network, Pad, Padding, Window};
use convnet_wgpu::reference::{self, Parameters};

const TOLERANCE: f32 = 1e-5;

/// The layer under test behind an identity, so that its input gradient is computed.
fn behind_identity(input: Dims, kind: LayerKind) -> Network {
    let layer = |name: &str, kind| Layer::new(name, kind);
    Network::new(
        "test",
        input,
        vec![
            layer(
                "identity",
                LayerKind::MaxPool {
                    window: Window::square(1, 1, Padding::Valid),
                },
            ),
            layer("layer", kind),
        ],
    )
}

/// Runs the layer forward and backward on every adapter and compares its output, its input
/// gradient and its parameter gradients with the CPU reference.
fn check_layer(network: &Network, batch: usize, seed: u64) {
    for ctx in contexts() {
        check_layer_on(ctx, network, batch, seed);
    }
}

/// [`check_layer`] on one device.
fn check_layer_on(ctx: &GpuContext, network: &Network, batch: usize, seed: u64) {
    let plan = network.plan(batch).expect("test shape plans");
    let weights = random_weights(network, seed);
    let params = Parameters::<f32>::from_weights(&weights);
    let input = random(batch * network.input.len(), seed + 7);
    let output = reference::layer_forward(&plan[1], &[&input], &params).unwrap();
    let grads =
        reference::layer_backward(&plan[1], &input, &output, &output, &params, true).unwrap();
    let what = format!(
        "{:?} at batch {batch} on {:?}",
        plan[1].layer.kind, network.input
    );
    let net = GpuNetwork::with_gradients(ctx, &plan, &weights).expect("network builds");
    net.upload_input(&input).unwrap();
    net.forward_backward().unwrap();
    // A network built for inference runs its own forward kernels (max pooling without argmax).
    let inference = GpuNetwork::new(ctx, &plan, &weights).expect("network builds");
    inference.upload_input(&input).unwrap();
    inference.forward().unwrap();
    let mut compared = vec![
        ("output", net.read_output().unwrap(), output.clone()),
        (
            "inference output",
            inference.read_output().unwrap(),
            output.clone(),
        ),
        (
            "input gradient",
            net.read_output_gradient(0).unwrap(),
            grads.input.clone().unwrap(),
        ),
    ];
    if let (Some(weight), Some(bias)) = (&grads.weight, &grads.bias) {
        let gpu = net.read_gradients().unwrap();
        compared.push((
            "weight gradient",
            gpu.get("layer.weight").unwrap().data.clone(),
            weight.clone(),
        ));
        compared.push((
            "bias gradient",
            gpu.get("layer.bias").unwrap().data.clone(),
            bias.clone(),
        ));
    }
    for (name, got, expected) in compared {
        let err = relative_error(&got, &expected);
        assert!(
            err <= TOLERANCE,
            "{name} on {}: relative error {err:e} for {what}",
            ctx.describe()
        );
    }
}

fn conv(out_channels: usize, window: Window, groups: usize, relu: bool) -> LayerKind {
    LayerKind::Conv2d {
        out_channels,
        window,
        groups,
        relu,
        bias: true,
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

/// (batch, input, out channels, window, groups, relu)
type ConvCase = (usize, Dims, usize, Window, usize, bool);

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn conv2d_matches_reference() {
    for (i, (batch, input, out, win, groups, relu)) in conv_cases().into_iter().enumerate() {
        let network = behind_identity(input, conv(out, win, groups, relu));
        check_layer(&network, batch, 100 + i as u64);
    }
}

/// Both direct convolution kernels, forced on every adapter, over the same awkward shapes
/// (forward, and backward, whose stride-1 input gradient is a forward convolution), plus
/// shapes larger than one 64x64 tile of the workgroup-tiled kernel (channels, pixels and a
/// reduction that do not divide into its tiles).
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn every_conv_kernel_variant_matches_the_reference() {
    let mut cases = conv_cases();
    cases.push((
        2,
        dims(19, 13, 11),
        70,
        window(3, 3, 1, 1, Padding::Same),
        1,
        true,
    ));
    cases.push((
        1,
        dims(12, 17, 9),
        130,
        window(3, 1, 2, 1, pad(1, 0, 0, 0)),
        2,
        false,
    ));
    // 1x1 stride 1 on planes of 36 and 20 pixels (conv2d_forward_1x1 on register blocks): odd
    // channel counts, groups, batch 3 (the last block of 16 pixels partly past the batch).
    cases.push((
        3,
        dims(13, 6, 6),
        21,
        window(1, 1, 1, 1, Padding::Valid),
        1,
        true,
    ));
    cases.push((
        2,
        dims(12, 4, 5),
        18,
        window(1, 1, 1, 1, Padding::Valid),
        3,
        false,
    ));
    // 1440 output pixels: the filter gradient sums two chunks of pixels.
    cases.push((
        3,
        dims(2, 24, 20),
        5,
        window(3, 3, 1, 1, Padding::Same),
        1,
        false,
    ));
    check_conv_cases_with_both_kernels(&cases, ConvAlgorithm::Direct, 500);
}

/// Every case of `cases` on every adapter with each convolution kernel shape forced, the 3x3
/// stride-1 ones computed by `algorithm`.
fn check_conv_cases_with_both_kernels(cases: &[ConvCase], algorithm: ConvAlgorithm, seed: u64) {
    for shared in contexts() {
        for conv_kernel in [KernelShape::RegisterBlock, KernelShape::WorkgroupTile] {
            let variants = Variants {
                conv: conv_kernel,
                conv_algorithm: algorithm,
                ..Variants::default()
            };
            let ctx = common::fresh_context(shared).with_variants(variants);
            for (i, &(batch, input, out, win, groups, relu)) in cases.iter().enumerate() {
                let network = behind_identity(input, conv(out, win, groups, relu));
                check_layer_on(&ctx, &network, batch, seed + i as u64);
            }
        }
    }
}

/// Winograd's F(2x2, 3x3) and F(2x2, 5x5) (`winograd2`) forced on every 3x3 and 5x5 stride-1
/// convolution (forward, input gradient and filter gradient; the others stay direct) with both
/// product kernels, on the awkward shapes and more ([`winograd_cases`]), and with a binding so
/// small that the tiles run in many chunks. Held to the direct kernels' 1e-5.
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn winograd_convolutions_match_the_reference() {
    check_winograd(ConvAlgorithm::Winograd2, 700);
}

/// As [`winograd_convolutions_match_the_reference`] under `winograd4`: F(4x4, 3x3) for the 3x3
/// convolutions (4x4 output tiles, so most of the cases' outputs end in a partial tile), F(2x2,
/// 5x5) for the 5x5 ones. Held to the same 1e-5: its transform points were chosen for f32
/// (docs/kernels.md#winograd-f4x4-3x3).
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn winograd4_convolutions_match_the_reference() {
    check_winograd(ConvAlgorithm::Winograd4, 900);
}

/// The Winograd tests' shapes: the awkward convolution cases, and odd output sizes (a last tile
/// partly outside), asymmetric and one-sided padding, VALID (no padding), groups, batch 1 and
/// 3, channels not a multiple of 4, 3x3 and 5x5.
fn winograd_cases() -> Vec<ConvCase> {
    let mut cases = conv_cases();
    cases.extend([
        (
            3,
            dims(7, 9, 5),
            13,
            window(3, 3, 1, 1, pad(0, 2, 2, 0)),
            1,
            true,
        ),
        (
            1,
            dims(20, 6, 7),
            17,
            window(3, 3, 1, 1, Padding::Valid),
            1,
            false,
        ),
        (
            2,
            dims(18, 11, 4),
            22,
            window(3, 3, 1, 1, Padding::Same),
            2,
            true,
        ),
        (
            3,
            dims(33, 5, 5),
            40,
            window(3, 3, 1, 1, pad(1, 1, 1, 1)),
            1,
            false,
        ),
        // F(2x2, 5x5): AlexNet conv2's SAME 5x5 in small, with groups; VALID on odd sizes;
        // one-sided padding at batch 3 with 13 channels.
        (
            2,
            dims(16, 9, 11),
            24,
            window(5, 5, 1, 1, Padding::Same),
            2,
            true,
        ),
        (
            1,
            dims(17, 8, 7),
            6,
            window(5, 5, 1, 1, Padding::Valid),
            1,
            false,
        ),
        (
            3,
            dims(13, 6, 9),
            19,
            window(5, 5, 1, 1, pad(0, 3, 4, 1)),
            1,
            true,
        ),
        // 1058 tiles under F(2x2, 3x3): its filter gradient sums two chunks of them.
        (
            2,
            dims(3, 46, 46),
            5,
            window(3, 3, 1, 1, Padding::Same),
            1,
            true,
        ),
    ]);
    cases
}

/// Every Winograd case under `algorithm` with both product kernels, then in 64 KiB bindings.
fn check_winograd(algorithm: ConvAlgorithm, seed: u64) {
    check_conv_cases_with_both_kernels(&winograd_cases(), algorithm, seed);
    for shared in contexts() {
        // 64 KiB bindings: the tiles of 20 channels run in chunks (3 x 8 x 8 tiles of 16 x 20
        // transformed values as chunks of 51 under F(2x2, 3x3); 3 x 4 x 4 of 36 x 20 as chunks
        // of 22 under F(4x4, 3x3), and 3 x 8 x 8 so under F(2x2, 5x5)).
        let variants = Variants {
            conv_algorithm: algorithm,
            ..Variants::default()
        };
        let ctx = common::fresh_context(shared)
            .with_variants(variants)
            .with_binding_limit(64 << 10);
        for kernel in [3, 5] {
            let network = behind_identity(
                dims(20, 15, 15),
                conv(12, window(kernel, kernel, 1, 1, Padding::Same), 1, true),
            );
            check_layer_on(&ctx, &network, 3, seed + 100 + kernel as u64);
        }
    }
}

fn conv_cases() -> Vec<ConvCase> {
    vec![
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
        // 1200 output pixels: the filter gradient splits them into two chunks of 600, the second
        // starting inside the second image.
        (
            3,
            dims(2, 20, 20),
            5,
            window(3, 3, 1, 1, Padding::Same),
            1,
            true,
        ),
        // Pointwise, unpadded (the unchecked path without a padded copy): 16-pixel blocks
        // straddling images of 15 pixels, groups; and ResNet's strided shortcut on an odd plane.
        (
            3,
            dims(6, 5, 3),
            10,
            window(1, 1, 1, 1, Padding::Valid),
            2,
            true,
        ),
        (
            3,
            dims(5, 7, 7),
            18,
            window(1, 1, 2, 2, Padding::Valid),
            1,
            false,
        ),
    ]
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn linear_matches_reference() {
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
        let network = behind_identity(
            dims(features, 1, 1),
            LayerKind::Linear {
                out_features: out,
                relu,
            },
        );
        check_layer(&network, batch, 200 + i as u64);
    }
}

/// Every fully connected kernel variant, forced on every adapter: the 16-row block, the 4-row
/// small-batch kernel, and the latter split along the reduction into 3 chunks and into more
/// chunks than the reduction has steps (clamped); each also with the weight split into column
/// slices by a lowered binding limit.
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn every_matmul_kernel_variant_matches_the_reference() {
    // The fully connected layers' backward products (both gradients), whole and in weight
    // slices (the input gradient accumulates slice by slice), at sizes off every tile; batches 1
    // and 3 take the register-block variant's 4-row kernel for the input gradient, 17 the
    // 16-row block; batches 2 and 5 a weight gradient of whole vec4s of outputs from rows not
    // a multiple of 4 (70, 33).
    let shapes = [
        (1, 300, 37),
        (3, 70, 129),
        (17, 65, 5),
        (2, 70, 36),
        (5, 33, 20),
    ];
    for shared in contexts() {
        for matmul in [KernelShape::RegisterBlock, KernelShape::WorkgroupTile] {
            for sliced in [false, true] {
                let ctx = common::fresh_context(shared).with_variants(Variants {
                    matmul,
                    ..Variants::default()
                });
                let ctx = if sliced {
                    ctx.with_binding_limit(24 * 1024)
                } else {
                    ctx
                };
                for (i, &(batch, features, out)) in shapes.iter().enumerate() {
                    let network = behind_identity(
                        dims(features, 1, 1),
                        LayerKind::Linear {
                            out_features: out,
                            relu: i % 2 == 0,
                        },
                    );
                    check_layer_on(&ctx, &network, batch, 700 + i as u64);
                }
            }
        }
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn every_linear_kernel_variant_matches_the_reference() {
    use convnet_wgpu::gpu::LinearKernel;
    let variants = [
        LinearKernel::Block16,
        LinearKernel::SmallBatch { chunks: 1 },
        LinearKernel::SmallBatch { chunks: 3 },
        LinearKernel::SmallBatch { chunks: 1000 },
    ];
    let shapes = [
        (1, 300, 37, true),
        (2, 129, 100, false),
        (5, 7, 5, true),
        (17, 300, 37, false),
    ];
    for shared in contexts() {
        for linear in variants {
            for sliced in [false, true] {
                let ctx = common::fresh_context(shared).with_variants(Variants {
                    linear,
                    ..Variants::default()
                });
                let ctx = if sliced {
                    ctx.with_binding_limit(24 * 1024)
                } else {
                    ctx
                };
                for (i, &(batch, features, out, relu)) in shapes.iter().enumerate() {
                    let network = behind_identity(
                        dims(features, 1, 1),
                        LayerKind::Linear {
                            out_features: out,
                            relu,
                        },
                    );
                    let plan = network.plan(batch).unwrap();
                    let weights = random_weights(&network, 400 + i as u64);
                    let params = Parameters::<f32>::from_weights(&weights);
                    let input = random(batch * features, 401 + i as u64);
                    let expected = reference::layer_forward(&plan[1], &[&input], &params).unwrap();
                    let net = GpuNetwork::new(&ctx, &plan, &weights).unwrap();
                    net.upload_input(&input).unwrap();
                    net.forward().unwrap();
                    let err = relative_error(&net.read_output().unwrap(), &expected);
                    assert!(
                        err <= TOLERANCE,
                        "{linear:?} (sliced: {sliced}) at batch {batch}, {features} -> {out} on {}: {err:e}",
                        ctx.describe()
                    );
                }
            }
        }
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn gemm_splits_a_weight_larger_than_one_binding() {
    // Lower the binding limit this network sees so that the weight (300 x 100 floats, 120 kB)
    // must be split into column slices, as fc1's 151 MB is on lavapipe's 128 MiB bindings; the
    // backward pass then sums the input gradient over the slices.
    let network = behind_identity(
        dims(300, 1, 1),
        LayerKind::Linear {
            out_features: 100,
            relu: true,
        },
    );
    let batch = 5;
    let plan = network.plan(batch).unwrap();
    let weights = random_weights(&network, 300);
    let params = Parameters::<f32>::from_weights(&weights);
    let input = random(batch * 300, 301);
    let output = reference::layer_forward(&plan[1], &[&input], &params).unwrap();
    let grads =
        reference::layer_backward(&plan[1], &input, &output, &output, &params, true).unwrap();
    for shared in contexts() {
        let ctx = common::fresh_context(shared).with_binding_limit(64 * 1024);
        let net = GpuNetwork::with_gradients(&ctx, &plan, &weights).unwrap();
        net.upload_input(&input).unwrap();
        net.forward_backward().unwrap();
        let gpu = net.read_gradients().unwrap();
        let pairs = [
            (net.read_output().unwrap(), &output),
            (
                net.read_output_gradient(0).unwrap(),
                grads.input.as_ref().unwrap(),
            ),
            (
                gpu.get("layer.weight").unwrap().data.clone(),
                grads.weight.as_ref().unwrap(),
            ),
        ];
        for (i, (got, expected)) in pairs.iter().enumerate() {
            let err = relative_error(got, expected);
            assert!(err <= TOLERANCE, "{} tensor {i}: {err:e}", ctx.describe());
        }
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn lrn_matches_reference() {
    let tf_lrn = convnet_wgpu::model::tf_lrn();
    let cases = [
        (2, dims(16, 5, 7), tf_lrn.clone()),
        // Fewer channels than the window: every window is clipped on both sides.
        (1, dims(3, 4, 4), tf_lrn),
        // A large alpha, so the normaliser is far from 1 and its exponent matters.
        (
            3,
            dims(20, 3, 3),
            LayerKind::Lrn {
                depth_radius: 2,
                bias: 2.0,
                alpha: 1e-2,
                beta: 0.5,
                groups: 1,
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
                groups: 1,
            },
        ),
        // A radius beyond the kernel's sliding window (5): the general path.
        (
            2,
            dims(20, 3, 5),
            LayerKind::Lrn {
                depth_radius: 7,
                bias: 1.0,
                alpha: 0.05,
                beta: 0.75,
                groups: 1,
            },
        ),
        // The seed's radius in groups narrower than its window.
        (
            1,
            dims(18, 2, 3),
            LayerKind::Lrn {
                depth_radius: 5,
                bias: 1.0,
                alpha: 0.1,
                beta: 0.75,
                groups: 3,
            },
        ),
        // Grouped, as the two-GPU AlexNet: windows stop at the group boundary.
        (
            2,
            dims(12, 3, 2),
            LayerKind::Lrn {
                depth_radius: 2,
                bias: 1.0,
                alpha: 0.4,
                beta: 0.75,
                groups: 3,
            },
        ),
    ];
    for (i, (batch, input, kind)) in cases.into_iter().enumerate() {
        check_layer(&behind_identity(input, kind), batch, 400 + i as u64);
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn max_pool_matches_reference() {
    let cases = [
        (2, dims(3, 13, 13), window(3, 3, 2, 2, Padding::Valid)),
        (1, dims(2, 7, 9), window(2, 2, 2, 2, Padding::Same)),
        (3, dims(4, 6, 5), window(3, 3, 1, 1, Padding::Same)),
        (1, dims(1, 5, 5), window(1, 1, 1, 1, Padding::Valid)),
        (2, dims(5, 8, 11), window(3, 2, 3, 2, pad(2, 0, 1, 1))),
        (1, dims(2, 27, 27), window(3, 3, 2, 2, Padding::Valid)),
        // 2x2 outputs: the 2x2 tile; 6x6 (above) the 3x3 one; 13x13 the 4x4 one.
        (2, dims(3, 5, 5), window(3, 3, 2, 2, Padding::Valid)),
        (1, dims(2, 27, 27), window(3, 3, 2, 2, pad(1, 1, 1, 1))),
    ];
    for (i, (batch, input, win)) in cases.into_iter().enumerate() {
        let network = behind_identity(input, LayerKind::MaxPool { window: win });
        check_layer(&network, batch, 500 + i as u64);
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn max_pool_ties_go_to_the_first_maximum() {
    // Values from {0, 1, 2}: most windows hold ties, and the GPU must route every gradient to
    // the same (first, row-major) maximum as the CPU reference.
    let network = behind_identity(
        dims(3, 9, 8),
        LayerKind::MaxPool {
            window: Window::square(3, 2, Padding::Same),
        },
    );
    let plan = network.plan(2).unwrap();
    let weights = random_weights(&network, 600);
    let params = Parameters::<f32>::from_weights(&weights);
    let input: Vec<f32> = random(2 * network.input.len(), 601)
        .iter()
        .map(|v| (v * 1.5 + 1.5).floor())
        .collect();
    let output = reference::layer_forward(&plan[1], &[&input], &params).unwrap();
    let grads =
        reference::layer_backward(&plan[1], &input, &output, &output, &params, true).unwrap();
    for ctx in contexts() {
        let net = GpuNetwork::with_gradients(ctx, &plan, &weights).unwrap();
        net.upload_input(&input).unwrap();
        net.forward_backward().unwrap();
        assert_eq!(
            net.read_output_gradient(0).unwrap(),
            grads.input.clone().unwrap(),
            "{}",
            ctx.describe()
        );
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn peak_measures_positive_finite_rates() {
    for ctx in contexts() {
        let peak = convnet_wgpu::gpu::measure_peak(ctx, 1 << 20).unwrap();
        for rate in [peak.fma_gflops, peak.bandwidth_gbs] {
            assert!(
                rate.is_finite() && rate > 0.01,
                "{}: {peak:?}",
                ctx.describe()
            );
        }
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn kernels_unfold_a_grid_folded_into_two_dimensions() {
    // Launches larger than one grid dimension allows are folded into a 2-D grid that the kernels
    // unfold (shaders/common/grid.wgsl). Real adapters allow 65535 workgroups per dimension, so
    // no small test shape folds; here each context plans within the smallest limit that still
    // holds the layer's largest launch, so that launch (and every other of more workgroups than
    // the limit) folds. The shapes are large enough that some launch folds with GPUs' 64
    // invocations per workgroup too, and the test checks that one did.
    let cases = [
        behind_identity(dims(6, 9, 13), convnet_wgpu::model::tf_lrn()),
        behind_identity(
            dims(5, 19, 23),
            LayerKind::MaxPool {
                window: window(3, 3, 2, 2, Padding::Same),
            },
        ),
        behind_identity(
            dims(5, 11, 13),
            conv(7, window(3, 3, 1, 1, pad(1, 0, 2, 1)), 1, true),
        ),
        behind_identity(
            dims(3, 13, 15),
            conv(6, window(3, 3, 2, 2, Padding::Valid), 1, true),
        ),
        behind_identity(
            dims(300, 1, 1),
            LayerKind::Linear {
                out_features: 33,
                relu: true,
            },
        ),
    ];
    for shared in contexts() {
        for (i, network) in cases.iter().enumerate() {
            let batch = 3;
            let plan = network.plan(batch).unwrap();
            let weights = random_weights(network, 40 + i as u64);
            let (high, ctx) = common::smallest_fitting_context(shared, |ctx| {
                GpuNetwork::with_gradients(ctx, &plan, &weights).is_ok()
            });
            let net = GpuNetwork::with_gradients(&ctx, &plan, &weights).unwrap();
            assert!(
                net.folded_launches() > 0,
                "case {i}: no launch folds at limit {high} on {}",
                ctx.describe()
            );
            check_layer_on(&ctx, network, batch, 40 + i as u64);
        }
    }
}
