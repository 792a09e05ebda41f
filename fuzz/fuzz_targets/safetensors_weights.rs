//! Any bytes as a weights file: decoding must return Ok or a one-line error, never panic, hang
//! or allocate what the bytes merely claim. The network is small so that valid files (the seed
//! corpus) are small too; the checks are the ones every network's files go through.
#![no_main]

use convnet_wgpu::model::{Dims, Layer, LayerKind, Network, Padding, Window};
use convnet_wgpu::weights::Weights;
use libfuzzer_sys::fuzz_target;

fn network() -> Network {
    let layer = |name: &str, kind| Layer {
        name: name.into(),
        kind,
    };
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

fuzz_target!(|bytes: &[u8]| {
    if let Err(message) = Weights::decode(bytes, &network()) {
        assert!(!message.contains('\n'), "multi-line error: {message}");
    }
});
