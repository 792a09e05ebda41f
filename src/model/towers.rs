//! The 2012 two-device layout: a network's layers split into segments between exchanges, and
//! the network each device runs of a segment.

use crate::error::{Error, Result};

use super::{Dims, Layer, LayerKind, Network, Segment, Towers};

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

impl Network {
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
}
