//! Evaluating a classifier on a labelled data set: the mean cross-entropy, top-1 and top-5
//! accuracy, and images per second, batch by batch on the GPU (`convnet eval`).

use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::GpuNetwork;
use crate::reference;

/// What a classifier scores on a data set.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// Images scored.
    pub images: usize,
    /// Softmax cross-entropy against the labels, the mean over the images.
    pub loss: f64,
    /// The fraction of images whose label has the highest logit.
    pub top1: f64,
    /// The fraction of images whose label is among the five highest logits (all of them where
    /// there are five classes or fewer).
    pub top5: f64,
    /// Seconds for the whole set: uploads, forward passes and logits read back.
    pub seconds: f64,
}

impl Evaluation {
    /// Images per second, uploads and readbacks included.
    pub fn images_per_s(&self) -> f64 {
        self.images as f64 / self.seconds
    }
}

/// Mean cross-entropy, top-1 and top-5 accuracy of `logits` (`[N][classes]`) against `labels`
/// (one per row), in f64. A label ties with a logit equal to its own to its favour: it is among
/// the top k when fewer than k logits are strictly greater. Fails for a label out of range or
/// logits that are not one row per label.
pub fn classification_scores(
    logits: &[f32],
    labels: &[usize],
    classes: usize,
) -> Result<(f64, f64, f64)> {
    let logits: Vec<f64> = logits.iter().map(|&v| f64::from(v)).collect();
    let (loss, _) = reference::softmax_cross_entropy(&logits, labels, classes)?;
    let mut top1 = 0usize;
    let mut top5 = 0usize;
    for (row, &label) in logits.chunks(classes).zip(labels) {
        let greater = row.iter().filter(|&&v| v > row[label]).count();
        top1 += usize::from(greater < 1);
        top5 += usize::from(greater < 5);
    }
    let n = labels.len().max(1) as f64;
    Ok((loss, top1 as f64 / n, top5 as f64 / n))
}

/// Scores `net` (an inference network at some batch size) on `images` (`[N, C, H, W]`, any N)
/// with `labels`: batch by batch, the last one padded with zero images whose logits are not
/// scored (at inference every image's logits are its own). Fails for labels or images that do
/// not fit the network, or logits that are not finite.
pub fn evaluate(net: &GpuNetwork, images: &[f32], labels: &[usize]) -> Result<Evaluation> {
    let first = &net.plan()[0];
    let last = net.plan().last().expect("a planned network has layers");
    let (batch, per_image, classes) = (first.batch, first.input.len(), last.output.len());
    if images.len() != labels.len() * per_image || labels.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} labels for {} values of images of {per_image} values each",
            labels.len(),
            images.len()
        )));
    }
    if let Some((i, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
        return Err(Error::InvalidArgument(format!(
            "label {label} of image {i} is not one of the {classes} classes"
        )));
    }
    let mut padded = vec![0.0f32; batch * per_image];
    let mut logits = Vec::with_capacity(labels.len() * classes);
    // The batch's logits come back through one staging buffer, made before the loop, as the
    // network stores them.
    let ctx = net.context();
    let element = net.stored_element();
    let staging = ctx.staging_buffer_of("eval logits", batch * classes, element);
    let start = Instant::now();
    for chunk in images.chunks(batch * per_image) {
        let input = if chunk.len() == padded.len() {
            chunk
        } else {
            padded[..chunk.len()].copy_from_slice(chunk);
            padded[chunk.len()..].fill(0.0);
            &padded
        };
        net.upload_input(input)?;
        net.run("eval forward pass", |encoder| {
            net.encode_forward(encoder);
            encoder.copy_buffer_to_buffer(net.logits_buffer(), 0, &staging, 0, staging.size());
            Ok(())
        })?;
        let out = ctx.read_staging_values(&staging, batch * classes, element)?;
        logits.extend_from_slice(&out[..chunk.len() / per_image * classes]);
    }
    let seconds = start.elapsed().as_secs_f64();
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "the logits of image {} are not finite",
            i / classes
        )));
    }
    let (loss, top1, top5) = classification_scores(&logits, labels, classes)?;
    Ok(Evaluation {
        images: labels.len(),
        loss,
        top1,
        top5,
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_count_ties_for_the_label_and_rank_past_five() {
        // Row 0: label 2 highest. Row 1: label 0 ties with class 1 for highest (counts).
        // Row 2: label 6 is seventh of seven (top-5 misses).
        let logits = [
            0.0, 1.0, 3.0, 0.0, 0.0, 0.0, 0.0, //
            2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, //
            7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0,
        ];
        let (loss, top1, top5) = classification_scores(&logits, &[2, 0, 6], 7).unwrap();
        assert_eq!((top1, top5), (2.0 / 3.0, 2.0 / 3.0));
        assert!(loss > 0.0);
        assert!(classification_scores(&logits, &[2, 0, 7], 7).is_err());
    }
}
