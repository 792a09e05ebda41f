//! Training: SGD with momentum applied on the GPU after every forward-backward pass.
//!
//! The benchmark of the 2017 blog post (docs/networks.md, 'The seed') computes gradients and
//! stops ("it never updates the parameters"); this goes one step further, so that a user sees
//! the loss fall. Parameters, gradients and velocities share the packed layouts, so the update
//! is one element-wise kernel per buffer.

use crate::error::Result;
use crate::gpu::builder::{u32_of, Builder};
use crate::gpu::kernel::{encode_pass, kernel_params, Dispatch, KernelDef};
use crate::gpu::network::GpuNetwork;
use crate::gpu::packing::PackedGrads;
use crate::shaders;
use crate::weights::Weights;

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
/// created up front. Networks sharing the network's parameters
/// ([`GpuNetwork::training_sharing`]) write the same gradient buffers, so the one optimiser
/// updates after any of their backward passes.
pub struct Sgd<'n, 'a> {
    net: &'n GpuNetwork<'a>,
    dispatches: Vec<Dispatch>,
    /// Each dispatch's parameters and the uniform buffer holding them (rewritten when the
    /// learning rate changes).
    params: Vec<(SgdParams, wgpu::Buffer)>,
    /// Shaped as the network's parameter gradients, one set per parameterised layer.
    velocities: Vec<Option<PackedGrads>>,
    /// Bytes of velocity buffers.
    pub memory: u64,
}

impl<'n, 'a> Sgd<'n, 'a> {
    /// Prepares `v = momentum * v + grad + weight_decay * param; param -= lr * v` for every
    /// parameter of `net` (batch norms' weights and biases included, as PyTorch's SGD does by
    /// default; never their running statistics), which must have been built with gradients.
    /// Velocities start at zero, which makes the first step PyTorch's (its buffer starts as
    /// the first gradient).
    pub fn new(net: &'n GpuNetwork<'a>, config: SgdConfig) -> Result<Self> {
        let layers = net.parameters_and_gradients().map_err(|_| {
            crate::Error::InvalidArgument("training needs a network built with gradients".into())
        })?;
        let ctx = net.context();
        let plan = net.plan();
        let (dispatches, params, velocities, memory) =
            ctx.scoped("optimizer setup", |_| -> Result<_> {
                let mut b = Builder::new(ctx);
                let mut dispatches = Vec::new();
                let mut params = Vec::new();
                let mut velocities = Vec::new();
                for (weights, grads) in layers {
                    let Some(grads) = grads else {
                        velocities.push(None);
                        continue;
                    };
                    let layer = &plan[weights.layer].layer;
                    let velocity = PackedGrads::new(&mut b, plan, weights);
                    let buffers = (weights.trained_buffers(&layer.kind).into_iter())
                        .zip(grads.trained_buffers(&layer.kind))
                        .zip(velocity.trained_buffers(&layer.kind));
                    for ((param, grad), v) in buffers {
                        // The gradient's length: a batch norm's buffer holds its running
                        // statistics after the weight and bias its gradient covers.
                        let len = (grad.size() / 4) as usize;
                        let sgd = SgdParams {
                            len: u32_of(len, "parameters")?,
                            learning_rate: config.learning_rate,
                            momentum: config.momentum,
                            weight_decay: config.weight_decay,
                        };
                        let label = format!("{} sgd", layer.name);
                        let workgroups = b.grid_1d(&label, len.div_ceil(4))?;
                        let args = [grad, v, param];
                        let (dispatch, uniform) =
                            b.dispatch_with_uniform(&label, &SGD, &[], &sgd, &args, workgroups);
                        dispatches.push(dispatch);
                        params.push((sgd, uniform));
                    }
                    // Under half-precision storage, the f16 weights the kernels read.
                    dispatches.extend(weights.round_master(&mut b, &layer.name)?);
                    velocities.push(Some(velocity));
                }
                Ok((dispatches, params, velocities, b.memory.gradients))
            })??;
        Ok(Sgd {
            net,
            dispatches,
            params,
            velocities,
            memory,
        })
    }

    /// Sets the learning rate of the updates submitted from now on (a schedule's step between
    /// epochs): one small write per parameter buffer, through the queue.
    pub fn set_learning_rate(&mut self, learning_rate: f32) {
        let queue = self.net.context().queue();
        for (params, uniform) in &mut self.params {
            params.learning_rate = learning_rate;
            queue.write_buffer(uniform, 0, bytemuck::bytes_of(params));
        }
    }

    /// Records the update into `encoder`, after a backward pass of the network or of one
    /// sharing its parameters.
    pub fn encode_update(&self, encoder: &mut wgpu::CommandEncoder) {
        encode_pass(encoder, "sgd", &self.dispatches);
    }

    /// Submits the update alone without waiting (data-parallel replicas update at once); the
    /// caller waits on the network's context.
    pub(crate) fn submit_update(&self) -> Result<wgpu::SubmissionIndex> {
        self.net.submit("sgd update", |encoder| {
            self.encode_update(encoder);
            Ok(())
        })
    }

    /// The update alone, after a forward-backward pass driven elsewhere (a tower of a two-device
    /// layout); waits for the GPU.
    pub fn update(&self) -> Result<()> {
        self.submit_update()?;
        self.net.context().wait("sgd update")
    }

    /// One training step: forward, backward, update, in one command buffer; waits for the GPU.
    pub fn step(&self) -> Result<()> {
        self.net.run("training step", |encoder| {
            self.net.encode_forward(encoder);
            self.net.encode_backward(encoder)?;
            self.encode_update(encoder);
            Ok(())
        })
    }

    /// The velocities (PyTorch's `momentum_buffer`s), named and shaped as the parameters.
    pub fn read_velocities(&self) -> Result<Weights> {
        self.net.read_shaped_as_gradients(&self.velocities)
    }

    /// Restores velocities read by [`Sgd::read_velocities`] (a checkpoint's), bit for bit.
    pub fn write_velocities(&self, velocities: &Weights) -> Result<()> {
        self.net
            .write_shaped_as_gradients(&self.velocities, velocities)
    }
}
