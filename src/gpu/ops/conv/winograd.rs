//! Winograd's F(2x2, 3x3) for the 3x3 stride-1 convolutions (forward, and the input gradient,
//! which is one): the filters, the 4x4 input tiles and the products transformed by three kernels
//! (`winograd_filter`, `winograd_input`, `winograd_output`), and the 16 products between them
//! summed over the input channels as one grouped 1x1 convolution on the direct kernels (16
//! groups per group of the layer, one per position of the 4x4 transform), so that the product
//! runs at the rate of the direct kernels' best case on 2.25x fewer multiply-adds. The algebra
//! and the layouts: shaders/common/winograd_params.wgsl; why: docs/kernels.md.
//!
//! The tiles are processed in chunks small enough that the transformed inputs and the products
//! each fit one storage binding (VGG-16's first layers at batch 8 need several).

use super::{Conv2dParams, Variant};
use crate::error::Result;
use crate::gpu::builder::{u32_of, Builder, Purpose};
use crate::gpu::kernel::{kernel_params, Dispatch, KernelDef};
use crate::shaders::{self, BLOCK};

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
    }
}

const FILTER: KernelDef<WinogradParams> = KernelDef::flat(shaders::WINOGRAD_FILTER);
const INPUT: KernelDef<WinogradParams> = KernelDef::flat(shaders::WINOGRAD_INPUT);
const OUTPUT: KernelDef<WinogradParams> = KernelDef::flat(shaders::WINOGRAD_OUTPUT);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    vec![FILTER.contract(), INPUT.contract(), OUTPUT.contract()]
}

/// Positions of the 4x4 transform: the products per tile and input channel.
const POSITIONS: usize = 16;

/// The most values one chunk's transformed inputs or products may hold besides the binding
/// limit: 32 Mi floats (128 MiB), so that the scratch stays within a few times the layer's own
/// tensors.
const MAX_CHUNK_VALUES: usize = 32 << 20;

/// Whether the convolution of `params` runs through Winograd on this device: a 3x3 stride-1
/// convolution, the device's algorithm choice takes it at these channel counts, and its
/// transformed filters and one tile's transformed values fit a storage binding (else it stays
/// direct, whose weights are 16/9 times smaller).
pub(super) fn applies(b: &Builder, params: &Conv2dParams) -> bool {
    let groups = params.groups as usize;
    let shape = (params.kernel_height, params.kernel_width);
    let stride = (params.stride_height, params.stride_width);
    let (filters, tile) = transformed_bytes(params);
    shape == (3, 3)
        && stride == (1, 1)
        && filters <= b.max_binding
        && tile <= b.max_binding
        && b.ctx.conv_algorithm().winograd(
            params.in_channels as usize / groups,
            params.out_channels as usize / groups,
        )
}

/// Bytes of the transformed filters, and of one tile's transformed inputs or products (the
/// larger).
fn transformed_bytes(params: &Conv2dParams) -> (u64, u64) {
    let channels = u64::from(params.in_channels);
    let filters = POSITIONS as u64 * channels * u64::from(params.packed_out_per_group);
    let tile = POSITIONS as u64 * channels.max(u64::from(params.out_channels));
    (4 * filters, 4 * tile)
}

/// The dispatches of the convolution of `params` through Winograd's F(2x2, 3x3): the filters
/// transformed, then chunk by chunk of tiles the inputs transformed, the grouped 1x1 product on
/// the device's direct kernel, and the products transformed into the output (bias and ReLU
/// added there). `args` are input, packed weights, bias, output, as the direct kernels take them;
/// `params` describes the unpadded input (the input transform reads zeros outside it). Only for
/// a convolution that [`applies`] (which checks that the transforms fit a binding).
pub(super) fn convolution(
    b: &mut Builder,
    variant: Variant,
    label: &str,
    params: &Conv2dParams,
    [input, weights, bias, output]: [&wgpu::Buffer; 4],
) -> Result<Vec<Dispatch>> {
    let channels = params.in_channels as usize;
    let out_channels = params.out_channels as usize;
    let groups = params.groups as usize;
    let packed_out = params.packed_out_per_group as usize;
    let tiles_down = (params.out_height as usize).div_ceil(2);
    let tiles_across = (params.out_width as usize).div_ceil(2);
    let tiles = params.batch as usize * tiles_down * tiles_across;
    let per_tile = (transformed_bytes(params).1 / 4) as usize;
    let most_values = MAX_CHUNK_VALUES.min((b.max_binding / 4) as usize);
    let chunk = (most_values / per_tile).clamp(1, tiles);
    let transform = |first_tile: usize, chunk_tiles: usize| -> Result<WinogradParams> {
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
            tiles_down: u32_of(tiles_down, "tiles")?,
            tiles_across: u32_of(tiles_across, "tiles")?,
            first_tile: u32_of(first_tile, "tiles")?,
            tiles: u32_of(chunk_tiles, "tiles")?,
            pad_top: params.pad_top,
            pad_left: params.pad_left,
            relu: params.relu,
        })
    };

    let filters_len = POSITIONS * channels * packed_out;
    let filters = b.scratch(&format!("{label} Winograd filters"), filters_len);
    let inputs = b.scratch(
        &format!("{label} Winograd inputs"),
        POSITIONS * channels * chunk,
    );
    let products = b.scratch(
        &format!("{label} Winograd products"),
        POSITIONS * out_channels * chunk,
    );
    // The product adds no bias (the output transform does): zeros as created, never written.
    let zero_bias = b.storage(
        &format!("{label} Winograd zero bias"),
        POSITIONS * out_channels,
        Purpose::Scratch,
    );
    let mut dispatches = Vec::new();
    let filter_label = format!("{label} Winograd filters");
    let workgroups = b.grid_1d(&filter_label, channels * packed_out)?;
    let filter_params = transform(0, 0)?;
    let args = [weights, &filters];
    dispatches.push(b.dispatch(&filter_label, &FILTER, &filter_params, &args, workgroups));

    for first_tile in (0..tiles).step_by(chunk) {
        let chunk_tiles = chunk.min(tiles - first_tile);
        let chunk_params = transform(first_tile, chunk_tiles)?;
        let input_label = format!("{label} Winograd inputs");
        let workgroups = b.grid_1d(&input_label, channels * chunk_tiles)?;
        let args = [input, &inputs];
        dispatches.push(b.dispatch(&input_label, &INPUT, &chunk_params, &args, workgroups));

        // The 16 products (per group of the layer) as a grouped 1x1 convolution over a
        // 1 x chunk_tiles "image" of 16 x channels.
        let width = u32_of(chunk_tiles, "tiles")?;
        let product = Conv2dParams {
            batch: 1,
            in_channels: u32_of(POSITIONS * channels, "channels")?,
            in_height: 1,
            in_width: width,
            out_channels: u32_of(POSITIONS * out_channels, "channels")?,
            out_height: 1,
            out_width: width,
            groups: u32_of(POSITIONS * groups, "groups")?,
            kernel_height: 1,
            kernel_width: 1,
            stride_height: 1,
            stride_width: 1,
            packed_out_per_group: params.packed_out_per_group,
            packed_in_per_group: u32_of((channels / groups).next_multiple_of(BLOCK), "channels")?,
            // No padding, no ReLU (the output transform applies it).
            ..Default::default()
        };
        let args = [&inputs, &filters, &zero_bias, &products];
        dispatches.push(variant.forward(
            b,
            &format!("{label} Winograd product"),
            &product,
            args,
        )?);

        let output_label = format!("{label} Winograd outputs");
        let workgroups = b.grid_1d(&output_label, out_channels * chunk_tiles)?;
        let args = [&products, bias, output];
        dispatches.push(b.dispatch(&output_label, &OUTPUT, &chunk_params, &args, workgroups));
    }
    Ok(dispatches)
}
