//! A batch whose tensors exceed one storage binding runs in parts along the batch on one device
//! (`gpu::MicroBatches`, chosen by `gpu::PlacedNetwork`): on a context whose binding limit is
//! lowered to 8 KiB, a small network at batch 7 runs in parts (3 + 2 + 2 images), and computes
//! what the whole batch computes on an unlimited context: the logits, the loss, every gradient
//! (summed over the parts on the GPU, each weighted by its share of the loss) and three SGD
//! steps.
//!
//! Tolerance: 1e-5 of each tensor's largest value (the parts' gradients are summed in another
//! order than one pass's reductions: only f32 rounding separates them).

mod common;

use common::{contexts, fresh_context};
use convnet_wgpu::gpu::{
    parts_needed, GpuContext, GpuNetwork, Keep, MicroBatches, PlacedNetwork, Runner, Sgd, SgdConfig,
};
use convnet_wgpu::model::{Loss, LossKind, Network};
use convnet_wgpu::weights::{self, Weights};

const TOLERANCE: f64 = 1e-5;

/// A binding that holds the activations of the whole batch of 7 (conv1's output, the largest,
/// is 2376 bytes an image), but the scratch of the first convolution's backward (its output
/// gradient transposed, 6336 bytes an image with its channels padded) of only 3 images: the
/// parts are chosen by what every buffer needs, not the activations alone.
const BINDING: u64 = 20 * 1024;

/// A binding that holds the activations of 3 images and no more.
const ACTIVATIONS_OF_THREE: u64 = 8 * 1024;

fn assert_close(a: &Weights, b: &Weights, what: &str) {
    common::assert_weights_close(a, b, TOLERANCE as f32, what);
}

const SGD: SgdConfig = SgdConfig {
    learning_rate: 0.05,
    momentum: 0.9,
    weight_decay: 1e-3,
};

/// Three SGD steps of `parts` (one optimiser over the parameters its parts share) and of `one`,
/// the whole batch, leave the same weights (and running statistics).
fn assert_three_steps_match(parts: &MicroBatches, one: &GpuNetwork, what: &str) {
    let (sgd, one_sgd) = (
        Sgd::new(parts.first(), SGD).unwrap(),
        Sgd::new(one, SGD).unwrap(),
    );
    for _ in 0..3 {
        parts.forward_backward().unwrap();
        sgd.update().unwrap();
        one_sgd.step().unwrap();
    }
    assert_close(
        &parts.read_weights().unwrap(),
        &one.read_weights().unwrap(),
        what,
    );
}

/// The whole batch on `ctx` (no limit lowered), trained with `kind`.
fn whole<'a>(
    ctx: &'a GpuContext,
    network: &Network,
    weights: &Weights,
    kind: LossKind,
) -> GpuNetwork<'a> {
    let plan = network.plan(7).unwrap();
    let loss = Loss::main_head(kind, &plan);
    GpuNetwork::training(ctx, &plan, weights, &loss, Keep::Everything).unwrap()
}

#[test]
fn parts_are_the_fewest_that_fit() {
    let network = common::small_network(false);
    // conv1's output, 6 x 9 x 11 floats, is the largest tensor of an image.
    let per_image = 6 * 9 * 11 * 4;
    for (batch, binding, parts) in [
        (7, ACTIVATIONS_OF_THREE, 3),
        (6, ACTIVATIONS_OF_THREE, 2),
        (3, ACTIVATIONS_OF_THREE, 1),
        (7, 1 << 30, 1),
    ] {
        let plan = network.plan(batch).unwrap();
        assert_eq!(
            parts_needed(&plan, binding).unwrap(),
            parts,
            "batch {batch}"
        );
    }
    let err = parts_needed(&network.plan(1).unwrap(), per_image - 4).unwrap_err();
    assert!(
        err.to_string().contains("only a smaller input fits"),
        "{err}"
    );
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn a_batch_in_parts_computes_the_whole_batchs_passes_and_steps() {
    let network = common::small_network(false);
    let weights = Weights::init(&network, 3).unwrap();
    let plan = network.plan(7).unwrap();
    let input = weights::random_input(&plan, 4);
    let labels = [4, 0, 1, 1, 3, 2, 2];
    for ctx in contexts() {
        let limited = [fresh_context(ctx).with_binding_limit(BINDING)];
        // Chosen by the placement, as `bench` and `check` place a network.
        let training = Some(Keep::WhatBackwardReads);
        let placed = PlacedNetwork::new(&limited, &network, &plan, &weights, training).unwrap();
        let PlacedNetwork::Parts(parts) = &placed else {
            panic!(
                "batch 7 fits one binding of {BINDING} bytes on {}",
                ctx.describe()
            );
        };
        let sizes: Vec<usize> = parts.parts().iter().map(|p| p.plan()[0].batch).collect();
        assert_eq!(sizes, [3, 2, 2]);
        for kind in [LossKind::L2, LossKind::CrossEntropy] {
            let what = format!("{kind:?} on {}", ctx.describe());
            let one = whole(ctx, &network, &weights, kind);
            let loss = Loss::main_head(kind, &plan);
            let parts = MicroBatches::new(
                &limited[0],
                &network,
                &plan,
                &weights,
                Some((&loss, Keep::Everything)),
            )
            .unwrap();
            for net in [&one as &dyn Runner, &parts] {
                net.upload_input(&input).unwrap();
            }
            if kind == LossKind::CrossEntropy {
                one.upload_labels(&labels).unwrap();
                parts.upload_labels(&labels).unwrap();
            }
            parts.forward_backward().unwrap();
            one.forward_backward().unwrap();
            let (loss, one_loss) = (parts.read_loss().unwrap(), one.read_loss().unwrap());
            assert!(
                (loss - one_loss).abs() <= TOLERANCE * one_loss.abs(),
                "{what}: {loss} vs {one_loss}"
            );
            let logits =
                common::relative_error(&parts.read_output().unwrap(), &one.read_output().unwrap());
            assert!(
                f64::from(logits) <= TOLERANCE,
                "{what}: logits differ by {logits:e}"
            );
            assert_close(
                &parts.read_gradients().unwrap(),
                &one.read_gradients().unwrap(),
                &what,
            );
            assert_three_steps_match(&parts, &one, &what);
        }
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn batch_norms_run_in_parts_at_inference_and_in_training() {
    let network = common::small_network(true);
    let weights = common::random_weights(&network, 5);
    let plan = network.plan(7).unwrap();
    let input = weights::random_input(&plan, 6);
    let ctx = &contexts()[0];
    let limited = [fresh_context(ctx).with_binding_limit(ACTIVATIONS_OF_THREE)];
    // At inference (running statistics) the parts are independent.
    let placed = PlacedNetwork::new(&limited, &network, &plan, &weights, None).unwrap();
    assert!(matches!(placed, PlacedNetwork::Parts(_)));
    let one = GpuNetwork::new(ctx, &plan, &weights).unwrap();
    for net in [placed.runner(), &one] {
        net.upload_input(&input).unwrap();
        net.forward().unwrap();
    }
    let last = plan.len() - 1;
    let logits = common::relative_error(
        &placed.runner().read_layer(last).unwrap(),
        &one.read_output().unwrap(),
    );
    assert!(
        f64::from(logits) <= TOLERANCE,
        "logits differ by {logits:e}"
    );
    // In training the statistics are the whole batch's: combined across the parts between
    // their passes; three SGD steps leave the whole batch's weights and running statistics.
    // (The backward's scratch, not the activations, sets the parts: 3 + 2 + 2 at BINDING.)
    let training = Some(Keep::WhatBackwardReads);
    let limited = [fresh_context(ctx).with_binding_limit(BINDING)];
    let placed = PlacedNetwork::new(&limited, &network, &plan, &weights, training).unwrap();
    let PlacedNetwork::Parts(parts) = &placed else {
        panic!("batch 7 fits one binding of {BINDING} bytes");
    };
    assert_eq!(parts.parts().len(), 3);
    let one = whole(ctx, &network, &weights, LossKind::L2);
    for net in [placed.runner(), &one] {
        net.upload_input(&input).unwrap();
        net.forward_backward().unwrap();
    }
    let (loss, one_loss) = (placed.read_loss().unwrap(), one.read_loss().unwrap());
    assert!(
        (loss - one_loss).abs() <= TOLERANCE * one_loss.abs(),
        "{loss} vs {one_loss}"
    );
    let gradients = placed.runner().read_gradients().unwrap();
    assert_close(
        &gradients,
        &one.read_gradients().unwrap(),
        "batch norms in parts",
    );
    assert_three_steps_match(parts, &one, "batch norms in parts, 3 steps");
}
