//! The kernel variants a device's networks use: which shape of kernel computes the
//! convolutions and the fully connected layers, chosen per adapter kind (and shape) or forced.
//! The context stores what was asked for; each op module maps the resolved choice to its kernels
//! and grids (`gpu::ops::conv`, `gpu::ops::linear`). A leaf module, so that the context and the
//! ops both depend on it and not on each other.

use crate::shaders::BLOCK;

/// Which shape of kernel computes the convolutions (forward, filter gradient, stride-1 input
/// gradient) or the fully connected layers' backward products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelShape {
    /// The register-blocked kernels on software adapters, the workgroup-tiled ones on GPUs.
    #[default]
    Auto,
    /// `conv2d_forward`, `conv2d_backward_filter`, `matmul`: a 16x16 register block per
    /// invocation, no workgroup memory (CPU-shaped).
    RegisterBlock,
    /// `conv2d_forward_tiled`, `conv2d_backward_filter_tiled`, `matmul_tiled`: 64x64 tiles per
    /// workgroup staged in workgroup memory (GPU-shaped).
    WorkgroupTile,
}

impl KernelShape {
    /// The kernel for a software (CPU) or hardware adapter; `tiled_available` is false where the
    /// adapter's limits cannot run the tiled kernels.
    pub fn resolve(self, software: bool, tiled_available: bool) -> Self {
        match self {
            KernelShape::Auto if software || !tiled_available => KernelShape::RegisterBlock,
            KernelShape::Auto => KernelShape::WorkgroupTile,
            forced => forced,
        }
    }
}

/// Which kernel variants a device's networks use. `Default` chooses per adapter; tests and
/// `--linear-kernel` / `--conv-kernel` / `--conv-algorithm` / `--matmul-kernel` force one, so
/// that every variant is checked on the software adapters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Variants {
    /// The fully connected layers' forward product.
    pub linear: LinearKernel,
    /// The convolutions.
    pub conv: KernelShape,
    /// How the 3x3 and 5x5 stride-1 convolutions are computed.
    pub conv_algorithm: ConvAlgorithm,
    /// The fully connected layers' backward products.
    pub matmul: KernelShape,
    /// How activations and weight matrices are stored.
    pub precision: Precision,
}

/// How a network's activations (the input and every layer's output) and weight matrices are
/// stored on the device; products accumulate in f32 either way, and biases, batch-norm
/// parameters and statistics, gradients and optimiser state are f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// 32-bit floats.
    #[default]
    F32,
    /// Half the bytes of f32, 11 significant bits: for inference on adapters with
    /// `shader-f16`; networks that train refuse it.
    F16,
}

/// How a 3x3 or 5x5 stride-1 convolution (forward, input gradient, itself such a convolution,
/// and filter gradient) is computed; every other convolution is direct.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConvAlgorithm {
    /// Chosen per layer: see [`ConvAlgorithm::resolve`].
    #[default]
    Auto,
    /// The direct convolution kernels.
    Direct,
    /// Winograd for 2x2 output tiles: F(2x2, 3x3), 16 multiplies per tile and input channel
    /// instead of 36, or F(2x2, 5x5), 36 instead of 100, through transforms around a product on
    /// the direct kernels.
    Winograd2,
    /// Winograd for 4x4 output tiles on 3x3 filters: F(4x4, 3x3), 36 multiplies per tile and
    /// input channel instead of 144 (6x6 transforms, a few times F(2x2, 3x3)'s rounding error);
    /// 5x5 filters take F(2x2, 5x5) as under `Winograd2`.
    Winograd4,
}

/// Input channels below which Winograd's transforms cost more than its product saves.
const WINOGRAD_MIN_CHANNELS: usize = 16;

/// The shortest output side at which `Auto` takes F(4x4, 3x3) over F(2x2, 3x3): three tiles a
/// side. Measured on lavapipe (ResNet-50 at batch 4, each shape's layers in the network's
/// profile): F(4x4, 3x3) ran the forward 1.38x, 1.60x and 1.16x faster at 56, 28 and 14 values a
/// side, and 1.84x slower at 7 (two tiles a side); AlexNet's 13x13 layers 1.12x faster at batch
/// 16 (docs/results.md#winograd-f4x4-3x3). Measured on no GPU, so `Auto` takes F(4x4, 3x3) on
/// software adapters only; `convnet tune` decides on GPUs.
const WINOGRAD4_MIN_SIDE: usize = 9;

/// The fewest 4x4 tiles over the batch (the grouped product's columns) at which `Auto` takes
/// F(4x4, 3x3): AlexNet's 13x13 layers at batch 2 (32 tiles) ran 1.3x slower than with F(2x2,
/// 3x3), ResNet-50's 14x14 at batch 4 (64 tiles) 1.16x faster; below that the filter transform,
/// done each pass, and a product of few columns cost more than the multiplies saved.
const WINOGRAD4_MIN_TILES: usize = 64;

impl ConvAlgorithm {
    /// The algorithm of a convolution from `in_per_group` to `out_per_group` channels with a
    /// `filter_side` square filter and an output of `batch` x `height` x `width` values a
    /// channel, never `Auto`: the forced one, or (`Auto`) Winograd where both sides have at least
    /// 16 channels, so that the product, not the transforms, carries the time (direct
    /// elsewhere), with 4x4 output tiles for a 3x3 filter on a software adapter (`software`:
    /// where that was measured; on GPUs `convnet tune` takes them where they measure faster)
    /// where the output has at least `WINOGRAD4_MIN_SIDE` (9) values a side and the batch at
    /// least `WINOGRAD4_MIN_TILES` (64) such tiles. Winograd4 on another filter size is
    /// Winograd2 (a 5x5 filter has one form, F(2x2, 5x5)). (Whether Winograd applies at all, by
    /// filter and stride, is the convolution's to say.)
    pub fn resolve(
        self,
        in_per_group: usize,
        out_per_group: usize,
        filter_side: usize,
        [batch, height, width]: [usize; 3],
        software: bool,
    ) -> ConvAlgorithm {
        let wide = in_per_group >= WINOGRAD_MIN_CHANNELS && out_per_group >= WINOGRAD_MIN_CHANNELS;
        let tiles = batch * height.div_ceil(4) * width.div_ceil(4);
        let large_tiles = software
            && filter_side == 3
            && height.min(width) >= WINOGRAD4_MIN_SIDE
            && tiles >= WINOGRAD4_MIN_TILES;
        match self {
            ConvAlgorithm::Auto if wide && large_tiles => ConvAlgorithm::Winograd4,
            ConvAlgorithm::Auto if wide => ConvAlgorithm::Winograd2,
            ConvAlgorithm::Auto => ConvAlgorithm::Direct,
            ConvAlgorithm::Winograd4 if filter_side != 3 => ConvAlgorithm::Winograd2,
            forced => forced,
        }
    }
}

/// Which kernel computes a fully connected layer's forward product.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinearKernel {
    /// Chosen per adapter and shape: see [`LinearKernel::resolve`].
    #[default]
    Auto,
    /// `gemm`: 16 rows x 16 columns per invocation; best when the batch fills the rows.
    Block16,
    /// `gemm_small_batch`: 4 rows x 16 columns per invocation, the reduction split into
    /// `chunks` (1: no split, no reduction pass).
    SmallBatch {
        /// How many parts the reduction is split into.
        chunks: usize,
    },
}

/// Below this batch the 16-row block computes more padding rows than real ones.
const SMALL_BATCH: usize = 16;

/// Invocations a GPU wants in flight for one dispatch (a few per core of a large GPU); split-K
/// makes up for the few column blocks of a fully connected layer at a small batch.
const GPU_INVOCATIONS: usize = 16_384;

/// The shortest reduction chunk worth a pass of its own.
pub(crate) const MIN_CHUNK_DEPTH: usize = 256;

impl std::fmt::Display for LinearKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinearKernel::Auto => write!(f, "auto"),
            LinearKernel::Block16 => write!(f, "block16"),
            LinearKernel::SmallBatch { chunks: 1 } => write!(f, "small-batch"),
            LinearKernel::SmallBatch { chunks } => write!(f, "small-batch split-k {chunks}"),
        }
    }
}

impl LinearKernel {
    /// Whether it names a real kernel (a cache file could hold `auto` or zero chunks).
    pub fn is_definite(&self) -> bool {
        match self {
            LinearKernel::Auto => false,
            LinearKernel::Block16 => true,
            LinearKernel::SmallBatch { chunks } => *chunks >= 1,
        }
    }

    /// The kernel for a `rows x depth` by `depth x columns` product on a software (CPU) or
    /// hardware adapter. Software adapters take the 16-row block once the batch fills it; they
    /// run each workgroup on one thread, so a few hundred invocations already keep every core
    /// busy and split-K would only add a pass. GPUs always take the 4-row kernel (the 16x16
    /// block's 256 accumulators would spill out of a GPU thread's registers) with enough chunks
    /// to reach 16,384 invocations.
    pub fn resolve(self, rows: usize, depth: usize, columns: usize, software: bool) -> Self {
        match self {
            LinearKernel::Auto if software && rows >= SMALL_BATCH => LinearKernel::Block16,
            LinearKernel::Auto => {
                let blocks = columns.div_ceil(BLOCK) * rows.div_ceil(4);
                let chunks = if software {
                    1
                } else {
                    GPU_INVOCATIONS
                        .div_ceil(blocks)
                        .min(depth / MIN_CHUNK_DEPTH)
                        .max(1)
                };
                LinearKernel::SmallBatch { chunks }
            }
            LinearKernel::SmallBatch { chunks } => LinearKernel::SmallBatch {
                chunks: chunks.clamp(1, depth.max(1)),
            },
            forced => forced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{KernelShape, LinearKernel};

    #[test]
    fn convolutions_take_the_tiled_kernel_on_gpus_that_can_run_it() {
        assert_eq!(
            KernelShape::Auto.resolve(true, true),
            KernelShape::RegisterBlock
        );
        assert_eq!(
            KernelShape::Auto.resolve(false, true),
            KernelShape::WorkgroupTile
        );
        assert_eq!(
            KernelShape::Auto.resolve(false, false),
            KernelShape::RegisterBlock
        );
        let forced = KernelShape::WorkgroupTile;
        assert_eq!(forced.resolve(true, true), forced);
    }

    #[test]
    fn fully_connected_layers_split_the_reduction_only_on_gpus() {
        // AlexNet's fc1 (9216 -> 4096) at batch 2 and 32.
        let fc1 = |rows, software| LinearKernel::Auto.resolve(rows, 9216, 4096, software);
        assert_eq!(fc1(2, true), LinearKernel::SmallBatch { chunks: 1 });
        assert_eq!(fc1(32, true), LinearKernel::Block16);
        // 256 blocks of 16 columns: 64 chunks wanted, at most 9216 / 256 = 36.
        assert_eq!(fc1(2, false), LinearKernel::SmallBatch { chunks: 36 });
        // 2048 blocks at batch 32: 8 chunks reach 16k invocations.
        assert_eq!(fc1(32, false), LinearKernel::SmallBatch { chunks: 8 });
        let forced = LinearKernel::SmallBatch { chunks: 100 };
        assert_eq!(
            forced.resolve(2, 7, 5, true),
            LinearKernel::SmallBatch { chunks: 7 }
        );
    }

    #[test]
    fn auto_takes_winograd_by_channels_and_large_tiles_by_side_and_tile_count() {
        use super::ConvAlgorithm::*;
        // AlexNet's 13x13 conv3: 2x2 tiles at batch 2 (32 4x4 tiles), 4x4 from batch 4 (64).
        assert_eq!(Auto.resolve(256, 384, 3, [2, 13, 13], true), Winograd2);
        assert_eq!(Auto.resolve(256, 384, 3, [4, 13, 13], true), Winograd4);
        // ResNet-50's 7x7 layers never (two tiles a side), whatever the batch.
        assert_eq!(Auto.resolve(512, 512, 3, [256, 7, 7], true), Winograd2);
        // 5x5 filters have one form; narrow layers stay direct.
        assert_eq!(Auto.resolve(48, 128, 5, [32, 27, 27], true), Winograd2);
        assert_eq!(Auto.resolve(3, 64, 3, [32, 224, 224], true), Direct);
        // On a GPU (unmeasured there) auto keeps 2x2 tiles.
        assert_eq!(Auto.resolve(256, 384, 3, [32, 13, 13], false), Winograd2);
        // A forced algorithm is kept; Winograd4 on a 5x5 filter is Winograd2.
        assert_eq!(Winograd4.resolve(48, 128, 5, [32, 27, 27], true), Winograd2);
        assert_eq!(Winograd4.resolve(3, 64, 3, [1, 7, 7], true), Winograd4);
        assert_eq!(Direct.resolve(256, 256, 3, [32, 56, 56], true), Direct);
    }
}
