//! Network descriptions: layers, the shapes they produce, their parameter and FLOP counts.
//!
//! Nothing here touches a GPU. A [`Network`] is a list of layers; [`Network::plan`] resolves it at
//! a batch size into [`LayerPlan`]s (input and output dimensions, the exact padding of every side),
//! which the CPU reference, the GPU executor and the tables all walk.
//!
//! Shapes follow TensorFlow's rules, as the seed's network was built in TensorFlow:
//! VALID gives `ceil((W - F + 1) / S)`, SAME gives `ceil(W / S)` and pads
//! `max((out - 1) * S + F - W, 0)` in total, the smaller half before and the larger after.

use crate::error::{Error, Result};

/// How a convolution or pooling window treats the border (TensorFlow's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// No padding: windows stay inside the input.
    Valid,
    /// Output size `ceil(W / S)`, padding split with the larger half after.
    Same,
    /// Padding given per side; output `(W + before + after - F) / S + 1`.
    Explicit(Pad),
}

/// The padding of each side of a window, resolved from [`Padding`] at a given input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pad {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

/// A 2-D window: kernel or pooling size and stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub height: usize,
    pub width: usize,
    pub stride_height: usize,
    pub stride_width: usize,
    pub padding: Padding,
}

impl Window {
    /// A square window with the same stride in both directions.
    pub fn square(size: usize, stride: usize, padding: Padding) -> Self {
        Window {
            height: size,
            width: size,
            stride_height: stride,
            stride_width: stride,
            padding,
        }
    }
}

/// What a layer computes.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    /// 2-D convolution with bias, optionally followed by ReLU.
    Conv2d {
        out_channels: usize,
        window: Window,
        groups: usize,
        relu: bool,
    },
    /// Local response normalisation across channels, TensorFlow's `tf.nn.lrn`. With `groups`
    /// > 1 the window stays inside each group of channels (the two-GPU AlexNet normalises each
    /// tower's channels on their own GPU).
    Lrn {
        depth_radius: usize,
        bias: f32,
        alpha: f32,
        beta: f32,
        groups: usize,
    },
    /// Max pooling; padded positions never win.
    MaxPool { window: Window },
    /// Fully connected layer on the input flattened in (C, H, W) order, optionally followed by ReLU.
    Linear { out_features: usize, relu: bool },
}

/// One named layer of a network.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub name: String,
    pub kind: LayerKind,
}

/// The per-image dimensions of an activation, channels first. A fully connected layer's output
/// is `channels = features, height = width = 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Dims {
    /// Number of values per image.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// True when a dimension is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A network: its input dimensions and its layers in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    pub name: String,
    pub input: Dims,
    pub layers: Vec<Layer>,
}

/// A layer resolved at a batch size: dimensions in and out, padding, counts.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerPlan {
    pub layer: Layer,
    pub batch: usize,
    pub input: Dims,
    pub output: Dims,
    /// Padding of each side (zero for layers without a window).
    pub pad: Pad,
}

impl LayerPlan {
    /// The shapes of this layer's parameters, PyTorch's layouts: conv `[out, in/groups, kh, kw]`,
    /// linear `[out, in]`, biases `[out]`. Empty for layers without parameters.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let name = &self.layer.name;
        match &self.layer.kind {
            LayerKind::Conv2d {
                out_channels,
                window,
                groups,
                ..
            } => vec![
                (
                    format!("{name}.weight"),
                    vec![
                        *out_channels,
                        self.input.channels / groups,
                        window.height,
                        window.width,
                    ],
                ),
                (format!("{name}.bias"), vec![*out_channels]),
            ],
            LayerKind::Linear { out_features, .. } => vec![
                (
                    format!("{name}.weight"),
                    vec![*out_features, self.input.len()],
                ),
                (format!("{name}.bias"), vec![*out_features]),
            ],
            LayerKind::Lrn { .. } | LayerKind::MaxPool { .. } => Vec::new(),
        }
    }

    /// Number of parameters (weights and biases).
    pub fn parameters(&self) -> usize {
        self.parameter_shapes()
            .iter()
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum()
    }

    /// Forward FLOPs per image, counting a multiply-add as 2 and only the convolutions' and
    /// fully connected layers' products (the convention of the seed's table); LRN, pooling, bias
    /// and ReLU are not counted.
    pub fn flops_per_image(&self) -> u64 {
        match &self.layer.kind {
            LayerKind::Conv2d { window, groups, .. } => {
                let taps = (self.input.channels / groups) * window.height * window.width;
                2 * (self.output.len() * taps) as u64
            }
            LayerKind::Linear { .. } => 2 * (self.output.len() * self.input.len()) as u64,
            LayerKind::Lrn { .. } | LayerKind::MaxPool { .. } => 0,
        }
    }

    /// The output shape in the seed's `[N, H, W, C]` notation (`[N, C]` after a linear layer).
    pub fn seed_shape(&self) -> Vec<usize> {
        match self.layer.kind {
            LayerKind::Linear { .. } => vec![self.batch, self.output.channels],
            _ => vec![
                self.batch,
                self.output.height,
                self.output.width,
                self.output.channels,
            ],
        }
    }
}

/// Output size and the padding before and after, for one spatial dimension. `explicit` picks
/// this dimension's (before, after) out of a [`Padding::Explicit`].
fn resolve_dim(
    size: usize,
    window: usize,
    stride: usize,
    padding: Padding,
    explicit: impl Fn(Pad) -> (usize, usize),
) -> (usize, usize, usize) {
    let valid_out = |padded: usize| {
        if padded >= window {
            (padded - window) / stride.max(1) + 1
        } else {
            0
        }
    };
    match padding {
        Padding::Valid => (valid_out(size), 0, 0),
        Padding::Same => {
            let out = size.div_ceil(stride.max(1));
            let total = ((out.max(1) - 1) * stride + window).saturating_sub(size);
            (out, total / 2, total - total / 2)
        }
        Padding::Explicit(pad) => {
            let (before, after) = explicit(pad);
            (valid_out(size + before + after), before, after)
        }
    }
}

fn resolve_window(input: Dims, window: &Window) -> (usize, usize, Pad) {
    let (height, top, bottom) = resolve_dim(
        input.height,
        window.height,
        window.stride_height,
        window.padding,
        |p| (p.top, p.bottom),
    );
    let (width, left, right) = resolve_dim(
        input.width,
        window.width,
        window.stride_width,
        window.padding,
        |p| (p.left, p.right),
    );
    (
        height,
        width,
        Pad {
            top,
            bottom,
            left,
            right,
        },
    )
}

impl Network {
    /// Resolves every layer at `batch`: dimensions, padding, counts. Fails, naming the layer,
    /// when a spatial size reaches zero or channels do not divide into groups.
    pub fn plan(&self, batch: usize) -> Result<Vec<LayerPlan>> {
        if batch == 0 {
            return Err(Error::InvalidArgument("batch must be at least 1".into()));
        }
        let mut dims = self.input;
        let mut plans = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (output, pad) = layer_output(layer, dims)?;
            if output.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "{}: layer {} produces an empty output ({}x{}x{}) from {}x{}x{} input",
                    self.name,
                    layer.name,
                    output.channels,
                    output.height,
                    output.width,
                    dims.channels,
                    dims.height,
                    dims.width
                )));
            }
            plans.push(LayerPlan {
                layer: layer.clone(),
                batch,
                input: dims,
                output,
                pad,
            });
            dims = output;
        }
        Ok(plans)
    }
}

/// Strides and sizes of at least 1, and no side padded by a whole window (such a window would
/// hold padding only).
fn check_window(layer: &Layer, window: &Window, pad: &Pad) -> Result<()> {
    let sizes = [
        window.height,
        window.width,
        window.stride_height,
        window.stride_width,
    ];
    if sizes.contains(&0) {
        return Err(Error::InvalidArgument(format!(
            "layer {}: window sizes and strides must be at least 1",
            layer.name
        )));
    }
    if pad.top.max(pad.bottom) >= window.height || pad.left.max(pad.right) >= window.width {
        return Err(Error::InvalidArgument(format!(
            "layer {}: padding {pad:?} is as large as the {}x{} window",
            layer.name, window.height, window.width
        )));
    }
    Ok(())
}

fn layer_output(layer: &Layer, input: Dims) -> Result<(Dims, Pad)> {
    match &layer.kind {
        LayerKind::Conv2d {
            out_channels,
            window,
            groups,
            ..
        } => {
            if *groups == 0
                || !input.channels.is_multiple_of(*groups)
                || !out_channels.is_multiple_of(*groups)
            {
                return Err(Error::InvalidArgument(format!(
                    "layer {}: {} input and {} output channels do not divide into {} groups",
                    layer.name, input.channels, out_channels, groups
                )));
            }
            let (height, width, pad) = resolve_window(input, window);
            check_window(layer, window, &pad)?;
            let dims = Dims {
                channels: *out_channels,
                height,
                width,
            };
            Ok((dims, pad))
        }
        LayerKind::MaxPool { window } => {
            let (height, width, pad) = resolve_window(input, window);
            check_window(layer, window, &pad)?;
            let dims = Dims {
                channels: input.channels,
                height,
                width,
            };
            Ok((dims, pad))
        }
        LayerKind::Lrn { groups, .. } => {
            if *groups == 0 || !input.channels.is_multiple_of(*groups) {
                return Err(Error::InvalidArgument(format!(
                    "layer {}: {} channels do not divide into {} groups",
                    layer.name, input.channels, groups
                )));
            }
            Ok((input, Pad::default()))
        }
        LayerKind::Linear { out_features, .. } => Ok((
            Dims {
                channels: *out_features,
                height: 1,
                width: 1,
            },
            Pad::default(),
        )),
    }
}

/// The seed's LRN: `tf.nn.lrn(x, depth_radius=5, bias=1.0, alpha=0.001/9, beta=0.75)`.
pub fn seed_lrn() -> LayerKind {
    LayerKind::Lrn {
        depth_radius: 5,
        bias: 1.0,
        alpha: 0.001 / 9.0,
        beta: 0.75,
        groups: 1,
    }
}

fn conv(name: &str, out_channels: usize, size: usize, stride: usize) -> Layer {
    Layer {
        name: name.into(),
        kind: LayerKind::Conv2d {
            out_channels,
            window: Window::square(size, stride, Padding::Same),
            groups: 1,
            relu: true,
        },
    }
}

fn pool(name: &str) -> Layer {
    Layer {
        name: name.into(),
        kind: LayerKind::MaxPool {
            window: Window::square(3, 2, Padding::Valid),
        },
    }
}

fn lrn(name: &str) -> Layer {
    Layer {
        name: name.into(),
        kind: seed_lrn(),
    }
}

fn linear(name: &str, out_features: usize, relu: bool) -> Layer {
    Layer {
        name: name.into(),
        kind: LayerKind::Linear { out_features, relu },
    }
}

/// AlexNet as the seed builds it: single tower, 224x224x3 input, convolutions SAME, pools VALID,
/// LRN after conv1 and conv2, and fc3 giving logits (no ReLU; the seed's helper applied one by
/// mistake, its text says a plain matrix product).
pub fn alexnet() -> Network {
    Network {
        name: "alexnet".into(),
        input: Dims {
            channels: 3,
            height: 224,
            width: 224,
        },
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

/// The networks the command line knows, by name.
pub fn by_name(name: &str) -> Result<Network> {
    match name {
        "alexnet" => Ok(alexnet()),
        other => Err(Error::InvalidArgument(format!(
            "unknown model '{other}'; known models: {}",
            MODEL_NAMES.join(", ")
        ))),
    }
}

/// Names accepted by [`by_name`].
pub const MODEL_NAMES: &[&str] = &["alexnet"];

/// Total parameters of a plan.
pub fn total_parameters(plan: &[LayerPlan]) -> usize {
    plan.iter().map(LayerPlan::parameters).sum()
}

/// Backward FLOPs per image of a plan: for every convolution and fully connected layer, the
/// weight gradient costs as much as the forward product and so does the input gradient, which
/// the first layer skips (nobody needs the images' gradient). LRN, pooling and ReLU are not
/// counted, as in the forward count.
pub fn total_backward_flops_per_image(plan: &[LayerPlan]) -> u64 {
    plan.iter()
        .enumerate()
        .map(|(i, l)| l.flops_per_image() * if i == 0 { 1 } else { 2 })
        .sum()
}

/// Total forward FLOPs per image of a plan.
pub fn total_flops_per_image(plan: &[LayerPlan]) -> u64 {
    plan.iter().map(LayerPlan::flops_per_image).sum()
}
