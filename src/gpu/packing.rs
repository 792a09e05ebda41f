//! How weights live on the GPU: each layer's weight repacked at upload into the layout its
//! kernels read as vec4s (and split into slices where it exceeds one storage binding), and
//! unpacked back to PyTorch's layout when read. Parameter gradients share the packed layouts,
//! so an SGD step is element by element.
//!
//! Under half-precision storage the kernels read f16 weight matrices; a network that trains
//! also keeps them in f32 (the master copy the optimiser updates, so that steps smaller than
//! f16's spacing still accumulate) and rounds the master into the f16 copy after every step
//! (docs/design.md#half-precision-storage).

use crate::error::Result;
use crate::gpu::builder::{u32_of, Builder, Purpose};
use crate::gpu::kernel::{kernel_params, Dispatch, KernelDef};
use crate::model::{LayerKind, LayerPlan};
use crate::shaders::{self, Element, Elements, BLOCK};
use crate::weights::Weights;

kernel_params! {
    /// convert_values's parameters.
    struct ConvertParams {
        len: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

const CONVERT_VALUES: KernelDef<ConvertParams> = KernelDef::flat(shaders::CONVERT_VALUES);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    vec![CONVERT_VALUES.contract()]
}

/// A column slice of a linear layer's weight: as many columns as one storage binding holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slice {
    pub first: usize,
    pub count: usize,
    /// `count` rounded up to [`BLOCK`]: the row length of the packed slice.
    pub packed_columns: usize,
}

/// How a layer's weight is laid out on the GPU.
#[derive(Clone, Debug)]
pub(crate) enum Packing {
    /// `[group][k][out_per_group rounded up to BLOCK]`, k = (in channel, ky, kx).
    Conv {
        out_channels: usize,
        groups: usize,
        taps: usize,
        packed_out: usize,
    },
    /// Per slice: `[in][packed_columns]` (transposed).
    Linear { depth: usize, slices: Vec<Slice> },
    /// A batch norm's `[4][channels]` parameters and statistics (weight, bias, running mean,
    /// running variance) in one buffer; its gradients are one `[2][channels]` buffer (weight,
    /// bias), so that an update of the buffer's first `2 * channels` values trains exactly the
    /// parameters.
    Norm,
}

/// A parameterised layer's weight (one buffer per slice) and bias on the GPU. Cloning copies
/// the buffers' handles, not their contents: a network at another batch size shares them.
#[derive(Clone)]
pub(crate) struct PackedWeights {
    /// Index of the layer in the plan.
    pub layer: usize,
    pub packing: Packing,
    /// The weight (one buffer per slice): conv and linear weights as the network stores its
    /// activations ([`Builder::stored`]), a batch norm's f32.
    pub weights: Vec<wgpu::Buffer>,
    pub bias: wgpu::Buffer,
    /// Where the weight is stored as f16 in a network that trains: its f32 master copy (one
    /// buffer per slice), which the optimiser updates. Empty otherwise.
    pub master: Vec<wgpu::Buffer>,
}

impl Packing {
    fn conv(out_channels: usize, groups: usize, weight_len: usize) -> Self {
        Packing::Conv {
            out_channels,
            groups,
            taps: weight_len / out_channels,
            packed_out: (out_channels / groups).next_multiple_of(BLOCK),
        }
    }

    /// Floats in each packed buffer.
    pub fn buffer_lens(&self) -> Vec<usize> {
        match self {
            Packing::Conv {
                groups,
                taps,
                packed_out,
                ..
            } => vec![groups * taps * packed_out],
            Packing::Linear { depth, slices, .. } => {
                slices.iter().map(|s| depth * s.packed_columns).collect()
            }
            Packing::Norm => Vec::new(),
        }
    }

    /// PyTorch layout → the GPU's packed buffers, zero-padded.
    pub fn pack(&self, weight: &[f32]) -> Vec<Vec<f32>> {
        let mut packed: Vec<Vec<f32>> = self.buffer_lens().iter().map(|&n| vec![0.0; n]).collect();
        self.for_each_index(|buffer, at, original| packed[buffer][at] = weight[original]);
        packed
    }

    /// The GPU's packed buffers → PyTorch layout.
    pub fn unpack(&self, packed: &[Vec<f32>], len: usize) -> Vec<f32> {
        let mut weight = vec![0.0; len];
        self.for_each_index(|buffer, at, original| weight[original] = packed[buffer][at]);
        weight
    }

    /// Calls `f(buffer, packed index, PyTorch index)` for every weight element.
    fn for_each_index(&self, mut f: impl FnMut(usize, usize, usize)) {
        match self {
            Packing::Conv {
                out_channels,
                groups,
                taps,
                packed_out,
            } => {
                let per_group = out_channels / groups;
                for g in 0..*groups {
                    for o in 0..per_group {
                        for k in 0..*taps {
                            f(
                                0,
                                (g * taps + k) * packed_out + o,
                                (g * per_group + o) * taps + k,
                            );
                        }
                    }
                }
            }
            Packing::Linear { depth, slices, .. } => {
                for (s, slice) in slices.iter().enumerate() {
                    for c in 0..slice.count {
                        for k in 0..*depth {
                            f(
                                s,
                                k * slice.packed_columns + c,
                                (slice.first + c) * depth + k,
                            );
                        }
                    }
                }
            }
            Packing::Norm => {}
        }
    }
}

/// Whether a layer of `kind` trains a bias of its own: convolutions with one and linear layers
/// (a batch norm's bias lives in its one buffer of statistics).
pub(crate) fn trains_bias(kind: &LayerKind) -> bool {
    match kind {
        LayerKind::Conv2d { bias, .. } => *bias,
        LayerKind::Linear { .. } => true,
        _ => false,
    }
}

impl PackedWeights {
    /// The buffers an optimiser updates: the weight's (slices, in f32: the master copy where
    /// there is one; a batch norm's statistics, of which it updates the first `2 * channels`
    /// values), then the bias's where it trains one.
    pub fn trained_buffers(&self, kind: &LayerKind) -> Vec<&wgpu::Buffer> {
        let bias = trains_bias(kind).then_some(&self.bias);
        let weights = match self.master.is_empty() {
            true => &self.weights,
            false => &self.master,
        };
        weights.iter().chain(bias).collect()
    }

    /// The dispatches that round the master copy into the weight the kernels read (f16), to
    /// run after every optimiser step; none without a master copy.
    pub fn round_master(&self, b: &mut Builder, name: &str) -> Result<Vec<Dispatch>> {
        let elements = Elements {
            read: Element::F32,
            written: Element::F16,
        };
        let lens = self.packing.buffer_lens();
        let mut dispatches = Vec::new();
        for ((master, weight), len) in self.master.iter().zip(&self.weights).zip(lens) {
            let label = format!("{name}.weight rounded to f16");
            let params = ConvertParams {
                len: u32_of(len, "weights")?,
                ..Default::default()
            };
            let workgroups = b.grid_1d(&label, len.div_ceil(4))?;
            let args = [master, weight];
            let kernel = &CONVERT_VALUES;
            dispatches.push(b.dispatch_elements(
                &label,
                kernel,
                elements,
                &[],
                &params,
                &args,
                workgroups,
            ));
        }
        Ok(dispatches)
    }
}

/// A parameterised layer's weight and bias gradients, shaped like its [`PackedWeights`]
/// (cloned as handles, as [`PackedWeights`]).
#[derive(Clone)]
pub(crate) struct PackedGrads {
    pub weights: Vec<wgpu::Buffer>,
    pub bias: wgpu::Buffer,
}

impl PackedGrads {
    /// The buffers matching [`PackedWeights::trained_buffers`], one for one.
    pub fn trained_buffers(&self, kind: &LayerKind) -> Vec<&wgpu::Buffer> {
        let bias = trains_bias(kind).then_some(&self.bias);
        self.weights.iter().chain(bias).collect()
    }

    /// Zeroed gradient buffers for `params`, a parameterised layer of `plan`.
    pub fn new(b: &mut Builder, plan: &[LayerPlan], params: &PackedWeights) -> Self {
        let layer = &plan[params.layer];
        let name = &layer.layer.name;
        if let Packing::Norm = params.packing {
            let channels = layer.output.channels;
            let label = format!("{name}.weight and .bias gradients");
            return PackedGrads {
                weights: vec![b.storage(&label, 2 * channels, Purpose::Gradients)],
                bias: b.storage(
                    &format!("{name} (no separate bias gradient)"),
                    0,
                    Purpose::Gradients,
                ),
            };
        }
        PackedGrads {
            weights: params
                .packing
                .buffer_lens()
                .iter()
                .map(|&len| b.storage(&format!("{name}.weight gradient"), len, Purpose::Gradients))
                .collect(),
            bias: b.storage(
                &format!("{name}.bias gradient"),
                layer.output.channels,
                Purpose::Gradients,
            ),
        }
    }
}

/// Packs and uploads a layer's weight and bias (a batch norm's statistics); `None` for layers
/// without parameters.
pub(crate) fn upload(
    b: &mut Builder,
    index: usize,
    layer: &LayerPlan,
    weights: &Weights,
) -> Result<Option<PackedWeights>> {
    let name = &layer.layer.name;
    let packing = match &layer.layer.kind {
        LayerKind::Conv2d {
            out_channels,
            groups,
            ..
        } => Packing::conv(
            *out_channels,
            *groups,
            weights.tensor(name, "weight")?.len(),
        ),
        LayerKind::Linear { out_features, .. } => {
            let depth = layer.input.len();
            // Columns per slice: as many as one storage binding holds, in whole register blocks.
            let block_bytes = (depth * BLOCK * 4) as u64;
            b.check_binding(
                &format!("one {BLOCK}-column slice of {name}.weight"),
                block_bytes,
            )?;
            let slice_columns = (b.max_binding / block_bytes) as usize * BLOCK;
            let slices = (0..*out_features)
                .step_by(slice_columns)
                .map(|first| {
                    let count = slice_columns.min(out_features - first);
                    Slice {
                        first,
                        count,
                        packed_columns: count.next_multiple_of(BLOCK),
                    }
                })
                .collect();
            Packing::Linear { depth, slices }
        }
        LayerKind::BatchNorm { .. } => {
            // One buffer of the four per-channel vectors; it takes the weight's place.
            let mut stats: Vec<f32> = Vec::new();
            for suffix in ["weight", "bias", "running_mean", "running_var"] {
                stats.extend_from_slice(weights.tensor(name, suffix)?);
            }
            return Ok(Some(PackedWeights {
                layer: index,
                packing: Packing::Norm,
                weights: vec![b.weights(&format!("{name} statistics"), &stats)],
                bias: b.weights(&format!("{name}.bias"), &[]),
                master: Vec::new(),
            }));
        }
        LayerKind::Lrn { .. }
        | LayerKind::MaxPool { .. }
        | LayerKind::Add { .. }
        | LayerKind::AdaptiveAvgPool { .. }
        | LayerKind::Concat => return Ok(None),
    };
    let weight = weights.tensor(name, "weight")?;
    let mut buffers = Vec::new();
    let mut master = Vec::new();
    // The weight matrix is stored as the network's activations are (f16 where asked), and a
    // network that trains an f16 copy keeps the f32 master too.
    for (i, packed) in packing.pack(weight).iter().enumerate() {
        let bytes = (packed.len() * 4) as u64;
        b.check_binding(&format!("{name}.weight"), bytes)?;
        buffers.push(b.weights_of(&format!("{name}.weight[{i}]"), packed, b.stored));
        if b.trains && b.stored != Element::F32 {
            master.push(b.weights(&format!("{name}.weight[{i}] f32 master"), packed));
        }
    }
    // A convolution without bias (a batch norm follows it) adds zeros: the kernel stays one.
    let zeros = vec![0.0; layer.output.channels];
    let bias = weights
        .get(&format!("{name}.bias"))
        .map_or(zeros.as_slice(), |t| t.data.as_slice());
    let bias = b.weights(&format!("{name}.bias"), bias);
    Ok(Some(PackedWeights {
        layer: index,
        packing,
        weights: buffers,
        bias,
        master,
    }))
}
