//! Pooling: max pooling (VALID, SAME, explicit padding, ceil mode) forward, with or without
//! recording each window's maximum position, and its backward gather; adaptive average pooling
//! forward. The max-pool kernels are specialised per layer (window and stride are override
//! constants) and work on tiles of outputs (forward) or inputs (backward).

use crate::error::{Error, Result};
use crate::gpu::builder::{u32_of, Builder};
use crate::gpu::kernel::{kernel_params, ByUnits, Dispatch, KernelDef, Overrides};
use crate::gpu::ops::BackwardBuffers;
use crate::model::{LayerKind, LayerPlan};
use crate::shaders::{self, POOL_TILE};

kernel_params! {
    /// max_pool_forward's, max_pool_argmax's and max_pool_backward's parameters.
    pub(crate) struct MaxPoolParams {
        planes: u32,
        in_height: u32,
        in_width: u32,
        out_height: u32,
        out_width: u32,
        pad_top: u32,
        pad_left: u32,
        _pad: u32,
    }
}

kernel_params! {
    /// adaptive_avg_pool_forward's and adaptive_avg_pool_backward's parameters
    /// (shaders/common/adaptive_pool_cells.wgsl).
    pub(crate) struct AdaptiveAvgPoolParams {
        planes: u32,
        in_height: u32,
        in_width: u32,
        out_height: u32,
        out_width: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

const MAX_FORWARD: KernelDef<MaxPoolParams> = KernelDef::flat(shaders::MAX_POOL_FORWARD);
const MAX_ARGMAX: KernelDef<MaxPoolParams> = KernelDef::flat(shaders::MAX_POOL_ARGMAX);
/// Max pooling's backward, storing a row of its tile as one vec4 where the input's width is a
/// multiple of 4 (the tile's columns then start at a multiple of 4).
const MAX_BACKWARD: ByUnits<MaxPoolParams> = ByUnits::flat(
    shaders::MAX_POOL_BACKWARD,
    shaders::MAX_POOL_BACKWARD_BY_FOUR,
);
const _: () = assert!(POOL_TILE == 4, "a tile row is one vec4");
const ADAPTIVE_AVG_FORWARD: KernelDef<AdaptiveAvgPoolParams> =
    KernelDef::flat(shaders::ADAPTIVE_AVG_POOL_FORWARD);
const ADAPTIVE_AVG_BACKWARD: KernelDef<AdaptiveAvgPoolParams> =
    KernelDef::flat(shaders::ADAPTIVE_AVG_POOL_BACKWARD);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    let mut contracts = vec![
        MAX_FORWARD.contract(),
        MAX_ARGMAX.contract(),
        ADAPTIVE_AVG_FORWARD.contract(),
        ADAPTIVE_AVG_BACKWARD.contract(),
    ];
    contracts.extend(MAX_BACKWARD.contracts());
    contracts
}

/// The forward pooling tile's edge for an output plane: the smallest (down to 2) that covers the
/// plane with no more tiles than [`POOL_TILE`]-edged ones, so that no more invocations run but
/// fewer of their outputs fall past the plane's edge (AlexNet's 6x6 pool3: 3x3 tiles, 1.75x
/// faster).
pub(crate) fn forward_tile(height: usize, width: usize) -> usize {
    let tiles = |t: usize| height.div_ceil(t) * width.div_ceil(t);
    (2..POOL_TILE)
        .find(|&t| tiles(t) == tiles(POOL_TILE))
        .unwrap_or(POOL_TILE)
}

impl MaxPoolParams {
    /// A planned max pool's parameters and override constants (window, stride).
    fn of(layer: &LayerPlan) -> Result<(Self, Overrides)> {
        let LayerKind::MaxPool { window } = layer.layer.kind else {
            return Err(Error::Internal(format!(
                "{} is not a pooling layer",
                layer.layer.name
            )));
        };
        let params = MaxPoolParams {
            planes: u32_of(layer.batch * layer.input.channels, "planes")?,
            in_height: u32_of(layer.input.height, "height")?,
            in_width: u32_of(layer.input.width, "width")?,
            out_height: u32_of(layer.output.height, "height")?,
            out_width: u32_of(layer.output.width, "width")?,
            pad_top: u32_of(layer.pad.top, "padding")?,
            pad_left: u32_of(layer.pad.left, "padding")?,
            _pad: 0,
        };
        let overrides = vec![
            ("WINDOW_HEIGHT", f64::from(u32_of(window.height, "window")?)),
            ("WINDOW_WIDTH", f64::from(u32_of(window.width, "window")?)),
            (
                "STRIDE_HEIGHT",
                f64::from(u32_of(window.stride_height, "stride")?),
            ),
            (
                "STRIDE_WIDTH",
                f64::from(u32_of(window.stride_width, "stride")?),
            ),
        ];
        Ok((params, overrides))
    }
}

/// The dispatch of a max pool's forward pass. With `argmax` (a network that trains), each
/// window's maximum position is recorded there for the backward pass.
pub(crate) fn max_forward(
    b: &mut Builder,
    layer: &LayerPlan,
    input: &wgpu::Buffer,
    output: &wgpu::Buffer,
    argmax: Option<&wgpu::Buffer>,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let (params, mut overrides) = MaxPoolParams::of(layer)?;
    let (height, width) = (layer.output.height, layer.output.width);
    let tile = forward_tile(height, width);
    overrides.push(("FORWARD_TILE", tile as f64));
    let planes = layer.batch * layer.input.channels;
    let tiles = planes * height.div_ceil(tile) * width.div_ceil(tile);
    let workgroups = b.grid_1d(name, tiles)?;
    let dispatch = match argmax {
        Some(argmax) => {
            let args = [input, output, argmax];
            b.dispatch_stored(name, &MAX_ARGMAX, &overrides, &params, &args, workgroups)
        }
        None => {
            let args = [input, output];
            let kernel = &MAX_FORWARD;
            b.dispatch_stored(name, kernel, &overrides, &params, &args, workgroups)
        }
    };
    Ok(vec![dispatch])
}

/// The dispatch of a max pool's backward pass: a gather over tiles of inputs, routed by the
/// maxima positions the training forward recorded; nothing when no input gradient is wanted.
pub(crate) fn max_backward(
    b: &mut Builder,
    layer: &LayerPlan,
    buf: &BackwardBuffers,
) -> Result<Vec<Dispatch>> {
    let Some(grad_input) = buf.grad_input else {
        return Ok(Vec::new());
    };
    let name = &layer.layer.name;
    let argmax = buf.argmax.ok_or_else(|| {
        Error::Internal(format!(
            "layer {name}: its forward pass did not record the window maxima"
        ))
    })?;
    let (params, overrides) = MaxPoolParams::of(layer)?;
    let tiles = layer.batch
        * layer.input.channels
        * layer.input.height.div_ceil(POOL_TILE)
        * layer.input.width.div_ceil(POOL_TILE);
    let label = format!("{name} backward");
    let workgroups = b.grid_1d(&label, tiles)?;
    let args = [argmax, buf.grad_output, grad_input];
    let (kernel, _) = MAX_BACKWARD.for_sizes(&[layer.input.width]);
    Ok(vec![b.dispatch_specialised(
        &label, kernel, &overrides, &params, &args, workgroups,
    )])
}

impl AdaptiveAvgPoolParams {
    fn of(layer: &LayerPlan) -> Result<Self> {
        let (i, o) = (layer.input, layer.output);
        Ok(AdaptiveAvgPoolParams {
            planes: u32_of(layer.batch * i.channels, "planes")?,
            in_height: u32_of(i.height, "height")?,
            in_width: u32_of(i.width, "width")?,
            out_height: u32_of(o.height, "height")?,
            out_width: u32_of(o.width, "width")?,
            ..Default::default()
        })
    }
}

/// The dispatch of an adaptive average pool's backward pass: one invocation per plane, cell by
/// cell; nothing when no input gradient is wanted.
pub(crate) fn adaptive_avg_backward(
    b: &mut Builder,
    layer: &LayerPlan,
    buf: &BackwardBuffers,
) -> Result<Vec<Dispatch>> {
    let Some(grad_input) = buf.grad_input else {
        return Ok(Vec::new());
    };
    let params = AdaptiveAvgPoolParams::of(layer)?;
    let label = format!("{} backward", layer.layer.name);
    let workgroups = b.grid_1d(&label, layer.batch * layer.input.channels)?;
    let args = [buf.grad_output, grad_input];
    Ok(vec![b.dispatch(
        &label,
        &ADAPTIVE_AVG_BACKWARD,
        &params,
        &args,
        workgroups,
    )])
}

/// The dispatch of an adaptive average pool's forward pass: one invocation per output.
pub(crate) fn adaptive_avg_forward(
    b: &mut Builder,
    layer: &LayerPlan,
    input: &wgpu::Buffer,
    output: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let o = layer.output;
    let params = AdaptiveAvgPoolParams::of(layer)?;
    let workgroups = b.grid_1d(name, layer.batch * o.len())?;
    let args = [input, output];
    let kernel = &ADAPTIVE_AVG_FORWARD;
    Ok(vec![b.dispatch_stored(
        name,
        kernel,
        &[],
        &params,
        &args,
        workgroups,
    )])
}

#[cfg(test)]
mod tests {
    use super::forward_tile;

    #[test]
    fn pooling_tiles_shrink_only_where_as_few_cover_the_plane() {
        // AlexNet's pool1 (27x27) and pool2 (13x13) keep 4x4 tiles: smaller ones need more.
        assert_eq!(forward_tile(27, 27), 4);
        assert_eq!(forward_tile(13, 13), 4);
        // pool3 (6x6): four 3x3 tiles cover it as four 4x4 ones do, with no overhang.
        assert_eq!(forward_tile(6, 6), 3);
        assert_eq!(forward_tile(2, 2), 2);
        assert_eq!(forward_tile(5, 5), 3);
        // A 1x7 row: two 4-wide tiles; 3-wide ones would take three.
        assert_eq!(forward_tile(1, 7), 4);
    }
}
