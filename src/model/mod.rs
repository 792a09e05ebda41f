//! Network descriptions: layers, the shapes they produce, their parameter and FLOP counts.
//!
//! Nothing here touches a GPU. A [`Network`] is a list of layers in an order where every layer
//! comes after the layers it reads (a chain for AlexNet and VGG; residual additions and
//! concatenations for ResNet and GoogLeNet). [`Network::plan`] resolves it at a batch size into
//! [`LayerPlan`]s (inputs, input and output dimensions, the exact padding of every side), which
//! the CPU reference, the GPU executor and the tables all walk.
//!
//! AlexNet as the 2017 blog post builds it (docs/networks.md, 'The seed') follows TensorFlow's
//! padding rules, as it was built in TensorFlow:
//! VALID gives `ceil((W - F + 1) / S)`, SAME gives `ceil(W / S)` and pads
//! `max((out - 1) * S + F - W, 0)` in total, the smaller half before and the larger after.
//! The torchvision networks use PyTorch's explicit padding, and GoogLeNet's pools its `ceil_mode`.

mod alexnet;
mod cost;
mod torchvision;

pub use alexnet::{alexnet, alexnet_2gpu, tf_lrn};
pub use cost::{
    layer_cost, total_backward_flops_per_image, total_flops_per_image, Cost, Direction,
};
pub use torchvision::{googlenet, resnet, vgg};

use std::collections::HashMap;

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
    /// Padding given per side, output rounded up as PyTorch's `ceil_mode` does (a last, partial
    /// window is kept if it starts inside the input or its leading padding); the partial window's
    /// reach past the input counts as extra padding after.
    Ceil(Pad),
}

/// The padding of each side of a window, resolved from [`Padding`] at a given input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pad {
    /// Rows of padding above the input.
    pub top: usize,
    /// Rows of padding below the input.
    pub bottom: usize,
    /// Columns of padding left of the input.
    pub left: usize,
    /// Columns of padding right of the input.
    pub right: usize,
}

/// A 2-D window: kernel or pooling size and stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Rows the window covers.
    pub height: usize,
    /// Columns the window covers.
    pub width: usize,
    /// Rows from one window to the next below it.
    pub stride_height: usize,
    /// Columns from one window to the next right of it.
    pub stride_width: usize,
    /// How the window treats the border.
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
    /// 2-D convolution, with a bias or not (the torchvision networks' convolutions before a batch
    /// norm have none), optionally followed by ReLU.
    Conv2d {
        /// Output channels (filters).
        out_channels: usize,
        /// Kernel size, stride and padding.
        window: Window,
        /// Channel groups: each output channel reads the input channels of its group only
        /// (1: every input channel).
        groups: usize,
        /// ReLU applied to the output.
        relu: bool,
        /// A bias added per output channel (a `{name}.bias` tensor).
        bias: bool,
    },
    /// Local response normalisation across channels, TensorFlow's `tf.nn.lrn`. With more than
    /// one group the window stays inside each group of channels (the two-GPU AlexNet normalises
    /// each tower's channels on their own GPU).
    Lrn {
        /// Channels on each side of a channel in its window.
        depth_radius: usize,
        /// The constant added to the weighted sum of squares.
        bias: f32,
        /// The sum of squares' weight (TensorFlow's: not divided by the window size).
        alpha: f32,
        /// The exponent the normaliser is raised to.
        beta: f32,
        /// Channel groups the window stays inside (1: all channels).
        groups: usize,
    },
    /// Max pooling; padded positions never win.
    MaxPool {
        /// Pooling size, stride and padding.
        window: Window,
    },
    /// Fully connected layer on the input flattened in (C, H, W) order, optionally followed by ReLU.
    Linear {
        /// Output features.
        out_features: usize,
        /// ReLU applied to the output.
        relu: bool,
    },
    /// Batch normalisation at inference, from running statistics:
    /// `(x - mean) / sqrt(var + eps) * weight + bias`, optionally followed by ReLU.
    BatchNorm {
        /// Added to the variance before its square root.
        eps: f32,
        /// ReLU applied to the output.
        relu: bool,
    },
    /// The element-wise sum of its inputs (a residual connection), optionally followed by ReLU.
    Add {
        /// ReLU applied to the sum.
        relu: bool,
    },
    /// Average pooling to a fixed output size, PyTorch's `AdaptiveAvgPool2d`: output cell `i` of
    /// `n` averages input rows `floor(i H / n) .. ceil((i + 1) H / n)` (and likewise columns).
    AdaptiveAvgPool {
        /// Output rows.
        height: usize,
        /// Output columns.
        width: usize,
    },
    /// Its inputs stacked along channels, in order.
    Concat,
}

/// One named layer of a network.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Unique within its network: its tensors are `{name}.weight` and so on, and the layers that
    /// read it name it in their [`Layer::inputs`].
    pub name: String,
    /// What it computes.
    pub kind: LayerKind,
    /// The names of the layers it reads (or [`INPUT`] for the network's input), in order. Empty:
    /// the layer before it (the network's input for the first layer).
    pub inputs: Vec<String>,
}

/// The name by which a layer reads the network's input.
pub const INPUT: &str = "input";

impl Layer {
    /// A layer reading the layer before it.
    pub fn new(name: impl Into<String>, kind: LayerKind) -> Self {
        Layer {
            name: name.into(),
            kind,
            inputs: Vec::new(),
        }
    }

    /// True when the backward pass handles this layer: it reads the layer before it and is a
    /// convolution with bias, LRN, max pooling or fully connected.
    pub fn supports_backward(&self) -> bool {
        self.inputs.is_empty()
            && matches!(
                self.kind,
                LayerKind::Conv2d { bias: true, .. }
                    | LayerKind::Lrn { .. }
                    | LayerKind::MaxPool { .. }
                    | LayerKind::Linear { .. }
            )
    }

    /// The same layer reading the named layers instead.
    pub fn reading(mut self, inputs: &[&str]) -> Self {
        self.inputs = inputs.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// The per-image dimensions of an activation, channels first. A fully connected layer's output
/// is `channels = features, height = width = 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Channels (features after a fully connected layer).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
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
    /// The name the command line knows it by (`alexnet`, `resnet50`), used in messages.
    pub name: String,
    /// The dimensions of one input image.
    pub input: Dims,
    /// The layers, each after the layers it reads.
    pub layers: Vec<Layer>,
    /// How the network splits across two devices, for the layouts that do.
    pub towers: Option<Towers>,
    /// How [`Weights::init`](crate::weights::Weights::init) draws its parameters.
    pub init: Init,
    /// Named runs of layers (a ResNet stage, an Inception block) that tables may fold into one
    /// row; empty where every layer is its own row.
    pub stages: Vec<Stage>,
}

/// A named run of consecutive layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// The name of the table's row (`layer1`, `inception3a`).
    pub name: String,
    /// The indices of its layers in [`Network::layers`].
    pub layers: std::ops::Range<usize>,
}

/// The initialisation a network's weights are drawn with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// The AlexNet script's of the 2017 blog post (docs/networks.md, 'The seed'): weights from
    /// TensorFlow's `tf.truncated_normal` with stddev 0.1 (values beyond two standard deviations
    /// redrawn), convolution biases 0, fully connected biases 0.1.
    TruncatedNormal,
    /// Scaled for deep networks, as torchvision initialises them: He normal (fan-out) for
    /// convolutions, normal with stddev 0.01 for fully connected layers, zero biases; batch norm
    /// statistics drawn away from the identity so that checks exercise them.
    Torchvision,
}

/// Which tensor a layer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The network's input.
    Input,
    /// The output of the layer at this index of the plan.
    Layer(usize),
}

/// A two-device layout (the 2012 two-GPU AlexNet): layers `0..unsplit_from` are split in half,
/// one half (of every layer's output channels or features) per device; the devices exchange
/// their halves before each layer in `exchange_before`, so that layer reads both; layers from
/// `unsplit_from` on run whole on the first device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Towers {
    /// Indices of the layers before which the devices exchange their halves, ascending.
    pub exchange_before: Vec<usize>,
    /// Index of the first layer that runs whole, on the first device.
    pub unsplit_from: usize,
}

/// A run of layers between two exchanges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The indices of its layers in [`Network::layers`].
    pub layers: std::ops::Range<usize>,
    /// True when each device runs half of every layer; false when the first device runs them whole.
    pub split: bool,
}

impl Towers {
    /// The segments of a network with `layer_count` layers, in order. Fails unless
    /// `exchange_before` is in ascending order and every index in it, and `unsplit_from`, is at
    /// most `layer_count`.
    pub fn segments(&self, layer_count: usize) -> Result<Vec<Segment>> {
        let ascending = self.exchange_before.windows(2).all(|w| w[0] <= w[1]);
        let inside = self.exchange_before.iter().all(|&i| i <= layer_count);
        if !ascending || !inside || self.unsplit_from > layer_count {
            return Err(Error::InvalidArgument(format!(
                "a two-device layout of {layer_count} layers needs exchanges in ascending order \
                 and indices up to {layer_count}, not exchanges before {:?} and unsplit from {}",
                self.exchange_before, self.unsplit_from
            )));
        }
        let mut bounds = vec![0];
        bounds.extend(self.exchange_before.iter().copied());
        bounds.push(layer_count);
        bounds.dedup();
        Ok(bounds
            .windows(2)
            .map(|w| Segment {
                layers: w[0]..w[1],
                split: w[0] < self.unsplit_from,
            })
            .collect())
    }
}

/// A layer resolved at a batch size: dimensions in and out, padding, counts.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerPlan {
    /// The layer planned.
    pub layer: Layer,
    /// Images per pass.
    pub batch: usize,
    /// What the layer reads, in order, and the dimensions of each.
    pub sources: Vec<(Source, Dims)>,
    /// The dimensions of its first input (of every input, except for a concatenation).
    pub input: Dims,
    /// The dimensions of its output, per image.
    pub output: Dims,
    /// Padding of each side (zero for layers without a window).
    pub pad: Pad,
}

impl LayerPlan {
    /// True when the backward pass handles this layer (see [`Layer::supports_backward`]).
    pub fn supports_backward(&self) -> bool {
        self.layer.supports_backward()
    }

    /// The shapes of this layer's parameters, PyTorch's layouts: conv `[out, in/groups, kh, kw]`,
    /// linear `[out, in]`, biases `[out]`. Empty for layers without parameters.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let name = &self.layer.name;
        match &self.layer.kind {
            LayerKind::Conv2d {
                out_channels,
                window,
                groups,
                bias,
                ..
            } => {
                let weight = vec![
                    *out_channels,
                    // Zero groups (never planned) gives an empty shape, not a division by zero.
                    self.input.channels.checked_div(*groups).unwrap_or(0),
                    window.height,
                    window.width,
                ];
                let mut shapes = vec![(format!("{name}.weight"), weight)];
                if *bias {
                    shapes.push((format!("{name}.bias"), vec![*out_channels]));
                }
                shapes
            }
            LayerKind::Linear { out_features, .. } => vec![
                (
                    format!("{name}.weight"),
                    vec![*out_features, self.input.len()],
                ),
                (format!("{name}.bias"), vec![*out_features]),
            ],
            LayerKind::BatchNorm { .. } => vec![
                (format!("{name}.weight"), vec![self.output.channels]),
                (format!("{name}.bias"), vec![self.output.channels]),
            ],
            LayerKind::Lrn { .. }
            | LayerKind::MaxPool { .. }
            | LayerKind::Add { .. }
            | LayerKind::AdaptiveAvgPool { .. }
            | LayerKind::Concat => Vec::new(),
        }
    }

    /// The shapes of the tensors the layer needs that are not parameters (not trained): a batch
    /// norm's running statistics, PyTorch's buffers `running_mean` and `running_var`.
    pub fn buffer_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let name = &self.layer.name;
        match self.layer.kind {
            LayerKind::BatchNorm { .. } => vec![
                (format!("{name}.running_mean"), vec![self.output.channels]),
                (format!("{name}.running_var"), vec![self.output.channels]),
            ],
            _ => Vec::new(),
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
    /// fully connected layers' products (the convention of the post's table, docs/networks.md,
    /// 'The seed'); LRN, pooling, batch norm, additions, bias and ReLU are not counted.
    pub fn flops_per_image(&self) -> u64 {
        match &self.layer.kind {
            LayerKind::Conv2d { window, groups, .. } => {
                let taps = self.input.channels.checked_div(*groups).unwrap_or(0)
                    * window.height
                    * window.width;
                2 * (self.output.len() * taps) as u64
            }
            LayerKind::Linear { .. } => 2 * (self.output.len() * self.input.len()) as u64,
            _ => 0,
        }
    }

    /// The output shape in TensorFlow's `[N, H, W, C]` order, as the post's table gives it
    /// (`[N, C]` after a linear layer).
    pub fn nhwc_shape(&self) -> Vec<usize> {
        self.nhwc_shape_of(self.output.channels)
    }

    /// [`LayerPlan::nhwc_shape`] of one device's half of this layer's output.
    pub fn half_nhwc_shape(&self) -> Vec<usize> {
        self.nhwc_shape_of(self.output.channels / 2)
    }

    fn nhwc_shape_of(&self, channels: usize) -> Vec<usize> {
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
        Padding::Ceil(pad) => {
            let (before, after) = explicit(pad);
            let padded = size + before + after;
            if padded < window {
                return (0, before, after);
            }
            let mut out = (padded - window).div_ceil(stride.max(1)) + 1;
            // PyTorch drops a last window that would start in the trailing padding.
            if (out - 1) * stride >= size + before {
                out -= 1;
            }
            let reach = (out - 1) * stride + window;
            (out, before, after + reach.saturating_sub(padded))
        }
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
            init: Init::TruncatedNormal,
            stages: Vec::new(),
        }
    }

    /// True when the backward pass is implemented for this network: a chain of convolutions
    /// with biases, LRN, max pooling and fully connected layers (the AlexNets). The other
    /// networks run forward only.
    pub fn supports_backward(&self) -> bool {
        self.layers.iter().all(Layer::supports_backward)
    }

    /// An error saying that this network runs forward only, for `what` (a command or pass).
    pub fn backward_unsupported(&self, what: &str) -> Error {
        Error::InvalidArgument(format!(
            "{what} needs the backward pass, which is implemented for the AlexNets only; \
             {} runs forward",
            self.name
        ))
    }

    /// One device's half of a split segment: every layer with half its output channels (or
    /// features), reading the segment's whole input at its first layer and its own half after.
    /// `input` is the segment's input per image. Fails, naming the layer, where the layout
    /// cannot be split that way.
    pub fn tower(&self, segment: &Segment, input: Dims) -> Result<Network> {
        let mut layers = Vec::new();
        for (i, layer) in self.segment_layers(segment)?.iter().enumerate() {
            let at_start = i == 0;
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
                    bias,
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
                        bias: *bias,
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
                LayerKind::BatchNorm { .. }
                | LayerKind::Add { .. }
                | LayerKind::AdaptiveAvgPool { .. }
                | LayerKind::Concat => {
                    return Err(bad("only AlexNet's kinds of layer split over two devices"))
                }
            };
            if !layer.inputs.is_empty() {
                return Err(bad("a split layout must be a chain of layers"));
            }
            layers.push(Layer::new(layer.name.clone(), kind));
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

    /// The layers of an unsplit segment, whole, on `input`. Fails when the segment is empty or
    /// reaches past the network's layers.
    pub fn whole(&self, segment: &Segment, input: Dims) -> Result<Network> {
        let layers = self.segment_layers(segment)?;
        Ok(Network::new(self.name.clone(), input, layers.to_vec()))
    }

    /// The layers of `segment`, or an error when it is empty or reaches past the network's.
    fn segment_layers(&self, segment: &Segment) -> Result<&[Layer]> {
        let range = segment.layers.clone();
        if range.is_empty() || range.end > self.layers.len() {
            return Err(Error::InvalidArgument(format!(
                "{}: segment {range:?} does not select layers of its {}",
                self.name,
                self.layers.len()
            )));
        }
        Ok(&self.layers[range])
    }

    /// Resolves every layer at `batch`: inputs, dimensions, padding, counts. Fails, naming the
    /// layer, when a spatial size reaches zero, channels do not divide into groups, a layer reads
    /// a layer that does not come before it, or the inputs of an addition or concatenation do
    /// not fit together; fails for a network without layers.
    pub fn plan(&self, batch: usize) -> Result<Vec<LayerPlan>> {
        if batch == 0 {
            return Err(Error::InvalidArgument("batch must be at least 1".into()));
        }
        if self.layers.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} has no layers",
                self.name
            )));
        }
        let mut plans: Vec<LayerPlan> = Vec::with_capacity(self.layers.len());
        let mut index_of: HashMap<&str, usize> = HashMap::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let sources = self.sources(layer, i, &index_of, &plans)?;
            let dims: Vec<Dims> = sources.iter().map(|&(_, d)| d).collect();
            let (output, pad) = layer_output(layer, &dims)?;
            if output.is_empty() {
                let input = dims[0];
                return Err(Error::InvalidArgument(format!(
                    "{}: layer {} produces an empty output ({}x{}x{}) from {}x{}x{} input; \
                     the input is too small for this network",
                    self.name,
                    layer.name,
                    output.channels,
                    output.height,
                    output.width,
                    input.channels,
                    input.height,
                    input.width
                )));
            }
            if index_of.insert(&layer.name, i).is_some() || layer.name == INPUT {
                return Err(Error::InvalidArgument(format!(
                    "{}: two layers are called {}",
                    self.name, layer.name
                )));
            }
            plans.push(LayerPlan {
                layer: layer.clone(),
                batch,
                input: dims[0],
                sources,
                output,
                pad,
            });
        }
        Ok(plans)
    }

    /// What layer `index` reads, resolved against the layers before it.
    fn sources(
        &self,
        layer: &Layer,
        index: usize,
        index_of: &HashMap<&str, usize>,
        plans: &[LayerPlan],
    ) -> Result<Vec<(Source, Dims)>> {
        let previous = match index {
            0 => (Source::Input, self.input),
            _ => (Source::Layer(index - 1), plans[index - 1].output),
        };
        if layer.inputs.is_empty() {
            return Ok(vec![previous]);
        }
        layer
            .inputs
            .iter()
            .map(|name| match (name.as_str(), index_of.get(name.as_str())) {
                (INPUT, _) => Ok((Source::Input, self.input)),
                (_, Some(&j)) => Ok((Source::Layer(j), plans[j].output)),
                (_, None) => Err(Error::InvalidArgument(format!(
                    "{}: layer {} reads {name}, which is not a layer before it",
                    self.name, layer.name
                ))),
            })
            .collect()
    }
}

/// Checks what the consumers of a plan index by: it has layers, one batch size, and every layer
/// reads layers before it, with the dimensions they produce. Every plan [`Network::plan`] makes
/// passes; one built or altered by hand may not.
pub fn check_plan(plan: &[LayerPlan]) -> Result<()> {
    let bad = |why: String| Err(Error::InvalidArgument(format!("not a valid plan: {why}")));
    let Some(first) = plan.first() else {
        return bad("it has no layers".into());
    };
    let input = first.sources.first().map(|&(_, dims)| dims);
    for (i, layer) in plan.iter().enumerate() {
        let name = &layer.layer.name;
        if layer.batch != first.batch || layer.batch == 0 {
            return bad(format!(
                "layer {name} has batch {}, layer {} batch {}",
                layer.batch, first.layer.name, first.batch
            ));
        }
        if layer.sources.first().map(|&(_, dims)| dims) != Some(layer.input) {
            return bad(format!("layer {name}'s input is not its first source"));
        }
        for &(source, dims) in &layer.sources {
            let produced = match source {
                Source::Input => input,
                Source::Layer(j) if j < i => Some(plan[j].output),
                Source::Layer(_) => None,
            };
            if produced != Some(dims) {
                return bad(format!(
                    "layer {name} reads {source:?} as {dims:?}, which no layer before it produces"
                ));
            }
        }
    }
    Ok(())
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

fn layer_output(layer: &Layer, inputs: &[Dims]) -> Result<(Dims, Pad)> {
    let bad = |why: String| Error::InvalidArgument(format!("layer {}: {why}", layer.name));
    let many_inputs = matches!(layer.kind, LayerKind::Add { .. } | LayerKind::Concat);
    if !many_inputs && inputs.len() != 1 {
        return Err(bad(format!("reads {} inputs, expected 1", inputs.len())));
    }
    let input = inputs[0];
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
                return Err(bad(format!(
                    "{} input and {} output channels do not divide into {} groups",
                    input.channels, out_channels, groups
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
                return Err(bad(format!(
                    "{} channels do not divide into {} groups",
                    input.channels, groups
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
        LayerKind::BatchNorm { .. } => Ok((input, Pad::default())),
        LayerKind::AdaptiveAvgPool { height, width } => {
            let dims = Dims {
                channels: input.channels,
                height: if input.height == 0 { 0 } else { *height },
                width: if input.width == 0 { 0 } else { *width },
            };
            Ok((dims, Pad::default()))
        }
        LayerKind::Add { .. } => {
            if inputs.len() < 2 || inputs.iter().any(|d| *d != input) {
                return Err(bad(format!("adds inputs of different sizes: {inputs:?}")));
            }
            Ok((input, Pad::default()))
        }
        LayerKind::Concat => {
            let same_plane = |d: &Dims| d.height == input.height && d.width == input.width;
            if !inputs.iter().all(same_plane) {
                return Err(bad(format!(
                    "concatenates inputs of different heights or widths: {inputs:?}"
                )));
            }
            let channels = inputs.iter().map(|d| d.channels).sum();
            Ok((Dims { channels, ..input }, Pad::default()))
        }
    }
}

/// What a user may change about a known network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Outputs of the last fully connected layer (and of GoogLeNet's auxiliary heads); default
    /// 1000, ImageNet's classes.
    pub num_classes: Option<usize>,
    /// Height and width of the (square) input images; default 224.
    pub input_size: Option<usize>,
    /// GoogLeNet only: include its two auxiliary classifiers.
    pub aux_logits: bool,
}

/// ImageNet's images as the networks take them: 3 x 224 x 224.
pub(crate) const IMAGENET_INPUT: Dims = Dims {
    channels: 3,
    height: 224,
    width: 224,
};

/// ImageNet's class count, every network's default head.
pub const IMAGENET_CLASSES: usize = 1000;

/// The networks the command line knows, by name, at their default settings.
pub fn by_name(name: &str) -> Result<Network> {
    build(name, &Options::default())
}

/// A known network with `options` applied.
pub fn build(name: &str, options: &Options) -> Result<Network> {
    let classes = options.num_classes.unwrap_or(IMAGENET_CLASSES);
    if classes == 0 {
        return Err(Error::InvalidArgument(
            "--num-classes must be at least 1".into(),
        ));
    }
    if options.input_size == Some(0) {
        return Err(Error::InvalidArgument(
            "--input-size must be at least 1".into(),
        ));
    }
    if options.aux_logits && name != "googlenet" {
        return Err(Error::InvalidArgument(format!(
            "--aux-logits applies to googlenet only, not {name}"
        )));
    }
    let mut network = match name {
        "alexnet" => alexnet(),
        "alexnet-2gpu" => alexnet_2gpu(),
        "vgg11" => vgg(11)?,
        "vgg13" => vgg(13)?,
        "vgg16" => vgg(16)?,
        "vgg19" => vgg(19)?,
        "googlenet" => googlenet(options.aux_logits),
        "resnet18" => resnet(18)?,
        "resnet34" => resnet(34)?,
        "resnet50" => resnet(50)?,
        "resnet101" => resnet(101)?,
        "resnet152" => resnet(152)?,
        other => {
            return Err(Error::InvalidArgument(format!(
                "unknown model '{other}'; known models: {}",
                MODEL_NAMES.join(", ")
            )))
        }
    };
    if let Some(size) = options.input_size {
        network.input.height = size;
        network.input.width = size;
    }
    network.set_classes(classes);
    Ok(network)
}

impl Network {
    /// Sets the outputs of every classifier: the last layer, and the other fully connected layers
    /// whose output nobody reads (GoogLeNet's auxiliary heads).
    fn set_classes(&mut self, classes: usize) {
        let read: std::collections::HashSet<&str> = self
            .layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                let previous =
                    (i > 0 && l.inputs.is_empty()).then(|| self.layers[i - 1].name.as_str());
                l.inputs.iter().map(String::as_str).chain(previous)
            })
            .collect();
        let heads: Vec<usize> = (0..self.layers.len())
            .filter(|&i| {
                matches!(self.layers[i].kind, LayerKind::Linear { .. })
                    && !read.contains(self.layers[i].name.as_str())
            })
            .collect();
        for i in heads {
            if let LayerKind::Linear { out_features, .. } = &mut self.layers[i].kind {
                *out_features = classes;
            }
        }
    }
}

/// Names accepted by [`by_name`].
pub const MODEL_NAMES: &[&str] = &[
    "alexnet",
    "alexnet-2gpu",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "googlenet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
];

/// Total parameters of a plan.
pub fn total_parameters(plan: &[LayerPlan]) -> usize {
    plan.iter().map(LayerPlan::parameters).sum()
}
#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> Dims {
        Dims {
            channels: 2,
            height: 4,
            width: 4,
        }
    }

    fn conv(out_channels: usize, groups: usize) -> LayerKind {
        LayerKind::Conv2d {
            out_channels,
            window: Window::square(3, 1, Padding::Same),
            groups,
            relu: true,
            bias: true,
        }
    }

    fn chain() -> Network {
        let linear = LayerKind::Linear {
            out_features: 3,
            relu: false,
        };
        Network::new(
            "chain",
            input(),
            vec![Layer::new("conv1", conv(4, 1)), Layer::new("fc1", linear)],
        )
    }

    fn invalid(result: Result<impl std::fmt::Debug>, mentions: &str) {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(
            err.to_string().contains(mentions),
            "{err} should mention {mentions}"
        );
    }

    #[test]
    fn a_network_without_layers_does_not_plan() {
        invalid(
            Network::new("none", input(), Vec::new()).plan(1),
            "no layers",
        );
    }

    #[test]
    fn segments_refuse_exchanges_out_of_order_or_past_the_end() {
        let towers = |exchange_before: Vec<usize>, unsplit_from| Towers {
            exchange_before,
            unsplit_from,
        };
        assert_eq!(towers(vec![1], 1).segments(2).unwrap().len(), 2);
        invalid(towers(vec![2, 1], 1).segments(3), "ascending");
        invalid(towers(vec![5], 1).segments(3), "ascending");
        invalid(towers(vec![1], 4).segments(3), "unsplit from 4");
    }

    #[test]
    fn whole_and_tower_refuse_a_segment_outside_the_network() {
        let network = chain();
        for layers in [1..5, 2..2, 3..4] {
            let segment = Segment {
                layers: layers.clone(),
                split: true,
            };
            invalid(network.whole(&segment, input()), "segment");
            invalid(network.tower(&segment, input()), "segment");
        }
        let first = Segment {
            layers: 0..1,
            split: true,
        };
        assert_eq!(network.whole(&first, input()).unwrap().layers.len(), 1);
        assert_eq!(network.tower(&first, input()).unwrap().layers.len(), 1);
    }

    #[test]
    fn check_plan_refuses_what_plan_never_makes() {
        let plan = chain().plan(2).unwrap();
        check_plan(&plan).unwrap();
        invalid(check_plan(&[]), "no layers");
        let mut ahead = plan.clone();
        ahead[0].sources = vec![(Source::Layer(1), ahead[1].output)];
        ahead[0].input = ahead[1].output;
        invalid(check_plan(&ahead), "reads");
        let mut batches = plan.clone();
        batches[1].batch = 3;
        invalid(check_plan(&batches), "batch");
        let mut dims = plan;
        dims[1].input.channels = 5;
        invalid(check_plan(&dims), "first source");
    }

    #[test]
    fn zero_groups_in_a_hand_made_plan_count_nothing() {
        let mut layer = chain().plan(1).unwrap().remove(0);
        layer.layer.kind = conv(4, 0);
        assert_eq!(layer.parameter_shapes()[0].1, vec![4, 0, 3, 3]);
        assert_eq!(layer.flops_per_image(), 0);
    }
}
