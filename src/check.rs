//! GPU against CPU reference: every layer's output, every parameter gradient.
//!
//! The error that matters is relative to a tensor's scale, so each comparison reports the largest
//! absolute difference and that difference divided by the tensor's largest |reference value|.

use crate::error::{Error, Result};
use crate::gpu::Runner;
use crate::model::{LayerPlan, Loss, LossKind};
use crate::reference::{self, Parameters, Real};
use crate::weights::Weights;

/// Largest accepted `max |gpu - cpu| / max |cpu|` for a layer's output.
///
/// GPU and CPU both compute in f32 but sum in different orders (register blocks and FMA on the
/// GPU, a blocked SGEMM on the CPU). Over a reduction of K products, reordering moves a result by
/// about sqrt(K) * 2^-24 of the sum of |products| in the typical case and K * 2^-24 at worst; for
/// AlexNet's largest K (9216, fc1) that is ~6e-6 typical, 5.5e-4 worst, and errors compound over
/// 11 layers. 1e-4 sits an order of magnitude above what the tests measure and far below what any
/// indexing or padding mistake produces (errors of order 1).
pub const TOLERANCE: f32 = 1e-4;

/// Largest accepted `max |gpu - exact| / max |exact|` for a parameter gradient, where the exact
/// gradient is the f64 backward pass through the GPU's own forward activations.
///
/// Why through the GPU's activations: max pooling's gradient goes to each window's maximum, a
/// discontinuous choice. Where two values of a window lie within f32 rounding of each other, the
/// GPU's and an f64 forward pass can pick different maxima, and the one output gradient that then
/// goes to a different input moves conv2's and conv1's weight gradients by up to ~1% of their
/// scale (measured: one such flip in pool2 at batch 2 gave 0.75%; the numerical note in
/// docs/networks.md, 'The seed', sees the same size of gap between frameworks). That is not an
/// error of the backward kernels, so they are judged on the GPU's own routing, where the only
/// differences are f32 rounding in sums of up to ~10^5 products (kept short by the chunked
/// reductions): 1e-4 is ~50x the measured error and far below any wrong tap or lost chunk. The
/// difference from a fully f64 forward and backward is reported beside it, not judged.
pub const GRADIENT_TOLERANCE: f32 = 1e-4;

/// How far one tensor is from its reference.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Deviation {
    /// The tensor's name: a layer's, a parameter's, or `logits`.
    pub name: String,
    /// max |value - reference|
    pub max_abs: f32,
    /// max |reference|: the tensor's scale.
    pub max_reference: f32,
    /// max_abs / max_reference (max_abs itself when the reference is all zeros).
    pub relative: f32,
}

impl Deviation {
    /// True when within `tolerance`.
    pub fn within(&self, tolerance: f32) -> bool {
        self.relative <= tolerance
    }
}

/// Compares a tensor with its reference. NaN anywhere counts as an infinite error. Fails when
/// the two differ in length.
pub fn compare<T: Real>(name: &str, values: &[f32], reference: &[T]) -> Result<Deviation> {
    if values.len() != reference.len() {
        return Err(Error::InvalidArgument(format!(
            "{name}: {} values to compare with a reference of {}",
            values.len(),
            reference.len()
        )));
    }
    let mut max_abs = 0.0f64;
    let mut max_reference = 0.0f64;
    for (&v, &r) in values.iter().zip(reference) {
        let r = r.to_f64().unwrap_or(f64::NAN);
        let diff = (f64::from(v) - r).abs();
        max_abs = if diff.is_nan() {
            f64::INFINITY
        } else {
            max_abs.max(diff)
        };
        max_reference = max_reference.max(r.abs());
    }
    let relative = if max_reference > 0.0 {
        max_abs / max_reference
    } else {
        max_abs
    };
    Ok(Deviation {
        name: name.to_string(),
        max_abs: max_abs as f32,
        max_reference: max_reference as f32,
        relative: relative as f32,
    })
}

/// Runs `input` through the GPU network and through `plan` with `weights` on the f32 CPU
/// reference, and compares every GPU layer with the reference layer of the same name. The GPU
/// may run a transformed plan (batch norms folded into convolutions, see [`crate::fold`]): a
/// folded layer carries its batch norm's name, and the convolution it absorbed has no output to
/// compare. Fails when `plan` lacks a layer of the GPU's, `weights` do not fit `plan`, or `input`
/// is not a batch of the plan's images.
pub fn forward(
    net: &dyn Runner,
    plan: &[LayerPlan],
    weights: &Weights,
    input: &[f32],
) -> Result<Vec<Deviation>> {
    net.upload_input(input)?;
    net.forward()?;
    let cpu = reference::forward(plan, &Parameters::<f32>::from_weights(weights), input)?;
    let mut deviations = Vec::new();
    for (i, layer) in net.plan().iter().enumerate() {
        let name = &layer.layer.name;
        let reference = plan
            .iter()
            .position(|l| l.layer.name == *name)
            .ok_or_else(|| Error::InvalidArgument(format!("the reference has no layer {name}")))?;
        deviations.push(compare(name, &net.read_layer(i)?, &cpu[reference])?);
    }
    Ok(deviations)
}

/// Runs `input` through a GPU network built with gradients (a training forward pass: batch
/// norms normalise by the batch's statistics) and compares every layer with the f64 reference
/// of that layer computed from the GPU's own inputs to it, so that each kernel is judged alone.
///
/// Why not a whole f32 reference pass, as [`forward`] compares with: a batch norm in training
/// mode over few values per channel (batch 2 at 64x64 leaves GoogLeNet's last stage 2x2, 8
/// values) divides by a standard deviation computed from those values, and amplifies the
/// rounding differences that earlier layers left; two f32 passes (GPU and CPU, or CPU and
/// PyTorch) then differ by up to ~1e-3 there without either being wrong. Through the GPU's own
/// inputs the only differences are this layer's rounding. Fails as [`forward`] does.
pub fn training_forward(
    net: &dyn Runner,
    weights: &Weights,
    input: &[f32],
) -> Result<Vec<Deviation>> {
    each_layer(net, weights, input, reference::layer_training_forward)
}

/// Largest accepted `max |gpu - exact| / max |exact|` for a layer's output when the network
/// stores its activations and weight matrices as f16, where the exact output is the f64
/// reference of that layer from the GPU's own (f16) inputs and the f32 weights.
///
/// What f16 storage costs one layer: each weight rounded to 11 significant bits (relative error
/// up to 2^-11 = 4.9e-4, independent from weight to weight, so a sum of K products moves by
/// about 2^-11 * sqrt(K) of its terms' root-mean-square, well below its scale), and the output
/// rounded once as it is stored (up to 2^-11 of the value, so of the tensor's scale; WGSL does
/// not promise round-to-nearest for f32 to f16, so up to 2^-10 where a driver truncates). The
/// products accumulate in f32 (2^-24). AlexNet's layers measure 3.6e-4 to 4.7e-4; 2e-3 is 4x
/// the round-to-nearest bound, 2x truncation's, and a wrong index or a value read as the wrong
/// type errs by order 1. A value beyond f16's range (65504) would be stored as infinity and fail
/// here as an infinite error. The error of the whole network against an f32 pass, where
/// the layers' errors compound, is reported beside it (docs/results.md#half-precision-storage).
pub const F16_TOLERANCE: f32 = 2e-3;

/// Runs `input` through a GPU network at inference (its input rounded as the network stores it)
/// and compares every layer with the f64 reference of that layer computed from the GPU's own
/// inputs to it, so that each layer's kernels and storage are judged alone, as
/// [`training_forward`] does in training mode. Fails as [`forward`] does.
pub fn forward_layer_by_layer(
    net: &dyn Runner,
    weights: &Weights,
    input: &[f32],
) -> Result<Vec<Deviation>> {
    each_layer(net, weights, input, reference::layer_forward_from)
}

/// One layer of the f64 reference from the network's input and the earlier layers' outputs
/// (`reference::layer_forward_from`, `reference::layer_training_forward`).
type LayerReference = fn(&LayerPlan, &[f64], &[Vec<f64>], &Parameters<f64>) -> Result<Vec<f64>>;

/// The GPU's output of every layer against `layer_reference` of that layer, in f64, from the
/// GPU's outputs of the layers before it.
fn each_layer(
    net: &dyn Runner,
    weights: &Weights,
    input: &[f32],
    layer_reference: LayerReference,
) -> Result<Vec<Deviation>> {
    net.upload_input(input)?;
    net.forward()?;
    let plan = net.plan();
    let to_f64 = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    let gpu = (0..plan.len())
        .map(|i| net.read_layer(i))
        .collect::<Result<Vec<_>>>()?;
    let gpu_f64: Vec<Vec<f64>> = gpu.iter().map(|v| to_f64(v)).collect();
    let x = to_f64(&net.stored_input(input));
    let params = Parameters::<f64>::from_weights(weights);
    plan.iter()
        .enumerate()
        .map(|(i, layer)| {
            let reference = layer_reference(layer, &x, &gpu_f64, &params)?;
            compare(&layer.layer.name, &gpu[i], &reference)
        })
        .collect()
}

/// One parameter gradient, measured against f64 references.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GradientCheck {
    /// The GPU against the f64 backward pass through the GPU's forward activations (judged).
    pub gpu: Deviation,
    /// The GPU against a fully f64 forward and backward pass (reported).
    pub gpu_vs_f64_chain: Deviation,
    /// The f32 CPU reference against the fully f64 pass (reported, for scale).
    pub cpu_f32_vs_f64_chain: Deviation,
}

/// Runs a forward-backward pass on the GPU (a network built with gradients of that loss) and
/// compares every parameter gradient of `l2_loss(logits)` (plus 0.3 x each auxiliary head's,
/// where the network has them: GoogLeNet's) with the f64 references. Fails when `weights` do
/// not fit the network's plan or `input` is not a batch of its images.
pub fn gradients(net: &dyn Runner, weights: &Weights, input: &[f32]) -> Result<Vec<GradientCheck>> {
    let loss = Loss::with_aux_heads(LossKind::L2, net.plan());
    gradients_of(net, weights, input, (&loss, None))
}

/// As [`gradients`], for the `loss` the network was built with (for cross-entropy, `labels`,
/// which the caller has uploaded to the network too).
pub fn gradients_of(
    net: &dyn Runner,
    weights: &Weights,
    input: &[f32],
    (loss, labels): (&Loss, Option<&[usize]>),
) -> Result<Vec<GradientCheck>> {
    net.upload_input(input)?;
    net.forward_backward()?;
    let gpu = net.read_gradients()?;
    let plan = net.plan();
    let to_f64 = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    let gpu_outputs = (0..plan.len())
        .map(|i| Ok(to_f64(&net.read_layer(i)?)))
        .collect::<Result<Vec<_>>>()?;
    // The routed reference reads what the GPU's kernels read: under f16 storage, the input and
    // weight matrices rounded to f16 (its gradients are f32 from there on).
    let params = Parameters::<f64>::from_weights(&net.stored_weights(weights));
    let x = to_f64(&net.stored_input(input));
    let (_, heads) = reference::loss(loss, plan, &gpu_outputs, labels)?;
    let routed = reference::backward_through(plan, &params, &x, &gpu_outputs, &heads)?;
    let chain = reference_gradients::<f64>(plan, weights, input, (loss, labels))?;
    let single = reference_gradients::<f32>(plan, weights, input, (loss, labels))?;
    routed
        .iter()
        .zip(&chain)
        .zip(&single)
        .map(|(((name, routed), (_, chain)), (_, single))| {
            let got = &gpu
                .get(name)
                .ok_or_else(|| Error::Internal(format!("the GPU computed no gradient of {name}")))?
                .data;
            Ok(GradientCheck {
                gpu: compare(name, got, routed)?,
                gpu_vs_f64_chain: compare(name, got, chain)?,
                cpu_f32_vs_f64_chain: compare(name, single, chain)?,
            })
        })
        .collect()
}

/// The CPU reference's gradients of `loss`, forward (in training mode: batch norms by their
/// batch statistics) and backward in the float type `T`. Fails as [`reference::forward`] and
/// [`reference::loss`] do.
pub fn reference_gradients<T: Real>(
    plan: &[LayerPlan],
    weights: &Weights,
    input: &[f32],
    (loss, labels): (&Loss, Option<&[usize]>),
) -> Result<Vec<(String, Vec<T>)>> {
    let params = Parameters::<T>::from_weights(weights);
    let x: Vec<T> = input.iter().map(|&v| T::from_f32(v)).collect();
    let forward = reference::forward_training(plan, &params, &x)?;
    let (_, heads) = reference::loss(loss, plan, &forward.outputs, labels)?;
    reference::backward_through(plan, &params, &x, &forward.outputs, &heads)
}

/// Runs the two-device network and the same layout on one device (`ctx`) from the same weights
/// and input, forward and backward, and compares the logits and every gradient. Both compute
/// in f32 with the same kernels; only the split of the work differs.
pub fn one_device_versus_two(
    ctx: &crate::gpu::GpuContext,
    two: &crate::gpu::TwoDeviceNetwork,
    weights: &Weights,
    input: &[f32],
) -> Result<Vec<Deviation>> {
    let one = crate::gpu::GpuNetwork::with_gradients(ctx, two.plan(), weights)?;
    let mut deviations = Vec::new();
    for net in [&one as &dyn Runner, two] {
        net.upload_input(input)?;
        net.forward_backward()?;
    }
    let last = two
        .plan()
        .len()
        .checked_sub(1)
        .ok_or_else(|| Error::Internal("a two-device network without layers".into()))?;
    let logits_one = Runner::read_layer(&one, last)?;
    deviations.push(compare("logits", &two.read_layer(last)?, &logits_one)?);
    let grads_one = Runner::read_gradients(&one)?;
    for (name, tensor) in two.read_gradients()?.iter() {
        let reference = &grads_one
            .get(name)
            .ok_or_else(|| Error::Internal(format!("one device computed no gradient of {name}")))?
            .data;
        deviations.push(compare(name, &tensor.data, reference)?);
    }
    Ok(deviations)
}

/// Largest accepted `max |a - b| / max |b|` between data-parallel gradients and one device's
/// (the 1e-5): the same kernels on the same values, so only the order of the f32 sums
/// differs (the shards' weighted sum, and one device's reduction over the whole batch against
/// the shards' over theirs), measured ~1e-7; a lost bucket, a wrong weight or a replica's stale
/// gradient is off by its whole size.
pub const DATA_PARALLEL_TOLERANCE: f32 = 1e-5;

/// As [`DATA_PARALLEL_TOLERANCE`], for a network whose batch norms are synchronised across the
/// replicas against one device's over the whole batch: each batch norm's statistics and
/// backward sums are then each shard's f32 sums combined on the host rather than one sum over
/// the batch, and a batch norm over few values per channel amplifies that rounding (ResNet-18 at
/// 32x32, batch 7 over 2 replicas, leaves layer4 one value per image: measured up to 1.7e-5).
/// The f64 backward pass's tolerance ([`GRADIENT_TOLERANCE`]) still catches an unsynchronised
/// statistic (off by 10-1000x the tensor's scale, measured) or a sum weighted wrong.
pub const SYNCED_BATCH_NORM_TOLERANCE: f32 = GRADIENT_TOLERANCE;

/// `convnet check --parallel data`: the all-reduced gradients against what they must be.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DataParallelCheck {
    /// Images per replica, over every rank.
    pub shards: Vec<usize>,
    /// Whether the network has batch norms (then its replicas normalise by their own shards,
    /// unless synchronised).
    pub batch_norms: bool,
    /// Whether its batch norms were synchronised across the replicas (as one device's).
    pub synced_batch_norms: bool,
    /// The all-reduced gradients against each shard's gradients computed on device 0 alone,
    /// weighted by the shard's share of the loss and summed in f64: the all-reduce itself
    /// (empty with synchronised batch norms, whose shards are not computed alone).
    pub against_shards: Vec<Deviation>,
    /// The all-reduced gradients against one device's over the whole batch: the same gradient up
    /// to rounding without batch norms; with them a different computation, not judged.
    pub against_one_device: Vec<Deviation>,
    /// After one SGD step from the all-reduced gradients, the first replica whose weights
    /// differ from replica 0's (bit for bit), if any.
    pub replicas_apart_after_step: Option<String>,
}

/// Runs `input` (the whole batch) through replicas of `network` on `contexts` (this rank's, of
/// `world`'s where given) with the seed's `l2_loss` (their buckets and all-reduce set by
/// `configure`), all-reduces, and compares the gradients with each shard's (every rank's) on
/// device 0 alone and with one device's over the whole batch; then takes one SGD step and
/// compares the replicas. Every rank computes the same comparisons.
pub fn data_parallel<'a>(
    (world, contexts): (
        Option<&'a crate::distributed::World>,
        &[&'a crate::gpu::GpuContext],
    ),
    network: &crate::model::Network,
    weights: &Weights,
    (input, sync_batch_norm): (&[f32], bool),
    configure: impl Fn(&mut crate::gpu::DataParallel),
) -> Result<DataParallelCheck> {
    use crate::gpu::DataParallel;
    let per_image = network.input.len();
    let batch = input.len() / per_image;
    // One device's gradients of `images` (the first image's index and the count).
    let one_device = |first: usize, images: usize| -> Result<Weights> {
        let one = DataParallel::new(&contexts[..1], network, images, weights, LossKind::L2)?;
        one.upload(
            &input[first * per_image..(first + images) * per_image],
            None,
        )?;
        one.gradients()?;
        one.read_gradients()
    };
    let kind = (LossKind::L2, sync_batch_norm);
    let mut replicas = DataParallel::over_ranks(world, contexts, network, batch, weights, kind)?;
    configure(&mut replicas);
    replicas.upload(input, None)?;
    replicas.gradients()?;
    let reduced = replicas.read_gradients()?;
    // The seed's l2_loss is a sum over the batch: each shard's gradient counts once.
    let mut summed: Vec<Vec<f64>> = reduced
        .iter()
        .map(|(_, t)| vec![0.0; t.data.len()])
        .collect();
    let shards = crate::gpu::shards(batch, replicas.replicas_in_all())?;
    let mut first = 0;
    for &images in &shards {
        for (sum, (_, tensor)) in summed.iter_mut().zip(one_device(first, images)?.iter()) {
            for (s, &g) in sum.iter_mut().zip(&tensor.data) {
                *s += f64::from(g);
            }
        }
        first += images;
    }
    let whole = one_device(0, batch)?;
    let batch_norms = (network.plan(1)?.iter())
        .any(|l| matches!(l.layer.kind, crate::model::LayerKind::BatchNorm { .. }));
    // Synchronised batch norms normalise every shard by the whole batch: a shard alone on one
    // device is another computation.
    let shards_alone = !(sync_batch_norm && batch_norms);
    let mut against_shards = Vec::new();
    let mut against_one_device = Vec::new();
    for (((name, tensor), sum), (_, one)) in reduced.iter().zip(&summed).zip(whole.iter()) {
        if shards_alone {
            against_shards.push(compare(name, &tensor.data, sum)?);
        }
        against_one_device.push(compare(name, &tensor.data, &one.data)?);
    }
    let optimizers = replicas.optimizers(crate::bench::BENCH_SGD)?;
    replicas.step(&optimizers)?;
    let replicas_apart_after_step = match replicas.check_replicas_equal() {
        Ok(()) => None,
        Err(Error::Mismatch(message)) => Some(message),
        Err(other) => return Err(other),
    };
    Ok(DataParallelCheck {
        shards,
        batch_norms,
        against_shards,
        against_one_device,
        replicas_apart_after_step,
        synced_batch_norms: sync_batch_norm,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::model::{small_test_network, Network};
    use crate::weights::Tensor;

    /// A [`Runner`] on the CPU reference: what a GPU network computes, without a GPU.
    struct Cpu {
        plan: Vec<LayerPlan>,
        weights: Weights,
        input: RefCell<Vec<f32>>,
        outputs: RefCell<Vec<Vec<f32>>>,
    }

    impl Runner for Cpu {
        fn plan(&self) -> &[LayerPlan] {
            &self.plan
        }
        fn upload_input(&self, input: &[f32]) -> Result<()> {
            *self.input.borrow_mut() = input.to_vec();
            Ok(())
        }
        fn forward(&self) -> Result<()> {
            let params = Parameters::from_weights(&self.weights);
            *self.outputs.borrow_mut() =
                reference::forward(&self.plan, &params, &self.input.borrow())?;
            Ok(())
        }
        fn forward_backward(&self) -> Result<()> {
            self.forward()
        }
        fn read_layer(&self, index: usize) -> Result<Vec<f32>> {
            Ok(self.outputs.borrow()[index].clone())
        }
        fn read_gradients(&self) -> Result<Weights> {
            let l2 = Loss::main_head(LossKind::L2, &self.plan);
            let input = self.input.borrow();
            let grads = reference_gradients::<f32>(&self.plan, &self.weights, &input, (&l2, None))?;
            let tensors = grads
                .into_iter()
                .map(|(name, data)| {
                    let shape = self.weights.get(&name).unwrap().shape.clone();
                    (name, Tensor { shape, data })
                })
                .collect();
            Ok(Weights::from_tensors(tensors))
        }
    }

    fn cpu(network: &Network) -> Cpu {
        Cpu {
            plan: network.plan(2).unwrap(),
            weights: Weights::init(network, 3).unwrap(),
            input: RefCell::default(),
            outputs: RefCell::default(),
        }
    }

    fn invalid<T: std::fmt::Debug>(result: Result<T>) -> String {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        err.to_string()
    }

    #[test]
    fn compare_refuses_tensors_of_different_lengths() {
        let d = compare("x", &[1.0, 2.0], &[1.0f64, 2.5]).unwrap();
        assert_eq!((d.max_abs, d.max_reference), (0.5, 2.5));
        assert!(invalid(compare("x", &[1.0], &[1.0f32, 2.0])).contains("x: 1 values"));
    }

    #[test]
    fn forward_refuses_weights_and_input_that_do_not_fit_the_plan() {
        let network = small_test_network(2, 3);
        let net = cpu(&network);
        let input = crate::weights::random_input(&net.plan, 1);
        for d in forward(&net, &net.plan, &net.weights, &input).unwrap() {
            assert_eq!(d.max_abs, 0.0, "{d:?}");
        }
        let other = Weights::init(&small_test_network(4, 3), 3).unwrap();
        invalid(forward(&net, &net.plan, &other, &input));
        invalid(forward(&net, &net.plan, &net.weights, &input[1..]));
        invalid(forward(&net, &net.plan[..1], &net.weights, &input));
    }

    #[test]
    fn gradients_refuse_weights_and_input_that_do_not_fit_the_plan() {
        let network = small_test_network(2, 3);
        let net = cpu(&network);
        let input = crate::weights::random_input(&net.plan, 1);
        let report = gradients(&net, &net.weights, &input).unwrap();
        assert_eq!(report.len(), 4);
        assert!(report.iter().all(|g| g.gpu.within(GRADIENT_TOLERANCE)));
        let other = Weights::init(&small_test_network(4, 3), 3).unwrap();
        invalid(gradients(&net, &other, &input));
    }

    #[test]
    fn reference_gradients_refuse_weights_and_input_that_do_not_fit() {
        let network = small_test_network(2, 3);
        let plan = network.plan(2).unwrap();
        let weights = Weights::init(&network, 3).unwrap();
        let input = crate::weights::random_input(&plan, 1);
        let l2 = Loss::main_head(LossKind::L2, &plan);
        let grads = reference_gradients::<f64>(&plan, &weights, &input, (&l2, None));
        assert_eq!(grads.unwrap().len(), 4);
        let other = Weights::init(&small_test_network(4, 3), 3).unwrap();
        invalid(reference_gradients::<f64>(
            &plan,
            &other,
            &input,
            (&l2, None),
        ));
        invalid(reference_gradients::<f64>(
            &plan,
            &weights,
            &input[2..],
            (&l2, None),
        ));
        // Cross-entropy without labels, or with a label past the 3 classes.
        let ce = Loss::main_head(LossKind::CrossEntropy, &plan);
        invalid(reference_gradients::<f64>(
            &plan,
            &weights,
            &input,
            (&ce, None),
        ));
        invalid(reference_gradients::<f64>(
            &plan,
            &weights,
            &input,
            (&ce, Some(&[0, 3])),
        ));
    }
}
