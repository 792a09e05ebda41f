//! Fully connected layers: the forward product (by batch size: the 16-row register block, or 4
//! rows with the reduction split across workgroups) and the backward products `X^T dY` and
//! `dY W` (register block or workgroup tiles).
//!
//! Weights are packed transposed, `[in][out rounded up to BLOCK]`, in column slices of at most
//! one storage binding each (AlexNet's fc1 is 151 MB; lavapipe binds 128 MiB).

use crate::error::{Error, Result};
use crate::gpu::builder::{u32_of, Builder};
use crate::gpu::kernel::{kernel_params, Dispatch, KernelDef};
use crate::gpu::ops::elementwise;
use crate::gpu::ops::{check_tiled_fits, BackwardBuffers};
use crate::gpu::packing::{PackedGrads, PackedWeights, Packing, Slice};
use crate::gpu::tuning::{ChoiceSource, LinearLayerChoice};
use crate::gpu::variants::{KernelShape, LinearKernel};
use crate::model::{LayerKind, LayerPlan};
use crate::shaders::{self, Element, Elements, BLOCK, TILE};

kernel_params! {
    /// gemm's parameters: `rows x depth` by one weight slice of `columns`.
    pub(crate) struct GemmParams {
        rows: u32,
        depth: u32,
        columns: u32,
        packed_columns: u32,
        column_offset: u32,
        output_stride: u32,
        relu: u32,
        _pad: u32,
    }
}

kernel_params! {
    /// gemm_small_batch's parameters: gemm's, and the reduction split into `chunks` of
    /// `chunk_depth`.
    pub(crate) struct SmallBatchParams {
        rows: u32,
        depth: u32,
        columns: u32,
        packed_columns: u32,
        column_offset: u32,
        output_stride: u32,
        relu: u32,
        chunk_depth: u32,
        chunks: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

kernel_params! {
    /// gemm_split_k_reduce's parameters: the chunks' partial sums added, bias and ReLU applied.
    pub(crate) struct SplitKReduceParams {
        len: u32,
        columns: u32,
        chunks: u32,
        relu: u32,
    }
}

kernel_params! {
    /// matmul's parameters: `c (m x n) (+)= a (m x k) b (k x n)`, each operand read (and `c`
    /// written) in place through its offsets and strides, transposed or not.
    pub(crate) struct MatmulParams {
        m: u32,
        n: u32,
        k: u32,
        accumulate: u32,
        a_offset: u32,
        a_row_stride: u32,
        a_col_stride: u32,
        b_offset: u32,
        b_row_stride: u32,
        b_col_stride: u32,
        c_row_stride: u32,
        c_col_stride: u32,
    }
}

const GEMM: KernelDef<GemmParams> = KernelDef::flat(shaders::GEMM);
const GEMM_SMALL_BATCH: KernelDef<SmallBatchParams> = KernelDef::flat(shaders::GEMM_SMALL_BATCH);
const GEMM_SPLIT_K_REDUCE: KernelDef<SplitKReduceParams> =
    KernelDef::flat(shaders::GEMM_SPLIT_K_REDUCE);
const MATMUL: KernelDef<MatmulParams> = KernelDef::flat(shaders::MATMUL);
const MATMUL_ROWS4: KernelDef<MatmulParams> = KernelDef::flat(shaders::MATMUL_ROWS4);
const MATMUL_TILED: KernelDef<MatmulParams> = KernelDef::tiled(shaders::MATMUL_TILED);

#[cfg(test)]
pub(crate) fn contracts() -> Vec<crate::gpu::kernel::Contract> {
    vec![
        GEMM.contract(),
        GEMM_SMALL_BATCH.contract(),
        GEMM_SPLIT_K_REDUCE.contract(),
        MATMUL.contract(),
        MATMUL_ROWS4.contract(),
        MATMUL_TILED.contract(),
    ]
}

/// A fully connected layer's sizes.
struct Shape<'n> {
    name: &'n str,
    batch: usize,
    depth: usize,
    out_features: usize,
    relu: bool,
}

/// A linear layer's packing, or the internal error that it has another.
fn linear_packing<'p>(
    layer: &LayerPlan,
    params: &'p PackedWeights,
) -> Result<(usize, &'p [Slice])> {
    match &params.packing {
        Packing::Linear { depth, slices, .. } => Ok((*depth, slices)),
        _ => Err(Error::Internal(format!(
            "{}: a linear layer's weight is packed as a linear's",
            layer.layer.name
        ))),
    }
}

/// The dispatches of a fully connected layer's forward pass, one per weight slice (and a
/// reduction pass where the small-batch kernel splits the reduction).
pub(crate) fn forward(
    b: &mut Builder,
    layer: &LayerPlan,
    params: &PackedWeights,
    input: &wgpu::Buffer,
    output: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let LayerKind::Linear { out_features, relu } = layer.layer.kind else {
        return Err(Error::Internal(format!(
            "{} is not a linear layer",
            layer.layer.name
        )));
    };
    let (depth, slices) = linear_packing(layer, params)?;
    let shape = Shape {
        name: &layer.layer.name,
        batch: layer.batch,
        depth,
        out_features,
        relu,
    };
    // A forced kernel, else the one `convnet tune` measured for this shape, else the heuristic.
    let asked = b.ctx.variants().linear;
    let tuned = b
        .ctx
        .tuning()
        .linear_kernel(layer)
        .filter(|_| asked == LinearKernel::Auto);
    let source = match (tuned, asked) {
        (Some(_), _) => ChoiceSource::Tuned,
        (None, LinearKernel::Auto) => ChoiceSource::Heuristic,
        (None, _) => ChoiceSource::Forced,
    };
    let kernel = tuned
        .unwrap_or(asked)
        .resolve(shape.batch, depth, out_features, b.ctx.software());
    if !b.linear_choices.iter().any(|(name, _)| name == shape.name) {
        let choice = LinearLayerChoice { kernel, source };
        b.linear_choices.push((shape.name.to_string(), choice));
    }
    if let LinearKernel::SmallBatch { chunks } = kernel {
        return small_batch(b, &shape, params, slices, chunks, input, output);
    }
    let mut dispatches = Vec::new();
    for (slice, weight) in slices.iter().zip(&params.weights) {
        let gemm = GemmParams {
            rows: u32_of(shape.batch, "batch")?,
            depth: u32_of(depth, "features")?,
            columns: u32_of(slice.count, "features")?,
            packed_columns: u32_of(slice.packed_columns, "features")?,
            column_offset: u32_of(slice.first, "features")?,
            output_stride: u32_of(out_features, "features")?,
            relu: u32::from(relu),
            _pad: 0,
        };
        let label = format!(
            "{}[{}..{}]",
            shape.name,
            slice.first,
            slice.first + slice.count
        );
        let workgroups = b.grid_3d(
            shape.name,
            slice.count.div_ceil(BLOCK),
            shape.batch.div_ceil(BLOCK),
            1,
        )?;
        let args = [input, weight, &params.bias, output];
        dispatches.push(b.dispatch_stored(&label, &GEMM, &[], &gemm, &args, workgroups));
    }
    Ok(dispatches)
}

/// A fully connected layer by `gemm_small_batch`, one dispatch per weight slice; split along the
/// reduction into `chunks`, summed by `gemm_split_k_reduce`, when `chunks` > 1.
fn small_batch(
    b: &mut Builder,
    shape: &Shape,
    p: &PackedWeights,
    slices: &[Slice],
    chunks: usize,
    input: &wgpu::Buffer,
    output: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let name = shape.name;
    let len = shape.batch * shape.out_features;
    // No more chunks than the partial sums' binding holds.
    let chunks = chunks.min((b.max_binding / (len * 4) as u64).max(1) as usize);
    let partial = (chunks > 1).then(|| b.scratch(&format!("{name} partial sums"), chunks * len));
    let target = partial.as_ref().unwrap_or(output);
    // The input and weights as the network stores them; the partial sums in f32.
    let elements = Elements {
        read: b.stored,
        written: if partial.is_some() {
            Element::F32
        } else {
            b.stored
        },
    };
    let chunk_depth = shape.depth.div_ceil(chunks);
    let mut dispatches = Vec::new();
    for (slice, weight) in slices.iter().zip(&p.weights) {
        let params = SmallBatchParams {
            rows: u32_of(shape.batch, "batch")?,
            depth: u32_of(shape.depth, "features")?,
            columns: u32_of(slice.count, "features")?,
            packed_columns: u32_of(slice.packed_columns, "features")?,
            column_offset: u32_of(slice.first, "features")?,
            output_stride: u32_of(shape.out_features, "features")?,
            relu: u32::from(shape.relu),
            chunk_depth: u32_of(chunk_depth, "features")?,
            chunks: u32_of(chunks, "chunks")?,
            ..Default::default()
        };
        let label = format!("{name}[{}..{}]", slice.first, slice.first + slice.count);
        let workgroups = b.grid_3d(
            name,
            slice.count.div_ceil(BLOCK),
            shape.batch.div_ceil(4),
            chunks,
        )?;
        let args = [input, weight, &p.bias, target];
        let kernel = &GEMM_SMALL_BATCH;
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
    if let Some(partial) = &partial {
        let params = SplitKReduceParams {
            len: u32_of(len, "fully connected size")?,
            columns: u32_of(shape.out_features, "features")?,
            chunks: u32_of(chunks, "chunks")?,
            relu: u32::from(shape.relu),
        };
        let workgroups = b.grid_1d(name, len.div_ceil(4))?;
        let args = [partial, &p.bias, output];
        let label = format!("{name} reduce");
        let elements = Elements {
            read: Element::F32,
            written: b.stored,
        };
        let kernel = &GEMM_SPLIT_K_REDUCE;
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

/// The dispatches of a fully connected layer's backward pass: its fused ReLU's backward (in
/// place on the output gradient), per weight slice the weight gradient `X^T dY` and the input
/// gradient `dY W` (summed over slices), then the bias gradient.
pub(crate) fn backward(
    b: &mut Builder,
    layer: &LayerPlan,
    buf: &BackwardBuffers,
    params: &PackedWeights,
    grads: &PackedGrads,
) -> Result<Vec<Dispatch>> {
    let name = &layer.layer.name;
    let LayerKind::Linear { out_features, relu } = layer.layer.kind else {
        return Err(Error::Internal(format!("{name} is not a linear layer")));
    };
    let (depth, slices) = linear_packing(layer, params)?;
    let batch = layer.batch;
    let mut dispatches = Vec::new();
    if relu {
        dispatches.push(elementwise::relu_backward(b, layer, buf)?);
    }
    // Both products read the output gradient (f32) as `a` and what the forward pass stored as
    // `b` (the input, the weights: f16 under half-precision storage).
    let stored = b.stored;
    for (s, slice) in slices.iter().enumerate() {
        // Weight gradient of the slice, packed [in][packed_columns]: X^T dY[:, slice], computed
        // as its transpose dY[:, slice]^T X and written transposed.
        let label = format!("{name}[{}..] weight backward", slice.first);
        let product = MatmulParams {
            m: u32_of(slice.count, "features")?,
            n: u32_of(depth, "features")?,
            k: u32_of(batch, "batch")?,
            accumulate: 0,
            a_offset: u32_of(slice.first, "features")?,
            a_row_stride: 1,
            a_col_stride: u32_of(out_features, "features")?,
            b_offset: 0,
            b_row_stride: u32_of(depth, "features")?,
            b_col_stride: 1,
            c_row_stride: 1,
            c_col_stride: u32_of(slice.packed_columns, "features")?,
        };
        let args = [buf.grad_output, buf.input, &grads.weights[s]];
        dispatches.push(matmul(b, &label, &product, stored, args)?);

        // Input gradient, summed over slices: dY[:, slice] W[slice, :].
        if let Some(grad_input) = buf.grad_input {
            let label = format!("{name}[{}..] input backward", slice.first);
            let product = MatmulParams {
                m: u32_of(batch, "batch")?,
                n: u32_of(depth, "features")?,
                k: u32_of(slice.count, "features")?,
                accumulate: u32::from(s > 0),
                a_offset: u32_of(slice.first, "features")?,
                a_row_stride: u32_of(out_features, "features")?,
                a_col_stride: 1,
                b_offset: 0,
                b_row_stride: 1,
                b_col_stride: u32_of(slice.packed_columns, "features")?,
                c_row_stride: u32_of(depth, "features")?,
                c_col_stride: 1,
            };
            let args = [buf.grad_output, &params.weights[s], grad_input];
            dispatches.push(matmul(b, &label, &product, stored, args)?);
        }
    }
    dispatches.push(elementwise::bias_backward(
        b,
        layer,
        buf.grad_output,
        &grads.bias,
    )?);
    Ok(dispatches)
}

/// The dispatch of `product` (a, b, c) on the matmul kernel this device uses: `matmul` (register
/// block; `matmul_rows4` where c has fewer rows than a block, as a small batch's input gradient
/// has) or `matmul_tiled` (workgroup tiles). `a` and `c` hold f32, `b` holds `b_element`s.
pub(crate) fn matmul(
    b: &mut Builder,
    label: &str,
    product: &MatmulParams,
    b_element: Element,
    args: [&wgpu::Buffer; 3],
) -> Result<Dispatch> {
    let (m, n) = (product.m as usize, product.n as usize);
    let (kernel, workgroups) = match b.ctx.matmul_kernel() {
        KernelShape::WorkgroupTile => {
            check_tiled_fits(b, "matrix product")?;
            (
                &MATMUL_TILED,
                b.workgroups(label, [n.div_ceil(TILE), m.div_ceil(TILE), 1])?,
            )
        }
        _ if m < BLOCK => (
            &MATMUL_ROWS4,
            b.grid_3d(label, n.div_ceil(BLOCK), m.div_ceil(4), 1)?,
        ),
        _ => (
            &MATMUL,
            b.grid_3d(label, n.div_ceil(BLOCK), m.div_ceil(BLOCK), 1)?,
        ),
    };
    let elements = Elements::reading(b_element);
    Ok(b.dispatch_elements(label, kernel, elements, &[], product, &args, workgroups))
}
