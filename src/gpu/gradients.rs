//! The backward pass of a loss over the network's heads (see [`Loss`]: the seed's `l2_loss` of
//! the logits, or softmax cross-entropy; GoogLeNet's auxiliary heads weighted in): the gradient
//! of every layer's output, the parameter gradients (in the packed layouts of the weights), and
//! the dispatches of the loss's gradient and of every layer's backward, last layer first, each
//! built by its op's module.
//!
//! Networks are DAGs (ResNet's residual additions, GoogLeNet's concatenations): a layer whose
//! output several layers read receives the sum of their input gradients. Walking the layers
//! backward, the first of them to run writes its gradient into the layer's gradient buffer, and
//! each later one adds into it: the add and concat backward kernels add in place, the others
//! write into one shared scratch buffer that `add_gradient` then adds. Layers whose output
//! reaches no loss (GoogLeNet's auxiliary heads, when the loss is the main head's) have no
//! backward at all.

use crate::error::{Error, Result};
use crate::gpu::builder::{Builder, Pooled, Purpose};
use crate::gpu::kernel::{encode_pass, Dispatch};
use crate::gpu::ops::elementwise::{self, GradientTarget};
use crate::gpu::ops::{self, conv, linear, lrn, norm, pool, BackwardBuffers};
use crate::gpu::packing::{PackedGrads, PackedWeights};
use crate::model::{LayerKind, LayerPlan, Loss, LossKind, Source};
use crate::shaders::Element;

/// Where the gradient of the last layer's output comes from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum OutputGradient {
    /// A loss over the network's heads, differentiated on the GPU first.
    Loss(Loss),
    /// Written into the last layer's gradient buffer by the caller before the backward pass (a
    /// later segment's input gradient, on a multi-device layout).
    External,
    /// Written into these layers' gradient buffers by the caller's dispatches, recorded between
    /// the forward and the backward pass (style transfer's losses of feature layers).
    Heads(Vec<usize>),
}

/// What cross-entropy reads and leaves: the labels, and each head's per-image losses.
pub(crate) struct CrossEntropyBuffers {
    /// `[batch]` u32 class indices, uploaded by the caller.
    pub labels: wgpu::Buffer,
    /// Per head (in the loss's order), `[batch]`: each image's unweighted loss.
    pub losses: Vec<wgpu::Buffer>,
}

/// Where a pass synchronised across data-parallel replicas stops for the host: after its first
/// `dispatches`, batch norm `layer`'s statistics (forward: `[4][channels]` of its batch
/// statistics) or sums (backward: `[2][channels]` of its gradient) in `buffer` are this
/// replica's alone, for the host to replace by what the whole batch's make of them.
#[derive(Clone)]
pub(crate) struct BatchNormSync {
    pub dispatches: usize,
    pub layer: usize,
    pub buffer: wgpu::Buffer,
}

/// Everything the backward pass holds on the GPU.
pub(crate) struct Gradients {
    /// The loss's gradient (empty where the caller provides it).
    loss_dispatches: Vec<Dispatch>,
    dispatches: Vec<Dispatch>,
    /// The loss differentiated (`None`: the output gradient is the caller's).
    pub loss: Option<Loss>,
    /// Where the loss is cross-entropy.
    pub cross_entropy: Option<CrossEntropyBuffers>,
    /// The buffer that held the gradient of every layer's output that reaches the loss (`None`:
    /// one that does not).
    pub outputs: Vec<Option<wgpu::Buffer>>,
    /// Per layer, whether its output gradient's buffer served other layers too (it then holds
    /// the last one's after a pass).
    pub shared: Vec<bool>,
    /// The gradient of the network's input, when it was asked for.
    pub input: Option<wgpu::Buffer>,
    /// Parallel to the network's parameterised layers (`None`: a convolution whose weights
    /// stay fixed).
    pub params: Vec<Option<PackedGrads>>,
    /// With synchronised batch norms, where the backward pass stops for the host.
    pub batch_norm_syncs: Vec<BatchNormSync>,
}

impl Gradients {
    /// Records the backward pass: the loss's gradient (unless the caller provides it), then
    /// every layer.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        self.encode_loss(encoder);
        encode_pass(encoder, "backward", &self.dispatches);
    }

    /// Records the loss's gradient (nothing when the caller provides it).
    pub fn encode_loss(&self, encoder: &mut wgpu::CommandEncoder) {
        if !self.loss_dispatches.is_empty() {
            encode_pass(encoder, "loss", &self.loss_dispatches);
        }
    }

    /// The gradient buffer of the last layer's output (which always reaches the loss).
    pub fn logits(&self) -> &wgpu::Buffer {
        self.outputs
            .last()
            .and_then(Option::as_ref)
            .expect("the last layer's output is the loss's input")
    }

    /// The backward dispatches, last layer first.
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }
}

/// What the forward pass leaves for the backward pass to read: the network's input, every layer's
/// output, every max pool's window maxima positions and every batch norm's batch statistics
/// (`None` for other layers).
pub(crate) struct ForwardBuffers<'f> {
    pub input: &'f wgpu::Buffer,
    pub outputs: &'f [wgpu::Buffer],
    pub argmax: &'f [Option<wgpu::Buffer>],
    pub batch_stats: &'f [Option<wgpu::Buffer>],
}

/// The layers whose outputs the loss reads (the last alone where the caller provides its
/// gradient).
pub(crate) fn heads(output_gradient: &OutputGradient, plan: &[LayerPlan]) -> Vec<usize> {
    match output_gradient {
        OutputGradient::Loss(loss) => loss.heads.iter().map(|&(head, _)| head).collect(),
        OutputGradient::External => vec![plan.len().saturating_sub(1)],
        OutputGradient::Heads(heads) => heads.clone(),
    }
}

/// Which layers' outputs the loss (a function of the `heads`' outputs) depends on.
pub(crate) fn reaching_the_loss(plan: &[LayerPlan], heads: &[usize]) -> Vec<bool> {
    let mut reaches = vec![false; plan.len()];
    for &head in heads {
        reaches[head] = true;
    }
    for (i, layer) in plan.iter().enumerate().rev() {
        if reaches[i] {
            for (source, _) in &layer.sources {
                if let Source::Layer(j) = *source {
                    reaches[j] = true;
                }
            }
        }
    }
    reaches
}

/// Where one input gradient of a layer goes (the build walks the layers backward and gives each
/// source of each layer one, `None` for the network's input unless its gradient was asked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Destination {
    /// The gradient of layer `j`'s output; `accumulate` when another reader wrote it first.
    Layer { j: usize, accumulate: bool },
    /// The network input's gradient.
    Input { accumulate: bool },
}

/// What a backward pass computes besides every output gradient on the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// The gradient of the network's input (skipped otherwise: training needs no image's
    /// gradient).
    pub input: bool,
    /// Batch norms synchronised across data-parallel replicas: the forward and backward passes
    /// stop at each for the host (see [`BatchNormSync`]).
    pub synced_batch_norms: bool,
    /// The convolutions' weight and bias gradients (skipped where the weights stay fixed, as
    /// style transfer's do: a third of the backward pass's work).
    pub conv_parameters: bool,
}

/// Builds the backward pass.
pub(crate) fn build<'a>(
    b: &mut Builder<'a>,
    plan: &[LayerPlan],
    forward: ForwardBuffers,
    params: &[PackedWeights],
    shared_grads: Option<&[Option<PackedGrads>]>,
    output_gradient: OutputGradient,
    wanted: Wanted,
) -> Result<Gradients> {
    let ForwardBuffers {
        input,
        outputs,
        argmax,
        batch_stats,
    } = forward;
    let first = &plan[0];
    let input_grad = wanted.input.then(|| {
        b.storage(
            "input gradient",
            first.batch * first.input.len(),
            Purpose::Gradients,
        )
    });
    let heads = heads(&output_gradient, plan);
    let mut distinct = heads.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != heads.len() {
        return Err(Error::InvalidArgument(
            "a loss names a head twice; give it one weight".into(),
        ));
    }
    if let Some(&bad) = heads.iter().find(|&&h| h >= plan.len()) {
        return Err(Error::Internal(format!(
            "a loss head at layer {bad} of {}",
            plan.len()
        )));
    }
    let reaches = reaching_the_loss(plan, &heads);
    let gradient_len = |j: usize| plan[j].batch * plan[j].output.len();
    let mut slots = GradientSlots::default();
    // Which slot holds each layer's output gradient while it lives.
    let mut slot_of: Vec<Option<usize>> = vec![None; plan.len()];
    for &head in &heads {
        if slot_of[head].is_none() {
            let label = format!("{} output gradient", plan[head].layer.name);
            slot_of[head] = Some(slots.take(b, &label, gradient_len(head)));
        }
    }
    // A convolution whose weights stay fixed has no gradient buffers; a network sharing
    // another's parameters writes into that one's (each backward pass overwrites them).
    let param_grads: Vec<Option<PackedGrads>> = match shared_grads {
        Some(shared) => shared.to_vec(),
        None => params
            .iter()
            .map(|p| {
                let frozen = !wanted.conv_parameters
                    && matches!(plan[p.layer].layer.kind, LayerKind::Conv2d { .. });
                (!frozen).then(|| PackedGrads::new(b, plan, p))
            })
            .collect(),
    };

    // Every edge's destination, walking the layers backward.
    // The loss's dispatches write the heads' gradients before any layer's backward: a layer
    // that reads a head adds to it.
    let mut written = vec![false; plan.len()];
    for &head in &heads {
        written[head] = true;
    }
    let mut input_written = false;
    let mut destinations: Vec<Vec<Option<Destination>>> = vec![Vec::new(); plan.len()];
    for (i, layer) in plan.iter().enumerate().rev().filter(|&(i, _)| reaches[i]) {
        for (source, _) in &layer.sources {
            let destination = match *source {
                Source::Layer(j) => {
                    let accumulate = std::mem::replace(&mut written[j], true);
                    Some(Destination::Layer { j, accumulate })
                }
                Source::Input if input_grad.is_some() => {
                    let accumulate = std::mem::replace(&mut input_written, true);
                    Some(Destination::Input { accumulate })
                }
                Source::Input => None,
            };
            destinations[i].push(destination);
        }
    }

    let head_grads: Vec<Option<&wgpu::Buffer>> =
        slot_of.iter().map(|s| s.map(|s| slots.buffer(s))).collect();
    let (loss_dispatches, cross_entropy) =
        loss_gradient(b, plan, &output_gradient, outputs, &head_grads)?;
    let mut dispatches = Vec::new();
    let mut batch_norm_syncs = Vec::new();
    for (i, layer) in plan.iter().enumerate().rev().filter(|&(i, _)| reaches[i]) {
        // The sources this layer writes first get their gradient's buffer now.
        for destination in destinations[i].iter().flatten() {
            if let Destination::Layer {
                j,
                accumulate: false,
            } = *destination
            {
                let label = format!("{} output gradient", plan[j].layer.name);
                slot_of[j] = Some(slots.take(b, &label, gradient_len(j)));
            }
        }
        let slot = slot_of[i].ok_or_else(|| {
            Error::Internal(format!(
                "layer {}'s gradient is read before any layer wrote it",
                layer.layer.name
            ))
        })?;
        let targets: Vec<Option<GradientTarget>> = destinations[i]
            .iter()
            .map(|d| {
                d.map(|d| match d {
                    Destination::Layer { j, accumulate } => GradientTarget {
                        buffer: slots.buffer(slot_of[j].expect("taken above or before")),
                        accumulate,
                    },
                    Destination::Input { accumulate } => GradientTarget {
                        buffer: input_grad.as_ref().expect("only asked-for input gradients"),
                        accumulate,
                    },
                })
            })
            .collect();
        let sources = ops::source_buffers(layer, input, outputs);
        let step = Step {
            index: i,
            layer,
            sources: &sources,
            output: &outputs[i],
            grad_output: slots.buffer(slot),
            targets: &targets,
            argmax: argmax[i].as_ref(),
            batch_stats: batch_stats[i].as_ref(),
        };
        let layer_params = (params.iter().zip(&param_grads))
            .find(|(p, _)| p.layer == i)
            .map(|(p, g)| (p, g.as_ref()));
        let first = dispatches.len();
        dispatches.extend(layer_backward(
            b,
            &step,
            layer_params,
            wanted.synced_batch_norms,
        )?);
        // A synchronised batch norm's backward is two dispatches, the host between them.
        let two_parts =
            (dispatches.get(first + 1)).is_some_and(|d| d.kernel == dispatches[first].kernel);
        if let (LayerKind::BatchNorm { .. }, Some((_, Some(g))), true) = (
            &layer.layer.kind,
            layer_params,
            wanted.synced_batch_norms && two_parts,
        ) {
            batch_norm_syncs.push(BatchNormSync {
                dispatches: first + 1,
                layer: i,
                buffer: g.weights[0].clone(),
            });
        }
        // Nothing after this layer's backward reads its output gradient again.
        slots.give_back(b, slot);
        b.end_step();
    }
    let grads: Vec<Option<wgpu::Buffer>> = slot_of
        .iter()
        .map(|slot| slot.map(|s| slots.buffer(s).clone()))
        .collect();
    let shared: Vec<bool> = slot_of
        .iter()
        .map(|slot| slot.is_some_and(|s| !slots.still_holds(b, s)))
        .collect();
    Ok(Gradients {
        loss_dispatches,
        dispatches,
        batch_norm_syncs,
        loss: match output_gradient {
            OutputGradient::Loss(loss) => Some(loss),
            OutputGradient::External | OutputGradient::Heads(_) => None,
        },
        cross_entropy,
        outputs: grads,
        shared,
        input: input_grad,
        params: param_grads,
    })
}

/// The dispatches that write each loss head's output gradient, and cross-entropy's buffers.
fn loss_gradient(
    b: &mut Builder,
    plan: &[LayerPlan],
    output_gradient: &OutputGradient,
    outputs: &[wgpu::Buffer],
    grads: &[Option<&wgpu::Buffer>],
) -> Result<(Vec<Dispatch>, Option<CrossEntropyBuffers>)> {
    let OutputGradient::Loss(loss) = output_gradient else {
        return Ok((Vec::new(), None));
    };
    let batch = plan[0].batch;
    let cross_entropy = (loss.kind == LossKind::CrossEntropy).then(|| CrossEntropyBuffers {
        labels: b.storage("labels", batch, Purpose::Activations),
        losses: (loss.heads.iter())
            .map(|&(head, _)| {
                let label = format!("{} per-image losses", plan[head].layer.name);
                b.storage(&label, batch, Purpose::Scratch)
            })
            .collect(),
    });
    let mut dispatches = Vec::new();
    for (k, &(head, weight)) in loss.heads.iter().enumerate() {
        let layer = &plan[head];
        let grad = grads[head].as_ref().expect("a loss head reaches the loss");
        dispatches.push(match &cross_entropy {
            None => ops::loss::l2(b, layer, weight, &outputs[head], grad)?,
            Some(ce) => ops::loss::cross_entropy(
                b,
                layer,
                weight,
                (&outputs[head], &ce.labels),
                (grad, &ce.losses[k]),
            )?,
        });
    }
    Ok((dispatches, cross_entropy))
}

/// One layer's backward, as [`layer_backward`] needs it.
struct Step<'s> {
    index: usize,
    layer: &'s LayerPlan,
    sources: &'s [&'s wgpu::Buffer],
    output: &'s wgpu::Buffer,
    grad_output: &'s wgpu::Buffer,
    /// Per source, where its gradient goes.
    targets: &'s [Option<GradientTarget<'s>>],
    argmax: Option<&'s wgpu::Buffer>,
    batch_stats: Option<&'s wgpu::Buffer>,
}

/// The dispatches of one layer's backward: an add or concat sends its output gradient to each
/// source's target (in place, copying or adding); a single-input layer writes its input gradient
/// into its target, or into scratch that is then added where another reader wrote first.
fn layer_backward(
    b: &mut Builder,
    step: &Step,
    params: Option<(&PackedWeights, Option<&PackedGrads>)>,
    synced_batch_norm: bool,
) -> Result<Vec<Dispatch>> {
    let layer = step.layer;
    let name = &layer.layer.name;
    let mut dispatches = Vec::new();
    let first_source = step
        .sources
        .first()
        .copied()
        .ok_or_else(|| Error::Internal(format!("layer {name} reads no tensor")))?;
    match layer.layer.kind {
        LayerKind::Add { .. } => {
            let buffers = BackwardBuffers {
                input: first_source,
                output: step.output,
                grad_output: step.grad_output,
                grad_input: None,
                argmax: None,
            };
            return elementwise::add_backward(b, layer, &buffers, step.targets);
        }
        LayerKind::Concat => {
            let grad = step.grad_output;
            return elementwise::concat_backward(b, layer, grad, step.targets);
        }
        _ => {}
    }
    let target = step.targets.first().copied().flatten();
    let len = layer.batch * layer.input.len();
    let (grad_input, accumulate_into) = match target {
        Some(t) if t.accumulate => {
            let scratch = b.scratch(&format!("{name} input gradient to add"), len);
            (Some(scratch), Some(t))
        }
        Some(t) => (Some(t.buffer.clone()), None),
        None => (None, None),
    };
    let buffers = BackwardBuffers {
        input: first_source,
        output: step.output,
        grad_output: step.grad_output,
        grad_input: grad_input.as_ref(),
        argmax: step.argmax,
    };
    dispatches.extend(match (&layer.layer.kind, params) {
        (LayerKind::Conv2d { .. }, Some((p, g))) => conv::backward(b, layer, &buffers, p, g)?,
        (LayerKind::Linear { .. }, Some((p, Some(g)))) => {
            linear::backward(b, layer, &buffers, p, g)?
        }
        (LayerKind::BatchNorm { .. }, Some((_, Some(g)))) => {
            let stats = step.batch_stats.ok_or_else(|| {
                Error::Internal(format!("batch norm {name} kept no batch statistics"))
            })?;
            norm::backward(b, layer, &buffers, (stats, g), synced_batch_norm)?
        }
        (LayerKind::Lrn { .. }, None) => lrn::backward(b, layer, &buffers)?,
        (LayerKind::MaxPool { .. }, None) => pool::max_backward(b, layer, &buffers)?,
        (LayerKind::AdaptiveAvgPool { .. }, None) => {
            pool::adaptive_avg_backward(b, layer, &buffers)?
        }
        _ => {
            return Err(Error::Internal(format!(
                "layer {name} (index {}): parameters exist exactly for conv, linear and batch \
                 norm layers",
                step.index
            )))
        }
    });
    if let (Some(target), Some(scratch)) = (accumulate_into, grad_input.as_ref()) {
        let label = format!("{name} input gradient sum");
        dispatches.push(elementwise::add_gradient(b, &label, len, scratch, target)?);
    }
    Ok(dispatches)
}

/// The buffers the layers' output gradients live in, from the builder's pool: a layer's from the
/// backward of the first layer that reads it (walking backward) to its own, then free for
/// another's (or for scratch).
#[derive(Default)]
struct GradientSlots {
    /// Each slot's buffer while taken (`None`: given back).
    taken: Vec<Option<Pooled>>,
    /// Every slot's buffer and its lending, kept for reading back after a pass.
    buffers: Vec<(wgpu::Buffer, u32)>,
}

impl GradientSlots {
    /// A new slot holding a buffer of at least `floats` values.
    fn take(&mut self, b: &mut Builder, label: &str, floats: usize) -> usize {
        let pooled = b.take(label, floats, Element::F32, Purpose::Gradients);
        self.buffers
            .push((pooled.buffer().clone(), pooled.generation()));
        self.taken.push(Some(pooled));
        self.buffers.len() - 1
    }

    /// Returns `slot`'s buffer to the pool.
    fn give_back(&mut self, b: &mut Builder, slot: usize) {
        if let Some(pooled) = self.taken[slot].take() {
            b.give_back(pooled);
        }
    }

    fn buffer(&self, slot: usize) -> &wgpu::Buffer {
        &self.buffers[slot].0
    }

    /// True when no later user took `slot`'s buffer: it holds this slot's gradient after a pass.
    fn still_holds(&self, b: &Builder, slot: usize) -> bool {
        let (buffer, generation) = &self.buffers[slot];
        b.still_holds(buffer, *generation)
    }
}
