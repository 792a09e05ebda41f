//! The GPU host: the context (adapter, device, queue, error capture, pipeline cache), the ops'
//! kernels and their dispatch builders (`ops`), and the execution of a planned network on them.
//!
//! Dependencies run one way: `network` wires a plan's buffers and calls `ops` (forward) and
//! `gradients` (backward, which calls `ops` too); `ops` build dispatches with `builder`, from
//! kernels typed in `kernel`, on weights laid out by `packing`; `sgd`, `two_devices`, `profile`
//! and `peak` sit on top of `network` and `context`. See docs/design.md.

mod builder;
mod context;
mod gradients;
mod kernel;
mod network;
pub(crate) mod ops;
mod packing;
mod peak;
mod placed;
// Four fields of LayerTime and Profile are still undocumented; drop the allow once they are.
#[allow(missing_docs)]
mod profile;
mod sgd;
mod two_devices;
mod variants;

pub use builder::MemoryUse;
pub use context::{device_choices, list_adapters, AdapterChoice, AdapterSummary, GpuContext};
pub use network::GpuNetwork;
pub use peak::{measure as measure_peak, Peak};
pub use placed::{PlacedMemory, PlacedNetwork};
pub use profile::{LayerTime, Profile};
pub use sgd::Sgd;
pub use two_devices::{ExchangeStats, StepStats, TwoDeviceNetwork};
pub use variants::{KernelShape, LinearKernel, Variants};

use crate::error::Result;
use crate::model::LayerPlan;
use crate::weights::Weights;

/// What checking and benchmarking need of a network resident on one device or split over two.
pub trait Runner {
    /// The whole network's plan.
    fn plan(&self) -> &[LayerPlan];
    /// Copies a batch of images to the device(s).
    fn upload_input(&self, input: &[f32]) -> Result<()>;
    /// One forward pass, waited for.
    fn forward(&self) -> Result<()>;
    /// One forward and backward pass of `l2_loss(logits)`, waited for.
    fn forward_backward(&self) -> Result<()>;
    /// Layer `index`'s whole output.
    fn read_layer(&self, index: usize) -> Result<Vec<f32>>;
    /// Every parameter gradient of the last backward pass, whole, in the weights' layouts.
    fn read_gradients(&self) -> Result<Weights>;
}

macro_rules! runner {
    ($t:ty) => {
        impl Runner for $t {
            fn plan(&self) -> &[LayerPlan] {
                <$t>::plan(self)
            }
            fn upload_input(&self, input: &[f32]) -> Result<()> {
                <$t>::upload_input(self, input)
            }
            fn forward(&self) -> Result<()> {
                <$t>::forward(self)
            }
            fn forward_backward(&self) -> Result<()> {
                <$t>::forward_backward(self)
            }
            fn read_layer(&self, index: usize) -> Result<Vec<f32>> {
                <$t>::read_layer(self, index)
            }
            fn read_gradients(&self) -> Result<Weights> {
                <$t>::read_gradients(self)
            }
        }
    };
}
runner!(GpuNetwork<'_>);
runner!(TwoDeviceNetwork<'_>);

#[cfg(test)]
mod tests {
    use crate::gpu::kernel::Contract;

    /// Every kernel's side of the Rust <-> WGSL parameter contract.
    fn contracts() -> Vec<Contract> {
        [
            super::ops::contracts(),
            super::sgd::contracts(),
            super::peak::contracts(),
        ]
        .concat()
    }

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
}
