//! The GPU host: the context (adapter, device, queue, error capture, pipeline cache), the ops'
//! kernels and their dispatch builders (`ops`), and the execution of a planned network on them.
//!
//! Dependencies run one way: `network` wires a plan's buffers and calls `ops` (forward) and
//! `gradients` (backward, which calls `ops` too); `ops` build dispatches with `builder`, from
//! kernels typed in `kernel`, on weights laid out by `packing`; `sgd`, `style`, `two_devices` and
//! `placed` sit on top of `network`; `profile` and `peak` use only `context`, `builder` and `kernel`
//! (`network` calls `profile` to time its passes). See docs/design.md.

mod builder;
mod context;
mod data_parallel;
mod gradients;
mod kernel;
mod lbfgs;
mod micro_batches;
mod network;
pub(crate) mod ops;
mod packing;
mod peak;
mod placed;
mod profile;
mod sgd;
mod style;
pub mod tuning;
mod two_devices;
mod variants;

pub use builder::MemoryUse;
pub(crate) use context::widen_f16;
pub use context::{device_choices, list_adapters, AdapterChoice, AdapterSummary, GpuContext};
pub use data_parallel::{
    shards, AllReduce, AllReduceStats, BucketReport, DataParallel, BUCKET_BYTES,
    REPLICA_CHECK_EVERY,
};
pub use micro_batches::{parts_needed, MicroBatches};
pub use network::{GpuNetwork, Keep};
pub use ops::pixels::{PixelDecoder, PixelFormat};
pub use peak::{measure as measure_peak, Peak};
pub use placed::{PlacedMemory, PlacedNetwork};
pub use profile::{KernelTime, LayerTime, Profile};
pub use sgd::{Sgd, SgdConfig};
pub use style::{AdamConfig, LbfgsConfig, Optimizer, StyleImages, StyleProfile, StyleTransfer};
pub use tuning::{ChoiceSource, ConvChoice, LayerChoice, LinearLayerChoice, TunedPass, Tuning};
pub use two_devices::{ExchangeStats, StepStats, TwoDeviceNetwork};
pub(crate) use variants::MIN_CHUNK_DEPTH;
pub use variants::{ConvAlgorithm, KernelShape, LinearKernel, Precision, Variants};

use crate::error::Result;
use crate::model::{LayerKind, LayerPlan};
use crate::shaders::Element;
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
    /// How the network stores its input and activations: f32 unless it was built for f16.
    fn stored_element(&self) -> Element {
        Element::F32
    }
    /// `input` as the network holds it once uploaded: each value rounded to
    /// [`Runner::stored_element`].
    fn stored_input(&self, input: &[f32]) -> Vec<f32> {
        match self.stored_element() {
            Element::F32 => input.to_vec(),
            Element::F16 => (input.iter())
                .map(|&v| half::f16::from_f32(v).to_f32())
                .collect(),
        }
    }
    /// `weights` as the network's kernels read them: each conv and linear weight matrix rounded
    /// to [`Runner::stored_element`]; biases and batch-norm parameters stay f32.
    fn stored_weights(&self, weights: &Weights) -> Weights {
        let mut stored = weights.clone();
        if self.stored_element() == Element::F16 {
            let matrices = (self.plan().iter()).filter(|l| {
                matches!(
                    l.layer.kind,
                    LayerKind::Conv2d { .. } | LayerKind::Linear { .. }
                )
            });
            for layer in matrices {
                if let Some(t) = stored.get_mut(&format!("{}.weight", layer.layer.name)) {
                    for v in &mut t.data {
                        *v = half::f16::from_f32(*v).to_f32();
                    }
                }
            }
        }
        stored
    }
}

macro_rules! runner {
    ($t:ty $(, $stored:ident)?) => {
        impl Runner for $t {
            $(fn stored_element(&self) -> Element {
                <$t>::$stored(self)
            })?
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
runner!(GpuNetwork<'_>, stored_element);
runner!(TwoDeviceNetwork<'_>);
runner!(MicroBatches<'_>, stored_element);
// A two-device layout's segments train, so they store f32 (the trait's default).

#[cfg(test)]
mod tests {
    use crate::gpu::kernel::Contract;

    /// Every kernel's side of the Rust <-> WGSL parameter contract.
    fn contracts() -> Vec<Contract> {
        [
            super::ops::contracts(),
            super::sgd::contracts(),
            super::packing::contracts(),
            super::ops::style::contracts(),
            super::ops::pixels::contracts(),
            super::ops::lbfgs::contracts(),
            super::peak::contracts(),
        ]
        .concat()
    }

    /// The parameter struct a WGSL module's entry point reads at `@group(0) @binding(0)`: its
    /// members' names, offsets and types (scalars or `vec4<f32>`, as Rust names them), and its
    /// size.
    fn wgsl_params(module: &naga::Module) -> (Vec<(String, usize, String)>, usize) {
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
        let naga::TypeInner::Struct { members, span } = &module.types[uniform.ty].inner else {
            panic!("binding 0 is not a struct");
        };
        let scalar = |ty: naga::Handle<naga::Type>| match module.types[ty].inner {
            naga::TypeInner::Scalar(naga::Scalar { kind, width: 4 }) => match kind {
                naga::ScalarKind::Uint => "u32",
                naga::ScalarKind::Sint => "i32",
                naga::ScalarKind::Float => "f32",
                _ => "another scalar",
            },
            // A vec4<f32> (16-byte aligned in WGSL) is a `[f32; 4]` at a multiple of 16.
            naga::TypeInner::Vector {
                size: naga::VectorSize::Quad,
                scalar:
                    naga::Scalar {
                        kind: naga::ScalarKind::Float,
                        width: 4,
                    },
            } => "[f32; 4]",
            _ => "not a 32-bit scalar or vec4<f32>",
        };
        let fields = members
            .iter()
            .map(|m| {
                let name = m.name.clone().unwrap_or_default();
                (name, m.offset as usize, scalar(m.ty).to_string())
            })
            .collect();
        (fields, *span as usize)
    }

    #[test]
    fn every_kernels_rust_params_match_its_wgsl_struct() {
        let contracts = contracts();
        let tile_edge = (crate::shaders::TILE / 4) as u32;
        for contract in &contracts {
            let shader = contract.shader;
            let wgsl = shader.wgsl();
            let module = naga::front::wgsl::parse_str(&wgsl)
                .unwrap_or_else(|e| panic!("{}: {}", shader.file, e.emit_to_string(&wgsl)));
            let (fields, size) = wgsl_params(&module);
            let rust: Vec<(String, usize, String)> = contract
                .fields
                .iter()
                .map(|&(name, offset, ty)| (name.to_string(), offset, ty.to_string()))
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
            // A tiled kernel's workgroup is the tile's edge over 4 each way, as the host's grids
            // and its 4 x 4 outputs per invocation assume; a flat one takes WORKGROUP_SIZE.
            let entry = module
                .entry_points
                .iter()
                .find(|e| e.name == shader.entry_point)
                .expect("the entry point exists");
            match contract.workgroup {
                super::kernel::Workgroup::Tiled => assert_eq!(
                    entry.workgroup_size,
                    [tile_edge, tile_edge, 1],
                    "{}",
                    shader.entry_point
                ),
                super::kernel::Workgroup::Reduction => assert_eq!(
                    entry.workgroup_size,
                    [crate::shaders::REDUCTION as u32, 1, 1],
                    "{}",
                    shader.entry_point
                ),
                super::kernel::Workgroup::Flat => assert!(
                    entry.workgroup_size_overrides.is_some(),
                    "{} is sized by WORKGROUP_SIZE",
                    shader.entry_point
                ),
            }
        }
        // Every registered kernel is dispatched through one typed kernel, and kernel names are
        // unique (the pipeline cache is keyed by them).
        for shader in crate::shaders::ALL {
            let typed = contracts
                .iter()
                .filter(|c| c.shader.name == shader.name)
                .count();
            assert_eq!(typed, 1, "{} has {typed} typed kernels", shader.name);
        }
        let mut names: Vec<&str> = crate::shaders::ALL.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            crate::shaders::ALL.len(),
            "kernel names are unique"
        );
    }
}
