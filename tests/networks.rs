//! The torchvision networks: their tables against published figures (no GPU), their weight
//! names, batch-norm folding, and their forward passes on every adapter against the CPU reference
//! at small inputs.
//!
//! Tolerances: the layer comparisons use `check::TOLERANCE` (1e-4 of a tensor's scale; its doc
//! says why). Folding batch norm into a convolution changes the f32 rounding of every product
//! once (weights scaled in f64, rounded to f32), so folded and unfolded CPU passes differ by
//! ~1e-6 of scale per layer; 1e-4 over a whole network is loose enough for 50 layers of that and
//! far below a wrong channel's statistics (errors of order 1).

mod common;

use common::{contexts, random};
use convnet_wgpu::check;
use convnet_wgpu::fold::fold_batch_norm;
use convnet_wgpu::gpu::GpuNetwork;
use convnet_wgpu::model::{self, Dims, Layer, LayerKind, Network, Options, Pad, Padding, Window};
use convnet_wgpu::reference::{self, Parameters};
use convnet_wgpu::table::{self, Detail};
use convnet_wgpu::weights::{self, Weights};

fn build(name: &str, options: Options) -> Network {
    model::build(name, &options).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn parameters(network: &Network) -> usize {
    model::total_parameters(&network.plan(1).unwrap())
}

#[test]
fn parameter_totals_match_the_published_figures() {
    // torchvision's counts (sum of numel over model.parameters()).
    let published = [
        ("alexnet", 62_378_344),
        ("vgg11", 132_863_336),
        ("vgg13", 133_047_848),
        ("vgg16", 138_357_544),
        ("vgg19", 143_667_240),
        ("googlenet", 6_624_904),
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("resnet152", 60_192_808),
    ];
    for (name, count) in published {
        assert_eq!(
            parameters(&build(name, Options::default())),
            count,
            "{name}"
        );
    }
    let aux = Options {
        aux_logits: true,
        ..Options::default()
    };
    assert_eq!(parameters(&build("googlenet", aux)), 13_004_888);
}

#[test]
fn num_classes_changes_every_head() {
    let ten = Options {
        num_classes: Some(10),
        ..Options::default()
    };
    // ResNet-50's fc: 2048 x 1000 + 1000 becomes 2048 x 10 + 10.
    let resnet = build("resnet50", ten);
    assert_eq!(parameters(&resnet), 25_557_032 - 2_049_000 + 20_490);
    let plan = resnet.plan(4).unwrap();
    assert_eq!(plan.last().unwrap().nhwc_shape(), vec![4, 10]);
    // GoogLeNet with its auxiliary heads: all three classifiers give 10 outputs.
    let googlenet = build(
        "googlenet",
        Options {
            aux_logits: true,
            ..ten
        },
    );
    let plan = googlenet.plan(1).unwrap();
    for head in ["aux1.fc2", "aux2.fc2", "fc"] {
        let layer = plan.iter().find(|l| l.layer.name == head).unwrap();
        assert_eq!(layer.output.len(), 10, "{head}");
    }
    assert_eq!(
        parameters(&build("alexnet", ten)),
        62_378_344 - 4_097_000 + 40_970
    );
}

#[test]
fn forward_flops_match_the_published_multiply_adds() {
    // Published multiply-adds per 224x224 image (ptflops / torchvision docs), in GMAC, to 2
    // decimals; ours count a multiply-add as 2 FLOP.
    let published = [
        ("vgg16", 15.47),
        ("resnet18", 1.81),
        ("resnet50", 4.09),
        ("resnet152", 11.51),
        ("googlenet", 1.50),
    ];
    for (name, gmac) in published {
        let plan = build(name, Options::default()).plan(1).unwrap();
        let ours = model::total_flops_per_image(&plan) as f64 / 2e9;
        assert!((ours - gmac).abs() < 0.01, "{name}: {ours:.3} GMAC");
    }
}

#[test]
fn googlenet_pools_round_up_as_ceil_mode_does() {
    let plan = build("googlenet", Options::default()).plan(1).unwrap();
    let side = |name: &str| {
        plan.iter()
            .find(|l| l.layer.name == name)
            .unwrap()
            .output
            .height
    };
    // 112 -> 56 -> 28 -> 14 -> 7 through ceil_mode pools (floor would give 55, 27, 13, 6).
    for (pool, expected) in [
        ("maxpool1", 56),
        ("maxpool2", 28),
        ("maxpool3", 14),
        ("maxpool4", 7),
    ] {
        assert_eq!(side(pool), expected, "{pool}");
    }
    assert_eq!(plan.last().unwrap().input.channels, 1024);
}

#[test]
fn ceil_mode_keeps_only_windows_that_start_inside() {
    // 3x3 stride 2 on 6: floor gives 2, ceil 3 (the last window covers 4..6, one padded column);
    // 2x2 stride 2 on 6: both 3, no extra padding.
    let pool = |size, stride, width| {
        let network = common::single_layer(
            Dims {
                channels: 1,
                height: 1,
                width,
            },
            LayerKind::MaxPool {
                window: Window {
                    height: 1,
                    width: size,
                    stride_height: 1,
                    stride_width: stride,
                    padding: Padding::Ceil(Pad::default()),
                },
            },
        );
        let plan = network.plan(1).unwrap();
        (plan[0].output.width, plan[0].pad.right)
    };
    assert_eq!(pool(3, 2, 6), (3, 1));
    assert_eq!(pool(2, 2, 6), (3, 0));
    assert_eq!(pool(3, 2, 7), (3, 0));
}

#[test]
fn weight_names_are_torchvisions() {
    let names = |name: &str, options| -> Vec<String> {
        let network = build(name, options);
        Weights::init(&network, 0)
            .unwrap()
            .iter()
            .map(|(n, _)| n.to_string())
            .collect()
    };
    let resnet = names("resnet50", Options::default());
    for expected in [
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.bias",
        "layer3.5.conv3.weight",
        "layer4.2.bn3.running_mean",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(resnet.iter().any(|n| n == expected), "resnet50: {expected}");
    }
    assert!(
        !resnet.iter().any(|n| n == "conv1.bias"),
        "bias-free convolutions"
    );
    let vgg = names("vgg16", Options::default());
    assert_eq!(vgg.first().unwrap(), "features.0.weight");
    assert!(vgg.iter().any(|n| n == "features.28.bias"));
    assert_eq!(vgg.last().unwrap(), "classifier.6.bias");
    let googlenet = names("googlenet", Options::default());
    for expected in [
        "conv1.conv.weight",
        "conv1.bn.running_mean",
        "inception3a.branch2.1.conv.weight",
        "inception5b.branch4.1.bn.bias",
    ] {
        assert!(
            googlenet.iter().any(|n| n == expected),
            "googlenet: {expected}"
        );
    }
}

#[test]
fn stage_tables_sum_to_the_layer_tables() {
    for name in ["resnet50", "googlenet", "vgg16"] {
        let network = build(name, Options::default());
        let plan = network.plan(2).unwrap();
        let layers = table::rows(&network, &plan, Detail::Layer).unwrap();
        let stages = table::rows(&network, &plan, Detail::Stage).unwrap();
        assert_eq!(layers.len(), plan.len());
        assert!(stages.len() < layers.len(), "{name}");
        assert_eq!(stages.iter().map(|r| r.layers).sum::<usize>(), plan.len());
        let params = |rows: &[table::Row]| rows.iter().map(|r| r.parameters).sum::<usize>();
        assert_eq!(params(&stages), params(&layers), "{name}");
        assert_eq!(stages.last().unwrap().shape_nhwc, vec![2, 1000]);
    }
}

#[test]
fn bad_options_name_what_is_wrong() {
    let err = |name: &str, options| model::build(name, &options).unwrap_err().to_string();
    let unknown = err("resnet51", Options::default());
    assert!(
        unknown.contains("resnet50") && unknown.contains("vgg16"),
        "{unknown}"
    );
    let zero = Options {
        num_classes: Some(0),
        ..Options::default()
    };
    assert!(err("resnet50", zero).contains("num-classes"));
    let aux = Options {
        aux_logits: true,
        ..Options::default()
    };
    assert!(err("resnet50", aux).contains("googlenet"));
    // VGG's five 2x2 pools take 16 down to 0 at the fifth (features.30 in VGG-16).
    let small = build(
        "vgg16",
        Options {
            input_size: Some(16),
            ..Options::default()
        },
    );
    let too_small = small.plan(1).unwrap_err().to_string();
    assert!(
        too_small.contains("features.30") && too_small.contains("too small"),
        "{too_small}"
    );
}

#[test]
fn weights_of_another_head_or_network_are_refused() {
    let ten = Options {
        num_classes: Some(10),
        ..Options::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet18-10.safetensors");
    Weights::init(&build("resnet18", ten), 0)
        .unwrap()
        .save(&path)
        .unwrap();
    let err = Weights::load(&path, &build("resnet18", Options::default()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fc.weight") && err.contains("[10, 512]"),
        "{err}"
    );
    let err = Weights::load(&path, &build("resnet34", ten))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing") || err.contains("does not have"),
        "{err}"
    );
    assert!(Weights::load(&path, &build("resnet18", ten)).is_ok());
}

#[test]
fn torchvision_batch_counters_are_accepted_and_ignored() {
    // A torchvision state_dict holds `num_batches_tracked` (int64 scalars) beside each batch
    // norm's statistics.
    let network = build("resnet18", Options::default());
    let weights = Weights::init(&network, 0).unwrap();
    let counter = 7i64.to_le_bytes();
    let mut views: Vec<(String, safetensors::tensor::TensorView)> = weights
        .iter()
        .map(|(name, t)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                t.shape.clone(),
                bytemuck::cast_slice(&t.data),
            )
            .unwrap();
            (name.to_string(), view)
        })
        .collect();
    let counter_view =
        || safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![], &counter).unwrap();
    views.push(("bn1.num_batches_tracked".into(), counter_view()));
    let bytes = safetensors::tensor::serialize(views.clone(), None).unwrap();
    assert_eq!(Weights::decode(&bytes, &network).unwrap(), weights);
    // Only beside a batch norm: a counter of nothing is a foreign tensor.
    views.push(("fc.num_batches_tracked".into(), counter_view()));
    let bytes = safetensors::tensor::serialize(views, None).unwrap();
    assert!(Weights::decode(&bytes, &network).is_err());
}

/// Every layer output of the folded network's CPU pass against the unfolded one, by name.
#[test]
fn folding_batch_norm_changes_nothing_but_rounding() {
    for (name, size) in [("resnet18", 40), ("googlenet", 48)] {
        let network = build(
            name,
            Options {
                input_size: Some(size),
                ..Options::default()
            },
        );
        let params = Weights::init(&network, 3).unwrap();
        let (folded, folded_params) = fold_batch_norm(&network, &params).unwrap();
        assert!(folded.layers.len() < network.layers.len(), "{name} folds");
        assert!(
            !folded
                .layers
                .iter()
                .any(|l| matches!(l.kind, LayerKind::BatchNorm { .. })),
            "{name}: every batch norm follows a convolution"
        );
        let plan = network.plan(2).unwrap();
        let folded_plan = folded.plan(2).unwrap();
        let input = weights::random_input(&plan, 3);
        let exact =
            reference::forward(&plan, &Parameters::<f32>::from_weights(&params), &input).unwrap();
        let fast = reference::forward(
            &folded_plan,
            &Parameters::<f32>::from_weights(&folded_params),
            &input,
        )
        .unwrap();
        for (layer, values) in folded_plan.iter().zip(&fast) {
            let index = plan
                .iter()
                .position(|l| l.layer.name == layer.layer.name)
                .unwrap();
            let deviation = check::compare(&layer.layer.name, values, &exact[index]).unwrap();
            assert!(deviation.within(check::TOLERANCE), "{name}: {deviation:?}");
        }
    }
}

/// Runs `network` (folded unless `explicit_bn`) on every adapter and compares every layer with
/// the CPU reference of the unfolded network.
fn gpu_matches_reference(network: &Network, batch: usize, explicit_bn: bool) {
    let plan = network.plan(batch).unwrap();
    let params = Weights::init(network, 5).unwrap();
    let input = weights::random_input(&plan, 5);
    let (gpu_network, gpu_params) = if explicit_bn {
        (network.clone(), params.clone())
    } else {
        fold_batch_norm(network, &params).unwrap()
    };
    let gpu_plan = gpu_network.plan(batch).unwrap();
    for ctx in contexts() {
        let net = GpuNetwork::new(ctx, &gpu_plan, &gpu_params).expect("network builds");
        for d in check::forward(&net, &plan, &params, &input).unwrap() {
            assert!(
                d.within(check::TOLERANCE),
                "{} at batch {batch} on {}: {d:?}",
                network.name,
                ctx.describe()
            );
        }
    }
}

fn small(name: &str, size: usize) -> Network {
    build(
        name,
        Options {
            input_size: Some(size),
            ..Options::default()
        },
    )
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn vgg16_forward_matches_the_reference() {
    // 64x64: VGG's average pool then repeats the 2x2 map to 7x7, as torchvision's does.
    gpu_matches_reference(&small("vgg16", 64), 1, false);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn resnet50_forward_matches_the_reference() {
    gpu_matches_reference(&small("resnet50", 64), 1, false);
    let ten = build(
        "resnet50",
        Options {
            num_classes: Some(10),
            input_size: Some(35),
            aux_logits: false,
        },
    );
    gpu_matches_reference(&ten, 2, false);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn resnet18_with_explicit_batch_norm_matches_the_reference() {
    gpu_matches_reference(&small("resnet18", 37), 3, true);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn googlenet_forward_matches_the_reference() {
    let network = build(
        "googlenet",
        Options {
            input_size: Some(64),
            aux_logits: true,
            num_classes: Some(17),
        },
    );
    gpu_matches_reference(&network, 1, false);
    gpu_matches_reference(&small("googlenet", 33), 2, true);
}

/// The new ops on awkward shapes: adaptive pooling that neither divides nor is divided by the
/// input (5x7 to 3x2, 3x2 to 4x5), a concatenation of odd channel counts, an addition without
/// ReLU, a batch norm with ReLU; with random weights (variances kept positive).
fn new_ops_network(input: Dims) -> (Network, Weights) {
    let conv = |out_channels| LayerKind::Conv2d {
        out_channels,
        window: Window::square(3, 1, Padding::Same),
        groups: 1,
        relu: false,
        bias: true,
    };
    let pool = |height, width| LayerKind::AdaptiveAvgPool { height, width };
    let layers = vec![
        Layer::new("a", conv(5)),
        Layer::new("b", conv(5)).reading(&[model::INPUT]),
        Layer::new("sum", LayerKind::Add { relu: false }).reading(&["a", "b"]),
        Layer::new("c", conv(1)).reading(&[model::INPUT]),
        Layer::new("cat", LayerKind::Concat).reading(&["sum", "c", "a"]),
        Layer::new(
            "norm",
            LayerKind::BatchNorm {
                eps: 1e-3,
                relu: true,
            },
        ),
        Layer::new("down", pool(3, 2)),
        Layer::new("up", pool(4, 5)),
        Layer::new(
            "fc",
            LayerKind::Linear {
                out_features: 3,
                relu: false,
            },
        ),
    ];
    let network = Network::new("ops", input, layers);
    let mut params = common::random_weights(&network, 9);
    let var = params.get_mut("norm.running_var").unwrap();
    var.data.iter_mut().for_each(|v| *v = v.abs() + 0.1);
    (network, params)
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn new_ops_match_the_reference_on_awkward_shapes() {
    let input = Dims {
        channels: 3,
        height: 5,
        width: 7,
    };
    let (network, params) = new_ops_network(input);
    for batch in [1, 3] {
        let plan = network.plan(batch).unwrap();
        let x = random(batch * input.len(), 11);
        for ctx in contexts() {
            let net = GpuNetwork::new(ctx, &plan, &params).unwrap();
            for d in check::forward(&net, &plan, &params, &x).unwrap() {
                assert!(d.within(1e-5), "batch {batch} on {}: {d:?}", ctx.describe());
            }
        }
    }
}

/// The same ops with their launches folded into 2-D grids (see tests/kernels.rs,
/// `kernels_unfold_a_grid_folded_into_two_dimensions`): the residual add, the concatenation,
/// the batch norm and the adaptive pooling unfold them too.
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn new_ops_unfold_a_folded_grid() {
    let input = Dims {
        channels: 3,
        height: 17,
        width: 19,
    };
    let (network, params) = new_ops_network(input);
    let batch = 3;
    let plan = network.plan(batch).unwrap();
    let x = random(batch * input.len(), 11);
    for shared in contexts() {
        let (high, ctx) = common::smallest_fitting_context(shared, |ctx| {
            GpuNetwork::new(ctx, &plan, &params).is_ok()
        });
        let net = GpuNetwork::new(&ctx, &plan, &params).unwrap();
        assert!(net.folded_launches() > 0, "nothing folds at limit {high}");
        for d in check::forward(&net, &plan, &params, &x).unwrap() {
            assert!(d.within(1e-5), "limit {high} on {}: {d:?}", ctx.describe());
        }
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn weights_read_back_as_the_file_holds_them() {
    // ResNet-18 unfolded: convolutions without bias and batch norms (weight, bias and running
    // statistics in one buffer on the GPU) read back under the file's names and shapes.
    let network = build(
        "resnet18",
        Options {
            input_size: Some(33),
            ..Options::default()
        },
    );
    let plan = network.plan(1).unwrap();
    let weights = Weights::init(&network, 5).unwrap();
    for ctx in contexts() {
        let net = GpuNetwork::new(ctx, &plan, &weights).unwrap();
        let read = net.read_weights().unwrap();
        let names = |w: &Weights| {
            let mut names: Vec<String> = w.iter().map(|(n, _)| n.to_string()).collect();
            names.sort();
            names
        };
        assert_eq!(names(&read), names(&weights), "on {}", ctx.describe());
        for (name, tensor) in weights.iter() {
            let got = read.get(name).unwrap();
            assert_eq!(got.shape, tensor.shape, "{name}");
            assert_eq!(got.data, tensor.data, "{name} on {}", ctx.describe());
        }
    }
}
