//! convnet-wgpu: classic convolutional networks on WGSL compute shaders through wgpu.
//!
//! The crate is split the way the work is:
//! - [`model`] describes networks (layers, shapes, parameter and FLOP counts) and knows nothing of
//!   GPUs; [`table`] turns one into the table that the 2017 blog post the project reproduces
//!   gives for AlexNet (docs/networks.md, 'The seed'), and [`fold`] folds batch norms into the
//!   convolutions before them for inference;
//! - [`reference`](mod@reference) is the CPU reference of every op, plain loops (and a GEMM
//!   crate for the matrix products), against which every GPU result is checked;
//! - [`gpu`] owns the adapter, device and queue ([`gpu::GpuContext`]), the compiled kernels and the
//!   execution of a network on them: forward, backward and SGD on one device
//!   ([`gpu::GpuNetwork`], [`gpu::Sgd`]), or a two-device layout split over two
//!   ([`gpu::TwoDeviceNetwork`]);
//! - [`weights`], [`npy`] and [`files`] read and write the file formats (safetensors weights,
//!   `.npy` tensors) with one-line errors and no half-written outputs;
//! - [`style`] describes neural style transfer's objective (and its CPU reference), which
//!   [`gpu::StyleTransfer`] optimises on the GPU, and [`picture`] reads and writes its images;
//! - [`training`] trains a classifier on a labelled data set (shuffled epochs, a held-out set,
//!   checkpoints resumed bit for bit), [`eval`] scores one, and [`dataset`] draws a set;
//! - [`bench`](mod@bench) and [`check`] are the two jobs the command line runs on top of all
//!   that, and [`chart`] draws a profile.
//!
//! ```no_run
//! use convnet_wgpu::{gpu, model, weights};
//! let network = model::alexnet();
//! let plan = network.plan(2)?;
//! let params = weights::Weights::init(&network, 42)?;
//! let input = weights::random_input(&plan, 42);
//! let ctx = gpu::GpuContext::new(&gpu::AdapterChoice::default())?;
//! let net = gpu::GpuNetwork::new(&ctx, &plan, &params)?;
//! net.upload_input(&input)?;
//! net.forward()?;
//! let logits = net.read_output()?;
//! # Ok::<(), convnet_wgpu::Error>(())
//! ```

#![warn(missing_docs)]

#[cfg(target_endian = "big")]
compile_error!("the file formats are little-endian and are read by reinterpreting bytes");

pub mod bench;
pub mod chart;
pub mod check;
pub mod dataset;
pub mod distributed;
pub mod error;
pub mod eval;
pub mod files;
pub mod fold;
pub mod gpu;
pub mod model;
pub mod npy;
pub mod picture;
pub mod reference;
pub mod shaders;
pub mod style;
pub mod table;
pub mod training;
pub mod tune;
pub mod watchdog;
pub mod weights;

pub use error::{Error, Result};
