//! The table of a network that the 2017 blog post gives for AlexNet (docs/networks.md, 'The
//! seed'): one row per layer (or per stage of a deep network) with its output shape, neurons,
//! parameters and FLOPs. `convnet shapes` prints it and writes it as JSON.

use serde::Serialize;

use crate::model::{LayerPlan, Network};

/// How finely the table breaks a network down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Detail {
    /// One row per layer.
    Layer,
    /// One row per stage (a ResNet stage, an Inception block, a VGG block of convolutions and
    /// its pool); the same as [`Detail::Layer`] for networks without stages.
    Stage,
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// The layer's name, or the stage's.
    pub name: String,
    /// Layers in the row (1 for a layer).
    pub layers: usize,
    /// Output shape in TensorFlow's order, `[N, H, W, C]` (`[N, C]` after a linear layer); of
    /// a stage, its last layer's.
    pub shape_nhwc: Vec<usize>,
    /// Output values per image (of a stage: its last layer's).
    pub neurons_per_image: usize,
    pub parameters: usize,
    /// Forward FLOPs per image (convolutions and fully connected layers, a multiply-add as 2).
    pub forward_flops_per_image: u64,
    /// Two-device layouts: whether the row's layers run split in half over both devices.
    pub split_over_two_devices: bool,
    /// Two-device layouts: each device's half of the output shape.
    pub shape_per_device: Option<Vec<usize>>,
    /// Two-device layouts: the devices exchange their halves before this row.
    pub exchange_before: bool,
}

/// The table of `network` planned as `plan`.
pub fn rows(network: &Network, plan: &[LayerPlan], detail: Detail) -> Vec<Row> {
    let split = network.split_layers();
    let layer_rows = plan.iter().enumerate().map(|(i, l)| Row {
        name: l.layer.name.clone(),
        layers: 1,
        shape_nhwc: l.nhwc_shape(),
        neurons_per_image: l.output.len(),
        parameters: l.parameters(),
        forward_flops_per_image: l.flops_per_image(),
        split_over_two_devices: split[i],
        shape_per_device: split[i].then(|| l.half_nhwc_shape()),
        exchange_before: network.exchange_before(i),
    });
    if detail == Detail::Layer || network.stages.is_empty() {
        return layer_rows.collect();
    }
    network
        .stages
        .iter()
        .map(|stage| {
            let layers = &plan[stage.layers.clone()];
            let last = layers.last().expect("a stage holds layers");
            Row {
                name: stage.name.clone(),
                layers: layers.len(),
                shape_nhwc: last.nhwc_shape(),
                neurons_per_image: last.output.len(),
                parameters: layers.iter().map(LayerPlan::parameters).sum(),
                forward_flops_per_image: layers.iter().map(LayerPlan::flops_per_image).sum(),
                split_over_two_devices: false,
                shape_per_device: None,
                exchange_before: false,
            }
        })
        .collect()
}
