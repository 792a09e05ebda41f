//! The small network the weights fuzz target decodes files for, shared with the regression
//! test that replays the fuzzers' findings (tests/loaders.rs).

use convnet_wgpu::model::{Dims, Layer, LayerKind, Network, Padding, Window};

/// A grouped convolution and a linear layer: every check a weights file goes through, with valid
/// files under a kilobyte.
pub fn network() -> Network {
    let layer = |name: &str, kind| Layer::new(name, kind);
    Network::new(
        "fuzz",
        Dims {
            channels: 2,
            height: 4,
            width: 4,
        },
        vec![
            layer(
                "conv1",
                LayerKind::Conv2d {
                    out_channels: 2,
                    window: Window::square(3, 1, Padding::Same),
                    groups: 2,
                    relu: true,
                    bias: true,
                },
            ),
            layer(
                "fc1",
                LayerKind::Linear {
                    out_features: 3,
                    relu: false,
                },
            ),
        ],
    )
}
