//! Data-parallel training: one replica of the whole network per device, the batch split into
//! shards, the parameter gradients all-reduced before every update, the same SGD step on every
//! replica (PyTorch's DistributedDataParallel, in one process).
//!
//! The all-reduce runs on the host (wgpu has no device-to-device copy), in buckets of about
//! [`BUCKET_BYTES`] as DistributedDataParallel does: the backward pass of each replica is
//! submitted in parts, last layers first, each part followed by a copy of the gradients it
//! finished into a staging buffer of the bucket's own, so that the host sums bucket k while the
//! devices compute bucket k+1 ([`AllReduce::Overlapped`]; [`AllReduce::AfterBackward`] submits the
//! whole backward first, for comparison). Each replica's gradients are weighted by its share of
//! the loss — `n_i / N` for cross-entropy, the mean over the batch; 1 for the seed's `l2_loss`, a
//! sum — summed in replica order, and the one sum is written to every replica's buffers, so the
//! gradient is exactly the whole batch's whatever the shards' sizes, and every replica applies
//! the same update to the same values. Batch norms normalise each shard by its own statistics
//! (DistributedDataParallel without SyncBatchNorm: a different computation from one device's,
//! documented), and the running statistics of replica 0 are copied to the others after each step
//! (as DDP broadcasts its buffers), so that the replicas stay equal, which
//! [`DataParallel::check_replicas_equal`] verifies bit for bit (every parameter; the running
//! statistics are equal by that copy). Synchronised (SyncBatchNorm), every batch norm stops both
//! passes for the host, which combines the replicas' statistics and backward sums into the whole
//! batch's ([`DataParallel::over_ranks`]); the replicas then compute one device's gradient.
//! Across MPI ranks ([`crate::distributed::World`]), each rank sums its own replicas and the
//! ranks' sums are summed in turn.

use std::ops::Range;
use std::time::Instant;

use crate::distributed::World;
use crate::error::{Error, Result};
use crate::gpu::context::GpuContext;
use crate::gpu::gradients::BatchNormSync;
use crate::gpu::network::{GpuNetwork, Keep};
use crate::gpu::ops::norm::RUNNING_MOMENTUM;
use crate::gpu::profile::layer_of;
use crate::gpu::sgd::{Sgd, SgdConfig};
use crate::gpu::variants::Precision;
use crate::model::{Loss, LossKind, Network};
use crate::weights::Weights;

/// Gradient bytes per all-reduce bucket: PyTorch DistributedDataParallel's default
/// (`bucket_cap_mb = 25`). A bucket closes at the first gradient buffer that takes it to the cap
/// or past it, so one buffer larger than that (AlexNet's fc1 weight, 151 MB) ends the bucket it
/// joins.
pub const BUCKET_BYTES: u64 = 25 << 20;

/// Steps between two checks that the replicas still hold equal weights (and after a run's
/// last step), in training ([`DataParallel::check_replicas_equal`]).
pub const REPLICA_CHECK_EVERY: usize = 10;

/// When the gradients are all-reduced. [`DataParallel::new`] overlaps unless every replica runs
/// on a software adapter: those compute on the host's own cores, so the host's share of the
/// all-reduce cannot hide behind their work, and cutting their backward pass into parts only
/// adds submissions (measured in docs/networks.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum AllReduce {
    /// Bucket by bucket as the backward pass finishes them, the last layers' first, while the
    /// devices go on with the earlier layers' backward (as DistributedDataParallel does).
    Overlapped,
    /// After the whole backward pass has finished on every replica.
    AfterBackward,
}

/// Time and bytes of one all-reduce.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct AllReduceStats {
    /// Host seconds in the all-reduce: from the end of every replica's backward pass to the last
    /// write ([`AllReduce::AfterBackward`]), or from the first bucket's readback to the last write
    /// ([`AllReduce::Overlapped`]: this includes waiting for the backward of later buckets, so
    /// the cost left exposed is measured as step times, as `convnet bench` does).
    pub seconds: f64,
    /// Bytes read back from and written to this process's devices together.
    pub bytes: u64,
    /// Bytes this process sent to and received from the other ranks (0 in one process).
    pub rank_bytes: u64,
    /// Buckets summed.
    pub buckets: usize,
}

/// Gradient buffers summed together and the run of each replica's backward dispatches that
/// finishes them: the unit of the overlapped all-reduce.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bucket {
    /// Per replica, its part of that replica's backward dispatches (last layer first); replicas
    /// at other shard sizes may run other kernels, so other dispatches.
    dispatches: Vec<Range<usize>>,
    /// Its gradient buffers, a range of every replica's list (the order the backward finishes
    /// them).
    buffers: Range<usize>,
    /// Its values, a range of the host's sum.
    floats: Range<usize>,
}

/// Buckets of at least `cap` bytes (the last may be smaller) over gradient buffers of `sizes`
/// bytes, given in the order the backward pass finishes them; `finished_after[r][j]` is the
/// number of replica r's backward dispatches after which buffer j is final, `dispatches[r]`
/// all of them. A bucket runs each replica's dispatches up to the last that finishes one of
/// its buffers; the last bucket runs the rest.
fn plan_buckets(
    sizes: &[u64],
    finished_after: &[Vec<usize>],
    dispatches: &[usize],
    cap: u64,
) -> Vec<Bucket> {
    let mut buckets = Vec::new();
    let (mut first, mut first_float, mut bytes) = (0, 0, 0);
    let mut ends = vec![0; dispatches.len()];
    for (j, &size) in sizes.iter().enumerate() {
        bytes += size;
        let last = j + 1 == sizes.len();
        if bytes < cap && !last {
            continue;
        }
        let floats = first_float
            + (sizes[first..=j].iter())
                .map(|&s| (s / 4) as usize)
                .sum::<usize>();
        let parts = (ends.iter_mut().zip(finished_after).zip(dispatches))
            .map(|((end, after), &all)| {
                let start = *end;
                *end = match last {
                    true => all,
                    false => (after[first..=j].iter().copied()).fold(start, usize::max),
                };
                start..*end
            })
            .collect();
        buckets.push(Bucket {
            dispatches: parts,
            buffers: first..j + 1,
            floats: first_float..floats,
        });
        (first, first_float, bytes) = (j + 1, floats, 0);
    }
    buckets
}

/// How far [`DataParallel::run_synced`] runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Through {
    /// The forward pass.
    Forward,
    /// The forward and backward passes.
    Backward,
    /// Both, and the gradients' copies for the all-reduce.
    Copies,
}

/// What the host keeps for batch norms synchronised across replicas.
struct SyncedBatchNorms {
    /// Per replica, a staging buffer for one batch norm's statistics or sums.
    staging: Vec<wgpu::Buffer>,
    /// Every batch norm's running mean and variance (`[2][channels]`, in the network's order),
    /// updated by the host from the whole batch's statistics and written to every replica after
    /// each step.
    running: std::sync::Arc<std::sync::Mutex<Vec<Vec<f32>>>>,
}

impl SyncedBatchNorms {
    /// For `replicas`, keeping the running statistics `sharing`'s host keeps where given (the
    /// replicas then share its networks' parameters), else replica 0's.
    fn new(replicas: &[GpuNetwork], sharing: Option<&SyncedBatchNorms>) -> Result<Self> {
        let first = replicas[0].batch_norm_syncs();
        for net in replicas {
            let (forward, backward) = net.batch_norm_syncs();
            if (forward.len(), backward.len()) != (first.0.len(), first.1.len()) {
                return Err(Error::Internal(
                    "replicas stop at different batch norms".into(),
                ));
            }
        }
        let largest = (first.0.iter().chain(first.1))
            .map(|s| (s.buffer.size() / 4) as usize)
            .max()
            .unwrap_or(0);
        Ok(SyncedBatchNorms {
            staging: (replicas.iter())
                .map(|net| {
                    net.context()
                        .staging_buffer("batch norm statistics", largest)
                })
                .collect(),
            running: match sharing {
                Some(other) => other.running.clone(),
                None => std::sync::Arc::new(std::sync::Mutex::new(
                    replicas[0].read_running_statistics()?,
                )),
            },
        })
    }
}

/// A network replicated over devices, each training on a shard of the batch.
pub struct DataParallel<'a> {
    replicas: Vec<GpuNetwork<'a>>,
    /// The other ranks' processes, where there are any.
    world: Option<&'a World>,
    /// With synchronised batch norms, what the host keeps for them.
    synced: Option<SyncedBatchNorms>,
    /// Images in the whole batch, over every rank.
    batch: usize,
    /// The whole batch's first image this process's replicas take.
    first_image: usize,
    /// Images per replica.
    shards: Vec<usize>,
    kind: LossKind,
    /// Per replica, every gradient buffer its backward pass writes, in the order it finishes
    /// them (see [`gradient_buffers`]).
    gradients: Vec<Vec<wgpu::Buffer>>,
    /// Bytes of each gradient buffer (in `gradients`' order), alike on every replica.
    sizes: Vec<u64>,
    /// The layer of each gradient buffer (in `gradients`' order).
    buffer_layers: Vec<String>,
    /// Each bucket's host seconds in the last all-reduce, after its readback.
    bucket_seconds: std::cell::RefCell<Vec<f64>>,
    /// The running statistics every replica received after the last completed update (a
    /// failed step's forward pass may already have moved a replica's own).
    completed_running: std::cell::RefCell<Option<Vec<Vec<f32>>>>,
    /// Per replica and gradient buffer, the backward dispatches after which it is final.
    finished_after: Vec<Vec<usize>>,
    /// Per replica, the dispatches of its backward pass.
    dispatches: Vec<usize>,
    /// The all-reduce's buckets, alike on every replica.
    buckets: Vec<Bucket>,
    /// Per replica and bucket, the staging buffer its gradients are copied into.
    staging: Vec<Vec<wgpu::Buffer>>,
    /// The host's sum and one bucket of one replica's gradients read back, made once.
    /// And, across ranks, room for rank 0's sum of a bucket before it is sent.
    host: std::sync::Mutex<(Vec<f32>, Vec<f32>, Vec<f32>)>,
    all_reduce: std::cell::Cell<AllReduce>,
    /// The bucket size asked for ([`DataParallel::set_bucket_bytes`]).
    bucket_bytes: u64,
    /// Every replica reads the first one's parameter buffers (parts of a batch on one device).
    shared_parameters: bool,
}

/// One bucket of the all-reduce, as a profile shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BucketReport {
    /// The layers whose gradients it holds, in the order the backward pass finishes them: the
    /// first and the last.
    pub layers: (String, String),
    /// Its gradients' bytes (one replica's).
    pub bytes: u64,
    /// Host seconds of its last all-reduce after its gradients were read back: the weighted
    /// sum, the sum across ranks where there are several, and the writes to every replica.
    pub seconds: f64,
}

/// Every gradient buffer a replica's backward pass writes, in the network's order, each with the
/// number of backward dispatches after which it is final (its layer's last) and its layer.
pub(crate) fn gradient_buffers(net: &GpuNetwork) -> Result<Vec<(usize, wgpu::Buffer, usize)>> {
    let plan = net.plan();
    let dispatches = net.backward_dispatches()?;
    let mut buffers = Vec::new();
    for (params, grads) in net.parameters_and_gradients()? {
        let Some(grads) = grads else { continue };
        let layer = &plan[params.layer].layer;
        // A layer's gradients are final after its last dispatch (the whole pass if none names it).
        let after = (dispatches.iter())
            .rposition(|d| layer_of(&d.label) == layer.name)
            .map_or(dispatches.len(), |i| i + 1);
        for buffer in grads.trained_buffers(&layer.kind) {
            buffers.push((after, buffer.clone(), params.layer));
        }
    }
    Ok(buffers)
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
        Self::over_ranks(None, contexts, network, batch, weights, (kind, false))
    }

    /// As [`DataParallel::new`], this process's replicas among every rank's of `world` (each
    /// rank with as many devices): the batch is split over all ranks' replicas, rank r's
    /// taking the shards after ranks 0 to r-1's, and the gradients summed across ranks too.
    /// With `sync_batch_norm`, every batch norm normalises by the whole batch's statistics
    /// (PyTorch's SyncBatchNorm): the passes stop at each for the host to combine the replicas'.
    pub fn over_ranks(
        world: Option<&'a World>,
        contexts: &[&'a GpuContext],
        network: &Network,
        batch: usize,
        weights: &Weights,
        (kind, sync_batch_norm): (LossKind, bool),
    ) -> Result<Self> {
        if contexts.iter().any(|c| c.precision() != Precision::F32) {
            return Err(Error::InvalidArgument(
                "--precision f16 trains one network on one device; data-parallel replicas keep f32 \
                 (use --precision f32)"
                    .into(),
            ));
        }
        let (shards, first_image) = Self::split(world, contexts.len(), batch)?;
        // One replica in all normalises by the whole batch anyway; a network without batch
        // norms has nothing to synchronise.
        let has_batch_norms = (network.plan(1)?.iter())
            .any(|l| matches!(l.layer.kind, crate::model::LayerKind::BatchNorm { .. }));
        let replicas_in_all = contexts.len() * world.map_or(1, World::size);
        let synced = sync_batch_norm && replicas_in_all > 1 && has_batch_norms;
        let replicas = (contexts.iter().zip(&shards))
            .map(|(ctx, &shard)| {
                let plan = network.plan(shard)?;
                let loss = Loss::with_aux_heads(kind, &plan);
                let keep = Keep::WhatBackwardReads;
                GpuNetwork::training_with(ctx, &plan, weights, (&loss, keep), synced)
            })
            .collect::<Result<Vec<_>>>()?;
        let synced = match synced {
            true => Some(SyncedBatchNorms::new(&replicas, None)?),
            false => None,
        };
        Self::assemble(world, replicas, (batch, first_image, shards), kind, synced)
    }

    /// Replicas of `network` for another batch size over the same devices and ranks, sharing
    /// these replicas' parameters, gradients and (synchronised) running statistics: a data
    /// set's last, smaller batch trains with it, and these replicas' optimisers update from
    /// either's all-reduce (as [`GpuNetwork::training_sharing`] does on one device).
    pub fn sharing(&self, network: &Network, batch: usize) -> Result<Self> {
        // Parts of a batch on one device: a smaller batch needs no more parts than images.
        let replicas = match self.shared_parameters {
            true => self.replicas.len().min(batch),
            false => self.replicas.len(),
        };
        let (shards, first_image) = Self::split(self.world, replicas, batch)?;
        let synced = self.synced.is_some();
        let replicas = (self.replicas.iter().zip(&shards))
            .map(|(other, &shard)| {
                let plan = network.plan(shard)?;
                GpuNetwork::training_sharing_with(other, &plan, Keep::WhatBackwardReads, synced)
            })
            .collect::<Result<Vec<_>>>()?;
        let synced = match &self.synced {
            Some(other) => Some(SyncedBatchNorms::new(&replicas, Some(other))?),
            None => None,
        };
        let mut shared = Self::assemble(
            self.world,
            replicas,
            (batch, first_image, shards),
            self.kind,
            synced,
        )?;
        shared.set_all_reduce(self.all_reduce.get());
        shared.set_bucket_bytes(self.bucket_bytes);
        shared.shared_parameters = self.shared_parameters;
        Ok(shared)
    }

    /// `batch` images of `network` on `ctx` in `parts` networks over one set of parameter
    /// buffers, each part with gradient buffers of its own and every batch norm synchronised
    /// across the parts (the whole batch's statistics): a batch too large for one storage
    /// binding whose batch norms train (`gpu::MicroBatches`). One optimiser, on the first part,
    /// updates the parameters every part shares.
    pub(crate) fn parts_on_one_device(
        ctx: &'a GpuContext,
        network: &Network,
        (batch, parts): (usize, usize),
        weights: &Weights,
        (loss, keep): (&Loss, Keep),
    ) -> Result<Self> {
        let (sizes, _) = Self::split(None, parts, batch)?;
        let first =
            GpuNetwork::training_with(ctx, &network.plan(sizes[0])?, weights, (loss, keep), true)?;
        let others = (sizes[1..].iter())
            .map(|&size| {
                let plan = network.plan(size)?;
                GpuNetwork::training_sharing_parameters(&first, &plan, keep, true)
            })
            .collect::<Result<Vec<_>>>()?;
        let replicas: Vec<GpuNetwork<'a>> = std::iter::once(first).chain(others).collect();
        let synced = SyncedBatchNorms::new(&replicas, None)?;
        let mut parts = Self::assemble(None, replicas, (batch, 0, sizes), loss.kind, Some(synced))?;
        parts.shared_parameters = true;
        Ok(parts)
    }

    /// This process's shards of `batch` split over `replicas` per rank of `world`, and the
    /// whole batch's image its first shard starts at.
    fn split(world: Option<&World>, replicas: usize, batch: usize) -> Result<(Vec<usize>, usize)> {
        let (rank, ranks) = world.map_or((0, 1), |w| (w.rank(), w.size()));
        let all = shards(batch, ranks * replicas)?;
        let mine = rank * replicas..(rank + 1) * replicas;
        Ok((all[mine.clone()].to_vec(), all[..mine.start].iter().sum()))
    }

    /// The data-parallel run over `replicas` (built for `shards` of `batch`, this process's
    /// first at the whole batch's `first_image`): their gradient buffers found and bucketed.
    fn assemble(
        world: Option<&'a World>,
        replicas: Vec<GpuNetwork<'a>>,
        (batch, first_image, shards): (usize, usize, Vec<usize>),
        kind: LossKind,
        synced: Option<SyncedBatchNorms>,
    ) -> Result<Self> {
        let found = (replicas.iter())
            .map(gradient_buffers)
            .collect::<Result<Vec<_>>>()?;
        // The order replica 0's backward pass finishes the buffers (ties in the network's).
        let mut order: Vec<usize> = (0..found[0].len()).collect();
        order.sort_by_key(|&j| found[0][j].0);
        let sizes: Vec<u64> = order.iter().map(|&j| found[0][j].1.size()).collect();
        let plan = replicas[0].plan();
        let buffer_layers = (order.iter())
            .map(|&j| plan[found[0][j].2].layer.name.clone())
            .collect();
        // Replicas of one network pack their gradients alike unless their adapters' storage
        // bindings differ (a fully connected layer's weight then splits into other slices).
        for (i, (net, buffers)) in replicas.iter().zip(&found).enumerate().skip(1) {
            let alike = buffers.len() == sizes.len()
                && (order.iter().zip(&sizes)).all(|(&j, &size)| buffers[j].1.size() == size);
            if !alike {
                return Err(Error::InvalidArgument(format!(
                    "replica {i}'s adapter ('{}') packs the weights in other slices than replica \
                     0's (its storage bindings differ): replicas need adapters alike",
                    net.context().info().name
                )));
            }
        }
        // Across ranks too: a rank whose adapter packs otherwise would sum other lengths.
        if let Some(world) = world {
            let mut layout = crc32fast::Hasher::new();
            layout.update(bytemuck::cast_slice(&sizes));
            let all = world.gather(layout.finalize());
            if let Some(rank) = all.iter().position(|&c| c != all[0]) {
                return Err(Error::InvalidArgument(format!(
                    "rank {rank}'s adapters pack the weights in other slices than rank 0's (their \
                     storage bindings differ): ranks need adapters alike"
                )));
            }
        }
        let finished_after = (found.iter())
            .map(|buffers| order.iter().map(|&j| buffers[j].0).collect())
            .collect();
        let gradients = (found.iter())
            .map(|buffers| order.iter().map(|&j| buffers[j].1.clone()).collect())
            .collect();
        let dispatches = (replicas.iter())
            .map(|net| Ok(net.backward_dispatches()?.len()))
            .collect::<Result<Vec<_>>>()?;
        let replicas_software = replicas.iter().all(|net| net.context().software());
        let mut data_parallel = DataParallel {
            replicas,
            world: world.filter(|w| w.size() > 1),
            synced,
            batch,
            first_image,
            shards,
            kind,
            gradients,
            sizes,
            buffer_layers,
            finished_after,
            dispatches,
            bucket_seconds: std::cell::RefCell::new(Vec::new()),
            completed_running: std::cell::RefCell::new(None),
            buckets: Vec::new(),
            bucket_bytes: BUCKET_BYTES,
            shared_parameters: false,
            staging: Vec::new(),
            host: std::sync::Mutex::new((Vec::new(), Vec::new(), Vec::new())),
            all_reduce: std::cell::Cell::new(if replicas_software {
                AllReduce::AfterBackward
            } else {
                AllReduce::Overlapped
            }),
        };
        data_parallel.set_bucket_bytes(BUCKET_BYTES);
        Ok(data_parallel)
    }

    /// Sets when the gradients are all-reduced (see [`AllReduce`] for the default).
    pub fn set_all_reduce(&self, all_reduce: AllReduce) {
        self.all_reduce.set(all_reduce);
    }

    /// When the gradients are all-reduced (after the backward pass whenever batch norms are
    /// synchronised: the pass stops at each of them anyway).
    pub fn all_reduce(&self) -> AllReduce {
        match self.synced {
            Some(_) => AllReduce::AfterBackward,
            None => self.all_reduce.get(),
        }
    }

    /// True when batch norms are synchronised across the replicas (there are batch norms,
    /// several replicas, and `sync_batch_norm` was asked for).
    pub fn synced_batch_norms(&self) -> bool {
        self.synced.is_some()
    }

    /// Buckets the gradients in about `bytes` each ([`BUCKET_BYTES`] unless set; at least one
    /// buffer each), making each bucket's staging buffers anew.
    pub fn set_bucket_bytes(&mut self, bytes: u64) {
        self.bucket_bytes = bytes;
        self.buckets = plan_buckets(
            &self.sizes,
            &self.finished_after,
            &self.dispatches,
            bytes.max(1),
        );
        let floats = self.buckets.last().map_or(0, |b| b.floats.end);
        let largest = (self.buckets.iter())
            .map(|b| b.floats.len())
            .max()
            .unwrap_or(0);
        self.staging = (self.replicas.iter())
            .map(|net| {
                (self.buckets.iter())
                    .map(|b| (net.context()).staging_buffer("all-reduce bucket", b.floats.len()))
                    .collect()
            })
            .collect();
        let scratch = if self.world.is_some() { largest } else { 0 };
        self.host =
            std::sync::Mutex::new((vec![0.0; floats], vec![0.0; largest], vec![0.0; scratch]));
    }

    /// The replicas, in device order.
    pub fn replicas(&self) -> &[GpuNetwork<'a>] {
        &self.replicas
    }

    /// Images per replica of this process.
    pub fn shards(&self) -> &[usize] {
        &self.shards
    }

    /// Images in the whole batch, over every rank.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Replicas over every rank.
    pub fn replicas_in_all(&self) -> usize {
        self.replicas.len() * self.world.map_or(1, World::size)
    }

    /// Every replica's logits of the last pass over the whole batch, in image order (gathered
    /// from every rank where there are several).
    pub fn read_logits(&self) -> Result<Vec<f32>> {
        let mut logits = Vec::new();
        for net in &self.replicas {
            logits.extend(net.read_output()?);
        }
        let Some(world) = self.world else {
            return Ok(logits);
        };
        let per_image = logits.len() / self.shards.iter().sum::<usize>();
        let all = shards(self.batch, self.replicas_in_all())?;
        let counts: Vec<usize> = (all.chunks(self.replicas.len()))
            .map(|rank| rank.iter().sum::<usize>() * per_image)
            .collect();
        Ok(world.gather_f32s(&logits, &counts))
    }

    /// Buckets the all-reduce sums the gradients in.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Every bucket of the last all-reduce: its layers, bytes and host time.
    pub fn bucket_reports(&self) -> Vec<BucketReport> {
        let seconds = self.bucket_seconds.borrow();
        (self.buckets.iter().enumerate())
            .map(|(k, bucket)| BucketReport {
                layers: (
                    self.buffer_layers[bucket.buffers.start].clone(),
                    self.buffer_layers[bucket.buffers.end - 1].clone(),
                ),
                bytes: self.sizes[bucket.buffers.clone()].iter().sum(),
                seconds: seconds.get(k).copied().unwrap_or(0.0),
            })
            .collect()
    }

    /// Copies a batch (`[N, C, H, W]`, the whole batch, over every rank) and its labels (for
    /// cross-entropy) to the replicas, each its shard.
    pub fn upload(&self, input: &[f32], labels: Option<&[usize]>) -> Result<()> {
        let per_image = self.replicas[0].plan()[0].input.len();
        let batch = self.batch;
        if input.len() != batch * per_image || labels.is_some_and(|l| l.len() != batch) {
            return Err(Error::InvalidArgument(format!(
                "a batch of {batch} images is {} values and {batch} labels",
                batch * per_image
            )));
        }
        let own = self.own_images();
        self.upload_own(
            &input[own.start * per_image..own.end * per_image],
            labels.map(|l| &l[own]),
        )
    }

    /// The images of the whole batch this process's replicas take (all of it in one process).
    pub fn own_images(&self) -> Range<usize> {
        self.first_image..self.first_image + self.shards.iter().sum::<usize>()
    }

    /// As [`DataParallel::upload`], given only this process's images of the batch
    /// ([`DataParallel::own_images`]) and their labels.
    pub fn upload_own(&self, input: &[f32], labels: Option<&[usize]>) -> Result<()> {
        let per_image = self.replicas[0].plan()[0].input.len();
        let own = self.own_images().len();
        if self.kind == LossKind::CrossEntropy && labels.is_none() {
            return Err(Error::InvalidArgument(
                "cross-entropy needs the batch's labels".into(),
            ));
        }
        if input.len() != own * per_image || labels.is_some_and(|l| l.len() != own) {
            return Err(Error::InvalidArgument(format!(
                "this process's {own} images of the batch are {} values and {own} labels",
                own * per_image
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

    /// Images of the last pass over the whole batch (every rank's) whose label had the
    /// highest logit (a tie counts as right), given this process's labels.
    pub fn count_correct(&self, own_labels: &[usize]) -> Result<usize> {
        let mut correct = 0;
        let mut first = 0;
        for (net, &n) in self.replicas.iter().zip(&self.shards) {
            let logits = net.read_output()?;
            let classes = logits.len() / n;
            correct += (logits
                .chunks_exact(classes)
                .zip(&own_labels[first..first + n]))
            .filter(|(row, &label)| !row.iter().any(|&v| v > row[label]))
            .count();
            first += n;
        }
        Ok(match self.world {
            Some(world) => world.sum_f64(correct as f64) as usize,
            None => correct,
        })
    }

    /// True when `flag` is set on any rank (every rank must ask together): how ranks agree to
    /// stop between two steps.
    pub fn on_any_rank(&self, flag: bool) -> bool {
        match self.world {
            Some(world) => world.sum_f64(f64::from(u8::from(flag))) > 0.0,
            None => flag,
        }
    }

    /// Runs every replica's forward pass (training mode), submitted to all devices before
    /// waiting for any.
    pub fn forward(&self) -> Result<()> {
        if self.synced.is_some() {
            self.run_synced(Through::Forward)?;
            return self.wait("data-parallel forward");
        }
        for net in &self.replicas {
            net.submit("data-parallel forward", |encoder| {
                net.encode_forward(encoder);
                Ok(())
            })?;
        }
        self.wait("data-parallel forward")
    }

    /// Runs every replica's forward and backward pass, submitted to all devices before waiting
    /// for any, without the all-reduce: each replica is left with its own gradients (what
    /// [`DataParallel::gradients`] costs without the all-reduce, for a benchmark; with
    /// synchronised batch norms they already hold whole-batch terms, and the passes still stop
    /// at each batch norm).
    pub fn forward_backward(&self) -> Result<()> {
        if self.synced.is_some() {
            self.run_synced(Through::Backward)?;
            return self.wait("data-parallel forward-backward");
        }
        for net in &self.replicas {
            net.submit("data-parallel forward-backward", |encoder| {
                net.encode_forward(encoder);
                net.encode_backward(encoder)
            })?;
        }
        self.wait("data-parallel forward-backward")
    }

    fn wait(&self, during: &str) -> Result<()> {
        for net in &self.replicas {
            net.context().wait(during)?;
        }
        Ok(())
    }

    /// Every replica's forward and backward pass and the all-reduce: every replica then holds
    /// the whole batch's gradients.
    pub fn gradients(&self) -> Result<AllReduceStats> {
        if (self.replicas.len() == 1 && self.world.is_none()) || self.buckets.is_empty() {
            // One replica's gradients are the batch's; a network without parameters has none.
            self.forward_backward()?;
            return Ok(AllReduceStats::default());
        }
        if self.synced.is_some() {
            // Stopped at every batch norm anyway: the all-reduce follows the backward pass.
            let last = self.run_synced(Through::Copies)?;
            self.wait("data-parallel forward-backward")?;
            let per_bucket = (last.into_iter())
                .map(|s| vec![s; self.buckets.len()])
                .collect::<Vec<_>>();
            return self.reduce(&per_bucket);
        }
        let submissions = (0..self.replicas.len())
            .map(|r| self.submit_backward(r))
            .collect::<Result<Vec<_>>>()?;
        if self.all_reduce.get() == AllReduce::AfterBackward {
            self.wait("data-parallel forward-backward")?;
        }
        self.reduce(&submissions)
    }

    /// Runs every replica's synchronised passes through `through`, part by part: after each part
    /// (up to a batch norm's statistics or sums) the host combines the replicas' and writes the
    /// whole batch's back before the next. Returns each replica's last submission.
    fn run_synced(&self, through: Through) -> Result<Vec<wgpu::SubmissionIndex>> {
        let synced = self.synced.as_ref().expect("synchronised batch norms");
        let (forward, backward) = self.replicas[0].batch_norm_syncs();
        let (stops_forward, stops_backward) = (forward.len(), backward.len());
        let parts = match through {
            Through::Forward => stops_forward + 1,
            Through::Backward | Through::Copies => stops_forward + stops_backward + 1,
        };
        let mut last = Vec::new();
        for part in 0..parts {
            last.clear();
            for (r, net) in self.replicas.iter().enumerate() {
                let (forward, backward) = net.batch_norm_syncs();
                let stop = |syncs: &[BatchNormSync], k: usize, all: usize| match k {
                    k if k < syncs.len() => syncs[k].dispatches,
                    _ => all,
                };
                last.push(net.submit("synchronised part", |encoder| {
                    if part <= stops_forward {
                        let from = part.checked_sub(1).map_or(0, |k| forward[k].dispatches);
                        let to = stop(forward, part, net.forward_dispatches());
                        net.encode_forward_part(encoder, from..to)?;
                    }
                    if through != Through::Forward && part >= stops_forward {
                        let k = part - stops_forward;
                        let from = k.checked_sub(1).map_or(0, |k| backward[k].dispatches);
                        let to = stop(backward, k, net.backward_dispatches()?.len());
                        net.encode_backward_part(encoder, from..to, k == 0)?;
                    }
                    // The stop's statistics or sums, for the host.
                    let sync = match part {
                        p if p < stops_forward => Some(&forward[p]),
                        p if p + 1 < parts && through != Through::Forward => {
                            Some(&backward[p - stops_forward])
                        }
                        _ => None,
                    };
                    if let Some(sync) = sync {
                        let size = sync.buffer.size();
                        encoder.copy_buffer_to_buffer(&sync.buffer, 0, &synced.staging[r], 0, size);
                    }
                    if part + 1 == parts && through == Through::Copies {
                        self.copy_buckets(encoder, r);
                    }
                    Ok(())
                })?);
            }
            if part + 1 == parts {
                break;
            }
            match part < stops_forward {
                true => self.combine_statistics(synced, part, &last)?,
                false => self.combine_sums(synced, part - stops_forward, &last)?,
            }
        }
        Ok(last)
    }

    /// Replaces every replica's statistics of the `k`th synchronised batch norm (its own, in
    /// its staging buffer after `submissions`) by the whole batch's mean and biased variance,
    /// and updates the host's running statistics as PyTorch's SyncBatchNorm does (momentum 0.1,
    /// the variance unbiased over the whole batch).
    fn combine_statistics(
        &self,
        synced: &SyncedBatchNorms,
        k: usize,
        submissions: &[wgpu::SubmissionIndex],
    ) -> Result<()> {
        let (channels, plane, whole) =
            self.batch_norm_shape(&self.replicas[0].batch_norm_syncs().0[k]);
        let stats = self.read_syncs(synced, 4 * channels, submissions)?;
        // The mean first, then the variance about it (no cancelling of E[x^2] - E[x]^2).
        let mut mean = vec![0.0f64; channels];
        for (values, &n) in stats.iter().zip(&self.shards) {
            for (m, &v) in mean.iter_mut().zip(&values[2 * channels..3 * channels]) {
                *m += (n * plane) as f64 * f64::from(v);
            }
        }
        self.sum_over_ranks(&mut mean);
        mean.iter_mut().for_each(|m| *m /= whole);
        let mut variance = vec![0.0f64; channels];
        for (values, &n) in stats.iter().zip(&self.shards) {
            for c in 0..channels {
                let (m, v) = (values[2 * channels + c], values[3 * channels + c]);
                let offset = f64::from(m) - mean[c];
                variance[c] += (n * plane) as f64 * (f64::from(v) + offset * offset);
            }
        }
        self.sum_over_ranks(&mut variance);
        variance.iter_mut().for_each(|v| *v /= whole);
        let mut combined: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        combined.extend(variance.iter().map(|&v| v as f32));
        for net in &self.replicas {
            let buffer = &net.batch_norm_syncs().0[k].buffer;
            let offset = (2 * channels * 4) as u64;
            (net.context().queue()).write_buffer(buffer, offset, bytemuck::cast_slice(&combined));
        }
        // The running statistics, as batch_norm_train_forward.wgsl updates them alone.
        let mut running = synced.running.lock().unwrap_or_else(|e| e.into_inner());
        let (keep, momentum) = (1.0 - RUNNING_MOMENTUM, RUNNING_MOMENTUM);
        let unbiased = (whole / (whole - 1.0)) as f32;
        let (running_mean, running_var) = running[k].split_at_mut(channels);
        for c in 0..channels {
            running_mean[c] = keep * running_mean[c] + momentum * combined[c];
            running_var[c] = keep * running_var[c] + momentum * combined[channels + c] * unbiased;
        }
        Ok(())
    }

    /// Replaces every replica's sums of the `k`th synchronised batch norm's backward (its own,
    /// in its staging buffer after `submissions`) by what the whole batch's make of them: with
    /// S the sums of the whole loss (each replica's weighted by its share), replica i gets
    /// `S * count_i / (w_i * M)`, so that its kernel's own formula (sum / count_i, at its loss's
    /// scale 1 / w_i) takes the whole batch's means, and the all-reduce after the pass (the sum
    /// of w_i times each) leaves S, the parameters' gradient.
    fn combine_sums(
        &self,
        synced: &SyncedBatchNorms,
        k: usize,
        submissions: &[wgpu::SubmissionIndex],
    ) -> Result<()> {
        let (channels, plane, whole) =
            self.batch_norm_shape(&self.replicas[0].batch_norm_syncs().1[k]);
        let sums = self.read_syncs(synced, 2 * channels, submissions)?;
        let weights = self.weights();
        let mut total = vec![0.0f64; 2 * channels];
        for (values, &weight) in sums.iter().zip(&weights) {
            for (t, &v) in total.iter_mut().zip(values.iter()) {
                *t += weight * f64::from(v);
            }
        }
        self.sum_over_ranks(&mut total);
        for ((net, &n), &weight) in self.replicas.iter().zip(&self.shards).zip(&weights) {
            let factor = (n * plane) as f64 / (weight * whole);
            let values: Vec<f32> = total.iter().map(|&t| (t * factor) as f32).collect();
            let buffer = &net.batch_norm_syncs().1[k].buffer;
            (net.context().queue()).write_buffer(buffer, 0, bytemuck::cast_slice(&values));
        }
        Ok(())
    }

    /// The channels of `sync`'s batch norm, its values per channel and image, and its values per
    /// channel in the whole batch (over every rank).
    fn batch_norm_shape(&self, sync: &BatchNormSync) -> (usize, usize, f64) {
        let output = self.replicas[0].plan()[sync.layer].output;
        let plane = output.height * output.width;
        (output.channels, plane, (self.batch * plane) as f64)
    }

    /// Each replica's first `len` values of its synchronisation staging buffer, once
    /// `submissions` (one per replica) have written them.
    fn read_syncs(
        &self,
        synced: &SyncedBatchNorms,
        len: usize,
        submissions: &[wgpu::SubmissionIndex],
    ) -> Result<Vec<Vec<f32>>> {
        (self.replicas.iter().zip(&synced.staging).zip(submissions))
            .map(|((net, staging), submission)| {
                let mut values = vec![0.0; len];
                (net.context()).read_staging_of(staging, &mut values, submission.clone())?;
                Ok(values)
            })
            .collect()
    }

    /// `values` summed over the ranks, where there are several.
    fn sum_over_ranks(&self, values: &mut [f64]) {
        if let Some(world) = self.world {
            world.sum_f64s(values);
        }
    }

    /// Records the copies of every bucket of replica `r`'s gradients into its staging buffers.
    fn copy_buckets(&self, encoder: &mut wgpu::CommandEncoder, r: usize) {
        for k in 0..self.buckets.len() {
            let mut at = 0;
            for buffer in &self.gradients[r][self.buckets[k].buffers.clone()] {
                encoder.copy_buffer_to_buffer(buffer, 0, &self.staging[r][k], at, buffer.size());
                at += buffer.size();
            }
        }
    }

    /// Submits replica `r`'s forward and backward pass with each bucket's copy into its staging
    /// buffer after the dispatches that finish it: in one submission, or one per bucket when
    /// overlapped. Returns, per bucket, the submission after which its staging buffer holds it.
    fn submit_backward(&self, r: usize) -> Result<Vec<wgpu::SubmissionIndex>> {
        let (net, gradients, staging) = (&self.replicas[r], &self.gradients[r], &self.staging[r]);
        let copy = |encoder: &mut wgpu::CommandEncoder, k: usize| {
            let mut at = 0;
            for buffer in &gradients[self.buckets[k].buffers.clone()] {
                encoder.copy_buffer_to_buffer(buffer, 0, &staging[k], at, buffer.size());
                at += buffer.size();
            }
        };
        match self.all_reduce.get() {
            AllReduce::AfterBackward => {
                let submission = net.submit("data-parallel forward-backward", |encoder| {
                    net.encode_forward(encoder);
                    net.encode_backward(encoder)?;
                    (0..self.buckets.len()).for_each(|k| copy(encoder, k));
                    Ok(())
                })?;
                Ok(vec![submission; self.buckets.len()])
            }
            AllReduce::Overlapped => (self.buckets.iter().enumerate())
                .map(|(k, bucket)| {
                    net.submit("data-parallel backward bucket", |encoder| {
                        if k == 0 {
                            net.encode_forward(encoder);
                        }
                        net.encode_backward_part(encoder, bucket.dispatches[r].clone(), k == 0)?;
                        copy(encoder, k);
                        Ok(())
                    })
                })
                .collect(),
        }
    }

    /// The loss of the last pass over the whole batch: the shards' cross-entropies weighted by
    /// their sizes, or their `l2_loss`es summed.
    pub fn read_loss(&self) -> Result<f64> {
        let mut total = 0.0;
        for (net, weight) in self.replicas.iter().zip(self.weights()) {
            total += weight * net.read_loss()?;
        }
        Ok(self.world.map_or(total, |world| world.sum_f64(total)))
    }

    /// Each replica's share of the whole batch's loss.
    fn weights(&self) -> Vec<f64> {
        (self.shards.iter())
            .map(|&n| match self.kind {
                LossKind::CrossEntropy => n as f64 / self.batch as f64,
                LossKind::L2 => 1.0,
            })
            .collect()
    }

    /// Sums the replicas' gradients bucket by bucket (bucket k of replica r is in its staging
    /// buffer after `submissions[r][k]`), each weighted by its share of the loss, and writes
    /// each bucket's sum to every replica as soon as it is complete.
    fn reduce(&self, submissions: &[Vec<wgpu::SubmissionIndex>]) -> Result<AllReduceStats> {
        let start = Instant::now();
        let mut host = self.host.lock().unwrap_or_else(|e| e.into_inner());
        let (sum, read, scratch) = &mut *host;
        let weights = self.weights();
        let mut bucket_seconds = self.bucket_seconds.borrow_mut();
        bucket_seconds.clear();
        // Parts of one batch on one device: the one optimiser reads the first part's gradients.
        let receivers = match self.shared_parameters {
            true => 1,
            false => self.replicas.len(),
        };
        for (k, bucket) in self.buckets.iter().enumerate() {
            let sum = &mut sum[bucket.floats.clone()];
            let read = &mut read[..bucket.floats.len()];
            sum.fill(0.0);
            let mut seconds = 0.0;
            for (r, net) in self.replicas.iter().enumerate() {
                (net.context()).read_staging_of(
                    &self.staging[r][k],
                    read,
                    submissions[r][k].clone(),
                )?;
                let summing = Instant::now();
                let weight = weights[r] as f32;
                for (s, &g) in sum.iter_mut().zip(read.iter()) {
                    *s += weight * g;
                }
                seconds += summing.elapsed().as_secs_f64();
            }
            let across_and_back = Instant::now();
            if let Some(world) = self.world {
                world.sum(sum, scratch);
            }
            for (net, gradients) in self.replicas.iter().zip(&self.gradients).take(receivers) {
                let mut at = 0;
                for buffer in &gradients[bucket.buffers.clone()] {
                    let len = (buffer.size() / 4) as usize;
                    let values = bytemuck::cast_slice(&sum[at..at + len]);
                    net.context().queue().write_buffer(buffer, 0, values);
                    at += len;
                }
            }
            bucket_seconds.push(seconds + across_and_back.elapsed().as_secs_f64());
        }
        // Read back from every replica, written to every receiver.
        let bytes = 4 * sum.len() as u64 * (self.replicas.len() + receivers) as u64;
        Ok(AllReduceStats {
            seconds: start.elapsed().as_secs_f64(),
            bytes,
            // This rank's sum, once to the reduction and once back from the broadcast (the
            // payload each way, whatever route MPI's algorithms take it by).
            rank_bytes: self.world.map_or(0, |_| 2 * 4 * sum.len() as u64),
            buckets: self.buckets.len(),
        })
    }

    /// One SGD optimiser per replica, all with `config` (one in all for parts of a batch on
    /// one device, which share their parameters).
    pub fn optimizers(&self, config: SgdConfig) -> Result<Vec<Sgd<'_, 'a>>> {
        let owners = match self.shared_parameters {
            true => &self.replicas[..1],
            false => &self.replicas[..],
        };
        owners.iter().map(|net| Sgd::new(net, config)).collect()
    }

    /// True for parts of one batch on one device (`DataParallel::parts_on_one_device`):
    /// every replica reads the first one's parameter buffers.
    pub fn parts_of_one_batch(&self) -> bool {
        self.shared_parameters
    }

    /// One training step: forward-backward on every replica, the all-reduce, every replica's
    /// update (`optimizers` from [`DataParallel::optimizers`], submitted to all devices before
    /// any is waited for), and replica 0's batch-norm running statistics copied to the others.
    /// The statistics returned count the running statistics' copy too.
    pub fn step(&self, optimizers: &[Sgd]) -> Result<AllReduceStats> {
        let mut stats = self.gradients()?;
        let update = self.update(optimizers)?;
        stats.bytes += update.bytes;
        stats.rank_bytes += update.rank_bytes;
        stats.seconds += update.seconds;
        Ok(stats)
    }

    /// The second half of [`DataParallel::step`], after [`DataParallel::gradients`]: every
    /// replica's update, then the running statistics made equal (whose bytes and seconds it
    /// returns). Until it starts, every replica holds the weights of the last step completed, so
    /// a trainer whose [`DataParallel::gradients`] failed can still save them.
    pub fn update(&self, optimizers: &[Sgd]) -> Result<AllReduceStats> {
        for optimizer in optimizers {
            optimizer.submit_update()?;
        }
        self.wait("data-parallel update")?;
        let start = Instant::now();
        let bytes = self.broadcast_running_statistics()?;
        Ok(AllReduceStats {
            seconds: start.elapsed().as_secs_f64(),
            bytes,
            ..AllReduceStats::default()
        })
    }

    /// Copies replica 0's batch-norm running statistics to the other replicas (their weights
    /// and biases are left: the same update made them equal, which the check verifies); returns
    /// the bytes moved.
    fn broadcast_running_statistics(&self) -> Result<u64> {
        // One replica keeps its own, unless synchronised: then the host keeps them.
        if self.replicas.len() == 1 && self.world.is_none() && self.synced.is_none() {
            return Ok(0);
        }
        let mut statistics = match &self.synced {
            // Kept by the host, the same on every rank.
            Some(synced) => synced
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            None => self.replicas[0].read_running_statistics()?,
        };
        let bytes: u64 = statistics.iter().map(|s| 4 * s.len() as u64).sum();
        if bytes == 0 {
            return Ok(0);
        }
        // Rank 0's replica 0's, on every rank.
        let receivers = match self.world {
            _ if self.synced.is_some() => &self.replicas[..],
            Some(world) => {
                statistics.iter_mut().for_each(|s| world.broadcast(s));
                let rank_0 = world.rank() == 0;
                &self.replicas[usize::from(rank_0)..]
            }
            None => &self.replicas[1..],
        };
        for net in receivers {
            net.write_running_statistics(&statistics)?;
        }
        *self.completed_running.borrow_mut() = Some(statistics);
        Ok(bytes * self.replicas.len() as u64)
    }

    /// Fails, naming the replica, its adapter and the first tensor, unless every replica holds
    /// exactly replica 0's weights (bit for bit): replicas that drift apart are an error, never
    /// averaged away.
    pub fn check_replicas_equal(&self) -> Result<()> {
        if self.shared_parameters {
            // One set of parameter buffers: nothing can drift.
            return Ok(());
        }
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
        // Across ranks: a checksum of every weight's bits, each rank's against rank 0's.
        if let Some(world) = self.world {
            let mut checksum = crc32fast::Hasher::new();
            for (name, tensor) in first.iter() {
                checksum.update(name.as_bytes());
                checksum.update(bytemuck::cast_slice(&tensor.data));
            }
            let all = world.gather(checksum.finalize());
            if let Some(rank) = all.iter().position(|&c| c != all[0]) {
                return Err(Error::Mismatch(format!(
                    "rank {rank} no longer holds rank 0's weights (their checksums differ)"
                )));
            }
        }
        Ok(())
    }

    /// The reduced gradients (every replica holds them after [`DataParallel::gradients`]).
    pub fn read_gradients(&self) -> Result<Weights> {
        self.replicas[0].read_gradients()
    }

    /// Replica 0's weights (every replica's, while they stay equal).
    pub fn read_weights(&self) -> Result<Weights> {
        self.replicas[0].read_weights()
    }

    /// The weights of the last completed update, from the first replica whose device still
    /// answers (call it only before a step's update has started: until then the survivors'
    /// weights are every replica's), with the running statistics every replica received after
    /// that update (a failed step's forward pass may have moved a replica's own).
    pub fn read_weights_of_any(&self) -> Result<Weights> {
        let mut read = None;
        for net in &self.replicas {
            match net.read_weights() {
                Ok(weights) => {
                    read = Some(Ok(weights));
                    break;
                }
                Err(e) => read = Some(Err(e)),
            }
        }
        let mut weights = read.expect("at least one replica")?;
        let plan = self.replicas[0].plan();
        let norms: Vec<&str> = (plan.iter())
            .filter(|l| matches!(l.layer.kind, crate::model::LayerKind::BatchNorm { .. }))
            .map(|l| l.layer.name.as_str())
            .collect();
        if norms.is_empty() {
            return Ok(weights);
        }
        let completed = self.completed_running.borrow();
        let statistics = completed.as_ref().ok_or_else(|| {
            Error::InvalidArgument(
                "the running statistics of the last completed step were not kept".into(),
            )
        })?;
        for (name, values) in norms.iter().zip(statistics) {
            let (mean, variance) = values.split_at(values.len() / 2);
            for (suffix, values) in [("running_mean", mean), ("running_var", variance)] {
                let tensor = weights
                    .get_mut(&format!("{name}.{suffix}"))
                    .ok_or_else(|| {
                        Error::Internal(format!("no {name}.{suffix} among the weights"))
                    })?;
                tensor.data.copy_from_slice(values);
            }
        }
        Ok(weights)
    }
}

#[cfg(test)]
mod tests {
    use super::{plan_buckets, shards, Bucket};

    #[test]
    fn buckets_close_at_the_first_buffer_past_the_cap_and_cover_every_dispatch() {
        // Buffers of 8, 4, 16 and 4 bytes; replica 0 finishes them after dispatches 2, 2, 5
        // and 7 of 9, replica 1 (other kernels) after 3, 3, 4 and 4 of 6.
        let after = [vec![2, 2, 5, 7], vec![3, 3, 4, 4]];
        let bucket = |dispatches: [std::ops::Range<usize>; 2], buffers, floats| Bucket {
            dispatches: dispatches.to_vec(),
            buffers,
            floats,
        };
        assert_eq!(
            plan_buckets(&[8, 4, 16, 4], &after, &[9, 6], 10),
            [
                bucket([0..2, 0..3], 0..2, 0..3),
                bucket([2..5, 3..4], 2..3, 3..7),
                bucket([5..9, 4..6], 3..4, 7..8),
            ]
        );
        // A cap no bucket reaches: one bucket, the whole pass.
        assert_eq!(
            plan_buckets(&[8, 4, 16, 4], &after, &[9, 6], 1 << 30),
            [bucket([0..9, 0..6], 0..4, 0..8)]
        );
        // A buffer finished before the previous bucket's end adds no dispatches.
        let unordered = [vec![5, 2], vec![1, 1]];
        assert_eq!(
            plan_buckets(&[4, 4], &unordered, &[6, 2], 4)[1].dispatches,
            [5..6, 1..2]
        );
        assert!(plan_buckets(&[], &[vec![], vec![]], &[3, 3], 10).is_empty());
    }

    #[test]
    fn shards_cover_the_batch_and_differ_by_at_most_one() {
        assert_eq!(shards(7, 3).unwrap(), [3, 2, 2]);
        assert_eq!(shards(8, 2).unwrap(), [4, 4]);
        assert!(shards(1, 2).is_err());
        assert!(shards(4, 0).is_err());
    }
}
