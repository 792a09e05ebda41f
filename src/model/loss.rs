//! What training differentiates: the loss over a network's outputs.
//!
//! The seed's benchmark differentiates `l2_loss(logits) = sum(logits^2) / 2` (docs/networks.md,
//! 'The seed'); training a classifier takes softmax cross-entropy with integer labels, averaged
//! over the batch as PyTorch's `nn.CrossEntropyLoss()` does. GoogLeNet with its auxiliary heads
//! adds each head's loss at [`AUX_LOSS_WEIGHT`], as the GoogLeNet paper trains it.

use super::{LayerKind, LayerPlan};
use crate::error::{Error, Result};

/// The weight of an auxiliary head's loss in the total (the GoogLeNet paper's 0.3).
pub const AUX_LOSS_WEIGHT: f32 = 0.3;

/// The function of a head's output that the loss sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// TensorFlow's `l2_loss`, the seed's: `sum(y^2) / 2` over the whole batch.
    L2,
    /// Softmax cross-entropy against integer labels, the mean over the batch.
    CrossEntropy,
}

/// A loss over a planned network's heads.
#[derive(Clone, Debug, PartialEq)]
pub struct Loss {
    /// What each head contributes.
    pub kind: LossKind,
    /// Each head's plan index and weight: the last layer at 1, then the auxiliary heads.
    pub heads: Vec<(usize, f32)>,
}

impl Loss {
    /// The loss of the last layer's output alone.
    pub fn main_head(kind: LossKind, plan: &[LayerPlan]) -> Self {
        Loss {
            kind,
            heads: vec![(plan.len().saturating_sub(1), 1.0)],
        }
    }

    /// The loss of the last layer's output and, at [`AUX_LOSS_WEIGHT`], of every auxiliary head:
    /// a fully connected layer whose output no layer reads (GoogLeNet's `aux1.fc2`, `aux2.fc2`).
    pub fn with_aux_heads(kind: LossKind, plan: &[LayerPlan]) -> Self {
        let mut loss = Loss::main_head(kind, plan);
        let read: Vec<bool> = (0..plan.len())
            .map(|i| {
                plan.iter()
                    .any(|l| l.sources.iter().any(|(s, _)| *s == super::Source::Layer(i)))
            })
            .collect();
        for (i, layer) in plan.iter().enumerate().take(plan.len().saturating_sub(1)) {
            if !read[i] && matches!(layer.layer.kind, LayerKind::Linear { .. }) {
                loss.heads.push((i, AUX_LOSS_WEIGHT));
            }
        }
        loss
    }

    /// Checks labels for cross-entropy over `plan`'s heads: one per image of the batch, each one
    /// of every head's classes.
    pub fn check_labels(&self, plan: &[LayerPlan], labels: &[usize]) -> Result<()> {
        let batch = plan.first().map_or(0, |l| l.batch);
        if labels.len() != batch {
            return Err(Error::InvalidArgument(format!(
                "{} labels for a batch of {batch} images",
                labels.len()
            )));
        }
        let classes = (self.heads.iter())
            .filter_map(|&(head, _)| plan.get(head))
            .map(|l| l.output.len())
            .min()
            .unwrap_or(0);
        match labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            Some((i, label)) => Err(Error::InvalidArgument(format!(
                "label {label} of image {i} is not one of the {classes} classes"
            ))),
            None => Ok(()),
        }
    }
}
