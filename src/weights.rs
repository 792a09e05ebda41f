//! A network's parameters: initialisation from a random seed, safetensors files, and the random
//! input.
//!
//! Names and layouts are PyTorch's, so a `state_dict` exported with safetensors loads unchanged:
//! `conv1.weight` `[out, in/groups, kh, kw]`, `conv1.bias` `[out]`, `fc1.weight` `[out, in]` with
//! `in` in (C, H, W) order, `fc1.bias` `[out]`.
//!
//! Batch norms add their running statistics (`running_mean`, `running_var`: buffers, not
//! parameters, but needed at inference); a `num_batches_tracked` counter in the file is accepted
//! and ignored, as inference never reads it.
//!
//! The AlexNets are initialised as the AlexNet script of the 2017 blog post does
//! (docs/networks.md, 'The seed'), [`Init::TruncatedNormal`]: weights from a truncated normal
//! (stddev 0.1, values beyond two standard deviations redrawn, as `tf.truncated_normal`),
//! convolution biases 0, fully connected biases 0.1. The deeper networks would overflow f32 with
//! that, so they follow torchvision's scaling ([`Init::Torchvision`]). Input images are normal with
//! stddev 0.1. Every tensor draws from its own ChaCha8 stream of the random seed, so a tensor's
//! values do not depend on the batch size or on the other tensors.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::files;
use crate::model::{Init, LayerKind, LayerPlan, Network};

/// One parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The dimensions in PyTorch's layout, outermost first.
    pub shape: Vec<usize>,
    /// The values in C order: `shape`'s product of them.
    pub data: Vec<f32>,
}

/// All parameter tensors of a network, in the network's order, each with the shape the network
/// expects (checked when loading).
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    tensors: Vec<(String, Tensor)>,
}

const WEIGHT_STDDEV: f64 = 0.1;
const INPUT_STDDEV: f64 = 0.1;
const FC_BIAS: f32 = 0.1;
/// The input's stream; parameter tensor `i` uses stream `i + 1`.
const INPUT_STREAM: u64 = 0;

fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

fn truncated_normal(rng: &mut ChaCha8Rng, stddev: f64) -> f32 {
    loop {
        let x: f64 = rng.sample(StandardNormal);
        if x.abs() <= 2.0 {
            return (x * stddev) as f32;
        }
    }
}

/// What a tensor is to its layer, which decides how it is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    /// A convolution's weight, with its fan-out (out channels x kernel area).
    ConvWeight {
        fan_out: usize,
    },
    LinearWeight,
    ConvBias,
    LinearBias,
    NormWeight,
    NormBias,
    NormMean,
    NormVariance,
}

/// The tensors a network's weights file holds, in order: name, shape, role.
fn expected_shapes(network: &Network) -> Result<Vec<(String, Vec<usize>, Role)>> {
    plan_shapes(&network.plan(1)?)
}

/// The tensors a plan's layers read, in order: name, shape, role.
fn plan_shapes(plan: &[LayerPlan]) -> Result<Vec<(String, Vec<usize>, Role)>> {
    let mut expected = Vec::new();
    for layer in plan {
        let shapes = layer
            .parameter_shapes()
            .into_iter()
            .chain(layer.buffer_shapes());
        for (i, (name, shape)) in shapes.enumerate() {
            let role = match (&layer.layer.kind, i) {
                (LayerKind::Conv2d { .. }, 0) => Role::ConvWeight {
                    fan_out: shape[0] * shape[2] * shape[3],
                },
                (LayerKind::Conv2d { .. }, _) => Role::ConvBias,
                (LayerKind::Linear { .. }, 0) => Role::LinearWeight,
                (LayerKind::Linear { .. }, _) => Role::LinearBias,
                (LayerKind::BatchNorm { .. }, 0) => Role::NormWeight,
                (LayerKind::BatchNorm { .. }, 1) => Role::NormBias,
                (LayerKind::BatchNorm { .. }, 2) => Role::NormMean,
                (LayerKind::BatchNorm { .. }, _) => Role::NormVariance,
                (kind, _) => {
                    return Err(Error::Internal(format!(
                        "layer {}: a {kind:?} layer has a tensor {name}",
                        layer.layer.name
                    )))
                }
            };
            expected.push((name, shape, role));
        }
    }
    Ok(expected)
}

/// One value of a tensor with `role` under `init`.
fn draw(init: Init, role: Role, rng: &mut ChaCha8Rng) -> f32 {
    let normal = |rng: &mut ChaCha8Rng, stddev: f64| {
        let x: f64 = rng.sample(StandardNormal);
        (x * stddev) as f32
    };
    match (init, role) {
        (Init::TruncatedNormal, Role::ConvWeight { .. } | Role::LinearWeight) => {
            truncated_normal(rng, WEIGHT_STDDEV)
        }
        (Init::TruncatedNormal, Role::LinearBias) => FC_BIAS,
        (Init::Torchvision, Role::ConvWeight { fan_out }) => {
            normal(rng, (2.0 / fan_out as f64).sqrt())
        }
        (Init::Torchvision, Role::LinearWeight) => normal(rng, 0.01),
        (_, Role::ConvBias | Role::LinearBias) => 0.0,
        // Away from the identity (1, 0, 0, 1), so that a check exercises every statistic.
        (_, Role::NormWeight) => rng.random_range(0.5..1.5),
        (_, Role::NormBias | Role::NormMean) => normal(rng, 0.1),
        (_, Role::NormVariance) => rng.random_range(0.5..1.5),
    }
}

/// PyTorch's batch-norm counter: in torchvision's files, never read at inference.
const BATCH_COUNTER: &str = ".num_batches_tracked";

impl Weights {
    /// Draws the network's parameters with its initialisation ([`Network::init`]), reproducible
    /// from the random `seed`.
    pub fn init(network: &Network, seed: u64) -> Result<Self> {
        let tensors = expected_shapes(network)?
            .into_iter()
            .enumerate()
            .map(|(i, (name, shape, role))| {
                let mut rng = rng(seed, i as u64 + 1);
                let data = (0..shape.iter().product())
                    .map(|_| draw(network.init, role, &mut rng))
                    .collect();
                (name, Tensor { shape, data })
            })
            .collect();
        Ok(Weights { tensors })
    }

    /// Tensors already checked against their network (gradients read back from the GPU).
    pub(crate) fn from_tensors(tensors: Vec<(String, Tensor)>) -> Self {
        Weights { tensors }
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Mutable access to the tensor called `name`.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Tensor> {
        self.tensors
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
    }

    /// The values of tensor `{layer}.{suffix}`, or an error naming it when there is none.
    pub fn tensor(&self, layer: &str, suffix: &str) -> Result<&[f32]> {
        let name = format!("{layer}.{suffix}");
        self.get(&name)
            .map(|t| t.data.as_slice())
            .ok_or_else(|| Error::InvalidArgument(format!("the weights hold no tensor {name}")))
    }

    /// Checks that these weights hold every tensor `plan`'s layers read, with the shape they
    /// expect and as many values as the shape says. Tensors the plan does not read are allowed.
    pub fn check_against(&self, plan: &[LayerPlan]) -> Result<()> {
        for (name, shape, _) in plan_shapes(plan)? {
            let tensor = self.get(&name).ok_or_else(|| {
                Error::InvalidArgument(format!("the weights hold no tensor {name}"))
            })?;
            if tensor.shape != shape || tensor.data.len() != shape.iter().product::<usize>() {
                return Err(Error::InvalidArgument(format!(
                    "tensor {name} has shape {:?} and {} values, the layer expects shape {shape:?}",
                    tensor.shape,
                    tensor.data.len()
                )));
            }
        }
        Ok(())
    }

    /// The parameters of `part`, a piece of this weights' network on one device: every tensor
    /// whose first dimension `part` halves contributes rows `device * half .. (device + 1) * half`
    /// (a tower's output channels or features), the others come whole. Fails, naming the tensor,
    /// where a tensor is missing, its other dimensions differ from `part`'s, or `device`'s rows
    /// lie past its end.
    pub fn slice_for(&self, part: &Network, device: usize) -> Result<Weights> {
        let tensors = expected_shapes(part)?
            .into_iter()
            .map(|(name, shape, _)| {
                let full = self.get(&name).ok_or_else(|| {
                    Error::InvalidArgument(format!("no tensor {name} to slice for {}", part.name))
                })?;
                let bad = || {
                    Error::InvalidArgument(format!(
                        "tensor {name} of shape {:?} ({} values) holds no device {device}'s \
                         slice of shape {shape:?} for {}",
                        full.shape,
                        full.data.len(),
                        part.name
                    ))
                };
                let (Some(&full_rows), Some(&rows)) = (full.shape.first(), shape.first()) else {
                    return Err(bad());
                };
                let row: usize = shape[1..].iter().product();
                let start = if rows == full_rows {
                    Some(0)
                } else {
                    device.checked_mul(rows)
                };
                let end = start.and_then(|s| s.checked_add(rows));
                let (Some(start), Some(end)) = (start, end) else {
                    return Err(bad());
                };
                let fits = full.shape[1..] == shape[1..]
                    && full.data.len() == full_rows * row
                    && end <= full_rows;
                if !fits {
                    return Err(bad());
                }
                let data = full.data[start * row..end * row].to_vec();
                Ok((name, Tensor { shape, data }))
            })
            .collect::<Result<_>>()?;
        Ok(Weights { tensors })
    }

    /// The name of the first tensor (in the network's order) holding a NaN or an infinity.
    pub fn first_non_finite(&self) -> Option<&str> {
        self.iter()
            .find(|(_, t)| t.data.iter().any(|v| !v.is_finite()))
            .map(|(name, _)| name)
    }

    /// Tensors in the network's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Loads a safetensors file and checks it against `network`: every expected tensor present
    /// with its exact shape, f32, finite; no tensor the network does not have.
    pub fn load(path: &Path, network: &Network) -> Result<Self> {
        let bytes = files::read(path)?;
        Self::decode(&bytes, network).map_err(|message| Error::file(path, message))
    }

    /// Decodes safetensors bytes for `network` with the checks of [`Weights::load`]; the error
    /// is one line saying what is wrong with them.
    pub fn decode(bytes: &[u8], network: &Network) -> std::result::Result<Self, String> {
        Self::decode_part(bytes, network, network)
    }

    /// Loads the parameters of `part`, a piece of `whole` (VGG's feature layers, for style
    /// transfer), from a file of `whole`'s parameters or of `part`'s alone: every tensor of
    /// `part` present and checked as [`Weights::load`] checks them; `whole`'s others skipped.
    pub fn load_part(path: &Path, part: &Network, whole: &Network) -> Result<Self> {
        let bytes = files::read(path)?;
        Self::decode_part(&bytes, part, whole).map_err(|message| Error::file(path, message))
    }

    fn decode_part(
        bytes: &[u8],
        network: &Network,
        whole: &Network,
    ) -> std::result::Result<Self, String> {
        let file = SafeTensors::deserialize(bytes)
            .map_err(|e| format!("not a valid safetensors file: {e}"))?;
        let expected = expected_shapes(network).map_err(|e| e.to_string())?;
        let allowed = expected_shapes(whole).map_err(|e| e.to_string())?;
        for name in file.names() {
            let counter_of_a_norm = name.strip_suffix(BATCH_COUNTER).is_some_and(|layer| {
                allowed.iter().any(|(n, _, role)| {
                    *role == Role::NormMean && *n == format!("{layer}.running_mean")
                })
            });
            if !counter_of_a_norm && !allowed.iter().any(|(n, _, _)| n == name) {
                // Debug-quoted: a name may hold any character, a newline included.
                return Err(format!(
                    "holds tensor {name:?}, which {} does not have",
                    whole.name
                ));
            }
        }
        let mut tensors = Vec::with_capacity(expected.len());
        for (name, shape, _) in expected {
            let view = file
                .tensor(&name)
                .map_err(|_| format!("tensor '{name}' is missing ({})", network.name))?;
            if view.dtype() != Dtype::F32 {
                return Err(format!(
                    "tensor '{name}' is {:?}, expected F32",
                    view.dtype()
                ));
            }
            if view.shape() != shape.as_slice() {
                return Err(format!(
                    "tensor '{name}' has shape {:?}, {} expects {:?}",
                    view.shape(),
                    network.name,
                    shape
                ));
            }
            let data: Vec<f32> = crate::npy::f32_values(view.data()).collect();
            let bad = data.iter().filter(|v| !v.is_finite()).count();
            if bad > 0 {
                return Err(format!(
                    "tensor '{name}' holds {bad} NaN or infinite values"
                ));
            }
            tensors.push((name, Tensor { shape, data }));
        }
        Ok(Weights { tensors })
    }

    /// Writes the tensors as a safetensors file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<(&str, &Tensor)> = self.iter().collect();
        save_safetensors(path, &tensors, None)
    }
}

/// Writes named f32 tensors (and string `metadata`) as a safetensors file, atomically: the
/// weights' files and training checkpoints.
pub(crate) fn save_safetensors(
    path: &Path,
    tensors: &[(&str, &Tensor)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|&(name, t)| {
            let view = safetensors::tensor::TensorView::new(
                Dtype::F32,
                t.shape.clone(),
                bytemuck::cast_slice(&t.data),
            )
            .map_err(|e| Error::file(path, format!("tensor '{name}': {e}")))?;
            Ok((name, view))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::tensor::serialize(views, metadata)
        .map_err(|e| Error::file(path, format!("cannot encode safetensors: {e}")))?;
    files::write_atomically(path, &bytes)
}

/// Random input images for a plan, as the post's benchmark feeds them: `[batch, C, H, W]`,
/// normal with stddev 0.1, reproducible from the random `seed`.
///
/// An empty plan has no input, and gets none.
pub fn random_input(plan: &[LayerPlan], seed: u64) -> Vec<f32> {
    let Some(first) = plan.first() else {
        return Vec::new();
    };
    let mut rng = rng(seed, INPUT_STREAM);
    (0..first.batch * first.input.len())
        .map(|_| {
            let x: f64 = rng.sample(StandardNormal);
            (x * INPUT_STDDEV) as f32
        })
        .collect()
}

/// Reads a `.npy` input and checks it is `[N, C, H, W]` for the network, finite.
/// Returns the batch size and the data.
pub fn load_input(path: &Path, network: &Network) -> Result<(usize, Vec<f32>)> {
    let array = crate::npy::read(path)?;
    let d = network.input;
    let expected_tail = [d.channels, d.height, d.width];
    if array.shape.len() != 4 || array.shape[1..] != expected_tail || array.shape[0] == 0 {
        return Err(Error::file(
            path,
            format!(
                "input has shape {:?}, {} expects [N, {}, {}, {}] with N >= 1",
                array.shape, network.name, d.channels, d.height, d.width
            ),
        ));
    }
    let bad = array.data.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(Error::file(
            path,
            format!("input holds {bad} NaN or infinite values"),
        ));
    }
    Ok((array.shape[0], array.data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::small_test_network;

    #[test]
    fn tensor_names_a_missing_tensor() {
        let weights = Weights::init(&small_test_network(4, 4), 1).unwrap();
        assert_eq!(weights.tensor("conv1", "bias").unwrap().len(), 4);
        let err = weights.tensor("conv9", "weight").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("conv9.weight"), "{err}");
    }

    #[test]
    fn check_against_names_a_missing_or_misshapen_tensor() {
        let network = small_test_network(4, 4);
        let plan = network.plan(1).unwrap();
        let mut weights = Weights::init(&network, 1).unwrap();
        weights.check_against(&plan).unwrap();
        weights.get_mut("fc1.bias").unwrap().data.pop();
        let err = weights.check_against(&plan).unwrap_err();
        assert!(err.to_string().contains("fc1.bias"), "{err}");
        let other = Weights::init(
            &crate::model::by_name("vgg11")
                .unwrap()
                .whole(
                    &crate::model::Segment {
                        layers: 0..1,
                        split: false,
                    },
                    network.input,
                )
                .unwrap(),
            1,
        )
        .unwrap();
        let err = other.check_against(&plan).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn slice_for_refuses_a_device_past_the_halves_and_foreign_weights() {
        let network = small_test_network(4, 4);
        let segments = network.towers.as_ref().unwrap().segments(2).unwrap();
        let part = network.tower(&segments[0], network.input).unwrap();
        let weights = Weights::init(&network, 1).unwrap();
        let second = weights.slice_for(&part, 1).unwrap();
        assert_eq!(
            second.tensor("conv1", "bias").unwrap(),
            &weights.tensor("conv1", "bias").unwrap()[2..]
        );
        for device in [2, usize::MAX] {
            let err = weights.slice_for(&part, device).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
            assert!(err.to_string().contains("conv1.weight"), "{err}");
        }
        let mut misshapen = weights.clone();
        misshapen.get_mut("conv1.weight").unwrap().shape = vec![4, 2, 3, 2];
        assert!(misshapen.slice_for(&part, 0).is_err());
        let mut empty = weights;
        empty.get_mut("conv1.weight").unwrap().shape = Vec::new();
        assert!(empty.slice_for(&part, 0).is_err());
    }

    #[test]
    fn random_input_of_an_empty_plan_is_empty() {
        assert!(random_input(&[], 1).is_empty());
        let plan = small_test_network(4, 4).plan(3).unwrap();
        assert_eq!(random_input(&plan, 1).len(), 3 * 2 * 4 * 4);
    }
}
