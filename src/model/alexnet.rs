//! AlexNet as the 2017 blog post the project reproduces builds it (in TensorFlow; see
//! docs/networks.md, 'The seed'), and the original two-GPU layout.

use super::{Init, Layer, LayerKind, Network, Padding, Towers, Window, IMAGENET_INPUT};

/// TensorFlow's LRN as the post's AlexNet script configures it:
/// `tf.nn.lrn(x, depth_radius=5, bias=1.0, alpha=0.001/9, beta=0.75)`.
pub fn tf_lrn() -> LayerKind {
    LayerKind::Lrn {
        depth_radius: 5,
        bias: 1.0,
        alpha: 0.001 / 9.0,
        beta: 0.75,
        groups: 1,
    }
}

fn conv(name: &str, out_channels: usize, size: usize, stride: usize) -> Layer {
    Layer::new(
        name,
        LayerKind::Conv2d {
            out_channels,
            window: Window::square(size, stride, Padding::Same),
            groups: 1,
            relu: true,
            bias: true,
        },
    )
}

fn pool(name: &str) -> Layer {
    Layer::new(
        name,
        LayerKind::MaxPool {
            window: Window::square(3, 2, Padding::Valid),
        },
    )
}

fn lrn(name: &str) -> Layer {
    Layer::new(name, tf_lrn())
}

fn linear(name: &str, out_features: usize, relu: bool) -> Layer {
    Layer::new(name, LayerKind::Linear { out_features, relu })
}

/// AlexNet as the post builds it (docs/networks.md, 'The seed'): single tower, 224x224x3 input,
/// convolutions SAME, pools VALID, LRN after conv1 and conv2, and fc3 giving logits (no ReLU; the
/// post's helper applied one by mistake, its text says a plain matrix product).
pub fn alexnet() -> Network {
    Network {
        name: "alexnet".into(),
        input: IMAGENET_INPUT,
        towers: None,
        init: Init::TruncatedNormal,
        stages: Vec::new(),
        layers: vec![
            conv("conv1", 96, 11, 4),
            lrn("lrn1"),
            pool("pool1"),
            conv("conv2", 256, 5, 1),
            lrn("lrn2"),
            pool("pool2"),
            conv("conv3", 384, 3, 1),
            conv("conv4", 384, 3, 1),
            conv("conv5", 256, 3, 1),
            pool("pool3"),
            linear("fc1", 4096, true),
            linear("fc2", 4096, true),
            linear("fc3", 1000, false),
        ],
    }
}

fn grouped(mut layer: Layer, groups: usize) -> Layer {
    match &mut layer.kind {
        LayerKind::Conv2d { groups: g, .. } | LayerKind::Lrn { groups: g, .. } => *g = groups,
        _ => unreachable!("only convolutions and LRN have groups"),
    }
    layer
}

/// The original two-GPU AlexNet (Krizhevsky et al., 2012) with TensorFlow's padding rules: every
/// layer from conv1 to fc2 split in half, one half per GPU. conv2, conv4 and conv5 read only
/// their own GPU's channels (groups = 2), and so do the LRNs; conv3, fc1 and fc2 read both GPUs'
/// halves, exchanged before them; fc3 is not split. 60,965,224 parameters at 224x224, the same
/// network as Caffe's `bvlc_alexnet` with `group: 2` (LRN aside: Caffe normalises across all 96
/// channels on one device, the original per GPU, as here).
pub fn alexnet_2gpu() -> Network {
    Network {
        name: "alexnet-2gpu".into(),
        input: IMAGENET_INPUT,
        towers: Some(Towers {
            exchange_before: vec![6, 10, 11, 12],
            unsplit_from: 12,
        }),
        init: Init::TruncatedNormal,
        stages: Vec::new(),
        layers: vec![
            conv("conv1", 96, 11, 4),
            grouped(lrn("lrn1"), 2),
            pool("pool1"),
            grouped(conv("conv2", 256, 5, 1), 2),
            grouped(lrn("lrn2"), 2),
            pool("pool2"),
            conv("conv3", 384, 3, 1),
            grouped(conv("conv4", 384, 3, 1), 2),
            grouped(conv("conv5", 256, 3, 1), 2),
            pool("pool3"),
            linear("fc1", 4096, true),
            linear("fc2", 4096, true),
            linear("fc3", 1000, false),
        ],
    }
}
