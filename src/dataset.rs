//! A small labelled image set the project draws itself, with nothing to download
//! (`convnet make-dataset`): noisy shapes, stripes and textures, one class each, at random
//! positions, sizes, phases and colours, so that a class is what the pixels form and not where
//! or in what colour — what convolutions learn and a linear model of the pixels does not.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// The classes, in label order.
pub const SHAPE_CLASSES: [&str; 10] = [
    "disc",
    "square",
    "triangle",
    "cross",
    "ring",
    "horizontal stripes",
    "vertical stripes",
    "diagonal stripes",
    "checkerboard",
    "spots",
];

/// A drawn data set: images `[N, 3, size, size]` in [0, 1] and one label per image.
pub struct Dataset {
    /// The images' pixels, C order.
    pub images: Vec<f32>,
    /// One class index per image.
    pub labels: Vec<usize>,
    /// Height and width of every image.
    pub size: usize,
}

/// `count` images of `size` x `size` pixels over the first `classes` of [`SHAPE_CLASSES`],
/// image `i` of class `i % classes` (balanced), each drawn from its own stream of `seed`:
/// the same arguments give the same bytes. Fails for fewer than 2 or more than 10 classes, a
/// size below 8 pixels, or no images.
pub fn shapes(classes: usize, size: usize, count: usize, seed: u64) -> Result<Dataset> {
    if !(2..=SHAPE_CLASSES.len()).contains(&classes) {
        return Err(Error::InvalidArgument(format!(
            "--classes must be 2 to {}, not {classes}",
            SHAPE_CLASSES.len()
        )));
    }
    if size < 8 || count == 0 {
        return Err(Error::InvalidArgument(
            "--size must be at least 8 and --count at least 1".into(),
        ));
    }
    let plane = size * size;
    let mut images = vec![0.0f32; count * 3 * plane];
    let mut labels = Vec::with_capacity(count);
    for (i, image) in images.chunks_mut(3 * plane).enumerate() {
        let class = i % classes;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(i as u64 + 1);
        draw(class, size, image, &mut rng);
        labels.push(class);
    }
    Ok(Dataset {
        images,
        labels,
        size,
    })
}

/// Draws one image of `class` into `image` (`[3][size][size]`).
fn draw(class: usize, size: usize, image: &mut [f32], rng: &mut ChaCha8Rng) {
    let s = size as f32;
    let background: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..0.4));
    let foreground: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.6..1.0));
    let (cx, cy) = (
        rng.random_range(0.3..0.7) * s,
        rng.random_range(0.3..0.7) * s,
    );
    let r = rng.random_range(0.15..0.3) * s;
    let period = rng.random_range(3.0..6.0_f32).min(s / 3.0);
    let phase = rng.random_range(0.0..period);
    let spots: Vec<(f32, f32, f32)> = (0..rng.random_range(3..6))
        .map(|_| {
            let x = rng.random_range(0.1..0.9) * s;
            let y = rng.random_range(0.1..0.9) * s;
            (x, y, rng.random_range(0.06..0.12) * s)
        })
        .collect();
    let inside = |x: f32, y: f32| -> bool {
        let (dx, dy) = (x - cx, y - cy);
        let stripe = |t: f32| (t + phase).rem_euclid(period) < period / 2.0;
        match class {
            0 => dx * dx + dy * dy <= r * r,
            1 => dx.abs() <= r * 0.8 && dy.abs() <= r * 0.8,
            // Apex up: the half-width grows from 0 at the top to r at the base.
            2 => dy >= -r && dy <= r && dx.abs() <= (dy + r) / 2.0,
            3 => (dx.abs() <= r * 0.25 && dy.abs() <= r) || (dy.abs() <= r * 0.25 && dx.abs() <= r),
            4 => {
                let d = (dx * dx + dy * dy).sqrt();
                d <= r && d >= r * 0.6
            }
            5 => stripe(y),
            6 => stripe(x),
            7 => stripe((x + y) / std::f32::consts::SQRT_2),
            8 => {
                let cell = |t: f32| ((t + phase) / (period / 2.0)).floor() as i64;
                (cell(x) + cell(y)).rem_euclid(2) == 0
            }
            _ => spots
                .iter()
                .any(|&(sx, sy, sr)| (x - sx).powi(2) + (y - sy).powi(2) <= sr * sr),
        }
    };
    let plane = size * size;
    for y in 0..size {
        for x in 0..size {
            let on = inside(x as f32 + 0.5, y as f32 + 0.5);
            for c in 0..3 {
                let base = if on { foreground[c] } else { background[c] };
                let noise = rng.random_range(-0.1..0.1);
                image[c * plane + y * size + x] = (base + noise).clamp(0.0, 1.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_is_balanced_in_range_and_the_same_from_the_same_seed() {
        let a = shapes(10, 16, 40, 7).unwrap();
        let b = shapes(10, 16, 40, 7).unwrap();
        assert_eq!(a.images, b.images);
        assert_eq!(a.labels, b.labels);
        assert_ne!(a.images, shapes(10, 16, 40, 8).unwrap().images);
        for class in 0..10 {
            assert_eq!(a.labels.iter().filter(|&&l| l == class).count(), 4);
        }
        assert!(a.images.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(a.images.len(), 40 * 3 * 16 * 16);
        // Every image has a foreground: some pixels well above the background's range.
        for image in a.images.chunks(3 * 256) {
            assert!(image.iter().any(|&v| v > 0.6), "an image without its shape");
        }
        assert!(shapes(11, 16, 4, 1).is_err());
        assert!(shapes(2, 4, 4, 1).is_err());
        assert!(shapes(2, 16, 0, 1).is_err());
    }
}
