//! The GPU context: which adapter, its device and queue, and turning every wgpu error into a
//! [`Result`](crate::Result) instead of a panic.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::kernel::{KernelDef, KernelParams, Pipeline, Pipelines};
use crate::gpu::tuning::Tuning;
use crate::gpu::variants::{ConvAlgorithm, KernelShape, Precision, Variants};
use crate::shaders::{Element, Elements, TILE, TILE_INVOCATIONS, TILE_WORKGROUP_BYTES};

/// Which adapter to run on. Empty fields fall back to `WGPU_ADAPTER_NAME` / `WGPU_BACKEND`, then
/// to the default choice: the first hardware GPU, else a software adapter.
#[derive(Clone, Debug, Default)]
pub struct AdapterChoice {
    /// An index into [`list_adapters`]'s order, or a case-insensitive substring of the name.
    pub adapter: Option<String>,
    /// `vulkan`, `metal`, `dx12` or `gl`.
    pub backend: Option<String>,
}

/// What `convnet adapters` shows of an adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// Its place in the list, as `--adapter N` counts.
    pub index: usize,
    /// What the adapter says of itself.
    pub info: wgpu::AdapterInfo,
    /// The adapter's own limits.
    pub limits: wgpu::Limits,
    /// Whether it has timestamp queries (GPU-timed profiles).
    pub timestamps: bool,
    /// Whether it can store f16 (`shader-f16`, for `--precision f16`).
    pub f16: bool,
    /// Whether it runs on the CPU.
    pub software: bool,
}

fn parse_backends(choice: &AdapterChoice) -> Result<wgpu::Backends> {
    match choice
        .backend
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => {
            Ok(wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY | wgpu::Backends::GL))
        }
        Some("vulkan") => Ok(wgpu::Backends::VULKAN),
        Some("metal") => Ok(wgpu::Backends::METAL),
        Some("dx12") => Ok(wgpu::Backends::DX12),
        Some("gl") => Ok(wgpu::Backends::GL),
        Some(other) => Err(Error::InvalidArgument(format!(
            "unknown backend '{other}'; use vulkan, metal, dx12 or gl"
        ))),
    }
}

/// True for adapters that run on the CPU (lavapipe, llvmpipe, SwiftShader, WARP).
fn is_software(info: &wgpu::AdapterInfo) -> bool {
    let name = info.name.to_ascii_lowercase();
    info.device_type == wgpu::DeviceType::Cpu
        || [
            "llvmpipe",
            "lavapipe",
            "swiftshader",
            "warp",
            "basic render",
        ]
        .iter()
        .any(|s| name.contains(s))
}

/// Preference order of the default choice: hardware first, and of the software adapters the
/// Vulkan one (lavapipe runs compute faster than llvmpipe through GL).
fn preference(info: &wgpu::AdapterInfo) -> u32 {
    if is_software(info) {
        return if info.backend == wgpu::Backend::Vulkan {
            4
        } else {
            5
        };
    }
    match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        _ => 3,
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

fn enumerate(choice: &AdapterChoice) -> Result<Vec<wgpu::Adapter>> {
    let backends = parse_backends(choice)?;
    let adapters = pollster::block_on(instance(backends).enumerate_adapters(backends));
    if adapters.is_empty() {
        return Err(Error::Adapter(format!(
            "no GPU adapter found for backends {backends:?} (on Linux, a software one comes with \
             Mesa: apt-get install mesa-vulkan-drivers)"
        )));
    }
    Ok(adapters)
}

/// Every adapter the chosen backends offer, in the order `--adapter N` counts them.
pub fn list_adapters(choice: &AdapterChoice) -> Result<Vec<AdapterSummary>> {
    Ok(enumerate(choice)?
        .iter()
        .enumerate()
        .map(|(index, adapter)| {
            let info = adapter.get_info();
            AdapterSummary {
                index,
                software: is_software(&info),
                limits: adapter.limits(),
                timestamps: adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY),
                f16: adapter.features().contains(wgpu::Features::SHADER_F16),
                info,
            }
        })
        .collect())
}

/// The adapters of `devices` devices on `backend`: the `adapters` given (one per device, or one
/// used for all), or the first `devices` hardware GPUs when the machine has that many, else the
/// default adapter `devices` times (one device per request: a two-device layout or data-parallel
/// replicas then run, and are checked, on one adapter).
pub fn device_choices(
    adapters: &[String],
    backend: Option<&str>,
    devices: usize,
) -> Result<Vec<AdapterChoice>> {
    let choice = |adapter: Option<&String>| AdapterChoice {
        adapter: adapter.cloned(),
        backend: backend.map(str::to_string),
    };
    if devices == 0 {
        return Err(Error::InvalidArgument("0 devices asked for".into()));
    }
    if adapters.len() > devices || (adapters.len() > 1 && adapters.len() != devices) {
        return Err(Error::InvalidArgument(format!(
            "{} adapters given for {devices} device(s); pass --adapter once per device, or once \
             for all",
            adapters.len()
        )));
    }
    if devices == 1 || adapters.len() == devices {
        return Ok((0..devices).map(|i| choice(adapters.get(i))).collect());
    }
    if let Some(one) = adapters.first() {
        return Ok(vec![choice(Some(one)); devices]);
    }
    let hardware: Vec<String> = list_adapters(&choice(None))?
        .iter()
        .filter(|a| !a.software)
        .map(|a| a.index.to_string())
        .collect();
    Ok(if hardware.len() >= devices {
        hardware[..devices]
            .iter()
            .map(|a| choice(Some(a)))
            .collect()
    } else {
        vec![choice(None); devices]
    })
}

fn select(choice: &AdapterChoice) -> Result<wgpu::Adapter> {
    let mut adapters = enumerate(choice)?;
    let wanted = choice.adapter.clone().or_else(|| {
        std::env::var("WGPU_ADAPTER_NAME")
            .ok()
            .filter(|s| !s.is_empty())
    });
    let Some(wanted) = wanted else {
        let best = (0..adapters.len())
            .min_by_key(|&i| preference(&adapters[i].get_info()))
            .expect("enumerate returns at least one adapter");
        return Ok(adapters.swap_remove(best));
    };
    let names: Vec<String> = adapters
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{i}: {}", a.get_info().name))
        .collect();
    let found = match wanted.parse::<usize>() {
        Ok(index) => (index < adapters.len()).then_some(index),
        Err(_) => {
            let needle = wanted.to_ascii_lowercase();
            adapters
                .iter()
                .position(|a| a.get_info().name.to_ascii_lowercase().contains(&needle))
        }
    };
    match found {
        Some(i) => Ok(adapters.swap_remove(i)),
        None => Err(Error::Adapter(format!(
            "no adapter matches '{wanted}'; available: {}",
            names.join(", ")
        ))),
    }
}

/// An adapter's device and queue, and the pipelines compiled on it so far.
///
/// Errors wgpu reports asynchronously (validation, out of memory, a lost device) are collected
/// here instead of panicking, and surface as [`Error::Gpu`] from [`GpuContext::scoped`] and
/// [`GpuContext::wait`].
pub struct GpuContext {
    info: wgpu::AdapterInfo,
    software: bool,
    timestamps: bool,
    /// The limits networks are planned within: the device's own, or tighter where asked.
    limits: wgpu::Limits,
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipelines: Pipelines,
    variants: Variants,
    /// Per-layer choices measured by `convnet tune` (empty unless given).
    tuning: Arc<Tuning>,
    /// The first error wgpu reported outside an error scope, or the device-lost message.
    failure: Arc<Mutex<Option<String>>>,
}

impl GpuContext {
    /// Opens the chosen adapter with its own limits (not wgpu's defaults) and timestamp queries
    /// where it has them.
    pub fn new(choice: &AdapterChoice) -> Result<Self> {
        let adapter = select(choice)?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        // Timestamp queries where the adapter has them, for per-layer profiles; f16 storage
        // where it has that, for `--precision f16`.
        let wanted = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SHADER_F16;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("convnet"),
            required_features: adapter.features() & wanted,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Gpu {
            adapter: info.name.clone(),
            during: "device creation".into(),
            message: e.to_string(),
        })?;
        Ok(Self::from_device(device, queue, info))
    }

    /// A context on a device a host program already has (its `AdapterInfo` names the adapter in
    /// errors and says whether it is a software one). Networks are planned within the device's
    /// limits and use timestamp queries if the device was created with them. Installs an
    /// uncaptured-error handler and a device-lost callback on the device, which turn wgpu's
    /// asynchronous errors into [`Error::Gpu`] results: they replace any the host program had,
    /// and an error the host's own work raises outside an error scope then fails this context's
    /// next call too. Hand over a device whose errors this context may own, or run the host's
    /// own work inside error scopes.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        let failure = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&failure);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            record_failure(&sink, one_line(&e.to_string()));
        }));
        let sink = Arc::clone(&failure);
        device.set_device_lost_callback(move |reason, message| {
            record_failure(&sink, format!("device lost ({reason:?}): {message}"));
        });
        let software = is_software(&info);
        GpuContext {
            timestamps: device.features().contains(wgpu::Features::TIMESTAMP_QUERY),
            limits: device.limits(),
            pipelines: Pipelines::new(software),
            variants: Variants::default(),
            tuning: Arc::default(),
            info,
            software,
            device,
            queue,
            failure,
        }
    }

    /// The same device with its networks built from `variants` instead of the adapter's choice.
    pub fn with_variants(mut self, variants: Variants) -> Self {
        self.variants = variants;
        self
    }

    /// Networks built from now on use `variants` (`convnet tune` forces each candidate in turn
    /// on one device, keeping its compiled pipelines).
    pub fn set_variants(&mut self, variants: Variants) {
        self.variants = variants;
    }

    /// The same device with its convolutions computed as `tuning` measured them, layer by layer,
    /// where no flag forces a choice.
    pub fn with_tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = Arc::new(tuning);
        self
    }

    /// The measured per-layer choices this device's networks use.
    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// The same device, with networks planned as if one storage binding held at most `bytes`
    /// (never more than the device allows): weights are split and batches refused as they would
    /// be on such an adapter.
    pub fn with_binding_limit(mut self, bytes: u64) -> Self {
        let limits = &mut self.limits;
        limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(bytes);
        self
    }

    /// The same device, with launches planned as if one grid dimension held at most `groups`
    /// workgroups (never more than the device allows): large launches fold into two dimensions
    /// sooner, as they would on such an adapter.
    pub fn with_workgroups_per_dimension_limit(mut self, groups: u32) -> Self {
        let limits = &mut self.limits;
        limits.max_compute_workgroups_per_dimension = limits
            .max_compute_workgroups_per_dimension
            .min(groups.max(1));
        self
    }

    /// What the adapter says of itself.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// True for a CPU-backed adapter (lavapipe, llvmpipe, SwiftShader, WARP).
    pub fn software(&self) -> bool {
        self.software
    }

    /// True when the device has timestamp queries (GPU-timed profiles).
    pub fn timestamps(&self) -> bool {
        self.timestamps
    }

    /// The limits networks are planned within.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// The largest buffer one storage binding holds (and one buffer may be).
    pub fn max_binding(&self) -> u64 {
        let limits = &self.limits;
        limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
    }

    /// The logical device: creates buffers, pipelines, bind groups.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// Where command buffers are submitted.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The kernel variants asked for (each `Auto` unless forced).
    pub fn variants(&self) -> Variants {
        self.variants
    }

    /// Seconds spent creating pipelines on this device so far. Drivers that compile at the
    /// first dispatch (llvmpipe) pay most of the compilation later, in the first pass.
    pub fn pipeline_seconds(&self) -> f64 {
        self.pipelines.seconds()
    }

    /// Invocations per workgroup of the flat (not workgroup-tiled) kernels.
    pub fn workgroup_size(&self) -> u32 {
        self.pipelines.workgroup_size()
    }

    /// `kernel`'s pipeline for tensors of `elements`, with `overrides`, compiled on first use
    /// and cached.
    pub(crate) fn pipeline<P: KernelParams>(
        &self,
        kernel: &KernelDef<P>,
        elements: Elements,
        overrides: &[(&'static str, f64)],
    ) -> Pipeline {
        self.pipelines
            .get(&self.device, kernel, elements, overrides)
    }

    /// Whether the device can store tensors as f16 (`shader-f16`; Vulkan's shaderFloat16 and
    /// 16-bit storage).
    pub fn has_f16(&self) -> bool {
        self.device.features().contains(wgpu::Features::SHADER_F16)
    }

    /// How this device's networks store activations and weight matrices: [`Precision::F32`]
    /// unless forced.
    pub fn precision(&self) -> Precision {
        self.variants.precision
    }

    /// The element type of this device's networks' activations and weight matrices, or the
    /// one-line error that the device cannot store f16.
    pub(crate) fn stored_element(&self) -> Result<Element> {
        match self.variants.precision {
            Precision::F32 => Ok(Element::F32),
            Precision::F16 if self.has_f16() => Ok(Element::F16),
            Precision::F16 => Err(Error::InvalidArgument(format!(
                "--precision f16 needs the shader-f16 feature, which {} ({:?}) does not have; \
                 use --precision f32",
                self.info.name, self.info.backend
            ))),
        }
    }

    /// Whether the adapter's limits can run the workgroup-tiled kernels (16 x 16 invocations and
    /// 8 KiB of workgroup memory; some downlevel GL adapters cannot).
    pub fn tiled_kernels_fit(&self) -> bool {
        let l = &self.limits;
        l.max_compute_invocations_per_workgroup >= TILE_INVOCATIONS
            && l.max_compute_workgroup_size_x >= (TILE / 4) as u32
            && l.max_compute_workgroup_size_y >= (TILE / 4) as u32
            && l.max_compute_workgroup_storage_size >= TILE_WORKGROUP_BYTES
    }

    /// The convolution kernel this device's networks use: forced, or chosen for the adapter.
    pub fn conv_kernel(&self) -> KernelShape {
        self.variants
            .conv
            .resolve(self.software, self.tiled_kernels_fit())
    }

    /// How this device's 3x3 and 5x5 stride-1 convolutions are computed, as asked (resolved per layer:
    /// forced, measured in [`GpuContext::tuning`], or by [`ConvAlgorithm::resolve`]).
    pub fn conv_algorithm(&self) -> ConvAlgorithm {
        self.variants.conv_algorithm
    }

    /// The fully connected layers' backward kernel: forced, or chosen for the adapter.
    pub fn matmul_kernel(&self) -> KernelShape {
        self.variants
            .matmul
            .resolve(self.software, self.tiled_kernels_fit())
    }

    /// One line naming the adapter, its backend and whether it is a software one.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}{})",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            if self.software {
                ", software adapter"
            } else {
                ""
            }
        )
    }

    /// An [`Error::Gpu`] on this adapter.
    pub(crate) fn error(&self, during: &str, message: impl std::fmt::Display) -> Error {
        Error::Gpu {
            adapter: self.info.name.clone(),
            during: during.into(),
            message: message.to_string(),
        }
    }

    /// Maps a whole mappable buffer (MAP_READ or MAP_WRITE, per `mode`) and waits until it is.
    pub(crate) fn map(
        &self,
        buffer: &wgpu::Buffer,
        mode: wgpu::MapMode,
        during: &str,
    ) -> Result<()> {
        let (sender, receiver) = std::sync::mpsc::channel();
        buffer
            .slice(..)
            .map_async(mode, move |r| drop(sender.send(r)));
        self.wait(during)?;
        receiver
            .recv()
            .map_err(|e| self.error(during, e))?
            .map_err(|e| self.error(during, e))
    }

    /// Runs `f` inside validation, out-of-memory and internal error scopes, and returns the first
    /// error any of them caught (or an earlier uncaptured one) as an [`Error::Gpu`].
    /// Pipelines made inside a scope that caught an error are dropped from the cache: one of
    /// them may be the invalid pipeline the error was about, and a later network would reuse it.
    pub fn scoped<T>(&self, during: &str, f: impl FnOnce(&Self) -> T) -> Result<T> {
        let before = self.pipelines.len();
        let value = capture_errors(&self.device, || f(self)).map_err(|message| {
            self.pipelines.forget_since(before);
            self.error(during, message)
        })?;
        self.check(during)?;
        Ok(value)
    }

    /// Fails if wgpu has reported an error outside a scope or lost the device.
    pub fn check(&self, during: &str) -> Result<()> {
        match self.failure.lock().map(|f| f.clone()) {
            Ok(None) => Ok(()),
            Ok(Some(message)) => Err(self.error(during, message)),
            Err(_) => Err(self.error(during, "error state poisoned")),
        }
    }

    /// Blocks until the queue has finished all submitted work.
    pub fn wait(&self, during: &str) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.error(during, e))?;
        self.check(during)
    }

    /// Bytes the driver's allocator holds for this device, where the backend reports it
    /// (Vulkan, DX12); the benchmark samples it to show memory stays flat from step to step.
    pub fn allocated_bytes(&self) -> Option<u64> {
        self.device
            .generate_allocator_report()
            .map(|r| r.total_allocated_bytes)
    }

    /// A buffer the GPU copies results into and the CPU maps, made once so that a loop reading
    /// a few values back every step allocates nothing (see [`GpuContext::read_staging`]).
    pub(crate) fn staging_buffer(&self, label: &str, len: usize) -> wgpu::Buffer {
        self.staging_buffer_of(label, len, Element::F32)
    }

    /// As [`GpuContext::staging_buffer`], for `len` values stored as `element`.
    pub(crate) fn staging_buffer_of(
        &self,
        label: &str,
        len: usize,
        element: Element,
    ) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: crate::gpu::builder::buffer_bytes(len, element),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// As [`GpuContext::read_staging`], of `len` values stored as `element`, widened to f32.
    pub(crate) fn read_staging_values(
        &self,
        staging: &wgpu::Buffer,
        len: usize,
        element: Element,
    ) -> Result<Vec<f32>> {
        match element {
            Element::F32 => self.read_staging(staging, len),
            Element::F16 => {
                let words = self.read_staging(staging, len.div_ceil(2))?;
                Ok(widen_f16(&words, len))
            }
        }
    }

    /// As [`GpuContext::read_staging_of`], of values stored as `element`, widened to f32 into
    /// `out` (an f16 staging buffer is read into a vector of its own first).
    pub(crate) fn read_staging_values_of(
        &self,
        staging: &wgpu::Buffer,
        (out, element): (&mut [f32], Element),
        submission: wgpu::SubmissionIndex,
    ) -> Result<()> {
        match element {
            Element::F32 => self.read_staging_of(staging, out, submission),
            Element::F16 => {
                let mut words = vec![0.0; out.len().div_ceil(2)];
                self.read_staging_of(staging, &mut words, submission)?;
                out.copy_from_slice(&widen_f16(&words, out.len()));
                Ok(())
            }
        }
    }

    /// As [`GpuContext::read_staging`], into `out` (as many values as it holds), waiting only
    /// for `submission` (the one that copied into `staging`): work submitted after it keeps the GPU busy while the host reads. A trainer
    /// reads a step's losses while the next step runs.
    pub(crate) fn read_staging_of(
        &self,
        staging: &wgpu::Buffer,
        out: &mut [f32],
        submission: wgpu::SubmissionIndex,
    ) -> Result<()> {
        let (sender, receiver) = std::sync::mpsc::channel();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| drop(sender.send(r)));
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: None,
            })
            .map_err(|e| self.error("readback", e))?;
        self.check("readback")?;
        receiver
            .recv()
            .map_err(|e| self.error("readback", e))?
            .map_err(|e| self.error("readback", e))?;
        {
            let view = staging
                .slice(..(out.len() * 4) as u64)
                .get_mapped_range()
                .map_err(|e| self.error("readback", e))?;
            out.copy_from_slice(bytemuck::cast_slice::<u8, f32>(&view));
        }
        staging.unmap();
        Ok(())
    }

    /// The `len` f32 values a submitted copy left in `staging` (a
    /// [`GpuContext::staging_buffer`]), once the GPU has written them.
    pub(crate) fn read_staging(&self, staging: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        self.map(staging, wgpu::MapMode::Read, "readback")?;
        let data = {
            let view = staging
                .slice(..(len * 4) as u64)
                .get_mapped_range()
                .map_err(|e| self.error("readback", e))?;
            bytemuck::cast_slice::<u8, f32>(&view).to_vec()
        };
        staging.unmap();
        Ok(data)
    }

    /// Copies `len` values stored as `element` from the start of `buffer` back to the CPU, as
    /// f32 (exactly: every f16 is an f32). Allocates a staging buffer, so it belongs outside any
    /// timed loop.
    pub fn read_values(
        &self,
        buffer: &wgpu::Buffer,
        len: usize,
        element: Element,
    ) -> Result<Vec<f32>> {
        match element {
            Element::F32 => self.read_f32(buffer, len),
            Element::F16 => {
                let words = self.read_f32(buffer, len.div_ceil(2))?;
                Ok(widen_f16(&words, len))
            }
        }
    }

    /// Queues a write of `values` to the start of `buffer`, stored as `element` (f16 rounded to
    /// nearest).
    pub(crate) fn write_values(&self, buffer: &wgpu::Buffer, values: &[f32], element: Element) {
        match element {
            Element::F32 => self
                .queue
                .write_buffer(buffer, 0, bytemuck::cast_slice(values)),
            Element::F16 => {
                let half = f16_words(values);
                self.queue
                    .write_buffer(buffer, 0, bytemuck::cast_slice(&half));
            }
        }
    }

    /// Copies `len` f32 values from the start of `buffer` back to the CPU. Allocates a staging
    /// buffer, so it belongs outside any timed loop.
    pub fn read_f32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        let size = (len * 4) as u64;
        let staging = self.scoped("readback", |ctx| {
            let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
            encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
            ctx.queue.submit([encoder.finish()]);
            staging
        })?;
        self.map(&staging, wgpu::MapMode::Read, "readback")?;
        let data = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| self.error("readback", e))?;
            bytemuck::cast_slice::<u8, f32>(&view).to_vec()
        };
        staging.unmap();
        Ok(data)
    }
}

/// `values` rounded to nearest f16, padded with a zero to whole 4-byte words (what buffers,
/// copies and queue writes hold).
pub(crate) fn f16_words(values: &[f32]) -> Vec<half::f16> {
    let mut half: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
    half.resize(values.len().next_multiple_of(2), half::f16::ZERO);
    half
}

/// The first `len` f16 values of `words` (read back as f32 words, two f16 each), as f32.
pub(crate) fn widen_f16(words: &[f32], len: usize) -> Vec<f32> {
    let half: &[half::f16] = bytemuck::cast_slice(words);
    half[..len].iter().map(|v| v.to_f32()).collect()
}

/// Runs `f` inside validation, out-of-memory and internal error scopes; the first error caught
/// comes back as its message.
fn capture_errors<T>(device: &wgpu::Device, f: impl FnOnce() -> T) -> Result<T, String> {
    let out_of_memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let value = f();
    // Scopes pop in reverse order of their pushes.
    let errors = [
        pollster::block_on(internal.pop()),
        pollster::block_on(validation.pop()),
        pollster::block_on(out_of_memory.pop()),
    ];
    match errors.into_iter().flatten().next() {
        Some(e) => Err(one_line(&e.to_string())),
        None => Ok(value),
    }
}

fn record_failure(sink: &Mutex<Option<String>>, message: String) {
    if let Ok(mut slot) = sink.lock() {
        slot.get_or_insert(message);
    }
}

/// wgpu's error texts run over several lines; the CLI prints one.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}
