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

pub use builder::MemoryUse;
pub use context::{device_choices, list_adapters, AdapterChoice, AdapterSummary, GpuContext};
pub use network::GpuNetwork;
pub use ops::{KernelShape, LinearKernel, Variants};
pub use peak::{measure as measure_peak, Peak};
pub use placed::{PlacedMemory, PlacedNetwork};
pub use profile::{LayerTime, Profile};
pub use sgd::Sgd;
pub use two_devices::{ExchangeStats, StepStats, TwoDeviceNetwork};

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
