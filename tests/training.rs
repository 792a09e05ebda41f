//! Training every network: the training forward pass (batch norms by the batch's statistics, the
//! running statistics updated as PyTorch does) and the backward pass through residual additions,
//! concatenations, batch norms, average pools and convolutions without bias, on every adapter.
//!
//! Tolerances (see `check`'s docs for the reasoning):
//! - each layer of the training forward, against the f64 reference of that layer from the GPU's
//!   own inputs: 1e-5 of the tensor's scale on these small shapes (only the layer's own f32
//!   rounding remains; measured ~1e-7);
//! - every parameter gradient against the f64 backward pass through the GPU's activations:
//!   `check::GRADIENT_TOLERANCE` (1e-4), as AlexNet's.
//!   The networks run at sizes where batch norm's statistics are over at least 8 values per
//!   channel: over fewer (ResNet-18 at 32x32, batch 2: 2 values in layer4) the normalisation
//!   amplifies f32 rounding so much that two f32 passes disagree by 1e-2 without either being
//!   wrong (docs/testing.md, 'Batch norm in training').

mod common;

use common::{contexts, random};
use convnet_wgpu::check;
use convnet_wgpu::gpu::{GpuNetwork, Keep};
use convnet_wgpu::model::{
    self, Dims, Layer, LayerKind, Loss, LossKind, Network, Options, Pad, Padding, Window,
};
use convnet_wgpu::reference::{self, Parameters};
use convnet_wgpu::weights::{self, Weights};

/// Each layer of a training forward within 1e-5, each gradient within the gradient tolerance.
fn assert_trains_as_the_reference(net: &GpuNetwork, params: &Weights, input: &[f32], what: &str) {
    let loss = Loss::main_head(LossKind::L2, net.plan());
    assert_trains_with_loss(net, params, input, (&loss, None), what);
}

/// As [`assert_trains_as_the_reference`], for `loss` (the labels already uploaded).
fn assert_trains_with_loss(
    net: &GpuNetwork,
    params: &Weights,
    input: &[f32],
    (loss, labels): (&Loss, Option<&[usize]>),
    what: &str,
) {
    for d in check::training_forward(net, params, input).unwrap() {
        assert!(d.within(1e-5), "{what} forward: {d:?}");
    }
    let grads = check::gradients_of(net, params, input, (loss, labels)).unwrap();
    assert!(!grads.is_empty());
    for g in grads {
        assert!(
            g.gpu.within(check::GRADIENT_TOLERANCE),
            "{what}: {:?}",
            g.gpu
        );
    }
}

/// A DAG of every op a torchvision network trains through, on awkward shapes: `a` read by three
/// layers (a batch norm and a convolution, which add their gradients through the scratch buffer,
/// and a concatenation, which adds in place); the input read by two convolutions; a residual add
/// with ReLU; convolutions without bias (a bias before a batch norm has a gradient of exactly zero:
/// nothing to compare to a relative tolerance) and one with stride 2 and asymmetric padding whose
/// output reaches no loss (it gets no backward); a batch norm with ReLU over a concatenation of
/// 3 + 3 + 2 channels; a ceil-mode max pool with padding; an adaptive average pool that does not
/// divide its input (3x4 to 2x3).
fn training_ops_network(input: Dims) -> (Network, Weights) {
    let conv = |out_channels, window, relu, bias| LayerKind::Conv2d {
        out_channels,
        window,
        groups: 1,
        relu,
        bias,
    };
    let same = |size| Window::square(size, 1, Padding::Same);
    let asymmetric = Padding::Explicit(Pad {
        top: 1,
        bottom: 0,
        left: 0,
        right: 1,
    });
    let ceil = Padding::Ceil(Pad {
        top: 1,
        bottom: 1,
        left: 1,
        right: 1,
    });
    let norm = |relu| LayerKind::BatchNorm { eps: 1e-5, relu };
    let layers = vec![
        Layer::new("a", conv(3, same(3), true, true)),
        Layer::new("a_bn", norm(false)),
        Layer::new("b", conv(3, same(1), false, false)).reading(&[model::INPUT]),
        Layer::new("sum", LayerKind::Add { relu: true }).reading(&["a_bn", "b"]),
        Layer::new(
            "unused",
            conv(3, Window::square(3, 2, asymmetric), false, false),
        ),
        Layer::new("d", conv(2, same(3), false, false)).reading(&["a"]),
        Layer::new("cat", LayerKind::Concat).reading(&["sum", "a", "d"]),
        Layer::new("norm", norm(true)),
        Layer::new(
            "pool",
            LayerKind::MaxPool {
                window: Window::square(3, 2, ceil),
            },
        ),
        Layer::new(
            "gap",
            LayerKind::AdaptiveAvgPool {
                height: 2,
                width: 3,
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
    let network = Network::new("training ops", input, layers);
    let mut params = common::random_weights(&network, 9);
    for name in ["a_bn", "norm"] {
        let var = params.get_mut(&format!("{name}.running_var")).unwrap();
        var.data.iter_mut().for_each(|v| *v = v.abs() + 0.1);
    }
    (network, params)
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn training_ops_match_the_reference_on_awkward_shapes() {
    // At 5x7 every element-wise kernel, batch norm and concatenation runs one value at a time
    // (3 channels x 35 values), at 4x6 four at a time.
    for input in [common::dims(3, 5, 7), common::dims(3, 4, 6)] {
        let (network, params) = training_ops_network(input);
        for batch in [1, 3] {
            let plan = network.plan(batch).unwrap();
            let x = random(batch * input.len(), 11);
            for ctx in contexts() {
                let net = GpuNetwork::with_gradients(ctx, &plan, &params).unwrap();
                let what = format!("{input:?}, batch {batch} on {}", ctx.describe());
                assert_trains_as_the_reference(&net, &params, &x, &what);
                // The unused convolution's output reaches no loss: no gradient to read.
                let unused = plan.iter().position(|l| l.layer.name == "unused").unwrap();
                assert!(net.read_output_gradient(unused).is_err());
            }
        }
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn running_statistics_update_as_pytorchs() {
    // Two training forward passes: running = 0.9 running + 0.1 batch (variance unbiased), twice.
    let input = common::dims(3, 5, 7);
    let (network, params) = training_ops_network(input);
    let batch = 3;
    let plan = network.plan(batch).unwrap();
    let x = random(batch * input.len(), 4);
    let cpu = Parameters::<f64>::from_weights(&params);
    let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let forward = reference::forward_training(&plan, &cpu, &x64).unwrap();
    for ctx in contexts() {
        let net = GpuNetwork::with_gradients(ctx, &plan, &params).unwrap();
        net.upload_input(&x).unwrap();
        net.forward().unwrap();
        net.forward().unwrap();
        let after = net.read_weights().unwrap();
        for (i, layer) in plan.iter().enumerate() {
            let Some(norm) = &forward.batch_norms[i] else {
                continue;
            };
            let name = &layer.layer.name;
            let count = batch * layer.output.height * layer.output.width;
            let mut running = (
                params
                    .tensor(name, "running_mean")
                    .unwrap()
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect::<Vec<_>>(),
                params
                    .tensor(name, "running_var")
                    .unwrap()
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect::<Vec<_>>(),
            );
            for _ in 0..2 {
                running = reference::batch_norm_running_update(
                    (&running.0, &running.1),
                    (&norm.mean, &norm.variance),
                    count,
                    0.1,
                );
            }
            for (suffix, expected) in [("running_mean", &running.0), ("running_var", &running.1)] {
                let got = after.tensor(name, suffix).unwrap();
                let d = check::compare(&format!("{name}.{suffix}"), got, expected).unwrap();
                assert!(d.within(1e-5), "{} on {}: {d:?}", d.name, ctx.describe());
            }
            // The parameters themselves are untouched by a forward pass.
            assert_eq!(
                after.tensor(name, "weight").unwrap(),
                params.tensor(name, "weight").unwrap()
            );
        }
    }
}

/// `name` at `size` x `size` with 10 classes, trained at `batch` on every adapter.
fn network_trains_as_the_reference(name: &str, size: usize, batch: usize, aux_logits: bool) {
    let options = Options {
        num_classes: Some(10),
        input_size: Some(size),
        aux_logits,
    };
    let network = model::build(name, &options).unwrap();
    let plan = network.plan(batch).unwrap();
    let params = Weights::init(&network, 5).unwrap();
    let input = weights::random_input(&plan, 5);
    for ctx in contexts() {
        let net = GpuNetwork::with_gradients(ctx, &plan, &params).unwrap();
        let what = format!("{name} {size}x{size} batch {batch} on {}", ctx.describe());
        assert_trains_as_the_reference(&net, &params, &input, &what);
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn resnet18_trains_as_the_reference() {
    network_trains_as_the_reference("resnet18", 64, 2, false);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn resnet50_trains_as_the_reference() {
    // Bottlenecks: 1x1 convolutions, a stride-2 3x3 and a stride-2 1x1 downsample per stage.
    network_trains_as_the_reference("resnet50", 48, 3, false);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn googlenet_trains_as_the_reference() {
    // Inception blocks read by four branches; ceil-mode pools. The auxiliary heads reach no loss
    // here (the loss is the main head's), so they have no backward.
    network_trains_as_the_reference("googlenet", 64, 2, true);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn googlenet_with_aux_heads_trains_on_cross_entropy() {
    // The main head's mean cross-entropy plus 0.3 x each auxiliary head's, as the GoogLeNet
    // paper trains it: every head's gradient reaches the shared trunk.
    let options = Options {
        num_classes: Some(10),
        input_size: Some(64),
        aux_logits: true,
    };
    let network = model::build("googlenet", &options).unwrap();
    let plan = network.plan(2).unwrap();
    let loss = Loss::with_aux_heads(LossKind::CrossEntropy, &plan);
    let heads: Vec<&str> = loss
        .heads
        .iter()
        .map(|&(h, _)| plan[h].layer.name.as_str())
        .collect();
    assert_eq!(heads, ["fc", "aux1.fc2", "aux2.fc2"]);
    let params = Weights::init(&network, 5).unwrap();
    let input = weights::random_input(&plan, 5);
    let labels = [3, 9];
    for ctx in contexts() {
        let net = GpuNetwork::training(ctx, &plan, &params, &loss, Keep::Everything).unwrap();
        net.upload_labels(&labels).unwrap();
        let what = format!("googlenet + aux heads on {}", ctx.describe());
        assert_trains_with_loss(&net, &params, &input, (&loss, Some(&labels)), &what);
        // The aux heads' parameters have gradients now.
        let grads = net.read_gradients().unwrap();
        assert!(grads
            .get("aux1.fc2.weight")
            .unwrap()
            .data
            .iter()
            .any(|&g| g != 0.0));
        // The loss read back is the reference's loss of the GPU's own logits.
        let outputs: Vec<Vec<f64>> = (0..plan.len())
            .map(|i| {
                net.read_layer(i)
                    .unwrap()
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect()
            })
            .collect();
        let (expected, _) = reference::loss(&loss, &plan, &outputs, Some(&labels)).unwrap();
        let got = net.read_loss().unwrap();
        assert!(
            (got - expected).abs() <= 1e-5 * expected.abs(),
            "{got} vs {expected}"
        );
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn bad_labels_are_refused_with_the_reason() {
    let input = common::dims(3, 5, 7);
    let (network, params) = training_ops_network(input);
    let plan = network.plan(2).unwrap();
    let ctx = &contexts()[0];
    let loss = Loss::main_head(LossKind::CrossEntropy, &plan);
    let net = GpuNetwork::training(ctx, &plan, &params, &loss, Keep::Everything).unwrap();
    let error = |labels: &[usize]| net.upload_labels(labels).unwrap_err().to_string();
    assert!(error(&[0, 3]).contains("label 3 of image 1 is not one of the 3 classes"));
    assert!(error(&[0]).contains("1 labels for a batch of 2"));
    let l2 = GpuNetwork::with_gradients(ctx, &plan, &params).unwrap();
    let err = l2.upload_labels(&[0, 1]).unwrap_err().to_string();
    assert!(err.contains("cross-entropy"), "{err}");
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn keeping_only_what_the_backward_reads_changes_no_gradient() {
    // ResNet-18: each block's last batch norm and its downsample's are read only by the
    // residual add's forward, so their outputs share buffers; the same kernels run in the same
    // order, so every gradient and the loss are bit for bit those of the network that keeps all.
    let options = Options {
        num_classes: Some(10),
        input_size: Some(64),
        aux_logits: false,
    };
    let network = model::build("resnet18", &options).unwrap();
    let plan = network.plan(2).unwrap();
    let params = Weights::init(&network, 5).unwrap();
    let input = weights::random_input(&plan, 5);
    let loss = Loss::main_head(LossKind::CrossEntropy, &plan);
    let labels = [7, 2];
    for ctx in contexts() {
        let run = |keep| {
            let net = GpuNetwork::training(ctx, &plan, &params, &loss, keep).unwrap();
            net.upload_input(&input).unwrap();
            net.upload_labels(&labels).unwrap();
            net.forward_backward().unwrap();
            (
                net.read_gradients().unwrap(),
                net.read_loss().unwrap(),
                net.memory(),
            )
        };
        let (all, all_loss, all_memory) = run(Keep::Everything);
        let (lean, lean_loss, lean_memory) = run(Keep::WhatBackwardReads);
        assert_eq!(all_loss, lean_loss, "{}", ctx.describe());
        for (name, tensor) in all.iter() {
            assert_eq!(tensor.data, lean.get(name).unwrap().data, "{name}");
        }
        assert!(
            lean_memory.activations < all_memory.activations,
            "{lean_memory:?} vs {all_memory:?}"
        );
        let net = GpuNetwork::training(ctx, &plan, &params, &loss, Keep::WhatBackwardReads);
        let net = net.unwrap();
        let bn2 = plan
            .iter()
            .position(|l| l.layer.name == "layer1.0.bn2")
            .unwrap();
        let err = net.read_layer(bn2).unwrap_err().to_string();
        assert!(err.contains("not kept"), "{err}");
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn a_loss_head_that_later_layers_read_adds_their_gradients_to_its_own() {
    // l2_loss of the logits plus 0.5 x l2_loss of `sum`, which the concatenation (and the unused
    // convolution) read: `sum`'s gradient is the loss's own plus what flows back from `cat`.
    let input = common::dims(3, 5, 7);
    let (network, params) = training_ops_network(input);
    let plan = network.plan(2).unwrap();
    let sum = plan.iter().position(|l| l.layer.name == "sum").unwrap();
    let loss = Loss {
        kind: LossKind::L2,
        heads: vec![(plan.len() - 1, 1.0), (sum, 0.5)],
    };
    let x = random(2 * input.len(), 12);
    for ctx in contexts() {
        let net = GpuNetwork::training(ctx, &plan, &params, &loss, Keep::Everything).unwrap();
        let what = format!("two heads on {}", ctx.describe());
        assert_trains_with_loss(&net, &params, &x, (&loss, None), &what);
        let twice = Loss {
            kind: LossKind::L2,
            heads: vec![(sum, 1.0), (sum, 0.5)],
        };
        let err = GpuNetwork::training(ctx, &plan, &params, &twice, Keep::Everything);
        assert!(err
            .err()
            .unwrap()
            .to_string()
            .contains("names a head twice"));
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn a_batch_norm_over_one_value_per_channel_is_refused_in_training() {
    // Batch 1 of 1x1 images leaves each channel one value: no variance to train by (PyTorch
    // refuses it too). Inference takes it.
    let input = common::dims(3, 1, 1);
    let layers = vec![
        Layer::new(
            "conv",
            LayerKind::Conv2d {
                out_channels: 2,
                window: Window::square(1, 1, Padding::Valid),
                groups: 1,
                relu: false,
                bias: false,
            },
        ),
        Layer::new(
            "bn",
            LayerKind::BatchNorm {
                eps: 1e-5,
                relu: false,
            },
        ),
    ];
    let network = Network::new("one value", input, layers);
    let params = Weights::init(&network, 1).unwrap();
    let ctx = &contexts()[0];
    let plan = network.plan(1).unwrap();
    let err = GpuNetwork::with_gradients(ctx, &plan, &params)
        .err()
        .unwrap();
    assert!(err.to_string().contains("batch 1 leaves it one"), "{err}");
    GpuNetwork::new(ctx, &plan, &params).unwrap();
    GpuNetwork::with_gradients(ctx, &network.plan(2).unwrap(), &params).unwrap();
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn a_tensor_added_to_itself_gets_both_gradients() {
    // `twice = relu(a + a)`: both of the addition's gradients go to `a` (copied, then added),
    // the path the one-pass add backward leaves to the general one.
    let input = common::dims(2, 3, 5);
    let layers = vec![
        Layer::new(
            "a",
            LayerKind::Conv2d {
                out_channels: 3,
                window: Window::square(3, 1, Padding::Same),
                groups: 1,
                relu: false,
                bias: true,
            },
        ),
        Layer::new("twice", LayerKind::Add { relu: true }).reading(&["a", "a"]),
        Layer::new(
            "fc",
            LayerKind::Linear {
                out_features: 2,
                relu: false,
            },
        ),
    ];
    let network = Network::new("x + x", input, layers);
    let params = common::random_weights(&network, 21);
    let plan = network.plan(3).unwrap();
    let x = random(3 * input.len(), 22);
    for ctx in contexts() {
        let net = GpuNetwork::with_gradients(ctx, &plan, &params).unwrap();
        assert_trains_as_the_reference(&net, &params, &x, &ctx.describe());
    }
}
