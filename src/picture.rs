//! Images in and out of style transfer: PNG and JPEG through the `image` crate (decoded, converted
//! to RGB, resized to a long side), or `.npy` float32 `[3, H, W]` in [0, 1] taken exactly as
//! stored (what the comparison with PyTorch feeds both sides). Pixels are `[3][H][W]` f32 in
//! [0, 1], RGB. Errors are one line naming the file; outputs are written atomically.

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader, Rgb32FImage, RgbImage};

use crate::error::{Error, Result};
use crate::files;
use crate::model::Dims;

/// An RGB image: its size and its pixels, `[3][H][W]` in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    /// 3 channels, height, width.
    pub dims: Dims,
    /// Channel planes, row-major.
    pub pixels: Vec<f32>,
}

fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// Reads an image: a PNG or JPEG resized so that its longer side is `long_side` (when given),
/// or a `.npy` array `[3, H, W]` (or `[1, 3, H, W]`) of values in [0, 1], never resized.
/// Grayscale images become RGB; images with transparent pixels are refused (flatten them
/// first), opaque alpha channels dropped.
pub fn load(path: &Path, long_side: Option<usize>) -> Result<Picture> {
    if is_npy(path) {
        return load_npy(path);
    }
    let bad = |message: String| Error::file(path, message);
    let decoded = ImageReader::open(path)
        .map_err(|e| bad(format!("cannot open: {e}")))?
        .with_guessed_format()
        .map_err(|e| bad(format!("cannot read: {e}")))?
        .decode()
        .map_err(|e| bad(format!("not an image this tool reads (PNG, JPEG): {e}")))?;
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err(bad("the image is empty".into()));
    }
    if decoded.color().has_alpha() {
        let transparent = decoded.to_rgba32f().pixels().any(|p| p.0[3] < 1.0);
        if transparent {
            return Err(bad(
                "the image has transparent pixels; flatten it onto a background first".into(),
            ));
        }
    }
    let rgb = DynamicImage::ImageRgb32F(decoded.to_rgb32f());
    let resized = match long_side {
        Some(0) => return Err(bad("the size must be at least 1 pixel".into())),
        Some(side) => {
            let (w, h) = (rgb.width() as usize, rgb.height() as usize);
            let scale = side as f64 / w.max(h) as f64;
            let new_w = ((w as f64 * scale).round() as u32).max(1);
            let new_h = ((h as f64 * scale).round() as u32).max(1);
            rgb.resize_exact(new_w, new_h, FilterType::Lanczos3)
        }
        None => rgb,
    };
    Ok(from_rgb(&resized.to_rgb32f()))
}

/// Planes `[3][H][W]` from interleaved RGB, clamped to [0, 1] (Lanczos resampling overshoots a
/// little at edges).
fn from_rgb(image: &Rgb32FImage) -> Picture {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut pixels = vec![0.0; 3 * h * w];
    for (x, y, p) in image.enumerate_pixels() {
        for c in 0..3 {
            pixels[(c * h + y as usize) * w + x as usize] = p.0[c].clamp(0.0, 1.0);
        }
    }
    Picture {
        dims: Dims {
            channels: 3,
            height: h,
            width: w,
        },
        pixels,
    }
}

fn load_npy(path: &Path) -> Result<Picture> {
    let array = crate::npy::read(path)?;
    let bad = |message: String| Error::file(path, message);
    let (h, w) = match array.shape.as_slice() {
        [3, h, w] | [1, 3, h, w] => (*h, *w),
        shape => {
            return Err(bad(format!(
                "holds an array of shape {shape:?}; an image is [3, H, W] (RGB, values in [0, 1])"
            )))
        }
    };
    if h == 0 || w == 0 {
        return Err(bad("the image is empty".into()));
    }
    if let Some(v) = array.data.iter().find(|v| !(0.0..=1.0).contains(*v)) {
        return Err(bad(format!(
            "holds the value {v}; an image's values lie in [0, 1]"
        )));
    }
    Ok(Picture {
        dims: Dims {
            channels: 3,
            height: h,
            width: w,
        },
        pixels: array.data,
    })
}

/// Writes an image atomically: PNG or JPEG by the path's extension (values clamped to [0, 1]
/// and rounded to 8 bits), or `.npy` float32 `[3, H, W]` exactly.
pub fn save(path: &Path, picture: &Picture) -> Result<()> {
    let Dims { height, width, .. } = picture.dims;
    if is_npy(path) {
        return crate::npy::write(path, &[3, height, width], &picture.pixels);
    }
    let format = image::ImageFormat::from_path(path)
        .ok()
        .filter(|f| matches!(f, image::ImageFormat::Png | image::ImageFormat::Jpeg))
        .ok_or_else(|| Error::file(path, "write .png, .jpg or .npy"))?;
    let plane = height * width;
    let rgb = RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let at = y as usize * width + x as usize;
        image::Rgb(std::array::from_fn(|c| {
            (picture.pixels[c * plane + at].clamp(0.0, 1.0) * 255.0).round() as u8
        }))
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    rgb.write_to(&mut bytes, format)
        .map_err(|e| Error::file(path, format!("cannot encode: {e}")))?;
    files::write_atomically(path, bytes.get_ref())
}

/// Checks that `path` names a format [`save`] writes and a place it can write to, before any
/// work is done.
pub fn check_writable(path: &Path) -> Result<()> {
    let known = is_npy(path)
        || image::ImageFormat::from_path(path)
            .is_ok_and(|f| matches!(f, image::ImageFormat::Png | image::ImageFormat::Jpeg));
    if !known {
        return Err(Error::file(path, "write .png, .jpg or .npy"));
    }
    files::check_writable(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_survives_png_and_npy_and_is_resized_by_its_long_side() {
        let dir = tempfile::tempdir().unwrap();
        let dims = Dims {
            channels: 3,
            height: 6,
            width: 10,
        };
        let pixels: Vec<f32> = (0..dims.len()).map(|i| (i % 256) as f32 / 255.0).collect();
        let picture = Picture { dims, pixels };
        let png = dir.path().join("a.png");
        save(&png, &picture).unwrap();
        assert_eq!(load(&png, None).unwrap(), picture);
        let npy = dir.path().join("a.npy");
        save(&npy, &picture).unwrap();
        assert_eq!(
            load(&npy, Some(3)).unwrap(),
            picture,
            "npy is never resized"
        );
        let small = load(&png, Some(5)).unwrap();
        assert_eq!((small.dims.height, small.dims.width), (3, 5));
        assert!(small.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn what_is_not_an_rgb_image_is_refused_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("a.png");
        std::fs::write(&text, "not an image").unwrap();
        let err = load(&text, None).unwrap_err().to_string();
        assert!(err.contains("not an image"), "{err}");
        let clear = dir.path().join("clear.png");
        image::RgbaImage::from_pixel(4, 4, image::Rgba([9, 9, 9, 0]))
            .save(&clear)
            .unwrap();
        let err = load(&clear, None).unwrap_err().to_string();
        assert!(err.contains("transparent"), "{err}");
        let gray = dir.path().join("gray.png");
        image::GrayImage::from_pixel(4, 2, image::Luma([51]))
            .save(&gray)
            .unwrap();
        let picture = load(&gray, None).unwrap();
        assert_eq!(picture.dims.channels, 3);
        assert!(picture.pixels.iter().all(|&v| (v - 0.2).abs() < 1e-6));
        let out = dir.path().join("a.bmp");
        let bmp = check_writable(&out).unwrap_err().to_string();
        assert!(bmp.contains("write .png, .jpg or .npy"), "{bmp}");
        for message in [err, bmp] {
            assert!(!message.contains('\n'), "{message}");
        }
    }
}
