//! The seed's table: shapes, parameter counts and FLOPs of AlexNet, with no GPU.

use convnet_wgpu::model::{self, Dims, LayerKind, Pad, Padding, Window};

mod common;

#[test]
fn alexnet_matches_the_seeds_table() {
    let plan = model::alexnet().plan(32).unwrap();
    // (layer, [N, H, W, C] or [N, C], parameters, forward MFLOP per image x 10), from the post's
    // table (docs/networks.md, 'The seed').
    let seed: [(&str, &[usize], usize, u64); 11] = [
        ("conv1", &[32, 56, 56, 96], 34_944, 2186),
        ("pool1", &[32, 27, 27, 96], 0, 0),
        ("conv2", &[32, 27, 27, 256], 614_656, 8958),
        ("pool2", &[32, 13, 13, 256], 0, 0),
        ("conv3", &[32, 13, 13, 384], 885_120, 2990),
        ("conv4", &[32, 13, 13, 384], 1_327_488, 4486),
        ("conv5", &[32, 13, 13, 256], 884_992, 2990),
        ("pool3", &[32, 6, 6, 256], 0, 0),
        ("fc1", &[32, 4096], 37_752_832, 755),
        ("fc2", &[32, 4096], 16_781_312, 336),
        ("fc3", &[32, 1000], 4_097_000, 82),
    ];
    for (name, shape, params, decimegaflops) in seed {
        let layer = plan
            .iter()
            .find(|l| l.layer.name == name)
            .unwrap_or_else(|| panic!("no layer {name}"));
        assert_eq!(layer.nhwc_shape(), shape, "{name} shape");
        assert_eq!(layer.parameters(), params, "{name} parameters");
        let rounded = (layer.flops_per_image() as f64 / 1e5).round() as u64;
        assert_eq!(rounded, decimegaflops, "{name} MFLOP x 10");
    }
    assert_eq!(model::total_parameters(&plan), 62_378_344);
    let gflop_per_batch = model::total_flops_per_image(&plan) as f64 * 32.0 / 1e9;
    assert!((gflop_per_batch - 72.9).abs() < 0.05, "{gflop_per_batch}");
}

#[test]
fn same_padding_puts_the_larger_half_after() {
    let plan = model::alexnet().plan(1).unwrap();
    assert_eq!(
        plan[0].pad,
        Pad {
            top: 3,
            bottom: 4,
            left: 3,
            right: 4
        }
    );
    let conv2 = plan.iter().find(|l| l.layer.name == "conv2").unwrap();
    assert_eq!(
        conv2.pad,
        Pad {
            top: 2,
            bottom: 2,
            left: 2,
            right: 2
        }
    );
}

#[test]
fn impossible_networks_are_rejected_with_the_layer_named() {
    let tiny = Dims {
        channels: 3,
        height: 8,
        width: 8,
    };
    let mut network = model::alexnet();
    network.input = tiny;
    let err = network.plan(1).unwrap_err().to_string();
    assert!(err.contains("empty output"), "{err}");

    assert!(model::alexnet().plan(0).is_err());

    let grouped = common::single_layer(
        tiny,
        LayerKind::Conv2d {
            out_channels: 4,
            window: Window::square(3, 1, Padding::Same),
            groups: 2,
            relu: false,
            bias: true,
        },
    );
    let err = grouped.plan(1).unwrap_err().to_string();
    assert!(err.contains("groups"), "{err}");

    let padded_away = common::single_layer(
        tiny,
        LayerKind::MaxPool {
            window: Window {
                height: 2,
                width: 2,
                stride_height: 1,
                stride_width: 1,
                padding: Padding::Explicit(Pad {
                    top: 2,
                    bottom: 0,
                    left: 0,
                    right: 0,
                }),
            },
        },
    );
    assert!(padded_away.plan(1).is_err());
    assert!(model::by_name("lenet")
        .unwrap_err()
        .to_string()
        .contains("alexnet"));
}
