//! `--precision f16`: every forward kernel storing activations and weight matrices as f16, on
//! every adapter that has `shader-f16`, judged layer by layer against the f64 reference of that
//! layer from the GPU's own inputs at `check`'s f16 tolerance (`check::F16_TOLERANCE`, whose
//! comment derives it from f16's rounding). Training in mixed precision: every backward kernel
//! reading the f16 activations and weights, its f32 gradients judged at `check`'s f32 gradient
//! tolerance against the f64 backward pass through those same f16 values, and SGD updating f32
//! master weights whose f16 copy the next pass reads. An adapter without the feature must
//! refuse with a one-line error, and so must style transfer and the multi-device layouts.

mod common;

use common::{contexts, dims, random, random_weights};
use convnet_wgpu::check::{self, F16_TOLERANCE, GRADIENT_TOLERANCE};
use convnet_wgpu::gpu::{
    ConvAlgorithm, DataParallel, GpuContext, GpuNetwork, Keep, KernelShape, LinearKernel,
    Precision, Sgd, SgdConfig, Variants,
};
use convnet_wgpu::model::{Dims, Layer, LayerKind, Loss, LossKind, Network, Pad, Padding, Window};
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
fn f16_storage_halves_the_activations_and_weights_and_refuses_what_keeps_f32() {
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
        // Training keeps the f32 master weights besides the f16 copy.
        let half = GpuNetwork::with_gradients(&ctx, &plan, &weights).unwrap();
        let full = GpuNetwork::with_gradients(shared, &plan, &weights).unwrap();
        let (half, full) = (half.memory(), full.memory());
        assert!(
            half.weights > full.weights && 10 * half.weights < 16 * full.weights,
            "training weights {} of {} bytes on {}",
            half.weights,
            full.weights,
            ctx.describe()
        );
        // Data-parallel replicas keep f32.
        let replicas = [&ctx, &ctx];
        let message = match DataParallel::new(&replicas, &network, 4, &weights, LossKind::L2) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("data-parallel replicas built with f16"),
        };
        assert!(message.contains("--precision f16"), "{message}");
    }
}

/// The training forward and the gradients of a mixed-precision network against the references
/// (`loss`: for cross-entropy, `labels` uploaded first).
fn assert_gradients_match(
    net: &GpuNetwork,
    weights: &Weights,
    data: &[f32],
    (loss, labels): (&Loss, Option<&[usize]>),
    what: &str,
) {
    for layer in check::training_forward(net, weights, data).unwrap() {
        assert!(
            layer.within(F16_TOLERANCE),
            "{}: relative error {:e} in training mode, {what}",
            layer.name,
            layer.relative
        );
    }
    let grads = check::gradients_of(net, weights, data, (loss, labels)).unwrap();
    assert!(!grads.is_empty(), "{what}");
    for g in grads {
        assert!(
            g.gpu.within(GRADIENT_TOLERANCE),
            "{}: relative error {:e}, {what}",
            g.gpu.name,
            g.gpu.relative
        );
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn mixed_precision_gradients_match_the_reference_through_the_f16_values_with_every_kernel_variant()
{
    use ConvAlgorithm::{Direct, Winograd2, Winograd4};
    use KernelShape::{RegisterBlock, WorkgroupTile};
    // Each convolution kernel shape (filter gradients, weight rotations) with each algorithm
    // (Winograd's input transform reading the f16 input), each matmul shape for the fully
    // connected layers' backward; l2 and cross-entropy (softmax reading f16 logits).
    let cases = [
        (RegisterBlock, Direct, RegisterBlock, LossKind::L2),
        (
            WorkgroupTile,
            Winograd2,
            WorkgroupTile,
            LossKind::CrossEntropy,
        ),
        (RegisterBlock, Winograd4, WorkgroupTile, LossKind::L2),
        (WorkgroupTile, Direct, RegisterBlock, LossKind::CrossEntropy),
    ];
    for shared in contexts().iter().filter(|c| c.has_f16()) {
        for (i, &(conv, conv_algorithm, matmul, loss)) in cases.iter().enumerate() {
            let variants = Variants {
                conv,
                conv_algorithm,
                matmul,
                ..Variants::default()
            };
            let ctx = f16_context(shared, variants);
            for (input, batch) in [(dims(3, 13, 11), 3), (dims(3, 16, 16), 2)] {
                let network = every_forward_op(input);
                let plan = network.plan(batch).unwrap();
                let weights = weights_of(&network, 60 + i as u64);
                let data = random(batch * input.len(), 70 + i as u64);
                let loss = Loss::main_head(loss, &plan);
                let net =
                    GpuNetwork::training(&ctx, &plan, &weights, &loss, Keep::Everything).unwrap();
                let labels: Vec<usize> = (0..batch).map(|n| (3 * n + i) % 10).collect();
                let labels = (loss.kind == LossKind::CrossEntropy).then_some(labels.as_slice());
                if let Some(labels) = labels {
                    net.upload_labels(labels).unwrap();
                }
                let what = format!(
                    "{:?} on {input:?} at batch {batch} on {}",
                    ctx.variants(),
                    ctx.describe()
                );
                assert_gradients_match(&net, &weights, &data, (&loss, labels), &what);
            }
        }
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn mixed_precision_sgd_updates_f32_masters_and_the_next_pass_reads_their_f16_copy() {
    let network = every_forward_op(dims(3, 16, 16));
    let plan = network.plan(2).unwrap();
    let weights = weights_of(&network, 80);
    let data = random(2 * network.input.len(), 81);
    for shared in contexts().iter().filter(|c| c.has_f16()) {
        let ctx = f16_context(shared, Variants::default());
        let what = ctx.describe();
        let net = GpuNetwork::with_gradients(&ctx, &plan, &weights).unwrap();
        let mut config = SgdConfig {
            learning_rate: 0.0,
            momentum: 0.9,
            weight_decay: 1e-3,
        };
        let mut sgd = Sgd::new(&net, config).unwrap();
        net.upload_input(&data).unwrap();
        net.forward_backward().unwrap();
        let grads = net.read_gradients().unwrap();
        // A step of 5% of the largest weight: large enough that a stale f16 copy shows, small
        // enough that no activation leaves f16's range.
        let largest =
            |w: &Weights| (w.iter().flat_map(|(_, t)| &t.data)).fold(0f32, |m, v| m.max(v.abs()));
        config.learning_rate = 0.05 * largest(&weights) / largest(&grads);
        sgd.set_learning_rate(config.learning_rate);
        sgd.update().unwrap();
        // The first step from zero velocity: w - lr (g + wd w), in f32 on the masters. Had the
        // step landed on f16 weights, the weights would be off by up to 2^-11 of their size.
        let stepped = net.read_weights().unwrap();
        let mut rounded_away = 0;
        for (name, grad) in grads.iter() {
            let before = &weights.get(name).unwrap().data;
            let after = &stepped.get(name).unwrap().data;
            let expected: Vec<f32> = (before.iter().zip(&grad.data))
                .map(|(&w, &g)| w - config.learning_rate * (g + config.weight_decay * w))
                .collect();
            let error = common::relative_error(after, &expected);
            assert!(
                error < 1e-6,
                "{name}: {error:e} from the f32 step on {what}"
            );
            rounded_away += (after.iter())
                .filter(|&&v| half::f16::from_f32(v).to_f32() != v)
                .count();
        }
        assert!(
            rounded_away > 0,
            "every weight read back is an f16 value on {what}"
        );
        // The next pass reads the masters' f16 copy: judged against the references from the
        // stepped weights, it would miss them by the step's size had the copy gone stale.
        let loss = Loss::main_head(LossKind::L2, &plan);
        assert_gradients_match(&net, &stepped, &data, (&loss, None), &what);
    }
}
