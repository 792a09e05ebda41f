//! GPU against CPU reference, layer by layer.
//!
//! Both sides run the whole network from the same weights and input, and every layer's GPU output
//! is compared with the CPU's. The error that matters is relative to the layer's scale, so each
//! layer reports its largest absolute difference and that difference divided by the layer's
//! largest |reference value|.

use crate::error::Result;
use crate::gpu::GpuNetwork;
use crate::reference;
use crate::weights::Weights;

/// Largest accepted `max |gpu - cpu| / max |cpu|` per layer.
///
/// GPU and CPU both compute in f32 but sum in different orders (register blocks and FMA on the
/// GPU, a blocked SGEMM on the CPU). Over a reduction of K products, reordering moves a result by
/// about sqrt(K) * 2^-24 of the sum of |products| in the typical case and K * 2^-24 at worst; for
/// AlexNet's largest K (9216, fc1) that is ~6e-6 typical, 5.5e-4 worst, and errors compound over
/// 11 layers. 1e-4 sits an order of magnitude above what the tests measure and far below what any
/// indexing or padding mistake produces (errors of order 1).
pub const TOLERANCE: f32 = 1e-4;

/// How far one layer's GPU output is from the CPU reference.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerError {
    pub layer: String,
    /// max |gpu - cpu|
    pub max_abs: f32,
    /// max |cpu|: the layer's scale.
    pub max_reference: f32,
    /// max_abs / max_reference (max_abs itself when the layer is all zeros).
    pub relative: f32,
}

impl LayerError {
    /// True when the layer is within [`TOLERANCE`].
    pub fn passes(&self) -> bool {
        self.relative <= TOLERANCE
    }
}

/// Compares two tensors of one layer. NaN anywhere counts as an infinite error.
pub fn compare(layer: &str, gpu: &[f32], cpu: &[f32]) -> LayerError {
    assert_eq!(gpu.len(), cpu.len(), "layer {layer}: output sizes differ");
    let mut max_abs = 0.0f32;
    let mut max_reference = 0.0f32;
    for (g, c) in gpu.iter().zip(cpu) {
        let diff = (g - c).abs();
        max_abs = if diff.is_nan() {
            f32::INFINITY
        } else {
            max_abs.max(diff)
        };
        max_reference = max_reference.max(c.abs());
    }
    let relative = if max_reference > 0.0 {
        max_abs / max_reference
    } else {
        max_abs
    };
    LayerError {
        layer: layer.to_string(),
        max_abs,
        max_reference,
        relative,
    }
}

/// Runs `input` through the GPU network and the CPU reference and compares every layer.
pub fn forward(net: &GpuNetwork, weights: &Weights, input: &[f32]) -> Result<Vec<LayerError>> {
    net.upload_input(input)?;
    net.forward()?;
    let cpu = reference::forward(net.plan(), weights, input);
    net.plan()
        .iter()
        .zip(&cpu)
        .enumerate()
        .map(|(i, (layer, cpu))| Ok(compare(&layer.layer.name, &net.read_layer(i)?, cpu)))
        .collect()
}
