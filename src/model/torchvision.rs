//! VGG, GoogLeNet and ResNet as torchvision builds them, layer for layer, so that a torchvision
//! model's `state_dict` names every parameter as these layers do (`features.0.weight`,
//! `layer1.0.bn1.running_mean`, `inception3a.branch2.1.conv.weight`, ...).
//!
//! Three things differ in form, not in function: a ReLU that torchvision runs as its own module is
//! fused into the layer before it (convolution, batch norm, addition, linear); dropout is the
//! identity at inference and is left out; VGG's, ResNet's and GoogLeNet's final flatten is implicit
//! (a linear layer reads its input in (C, H, W) order). Layer names keep torchvision's module
//! indices, so VGG16's convolutions are `features.0, features.2, ...` with gaps where the ReLUs were.

use super::{Init, Layer, LayerKind, Network, Pad, Padding, Stage, Window, IMAGENET_INPUT};
use crate::error::{Error, Result};

/// Collects layers and the stages they fall into.
struct Builder {
    layers: Vec<Layer>,
    stages: Vec<Stage>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            layers: Vec::new(),
            stages: Vec::new(),
        }
    }

    /// Starts a stage called `name` at the next layer; it runs until the next one starts.
    fn stage(&mut self, name: &str) {
        let start = self.layers.len();
        if let Some(last) = self.stages.last_mut() {
            last.layers.end = start;
        }
        self.stages.push(Stage {
            name: name.into(),
            layers: start..start,
        });
    }

    /// Adds a layer and returns its name, for the layers that read it.
    fn push(&mut self, layer: Layer) -> String {
        let name = layer.name.clone();
        self.layers.push(layer);
        name
    }

    fn finish(mut self, name: &str) -> Network {
        if let Some(last) = self.stages.last_mut() {
            last.layers.end = self.layers.len();
        }
        Network {
            name: name.into(),
            input: IMAGENET_INPUT,
            layers: self.layers,
            towers: None,
            init: Init::Torchvision,
            stages: self.stages,
        }
    }
}

/// PyTorch's symmetric padding of `pad` on every side.
fn padding(pad: usize) -> Padding {
    Padding::Explicit(Pad {
        top: pad,
        bottom: pad,
        left: pad,
        right: pad,
    })
}

/// A convolution that a batch norm follows: no bias (the batch norm's shifts it), no ReLU.
fn conv(out_channels: usize, size: usize, stride: usize, pad: usize) -> LayerKind {
    LayerKind::Conv2d {
        out_channels,
        window: Window::square(size, stride, padding(pad)),
        groups: 1,
        relu: false,
        bias: false,
    }
}

/// VGG's 3x3 convolution with bias and ReLU.
fn conv_relu(out_channels: usize) -> LayerKind {
    LayerKind::Conv2d {
        out_channels,
        window: Window::square(3, 1, padding(1)),
        groups: 1,
        relu: true,
        bias: true,
    }
}

fn batch_norm(eps: f32, relu: bool) -> LayerKind {
    LayerKind::BatchNorm { eps, relu }
}

fn max_pool(size: usize, stride: usize, pad: usize, ceil_mode: bool) -> LayerKind {
    let pad = Pad {
        top: pad,
        bottom: pad,
        left: pad,
        right: pad,
    };
    let padding = if ceil_mode {
        Padding::Ceil(pad)
    } else {
        Padding::Explicit(pad)
    };
    LayerKind::MaxPool {
        window: Window::square(size, stride, padding),
    }
}

fn linear(out_features: usize, relu: bool) -> LayerKind {
    LayerKind::Linear { out_features, relu }
}

/// VGG with `depth` weight layers (11, 13, 16 or 19), without batch norm: 3x3 convolutions with
/// ReLU, 2x2 max pools, average pooling to 7x7 and the 4096-4096-1000 classifier.
pub fn vgg(depth: usize) -> Result<Network> {
    // Convolutions per block, torchvision's configurations A, B, D and E.
    let blocks: [usize; 5] = match depth {
        11 => [1, 1, 2, 2, 2],
        13 => [2, 2, 2, 2, 2],
        16 => [2, 2, 3, 3, 3],
        19 => [2, 2, 4, 4, 4],
        _ => {
            return Err(Error::InvalidArgument(format!(
                "VGG has 11, 13, 16 or 19 layers, not {depth}"
            )))
        }
    };
    let mut b = Builder::new();
    let mut index = 0;
    for (block, (&convs, channels)) in blocks.iter().zip([64, 128, 256, 512, 512]).enumerate() {
        b.stage(&format!("block{}", block + 1));
        for _ in 0..convs {
            // A convolution, then its ReLU module: two indices.
            b.push(Layer::new(format!("features.{index}"), conv_relu(channels)));
            index += 2;
        }
        b.push(Layer::new(
            format!("features.{index}"),
            max_pool(2, 2, 0, false),
        ));
        index += 1;
    }
    b.stage("avgpool");
    b.push(Layer::new(
        "avgpool",
        LayerKind::AdaptiveAvgPool {
            height: 7,
            width: 7,
        },
    ));
    b.stage("classifier");
    b.push(Layer::new("classifier.0", linear(4096, true)));
    b.push(Layer::new("classifier.3", linear(4096, true)));
    b.push(Layer::new("classifier.6", linear(1000, false)));
    Ok(b.finish(&format!("vgg{depth}")))
}

/// torchvision's batch-norm epsilon in ResNet.
const RESNET_EPS: f32 = 1e-5;

/// ResNet with `depth` layers (18, 34, 50, 101 or 152): basic blocks for 18 and 34, bottleneck
/// blocks (1x1, 3x3 with the stride, 1x1 to 4x the width) for the others; a 1x1 convolution and
/// batch norm on the shortcut where the shape changes.
pub fn resnet(depth: usize) -> Result<Network> {
    let (bottleneck, blocks): (bool, [usize; 4]) = match depth {
        18 => (false, [2, 2, 2, 2]),
        34 => (false, [3, 4, 6, 3]),
        50 => (true, [3, 4, 6, 3]),
        101 => (true, [3, 4, 23, 3]),
        152 => (true, [3, 8, 36, 3]),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "ResNet has 18, 34, 50, 101 or 152 layers, not {depth}"
            )))
        }
    };
    let expansion = if bottleneck { 4 } else { 1 };
    let mut b = Builder::new();
    b.stage("conv1");
    b.push(Layer::new("conv1", conv(64, 7, 2, 3)));
    b.push(Layer::new("bn1", batch_norm(RESNET_EPS, true)));
    b.stage("maxpool");
    let mut previous = b.push(Layer::new("maxpool", max_pool(3, 2, 1, false)));
    let mut in_channels = 64;
    for (stage, (&count, width)) in blocks.iter().zip([64, 128, 256, 512]).enumerate() {
        let stage_name = format!("layer{}", stage + 1);
        b.stage(&stage_name);
        for block in 0..count {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let prefix = format!("{stage_name}.{block}");
            previous = residual_block(
                &mut b,
                &prefix,
                &previous,
                in_channels,
                width,
                stride,
                bottleneck,
            );
            in_channels = width * expansion;
        }
    }
    b.stage("avgpool");
    b.push(Layer::new(
        "avgpool",
        LayerKind::AdaptiveAvgPool {
            height: 1,
            width: 1,
        },
    ));
    b.stage("fc");
    b.push(Layer::new("fc", linear(1000, false)));
    Ok(b.finish(&format!("resnet{depth}")))
}

/// One residual block reading `input`; returns the name of its output (the addition).
fn residual_block(
    b: &mut Builder,
    prefix: &str,
    input: &str,
    in_channels: usize,
    width: usize,
    stride: usize,
    bottleneck: bool,
) -> String {
    // (out channels, kernel, stride, padding) of each convolution on the main path; every one but
    // the last is followed by batch norm with ReLU, the last by batch norm alone.
    let convs: Vec<(usize, usize, usize, usize)> = if bottleneck {
        vec![
            (width, 1, 1, 0),
            (width, 3, stride, 1),
            (width * 4, 1, 1, 0),
        ]
    } else {
        vec![(width, 3, stride, 1), (width, 3, 1, 1)]
    };
    let out_channels = convs.last().expect("a block has convolutions").0;
    let mut main = input.to_string();
    for (i, &(channels, size, conv_stride, pad)) in convs.iter().enumerate() {
        let last = i + 1 == convs.len();
        b.push(
            Layer::new(
                format!("{prefix}.conv{}", i + 1),
                conv(channels, size, conv_stride, pad),
            )
            .reading(&[&main]),
        );
        main = b.push(Layer::new(
            format!("{prefix}.bn{}", i + 1),
            batch_norm(RESNET_EPS, !last),
        ));
    }
    let shortcut = if stride != 1 || in_channels != out_channels {
        b.push(
            Layer::new(
                format!("{prefix}.downsample.0"),
                conv(out_channels, 1, stride, 0),
            )
            .reading(&[input]),
        );
        b.push(Layer::new(
            format!("{prefix}.downsample.1"),
            batch_norm(RESNET_EPS, false),
        ))
    } else {
        input.to_string()
    };
    b.push(Layer::new(prefix, LayerKind::Add { relu: true }).reading(&[&main, &shortcut]))
}

/// torchvision's batch-norm epsilon in GoogLeNet.
const GOOGLENET_EPS: f32 = 1e-3;

/// GoogLeNet's `BasicConv2d`: a convolution without bias, batch norm, ReLU. Returns the output's
/// name.
fn basic_conv(
    b: &mut Builder,
    prefix: &str,
    input: &str,
    out_channels: usize,
    size: usize,
    stride: usize,
    pad: usize,
) -> String {
    b.push(
        Layer::new(
            format!("{prefix}.conv"),
            conv(out_channels, size, stride, pad),
        )
        .reading(&[input]),
    );
    b.push(Layer::new(
        format!("{prefix}.bn"),
        batch_norm(GOOGLENET_EPS, true),
    ))
}

/// An Inception block's widths: 1x1; 3x3 reduce, 3x3; "5x5" reduce, "5x5" (a 3x3 in torchvision,
/// kept for its weights' sake); pool projection.
type InceptionWidths = (usize, usize, usize, usize, usize, usize);

fn inception(b: &mut Builder, name: &str, input: &str, widths: InceptionWidths) -> String {
    let (c1, c3_reduce, c3, c5_reduce, c5, pool_proj) = widths;
    b.stage(name);
    let branch1 = basic_conv(b, &format!("{name}.branch1"), input, c1, 1, 1, 0);
    let reduce3 = basic_conv(b, &format!("{name}.branch2.0"), input, c3_reduce, 1, 1, 0);
    let branch2 = basic_conv(b, &format!("{name}.branch2.1"), &reduce3, c3, 3, 1, 1);
    let reduce5 = basic_conv(b, &format!("{name}.branch3.0"), input, c5_reduce, 1, 1, 0);
    let branch3 = basic_conv(b, &format!("{name}.branch3.1"), &reduce5, c5, 3, 1, 1);
    let pooled =
        b.push(Layer::new(format!("{name}.branch4.0"), max_pool(3, 1, 1, true)).reading(&[input]));
    let branch4 = basic_conv(b, &format!("{name}.branch4.1"), &pooled, pool_proj, 1, 1, 0);
    b.push(Layer::new(name, LayerKind::Concat).reading(&[&branch1, &branch2, &branch3, &branch4]))
}

/// An auxiliary classifier reading `input`: 4x4 average pool, 1x1 convolution to 128, two fully
/// connected layers. Nothing reads its output; it is a second (and third) head.
fn aux_head(b: &mut Builder, name: &str, input: &str) {
    b.stage(name);
    let pooled = b.push(
        Layer::new(
            format!("{name}.avgpool"),
            LayerKind::AdaptiveAvgPool {
                height: 4,
                width: 4,
            },
        )
        .reading(&[input]),
    );
    basic_conv(b, &format!("{name}.conv"), &pooled, 128, 1, 1, 0);
    b.push(Layer::new(format!("{name}.fc1"), linear(1024, true)));
    b.push(Layer::new(format!("{name}.fc2"), linear(1000, false)));
}

/// GoogLeNet (Inception v1) as torchvision builds it, batch norm after every convolution; with
/// `aux_logits`, its two auxiliary classifiers after inception4a and inception4d.
pub fn googlenet(aux_logits: bool) -> Network {
    let mut b = Builder::new();
    b.stage("stem");
    let mut x = basic_conv(&mut b, "conv1", super::INPUT, 64, 7, 2, 3);
    x = b.push(Layer::new("maxpool1", max_pool(3, 2, 0, true)).reading(&[&x]));
    x = basic_conv(&mut b, "conv2", &x, 64, 1, 1, 0);
    x = basic_conv(&mut b, "conv3", &x, 192, 3, 1, 1);
    x = b.push(Layer::new("maxpool2", max_pool(3, 2, 0, true)).reading(&[&x]));
    x = inception(&mut b, "inception3a", &x, (64, 96, 128, 16, 32, 32));
    x = inception(&mut b, "inception3b", &x, (128, 128, 192, 32, 96, 64));
    b.stage("maxpool3");
    x = b.push(Layer::new("maxpool3", max_pool(3, 2, 0, true)).reading(&[&x]));
    x = inception(&mut b, "inception4a", &x, (192, 96, 208, 16, 48, 64));
    if aux_logits {
        aux_head(&mut b, "aux1", &x);
    }
    x = inception(&mut b, "inception4b", &x, (160, 112, 224, 24, 64, 64));
    x = inception(&mut b, "inception4c", &x, (128, 128, 256, 24, 64, 64));
    x = inception(&mut b, "inception4d", &x, (112, 144, 288, 32, 64, 64));
    if aux_logits {
        aux_head(&mut b, "aux2", &x);
    }
    x = inception(&mut b, "inception4e", &x, (256, 160, 320, 32, 128, 128));
    b.stage("maxpool4");
    x = b.push(Layer::new("maxpool4", max_pool(2, 2, 0, true)).reading(&[&x]));
    x = inception(&mut b, "inception5a", &x, (256, 160, 320, 32, 128, 128));
    x = inception(&mut b, "inception5b", &x, (384, 192, 384, 48, 128, 128));
    b.stage("avgpool");
    b.push(
        Layer::new(
            "avgpool",
            LayerKind::AdaptiveAvgPool {
                height: 1,
                width: 1,
            },
        )
        .reading(&[&x]),
    );
    b.stage("fc");
    b.push(Layer::new("fc", linear(1000, false)));
    b.finish("googlenet")
}
