//! What building a network on the GPU needs, forward and backward alike: the kernels' uniform
//! parameter structs, buffer creation with memory accounting, workgroup grids within the
//! adapter's limits, bind groups, and the recorded dispatches.

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::Kernel;
use crate::model::{LayerKind, LayerPlan};
use crate::shaders::ShaderSource;

/// Register block edge of the GEMM-shaped kernels: 16 outputs by 16 outputs per invocation.
pub(crate) const BLOCK: usize = 16;

/// conv2d_forward's, conv2d_backward_data's and conv2d_backward_filter's parameters.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Conv2dParams {
    pub batch: u32,
    pub in_channels: u32,
    pub in_height: u32,
    pub in_width: u32,
    pub out_channels: u32,
    pub out_height: u32,
    pub out_width: u32,
    pub groups: u32,
    pub kernel_height: u32,
    pub kernel_width: u32,
    pub stride_height: u32,
    pub stride_width: u32,
    pub pad_top: u32,
    pub pad_left: u32,
    pub relu: u32,
    pub packed_out_per_group: u32,
    /// Only conv2d_backward_filter reads this.
    pub pixels_per_chunk: u32,
    /// Only conv2d_backward_data reads this: in_channels / groups rounded up to 16, the row
    /// length of the transposed weights.
    pub packed_in_per_group: u32,
    pub _pad: [u32; 2],
}

impl Conv2dParams {
    /// The parameters of a planned conv layer whose weights are packed `packed_out` wide.
    pub fn of(layer: &LayerPlan, packed_out: usize) -> Result<Self> {
        let LayerKind::Conv2d {
            out_channels,
            window,
            groups,
            relu,
            ..
        } = layer.layer.kind
        else {
            return Err(Error::InvalidArgument(format!(
                "{} is not a convolution",
                layer.layer.name
            )));
        };
        Ok(Conv2dParams {
            batch: u32_of(layer.batch, "batch")?,
            in_channels: u32_of(layer.input.channels, "channels")?,
            in_height: u32_of(layer.input.height, "height")?,
            in_width: u32_of(layer.input.width, "width")?,
            out_channels: u32_of(out_channels, "channels")?,
            out_height: u32_of(layer.output.height, "height")?,
            out_width: u32_of(layer.output.width, "width")?,
            groups: u32_of(groups, "groups")?,
            kernel_height: u32_of(window.height, "kernel")?,
            kernel_width: u32_of(window.width, "kernel")?,
            stride_height: u32_of(window.stride_height, "stride")?,
            stride_width: u32_of(window.stride_width, "stride")?,
            pad_top: u32_of(layer.pad.top, "padding")?,
            pad_left: u32_of(layer.pad.left, "padding")?,
            relu: u32::from(relu),
            packed_out_per_group: u32_of(packed_out, "channels")?,
            pixels_per_chunk: 0,
            packed_in_per_group: u32_of(
                (layer.input.channels / groups).next_multiple_of(BLOCK),
                "channels",
            )?,
            _pad: [0; 2],
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct GemmParams {
    pub rows: u32,
    pub depth: u32,
    pub columns: u32,
    pub packed_columns: u32,
    pub column_offset: u32,
    pub output_stride: u32,
    pub relu: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub accumulate: u32,
    pub a_offset: u32,
    pub a_row_stride: u32,
    pub a_col_stride: u32,
    pub b_offset: u32,
    pub b_row_stride: u32,
    pub b_col_stride: u32,
    pub c_row_stride: u32,
    pub _pad: u32,
}

/// Override constants a kernel is specialised with: see [`crate::gpu::Kernels`].
pub(crate) type Overrides = Vec<(&'static str, f64)>;

/// lrn_forward's and lrn_backward's parameters; the radius and beta are override constants.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct LrnParams {
    pub batch: u32,
    pub channels: u32,
    pub plane: u32,
    pub channels_per_group: u32,
    pub bias: f32,
    pub alpha: f32,
    pub _pad: [u32; 2],
}

impl LrnParams {
    pub fn of(layer: &LayerPlan) -> Result<(Self, Overrides)> {
        let LayerKind::Lrn {
            depth_radius,
            bias,
            alpha,
            beta,
            groups,
        } = layer.layer.kind
        else {
            return Err(Error::InvalidArgument(format!(
                "{} is not an LRN",
                layer.layer.name
            )));
        };
        let params = LrnParams {
            batch: u32_of(layer.batch, "batch")?,
            channels: u32_of(layer.input.channels, "channels")?,
            plane: u32_of(layer.input.height * layer.input.width, "plane")?,
            channels_per_group: u32_of(layer.input.channels / groups, "channels")?,
            bias,
            alpha,
            _pad: [0; 2],
        };
        let radius = u32_of(depth_radius, "depth_radius")?;
        let overrides = vec![
            ("DEPTH_RADIUS", f64::from(radius)),
            ("BETA", f64::from(beta)),
        ];
        Ok((params, overrides))
    }
}

/// max_pool_forward's, max_pool_argmax's and max_pool_backward's parameters; the window and
/// stride are override constants.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct MaxPoolParams {
    pub planes: u32,
    pub in_height: u32,
    pub in_width: u32,
    pub out_height: u32,
    pub out_width: u32,
    pub pad_top: u32,
    pub pad_left: u32,
    pub _pad: u32,
}

/// The pooling kernels' tiles: at most 4x4 outputs (inputs, backward) per invocation.
pub(crate) const POOL_TILE: usize = 4;

/// The forward pooling tile's edge for an output plane: the smallest (down to 2) that covers the
/// plane with no more tiles than 4x4 ones, so that no more invocations run but fewer of their
/// outputs fall past the plane's edge (AlexNet's 6x6 pool3: 3x3 tiles, 1.75x faster).
pub(crate) fn pool_tile(height: usize, width: usize) -> usize {
    let tiles = |t: usize| height.div_ceil(t) * width.div_ceil(t);
    (2..POOL_TILE)
        .find(|&t| tiles(t) == tiles(POOL_TILE))
        .unwrap_or(POOL_TILE)
}

impl MaxPoolParams {
    pub fn of(layer: &LayerPlan) -> Result<(Self, Overrides)> {
        let LayerKind::MaxPool { window } = layer.layer.kind else {
            return Err(Error::InvalidArgument(format!(
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

/// batch_norm_forward's parameters.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct BatchNormParams {
    pub len: u32,
    pub plane: u32,
    pub channels: u32,
    pub eps: f32,
    pub relu: u32,
    pub _pad: [u32; 3],
}

/// Parameters of the element-wise kernels (relu_backward, sum_chunks, bias_backward, sgd):
/// four words whose meaning each kernel's WGSL struct names.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Words4(pub [u32; 4]);

/// GPU memory a network holds, in bytes, by purpose. It is fixed at construction: a pass
/// allocates nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryUse {
    /// Packed weights and biases.
    pub weights: u64,
    /// The input and every layer's output (all kept: the backward pass reads them).
    pub activations: u64,
    /// Gradients of every layer's output and of every parameter.
    pub gradients: u64,
    /// Partial sums of split reductions and LRN's backward terms.
    pub scratch: u64,
    /// Per-dispatch parameters.
    pub uniforms: u64,
}

impl MemoryUse {
    /// Everything together.
    pub fn total(&self) -> u64 {
        self.weights + self.activations + self.gradients + self.scratch + self.uniforms
    }
}

/// One recorded kernel launch: which pipeline, its arguments, how many workgroups.
pub(crate) struct Dispatch {
    /// What it computes; it starts with its layer's name (profiles group by that).
    pub label: String,
    /// The kernel's entry point, as profiles name it.
    pub kernel: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    /// The kernel's arguments (uniform parameters and buffers).
    pub bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
}

/// Records `dispatches` as one compute pass (wgpu orders dependent dispatches).
pub(crate) fn encode_pass(
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    dispatches: &[Dispatch],
) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    });
    record_dispatches(&mut pass, dispatches);
}

/// Records `dispatches` into an open compute pass.
pub(crate) fn record_dispatches(pass: &mut wgpu::ComputePass, dispatches: &[Dispatch]) {
    for dispatch in dispatches {
        pass.set_pipeline(&dispatch.pipeline);
        pass.set_bind_group(0, &dispatch.bind_group, &[]);
        let [x, y, z] = dispatch.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// The words of a kernel's parameter struct, each checked to fit a u32.
pub(crate) fn words<const N: usize>(values: [usize; N], what: &str) -> Result<[u32; N]> {
    let mut out = [0; N];
    for (word, value) in out.iter_mut().zip(values) {
        *word = u32_of(value, what)?;
    }
    Ok(out)
}

pub(crate) fn u32_of(value: usize, what: &str) -> Result<u32> {
    u32::try_from(value)
        .map_err(|_| Error::InvalidArgument(format!("{what} ({value}) exceeds 2^32")))
}

/// Which account a buffer's bytes go to.
#[derive(Clone, Copy)]
pub(crate) enum Purpose {
    Activations,
    Gradients,
    Scratch,
}

/// Creates buffers and dispatches for one network, counting every byte.
pub(crate) struct Builder<'a> {
    pub ctx: &'a GpuContext,
    pub memory: MemoryUse,
    /// The largest buffer one storage binding may hold.
    pub max_binding: u64,
}

impl<'a> Builder<'a> {
    pub fn new(ctx: &'a GpuContext) -> Self {
        Builder {
            ctx,
            memory: MemoryUse::default(),
            max_binding: ctx
                .limits
                .max_storage_buffer_binding_size
                .min(ctx.limits.max_buffer_size),
        }
    }

    pub fn too_large(&self, what: String, detail: String) -> Error {
        Error::TooLarge {
            what,
            adapter: self.ctx.info.name.clone(),
            detail,
        }
    }

    pub fn check_binding(&self, what: &str, bytes: u64) -> Result<()> {
        if bytes > self.max_binding {
            return Err(self.too_large(
                what.to_string(),
                format!(
                    "{} MB, but one storage binding may hold at most {} MB (max_storage_buffer_binding_size)",
                    bytes / 1_000_000,
                    self.max_binding / 1_000_000
                ),
            ));
        }
        Ok(())
    }

    /// A zero-initialised storage buffer of `floats` f32.
    pub fn storage(&mut self, label: &str, floats: usize, purpose: Purpose) -> wgpu::Buffer {
        let bytes = (floats * 4) as u64;
        match purpose {
            Purpose::Activations => self.memory.activations += bytes,
            Purpose::Gradients => self.memory.gradients += bytes,
            Purpose::Scratch => self.memory.scratch += bytes,
        }
        self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer holding `data` (weights: the SGD step writes them, readback copies them).
    pub fn weights(&mut self, label: &str, data: &[f32]) -> wgpu::Buffer {
        self.memory.weights += (data.len() * 4) as u64;
        self.ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            })
    }

    pub fn uniform<T: Pod>(&mut self, label: &str, params: &T) -> wgpu::Buffer {
        self.memory.uniforms += std::mem::size_of::<T>() as u64;
        self.ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    /// A workgroup grid for `invocations` independent invocations, folded into two dimensions
    /// when one would exceed the adapter's limit (the kernels unfold it with `num_workgroups`).
    pub fn grid_1d(&self, what: &str, invocations: usize) -> Result<[u32; 3]> {
        let size = self.ctx.kernels.workgroup_size as usize;
        let max = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        let groups = invocations.div_ceil(size).max(1);
        let x = groups.min(max);
        let y = groups.div_ceil(x);
        if y > max {
            return Err(self.too_large(
                what.into(),
                format!("{invocations} invocations exceed the dispatch limit"),
            ));
        }
        Ok([x as u32, y as u32, 1])
    }

    /// A grid of `x_invocations` (in workgroups of the kernels' size) by `y` by `z` workgroups.
    pub fn grid_3d(
        &self,
        what: &str,
        x_invocations: usize,
        y: usize,
        z: usize,
    ) -> Result<[u32; 3]> {
        let x = x_invocations.div_ceil(self.ctx.kernels.workgroup_size as usize);
        self.workgroups(what, [x, y, z])
    }

    /// A grid of exactly these workgroups, within the adapter's limit per dimension.
    pub fn workgroups(&self, what: &str, [x, y, z]: [usize; 3]) -> Result<[u32; 3]> {
        let max = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        if x > max || y > max || z > max {
            return Err(self.too_large(
                what.into(),
                format!("a {x}x{y}x{z} workgroup grid exceeds the limit of {max} per dimension"),
            ));
        }
        Ok([x as u32, y as u32, z as u32])
    }

    /// `shader` specialised with `overrides` (compiled once per device and shape).
    pub fn specialised(&self, shader: &ShaderSource, overrides: &[(&'static str, f64)]) -> Kernel {
        self.ctx
            .kernels
            .specialised(&self.ctx.device, shader, overrides)
    }

    /// A dispatch of `kernel` with `uniform` at binding 0 and `buffers` at bindings 1, 2, ...
    pub fn dispatch<T: Pod>(
        &mut self,
        label: &str,
        kernel: &Kernel,
        params: &T,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Dispatch {
        let uniform = self.uniform(label, params);
        let entries: Vec<wgpu::BindGroupEntry> = std::iter::once(&uniform)
            .chain(buffers.iter().copied())
            .enumerate()
            .map(|(i, buffer)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        let bind_group = self
            .ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &kernel.pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
        Dispatch {
            label: label.to_string(),
            kernel: kernel.name,
            pipeline: kernel.pipeline.clone(),
            bind_group,
            workgroups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pool_tile;

    #[test]
    fn pooling_tiles_shrink_only_where_as_few_cover_the_plane() {
        // AlexNet's pool1 (27x27) and pool2 (13x13) keep 4x4 tiles: smaller ones need more.
        assert_eq!(pool_tile(27, 27), 4);
        assert_eq!(pool_tile(13, 13), 4);
        // pool3 (6x6): four 3x3 tiles cover it as four 4x4 ones do, with no overhang.
        assert_eq!(pool_tile(6, 6), 3);
        assert_eq!(pool_tile(2, 2), 2);
        assert_eq!(pool_tile(5, 5), 3);
        // A 1x7 row: two 4-wide tiles; 3-wide ones would take three.
        assert_eq!(pool_tile(1, 7), 4);
    }
}
