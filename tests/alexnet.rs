//! AlexNet end to end on every adapter against the CPU reference, and its files.

mod common;

use common::contexts;
use convnet_wgpu::check;
use convnet_wgpu::gpu::GpuNetwork;
use convnet_wgpu::model;
use convnet_wgpu::weights::{self, Weights};

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn forward_matches_cpu_reference_at_batch_2() {
    let network = model::alexnet();
    let plan = network.plan(2).unwrap();
    let params = Weights::init(&network, 7).unwrap();
    let input = weights::random_input(&plan, 7);
    for ctx in contexts() {
        let net = GpuNetwork::new(ctx, &plan, &params).unwrap();
        let report = check::forward(&net, &plan, &params, &input).unwrap();
        assert_eq!(report.len(), plan.len());
        for layer in &report {
            assert!(
                layer.within(check::TOLERANCE),
                "{} on {}: {layer:?} (tolerance {:e})",
                layer.name,
                ctx.describe(),
                check::TOLERANCE
            );
        }
        // The logits are far from trivial: the check would notice a zeroed layer.
        assert!(report.last().unwrap().max_reference > 1.0);
    }
}

/// All 16 gradients of l2_loss(logits) against the f64 reference. The conv biases are set to 0.1 as
/// in the numerical note of docs/networks.md, 'The seed', which makes the logits reach ~3e4 and,
/// with this random seed, puts a near-tie in one pool2 window that the GPU's f32 forward routes
/// differently from an f64 one. Judged strictly on the GPU's routing; against the fully f64 pass,
/// only the two gradients the rerouted one moves loosely: flipping that window on the f64 reference
/// moves conv1's and conv2's weight gradients by 0.67% and 0.75% (see check::GRADIENT_TOLERANCE),
/// their biases by under 4e-6 (a bias sums its channel, where the moved gradient mostly stays) and
/// the layers downstream of pool2 not at all; those 14 are held to check::GRADIENT_TOLERANCE.
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn gradients_match_the_f64_reference() {
    const REROUTED: [&str; 2] = ["conv1.weight", "conv2.weight"];
    let network = model::alexnet();
    let plan = network.plan(2).unwrap();
    let mut params = Weights::init(&network, 9).unwrap();
    for name in [
        "conv1.bias",
        "conv2.bias",
        "conv3.bias",
        "conv4.bias",
        "conv5.bias",
    ] {
        params.get_mut(name).unwrap().data.fill(0.1);
    }
    let input = weights::random_input(&plan, 9);
    for ctx in contexts() {
        let net = GpuNetwork::with_gradients(ctx, &plan, &params).unwrap();
        let report = check::gradients(&net, &params, &input).unwrap();
        assert_eq!(report.len(), 16);
        for g in &report {
            let name = g.gpu.name.as_str();
            // Shown with --nocapture: the measured errors, against which the tolerances are set.
            eprintln!(
                "{name} on {}: {:e} on the GPU's routing, {:e} against the f64 pass",
                ctx.describe(),
                g.gpu.relative,
                g.gpu_vs_f64_chain.relative
            );
            assert!(
                g.gpu.within(check::GRADIENT_TOLERANCE),
                "{name} on {}: {:?}",
                ctx.describe(),
                g.gpu
            );
            assert!(g.gpu.max_reference > 0.0, "{name} is all zeros");
            let tolerance = if REROUTED.contains(&name) {
                3e-2
            } else {
                check::GRADIENT_TOLERANCE
            };
            assert!(
                g.gpu_vs_f64_chain.within(tolerance),
                "{name} on {}: {:?} (tolerance {tolerance:e})",
                ctx.describe(),
                g.gpu_vs_f64_chain
            );
        }
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn sgd_on_the_gpu_lowers_the_loss_of_a_fixed_batch() {
    let network = model::alexnet();
    let plan = network.plan(2).unwrap();
    let params = Weights::init(&network, 5).unwrap();
    let input = weights::random_input(&plan, 5);
    for ctx in contexts() {
        let net = GpuNetwork::with_gradients(ctx, &plan, &params).unwrap();
        let config = convnet_wgpu::gpu::SgdConfig {
            learning_rate: 1e-11,
            momentum: 0.5,
            weight_decay: 0.0,
        };
        let sgd = convnet_wgpu::gpu::Sgd::new(&net, config).unwrap();
        net.upload_input(&input).unwrap();
        let mut losses = Vec::new();
        for _ in 0..6 {
            sgd.step().unwrap();
            losses.push(convnet_wgpu::reference::l2_loss(
                &net.read_output().unwrap(),
            ));
        }
        assert!(
            losses.last().unwrap() < &(losses[0] * 0.5),
            "{}: losses {losses:?}",
            ctx.describe()
        );
        // The weights really changed on the GPU.
        assert_ne!(net.read_weights().unwrap(), params);
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn batch_too_large_for_a_binding_is_refused_with_the_numbers() {
    let network = model::alexnet();
    let params = Weights::init(&network, 1).unwrap();
    // conv1's output is AlexNet's first and largest activation (1.2 MB an image).
    let conv1_bytes = (network.plan(1).unwrap()[0].output.len() * 4) as u64;
    for ctx in contexts() {
        // One image more than a binding holds, whatever the driver's binding size (128 MiB on
        // lavapipe, ~4 GiB on some GPUs). A binding is also bounded by the largest buffer.
        let binding = ctx.limits().max_storage_buffer_binding_size;
        let largest = binding.min(ctx.limits().max_buffer_size) / conv1_bytes;
        let batch = (binding / conv1_bytes + 1) as usize;
        let plan = network.plan(batch).unwrap();
        let Err(err) = GpuNetwork::new(ctx, &plan, &params) else {
            panic!("batch {batch} built on {}", ctx.info().name);
        };
        let text = err.to_string();
        assert!(
            text.contains("conv1")
                && text.contains(&format!("the largest batch that fits is {largest}")),
            "{text}"
        );
    }
}

#[test]
fn seed_initialisation_is_reproducible_and_follows_the_seed() {
    let network = model::alexnet();
    let a = Weights::init(&network, 3).unwrap();
    assert_eq!(a, Weights::init(&network, 3).unwrap());
    assert_ne!(a, Weights::init(&network, 4).unwrap());
    let conv1 = &a.get("conv1.weight").unwrap().data;
    assert!(
        conv1.iter().all(|v| v.abs() <= 0.2),
        "truncated at 2 stddev"
    );
    let sd = (conv1.iter().map(|v| v * v).sum::<f32>() / conv1.len() as f32).sqrt();
    // A normal truncated at 2 sigma keeps 88% of its variance: sd ~ 0.088.
    assert!((sd - 0.088).abs() < 0.005, "sd {sd}");
    assert!(a.get("conv1.bias").unwrap().data.iter().all(|&v| v == 0.0));
    assert!(a.get("fc1.bias").unwrap().data.iter().all(|&v| v == 0.1));
}

#[test]
fn weights_and_input_round_trip_through_files() {
    let dir = tempfile::tempdir().unwrap();
    let network = model::alexnet();
    let params = Weights::init(&network, 11).unwrap();
    let path = dir.path().join("w.safetensors");
    params.save(&path).unwrap();
    assert_eq!(Weights::load(&path, &network).unwrap(), params);

    let plan = network.plan(2).unwrap();
    let input = weights::random_input(&plan, 11);
    let input_path = dir.path().join("x.npy");
    convnet_wgpu::npy::write(&input_path, &[2, 3, 224, 224], &input).unwrap();
    let (batch, loaded) = weights::load_input(&input_path, &network).unwrap();
    assert_eq!((batch, loaded), (2, input));
}

/// A tensor as a test file describes it: name, dtype, shape (the values are zeros).
type Entry = (String, safetensors::Dtype, Vec<usize>);

/// A safetensors file with the given tensors, written by the safetensors crate itself.
fn write_safetensors(path: &std::path::Path, tensors: &[Entry]) {
    let buffers: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, dtype, shape)| vec![0u8; shape.iter().product::<usize>() * dtype.bitsize() / 8])
        .collect();
    let views: Vec<_> = tensors
        .iter()
        .zip(&buffers)
        .map(|((name, dtype, shape), data)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data);
            (name.as_str(), view.unwrap())
        })
        .collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn malformed_and_mismatched_weights_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let network = model::alexnet();
    let good: Vec<Entry> = network
        .plan(1)
        .unwrap()
        .iter()
        .flat_map(|l| l.parameter_shapes())
        .map(|(name, shape)| (name, safetensors::Dtype::F32, shape))
        .collect();
    let edit = |f: &dyn Fn(&mut Vec<Entry>)| {
        let mut tensors = good.clone();
        f(&mut tensors);
        tensors
    };
    let at =
        |tensors: &mut Vec<Entry>, name: &str| tensors.iter().position(|t| t.0 == name).unwrap();
    let cases = [
        (
            "missing",
            edit(&|t| {
                let i = at(t, "fc3.bias");
                t.remove(i);
            }),
            "'fc3.bias' is missing",
        ),
        (
            "wrong_shape",
            edit(&|t| {
                let i = at(t, "conv2.weight");
                t[i].2 = vec![256, 96, 3, 3];
            }),
            "'conv2.weight' has shape [256, 96, 3, 3]",
        ),
        (
            "wrong_dtype",
            edit(&|t| {
                let i = at(t, "fc2.weight");
                t[i].1 = safetensors::Dtype::F16;
            }),
            "'fc2.weight' is F16",
        ),
        (
            "extra",
            edit(&|t| t.push(("fc4.weight".into(), safetensors::Dtype::F32, vec![2, 2]))),
            "\"fc4.weight\"",
        ),
    ];
    for (label, tensors, expected) in cases {
        let path = dir.path().join(format!("{label}.safetensors"));
        write_safetensors(&path, &tensors);
        let err = Weights::load(&path, &network).unwrap_err().to_string();
        assert!(err.contains(expected), "{label}: {err}");
        assert!(
            err.contains(&path.display().to_string()),
            "{label} names the file: {err}"
        );
    }

    let truncated = dir.path().join("truncated.safetensors");
    Weights::init(&network, 1)
        .unwrap()
        .save(&truncated)
        .unwrap();
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = Weights::load(&truncated, &network).unwrap_err().to_string();
    assert!(err.contains("not a valid safetensors file"), "{err}");

    let mut params = Weights::init(&network, 1).unwrap();
    params.get_mut("conv3.weight").unwrap().data[5] = f32::NAN;
    let nan = dir.path().join("nan.safetensors");
    params.save(&nan).unwrap();
    let err = Weights::load(&nan, &network).unwrap_err().to_string();
    assert!(err.contains("conv3.weight") && err.contains("NaN"), "{err}");
}

#[test]
fn input_of_the_wrong_shape_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let network = model::alexnet();
    let path = dir.path().join("x.npy");
    convnet_wgpu::npy::write(&path, &[2, 3, 227, 227], &vec![0.0; 2 * 3 * 227 * 227]).unwrap();
    let err = weights::load_input(&path, &network)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[2, 3, 227, 227]") && err.contains("[N, 3, 224, 224]"),
        "{err}"
    );
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn results_are_bit_identical_run_after_run() {
    let network = model::alexnet();
    let plan = network.plan(1).unwrap();
    let params = Weights::init(&network, 13).unwrap();
    let input = weights::random_input(&plan, 13);
    for ctx in contexts() {
        let run = |net: &GpuNetwork| {
            net.upload_input(&input).unwrap();
            net.forward_backward().unwrap();
            (net.read_output().unwrap(), net.read_gradients().unwrap())
        };
        let first = GpuNetwork::with_gradients(ctx, &plan, &params).unwrap();
        let a = run(&first);
        let b = run(&first);
        let c = run(&GpuNetwork::with_gradients(ctx, &plan, &params).unwrap());
        assert!(
            a == b && b == c,
            "{}: results differ between runs",
            ctx.describe()
        );
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn a_lost_device_ends_the_run_with_an_error_naming_the_adapter() {
    for shared in contexts() {
        let ctx = common::fresh_context(shared);
        let network = model::alexnet();
        let plan = network.plan(1).unwrap();
        let params = Weights::init(&network, 1).unwrap();
        let net = GpuNetwork::with_gradients(&ctx, &plan, &params).unwrap();
        net.forward().unwrap();
        ctx.device().destroy();
        let start = std::time::Instant::now();
        let err = net
            .forward_backward()
            .expect_err("a destroyed device still ran");
        assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
        assert!(err.to_string().contains(&ctx.info().name), "{err}");
    }
}
