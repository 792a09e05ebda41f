//! Planning: a network resolved at a batch size into [`LayerPlan`]s, each layer's input and
//! output dimensions and the exact padding of every side, with the shape rules of TensorFlow
//! (SAME, VALID) and PyTorch (explicit, `ceil_mode`), and the checks a plan must pass.

use std::collections::HashMap;

use crate::error::{Error, Result};

use super::{Dims, Layer, LayerKind, Network, Pad, Padding, Source, Window, INPUT};

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
        let many = matches!(layer.layer.kind, LayerKind::Add { .. } | LayerKind::Concat);
        if layer.sources.len() != 1 && !many {
            return bad(format!(
                "layer {name} reads {} tensors; only additions and concatenations read several",
                layer.sources.len()
            ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Segment, Towers};

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
