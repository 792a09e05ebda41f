//! A network placed on one device or split over two: what the benchmark, `run` and `train`
//! drive without caring which.

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuNetwork, MemoryUse, Runner, TwoDeviceNetwork};
use crate::model::{LayerPlan, Network};
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
    /// `gradients` asks for everything the backward pass needs.
    pub fn new(
        contexts: &'a [GpuContext],
        network: &Network,
        plan: &[LayerPlan],
        weights: &Weights,
        gradients: bool,
    ) -> Result<Self> {
        Ok(match contexts {
            [ctx] if gradients => {
                PlacedNetwork::One(GpuNetwork::with_gradients(ctx, plan, weights)?)
            }
            [ctx] => PlacedNetwork::One(GpuNetwork::new(ctx, plan, weights)?),
            [a, b] => PlacedNetwork::Two(TwoDeviceNetwork::new(
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
