//! A labelled training set, the order an epoch visits it in, and the held-out split.
//!
//! Images come from a `.npy` file read a batch at a time (never whole, so a set larger than
//! memory trains; the OS's page cache keeps one that fits), or from memory. They are float32
//! `[N, C, H, W]`, taken as they are, or uint8 `[N, C, H, W]` or `[N, H, W, C]`, uploaded as
//! bytes and normalised on the GPU ([`crate::gpu::PixelFormat`]). A split or a selection shares
//! the images and keeps its own list of which ones it holds.
//!
//! Orders come from the run's seed and the epoch's number alone (ChaCha8, one stream per
//! epoch), so a resumed run draws the order it would have drawn, and another framework replays
//! it from the file `--order-out` writes.

use std::path::Path;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::model::{Dims, Network};
use crate::npy::ArrayFile;

/// How a set's pixels are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pixels {
    /// f32, NCHW: the network's input as it is.
    Float32,
    /// u8, NCHW or (`channels_last`) NHWC: decoded and normalised on the GPU.
    Uint8 {
        /// `[N, H, W, C]` rather than `[N, C, H, W]`.
        channels_last: bool,
    },
}

impl Pixels {
    /// Bytes per value.
    fn width(self) -> usize {
        match self {
            Pixels::Float32 => 4,
            Pixels::Uint8 { .. } => 1,
        }
    }
}

/// Where the images' bytes are.
#[derive(Debug)]
enum Storage {
    Memory(Vec<u8>),
    File(ArrayFile),
}

/// The images a set and its splits share.
#[derive(Debug)]
struct Images {
    storage: Storage,
    pixels: Pixels,
    dims: Dims,
}

impl Images {
    fn image_bytes(&self) -> usize {
        self.dims.len() * self.pixels.width()
    }

    /// Copies image `i`'s bytes into `out`; f32 values are checked to be finite.
    fn read(&self, i: usize, out: &mut [u8]) -> Result<()> {
        let size = self.image_bytes();
        match &self.storage {
            Storage::Memory(bytes) => out.copy_from_slice(&bytes[i * size..(i + 1) * size]),
            Storage::File(file) => file.read_at((i * size) as u64, out)?,
        }
        if self.pixels == Pixels::Float32 {
            let finite = crate::npy::f32_values(out).all(f32::is_finite);
            if !finite {
                let place = match &self.storage {
                    Storage::File(file) => format!("{}: ", file.path().display()),
                    Storage::Memory(_) => String::new(),
                };
                return Err(Error::InvalidArgument(format!(
                    "{place}image {i} holds NaN or infinite values"
                )));
            }
        }
        Ok(())
    }
}

/// Labelled images: which images of a shared set, and one class index per image.
#[derive(Clone, Debug)]
pub struct LabelledImages {
    images: Arc<Images>,
    /// Indices into `images`, in this set's order.
    members: Vec<usize>,
    labels: Vec<usize>,
}

impl LabelledImages {
    /// Float32 images of `dims` in memory (`[N, C, H, W]`) and their labels, checked as
    /// [`LabelledImages::load`] checks them.
    pub fn new(images: Vec<f32>, labels: Vec<usize>, dims: Dims, classes: usize) -> Result<Self> {
        let count = labels.len();
        if dims.is_empty() || images.len() != count * dims.len() || count == 0 {
            return Err(Error::InvalidArgument(format!(
                "{count} labels for {} images",
                images.len() / dims.len().max(1)
            )));
        }
        if let Some(i) = images.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "image {} holds NaN or infinite values",
                i / dims.len()
            )));
        }
        let images = Images {
            storage: Storage::Memory(bytemuck::cast_slice(&images).to_vec()),
            pixels: Pixels::Float32,
            dims,
        };
        Self::labelled(images, labels, classes)
    }

    fn labelled(images: Images, labels: Vec<usize>, classes: usize) -> Result<Self> {
        if let Some((i, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            return Err(Error::InvalidArgument(format!(
                "label {label} of image {i} is not one of the network's {classes} classes"
            )));
        }
        Ok(LabelledImages {
            images: Arc::new(images),
            members: (0..labels.len()).collect(),
            labels,
        })
    }

    /// Opens `.npy` images for `network` — float32 `[N, C, H, W]`, or uint8 `[N, C, H, W]` or
    /// `[N, H, W, C]`, at the network's input size — and reads their labels (int64 or int32,
    /// `[N]`, each one of the network's classes). Errors name the file at fault. The images
    /// stay on disk; f32 values are checked to be finite as they are read.
    pub fn load(images: &Path, labels: &Path, network: &Network) -> Result<Self> {
        let file = crate::npy::open(images)?;
        let d = network.input;
        let pixels = match (file.descr.as_str(), file.shape.as_slice()) {
            ("<f4", &[_, c, h, w]) if (c, h, w) == (d.channels, d.height, d.width) => {
                Pixels::Float32
            }
            ("|u1" | "<u1", &[_, c, h, w]) if (c, h, w) == (d.channels, d.height, d.width) => {
                Pixels::Uint8 {
                    channels_last: false,
                }
            }
            ("|u1" | "<u1", &[_, h, w, c]) if (c, h, w) == (d.channels, d.height, d.width) => {
                Pixels::Uint8 {
                    channels_last: true,
                }
            }
            _ => {
                let layouts = if file.descr == "<f4" {
                    "[N, {c}, {h}, {w}]"
                } else {
                    "[N, {c}, {h}, {w}] or [N, {h}, {w}, {c}]"
                };
                let layouts = layouts
                    .replace("{c}", &d.channels.to_string())
                    .replace("{h}", &d.height.to_string())
                    .replace("{w}", &d.width.to_string());
                return Err(Error::file(
                    images,
                    format!(
                        "images of shape {:?}, {} expects {layouts}",
                        file.shape, network.name
                    ),
                ));
            }
        };
        let count = file.shape[0];
        let labels_read = crate::npy::read_labels(labels)?;
        if labels_read.len() != count || count == 0 {
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
        let images = Images {
            storage: Storage::File(file),
            pixels,
            dims: d,
        };
        Self::labelled(images, labels_read, classes).map_err(|e| Error::file(labels, e))
    }

    /// Images in the set.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True for a set without images (never made by [`LabelledImages::new`] or `load`).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// One class index per image, in the set's order.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// How the pixels are stored.
    pub fn pixels(&self) -> Pixels {
        self.images.pixels
    }

    /// The dimensions of one image, as the network takes it.
    pub fn dims(&self) -> Dims {
        self.images.dims
    }

    /// Bytes of one image as stored.
    pub fn image_bytes(&self) -> usize {
        self.images.image_bytes()
    }

    /// True when `other` stores its pixels as this set does (a held-out set must).
    pub fn stored_as(&self, other: &LabelledImages) -> bool {
        self.pixels() == other.pixels() && self.dims() == other.dims()
    }

    /// The row of the images' file (or of the images given to [`LabelledImages::new`]) that
    /// holds the image at `position` of this set: what another framework indexes the file by.
    pub fn row(&self, position: usize) -> usize {
        self.members[position]
    }

    /// The images at `positions` (of this set), in that order, as a new set sharing the images.
    pub fn select(&self, positions: &[usize]) -> LabelledImages {
        LabelledImages {
            images: Arc::clone(&self.images),
            members: positions.iter().map(|&p| self.members[p]).collect(),
            labels: positions.iter().map(|&p| self.labels[p]).collect(),
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

    /// Copies the images at `positions` (of this set) into `bytes` (`positions.len()` images
    /// as stored) and their labels into `labels` (cleared first): one batch, with no allocation
    /// once `labels` has grown to a batch. Fails for an unreadable file or non-finite f32
    /// values, naming the image.
    pub fn gather(
        &self,
        positions: &[usize],
        bytes: &mut [u8],
        labels: &mut Vec<usize>,
    ) -> Result<()> {
        labels.clear();
        let size = self.image_bytes();
        for (slot, &p) in bytes.chunks_exact_mut(size).zip(positions) {
            self.images.read(self.members[p], slot)?;
            labels.push(self.labels[p]);
        }
        Ok(())
    }
}

impl LabelledImages {
    /// Every image of the set as f32 `[N, C, H, W]`, read whole: 8-bit pixels decoded by
    /// `format` on the host (as the GPU decodes them, within f32 rounding), f32 values as they
    /// are. Fails for 8-bit images without a format.
    pub fn to_f32(&self, format: Option<&crate::gpu::PixelFormat>) -> Result<Vec<f32>> {
        let positions: Vec<usize> = (0..self.len()).collect();
        let mut bytes = vec![0u8; self.len() * self.image_bytes()];
        self.gather(&positions, &mut bytes, &mut Vec::new())?;
        match (self.pixels(), format) {
            (Pixels::Float32, _) => Ok(crate::npy::f32_values(&bytes).collect()),
            (Pixels::Uint8 { .. }, Some(format)) => Ok((bytes.chunks(self.image_bytes()))
                .flat_map(|image| format.decode(self.dims(), image))
                .collect()),
            (Pixels::Uint8 { .. }, None) => Err(Error::InvalidArgument(
                "8-bit images need a pixel format to decode them".into(),
            )),
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

    fn dims(len: usize) -> Dims {
        Dims {
            channels: len,
            height: 1,
            width: 1,
        }
    }

    fn set(count: usize) -> LabelledImages {
        let images = (0..count * 2).map(|v| v as f32).collect();
        LabelledImages::new(images, (0..count).map(|i| i % 3).collect(), dims(2), 3).unwrap()
    }

    fn floats(bytes: &[u8]) -> Vec<f32> {
        crate::npy::f32_values(bytes).collect()
    }

    fn firsts(set: &LabelledImages) -> Vec<f32> {
        let mut bytes = vec![0u8; set.len() * 8];
        let mut labels = Vec::new();
        let all: Vec<usize> = (0..set.len()).collect();
        set.gather(&all, &mut bytes, &mut labels).unwrap();
        floats(&bytes).chunks(2).map(|c| c[0]).collect()
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
        let mut all: Vec<f32> = firsts(&train).into_iter().chain(firsts(&held)).collect();
        all.sort_by(f32::total_cmp);
        assert_eq!(all, (0..10).map(|i| (2 * i) as f32).collect::<Vec<_>>());
        // A selection of a split reads the images the split holds.
        let picked = held.select(&[2, 0]);
        assert_eq!(firsts(&picked), [firsts(&held)[2], firsts(&held)[0]]);
        assert!(data.split(0.0, 1).is_err());
        assert!(data.split(0.99, 1).is_err());
    }

    #[test]
    fn labels_and_values_must_fit() {
        assert!(LabelledImages::new(vec![0.0; 4], vec![0], dims(2), 3).is_err());
        let err = LabelledImages::new(vec![0.0; 4], vec![0, 3], dims(2), 3).unwrap_err();
        assert!(err.to_string().contains("label 3 of image 1"), "{err}");
        let err =
            LabelledImages::new(vec![0.0, 1.0, f32::NAN, 0.0], vec![0, 1], dims(2), 3).unwrap_err();
        assert!(err.to_string().contains("image 1 holds NaN"), "{err}");
        let mut labels = Vec::new();
        let mut bytes = vec![0u8; 16];
        set(5).gather(&[4, 1], &mut bytes, &mut labels).unwrap();
        assert_eq!(
            (floats(&bytes), labels),
            (vec![8.0, 9.0, 2.0, 3.0], vec![1, 1])
        );
    }
}
