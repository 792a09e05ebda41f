//! What a pass over a layer costs: the FLOPs of its products and the least bytes it must move.
//! The one home of these counts: the benchmark's GFLOP/s, the profile's rates against the
//! adapter's peak, and the criterion benches all read them from here.

use super::LayerPlan;

/// Which way a pass runs over a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Direction {
    /// Inputs to output.
    Forward,
    /// Output gradient to the parameter gradients and (where asked) the input gradient.
    Backward,
}

/// One pass over one layer, per image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Cost {
    /// FLOPs of the convolution and fully connected products, a multiply-add counting as 2
    /// (LRN, pooling, batch norm, additions, bias and ReLU count 0, as in the post's table,
    /// docs/networks.md, 'The seed').
    pub flops: u64,
    /// The least bytes the pass must move: forward, its inputs read and its output written;
    /// backward, its input and output gradient read and its input gradient written.
    pub bytes: u64,
}

/// The cost of one pass over `layer`. Backward, the weight gradient costs as much as the
/// forward product and so does the input gradient, which `input_gradient` false skips (a
/// network's first layer: nobody needs the images' gradient).
pub fn layer_cost(layer: &LayerPlan, direction: Direction, input_gradient: bool) -> Cost {
    let forward_flops = layer.flops_per_image();
    let inputs: usize = layer.sources.iter().map(|(_, dims)| dims.len()).sum();
    let output = layer.output.len();
    let (products, values) = match direction {
        Direction::Forward => (1, inputs + output),
        Direction::Backward => (1 + u64::from(input_gradient), 2 * inputs + output),
    };
    Cost {
        flops: forward_flops * products,
        bytes: 4 * values as u64,
    }
}

/// Total forward FLOPs per image of a plan.
pub fn total_flops_per_image(plan: &[LayerPlan]) -> u64 {
    plan.iter()
        .map(|l| layer_cost(l, Direction::Forward, true).flops)
        .sum()
}

/// Backward FLOPs per image of a plan: every layer's weight and input gradients, except the
/// first layer's input gradient.
pub fn total_backward_flops_per_image(plan: &[LayerPlan]) -> u64 {
    plan.iter()
        .enumerate()
        .map(|(i, l)| layer_cost(l, Direction::Backward, i > 0).flops)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::{layer_cost, total_backward_flops_per_image, total_flops_per_image, Direction};

    #[test]
    fn costs_of_alexnets_layers_by_hand() {
        let plan = crate::model::alexnet().plan(1).unwrap();
        let conv1 = &plan[0];
        // conv1 (SAME, stride 4: ceil(224 / 4) = 56): 96 x 56 x 56 outputs, each 3 x 11 x 11
        // multiply-adds.
        let conv1_flops = 2 * 96 * 56 * 56 * 3 * 11 * 11;
        let forward = layer_cost(conv1, Direction::Forward, true);
        assert_eq!(forward.flops, conv1_flops);
        // Reads the 3 x 224 x 224 image, writes 96 x 56 x 56.
        assert_eq!(forward.bytes, 4 * (3 * 224 * 224 + 96 * 56 * 56));
        let backward = layer_cost(conv1, Direction::Backward, true);
        assert_eq!(backward.flops, 2 * conv1_flops);
        assert_eq!(
            backward.bytes,
            4 * (2 * 3 * 224 * 224 + 96 * 56 * 56),
            "input and output gradient read, input gradient written"
        );
        assert_eq!(
            layer_cost(conv1, Direction::Backward, false).flops,
            conv1_flops,
            "the weight gradient alone"
        );
        // An LRN moves bytes and counts no FLOPs.
        let lrn = plan.iter().find(|l| l.layer.name == "lrn1").unwrap();
        let lrn_cost = layer_cost(lrn, Direction::Forward, true);
        assert_eq!(lrn_cost.flops, 0);
        assert_eq!(lrn_cost.bytes, 4 * 2 * lrn.output.len() as u64);
        // The totals: backward is twice forward less the first layer's input gradient.
        let forward_total = total_flops_per_image(&plan);
        assert_eq!(
            total_backward_flops_per_image(&plan),
            2 * forward_total - conv1_flops
        );
    }
}
