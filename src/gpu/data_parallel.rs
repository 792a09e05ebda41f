//! Data-parallel training: one replica of the whole network per device, the batch split into
//! shards, the parameter gradients all-reduced before every update, the same SGD step on every
//! replica (PyTorch's DistributedDataParallel, in one process).
//!
//! The all-reduce runs on the host: each replica's gradient buffers are copied, in their packed
//! layouts, into one staging buffer made with the replica (one copy and one map per replica and
//! step), summed in replica order — each weighted by its share of the loss: `n_i / N` for
//! cross-entropy, the mean over the batch; 1 for the seed's `l2_loss`, a sum — and the one result
//! is written to every replica's buffers, so the gradient is exactly the whole batch's whatever
//! the shards' sizes, and every replica applies the same update to the same values. Batch norms normalise each shard by its
//! own statistics (DistributedDataParallel without SyncBatchNorm: a different computation from
//! one device's, documented), and the running statistics of replica 0 are copied to the others
//! after each step (as DDP broadcasts its buffers), so that the replicas stay equal, which
//! [`DataParallel::check_replicas_equal`] verifies bit for bit (every parameter; the running
//! statistics are equal by that copy).

use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::context::GpuContext;
use crate::gpu::network::{GpuNetwork, Keep};
use crate::gpu::sgd::{Sgd, SgdConfig};
use crate::model::{Loss, LossKind, Network};
use crate::weights::Weights;

/// Time and bytes of one all-reduce.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct AllReduceStats {
    /// Seconds from the first readback to the last write.
    pub seconds: f64,
    /// Bytes read back from and written to the devices together.
    pub bytes: u64,
}

/// A network replicated over devices, each training on a shard of the batch.
pub struct DataParallel<'a> {
    replicas: Vec<GpuNetwork<'a>>,
    /// Images per replica.
    shards: Vec<usize>,
    kind: LossKind,
    /// Per replica, every gradient buffer its backward pass writes (see [`gradient_buffers`]).
    gradients: Vec<Vec<wgpu::Buffer>>,
    /// Per replica, the staging buffer its gradients are copied into for the all-reduce.
    staging: Vec<wgpu::Buffer>,
    /// The host's sum and one replica's gradients read back, made once.
    host: std::sync::Mutex<(Vec<f32>, Vec<f32>)>,
}

/// Every gradient buffer a replica's backward pass writes, in the network's order: the
/// all-reduce's unit, identical (same sizes) on every replica of one network.
fn gradient_buffers(net: &GpuNetwork) -> Result<Vec<wgpu::Buffer>> {
    let plan = net.plan();
    Ok((net.parameters_and_gradients()?.into_iter())
        .filter_map(|(params, grads)| Some((params, grads?)))
        .flat_map(|(params, grads)| grads.trained_buffers(&plan[params.layer].layer.kind))
        .cloned()
        .collect())
}

/// `batch` split over `replicas`: sizes differing by at most one, the larger first.
pub fn shards(batch: usize, replicas: usize) -> Result<Vec<usize>> {
    if replicas == 0 || batch < replicas {
        return Err(Error::InvalidArgument(format!(
            "a batch of {batch} cannot be split over {replicas} devices (at least one image each)"
        )));
    }
    Ok((0..replicas)
        .map(|i| batch / replicas + usize::from(i < batch % replicas))
        .collect())
}

impl<'a> DataParallel<'a> {
    /// Uploads `weights` to one replica of `network` per context, each planned at its shard of
    /// `batch` and built to train with `kind` (GoogLeNet's auxiliary heads weighted in).
    pub fn new(
        contexts: &[&'a GpuContext],
        network: &Network,
        batch: usize,
        weights: &Weights,
        kind: LossKind,
    ) -> Result<Self> {
        let shards = shards(batch, contexts.len())?;
        let replicas = (contexts.iter().zip(&shards))
            .map(|(ctx, &shard)| {
                let plan = network.plan(shard)?;
                let loss = Loss::with_aux_heads(kind, &plan);
                GpuNetwork::training(ctx, &plan, weights, &loss, Keep::WhatBackwardReads)
            })
            .collect::<Result<Vec<_>>>()?;
        // Replicas of one network pack their gradients alike unless their adapters' storage
        // bindings differ (a fully connected layer's weight then splits into other slices).
        let gradients = (replicas.iter())
            .map(gradient_buffers)
            .collect::<Result<Vec<_>>>()?;
        let sizes = |buffers: &[wgpu::Buffer]| buffers.iter().map(|b| b.size()).collect::<Vec<_>>();
        let layout = sizes(&gradients[0]);
        for (i, (net, buffers)) in replicas.iter().zip(&gradients).enumerate().skip(1) {
            if sizes(buffers) != layout {
                return Err(Error::InvalidArgument(format!(
                    "replica {i}'s adapter ('{}') packs the weights in other slices than replica \
                     0's (its storage bindings differ): replicas need adapters alike",
                    net.context().info().name
                )));
            }
        }
        let floats = (layout.iter().sum::<u64>() / 4) as usize;
        let staging = (replicas.iter())
            .map(|net| net.context().staging_buffer("all-reduce gradients", floats))
            .collect();
        Ok(DataParallel {
            replicas,
            shards,
            kind,
            gradients,
            staging,
            host: std::sync::Mutex::new((vec![0.0; floats], vec![0.0; floats])),
        })
    }

    /// The replicas, in device order.
    pub fn replicas(&self) -> &[GpuNetwork<'a>] {
        &self.replicas
    }

    /// Images per replica.
    pub fn shards(&self) -> &[usize] {
        &self.shards
    }

    /// Copies a batch (`[N, C, H, W]`, the whole batch) and its labels (for cross-entropy) to
    /// the replicas, each its shard.
    pub fn upload(&self, input: &[f32], labels: Option<&[usize]>) -> Result<()> {
        let per_image = self.replicas[0].plan()[0].input.len();
        let batch: usize = self.shards.iter().sum();
        if self.kind == LossKind::CrossEntropy && labels.is_none() {
            return Err(Error::InvalidArgument(
                "cross-entropy needs the batch's labels".into(),
            ));
        }
        if input.len() != batch * per_image || labels.is_some_and(|l| l.len() != batch) {
            return Err(Error::InvalidArgument(format!(
                "a batch of {batch} images is {} values and {batch} labels",
                batch * per_image
            )));
        }
        let mut first = 0;
        for (net, &n) in self.replicas.iter().zip(&self.shards) {
            net.upload_input(&input[first * per_image..(first + n) * per_image])?;
            if let Some(labels) = labels {
                net.upload_labels(&labels[first..first + n])?;
            }
            first += n;
        }
        Ok(())
    }

    /// Runs every replica's forward and backward pass, submitted to all devices before waiting
    /// for any (so that devices of their own run them at once).
    pub fn forward_backward(&self) -> Result<()> {
        for net in &self.replicas {
            net.submit("data-parallel forward-backward", |encoder| {
                net.encode_forward(encoder);
                net.encode_backward(encoder)
            })?;
        }
        for net in &self.replicas {
            net.context().wait("data-parallel forward-backward")?;
        }
        Ok(())
    }

    /// The loss of the last pass over the whole batch: the shards' cross-entropies weighted by
    /// their sizes, or their `l2_loss`es summed.
    pub fn read_loss(&self) -> Result<f64> {
        let mut total = 0.0;
        for (net, weight) in self.replicas.iter().zip(self.weights()) {
            total += weight * net.read_loss()?;
        }
        Ok(total)
    }

    /// Each replica's share of the whole batch's loss.
    fn weights(&self) -> Vec<f64> {
        let batch: usize = self.shards.iter().sum();
        (self.shards.iter())
            .map(|&n| match self.kind {
                LossKind::CrossEntropy => n as f64 / batch as f64,
                LossKind::L2 => 1.0,
            })
            .collect()
    }

    /// Sums the replicas' parameter gradients, each weighted by its share of the loss, and
    /// writes the sum to every replica.
    pub fn all_reduce(&self) -> Result<AllReduceStats> {
        let start = Instant::now();
        let mut host = self.host.lock().unwrap_or_else(|e| e.into_inner());
        let (sum, read) = &mut *host;
        sum.fill(0.0);
        // Every replica's copy is submitted before any is read back.
        let mut submissions = Vec::with_capacity(self.replicas.len());
        for ((net, staging), buffers) in
            self.replicas.iter().zip(&self.staging).zip(&self.gradients)
        {
            submissions.push(net.submit("all-reduce readback", |encoder| {
                let mut at = 0;
                for buffer in buffers {
                    encoder.copy_buffer_to_buffer(buffer, 0, staging, at, buffer.size());
                    at += buffer.size();
                }
                Ok(())
            })?);
        }
        for (((net, staging), submission), weight) in (self.replicas.iter())
            .zip(&self.staging)
            .zip(submissions)
            .zip(self.weights())
        {
            net.context().read_staging_of(staging, read, submission)?;
            let weight = weight as f32;
            for (s, &g) in sum.iter_mut().zip(read.iter()) {
                *s += weight * g;
            }
        }
        for (net, buffers) in self.replicas.iter().zip(&self.gradients) {
            let mut at = 0;
            for buffer in buffers {
                let len = (buffer.size() / 4) as usize;
                let values = bytemuck::cast_slice(&sum[at..at + len]);
                net.context().queue().write_buffer(buffer, 0, values);
                at += len;
            }
        }
        let bytes = 2 * 4 * sum.len() as u64 * self.replicas.len() as u64;
        Ok(AllReduceStats {
            seconds: start.elapsed().as_secs_f64(),
            bytes,
        })
    }

    /// One SGD optimiser per replica, all with `config`.
    pub fn optimizers(&self, config: SgdConfig) -> Result<Vec<Sgd<'_, 'a>>> {
        self.replicas
            .iter()
            .map(|net| Sgd::new(net, config))
            .collect()
    }

    /// One training step: forward-backward on every replica, the all-reduce, every replica's
    /// update (`optimizers` from [`DataParallel::optimizers`], submitted to all devices before
    /// any is waited for), and replica 0's batch-norm running statistics copied to the others.
    /// The statistics returned count the running statistics' copy too.
    pub fn step(&self, optimizers: &[Sgd]) -> Result<AllReduceStats> {
        self.forward_backward()?;
        let mut stats = self.all_reduce()?;
        for optimizer in optimizers {
            optimizer.submit_update()?;
        }
        for net in &self.replicas {
            net.context().wait("data-parallel update")?;
        }
        let start = Instant::now();
        stats.bytes += self.broadcast_running_statistics()?;
        stats.seconds += start.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// Copies replica 0's batch-norm running statistics to the other replicas (their weights
    /// and biases are left: the same update made them equal, which the check verifies); returns
    /// the bytes moved.
    fn broadcast_running_statistics(&self) -> Result<u64> {
        if self.replicas.len() == 1 {
            return Ok(0);
        }
        let statistics = self.replicas[0].read_running_statistics()?;
        let bytes: u64 = statistics.iter().map(|s| 4 * s.len() as u64).sum();
        if bytes == 0 {
            return Ok(0);
        }
        for net in &self.replicas[1..] {
            net.write_running_statistics(&statistics)?;
        }
        Ok(bytes * self.replicas.len() as u64)
    }

    /// Fails, naming the replica, its adapter and the first tensor, unless every replica holds
    /// exactly replica 0's weights (bit for bit): replicas that drift apart are an error, never
    /// averaged away.
    pub fn check_replicas_equal(&self) -> Result<()> {
        let first = self.replicas[0].read_weights()?;
        for (i, net) in self.replicas.iter().enumerate().skip(1) {
            let other = net.read_weights()?;
            let differing = (first.iter().zip(other.iter())).find(|((_, a), (_, b))| {
                (a.data.iter().zip(&b.data)).any(|(x, y)| x.to_bits() != y.to_bits())
            });
            if let Some(((name, _), _)) = differing {
                return Err(Error::Mismatch(format!(
                    "replica {i} (on '{}') no longer holds replica 0's weights: {name} differs",
                    net.context().info().name
                )));
            }
        }
        Ok(())
    }

    /// The reduced gradients (every replica holds them after [`DataParallel::all_reduce`]).
    pub fn read_gradients(&self) -> Result<Weights> {
        self.replicas[0].read_gradients()
    }

    /// Replica 0's weights (every replica's, while they stay equal).
    pub fn read_weights(&self) -> Result<Weights> {
        self.replicas[0].read_weights()
    }
}

#[cfg(test)]
mod tests {
    use super::shards;

    #[test]
    fn shards_cover_the_batch_and_differ_by_at_most_one() {
        assert_eq!(shards(7, 3).unwrap(), [3, 2, 2]);
        assert_eq!(shards(8, 2).unwrap(), [4, 4]);
        assert!(shards(1, 2).is_err());
        assert!(shards(4, 0).is_err());
    }
}
