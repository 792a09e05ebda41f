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
    /// Local response normalisation across channels, TensorFlow's `tf.nn.lrn`. With more than
    /// one group the window stays inside each group of channels (the two-GPU AlexNet normalises
    /// each tower's channels on their own GPU).
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
    /// How the network splits across two devices, for the layouts that do.
    pub towers: Option<Towers>,
}

/// A two-device layout (the 2012 two-GPU AlexNet): layers `0..unsplit_from` are split in half,
/// one half (of every layer's output channels or features) per device; the devices exchange
/// their halves before each layer in `exchange_before`, so that layer reads both; layers from
/// `unsplit_from` on run whole on the first device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Towers {
    pub exchange_before: Vec<usize>,
    pub unsplit_from: usize,
}

/// A run of layers between two exchanges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub layers: std::ops::Range<usize>,
    /// True when each device runs half of every layer; false when the first device runs them whole.
    pub split: bool,
}

impl Towers {
    /// The segments of a network with `layer_count` layers, in order.
    pub fn segments(&self, layer_count: usize) -> Vec<Segment> {
        let mut bounds = vec![0];
        bounds.extend(self.exchange_before.iter().copied());
        bounds.push(layer_count);
        bounds.dedup();
        bounds
            .windows(2)
            .map(|w| Segment {
                layers: w[0]..w[1],
                split: w[0] < self.unsplit_from,
            })
            .collect()
    }
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
        self.seed_shape_of(self.output.channels)
    }

    /// The seed-notation shape of one device's half of this layer's output.
    pub fn half_seed_shape(&self) -> Vec<usize> {
        self.seed_shape_of(self.output.channels / 2)
    }

    fn seed_shape_of(&self, channels: usize) -> Vec<usize> {
        match self.layer.kind {
            LayerKind::Linear { .. } => vec![self.batch, channels],
            _ => vec![self.batch, self.output.height, self.output.width, channels],
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
    /// A network without a multi-device layout.
    pub fn new(name: impl Into<String>, input: Dims, layers: Vec<Layer>) -> Self {
        Network {
            name: name.into(),
            input,
            layers,
            towers: None,
        }
    }

    /// One device's half of a split segment: every layer with half its output channels (or
    /// features), reading the segment's whole input at its first layer and its own half after.
    /// `input` is the segment's input per image. Fails, naming the layer, where the layout
    /// cannot be split that way.
    pub fn tower(&self, segment: &Segment, input: Dims) -> Result<Network> {
        let mut layers = Vec::new();
        for i in segment.layers.clone() {
            let layer = &self.layers[i];
            let at_start = i == segment.layers.start;
            let bad = |why: &str| {
                Error::InvalidArgument(format!(
                    "{}: layer {} cannot be split: {why}",
                    self.name, layer.name
                ))
            };
            let kind = match &layer.kind {
                LayerKind::Conv2d {
                    out_channels,
                    window,
                    groups,
                    relu,
                } => {
                    if !out_channels.is_multiple_of(2) {
                        return Err(bad("an odd number of output channels"));
                    }
                    // Grouped in two: each half reads its own device's channels. Ungrouped: it
                    // reads every channel, so it must follow an exchange.
                    let groups = match groups {
                        1 if at_start => 1,
                        1 => return Err(bad("it reads both halves but follows no exchange")),
                        g if g.is_multiple_of(2) && !at_start => g / 2,
                        _ => return Err(bad("its groups do not follow the two halves")),
                    };
                    LayerKind::Conv2d {
                        out_channels: out_channels / 2,
                        window: *window,
                        groups,
                        relu: *relu,
                    }
                }
                LayerKind::Lrn {
                    depth_radius,
                    bias,
                    alpha,
                    beta,
                    groups,
                } => {
                    if at_start || !groups.is_multiple_of(2) {
                        return Err(bad("its windows do not stay inside each half"));
                    }
                    LayerKind::Lrn {
                        depth_radius: *depth_radius,
                        bias: *bias,
                        alpha: *alpha,
                        beta: *beta,
                        groups: groups / 2,
                    }
                }
                LayerKind::MaxPool { window } => {
                    if at_start {
                        return Err(bad(
                            "a pooling layer after an exchange would pool both halves",
                        ));
                    }
                    LayerKind::MaxPool { window: *window }
                }
                LayerKind::Linear { out_features, relu } => {
                    if !at_start || !out_features.is_multiple_of(2) {
                        return Err(bad("a split linear layer must follow an exchange"));
                    }
                    LayerKind::Linear {
                        out_features: out_features / 2,
                        relu: *relu,
                    }
                }
            };
            layers.push(Layer {
                name: layer.name.clone(),
                kind,
            });
        }
        Ok(Network::new(self.name.clone(), input, layers))
    }

    /// For every layer, whether a two-device layout splits it in half (all false without one).
    pub fn split_layers(&self) -> Vec<bool> {
        let unsplit_from = self.towers.as_ref().map_or(0, |t| t.unsplit_from);
        (0..self.layers.len()).map(|i| i < unsplit_from).collect()
    }

    /// True when the two devices exchange their halves just before layer `index`.
    pub fn exchange_before(&self, index: usize) -> bool {
        self.towers
            .as_ref()
            .is_some_and(|t| t.exchange_before.contains(&index))
    }

    /// The layers of an unsplit segment, whole, on `input`.
    pub fn whole(&self, segment: &Segment, input: Dims) -> Network {
        Network::new(
            self.name.clone(),
            input,
            self.layers[segment.layers.clone()].to_vec(),
        )
    }

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
        input: IMAGENET_INPUT,
        towers: None,
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

const IMAGENET_INPUT: Dims = Dims {
    channels: 3,
    height: 224,
    width: 224,
};

fn grouped(mut layer: Layer, groups: usize) -> Layer {
    match &mut layer.kind {
        LayerKind::Conv2d { groups: g, .. } | LayerKind::Lrn { groups: g, .. } => *g = groups,
        _ => unreachable!("only convolutions and LRN have groups"),
    }
    layer
}

/// The original two-GPU AlexNet (Krizhevsky et al., 2012) with the seed's padding rules: every
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

/// The networks the command line knows, by name.
pub fn by_name(name: &str) -> Result<Network> {
    match name {
        "alexnet" => Ok(alexnet()),
        "alexnet-2gpu" => Ok(alexnet_2gpu()),
        other => Err(Error::InvalidArgument(format!(
            "unknown model '{other}'; known models: {}",
            MODEL_NAMES.join(", ")
        ))),
    }
}

/// Names accepted by [`by_name`].
pub const MODEL_NAMES: &[&str] = &["alexnet", "alexnet-2gpu"];

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
