//! A network placed on one device or split over two: what the benchmark, `run` and `train`
//! drive without caring which.

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuNetwork, Keep, MemoryUse, Runner, TwoDeviceNetwork};
use crate::model::{LayerPlan, Loss, LossKind, Network};
use crate::weights::Weights;

/// A network on the devices it was given: one device (any network), or a two-device layout
/// split over two (the 2012 AlexNet).
pub enum PlacedNetwork<'a> {
    /// The whole network on one device.
    One(GpuNetwork<'a>),
    /// The two-device layout.
    Two(TwoDeviceNetwork<'a>),
}

/// GPU memory a placed network holds, per device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PlacedMemory {
    /// One device, by purpose.
    One(MemoryUse),
    /// Two devices, in bytes each.
    Two([u64; 2]),
}

impl<'a> PlacedNetwork<'a> {
    /// Builds `network` (planned as `plan`, with `weights`) on one context, or split over two;
    /// `training` asks for everything the backward pass of `l2_loss(logits)` needs, keeping that
    /// much of the forward pass on one device (two devices keep everything).
    pub fn new(
        contexts: &'a [GpuContext],
        network: &Network,
        plan: &[LayerPlan],
        weights: &Weights,
        training: Option<Keep>,
    ) -> Result<Self> {
        Ok(match (contexts, training) {
            ([ctx], Some(keep)) => {
                // GoogLeNet's auxiliary heads, where built, add 0.3 x their l2_loss (as its paper
                // trains them): a benchmark or check times and judges their backward too.
                let loss = Loss::with_aux_heads(LossKind::L2, plan);
                PlacedNetwork::One(GpuNetwork::training(ctx, plan, weights, &loss, keep)?)
            }
            ([ctx], None) => PlacedNetwork::One(GpuNetwork::new(ctx, plan, weights)?),
            ([a, b], _) => PlacedNetwork::Two(TwoDeviceNetwork::new(
                [a, b],
                network,
                plan.first().map_or(0, |l| l.batch),
                weights,
            )?),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "a network runs on one or two devices, not {}",
                    contexts.len()
                )))
            }
        })
    }

    /// The network as checking and benchmarking drive it.
    pub fn runner(&self) -> &dyn Runner {
        match self {
            PlacedNetwork::One(net) => net,
            PlacedNetwork::Two(net) => net,
        }
    }

    /// GPU memory held.
    pub fn memory(&self) -> PlacedMemory {
        match self {
            PlacedNetwork::One(net) => PlacedMemory::One(net.memory()),
            PlacedNetwork::Two(net) => PlacedMemory::Two(net.memory()),
        }
    }
}
