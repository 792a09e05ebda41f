//! SGD with momentum on the GPU against the same update computed by hand on the host.

mod common;

use common::{contexts, dims, random, random_weights, relative_error};
use convnet_wgpu::gpu::{GpuNetwork, Sgd, SgdConfig};
use convnet_wgpu::model::LayerKind;
use convnet_wgpu::reference::{self, Parameters};

/// The single-kernel tolerance of tests/kernels.rs, for the gradients read back each step.
const TOLERANCE: f32 = 1e-5;

/// SGD with momentum and weight decay as sgd.wgsl states it (`v = momentum * v + grad +
/// weight_decay * param; param -= lr * v`, PyTorch's form) over three steps of one linear layer, against the same arithmetic done by hand on the
/// host from the gradients each step read back. Those gradients are themselves checked against
/// the CPU reference at the host's weights before the step, so a step that updated before its
/// backward pass, or read stale gradients, fails too.
///
/// Tolerance: the host and the GPU round the same two f32 operations per element and step (the
/// GPU may fuse them into FMAs), a few ulp after three steps; 1e-6 of the tensor's scale is ~8 ulp.
/// (lavapipe matches bit for bit). Dropping the momentum term at step 3 moves the weights by 0.1
/// of their scale.
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn sgd_steps_with_momentum_match_a_hand_computed_update() {
    const LEARNING_RATE: f32 = 0.01;
    const MOMENTUM: f32 = 0.9;
    const WEIGHT_DECAY: f32 = 0.05;
    const FEATURES: usize = 70;
    let batch = 3;
    // 350 weights, packed as 70 x 16 = 1120 floats: several workgroups of a few invocations
    // each; the 5 biases are not a multiple of the 4 an invocation updates.
    let network = common::single_layer(
        dims(FEATURES, 1, 1),
        LayerKind::Linear {
            out_features: 5,
            relu: false,
        },
    );
    let plan = network.plan(batch).unwrap();
    let initial = random_weights(&network, 800);
    let input = random(batch * FEATURES, 801);
    let names = ["layer.weight", "layer.bias"];
    for ctx in contexts() {
        let net = GpuNetwork::with_gradients(ctx, &plan, &initial).unwrap();
        let config = SgdConfig {
            learning_rate: LEARNING_RATE,
            momentum: MOMENTUM,
            weight_decay: WEIGHT_DECAY,
        };
        let sgd = Sgd::new(&net, config).unwrap();
        net.upload_input(&input).unwrap();
        let mut expected = initial.clone();
        let mut velocity: Vec<Vec<f32>> = names
            .iter()
            .map(|n| vec![0.0; initial.get(n).unwrap().data.len()])
            .collect();
        for step in 1..=3 {
            sgd.step().unwrap();
            let gradients = net.read_gradients().unwrap();
            // l2_loss's output gradient is the output.
            let params = Parameters::<f32>::from_weights(&expected);
            let output = reference::layer_forward(&plan[0], &[&input], &params).unwrap();
            let cpu = reference::layer_backward(&plan[0], &input, &output, &output, &params, false)
                .unwrap();
            for (name, cpu) in names.iter().zip([cpu.weight.unwrap(), cpu.bias.unwrap()]) {
                let err = relative_error(&gradients.get(name).unwrap().data, &cpu);
                assert!(
                    err <= TOLERANCE,
                    "{name}'s gradient at step {step} on {}: {err:e}",
                    ctx.describe()
                );
            }
            for (name, v) in names.iter().zip(&mut velocity) {
                let grad = &gradients.get(name).unwrap().data;
                let param = &mut expected.get_mut(name).unwrap().data;
                for ((p, v), g) in param.iter_mut().zip(v.iter_mut()).zip(grad) {
                    *v = MOMENTUM * *v + g + WEIGHT_DECAY * *p;
                    *p -= LEARNING_RATE * *v;
                }
            }
            let gpu = net.read_weights().unwrap();
            for name in names {
                let err = relative_error(
                    &gpu.get(name).unwrap().data,
                    &expected.get(name).unwrap().data,
                );
                assert!(
                    err <= 1e-6,
                    "{name} after step {step} on {}: {err:e}",
                    ctx.describe()
                );
            }
        }
        // The steps moved the weights well beyond the tolerance.
        let moved = relative_error(
            &expected.get("layer.weight").unwrap().data,
            &initial.get("layer.weight").unwrap().data,
        );
        assert!(moved > 1e-2, "weights moved by {moved:e} only");
    }
}

/// A batch norm trains its weight and bias by the same update, and its running statistics move
/// only by the forward pass's batch statistics, never by the optimiser: after one step they equal
/// those of a network that ran the forward pass alone.
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn sgd_trains_batch_norm_parameters_and_leaves_running_statistics_to_the_forward_pass() {
    use convnet_wgpu::model::{Layer, Network, Padding, Window};
    let input = dims(2, 5, 3);
    let conv = LayerKind::Conv2d {
        out_channels: 3,
        window: Window::square(3, 1, Padding::Same),
        groups: 1,
        relu: false,
        bias: false,
    };
    let layers = vec![
        Layer::new("conv", conv),
        Layer::new(
            "bn",
            LayerKind::BatchNorm {
                eps: 1e-5,
                relu: true,
            },
        ),
        Layer::new(
            "fc",
            LayerKind::Linear {
                out_features: 4,
                relu: false,
            },
        ),
    ];
    let network = Network::new("bn", input, layers);
    let plan = network.plan(2).unwrap();
    let mut initial = random_weights(&network, 30);
    let var = initial.get_mut("bn.running_var").unwrap();
    var.data.iter_mut().for_each(|v| *v = v.abs() + 0.1);
    let x = random(2 * input.len(), 31);
    let config = SgdConfig {
        learning_rate: 0.1,
        momentum: 0.9,
        weight_decay: 0.01,
    };
    for ctx in contexts() {
        let forward_only = GpuNetwork::with_gradients(ctx, &plan, &initial).unwrap();
        forward_only.upload_input(&x).unwrap();
        forward_only.forward_backward().unwrap();
        let grads = forward_only.read_gradients().unwrap();
        let after_forward = forward_only.read_weights().unwrap();

        let net = GpuNetwork::with_gradients(ctx, &plan, &initial).unwrap();
        let sgd = Sgd::new(&net, config).unwrap();
        net.upload_input(&x).unwrap();
        sgd.step().unwrap();
        let stepped = net.read_weights().unwrap();
        for suffix in ["running_mean", "running_var"] {
            assert_eq!(
                stepped.tensor("bn", suffix).unwrap(),
                after_forward.tensor("bn", suffix).unwrap(),
                "{suffix} on {}",
                ctx.describe()
            );
        }
        for suffix in ["weight", "bias"] {
            let name = format!("bn.{suffix}");
            let expected: Vec<f32> = initial
                .get(&name)
                .unwrap()
                .data
                .iter()
                .zip(&grads.get(&name).unwrap().data)
                .map(|(&p, &g)| p - config.learning_rate * (g + config.weight_decay * p))
                .collect();
            let err = relative_error(&stepped.get(&name).unwrap().data, &expected);
            assert!(err <= 1e-6, "{name} on {}: {err:e}", ctx.describe());
        }
    }
}
