//! The table of a network that the 2017 blog post gives for AlexNet (docs/networks.md, 'The
//! seed'): one row per layer (or per stage of a deep network) with its output shape, neurons,
//! parameters and FLOPs. `convnet shapes` prints it and writes it as JSON.

use serde::Serialize;

use crate::error::{Error, Result};
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
    /// Parameters (weights and biases) of the row's layers.
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

/// The table of `network` planned as `plan`. Fails when `plan` is not a plan of `network` (one
/// plan per layer, under the layer's name) or a stage of the network selects no layers of it.
pub fn rows(network: &Network, plan: &[LayerPlan], detail: Detail) -> Result<Vec<Row>> {
    let same_layers = plan.len() == network.layers.len()
        && plan
            .iter()
            .zip(&network.layers)
            .all(|(p, l)| p.layer.name == l.name);
    if !same_layers {
        return Err(Error::InvalidArgument(format!(
            "the plan of {} layers is not a plan of {} ({} layers)",
            plan.len(),
            network.name,
            network.layers.len()
        )));
    }
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
        return Ok(layer_rows.collect());
    }
    network
        .stages
        .iter()
        .map(|stage| {
            let layers = plan.get(stage.layers.clone()).unwrap_or_default();
            let last = layers.last().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{}: stage {} covers layers {:?}, none of its {}",
                    network.name,
                    stage.name,
                    stage.layers,
                    plan.len()
                ))
            })?;
            Ok(Row {
                name: stage.name.clone(),
                layers: layers.len(),
                shape_nhwc: last.nhwc_shape(),
                neurons_per_image: last.output.len(),
                parameters: layers.iter().map(LayerPlan::parameters).sum(),
                forward_flops_per_image: layers.iter().map(LayerPlan::flops_per_image).sum(),
                split_over_two_devices: false,
                shape_per_device: None,
                exchange_before: false,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Stage;

    #[test]
    fn rows_refuse_a_plan_of_another_network_or_a_stage_past_it() {
        let network = crate::model::alexnet();
        let plan = network.plan(2).unwrap();
        assert_eq!(rows(&network, &plan, Detail::Layer).unwrap().len(), 13);
        for other in [&plan[1..], &plan[..12]] {
            let err = rows(&network, other, Detail::Layer).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        }
        let mut staged = network.clone();
        staged.stages = vec![Stage {
            name: "beyond".into(),
            layers: 12..20,
        }];
        let err = rows(&staged, &plan, Detail::Stage).unwrap_err();
        assert!(err.to_string().contains("beyond"), "{err}");
        staged.stages[0].layers = 3..3;
        assert!(rows(&staged, &plan, Detail::Stage).is_err());
        staged.stages[0].layers = 0..13;
        assert_eq!(rows(&staged, &plan, Detail::Stage).unwrap().len(), 1);
    }
}
