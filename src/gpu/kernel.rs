//! Kernels as the host sees them: each WGSL entry point typed by the parameter struct it reads,
//! the pipelines compiled from them on first use and cached, and the recorded dispatches.
//!
//! The contract between Rust and WGSL is one struct per kernel parameter block, declared with
//! [`kernel_params!`]: the macro records every field's name and byte offset, and a unit test
//! (`gpu::tests`) checks them against naga's reflection of every shader that reads the
//! struct. A [`KernelDef<P>`] can only be dispatched with a `P`, so a kernel cannot be handed
//! another kernel's parameters.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::Instant;

use crate::shaders::{Elements, ShaderSource};

/// A kernel's uniform parameter block: `#[repr(C)]`, plain old data, and the list of its fields
/// as the WGSL struct must declare them.
pub(crate) trait KernelParams: bytemuck::Pod {
    /// Every field's name, byte offset and Rust type, in declaration order.
    #[cfg_attr(not(test), allow(dead_code))]
    const FIELDS: &'static [(&'static str, usize, &'static str)];
}

/// Declares a kernel parameter struct: `#[repr(C)]`, `Pod`, every field `pub`, and its
/// [`KernelParams::FIELDS`]. Field names are the WGSL struct's member names.
macro_rules! kernel_params {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $( $(#[$field_meta])* pub $field: $ty ),*
        }
        impl $crate::gpu::kernel::KernelParams for $name {
            const FIELDS: &'static [(&'static str, usize, &'static str)] = &[ $(
                (stringify!($field), std::mem::offset_of!($name, $field), stringify!($ty))
            ),* ];
        }
    };
}
pub(crate) use kernel_params;

/// How a kernel's workgroup is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Workgroup {
    /// By the `WORKGROUP_SIZE` override: the device's choice (see [`workgroup_size`]).
    Flat,
    /// Fixed in the WGSL by the kernel's tiling (the workgroup-tiled kernels).
    Tiled,
    /// [`REDUCTION`](crate::shaders::REDUCTION) invocations summing one channel (one workgroup
    /// per channel).
    Reduction,
}

/// One WGSL entry point and the parameter struct it reads at binding 0.
pub(crate) struct KernelDef<P> {
    pub shader: ShaderSource,
    pub workgroup: Workgroup,
    params: PhantomData<fn(P)>,
}

impl<P: KernelParams> KernelDef<P> {
    /// A kernel sized by `WORKGROUP_SIZE`.
    pub const fn flat(shader: ShaderSource) -> Self {
        KernelDef {
            shader,
            workgroup: Workgroup::Flat,
            params: PhantomData,
        }
    }

    /// A kernel whose workgroup of [`REDUCTION`](crate::shaders::REDUCTION) invocations reduces
    /// channels, one segment of invocations per channel (`shaders/common/workgroup_sum.wgsl`).
    pub const fn reduction(shader: ShaderSource) -> Self {
        KernelDef {
            shader,
            workgroup: Workgroup::Reduction,
            params: PhantomData,
        }
    }

    /// A kernel whose workgroup shape its tiling fixes.
    pub const fn tiled(shader: ShaderSource) -> Self {
        KernelDef {
            shader,
            workgroup: Workgroup::Tiled,
            params: PhantomData,
        }
    }

    #[cfg(test)]
    /// What the layout test needs: the shader, and the Rust struct's fields and size.
    pub fn contract(&self) -> Contract {
        Contract {
            shader: self.shader,
            workgroup: self.workgroup,
            fields: P::FIELDS,
            size: std::mem::size_of::<P>(),
        }
    }
}

/// One WGSL kernel compiled two ways: one value per unit of work (`values_by_one.wgsl`) and
/// four (`values_by_four.wgsl`, a vec4 per load and store). The vec4 form needs every length and
/// offset the kernel indexes by to be a multiple of 4; on a CPU adapter it measured 2x to 16x
/// the bandwidth of the other (an invocation's index arithmetic, bounds checks and loop are paid
/// once per four values).
pub(crate) struct ByUnits<P> {
    one: KernelDef<P>,
    four: KernelDef<P>,
}

impl<P: KernelParams> ByUnits<P> {
    /// Kernels sized by `WORKGROUP_SIZE`.
    pub const fn flat(one: ShaderSource, four: ShaderSource) -> Self {
        ByUnits {
            one: KernelDef::flat(one),
            four: KernelDef::flat(four),
        }
    }

    /// Kernels reducing channels by workgroup segments (see [`KernelDef::reduction`]).
    pub const fn reduction(one: ShaderSource, four: ShaderSource) -> Self {
        ByUnits {
            one: KernelDef::reduction(one),
            four: KernelDef::reduction(four),
        }
    }

    /// The variant for lengths and offsets `sizes` (in values), and the values in its unit.
    pub fn for_sizes(&self, sizes: &[usize]) -> (&KernelDef<P>, usize) {
        if sizes.iter().all(|size| size.is_multiple_of(4)) {
            (&self.four, 4)
        } else {
            (&self.one, 1)
        }
    }

    #[cfg(test)]
    /// Both variants' contracts.
    pub fn contracts(&self) -> [Contract; 2] {
        [self.one.contract(), self.four.contract()]
    }
}

#[cfg(test)]
/// A kernel's side of the Rust <-> WGSL contract, for the layout test.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Contract {
    pub shader: ShaderSource,
    pub workgroup: Workgroup,
    pub fields: &'static [(&'static str, usize, &'static str)],
    pub size: usize,
}

/// Invocations per workgroup of the [`Workgroup::Flat`] kernels. On a CPU adapter (lavapipe,
/// llvmpipe) a workgroup runs on one thread in SIMD lanes of 8, and small workgroups of big
/// register blocks measured fastest; on GPUs 64 invocations (two warps, one wavefront) keep the
/// SMs fed.
pub(crate) fn workgroup_size(software: bool) -> u32 {
    if software {
        16
    } else {
        64
    }
}

/// Override constants a kernel is specialised with (name, value), besides `WORKGROUP_SIZE`.
pub(crate) type Overrides = Vec<(&'static str, f64)>;

/// A compiled pipeline and the name of the kernel it runs ([`ShaderSource::name`]), by which
/// profiles name it.
#[derive(Clone, Debug)]
pub(crate) struct Pipeline {
    pub kernel: &'static str,
    pub pipeline: wgpu::ComputePipeline,
}

/// A pipeline's identity: its kernel's name, the element types of its tensors and its override
/// constants (as f64 bits, to be hashable).
type PipelineKey = (&'static str, Elements, Vec<(&'static str, u64)>);

/// Every pipeline a device has needed so far, made on first use and kept: a kernel specialised
/// to a layer's shape (override constants) is compiled once per shape and shared by every layer
/// of that shape. Networks are built outside timed loops, so no pass ever compiles.
pub(crate) struct Pipelines {
    workgroup_size: u32,
    cache: Mutex<HashMap<PipelineKey, Pipeline>>,
    /// The cache's keys in the order their pipelines were made.
    order: Mutex<Vec<PipelineKey>>,
    /// Seconds spent creating pipelines, all together.
    seconds: Mutex<f64>,
}

impl Pipelines {
    pub fn new(software: bool) -> Self {
        Pipelines {
            workgroup_size: workgroup_size(software),
            cache: Mutex::new(HashMap::new()),
            order: Mutex::new(Vec::new()),
            seconds: Mutex::new(0.0),
        }
    }

    /// The `WORKGROUP_SIZE` of every flat kernel.
    pub fn workgroup_size(&self) -> u32 {
        self.workgroup_size
    }

    /// How many pipelines the cache holds.
    pub fn len(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Drops the pipelines made after the cache held `count` (in the order they were made).
    pub fn forget_since(&self, count: usize) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        let kept = count.min(order.len());
        for key in order.drain(kept..) {
            cache.remove(&key);
        }
    }

    /// Seconds spent creating pipelines so far. Drivers that compile at the first dispatch
    /// (llvmpipe) pay most of the compilation later, in the first pass.
    pub fn seconds(&self) -> f64 {
        *self.seconds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `kernel`'s pipeline for tensors of `elements`, with `overrides`, compiled now if this
    /// device has not needed it before. Errors surface through the caller's error scope.
    pub fn get<P: KernelParams>(
        &self,
        device: &wgpu::Device,
        kernel: &KernelDef<P>,
        elements: Elements,
        overrides: &[(&'static str, f64)],
    ) -> Pipeline {
        let size = (kernel.workgroup == Workgroup::Flat)
            .then(|| ("WORKGROUP_SIZE", f64::from(self.workgroup_size)));
        let constants: Vec<(&'static str, f64)> =
            size.into_iter().chain(overrides.iter().copied()).collect();
        let key = (
            kernel.shader.name,
            elements,
            constants.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
        );
        // A panic elsewhere cannot leave the map half-updated: insertion is one call.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(key.clone())
            .or_insert_with(|| {
                self.order
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(key);
                // An internal error, not a user's: an op asked for f16 tensors from a kernel
                // whose bindings are f32, which would read them as garbage.
                assert!(
                    elements == Elements::F32 || kernel.shader.stores_elements(),
                    "{} reads and writes f32 only",
                    kernel.shader.name
                );
                let start = Instant::now();
                let pipeline = compile(device, &kernel.shader, elements, &constants);
                *self.seconds.lock().unwrap_or_else(|e| e.into_inner()) +=
                    start.elapsed().as_secs_f64();
                pipeline
            })
            .clone()
    }
}

fn compile(
    device: &wgpu::Device,
    shader: &ShaderSource,
    elements: Elements,
    constants: &[(&'static str, f64)],
) -> Pipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(shader.file),
        source: wgpu::ShaderSource::Wgsl(shader.wgsl_with(elements).into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(shader.name),
        // The bind group layout is derived from the shader's own declarations.
        layout: None,
        module: &module,
        entry_point: Some(shader.entry_point),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants,
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    Pipeline {
        kernel: shader.name,
        pipeline,
    }
}

/// One recorded kernel launch: which pipeline, its arguments, how many workgroups.
pub(crate) struct Dispatch {
    /// What it computes; it starts with its layer's name (profiles group by that).
    pub label: String,
    /// The kernel's name ([`ShaderSource::name`]), as profiles name it.
    pub kernel: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    /// The kernel's arguments (uniform parameters and buffers).
    pub bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
}

/// Records `dispatches` as one compute pass (wgpu orders dependent dispatches).
pub(crate) fn encode_pass(
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    dispatches: &[Dispatch],
) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    });
    record_dispatches(&mut pass, dispatches);
}

/// Records `dispatches` into an open compute pass.
pub(crate) fn record_dispatches(pass: &mut wgpu::ComputePass, dispatches: &[Dispatch]) {
    for dispatch in dispatches {
        pass.set_pipeline(&dispatch.pipeline);
        pass.set_bind_group(0, &dispatch.bind_group, &[]);
        let [x, y, z] = dispatch.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}
