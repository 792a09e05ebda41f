//! Winograd's F(2x2, 3x3), F(4x4, 3x3) and F(2x2, 5x5) for the 3x3 and 5x5 stride-1
//! convolutions (forward, and the input gradient, which is one): the filters, the input tiles
//! (4x4 or 6x6) and the products transformed by three kernels (`winograd_filter`,
//! `winograd_input`, `winograd_output`, or their `winograd4_` and `winograd5_` versions, whose
//! 6x6 input transform is one file, `winograd6_input`), and the
//! 16 or 36 products between them summed over the input channels as one grouped 1x1 convolution
//! on the direct kernels (one group per position of the transform and group of the layer), so
//! that the product runs at the rate of the direct kernels' best case on 2.25x, 4x or 2.78x
//! fewer multiply-adds. The filter
//! gradient is the same algorithm transposed: the output gradient's tiles transformed
//! (`winograd_gradient`), the sums over the tiles as that grouped 1x1 convolution's filter
//! gradient, and the sums back to filters (`winograd_filter_gradient`). [`Form`] picks the
//! transforms by filter size and the layer's algorithm (Winograd2 or Winograd4). The algebra and the layouts: shaders/common/winograd_params.wgsl;
//! why: docs/kernels.md.
//!
//! The tiles are processed in chunks small enough that the transformed inputs and the products
//! each fit one storage binding (VGG-16's first layers at batch 8 need several).

use super::{Conv2dParams, ConvAlgorithm, Variant};
use crate::error::{Error, Result};
use crate::gpu::builder::{u32_of, Builder, Purpose};
use crate::gpu::kernel::{kernel_params, Dispatch, KernelDef};
use crate::shaders::{self, Element, Elements, BLOCK};

kernel_params! {
    /// The Winograd transforms' parameters (shaders/common/winograd_params.wgsl).
    pub(crate) struct WinogradParams {
        batch: u32,
        channels: u32,
        in_height: u32,
        in_width: u32,
        out_channels: u32,
        out_height: u32,
        out_width: u32,
        groups: u32,
        packed_out: u32,
        tiles_down: u32,
        tiles_across: u32,
        first_tile: u32,
        tiles: u32,
        pad_top: u32,
        pad_left: u32,
        relu: u32,
        accumulate: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// The five transforms of one Winograd algorithm.
struct Transforms {
    filter: KernelDef<WinogradParams>,
    input: KernelDef<WinogradParams>,
    output: KernelDef<WinogradParams>,
    gradient: KernelDef<WinogradParams>,
    filter_gradient: KernelDef<WinogradParams>,
}

const F2X3: Transforms = Transforms {
    filter: KernelDef::flat(shaders::WINOGRAD_FILTER),
    input: KernelDef::flat(shaders::WINOGRAD_INPUT),
    output: KernelDef::flat(shaders::WINOGRAD_OUTPUT),
    gradient: KernelDef::flat(shaders::WINOGRAD_GRADIENT),
    filter_gradient: KernelDef::flat(shaders::WINOGRAD_FILTER_GRADIENT),
};

const F4X3: Transforms = Transforms {
    filter: KernelDef::flat(shaders::WINOGRAD4_FILTER),
    input: KernelDef::flat(shaders::WINOGRAD4_INPUT),
    output: KernelDef::flat(shaders::WINOGRAD4_OUTPUT),
    gradient: KernelDef::flat(shaders::WINOGRAD4_GRADIENT),
    filter_gradient: KernelDef::flat(shaders::WINOGRAD4_FILTER_GRADIENT),
};

const F2X5: Transforms = Transforms {
    filter: KernelDef::flat(shaders::WINOGRAD5_FILTER),
    input: KernelDef::flat(shaders::WINOGRAD5_INPUT),
    output: KernelDef::flat(shaders::WINOGRAD5_OUTPUT),
    gradient: KernelDef::flat(shaders::WINOGRAD5_GRADIENT),
    filter_gradient: KernelDef::flat(shaders::WINOGRAD5_FILTER_GRADIENT),
};

/// A Winograd algorithm: F(2x2, 3x3) for 3x3 filters (4x4 transforms), F(4x4, 3x3) for 3x3
/// filters under Winograd4 (6x6 transforms), or F(2x2, 5x5) for 5x5 filters (6x6 transforms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    F2x3,
    F4x3,
    F2x5,
}

impl Form {
    /// The form for a stride-1 convolution of this square filter size under `algorithm`, if
    /// there is one.
    fn of(params: &Conv2dParams, algorithm: ConvAlgorithm) -> Option<Self> {
        let shape = (params.kernel_height, params.kernel_width);
        let stride = (params.stride_height, params.stride_width);
        match (algorithm, shape, stride) {
            (ConvAlgorithm::Winograd2, (3, 3), (1, 1)) => Some(Form::F2x3),
            (ConvAlgorithm::Winograd4, (3, 3), (1, 1)) => Some(Form::F4x3),
            (ConvAlgorithm::Winograd2, (5, 5), (1, 1)) => Some(Form::F2x5),
            _ => None,
        }
    }

    /// Positions of the transform (its side squared): the products per tile and input channel.
    fn positions(self) -> usize {
        match self {
            Form::F2x3 => 16,
            Form::F4x3 | Form::F2x5 => 36,
        }
    }

    /// The side of its output tiles (the shaders' OUTPUT_TILE).
    fn output_tile(self) -> usize {
        match self {
            Form::F2x3 | Form::F2x5 => 2,
            Form::F4x3 => 4,
        }
    }

    fn transforms(self) -> &'static Transforms {
        match self {
            Form::F2x3 => &F2X3,
            Form::F4x3 => &F4X3,
            Form::F2x5 => &F2X5,
        }
    }
}

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    [F2X3, F4X3, F2X5]
        .iter()
        .flat_map(|t| {
            [
                t.filter.contract(),
                t.input.contract(),
                t.output.contract(),
                t.gradient.contract(),
                t.filter_gradient.contract(),
            ]
        })
        .collect()
}

/// The most values one chunk's transformed inputs or products may hold besides the binding
/// limit: 32 Mi floats (128 MiB), so that the scratch stays within a few times the layer's own
/// tensors.
const MAX_CHUNK_VALUES: usize = 32 << 20;

/// Whether the convolution of `params` runs through Winograd under `algorithm` on this device:
/// a Winograd algorithm, and a 3x3 or 5x5 stride-1 convolution whose transformed filters and
/// one tile's transformed values fit a storage binding (else it stays direct, whose weights are
/// 16/9, 36/9 or 36/25 times smaller).
pub(super) fn fits(b: &Builder, params: &Conv2dParams, algorithm: ConvAlgorithm) -> bool {
    Form::of(params, algorithm).is_some_and(|form| {
        let (filters, tile) = transformed_bytes(params, form);
        filters <= b.max_binding && tile <= b.max_binding
    })
}

/// Bytes of the transformed filters (or their gradient's sums), and of one tile's transformed
/// inputs, products or output gradients (the largest).
fn transformed_bytes(params: &Conv2dParams, form: Form) -> (u64, u64) {
    let positions = form.positions() as u64;
    let channels = u64::from(params.in_channels);
    let packed_out = u64::from(params.groups) * u64::from(params.packed_out_per_group);
    let filters = positions * channels * u64::from(params.packed_out_per_group);
    let tile = positions * channels.max(packed_out);
    (4 * filters, 4 * tile)
}

/// How a convolution's output tiles are cut into chunks: the tiles across and down an image,
/// their total over the batch, and the most one chunk holds (its transformed values within a
/// binding and [`MAX_CHUNK_VALUES`]).
struct Tiling {
    form: Form,
    tiles_across: usize,
    tiles_down: usize,
    tiles: usize,
    chunk: usize,
}

impl Tiling {
    /// Fails for a convolution that has no Winograd form (callers check [`fits`]).
    fn of(b: &Builder, params: &Conv2dParams, algorithm: ConvAlgorithm) -> Result<Self> {
        let form = Form::of(params, algorithm).ok_or_else(|| {
            Error::Internal("a convolution without a Winograd form sent through Winograd".into())
        })?;
        let tiles_down = (params.out_height as usize).div_ceil(form.output_tile());
        let tiles_across = (params.out_width as usize).div_ceil(form.output_tile());
        let tiles = params.batch as usize * tiles_down * tiles_across;
        let per_tile = (transformed_bytes(params, form).1 / 4) as usize;
        let most_values = MAX_CHUNK_VALUES.min((b.max_binding / 4) as usize);
        let chunk = (most_values / per_tile).clamp(1, tiles);
        Ok(Tiling {
            form,
            tiles_across,
            tiles_down,
            tiles,
            chunk,
        })
    }

    /// The chunks as (first tile, tiles).
    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.tiles)
            .step_by(self.chunk)
            .map(|first| (first, self.chunk.min(self.tiles - first)))
    }

    /// The transforms' parameters for the chunk of `tiles` tiles from `first_tile`.
    fn params(
        &self,
        params: &Conv2dParams,
        first_tile: usize,
        tiles: usize,
    ) -> Result<WinogradParams> {
        Ok(WinogradParams {
            batch: params.batch,
            channels: params.in_channels,
            in_height: params.in_height,
            in_width: params.in_width,
            out_channels: params.out_channels,
            out_height: params.out_height,
            out_width: params.out_width,
            groups: params.groups,
            packed_out: params.packed_out_per_group,
            tiles_down: u32_of(self.tiles_down, "tiles")?,
            tiles_across: u32_of(self.tiles_across, "tiles")?,
            first_tile: u32_of(first_tile, "tiles")?,
            tiles: u32_of(tiles, "tiles")?,
            pad_top: params.pad_top,
            pad_left: params.pad_left,
            relu: params.relu,
            accumulate: u32::from(first_tile > 0),
            ..Default::default()
        })
    }
}

/// One transform's dispatch: `invocations` invocations of `kernel` (one flat grid) over `args`.
fn transform(
    b: &mut Builder,
    label: &str,
    (kernel, elements): (&KernelDef<WinogradParams>, Elements),
    params: &WinogradParams,
    args: &[&wgpu::Buffer],
    invocations: usize,
) -> Result<Dispatch> {
    let workgroups = b.grid_1d(label, invocations)?;
    Ok(b.dispatch_elements(label, kernel, elements, &[], params, args, workgroups))
}

/// The grouped 1x1 convolution of the transform's positions (per group of the layer) over a
/// 1 x `tiles` "image" of positions x channels: its product is the forward's, its filter
/// gradient the filter gradient's sums.
fn positions_as_groups(params: &Conv2dParams, form: Form, tiles: usize) -> Result<Conv2dParams> {
    let positions = form.positions();
    let width = u32_of(tiles, "tiles")?;
    let channels = params.in_channels as usize;
    Ok(Conv2dParams {
        batch: 1,
        in_channels: u32_of(positions * channels, "channels")?,
        in_height: 1,
        in_width: width,
        out_channels: u32_of(positions * params.out_channels as usize, "channels")?,
        out_height: 1,
        out_width: width,
        groups: u32_of(positions * params.groups as usize, "groups")?,
        kernel_height: 1,
        kernel_width: 1,
        stride_height: 1,
        stride_width: 1,
        packed_out_per_group: params.packed_out_per_group,
        packed_in_per_group: u32_of(
            (channels / params.groups as usize).next_multiple_of(BLOCK),
            "channels",
        )?,
        // No padding, no ReLU (the output transform applies it).
        ..Default::default()
    })
}

/// The dispatches of the convolution of `params` through Winograd (its [`Form`]): the filters
/// transformed, then chunk by chunk of tiles the inputs transformed, the grouped 1x1 product on
/// the device's direct kernel, and the products transformed into the output (bias and ReLU
/// added there). `args` are input, packed weights, bias, output, as the direct kernels take them,
/// the input, weights and output stored as `stored` (the network's element for a forward pass,
/// f32 for an input gradient); `params` describes the unpadded input (the input transform reads
/// zeros outside it). Only for a convolution that [`fits`] (which checks that the transforms fit
/// a binding).
#[allow(clippy::too_many_arguments)]
pub(super) fn convolution(
    b: &mut Builder,
    variant: Variant,
    algorithm: ConvAlgorithm,
    label: &str,
    params: &Conv2dParams,
    [input, weights, bias, output]: [&wgpu::Buffer; 4],
    stored: Element,
) -> Result<Vec<Dispatch>> {
    let channels = params.in_channels as usize;
    let out_channels = params.out_channels as usize;
    let packed_out = params.packed_out_per_group as usize;
    let tiling = Tiling::of(b, params, algorithm)?;
    let (chunk, positions) = (tiling.chunk, tiling.form.positions());
    let transforms = tiling.form.transforms();
    let filters_len = positions * channels * packed_out;
    let filters = b.scratch(&format!("{label} Winograd filters"), filters_len);
    let inputs = b.scratch(
        &format!("{label} Winograd inputs"),
        positions * channels * chunk,
    );
    let products = b.scratch(
        &format!("{label} Winograd products"),
        positions * out_channels * chunk,
    );
    // The product adds no bias (the output transform does): zeros as created, never written.
    let zero_bias = b.storage(
        &format!("{label} Winograd zero bias"),
        positions * out_channels,
        Purpose::Scratch,
    );
    // The weights and the input as stored; the transforms and products in f32.
    let from_stored = Elements::reading(stored);
    let to_stored = Elements {
        read: Element::F32,
        written: stored,
    };
    let mut dispatches = Vec::new();
    let filter_params = tiling.params(params, 0, 0)?;
    let args = [weights, &filters];
    dispatches.push(transform(
        b,
        &format!("{label} Winograd filters"),
        (&transforms.filter, from_stored),
        &filter_params,
        &args,
        channels * packed_out,
    )?);

    for (first_tile, chunk_tiles) in tiling.chunks() {
        let chunk_params = tiling.params(params, first_tile, chunk_tiles)?;
        let args = [input, &inputs];
        dispatches.push(transform(
            b,
            &format!("{label} Winograd inputs"),
            (&transforms.input, from_stored),
            &chunk_params,
            &args,
            channels * chunk_tiles,
        )?);

        let product = positions_as_groups(params, tiling.form, chunk_tiles)?;
        let args = [&inputs, &filters, &zero_bias, &products];
        dispatches.push(variant.forward(
            b,
            &format!("{label} Winograd product"),
            Elements::F32,
            &product,
            args,
        )?);

        let args = [&products, bias, output];
        dispatches.push(transform(
            b,
            &format!("{label} Winograd outputs"),
            (&transforms.output, to_stored),
            &chunk_params,
            &args,
            out_channels * chunk_tiles,
        )?);
    }
    Ok(dispatches)
}

/// The dispatches of the filter gradient of the convolution of `params` through Winograd's
/// (its [`Form`]), chunk by chunk of tiles: the input tiles transformed as in the forward, the
/// output gradient's tiles transformed (`A delta A^T`), the 16 sums over the tiles of their
/// products as the filter gradient of the grouped 1x1 convolution on the device's direct kernel,
/// and those sums transformed back to filters (`G^T dU G`), written by the first chunk and
/// added by the others. `args` are the input, the output gradient (through the ReLU mask
/// already) and the gradient in the packed weights' layout. Only for a convolution that
/// [`fits`].
pub(super) fn filter_gradient(
    b: &mut Builder,
    variant: Variant,
    algorithm: ConvAlgorithm,
    label: &str,
    params: &Conv2dParams,
    [input, grad_output, gradient]: [&wgpu::Buffer; 3],
) -> Result<Vec<Dispatch>> {
    let channels = params.in_channels as usize;
    let packed_out = params.packed_out_per_group as usize;
    let groups = params.groups as usize;
    let tiling = Tiling::of(b, params, algorithm)?;
    let positions = tiling.form.positions();
    let transforms = tiling.form.transforms();
    let inputs = b.scratch(
        &format!("{label} Winograd inputs"),
        positions * channels * tiling.chunk,
    );
    let gradients = b.scratch(
        &format!("{label} Winograd output gradients"),
        positions * groups * packed_out * tiling.chunk,
    );
    let sums = b.scratch(
        &format!("{label} Winograd filter gradient sums"),
        positions * channels * packed_out,
    );
    // The pixel chunks' partial sums, one buffer for every chunk of tiles (the first is the
    // largest).
    let mut partial_sums = None;
    let mut dispatches = Vec::new();
    for (first_tile, chunk_tiles) in tiling.chunks() {
        let chunk_params = tiling.params(params, first_tile, chunk_tiles)?;
        // The input as the network stores it.
        let args = [input, &inputs];
        dispatches.push(transform(
            b,
            &format!("{label} Winograd inputs"),
            (&transforms.input, Elements::reading(b.stored)),
            &chunk_params,
            &args,
            channels * chunk_tiles,
        )?);

        // Four output channels per invocation.
        let args = [grad_output, &gradients];
        dispatches.push(transform(
            b,
            &format!("{label} Winograd output gradients"),
            (&transforms.gradient, Elements::F32),
            &chunk_params,
            &args,
            chunk_tiles * groups * packed_out / 4,
        )?);

        // One reduction entry per input channel of a group: the 1x1 convolution's taps.
        let product = positions_as_groups(params, tiling.form, chunk_tiles)?;
        let taps = channels / groups;
        let args = [&inputs, &gradients, &sums];
        let sums_label = format!("{label} Winograd filter backward");
        dispatches.extend(super::filter_sums(
            b,
            variant,
            &sums_label,
            &product,
            (taps, Element::F32),
            args,
            &mut partial_sums,
        )?);

        let args = [&sums, gradient];
        dispatches.push(transform(
            b,
            &format!("{label} Winograd filter gradient"),
            (&transforms.filter_gradient, Elements::F32),
            &chunk_params,
            &args,
            channels * packed_out,
        )?);
    }
    Ok(dispatches)
}
