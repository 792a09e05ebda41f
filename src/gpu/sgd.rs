//! Training: SGD with momentum applied on the GPU after every forward-backward pass.
//!
//! The benchmark of the 2017 blog post (docs/networks.md, 'The seed') computes gradients and
//! stops ("it never updates the parameters"); this goes one step further, so that a user sees
//! the loss of a fixed batch fall. Parameters, gradients and velocities share the packed layouts,
//! so the update is one element-wise kernel per buffer.

use crate::error::Result;
use crate::gpu::builder::{u32_of, Builder, Purpose};
use crate::gpu::kernel::{encode_pass, kernel_params, Dispatch, KernelDef};
use crate::gpu::network::GpuNetwork;
use crate::shaders;

kernel_params! {
    /// sgd.wgsl's parameters.
    struct SgdParams {
        len: u32,
        learning_rate: f32,
        momentum: f32,
        weight_decay: f32,
    }
}

/// PyTorch's `torch.optim.SGD` settings (no dampening, no Nesterov).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// The step's scale.
    pub learning_rate: f32,
    /// The velocity's decay per step (0: plain SGD).
    pub momentum: f32,
    /// L2 penalty: `weight_decay * param` added to the gradient before the momentum.
    pub weight_decay: f32,
}

const SGD: KernelDef<SgdParams> = KernelDef::flat(shaders::SGD);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    vec![SGD.contract()]
}

/// An SGD optimiser bound to one network: its velocity buffers and update dispatches, all
/// created up front.
pub struct Sgd<'n, 'a> {
    net: &'n GpuNetwork<'a>,
    dispatches: Vec<Dispatch>,
    /// Bytes of velocity buffers.
    pub memory: u64,
}

impl<'n, 'a> Sgd<'n, 'a> {
    /// Prepares `v = momentum * v + grad + weight_decay * param; param -= lr * v` for every
    /// parameter of `net` (batch norms' weights and biases included, as PyTorch's SGD does by
    /// default; never their running statistics), which must have been built with gradients.
    pub fn new(net: &'n GpuNetwork<'a>, config: SgdConfig) -> Result<Self> {
        let parameters = net.parameter_buffers().map_err(|_| {
            crate::Error::InvalidArgument("training needs a network built with gradients".into())
        })?;
        let ctx = net.context();
        let (dispatches, memory) = ctx.scoped("optimizer setup", |_| -> Result<_> {
            let mut b = Builder::new(ctx);
            let mut dispatches = Vec::new();
            for (name, param, grad) in parameters {
                // The gradient's length: a batch norm's buffer holds its running statistics
                // after the weight and bias its gradient covers.
                let len = (grad.size() / 4) as usize;
                let velocity = b.storage(&format!("{name} velocity"), len, Purpose::Scratch);
                let sgd = SgdParams {
                    len: u32_of(len, "parameters")?,
                    learning_rate: config.learning_rate,
                    momentum: config.momentum,
                    weight_decay: config.weight_decay,
                };
                let label = format!("{name} sgd");
                let workgroups = b.grid_1d(&label, len.div_ceil(4))?;
                let args = [grad, &velocity, param];
                dispatches.push(b.dispatch(&label, &SGD, &sgd, &args, workgroups));
            }
            Ok((dispatches, b.memory.scratch))
        })??;
        Ok(Sgd {
            net,
            dispatches,
            memory,
        })
    }

    /// The update alone, after a forward-backward pass driven elsewhere (a tower of a two-device
    /// layout); waits for the GPU.
    pub fn update(&self) -> Result<()> {
        self.net.run("sgd update", |encoder| {
            encode_pass(encoder, "sgd", &self.dispatches);
            Ok(())
        })
    }

    /// One training step: forward, backward, update, in one command buffer; waits for the GPU.
    pub fn step(&self) -> Result<()> {
        self.net.run("training step", |encoder| {
            self.net.encode_forward(encoder);
            self.net.encode_backward(encoder)?;
            encode_pass(encoder, "sgd", &self.dispatches);
            Ok(())
        })
    }
}
