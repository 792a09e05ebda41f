//! A labelled training set in memory, the order an epoch visits it in, and the held-out split.
//!
//! Orders come from the run's seed and the epoch's number alone (ChaCha8, one stream per
//! epoch), so a resumed run draws the order it would have drawn, and another framework replays
//! it from the file `--order-out` writes.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::model::Network;

/// Images `[N, C, H, W]` (f32, as the network takes them) and one class index per image.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledImages {
    /// Every image's values, C order.
    pub images: Vec<f32>,
    /// One class index per image.
    pub labels: Vec<usize>,
    /// Values per image: C x H x W.
    pub image_len: usize,
}

impl LabelledImages {
    /// Images and labels checked against each other: one label per image, every label one of
    /// `classes`. Fails, saying which, for anything else.
    pub fn new(
        images: Vec<f32>,
        labels: Vec<usize>,
        image_len: usize,
        classes: usize,
    ) -> Result<Self> {
        if image_len == 0 || images.len() != labels.len() * image_len || labels.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} labels for {} images",
                labels.len(),
                images.len() / image_len.max(1)
            )));
        }
        if let Some((i, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            return Err(Error::InvalidArgument(format!(
                "label {label} of image {i} is not one of the network's {classes} classes"
            )));
        }
        Ok(LabelledImages {
            images,
            labels,
            image_len,
        })
    }

    /// Loads `.npy` images (`[N, C, H, W]` float32, the network's input size) and labels
    /// (int64 or int32, `[N]`), checked as [`LabelledImages::new`] checks them; errors name the
    /// file at fault.
    pub fn load(images: &Path, labels: &Path, network: &Network) -> Result<Self> {
        let (count, data) = crate::weights::load_input(images, network)?;
        let labels_read = crate::npy::read_labels(labels)?;
        if labels_read.len() != count {
            return Err(Error::file(
                labels,
                format!(
                    "{} labels for the {count} images of {}",
                    labels_read.len(),
                    images.display()
                ),
            ));
        }
        let plan = network.plan(1)?;
        let classes = plan.last().map_or(0, |l| l.output.len());
        Self::new(data, labels_read, network.input.len(), classes)
            .map_err(|e| Error::file(labels, e))
    }

    /// Images in the set.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True for a set without images (never made by [`LabelledImages::new`]).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i`'s values.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * self.image_len..(i + 1) * self.image_len]
    }

    /// The images at `indices`, in that order, as a new set.
    pub fn select(&self, indices: &[usize]) -> LabelledImages {
        let mut images = Vec::with_capacity(indices.len() * self.image_len);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        LabelledImages {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            image_len: self.image_len,
        }
    }

    /// Splits off `fraction` of the images (rounded, at least one, never all) as a held-out set,
    /// chosen by a shuffle drawn from `seed`: `(training, held out)`, each in the set's order.
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(LabelledImages, LabelledImages)> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(Error::InvalidArgument(format!(
                "--val-split must be between 0 and 1, not {fraction}"
            )));
        }
        let held = ((self.len() as f64 * fraction).round() as usize).max(1);
        if held >= self.len() {
            return Err(Error::InvalidArgument(format!(
                "--val-split {fraction} of {} images leaves none to train on",
                self.len()
            )));
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Stream 0 is the split's; epoch e's order uses stream e + 1.
        rng.set_stream(0);
        order.shuffle(&mut rng);
        let (mut held_out, mut kept) = (order[..held].to_vec(), order[held..].to_vec());
        held_out.sort_unstable();
        kept.sort_unstable();
        Ok((self.select(&kept), self.select(&held_out)))
    }

    /// Copies the images and labels at `indices` into `images` (`indices.len() * image_len`
    /// values) and `labels` (cleared first): one batch, with no allocation once `labels` has
    /// grown to a batch.
    pub fn gather(&self, indices: &[usize], images: &mut [f32], labels: &mut Vec<usize>) {
        labels.clear();
        for (slot, &i) in images.chunks_exact_mut(self.image_len).zip(indices) {
            slot.copy_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
    }
}

/// The order epoch `epoch` visits `samples` images in: a permutation drawn from `seed` and the
/// epoch alone (ChaCha8 seeded with `seed`, stream `epoch + 1`, Fisher-Yates as `rand`'s
/// `shuffle` does it).
pub fn epoch_order(samples: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..samples).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64 + 1);
    order.shuffle(&mut rng);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(count: usize) -> LabelledImages {
        let images = (0..count * 2).map(|v| v as f32).collect();
        LabelledImages::new(images, (0..count).map(|i| i % 3).collect(), 2, 3).unwrap()
    }

    #[test]
    fn orders_are_permutations_that_differ_by_epoch_and_repeat_by_seed() {
        let a = epoch_order(100, 7, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(100, 7, 0));
        assert_ne!(a, epoch_order(100, 7, 1));
        assert_ne!(a, epoch_order(100, 8, 0));
    }

    #[test]
    fn a_split_keeps_every_image_once_and_refuses_empty_sides() {
        let data = set(10);
        let (train, held) = data.split(0.3, 1).unwrap();
        assert_eq!((train.len(), held.len()), (7, 3));
        let mut firsts: Vec<f32> = (train.images.chunks(2).chain(held.images.chunks(2)))
            .map(|c| c[0])
            .collect();
        firsts.sort_by(f32::total_cmp);
        assert_eq!(firsts, (0..10).map(|i| (2 * i) as f32).collect::<Vec<_>>());
        assert!(data.split(0.0, 1).is_err());
        assert!(data.split(0.99, 1).is_err());
    }

    #[test]
    fn labels_must_match_the_images_and_the_classes() {
        assert!(LabelledImages::new(vec![0.0; 4], vec![0], 2, 3).is_err());
        let err = LabelledImages::new(vec![0.0; 4], vec![0, 3], 2, 3).unwrap_err();
        assert!(err.to_string().contains("label 3 of image 1"), "{err}");
        let mut labels = Vec::new();
        let mut images = vec![0.0; 4];
        set(5).gather(&[4, 1], &mut images, &mut labels);
        assert_eq!((images, labels), (vec![8.0, 9.0, 2.0, 3.0], vec![1, 1]));
    }
}
