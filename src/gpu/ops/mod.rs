//! One module per op family. Each holds its kernels (typed by their parameter structs), the
//! choice between their variants, and the builders of its forward and backward dispatches; the
//! network ([`crate::gpu::GpuNetwork`]) only wires buffers between them.
//!
//! | module | ops | kernels |
//! |---|---|---|
//! | [`conv`] | 2-D convolution (groups, stride, per-side padding, bias, ReLU) | forward (register block / workgroup tiles), filter and input gradients, their layout transposes |
//! | [`linear`] | fully connected layers | GEMMs by batch size (16-row block, small-batch split-K), backward products |
//! | [`lrn`] | local response normalisation | forward, backward |
//! | [`pool`] | max pooling, adaptive average pooling | forward (with or without argmax), backward gather |
//! | [`norm`] | batch norm (inference) | forward |
//! | [`elementwise`] | ReLU backward, bias backward, residual add, concat | one kernel each |

pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod linear;
pub(crate) mod lrn;
pub(crate) mod norm;
pub(crate) mod pool;

pub use linear::LinearKernel;

use crate::error::Result;
use crate::gpu::builder::Builder;

use crate::shaders::{TILE_INVOCATIONS, TILE_WORKGROUP_BYTES};

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

/// The buffers one layer's backward pass reads and writes.
pub(crate) struct BackwardBuffers<'b> {
    /// The layer's input (the forward's activation).
    pub input: &'b wgpu::Buffer,
    /// The layer's output (the forward's activation).
    pub output: &'b wgpu::Buffer,
    /// The gradient of the loss with respect to the output.
    pub grad_output: &'b wgpu::Buffer,
    /// Where the gradient with respect to the input goes; `None` for the first layer (nobody
    /// needs the images' gradient unless asked).
    pub grad_input: Option<&'b wgpu::Buffer>,
    /// A max pool's window maxima positions, recorded by the training forward pass.
    pub argmax: Option<&'b wgpu::Buffer>,
}

/// The error that the adapter's limits cannot run a workgroup-tiled kernel (where one was
/// forced: `auto` never chooses it there).
pub(crate) fn check_tiled_fits(b: &Builder, what: &str) -> Result<()> {
    if b.ctx.tiled_kernels_fit() {
        return Ok(());
    }
    let limits = b.ctx.limits();
    Err(b.too_large(
        format!("the workgroup-tiled {what}"),
        format!(
            "it needs {TILE_INVOCATIONS} invocations and {TILE_WORKGROUP_BYTES} bytes of \
             workgroup memory, the adapter allows {} and {}",
            limits.max_compute_invocations_per_workgroup, limits.max_compute_workgroup_storage_size
        ),
    ))
}

/// Every kernel's side of the Rust <-> WGSL parameter contract.
#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    [
        conv::contracts(),
        linear::contracts(),
        lrn::contracts(),
        pool::contracts(),
        norm::contracts(),
        elementwise::contracts(),
        crate::gpu::sgd::contracts(),
        crate::gpu::peak::contracts(),
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::{contracts, KernelShape, LinearKernel};

    /// The parameter struct a WGSL module's entry point reads at `@group(0) @binding(0)`: its
    /// members' names and offsets, and its size.
    fn wgsl_params(module: &naga::Module) -> (Vec<(String, usize)>, usize) {
        let uniform = module
            .global_variables
            .iter()
            .map(|(_, var)| var)
            .find(|var| {
                var.space == naga::AddressSpace::Uniform
                    && var
                        .binding
                        .as_ref()
                        .is_some_and(|b| b.group == 0 && b.binding == 0)
            })
            .expect("a uniform at binding 0");
        let ty = &module.types[uniform.ty];
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("binding 0 is not a struct");
        };
        let fields = members
            .iter()
            .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
            .collect();
        (fields, *span as usize)
    }

    #[test]
    fn every_kernels_rust_params_match_its_wgsl_struct() {
        let contracts = contracts();
        for contract in &contracts {
            let shader = contract.shader;
            let wgsl = shader.wgsl();
            let module = naga::front::wgsl::parse_str(&wgsl)
                .unwrap_or_else(|e| panic!("{}: {}", shader.file, e.emit_to_string(&wgsl)));
            let (fields, size) = wgsl_params(&module);
            let rust: Vec<(String, usize)> = contract
                .fields
                .iter()
                .map(|&(name, offset)| (name.to_string(), offset))
                .collect();
            assert_eq!(
                rust, fields,
                "{} ({}): Rust fields vs WGSL members",
                shader.entry_point, shader.file
            );
            assert_eq!(
                contract.size, size,
                "{} ({}): Rust struct size vs WGSL struct size",
                shader.entry_point, shader.file
            );
            assert_eq!(
                size % 16,
                0,
                "{}: uniform sizes are multiples of 16",
                shader.file
            );
        }
        // Every registered entry point is dispatched through a typed kernel.
        for shader in crate::shaders::ALL {
            assert!(
                contracts
                    .iter()
                    .any(|c| c.shader.entry_point == shader.entry_point),
                "{} has no typed kernel",
                shader.entry_point
            );
        }
    }

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
