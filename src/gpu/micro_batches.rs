//! A batch too large for one storage binding, run in parts along the batch on one device.
//!
//! A tensor of a whole batch must fit in one storage binding (128 MiB on lavapipe); VGG-16's
//! first activation at batch 32 is 411 MB. [`MicroBatches`] splits such a batch into the fewest
//! parts whose every tensor fits, each part a network of its own over the same parameters
//! ([`GpuNetwork::inference_sharing`], [`GpuNetwork::training_sharing`]), and records every
//! part's passes into one command buffer. In training, each part's backward writes its gradients
//! into the shared gradient buffers, and an accumulator per buffer sums them on the GPU, each
//! weighted by the part's share of the loss (`n_k / N` for cross-entropy, a mean; 1 for the
//! seed's `l2_loss`, a sum), then is copied back: the optimiser and every reader see the whole
//! batch's gradient, as gradient accumulation does in other frameworks, with no host round trip.
//!
//! Batch norms in training normalise over the whole batch: there the parts are data-parallel
//! replicas on one device (`DataParallel::parts_on_one_device`) whose passes stop at every
//! batch norm for the host to combine the parts' statistics and backward sums (as
//! `--sync-batch-norm` combines replicas'), each part with gradient buffers of its own, summed on
//! the host after the backward pass. At inference a batch norm uses its running statistics, and
//! the parts are independent.

use crate::error::{Error, Result};
use crate::gpu::builder::{Builder, Purpose};
use crate::gpu::context::GpuContext;
use crate::gpu::data_parallel::{gradient_buffers, shards, DataParallel};
use crate::gpu::kernel::{encode_pass, Dispatch};
use crate::gpu::network::{GpuNetwork, Keep};
// The `a out + b x` kernel L-BFGS is built on serves any weighted sum of buffers.
use crate::gpu::ops::lbfgs::{axpy, Coefficient};
use crate::gpu::MemoryUse;
use crate::model::{LayerKind, LayerPlan, Loss, LossKind, Network};
use crate::shaders::Element;
use crate::weights::Weights;

/// One batch run in parts along the batch on one device (see the module's documentation).
pub struct MicroBatches<'a> {
    /// The whole batch's plan.
    plan: Vec<LayerPlan>,
    parts: Parts<'a>,
}

/// How the parts run.
enum Parts<'a> {
    /// Each part's passes whole, one after another (no batch norm trains).
    Independent {
        /// In image order; the first owns the parameters and the gradients every part writes.
        networks: Vec<GpuNetwork<'a>>,
        /// With gradients: the sums of the parts' gradients.
        accumulation: Option<Accumulation>,
    },
    /// Batch norms train: the parts' passes stop at each for the host.
    Synchronised(Box<DataParallel<'a>>),
}

/// The GPU-side sum of the parts' gradients.
struct Accumulation {
    /// Per part, the dispatches that add its gradients (weighted) into the accumulators.
    sums: Vec<Vec<Dispatch>>,
    /// Each gradient buffer beside its accumulator, copied back after the last part.
    copies: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    memory: MemoryUse,
}

/// The fewest parts of `plan`'s batch whose f32 activations and input each fit `max_binding`
/// bytes (1 when the whole batch fits); an error when one image's do not.
pub fn parts_needed(plan: &[LayerPlan], max_binding: u64) -> Result<usize> {
    parts_needed_of(plan, max_binding, Element::F32)
}

/// As [`parts_needed`], for activations stored as `element`.
fn parts_needed_of(plan: &[LayerPlan], max_binding: u64, element: Element) -> Result<usize> {
    let batch = plan.first().map_or(0, |l| l.batch);
    Ok(batch.div_ceil(images_per_binding(plan, max_binding, element)?))
}

/// How many images' activations (and input) of `plan`, stored as `element`, fit `max_binding`
/// bytes each; an error when one image's do not.
fn images_per_binding(plan: &[LayerPlan], max_binding: u64, element: Element) -> Result<usize> {
    let Some(first) = plan.first() else {
        return Ok(1);
    };
    let per_image = (plan.iter().map(|l| l.output.len()))
        .chain([first.input.len()])
        .max()
        .unwrap_or(0) as u64
        * element.bytes() as u64;
    match max_binding / per_image.max(1) {
        0 => Err(Error::InvalidArgument(format!(
            "one image's largest tensor is {} MB, one storage binding holds at most {} MB; only \
             a smaller input fits",
            per_image / 1_000_000,
            max_binding / 1_000_000
        ))),
        fits => Ok(fits as usize),
    }
}

impl<'a> MicroBatches<'a> {
    /// `network` at `plan`'s batch on `ctx`, with `weights`, in the fewest parts whose
    /// activations fit (more where a part's scratch does not, see `fewest_parts`): at inference,
    /// or with `training` (the loss, of `plan`'s layers, and what the forward pass keeps) for a
    /// backward pass whose gradients are summed over the parts.
    pub fn new(
        ctx: &'a GpuContext,
        network: &Network,
        plan: &[LayerPlan],
        weights: &Weights,
        training: Option<(&Loss, Keep)>,
    ) -> Result<Self> {
        let batch = plan.first().map_or(0, |l| l.batch);
        // A part that trains holds f32 gradients of its outputs whatever it stores.
        let element = match training {
            Some(_) => Element::F32,
            None => ctx.stored_element()?,
        };
        let parts = parts_needed_of(plan, ctx.max_binding(), element)?;
        fewest_parts(
            (batch, parts),
            || one_image(ctx, network, weights, training),
            |parts| Self::in_parts(ctx, network, plan, weights, training, parts),
        )
    }

    /// As [`MicroBatches::new`] for training where the parts are replicas on one device
    /// ([`DataParallel::parts_on_one_device`], batch norms or not): the fewest parts that fit
    /// `plan`'s batch, for a trainer that drives replicas.
    pub(crate) fn replicas_on_one_device(
        ctx: &'a GpuContext,
        network: &Network,
        plan: &[LayerPlan],
        weights: &Weights,
        training: (&Loss, Keep),
    ) -> Result<DataParallel<'a>> {
        let batch = plan.first().map_or(0, |l| l.batch);
        let parts = parts_needed(plan, ctx.max_binding())?.max(2);
        fewest_parts(
            (batch, parts),
            || one_image(ctx, network, weights, Some(training)),
            |parts| {
                DataParallel::parts_on_one_device(ctx, network, (batch, parts), weights, training)
            },
        )
    }

    fn in_parts(
        ctx: &'a GpuContext,
        network: &Network,
        plan: &[LayerPlan],
        weights: &Weights,
        training: Option<(&Loss, Keep)>,
        parts: usize,
    ) -> Result<Self> {
        let batch = plan.first().map_or(0, |l| l.batch);
        let batch_norms_train = training.is_some()
            && (plan.iter()).any(|l| matches!(l.layer.kind, LayerKind::BatchNorm { .. }));
        if let (Some(training), true, true) = (training, batch_norms_train, parts > 1) {
            let replicas =
                DataParallel::parts_on_one_device(ctx, network, (batch, parts), weights, training)?;
            return Ok(MicroBatches {
                plan: plan.to_vec(),
                parts: Parts::Synchronised(Box::new(replicas)),
            });
        }
        let sizes = shards(batch, parts)?;
        let first_plan = network.plan(sizes[0])?;
        // A loss names layers, not images: the whole batch's serves every part.
        let first = GpuNetwork::built_for(ctx, &first_plan, weights, training)?;
        let mut networks = vec![];
        for &size in &sizes[1..] {
            let part_plan = network.plan(size)?;
            networks.push(match training {
                Some((_, keep)) => GpuNetwork::training_sharing(&first, &part_plan, keep)?,
                None => GpuNetwork::inference_sharing(&first, &part_plan)?,
            });
        }
        networks.insert(0, first);
        let accumulation = match training {
            Some((loss, _)) if parts > 1 => Some(Accumulation::new(ctx, &networks, loss.kind)?),
            _ => None,
        };
        Ok(MicroBatches {
            plan: plan.to_vec(),
            parts: Parts::Independent {
                networks,
                accumulation,
            },
        })
    }

    /// The parts, in image order (the first owns the parameters and their gradients).
    pub fn parts(&self) -> &[GpuNetwork<'a>] {
        match &self.parts {
            Parts::Independent { networks, .. } => networks,
            Parts::Synchronised(replicas) => replicas.replicas(),
        }
    }

    /// Images per part, in image order.
    pub fn sizes(&self) -> Vec<usize> {
        self.parts().iter().map(|p| p.plan()[0].batch).collect()
    }

    /// The network an optimiser updates: the first part, whose parameters every part shares.
    pub fn first(&self) -> &GpuNetwork<'a> {
        &self.parts()[0]
    }

    /// The whole batch's plan.
    pub fn plan(&self) -> &[LayerPlan] {
        &self.plan
    }

    /// How the parts store their activations (see [`GpuNetwork::stored_element`]).
    pub fn stored_element(&self) -> Element {
        self.first().stored_element()
    }

    /// GPU memory held by every part and the gradients' accumulators.
    pub fn memory(&self) -> MemoryUse {
        let mut total = match &self.parts {
            Parts::Independent {
                accumulation: Some(accumulation),
                ..
            } => accumulation.memory,
            _ => MemoryUse::default(),
        };
        for part in self.parts() {
            total = total.plus(&part.memory());
        }
        total
    }

    /// Copies the whole batch's images (`[N, C, H, W]`) to the parts.
    pub fn upload_input(&self, input: &[f32]) -> Result<()> {
        let per_image = self.plan[0].input.len();
        let expected = self.plan[0].batch * per_image;
        if input.len() != expected {
            return Err(Error::InvalidArgument(format!(
                "input holds {} values, the network at batch {} expects {expected}",
                input.len(),
                self.plan[0].batch
            )));
        }
        let mut first = 0;
        for part in self.parts() {
            let n = part.plan()[0].batch;
            part.upload_input(&input[first * per_image..(first + n) * per_image])?;
            first += n;
        }
        Ok(())
    }

    /// Copies the whole batch's labels to the parts (for cross-entropy).
    pub fn upload_labels(&self, labels: &[usize]) -> Result<()> {
        if labels.len() != self.plan[0].batch {
            return Err(Error::InvalidArgument(format!(
                "{} labels for a batch of {}",
                labels.len(),
                self.plan[0].batch
            )));
        }
        let mut first = 0;
        for part in self.parts() {
            let n = part.plan()[0].batch;
            part.upload_labels(&labels[first..first + n])?;
            first += n;
        }
        Ok(())
    }

    /// Every part's forward pass (in training mode where batch norms train), waited for.
    pub fn forward(&self) -> Result<()> {
        let networks = match &self.parts {
            Parts::Independent { networks, .. } => networks,
            Parts::Synchronised(replicas) => {
                replicas.forward()?;
                // No optimiser here: the update writes the host's running statistics.
                return replicas.update(&[]).map(|_| ());
            }
        };
        self.first().run("forward pass in parts", |encoder| {
            for part in networks {
                part.encode_forward(encoder);
            }
            Ok(())
        })
    }

    /// Every part's forward and backward pass and the sum of their gradients, waited for: the
    /// first part's gradient buffers then hold the whole batch's. Independent parts take one
    /// submission and sum on the GPU; synchronised ones stop at every batch norm, sum on the
    /// host, and leave the running statistics the whole batch's.
    pub fn forward_backward(&self) -> Result<()> {
        let (networks, accumulation) = match &self.parts {
            Parts::Independent {
                networks,
                accumulation,
            } => (networks, accumulation),
            Parts::Synchronised(replicas) => {
                replicas.gradients()?;
                // No optimiser here: the update writes the host's running statistics.
                replicas.update(&[])?;
                return Ok(());
            }
        };
        self.first()
            .run("forward-backward pass in parts", |encoder| {
                for (k, part) in networks.iter().enumerate() {
                    part.encode_forward(encoder);
                    part.encode_backward(encoder)?;
                    if let Some(accumulation) = accumulation {
                        encode_pass(encoder, "gradient accumulation", &accumulation.sums[k]);
                    }
                }
                if let Some(accumulation) = accumulation {
                    for (gradient, sum) in &accumulation.copies {
                        encoder.copy_buffer_to_buffer(sum, 0, gradient, 0, gradient.size());
                    }
                }
                Ok(())
            })
    }

    /// Layer `index`'s output over the whole batch, the parts' in image order.
    pub fn read_layer(&self, index: usize) -> Result<Vec<f32>> {
        let mut values = Vec::new();
        for part in self.parts() {
            values.extend(part.read_layer(index)?);
        }
        Ok(values)
    }

    /// The logits over the whole batch.
    pub fn read_output(&self) -> Result<Vec<f32>> {
        self.read_layer(self.plan.len() - 1)
    }

    /// The loss of the last pass over the whole batch: the parts' weighted by their shares.
    pub fn read_loss(&self) -> Result<f64> {
        if let Parts::Synchronised(replicas) = &self.parts {
            return replicas.read_loss();
        }
        let kind = (self.first().loss())
            .ok_or_else(|| Error::InvalidArgument("built without a loss".into()))?
            .kind;
        let mut total = 0.0;
        for part in self.parts() {
            total += share(kind, part, self.plan[0].batch) * part.read_loss()?;
        }
        Ok(total)
    }

    /// The whole batch's parameter gradients, after [`MicroBatches::forward_backward`].
    pub fn read_gradients(&self) -> Result<Weights> {
        self.first().read_gradients()
    }

    /// The weights (and running statistics) every part shares.
    pub fn read_weights(&self) -> Result<Weights> {
        self.first().read_weights()
    }
}

/// What `build(parts)` builds, from `parts` up until every buffer fits one binding (a part's
/// scratch, padded inputs and transposes, may exceed a binding where its activations do not):
/// a quarter more parts at a time (at least one), up to one image per part. At the first
/// failure `fits_one_image` tells whether anything can fit: a buffer that does not shrink with
/// the batch (a weight) ends the search at once, with its error.
fn fewest_parts<T>(
    (batch, mut parts): (usize, usize),
    fits_one_image: impl FnOnce() -> Result<()>,
    mut build: impl FnMut(usize) -> Result<T>,
) -> Result<T> {
    let mut probe = Some(fits_one_image);
    loop {
        match build(parts) {
            Err(Error::TooLarge { .. }) if parts < batch => {
                if let Some(Err(e @ Error::TooLarge { .. })) = probe.take().map(|p| p()) {
                    return Err(e);
                }
                parts = (parts + (parts / 4).max(1)).min(batch);
            }
            built => return built,
        }
    }
}

/// Builds `network` for one image as the parts would be built (with `training`'s loss and
/// keep): whether a part of one image fits at all.
fn one_image(
    ctx: &GpuContext,
    network: &Network,
    weights: &Weights,
    training: Option<(&Loss, Keep)>,
) -> Result<()> {
    GpuNetwork::built_for(ctx, &network.plan(1)?, weights, training).map(drop)
}

/// Part `part`'s share of the whole batch's loss (of `batch` images) under `kind`.
fn share(kind: LossKind, part: &GpuNetwork, batch: usize) -> f64 {
    match kind {
        LossKind::CrossEntropy => part.plan()[0].batch as f64 / batch as f64,
        LossKind::L2 => 1.0,
    }
}

impl Accumulation {
    /// An accumulator beside each of `parts[0]`'s gradient buffers, and per part the dispatches
    /// `sum = [k > 0] sum + share_k gradient`.
    fn new(ctx: &GpuContext, parts: &[GpuNetwork], kind: LossKind) -> Result<Self> {
        let mut b = Builder::new(ctx);
        let batch: usize = parts.iter().map(|p| p.plan()[0].batch).sum();
        // axpy reads no scalar here; its binding still needs a buffer.
        let no_scalars = b.storage("no scalars", 1, Purpose::Scratch);
        let mut copies = Vec::new();
        for (_, gradient, _) in gradient_buffers(&parts[0])? {
            let floats = (gradient.size() / 4) as usize;
            let sum = b.storage("gradient sum", floats, Purpose::Gradients);
            copies.push((gradient, sum));
        }
        let mut sums = Vec::new();
        for (k, part) in parts.iter().enumerate() {
            let keep = if k == 0 {
                Coefficient::ZERO
            } else {
                Coefficient::ONE
            };
            let weight = Coefficient::constant(share(kind, part, batch) as f32);
            let dispatches = (copies.iter())
                .map(|(gradient, sum)| {
                    let floats = (gradient.size() / 4) as usize;
                    axpy(
                        &mut b,
                        "gradient sum",
                        floats,
                        (keep, sum),
                        (weight, gradient),
                        &no_scalars,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            sums.push(dispatches);
        }
        Ok(Accumulation {
            sums,
            copies,
            memory: b.memory,
        })
    }
}
