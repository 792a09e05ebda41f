//! The GPU host: the context (adapter, device, queue, error capture), the compiled kernels, and
//! the execution of a planned network on them.

mod backward;
mod builder;
mod context;
mod kernels;
mod network;
mod sgd;

pub use builder::MemoryUse;
pub use context::{list_adapters, AdapterChoice, AdapterSummary, GpuContext};
pub use kernels::Kernels;
pub use network::GpuNetwork;
pub use sgd::Sgd;
