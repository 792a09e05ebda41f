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
mod catalogue;
mod cost;
mod loss;
mod plan;
mod torchvision;
mod towers;

pub use alexnet::{alexnet, alexnet_2gpu, tf_lrn};
pub(crate) use catalogue::IMAGENET_INPUT;
pub use catalogue::{build, by_name, Options, IMAGENET_CLASSES, MODEL_NAMES};
pub use cost::{
    layer_cost, total_backward_flops_per_image, total_flops_per_image, Cost, Direction,
};
pub use loss::{Loss, LossKind, AUX_LOSS_WEIGHT};
pub use plan::{check_plan, LayerPlan};
pub use torchvision::{googlenet, resnet, vgg};

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
}

/// Total parameters of a plan.
pub fn total_parameters(plan: &[LayerPlan]) -> usize {
    plan.iter().map(LayerPlan::parameters).sum()
}

/// The small network the unit tests share: a 3x3 SAME convolution with ReLU and `out_channels`
/// outputs, then a linear layer of 3 outputs, on 2 x `size` x `size` images, its convolution
/// split over two devices (the linear layer on the first).
#[cfg(test)]
pub(crate) fn small_test_network(out_channels: usize, size: usize) -> Network {
    let conv = LayerKind::Conv2d {
        out_channels,
        window: Window::square(3, 1, Padding::Same),
        groups: 1,
        relu: true,
        bias: true,
    };
    let linear = LayerKind::Linear {
        out_features: 3,
        relu: false,
    };
    let input = Dims {
        channels: 2,
        height: size,
        width: size,
    };
    let mut network = Network::new(
        "small",
        input,
        vec![Layer::new("conv1", conv), Layer::new("fc1", linear)],
    );
    network.towers = Some(Towers {
        exchange_before: vec![1],
        unsplit_from: 1,
    });
    network
}
