//! The compiled compute pipelines, one per WGSL kernel.

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

/// Every kernel, compiled for one device.
pub struct Kernels {
    /// The `WORKGROUP_SIZE` every kernel was compiled with.
    pub workgroup_size: u32,
    pub conv2d_forward: wgpu::ComputePipeline,
    pub gemm: wgpu::ComputePipeline,
    pub lrn_forward: wgpu::ComputePipeline,
    pub max_pool_forward: wgpu::ComputePipeline,
    pub batch_norm_forward: wgpu::ComputePipeline,
    pub add_forward: wgpu::ComputePipeline,
    pub adaptive_avg_pool_forward: wgpu::ComputePipeline,
    pub concat_forward: wgpu::ComputePipeline,
    pub conv2d_backward_data: wgpu::ComputePipeline,
    pub conv2d_backward_filter: wgpu::ComputePipeline,
    pub sum_chunks: wgpu::ComputePipeline,
    pub bias_backward: wgpu::ComputePipeline,
    pub relu_backward: wgpu::ComputePipeline,
    pub lrn_backward_prepare: wgpu::ComputePipeline,
    pub lrn_backward: wgpu::ComputePipeline,
    pub max_pool_backward: wgpu::ComputePipeline,
    pub matmul: wgpu::ComputePipeline,
    pub sgd: wgpu::ComputePipeline,
}

pub(crate) fn compile(
    device: &wgpu::Device,
    shader: &ShaderSource,
    workgroup_size: u32,
) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(shader.file),
        source: wgpu::ShaderSource::Wgsl(shader.source.into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(shader.entry_point),
        // The bind group layout is derived from the shader's own declarations.
        layout: None,
        module: &module,
        entry_point: Some(shader.entry_point),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &[("WORKGROUP_SIZE", f64::from(workgroup_size))],
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    })
}

impl Kernels {
    /// Compiles every kernel. Errors surface through the caller's error scope.
    pub fn new(device: &wgpu::Device, software: bool) -> Self {
        let size = workgroup_size(software);
        Kernels {
            workgroup_size: size,
            conv2d_forward: compile(device, &shaders::CONV2D_FORWARD, size),
            gemm: compile(device, &shaders::GEMM, size),
            lrn_forward: compile(device, &shaders::LRN_FORWARD, size),
            max_pool_forward: compile(device, &shaders::MAX_POOL_FORWARD, size),
            batch_norm_forward: compile(device, &shaders::BATCH_NORM_FORWARD, size),
            add_forward: compile(device, &shaders::ADD_FORWARD, size),
            adaptive_avg_pool_forward: compile(device, &shaders::ADAPTIVE_AVG_POOL_FORWARD, size),
            concat_forward: compile(device, &shaders::CONCAT_FORWARD, size),
            conv2d_backward_data: compile(device, &shaders::CONV2D_BACKWARD_DATA, size),
            conv2d_backward_filter: compile(device, &shaders::CONV2D_BACKWARD_FILTER, size),
            sum_chunks: compile(device, &shaders::SUM_CHUNKS, size),
            bias_backward: compile(device, &shaders::BIAS_BACKWARD, size),
            relu_backward: compile(device, &shaders::RELU_BACKWARD, size),
            lrn_backward_prepare: compile(device, &shaders::LRN_BACKWARD_PREPARE, size),
            lrn_backward: compile(device, &shaders::LRN_BACKWARD, size),
            max_pool_backward: compile(device, &shaders::MAX_POOL_BACKWARD, size),
            matmul: compile(device, &shaders::MATMUL, size),
            sgd: compile(device, &shaders::SGD, size),
        }
    }
}
