//! The compiled compute pipelines: one per WGSL kernel, compiled with the device, and the kernels
//! specialised to a layer's shape, compiled when a network first needs them.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::shaders::{self, ShaderSource};

/// Invocations per workgroup. On a CPU adapter (lavapipe, llvmpipe) a workgroup runs on one
/// thread in SIMD lanes of 8, and small workgroups of big register blocks measured fastest; on
/// GPUs 64 invocations (two warps, one wavefront) keep the SMs fed.
pub(crate) fn workgroup_size(software: bool) -> u32 {
    if software {
        16
    } else {
        64
    }
}

/// Which kernel computes a fully connected layer's forward product.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LinearKernel {
    /// Chosen per adapter and shape: see [`LinearKernel::resolve`].
    #[default]
    Auto,
    /// `gemm`: 16 rows x 16 columns per invocation; best when the batch fills the rows.
    Block16,
    /// `gemm_small_batch`: 4 rows x 16 columns per invocation, the reduction split into
    /// `chunks` (1: no split, no reduction pass).
    SmallBatch { chunks: usize },
}

/// Below this batch the 16-row block computes more padding rows than real ones.
const SMALL_BATCH: usize = 16;

/// Invocations a GPU wants in flight for one dispatch (a few per core of a large GPU); split-K
/// makes up for the few column blocks of a fully connected layer at a small batch.
const GPU_INVOCATIONS: usize = 16_384;

/// The shortest reduction chunk worth a pass of its own.
const MIN_CHUNK_DEPTH: usize = 256;

impl LinearKernel {
    /// The kernel for a `rows x depth` by `depth x columns` product on a software (CPU) or
    /// hardware adapter. Software adapters take the 16-row block once the batch fills it; they
    /// run each workgroup on one thread, so a few hundred invocations already keep every core
    /// busy and split-K would only add a pass. GPUs always take the 4-row kernel (the 16x16
    /// block's 256 accumulators would spill out of a GPU thread's registers) with enough chunks
    /// to reach [`GPU_INVOCATIONS`].
    pub fn resolve(self, rows: usize, depth: usize, columns: usize, software: bool) -> Self {
        match self {
            LinearKernel::Auto if software && rows >= SMALL_BATCH => LinearKernel::Block16,
            LinearKernel::Auto => {
                let blocks = columns.div_ceil(16) * rows.div_ceil(4);
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

/// Which shape of kernel computes the convolutions (forward, filter gradient, stride-1 input
/// gradient) or the fully connected layers' backward products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// The tiled kernels' workgroup (16 x 16 invocations) and workgroup memory (two tiles of 16 x 64
/// floats).
pub const TILED_INVOCATIONS: u32 = 256;
pub const TILED_WORKGROUP_BYTES: u32 = 8192;

impl KernelShape {
    /// The kernel for a software (CPU) or hardware adapter; `tiled_available` is false where the
    /// adapter's limits cannot run the tiled kernel.
    pub fn resolve(self, software: bool, tiled_available: bool) -> Self {
        match self {
            KernelShape::Auto if software || !tiled_available => KernelShape::RegisterBlock,
            KernelShape::Auto => KernelShape::WorkgroupTile,
            forced => forced,
        }
    }
}

/// Which kernel variants a device's networks use. `Default` chooses per adapter; tests and
/// `--linear-kernel` / `--conv-kernel` / `--matmul-kernel` force one, so that every variant is
/// checked on the software adapters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Variants {
    /// The fully connected layers' forward product.
    pub linear: LinearKernel,
    /// The convolutions.
    pub conv: KernelShape,
    /// The fully connected layers' backward products.
    pub matmul: KernelShape,
}

/// A compiled kernel and the entry point it runs, by which profiles name it.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
}

/// Every kernel, compiled for one device.
pub struct Kernels {
    /// The `WORKGROUP_SIZE` every kernel was compiled with.
    pub workgroup_size: u32,
    pub conv2d_forward: Kernel,
    /// `None` where the adapter's limits cannot hold its 16x16 workgroup and 8 KiB of
    /// workgroup memory (some downlevel GL adapters).
    pub conv2d_forward_tiled: Option<Kernel>,
    pub conv2d_pad_input: Kernel,
    pub gemm: Kernel,
    pub gemm_small_batch: Kernel,
    pub gemm_split_k_reduce: Kernel,
    pub batch_norm_forward: Kernel,
    pub add_forward: Kernel,
    pub adaptive_avg_pool_forward: Kernel,
    pub concat_forward: Kernel,
    pub conv2d_backward_data: Kernel,
    pub conv2d_backward_filter: Kernel,
    /// `None` where conv2d_forward_tiled is.
    pub conv2d_backward_filter_tiled: Option<Kernel>,
    pub conv2d_transpose_weights: Kernel,
    pub conv2d_transpose_grad_output: Kernel,
    pub sum_chunks: Kernel,
    pub bias_backward: Kernel,
    pub relu_backward: Kernel,
    pub matmul: Kernel,
    /// `None` where conv2d_forward_tiled is.
    pub matmul_tiled: Option<Kernel>,
    pub sgd: Kernel,
    /// Pipelines of [`Kernels::specialised`], by entry point and constants.
    specialised: Mutex<HashMap<Specialisation, Kernel>>,
}

/// A kernel's entry point and the override constants it was specialised with (as f64 bits, so
/// that the key can be hashed).
type Specialisation = (&'static str, Vec<(&'static str, u64)>);

/// Compiles one kernel. `workgroup_size` sets its `WORKGROUP_SIZE` override; `None` for the
/// kernels whose workgroup shape is fixed by their tiling.
pub(crate) fn compile(
    device: &wgpu::Device,
    shader: &ShaderSource,
    workgroup_size: Option<u32>,
) -> Kernel {
    compile_with(device, shader, workgroup_size, &[])
}

/// Compiles one kernel with override constants besides its workgroup size.
fn compile_with(
    device: &wgpu::Device,
    shader: &ShaderSource,
    workgroup_size: Option<u32>,
    overrides: &[(&'static str, f64)],
) -> Kernel {
    let size = workgroup_size.map(|s| ("WORKGROUP_SIZE", f64::from(s)));
    let constants: Vec<(&str, f64)> = size.into_iter().chain(overrides.iter().copied()).collect();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(shader.file),
        source: wgpu::ShaderSource::Wgsl(shader.source.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(shader.entry_point),
        // The bind group layout is derived from the shader's own declarations.
        layout: None,
        module: &module,
        entry_point: Some(shader.entry_point),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &constants,
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    Kernel {
        name: shader.entry_point,
        pipeline,
    }
}

impl Kernels {
    /// Compiles every kernel. Errors surface through the caller's error scope.
    pub fn new(device: &wgpu::Device, software: bool, limits: &wgpu::Limits) -> Self {
        let size = Some(workgroup_size(software));
        let tiled_fits = limits.max_compute_invocations_per_workgroup >= TILED_INVOCATIONS
            && limits.max_compute_workgroup_size_x >= 16
            && limits.max_compute_workgroup_size_y >= 16
            && limits.max_compute_workgroup_storage_size >= TILED_WORKGROUP_BYTES;
        Kernels {
            workgroup_size: workgroup_size(software),
            conv2d_forward: compile(device, &shaders::CONV2D_FORWARD, size),
            conv2d_forward_tiled: tiled_fits
                .then(|| compile(device, &shaders::CONV2D_FORWARD_TILED, None)),
            conv2d_pad_input: compile(device, &shaders::CONV2D_PAD_INPUT, size),
            gemm: compile(device, &shaders::GEMM, size),
            gemm_small_batch: compile(device, &shaders::GEMM_SMALL_BATCH, size),
            gemm_split_k_reduce: compile(device, &shaders::GEMM_SPLIT_K_REDUCE, size),
            batch_norm_forward: compile(device, &shaders::BATCH_NORM_FORWARD, size),
            add_forward: compile(device, &shaders::ADD_FORWARD, size),
            adaptive_avg_pool_forward: compile(device, &shaders::ADAPTIVE_AVG_POOL_FORWARD, size),
            concat_forward: compile(device, &shaders::CONCAT_FORWARD, size),
            conv2d_backward_data: compile(device, &shaders::CONV2D_BACKWARD_DATA, size),
            conv2d_backward_filter: compile(device, &shaders::CONV2D_BACKWARD_FILTER, size),
            conv2d_backward_filter_tiled: tiled_fits
                .then(|| compile(device, &shaders::CONV2D_BACKWARD_FILTER_TILED, None)),
            conv2d_transpose_weights: compile(device, &shaders::CONV2D_TRANSPOSE_WEIGHTS, size),
            conv2d_transpose_grad_output: compile(
                device,
                &shaders::CONV2D_TRANSPOSE_GRAD_OUTPUT,
                size,
            ),
            sum_chunks: compile(device, &shaders::SUM_CHUNKS, size),
            bias_backward: compile(device, &shaders::BIAS_BACKWARD, size),
            relu_backward: compile(device, &shaders::RELU_BACKWARD, size),
            matmul: compile(device, &shaders::MATMUL, size),
            matmul_tiled: tiled_fits.then(|| compile(device, &shaders::MATMUL_TILED, None)),
            sgd: compile(device, &shaders::SGD, size),
            specialised: Mutex::new(HashMap::new()),
        }
    }

    /// `shader` with its shape parameters fixed as override constants, so that the driver
    /// unrolls its loops and folds its branches: on llvmpipe, which executes both sides of a
    /// branch on a uniform value, that made pooling 1.7x and LRN 1.3x faster. Compiled once per
    /// shape and device and shared by every layer of that shape; errors surface through the
    /// caller's error scope.
    pub(crate) fn specialised(
        &self,
        device: &wgpu::Device,
        shader: &ShaderSource,
        overrides: &[(&'static str, f64)],
    ) -> Kernel {
        let key = (
            shader.entry_point,
            overrides.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
        );
        // A panic elsewhere cannot leave the map half-updated: insertion is one call.
        let mut kernels = self.specialised.lock().unwrap_or_else(|e| e.into_inner());
        kernels
            .entry(key)
            .or_insert_with(|| compile_with(device, shader, Some(self.workgroup_size), overrides))
            .clone()
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
}
