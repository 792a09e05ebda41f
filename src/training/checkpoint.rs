//! A training run's checkpoint: everything a resumed run needs to continue bit for bit as if it
//! had never stopped, in one safetensors file written atomically.
//!
//! - `param/<name>`: the parameters and batch-norm running statistics, torchvision's names;
//! - `momentum/<name>`: SGD's velocities (PyTorch's `momentum_buffer`), the parameters' names;
//! - metadata `convnet.run`: the settings and the progress (epoch, step, every finished epoch's
//!   scores) as JSON; `convnet.crc32`: a CRC-32 of that JSON and of every tensor's name, shape
//!   and bytes, so that a truncated or altered file is refused, not trained from.
//!
//! There is no random generator state to save: an epoch's order is drawn from the seed and the
//! epoch's number alone (see `data::epoch_order`).

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gpu::Precision;
use crate::model::LayerPlan;
use crate::weights::{Tensor, Weights};

const RUN_KEY: &str = "convnet.run";
const CRC_KEY: &str = "convnet.crc32";
const FORMAT_KEY: &str = "convnet.checkpoint";
/// The checkpoint format's version: a checkpoint of another is refused as such.
const FORMAT: &str = "1";
const PARAM_PREFIX: &str = "param/";
const MOMENTUM_PREFIX: &str = "momentum/";

/// What a run was started with; a resumed run must match it (or be forced).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The network: its name, classes and input size, as `convnet train` describes them.
    pub model: String,
    /// Images per step.
    pub batch: usize,
    /// Epochs of the whole run.
    pub epochs: usize,
    /// The base learning rate (the schedule scales it per epoch).
    pub learning_rate: f32,
    /// SGD's momentum.
    pub momentum: f32,
    /// SGD's weight decay (added to the gradient).
    pub weight_decay: f32,
    /// As `--lr-schedule` writes it.
    pub schedule: String,
    /// Draws the epochs' orders and the held-out split (and the initial weights, where no
    /// file gives them).
    pub seed: u64,
    /// Whether an epoch drops its last, smaller batch.
    pub drop_last: bool,
    /// Images trained on per epoch.
    pub training_images: usize,
    /// 8-bit images' normalisation: per channel mean and standard deviation (empty for f32
    /// images).
    pub mean: Vec<f32>,
    /// See `mean`.
    pub std: Vec<f32>,
    /// How the network stored its activations and weights (`--precision`); f32 in checkpoints
    /// written before it was recorded.
    #[serde(default)]
    pub precision: Precision,
}

impl Settings {
    /// Each setting of this (a checkpoint's) that differs from `other`'s (a run's now), as
    /// `name: X in the checkpoint, Y now`.
    pub fn differences(&self, other: &Settings) -> Vec<String> {
        let mine = serde_json::to_value(self).unwrap_or_default();
        let theirs = serde_json::to_value(other).unwrap_or_default();
        let (Some(mine), Some(theirs)) = (mine.as_object(), theirs.as_object()) else {
            return vec!["settings".into()];
        };
        mine.iter()
            .filter(|(k, v)| theirs.get(*k) != Some(v))
            .map(|(k, v)| {
                let other = theirs.get(k).map_or("none".into(), ToString::to_string);
                format!("{k}: {v} in the checkpoint, {other} now")
            })
            .collect()
    }
}

/// One finished epoch's scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Counted from 0.
    pub epoch: usize,
    /// The epoch's learning rate.
    pub learning_rate: f32,
    /// Mean training loss over the epoch's images (each step's loss, weighted by its images),
    /// taken as the steps ran: the weights change during the epoch.
    pub train_loss: f64,
    /// The fraction of the epoch's images whose label had the highest logit when its step ran.
    pub train_top1: f64,
    /// The held-out set's scores after the epoch (inference mode), where there is one.
    pub validation: Option<Scores>,
    /// Seconds of the epoch's steps (uploads, passes and loss readbacks, not validation).
    pub seconds: f64,
    /// Training images per second over the epoch's steps.
    pub images_per_s: f64,
    /// Host seconds spent gathering and uploading batches (overlapped with the GPU's steps).
    pub input_seconds: f64,
    /// An upper bound on the seconds the GPU sat idle for want of input: the input time of
    /// the steps whose predecessor had finished before the host submitted them.
    pub gpu_idle_for_input_at_most_seconds: f64,
}

/// What the steps of the epoch running have added up to so far: kept in the checkpoint, so
/// that a resumed epoch's record covers all its steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochTotals {
    /// Sum over the steps of the loss times the step's images.
    pub loss_sum: f64,
    /// Images whose label had the highest logit.
    pub correct: usize,
    /// Images trained on.
    pub images: usize,
    /// Seconds of the steps.
    pub seconds: f64,
    /// See [`EpochRecord::input_seconds`].
    pub input_seconds: f64,
    /// See [`EpochRecord::gpu_idle_for_input_at_most_seconds`].
    pub idle_seconds: f64,
}

/// A held-out set's loss and accuracy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Mean softmax cross-entropy.
    pub loss: f64,
    /// Fraction whose label has the highest logit.
    pub top1: f64,
    /// Fraction whose label is among the five highest logits.
    pub top5: f64,
}

/// How far a run has come.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The epoch running (or next to run), counted from 0.
    pub epoch: usize,
    /// Steps of that epoch already taken.
    pub step_in_epoch: usize,
    /// Steps taken over the whole run.
    pub global_step: usize,
    /// Every finished epoch.
    pub history: Vec<EpochRecord>,
    /// The running epoch's totals over its steps taken.
    pub epoch_totals: EpochTotals,
}

/// The run's settings and progress, as the metadata holds them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Run {
    settings: Settings,
    progress: Progress,
}

/// A run's state between two steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// What the run was started with.
    pub settings: Settings,
    /// How far it came.
    pub progress: Progress,
    /// Parameters and running statistics.
    pub weights: Weights,
    /// SGD's velocities, named as the parameters.
    pub velocities: Weights,
}

impl Checkpoint {
    /// Writes the checkpoint atomically: a crash or Ctrl-C while writing leaves the previous
    /// one whole.
    pub fn save(&self, path: &Path) -> Result<()> {
        let run = serde_json::to_string(&Run {
            settings: self.settings.clone(),
            progress: self.progress.clone(),
        })
        .map_err(|e| Error::Internal(format!("cannot encode the run's state: {e}")))?;
        let tensors: Vec<(String, &Tensor)> = (self.weights.iter())
            .map(|(n, t)| (format!("{PARAM_PREFIX}{n}"), t))
            .chain((self.velocities.iter()).map(|(n, t)| (format!("{MOMENTUM_PREFIX}{n}"), t)))
            .collect();
        let crc = checksum(&run, tensors.iter().map(|(n, t)| (n.as_str(), *t)));
        let metadata = HashMap::from([
            (FORMAT_KEY.to_string(), FORMAT.to_string()),
            (RUN_KEY.to_string(), run),
            (CRC_KEY.to_string(), format!("{crc:08x}")),
        ]);
        let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        crate::weights::save_safetensors(path, &named, Some(metadata))
    }

    /// Reads a checkpoint written by [`Checkpoint::save`] for the network `plan` runs: refused,
    /// with one line saying why, when it is not one, its checksum does not match, or its
    /// tensors are not `plan`'s.
    pub fn load(path: &Path, plan: &[LayerPlan]) -> Result<Self> {
        let bytes = crate::files::read(path)?;
        Self::decode(&bytes, plan).map_err(|message| Error::file(path, message))
    }

    fn decode(bytes: &[u8], plan: &[LayerPlan]) -> std::result::Result<Self, String> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| format!("not a valid safetensors file: {e}"))?;
        let file = SafeTensors::deserialize(bytes)
            .map_err(|e| format!("not a valid safetensors file: {e}"))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let (Some(format), Some(run_json), Some(crc)) = (
            metadata.get(FORMAT_KEY),
            metadata.get(RUN_KEY),
            metadata.get(CRC_KEY),
        ) else {
            return Err("not a convnet training checkpoint (no run state in its metadata)".into());
        };
        if format != FORMAT {
            return Err(format!(
                "a checkpoint of format {format:?}; this convnet reads format {FORMAT}"
            ));
        }
        let mut tensors = Vec::new();
        for (name, view) in file.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(format!(
                    "tensor '{name}' is {:?}, expected F32",
                    view.dtype()
                ));
            }
            let data: Vec<f32> = crate::npy::f32_values(view.data()).collect();
            let shape = view.shape().to_vec();
            tensors.push((name, Tensor { shape, data }));
        }
        let expected_crc = u32::from_str_radix(crc, 16).map_err(|_| "a malformed checksum")?;
        let found = checksum(run_json, tensors.iter().map(|(n, t)| (n.as_str(), t)));
        if found != expected_crc {
            return Err("the checkpoint is corrupted (its checksum does not match)".into());
        }
        let run: Run = serde_json::from_str(run_json)
            .map_err(|e| format!("the checkpoint's run state does not read: {e}"))?;
        let mut weights = Vec::new();
        let mut velocities = Vec::new();
        for (name, tensor) in tensors {
            if let Some(n) = name.strip_prefix(PARAM_PREFIX) {
                weights.push((n.to_string(), tensor));
            } else if let Some(n) = name.strip_prefix(MOMENTUM_PREFIX) {
                velocities.push((n.to_string(), tensor));
            } else {
                return Err(format!("holds tensor {name:?}, which no checkpoint has"));
            }
        }
        let weights = in_network_order(weights, plan, true)?;
        let velocities = in_network_order(velocities, plan, false)?;
        Ok(Checkpoint {
            settings: run.settings,
            progress: run.progress,
            weights,
            velocities,
        })
    }
}

/// `tensors` as [`Weights`] in the network's order, every one the network has (`with_buffers`:
/// running statistics too) present with its shape and finite, none other. The message says
/// which is not, so that a checkpoint of another model is refused by name.
fn in_network_order(
    mut tensors: Vec<(String, Tensor)>,
    plan: &[LayerPlan],
    with_buffers: bool,
) -> std::result::Result<Weights, String> {
    let mut ordered = Vec::new();
    for layer in plan {
        let buffers = if with_buffers {
            layer.buffer_shapes()
        } else {
            Vec::new()
        };
        for (name, shape) in layer.parameter_shapes().into_iter().chain(buffers) {
            let at = tensors
                .iter()
                .position(|(n, _)| *n == name)
                .ok_or_else(|| {
                    format!("tensor '{name}' is missing: a checkpoint of another model?")
                })?;
            let (_, tensor) = tensors.swap_remove(at);
            if tensor.shape != shape {
                return Err(format!(
                    "tensor '{name}' has shape {:?}, the model expects {shape:?}: a checkpoint \
                     of another model?",
                    tensor.shape
                ));
            }
            if tensor.data.iter().any(|v| !v.is_finite()) {
                return Err(format!("tensor '{name}' holds NaN or infinite values"));
            }
            ordered.push((name, tensor));
        }
    }
    if let Some((name, _)) = tensors.first() {
        return Err(format!(
            "holds tensor {name:?}, which the model does not have"
        ));
    }
    Ok(Weights::from_tensors(ordered))
}

/// CRC-32 of the run's JSON and of each tensor's name, shape and little-endian bytes, the
/// tensors taken in name order (a file's order is safetensors' own, not the saved one).
fn checksum<'t>(run: &str, tensors: impl Iterator<Item = (&'t str, &'t Tensor)>) -> u32 {
    let mut tensors: Vec<_> = tensors.collect();
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(run.as_bytes());
    for (name, tensor) in tensors {
        hasher.update(name.as_bytes());
        for &d in &tensor.shape {
            hasher.update(&(d as u64).to_le_bytes());
        }
        hasher.update(bytemuck::cast_slice(&tensor.data));
    }
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::small_test_network;

    fn checkpoint() -> (Checkpoint, Vec<LayerPlan>) {
        let network = small_test_network(4, 3);
        let plan = network.plan(2).unwrap();
        let weights = Weights::init(&network, 1).unwrap();
        let velocities = Weights::init(&network, 2).unwrap();
        let settings = Settings {
            model: "small".into(),
            batch: 2,
            epochs: 3,
            learning_rate: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            schedule: "constant".into(),
            seed: 1,
            drop_last: false,
            training_images: 10,
            mean: Vec::new(),
            std: Vec::new(),
            precision: Precision::F16,
        };
        let progress = Progress {
            epoch: 1,
            step_in_epoch: 2,
            global_step: 7,
            history: Vec::new(),
            epoch_totals: EpochTotals::default(),
        };
        let checkpoint = Checkpoint {
            settings,
            progress,
            weights,
            velocities,
        };
        (checkpoint, plan)
    }

    #[test]
    fn a_checkpoint_comes_back_whole_and_a_changed_byte_is_refused() {
        let (saved, plan) = checkpoint();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.safetensors");
        saved.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path, &plan).unwrap(), saved);

        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let err = Checkpoint::decode(&bytes, &plan).unwrap_err();
        assert!(err.contains("checksum"), "{err}");
        let other = small_test_network(5, 3).plan(2).unwrap();
        let err = Checkpoint::load(&path, &other).unwrap_err().to_string();
        assert!(err.contains("another model"), "{err}");
        assert!(Checkpoint::decode(b"not a checkpoint", &plan).is_err());
    }

    #[test]
    fn differing_settings_are_named() {
        let (saved, _) = checkpoint();
        let mut now = saved.settings.clone();
        assert!(saved.settings.differences(&now).is_empty());
        now.learning_rate = 0.2;
        now.seed = 5;
        let differences = saved.settings.differences(&now);
        assert_eq!(differences.len(), 2, "{differences:?}");
        assert!(
            differences[0].starts_with("learning_rate"),
            "{differences:?}"
        );
    }
}
