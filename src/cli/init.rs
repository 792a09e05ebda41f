//! `convnet init`: initialised weights written as safetensors.

use std::path::Path;

use convnet_wgpu::files;
use convnet_wgpu::weights::Weights;

use super::NetworkArgs;

/// Writes `network`'s initial weights, drawn from `seed`, to `out`.
pub(crate) fn write(network: &NetworkArgs, seed: u64, out: &Path) -> anyhow::Result<()> {
    files::check_writable(out)?;
    let network = network.build()?;
    Weights::init(&network, seed)?.save(out)?;
    println!("wrote {} ({}, seed {seed})", out.display(), network.name);
    Ok(())
}
