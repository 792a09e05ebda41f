//! What building any network's passes on the GPU needs: buffer creation with memory accounting,
//! workgroup grids within the adapter's limits, and dispatches of typed kernels.

use bytemuck::Pod;
use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::context::{f16_words, GpuContext};
use crate::gpu::kernel::{Dispatch, KernelDef, KernelParams, Pipeline};
use crate::gpu::tuning::{LayerChoice, LinearLayerChoice};
use crate::shaders::{Element, Elements};

/// GPU memory a network holds, in bytes, by purpose. It is fixed at construction: a pass
/// allocates nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryUse {
    /// Packed weights and biases.
    pub weights: u64,
    /// The input, the layers' outputs (kept for the backward pass, or pooled where only later
    /// forwards read them), window maxima and batch statistics. A pooled buffer counts under the
    /// purpose of the tensor it was made for, whoever it serves later.
    pub activations: u64,
    /// Gradients of every parameter, and the buffers the layers' output gradients share (a
    /// layer's output gradient lives from its first reader's backward to its own).
    pub gradients: u64,
    /// What one layer's dispatches need and leave to nobody (padded inputs, transposes, partial
    /// sums), shared between layers; the optimiser's velocities.
    pub scratch: u64,
    /// Per-dispatch parameters.
    pub uniforms: u64,
}

impl std::ops::AddAssign for MemoryUse {
    fn add_assign(&mut self, other: Self) {
        self.weights += other.weights;
        self.activations += other.activations;
        self.gradients += other.gradients;
        self.scratch += other.scratch;
        self.uniforms += other.uniforms;
    }
}

impl MemoryUse {
    /// Everything together.
    pub fn total(&self) -> u64 {
        self.weights + self.activations + self.gradients + self.scratch + self.uniforms
    }

    /// This use and `other`'s together, purpose by purpose.
    pub fn plus(&self, other: &MemoryUse) -> MemoryUse {
        MemoryUse {
            weights: self.weights + other.weights,
            activations: self.activations + other.activations,
            gradients: self.gradients + other.gradients,
            scratch: self.scratch + other.scratch,
            uniforms: self.uniforms + other.uniforms,
        }
    }
}

/// `value` as a kernel parameter word, or the error that it does not fit one.
pub(crate) fn u32_of(value: usize, what: &str) -> Result<u32> {
    u32::try_from(value)
        .map_err(|_| Error::InvalidArgument(format!("{what} ({value}) exceeds 2^32")))
}

/// The size of a buffer of `len` values of `element`: whole 4-byte words (what copies and
/// queue writes move), at least one.
pub(crate) fn buffer_bytes(len: usize, element: Element) -> u64 {
    ((len * element.bytes()).next_multiple_of(4) as u64).max(4)
}

/// Which account a buffer's bytes go to.
#[derive(Clone, Copy)]
pub(crate) enum Purpose {
    Activations,
    Gradients,
    Scratch,
}

/// A storage buffer of the builder's pool: holds `bytes` bytes.
pub(crate) struct Pooled {
    bytes: u64,
    buffer: wgpu::Buffer,
    /// How many times the pool had handed the buffer out, this time included.
    generation: u32,
}

impl Pooled {
    /// The buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Which lending of the buffer this is (see [`Builder::still_holds`]).
    pub fn generation(&self) -> u32 {
        self.generation
    }
}

/// Creates buffers and dispatches for one network, counting every byte.
///
/// Buffers that live for part of a pass are shared: the dispatches of a pass run in the order
/// they are recorded (wgpu orders a storage buffer's writes before later reads), so a buffer no
/// later dispatch reads again can serve the next one that needs room. [`Builder::scratch`] lends
/// one until the current step (one layer's dispatches) ends; [`Builder::take`] lends one until
/// [`Builder::give_back`] (an output gradient, an activation only the forward pass reads).
pub(crate) struct Builder<'a> {
    pub ctx: &'a GpuContext,
    pub memory: MemoryUse,
    /// The largest buffer one storage binding may hold.
    pub max_binding: u64,
    /// Launches folded into a 2-D grid so far (one grid dimension could not hold them).
    pub folded_launches: usize,
    /// Whether the network computes gradients: its layers choose their kernels for training.
    pub trains: bool,
    /// How the network stores its activations and weight matrices (f32 unless asked for f16):
    /// what the forward kernels read and write, and the backward kernels read.
    pub stored: Element,
    /// Each layer's kernel choice where it has one to report, as (layer, description).
    pub choices: Vec<(String, LayerChoice)>,
    /// Each fully connected layer's forward kernel, as (layer, description).
    pub linear_choices: Vec<(String, LinearLayerChoice)>,
    /// Buffers free for reuse.
    pool: Vec<Pooled>,
    /// Scratch lent to the current step, back to the pool when it ends.
    lent: Vec<Pooled>,
    /// How many times the pool has handed out each of its buffers.
    lendings: std::collections::HashMap<wgpu::Buffer, u32>,
}

impl<'a> Builder<'a> {
    pub fn new(ctx: &'a GpuContext) -> Self {
        Builder {
            ctx,
            memory: MemoryUse::default(),
            folded_launches: 0,
            trains: false,
            stored: Element::F32,
            choices: Vec::new(),
            linear_choices: Vec::new(),
            pool: Vec::new(),
            lent: Vec::new(),
            lendings: Default::default(),
            max_binding: ctx.max_binding(),
        }
    }

    /// Records how `layer` computes (for profiles), once per layer.
    pub fn note_choice(&mut self, layer: &str, choice: LayerChoice) {
        if !self.choices.iter().any(|(name, _)| name == layer) {
            self.choices.push((layer.to_string(), choice));
        }
    }

    pub fn too_large(&self, what: String, detail: String) -> Error {
        Error::TooLarge {
            what,
            adapter: self.ctx.info().name.clone(),
            detail,
        }
    }

    pub fn check_binding(&self, what: &str, bytes: u64) -> Result<()> {
        if bytes > self.max_binding {
            return Err(self.too_large(
                what.to_string(),
                format!(
                    "{} MB, but one storage binding may hold at most {} MB (max_storage_buffer_binding_size)",
                    bytes / 1_000_000,
                    self.max_binding / 1_000_000
                ),
            ));
        }
        Ok(())
    }

    /// A zero-initialised storage buffer of `floats` f32.
    pub fn storage(&mut self, label: &str, floats: usize, purpose: Purpose) -> wgpu::Buffer {
        self.storage_of(label, floats, Element::F32, purpose)
    }

    /// A zero-initialised storage buffer of `len` values of `element`.
    pub fn storage_of(
        &mut self,
        label: &str,
        len: usize,
        element: Element,
        purpose: Purpose,
    ) -> wgpu::Buffer {
        let bytes = buffer_bytes(len, element);
        match purpose {
            Purpose::Activations => self.memory.activations += bytes,
            Purpose::Gradients => self.memory.gradients += bytes,
            Purpose::Scratch => self.memory.scratch += bytes,
        }
        self.ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A buffer of at least `len` values of `element` for `purpose`, from the pool where one is
    /// free (the smallest that fits), else a new one. Its contents are undefined: whoever takes
    /// it writes every value it later reads.
    pub fn take(&mut self, label: &str, len: usize, element: Element, purpose: Purpose) -> Pooled {
        let bytes = buffer_bytes(len, element);
        let fitting = (self.pool.iter().enumerate())
            .filter(|(_, p)| p.bytes >= bytes)
            .min_by_key(|(_, p)| p.bytes)
            .map(|(i, _)| i);
        let mut pooled = match fitting {
            Some(i) => self.pool.swap_remove(i),
            None => Pooled {
                bytes,
                buffer: self.storage_of(label, len, element, purpose),
                generation: 0,
            },
        };
        let lendings = self.lendings.entry(pooled.buffer.clone()).or_insert(0);
        *lendings += 1;
        pooled.generation = *lendings;
        pooled
    }

    /// True when the `generation`th lending of `buffer` was its last: what it holds after a pass
    /// is that user's. Buffers not from the pool are never lent again.
    pub fn still_holds(&self, buffer: &wgpu::Buffer, generation: u32) -> bool {
        self.lendings.get(buffer).is_none_or(|&n| n == generation)
    }

    /// Returns a buffer from [`Builder::take`] to the pool: no dispatch recorded after this point
    /// may read what it holds.
    pub fn give_back(&mut self, pooled: Pooled) {
        self.pool.push(pooled);
    }

    /// Scratch of at least `floats` f32 for the current step's dispatches (a layer's): shared
    /// with other steps, so nothing it holds survives [`Builder::end_step`].
    pub fn scratch(&mut self, label: &str, floats: usize) -> wgpu::Buffer {
        self.scratch_of(label, floats, Element::F32)
    }

    /// As [`Builder::scratch`], of `len` values of `element`.
    pub fn scratch_of(&mut self, label: &str, len: usize, element: Element) -> wgpu::Buffer {
        let pooled = self.take(label, len, element, Purpose::Scratch);
        let buffer = pooled.buffer.clone();
        self.lent.push(pooled);
        buffer
    }

    /// Ends a step: its scratch becomes free for the next.
    pub fn end_step(&mut self) {
        self.pool.append(&mut self.lent);
    }

    /// A storage buffer holding `data` (weights: the SGD step writes them, readback copies them).
    pub fn weights(&mut self, label: &str, data: &[f32]) -> wgpu::Buffer {
        self.weights_of(label, data, Element::F32)
    }

    /// A storage buffer holding `data` as `element` values (a weight matrix stored as
    /// [`Builder::stored`]); f16 is rounded to nearest.
    pub fn weights_of(&mut self, label: &str, data: &[f32], element: Element) -> wgpu::Buffer {
        let half;
        let contents: &[u8] = match element {
            Element::F32 => bytemuck::cast_slice(data),
            Element::F16 => {
                half = f16_words(data);
                bytemuck::cast_slice(&half)
            }
        };
        self.memory.weights += contents.len() as u64;
        self.ctx
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                // COPY_DST: a data-parallel replica takes replica 0's batch-norm statistics.
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            })
    }

    fn uniform<T: Pod>(&mut self, label: &str, params: &T) -> wgpu::Buffer {
        self.memory.uniforms += std::mem::size_of::<T>() as u64;
        self.ctx
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(params),
                // Rewritable: an optimiser's learning rate changes between epochs.
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// A workgroup grid for `invocations` independent invocations, folded into two dimensions
    /// when one would exceed the adapter's limit (the kernels unfold it with `num_workgroups`).
    pub fn grid_1d(&mut self, what: &str, invocations: usize) -> Result<[u32; 3]> {
        let size = self.ctx.workgroup_size() as usize;
        let max = self.ctx.limits().max_compute_workgroups_per_dimension as usize;
        let groups = invocations.div_ceil(size).max(1);
        let x = groups.min(max);
        let y = groups.div_ceil(x);
        self.folded_launches += usize::from(y > 1);
        if y > max {
            return Err(self.too_large(
                what.into(),
                format!("{invocations} invocations exceed the dispatch limit"),
            ));
        }
        Ok([x as u32, y as u32, 1])
    }

    /// A grid of `x_invocations` (in workgroups of the kernels' size) by `y` by `z` workgroups.
    pub fn grid_3d(
        &self,
        what: &str,
        x_invocations: usize,
        y: usize,
        z: usize,
    ) -> Result<[u32; 3]> {
        let x = x_invocations.div_ceil(self.ctx.workgroup_size() as usize);
        self.workgroups(what, [x, y, z])
    }

    /// A grid of exactly these workgroups, within the adapter's limit per dimension.
    pub fn workgroups(&self, what: &str, [x, y, z]: [usize; 3]) -> Result<[u32; 3]> {
        let max = self.ctx.limits().max_compute_workgroups_per_dimension as usize;
        if x > max || y > max || z > max {
            return Err(self.too_large(
                what.into(),
                format!("a {x}x{y}x{z} workgroup grid exceeds the limit of {max} per dimension"),
            ));
        }
        Ok([x as u32, y as u32, z as u32])
    }

    /// A dispatch of `kernel` with `params` at binding 0 and `buffers` at bindings 1, 2, ...
    pub fn dispatch<P: KernelParams>(
        &mut self,
        label: &str,
        kernel: &KernelDef<P>,
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Dispatch {
        self.dispatch_specialised(label, kernel, &[], params, buffers, workgroups)
    }

    /// As [`Builder::dispatch`], of `kernel` specialised with override constants (one pipeline
    /// per device and set of constants, shared by every layer of the same shape).
    pub fn dispatch_specialised<P: KernelParams>(
        &mut self,
        label: &str,
        kernel: &KernelDef<P>,
        overrides: &[(&'static str, f64)],
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Dispatch {
        self.dispatch_with_uniform(label, kernel, overrides, params, buffers, workgroups)
            .0
    }

    /// As [`Builder::dispatch_specialised`], of a forward kernel reading and writing the
    /// network's activations (and weights) as it stores them ([`Builder::stored`]).
    pub fn dispatch_stored<P: KernelParams>(
        &mut self,
        label: &str,
        kernel: &KernelDef<P>,
        overrides: &[(&'static str, f64)],
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Dispatch {
        let elements = Elements::both(self.stored);
        self.dispatch_elements(
            label, kernel, elements, overrides, params, buffers, workgroups,
        )
    }

    /// As [`Builder::dispatch_specialised`], of a backward kernel reading the forward pass's
    /// activations (or weights) as the network stores them and writing f32 gradients.
    pub fn dispatch_reading_stored<P: KernelParams>(
        &mut self,
        label: &str,
        kernel: &KernelDef<P>,
        overrides: &[(&'static str, f64)],
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Dispatch {
        let elements = Elements::reading(self.stored);
        self.dispatch_elements(
            label, kernel, elements, overrides, params, buffers, workgroups,
        )
    }

    /// As [`Builder::dispatch_specialised`], of `kernel` compiled for tensors of `elements`
    /// (a forward kernel reading or writing the network's stored activations and weights).
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch_elements<P: KernelParams>(
        &mut self,
        label: &str,
        kernel: &KernelDef<P>,
        elements: Elements,
        overrides: &[(&'static str, f64)],
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Dispatch {
        let pipeline = self.ctx.pipeline(kernel, elements, overrides);
        self.bind(label, pipeline, params, buffers, workgroups).0
    }

    /// As [`Builder::dispatch_specialised`], and the uniform buffer holding `params`, which the
    /// caller may rewrite between submissions (with the queue) to change them.
    pub fn dispatch_with_uniform<P: KernelParams>(
        &mut self,
        label: &str,
        kernel: &KernelDef<P>,
        overrides: &[(&'static str, f64)],
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> (Dispatch, wgpu::Buffer) {
        let pipeline = self.ctx.pipeline(kernel, Elements::F32, overrides);
        self.bind(label, pipeline, params, buffers, workgroups)
    }

    /// A dispatch of `pipeline` with `params` at binding 0 and `buffers` at bindings 1, 2, ...,
    /// and the uniform buffer holding `params`.
    fn bind<P: KernelParams>(
        &mut self,
        label: &str,
        pipeline: Pipeline,
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> (Dispatch, wgpu::Buffer) {
        let uniform = self.uniform(label, params);
        let entries: Vec<wgpu::BindGroupEntry> = std::iter::once(&uniform)
            .chain(buffers.iter().copied())
            .enumerate()
            .map(|(i, buffer)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        let bind_group = self
            .ctx
            .device()
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &pipeline.pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
        let dispatch = Dispatch {
            label: label.to_string(),
            kernel: pipeline.kernel,
            pipeline: pipeline.pipeline,
            bind_group,
            workgroups,
        };
        (dispatch, uniform)
    }
}
