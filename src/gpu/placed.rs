//! A network placed on one device or split over two: what the benchmark, `run` and `train`
//! drive without caring which.

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuNetwork, Keep, MemoryUse, MicroBatches, Runner, TwoDeviceNetwork};
use crate::model::{LayerPlan, Loss, LossKind, Network};
use crate::weights::Weights;

/// A network on the devices it was given: one device (any network; a batch whose tensors exceed
/// one storage binding in parts along the batch), or a two-device layout split over two (the
/// 2012 AlexNet).
pub enum PlacedNetwork<'a> {
    /// The whole network on one device.
    One(GpuNetwork<'a>),
    /// The two-device layout.
    Two(TwoDeviceNetwork<'a>),
    /// One device, the batch in parts that each fit one storage binding.
    Parts(Box<MicroBatches<'a>>),
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
        let ctx = match contexts {
            [ctx] => ctx,
            [a, b] => {
                let batch = plan.first().map_or(0, |l| l.batch);
                return Ok(PlacedNetwork::Two(TwoDeviceNetwork::new(
                    [a, b],
                    network,
                    batch,
                    weights,
                )?));
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "a network runs on one or two devices, not {}",
                    contexts.len()
                )))
            }
        };
        // GoogLeNet's auxiliary heads, where built, add 0.3 x their l2_loss (as its paper trains
        // them): a benchmark or check times and judges their backward too.
        let loss = Loss::with_aux_heads(LossKind::L2, plan);
        let training = training.map(|keep| (&loss, keep));
        Self::on_one_device(ctx, network, plan, weights, training)
    }

    /// `network` (planned as `plan`, with `weights`) on `ctx`: whole, or in parts along the
    /// batch where some tensor of the whole batch exceeds one storage binding
    /// ([`MicroBatches`]); at inference, or with `training` (a loss and what the forward pass
    /// keeps).
    pub fn on_one_device(
        ctx: &'a GpuContext,
        network: &Network,
        plan: &[LayerPlan],
        weights: &Weights,
        training: Option<(&Loss, Keep)>,
    ) -> Result<Self> {
        match GpuNetwork::built_for(ctx, plan, weights, training) {
            Ok(net) => Ok(PlacedNetwork::One(net)),
            Err(Error::TooLarge { .. }) => Ok(PlacedNetwork::Parts(Box::new(MicroBatches::new(
                ctx, network, plan, weights, training,
            )?))),
            Err(e) => Err(e),
        }
    }

    /// The network an optimiser updates on one device: the whole batch's, or the first part's
    /// (whose parameters every part shares, and which holds the parts' summed gradients after a
    /// backward pass).
    pub fn trained(&self) -> Result<&GpuNetwork<'a>> {
        match self {
            PlacedNetwork::One(net) => Ok(net),
            PlacedNetwork::Parts(parts) => Ok(parts.first()),
            PlacedNetwork::Two(_) => Err(Error::InvalidArgument(
                "a two-device layout has an optimiser per device".into(),
            )),
        }
    }

    /// Copies the batch's labels (for cross-entropy) to one device.
    pub fn upload_labels(&self, labels: &[usize]) -> Result<()> {
        match self {
            PlacedNetwork::One(net) => net.upload_labels(labels),
            PlacedNetwork::Parts(parts) => parts.upload_labels(labels),
            PlacedNetwork::Two(_) => Err(Error::InvalidArgument(
                "a two-device layout trains on l2_loss, without labels".into(),
            )),
        }
    }

    /// The loss of the last pass over the whole batch.
    pub fn read_loss(&self) -> Result<f64> {
        match self {
            PlacedNetwork::One(net) => net.read_loss(),
            PlacedNetwork::Parts(parts) => parts.read_loss(),
            // l2_loss(logits) = sum(logits^2) / 2, the only loss the layout trains with.
            PlacedNetwork::Two(net) => {
                let logits = net.read_output()?;
                Ok(logits
                    .iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    / 2.0)
            }
        }
    }

    /// The network as checking and benchmarking drive it.
    pub fn runner(&self) -> &dyn Runner {
        match self {
            PlacedNetwork::One(net) => net,
            PlacedNetwork::Two(net) => net,
            PlacedNetwork::Parts(net) => net.as_ref(),
        }
    }

    /// GPU memory held.
    pub fn memory(&self) -> PlacedMemory {
        match self {
            PlacedNetwork::One(net) => PlacedMemory::One(net.memory()),
            PlacedNetwork::Two(net) => PlacedMemory::Two(net.memory()),
            PlacedNetwork::Parts(net) => PlacedMemory::One(net.memory()),
        }
    }
}
