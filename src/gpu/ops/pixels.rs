//! A data set's 8-bit pixels decoded into the network's f32 input on the GPU: a batch is
//! uploaded as the file stores it (a quarter of the bytes of f32) and normalised by one kernel
//! at the start of the step.

use crate::error::{Error, Result};
use crate::gpu::builder::{u32_of, Builder, Purpose};
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{encode_pass, kernel_params, Dispatch, KernelDef};
use crate::model::Dims;
use crate::shaders::{self, Element, Elements};

kernel_params! {
    /// decode_pixels's parameters.
    pub(crate) struct DecodePixelsParams {
        len: u32,
        channels: u32,
        plane: u32,
        nhwc: u32,
        mean: [f32; 4],
        inv_std: [f32; 4],
    }
}

const DECODE_PIXELS: KernelDef<DecodePixelsParams> = KernelDef::flat(shaders::DECODE_PIXELS);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    vec![DECODE_PIXELS.contract()]
}

/// How 8-bit images are laid out and normalised: `(pixel / 255 - mean[c]) / std[c]`, as
/// torchvision's `ToTensor` then `Normalize(mean, std)`.
#[derive(Clone, Debug, PartialEq)]
pub struct PixelFormat {
    /// Channels last (`[N, H, W, C]`) rather than first (`[N, C, H, W]`).
    pub channels_last: bool,
    /// Per channel, in [0, 1] units.
    pub mean: Vec<f32>,
    /// Per channel, positive.
    pub std: Vec<f32>,
}

impl PixelFormat {
    /// Checks the format against images of `dims`: one mean and one positive std per channel,
    /// at most four channels.
    pub fn check(&self, dims: Dims) -> Result<()> {
        let channels = dims.channels;
        if channels > 4 || self.mean.len() != channels || self.std.len() != channels {
            return Err(Error::InvalidArgument(format!(
                "--mean and --std need one value per channel of the {channels}-channel images \
                 (8-bit images of at most 4 channels), not {} and {}",
                self.mean.len(),
                self.std.len()
            )));
        }
        if !self.std.iter().all(|s| s.is_finite() && *s > 0.0)
            || !self.mean.iter().all(|m| m.is_finite())
        {
            return Err(Error::InvalidArgument(
                "--std must be positive and --mean finite".into(),
            ));
        }
        Ok(())
    }

    /// The reference decoding of one image's bytes (`pixels`, in this layout) into NCHW f32,
    /// in f64 and rounded once: what the kernel computes, within f32 rounding.
    pub fn decode(&self, dims: Dims, pixels: &[u8]) -> Vec<f32> {
        let plane = dims.height * dims.width;
        (0..dims.len())
            .map(|i| {
                let (c, p) = (i / plane, i % plane);
                let at = if self.channels_last {
                    p * dims.channels + c
                } else {
                    i
                };
                let x = f64::from(pixels[at]) / 255.0;
                ((x - f64::from(self.mean[c])) / f64::from(self.std[c])) as f32
            })
            .collect()
    }
}

/// The decoding of one network's batch: the buffer its pixels are uploaded to and the dispatch
/// that writes the network's input from them.
pub struct PixelDecoder {
    pixels: wgpu::Buffer,
    dispatches: Vec<Dispatch>,
    /// Bytes a batch of pixels takes.
    pub batch_bytes: usize,
}

impl PixelDecoder {
    /// A decoder of `images` images of `dims` in `format` into `input` (`images * dims.len()`
    /// values of `element`, the network's input buffer as the network stores it).
    pub(crate) fn new(
        ctx: &GpuContext,
        (input, element): (&wgpu::Buffer, Element),
        images: usize,
        dims: Dims,
        format: &PixelFormat,
    ) -> Result<Self> {
        format.check(dims)?;
        let len = images * dims.len();
        let pad = |v: &[f32], fill: f32| -> [f32; 4] {
            std::array::from_fn(|c| v.get(c).copied().unwrap_or(fill))
        };
        let params = DecodePixelsParams {
            len: u32_of(len, "pixels")?,
            channels: u32_of(dims.channels, "channels")?,
            plane: u32_of(dims.height * dims.width, "pixels")?,
            nhwc: u32::from(format.channels_last),
            mean: pad(&format.mean, 0.0),
            inv_std: pad(&format.std.iter().map(|s| 1.0 / s).collect::<Vec<_>>(), 1.0),
        };
        ctx.scoped("pixel decoder setup", |_| -> Result<_> {
            let mut b = Builder::new(ctx);
            b.check_binding("a batch of 8-bit pixels", len as u64)?;
            let pixels = b.storage("8-bit pixels", len.div_ceil(4), Purpose::Activations);
            let workgroups = b.grid_1d("decode pixels", len)?;
            let elements = Elements {
                read: Element::F32,
                written: element,
            };
            let dispatch = b.dispatch_elements(
                "decode pixels",
                &DECODE_PIXELS,
                elements,
                &[],
                &params,
                &[&pixels, input],
                workgroups,
            );
            Ok(PixelDecoder {
                pixels,
                dispatches: vec![dispatch],
                batch_bytes: len,
            })
        })?
    }

    /// Uploads a batch's pixels (`batch_bytes` of them or fewer; the rest of the buffer keeps
    /// what it held, decoded into values no one reads).
    pub fn upload(&self, ctx: &GpuContext, pixels: &[u8]) {
        // The queue writes whole 4-byte words: the last one padded with zeros.
        let whole = pixels.len() / 4 * 4;
        ctx.queue().write_buffer(&self.pixels, 0, &pixels[..whole]);
        if whole < pixels.len() {
            let mut last = [0u8; 4];
            last[..pixels.len() - whole].copy_from_slice(&pixels[whole..]);
            ctx.queue().write_buffer(&self.pixels, whole as u64, &last);
        }
    }

    /// Records the decoding into `encoder`, before the network's forward pass.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        encode_pass(encoder, "decode pixels", &self.dispatches);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::AdapterChoice;

    #[test]
    #[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
    fn pixels_decode_as_the_reference_in_both_layouts_and_both_elements() {
        let ctx = GpuContext::new(&AdapterChoice::default())
            .expect("a GPU adapter; set CONVNET_SKIP_GPU_TESTS=1 to skip the GPU tests");
        // 3 images of 3 x 5 x 7: 315 bytes, not a multiple of 4 (the last word padded).
        let dims = Dims {
            channels: 3,
            height: 5,
            width: 7,
        };
        let images = 3;
        let pixels: Vec<u8> = (0..images * dims.len())
            .map(|i| (i * 37 % 256) as u8)
            .collect();
        // f16 where the network stores its input so (the adapter has shader-f16).
        let elements = [Element::F32, Element::F16];
        let elements = &elements[..if ctx.has_f16() { 2 } else { 1 }];
        for (channels_last, &element) in [false, true].into_iter().zip(elements.iter().cycle()) {
            let format = PixelFormat {
                channels_last,
                mean: vec![0.485, 0.456, 0.406],
                std: vec![0.229, 0.224, 0.225],
            };
            let len = images * dims.len();
            let input = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("input"),
                size: crate::gpu::builder::buffer_bytes(len, element),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let target = (&input, element);
            let decoder = PixelDecoder::new(&ctx, target, images, dims, &format).unwrap();
            decoder.upload(&ctx, &pixels);
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            decoder.encode(&mut encoder);
            ctx.queue().submit([encoder.finish()]);
            let decoded = ctx.read_values(&input, len, element).unwrap();
            let expected: Vec<f32> = (pixels.chunks(dims.len()))
                .flat_map(|image| format.decode(dims, image))
                .collect();
            // One f32 division and one multiplication by a rounded 1/std: a few ulps; then,
            // in f16, one rounding (2^-11 of the value, 2^-10 where a driver truncates).
            let tolerance = match element {
                Element::F32 => 1e-6,
                Element::F16 => 1e-3,
            };
            for (i, (got, want)) in decoded.iter().zip(&expected).enumerate() {
                assert!(
                    (got - want).abs() <= tolerance * want.abs().max(1.0),
                    "{element:?}, channels_last {channels_last}, value {i}: {got} vs {want}"
                );
            }
        }
        let bad = PixelFormat {
            channels_last: false,
            mean: vec![0.5; 3],
            std: vec![0.0, 1.0, 1.0],
        };
        assert!(bad.check(dims).is_err());
        let short = PixelFormat {
            channels_last: false,
            mean: vec![0.5; 2],
            std: vec![1.0; 2],
        };
        assert!(short.check(dims).is_err());
    }
}
