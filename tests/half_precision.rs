//! `--precision f16`: every forward kernel storing activations and weight matrices as f16, on
//! every adapter that has `shader-f16`, judged layer by layer against the f64 reference of that
//! layer from the GPU's own inputs at `check`'s f16 tolerance (`check::F16_TOLERANCE`, whose
//! comment derives it from f16's rounding). An adapter without the feature must refuse with a
//! one-line error, and so must a network that trains.

mod common;

use common::{contexts, dims, random, random_weights};
use convnet_wgpu::check::{self, F16_TOLERANCE};
use convnet_wgpu::gpu::{
    ConvAlgorithm, GpuContext, GpuNetwork, KernelShape, LinearKernel, Precision, Variants,
};
use convnet_wgpu::model::{Dims, Layer, LayerKind, Network, Pad, Padding, Window};
use convnet_wgpu::weights::Weights;
use convnet_wgpu::Error;

/// Every op a network's forward pass runs, at awkward shapes: a strided convolution with
/// one-sided padding on 3 channels (the padded copy), LRN, a 3x3 stride-1 convolution and a 5x5
/// one with groups (Winograd's forms where forced), max pooling with SAME padding, a batch norm,
/// a 1x1 convolution from an earlier layer, a residual addition, a concatenation with the pooled
/// map, adaptive average pooling and two fully connected layers. On 13x11 images the pooled
/// planes are 3x3 (the additions and copies one value at a time); on 16x16, 4x4 (a vec4 at a
/// time).
fn every_forward_op(input: Dims) -> Network {
    let conv = |out_channels, size, stride, padding, groups| LayerKind::Conv2d {
        out_channels,
        window: Window::square(size, stride, padding),
        groups,
        relu: true,
        bias: true,
    };
    let one_sided = Padding::Explicit(Pad {
        top: 1,
        bottom: 0,
        left: 0,
        right: 1,
    });
    let layers = vec![
        Layer::new("conv1", conv(17, 3, 2, one_sided, 1)),
        Layer::new(
            "lrn",
            LayerKind::Lrn {
                depth_radius: 2,
                bias: 2.0,
                alpha: 1e-2,
                beta: 0.75,
                groups: 1,
            },
        ),
        Layer::new("conv2", conv(18, 3, 1, Padding::Same, 1)),
        Layer::new("conv3", conv(34, 5, 1, Padding::Same, 2)),
        Layer::new(
            "pool",
            LayerKind::MaxPool {
                window: Window::square(3, 2, Padding::Same),
            },
        ),
        Layer::new(
            "bn",
            LayerKind::BatchNorm {
                eps: 1e-5,
                relu: false,
            },
        ),
        Layer::new("side", conv(34, 1, 1, Padding::Valid, 1)).reading(&["pool"]),
        Layer::new("sum", LayerKind::Add { relu: true }).reading(&["bn", "side"]),
        Layer::new("cat", LayerKind::Concat).reading(&["sum", "pool"]),
        Layer::new(
            "avg",
            LayerKind::AdaptiveAvgPool {
                height: 2,
                width: 2,
            },
        ),
        Layer::new(
            "fc1",
            LayerKind::Linear {
                out_features: 37,
                relu: true,
            },
        ),
        Layer::new(
            "fc2",
            LayerKind::Linear {
                out_features: 10,
                relu: false,
            },
        ),
    ];
    Network::new("every-forward-op", input, layers)
}

/// Random weights with the batch norm's running variance positive.
fn weights_of(network: &Network, seed: u64) -> Weights {
    let mut weights = random_weights(network, seed);
    let variance = weights
        .get_mut("bn.running_var")
        .expect("the network has bn");
    for v in &mut variance.data {
        *v = v.abs() + 0.5;
    }
    weights
}

fn f16_context(shared: &GpuContext, variants: Variants) -> GpuContext {
    let variants = Variants {
        precision: Precision::F16,
        ..variants
    };
    common::fresh_context(shared).with_variants(variants)
}

/// The error an adapter without `shader-f16` gives, or a network that trains.
fn refusal(result: convnet_wgpu::Result<GpuNetwork>) -> String {
    match result {
        Err(e @ Error::InvalidArgument(_)) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "not one line: {message}");
            message
        }
        Err(e) => panic!("not an invalid argument: {e}"),
        Ok(_) => panic!("built"),
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn f16_storage_matches_the_reference_layer_by_layer_with_every_kernel_variant() {
    use ConvAlgorithm::{Direct, Winograd2, Winograd4};
    use KernelShape::{RegisterBlock, WorkgroupTile};
    // Each convolution kernel shape with each algorithm, each fully connected kernel (split-K
    // writes f32 partial sums, its reduction the f16 output).
    let cases = [
        (RegisterBlock, Direct, LinearKernel::Block16),
        (
            WorkgroupTile,
            Direct,
            LinearKernel::SmallBatch { chunks: 1 },
        ),
        (
            RegisterBlock,
            Winograd2,
            LinearKernel::SmallBatch { chunks: 3 },
        ),
        (WorkgroupTile, Winograd2, LinearKernel::Block16),
        (
            RegisterBlock,
            Winograd4,
            LinearKernel::SmallBatch { chunks: 1 },
        ),
        (
            WorkgroupTile,
            Winograd4,
            LinearKernel::SmallBatch { chunks: 2 },
        ),
    ];
    for shared in contexts() {
        if !shared.has_f16() {
            let ctx = f16_context(shared, Variants::default());
            let network = every_forward_op(dims(3, 13, 11));
            let plan = network.plan(1).unwrap();
            let message = refusal(GpuNetwork::new(&ctx, &plan, &weights_of(&network, 1)));
            assert!(message.contains("shader-f16"), "{message}");
            eprintln!("{}: no shader-f16, refused: {message}", shared.describe());
            continue;
        }
        for (i, &(conv, conv_algorithm, linear)) in cases.iter().enumerate() {
            let variants = Variants {
                conv,
                conv_algorithm,
                linear,
                ..Variants::default()
            };
            let ctx = f16_context(shared, variants);
            let f32_ctx = common::fresh_context(shared).with_variants(variants);
            for (input, batch) in [(dims(3, 13, 11), 3), (dims(3, 16, 16), 1)] {
                let network = every_forward_op(input);
                let plan = network.plan(batch).unwrap();
                let weights = weights_of(&network, 40 + i as u64);
                let data = random(batch * input.len(), 50 + i as u64);
                let net = GpuNetwork::new(&ctx, &plan, &weights).unwrap();
                let what = format!("{:?} on {input:?} at batch {batch}", ctx.variants());
                // conv2 is a 3x3 stride-1 convolution: forced Winograd must take it.
                let conv2 = net.layer_choice("conv2").expect("conv2 reports its choice");
                assert_eq!(conv2.choice.algorithm, conv_algorithm, "{what}");
                for layer in check::forward_layer_by_layer(&net, &weights, &data).unwrap() {
                    assert!(
                        layer.within(F16_TOLERANCE),
                        "{} on {}: relative error {:e} for {what}",
                        layer.name,
                        ctx.describe(),
                        layer.relative
                    );
                }
                // The storage did round: the logits stand further from an f32 network's than
                // two f32 runs' summation orders would put them (~1e-6).
                let full = GpuNetwork::new(&f32_ctx, &plan, &weights).unwrap();
                full.upload_input(&data).unwrap();
                full.forward().unwrap();
                let drift = common::relative_error(
                    &net.read_output().unwrap(),
                    &full.read_output().unwrap(),
                );
                assert!(drift > 1e-5, "f16 logits {drift:e} from f32's: {what}");
            }
        }
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn f16_storage_halves_the_activations_and_weights_and_refuses_training() {
    let network = every_forward_op(dims(3, 16, 16));
    let plan = network.plan(2).unwrap();
    let weights = weights_of(&network, 3);
    for shared in contexts().iter().filter(|c| c.has_f16()) {
        let ctx = f16_context(shared, Variants::default());
        let half = GpuNetwork::new(&ctx, &plan, &weights).unwrap().memory();
        let full = GpuNetwork::new(shared, &plan, &weights).unwrap().memory();
        // The batch norm's parameters and the biases stay f32, so the weights a little more
        // than half.
        assert_eq!(2 * half.activations, full.activations, "{}", ctx.describe());
        assert!(
            2 * half.weights > full.weights && 10 * half.weights < 6 * full.weights,
            "weights {} of {} bytes on {}",
            half.weights,
            full.weights,
            ctx.describe()
        );
        let message = refusal(GpuNetwork::with_gradients(&ctx, &plan, &weights));
        assert!(message.contains("inference"), "{message}");
    }
}
