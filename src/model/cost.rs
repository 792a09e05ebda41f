//! What a pass over a layer costs: the FLOPs of its products and the least bytes it must move.
//! The one home of these counts: the benchmark's GFLOP/s, the profile's rates against the
//! adapter's peak, and the criterion benches all read them from here.

use super::{LayerKind, LayerPlan};

/// Which way a pass runs over a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Direction {
    /// Inputs to output.
    Forward,
    /// Output gradient to the parameter gradients and (where asked) the input gradient.
    Backward,
}

/// One pass over one layer, for the whole batch it was planned at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Cost {
    /// FLOPs of the convolution and fully connected products, a multiply-add counting as 2
    /// (LRN, pooling, batch norm, additions, bias and ReLU count 0, as in the post's table,
    /// docs/networks.md, 'The seed').
    pub flops: u64,
    /// The least bytes the pass must move. Forward: its inputs and parameters read, its output
    /// written. Backward: its output gradient read, its inputs read where the backward needs
    /// them (not for additions, concatenations and pooling), its output read where it needs it
    /// (a fused ReLU's mask after a batch norm or addition; a max pool's recorded maxima, one
    /// 4-byte index per output), its parameter gradients written, and where it computes its
    /// input gradient, its parameters read and that gradient written.
    pub bytes: u64,
}

/// The cost of one pass over `layer` at its planned batch. Backward, the weight gradient costs
/// as much as the forward product and so does the input gradient, which `input_gradient` false
/// skips (a network's first layer: nobody needs the images' gradient).
pub fn layer_cost(layer: &LayerPlan, direction: Direction, input_gradient: bool) -> Cost {
    let batch = layer.batch as u64;
    let inputs = layer
        .sources
        .iter()
        .map(|(_, dims)| dims.len())
        .sum::<usize>() as u64;
    let output = layer.output.len() as u64;
    let parameters = layer.parameters() as u64;
    let forward_flops = batch * layer.flops_per_image();
    // What the backward reads besides its output gradient: its inputs, its output.
    let (reads_inputs, reads_output) = match layer.layer.kind {
        LayerKind::Add { relu } => (false, relu),
        LayerKind::Concat | LayerKind::AdaptiveAvgPool { .. } => (false, false),
        LayerKind::MaxPool { .. } => (false, true),
        LayerKind::BatchNorm { relu, .. } => (true, relu),
        _ => (true, false),
    };
    let backward_reads =
        output + u64::from(reads_inputs) * inputs + u64::from(reads_output) * output;
    let (flops, values) = match (direction, input_gradient) {
        (Direction::Forward, _) => (forward_flops, batch * (inputs + output) + parameters),
        (Direction::Backward, false) => (forward_flops, batch * backward_reads + parameters),
        (Direction::Backward, true) => (
            2 * forward_flops,
            batch * (backward_reads + inputs) + 2 * parameters,
        ),
    };
    Cost {
        flops,
        bytes: 4 * values,
    }
}

/// Total forward FLOPs per image of a plan.
pub fn total_flops_per_image(plan: &[LayerPlan]) -> u64 {
    plan.iter().map(LayerPlan::flops_per_image).sum()
}

/// Backward FLOPs per image of a plan: every layer's weight and input gradients, except the
/// first layer's input gradient.
pub fn total_backward_flops_per_image(plan: &[LayerPlan]) -> u64 {
    plan.iter()
        .enumerate()
        .map(|(i, l)| l.flops_per_image() * if i == 0 { 1 } else { 2 })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::{layer_cost, total_backward_flops_per_image, total_flops_per_image, Direction};

    #[test]
    fn costs_of_alexnets_layers_by_hand() {
        let plan = crate::model::alexnet().plan(2).unwrap();
        let conv1 = &plan[0];
        // conv1 (SAME, stride 4: ceil(224 / 4) = 56): 96 x 56 x 56 outputs per image, each
        // 3 x 11 x 11 multiply-adds; batch 2.
        let conv1_flops = 2 * 2 * 96 * 56 * 56 * 3 * 11 * 11;
        let image = 3 * 224 * 224;
        let output = 96 * 56 * 56;
        let parameters = 96 * 3 * 11 * 11 + 96;
        let forward = layer_cost(conv1, Direction::Forward, true);
        assert_eq!(forward.flops, conv1_flops);
        // Reads two images and the parameters, writes two outputs.
        assert_eq!(forward.bytes, 4 * (2 * (image + output) + parameters));
        let backward = layer_cost(conv1, Direction::Backward, true);
        assert_eq!(backward.flops, 2 * conv1_flops);
        assert_eq!(
            backward.bytes,
            4 * (2 * (2 * image + output) + 2 * parameters),
            "input and output gradient read, input gradient written; weights read, their \
             gradient written"
        );
        let first = layer_cost(conv1, Direction::Backward, false);
        assert_eq!(first.flops, conv1_flops, "the weight gradient alone");
        assert_eq!(first.bytes, 4 * (2 * (image + output) + parameters));
        // fc1's 9216 x 4096 weights dominate what it moves.
        let fc1 = plan.iter().find(|l| l.layer.name == "fc1").unwrap();
        let fc1_forward = layer_cost(fc1, Direction::Forward, true);
        assert_eq!(
            fc1_forward.bytes,
            4 * (2 * (9216 + 4096) + 9216 * 4096 + 4096)
        );
        // An LRN moves bytes and counts no FLOPs.
        let lrn = plan.iter().find(|l| l.layer.name == "lrn1").unwrap();
        let lrn_cost = layer_cost(lrn, Direction::Forward, true);
        assert_eq!(lrn_cost.flops, 0);
        assert_eq!(lrn_cost.bytes, 4 * 2 * 2 * lrn.output.len() as u64);
        // A max pool's backward reads the output gradient and the maxima (one index per output)
        // and writes the input gradient; it never reads its input.
        let pool = plan.iter().find(|l| l.layer.name == "pool1").unwrap();
        let pool_backward = layer_cost(pool, Direction::Backward, true);
        assert_eq!(
            pool_backward.bytes,
            4 * 2 * (2 * pool.output.len() + pool.input.len()) as u64
        );
        // The totals: backward is twice forward less the first layer's input gradient.
        let forward_total = total_flops_per_image(&plan);
        assert_eq!(
            total_backward_flops_per_image(&plan),
            2 * forward_total - conv1_flops / 2
        );
        let summed: u64 = plan
            .iter()
            .map(|l| layer_cost(l, Direction::Forward, true).flops)
            .sum();
        assert_eq!(summed, 2 * forward_total);
    }

    #[test]
    fn backward_bytes_count_what_each_op_reads() {
        use crate::model::{Dims, Layer, LayerKind, Network, INPUT};
        let dims = Dims {
            channels: 4,
            height: 3,
            width: 5,
        };
        let layers = vec![
            Layer::new(
                "bn",
                LayerKind::BatchNorm {
                    eps: 1e-5,
                    relu: true,
                },
            ),
            Layer::new("sum", LayerKind::Add { relu: true }).reading(&[INPUT, "bn"]),
            Layer::new("cat", LayerKind::Concat).reading(&["sum", "bn"]),
            Layer::new(
                "gap",
                LayerKind::AdaptiveAvgPool {
                    height: 1,
                    width: 1,
                },
            ),
        ];
        let plan = Network::new("ops", dims, layers).plan(3).unwrap();
        // Values in the batch of one 4x3x5 tensor.
        let n = 3 * 60;
        let bytes = |i: usize| layer_cost(&plan[i], Direction::Backward, true).bytes;
        let bn_parameters = plan[0].parameters() as u64;
        // Input, output (the ReLU's mask) and output gradient read, input gradient written.
        assert_eq!(bytes(0), 4 * (4 * n + 2 * bn_parameters));
        // Output (the mask) and output gradient read, both inputs' gradients written.
        assert_eq!(bytes(1), 4 * 4 * n);
        // Output gradient (two tensors' worth) read, both inputs' gradients written.
        assert_eq!(bytes(2), 4 * 4 * n);
        // Output gradient (8 channels x 3 images) read, input gradient (8 channels) written.
        assert_eq!(bytes(3), 4 * (24 + 2 * n));
    }
}
