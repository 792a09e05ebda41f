//! Shared by the GPU tests: the adapters to run on, random tensors, one-layer networks.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::sync::OnceLock;

use convnet_wgpu::gpu::{list_adapters, AdapterChoice, GpuContext};
use convnet_wgpu::model::{Dims, Init, Layer, LayerKind, Network, Padding, Window};
use convnet_wgpu::weights::Weights;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One context per adapter the machine has (lavapipe and llvmpipe-GL in CI; every GPU
/// elsewhere), created once per test binary; panics without any adapter.
///
/// A GPU test is marked `#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]` (see
/// build.rs), so that with the variable set the harness reports it as ignored. One that lacks the
/// mark reaches this function and fails instead of passing without having run.
pub fn contexts() -> &'static [GpuContext] {
    static CONTEXTS: OnceLock<Vec<GpuContext>> = OnceLock::new();
    CONTEXTS.get_or_init(|| {
        if cfg!(skip_gpu_tests) {
            panic!(
                "a GPU test ran with CONVNET_SKIP_GPU_TESTS=1: it lacks \
                 #[cfg_attr(skip_gpu_tests, ignore)], or ran through --include-ignored"
            );
        }
        let adapters = list_adapters(&AdapterChoice::default()).unwrap_or_else(|e| {
            panic!(
                "no GPU adapter for the GPU tests ({e}); set CONVNET_SKIP_GPU_TESTS=1 to skip them"
            )
        });
        adapters
            .iter()
            .map(|a| {
                let choice = AdapterChoice {
                    adapter: Some(a.index.to_string()),
                    backend: None,
                };
                let ctx = GpuContext::new(&choice)
                    .unwrap_or_else(|e| panic!("adapter {}: {e}", a.info.name));
                eprintln!("GPU tests run on: {}", ctx.describe());
                ctx
            })
            .collect()
    })
}

/// A second, fresh context on `shared`'s adapter, for a test that changes what the context
/// decides (its kernel variants, its limits) without touching the shared one.
pub fn fresh_context(shared: &GpuContext) -> GpuContext {
    let choice = AdapterChoice {
        adapter: Some(shared.info().name.clone()),
        backend: Some(format!("{:?}", shared.info().backend)),
    };
    GpuContext::new(&choice).unwrap_or_else(|e| panic!("adapter {}: {e}", shared.info().name))
}

/// A fresh context on `shared`'s adapter that plans within the smallest workgroups-per-dimension
/// limit for which `fits` holds (fitting is monotonic in the limit: found by bisection), and that
/// limit. Launches with more workgroups than it fold into a 2-D grid.
pub fn smallest_fitting_context(
    shared: &GpuContext,
    fits: impl Fn(&GpuContext) -> bool,
) -> (u32, GpuContext) {
    let context = |limit| fresh_context(shared).with_workgroups_per_dimension_limit(limit);
    let (mut low, mut high) = (1u32, 4096u32);
    assert!(fits(&context(high)), "nothing fits a limit of {high}");
    while low < high {
        let middle = (low + high) / 2;
        if fits(&context(middle)) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    (high, context(high))
}

/// Image dimensions: channels, height, width.
pub fn dims(channels: usize, height: usize, width: usize) -> Dims {
    Dims {
        channels,
        height,
        width,
    }
}

/// `len` values uniform in [-1, 1).
pub fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// A network of one layer on `input`.
pub fn single_layer(input: Dims, kind: LayerKind) -> Network {
    Network::new("test", input, vec![Layer::new("layer", kind)])
}

/// Weights for `network` with every tensor (biases included) uniform in [-1, 1).
pub fn random_weights(network: &Network, seed: u64) -> Weights {
    let mut weights = Weights::init(network, seed).expect("network plans");
    let names: Vec<String> = weights.iter().map(|(n, _)| n.to_string()).collect();
    for (i, name) in names.iter().enumerate() {
        let t = weights.get_mut(name).expect("name just listed");
        t.data = random(t.data.len(), seed * 1000 + i as u64);
    }
    weights
}

/// Largest |a - b| relative to the largest |b| (absolute when b is all zeros); NaN counts as
/// infinitely wrong.
pub fn relative_error(gpu: &[f32], cpu: &[f32]) -> f32 {
    assert_eq!(gpu.len(), cpu.len());
    convnet_wgpu::check::compare("", gpu, cpu).unwrap().relative
}

/// The small network the data-parallel and batch-in-parts tests train on 9x11 images:
/// convolution (bias, ReLU), max pool, convolution with stride 2, fully connected; with
/// `batch_norm`, a batch norm (and ReLU) after the first convolution, which then has no bias.
pub fn small_network(batch_norm: bool) -> Network {
    let conv = |out_channels, stride, relu, bias| LayerKind::Conv2d {
        out_channels,
        window: Window::square(3, stride, Padding::Same),
        groups: 1,
        relu,
        bias,
    };
    // Before a batch norm, no bias (as torchvision's): the batch norm removes it, and its
    // gradient is rounding noise about zero.
    let mut layers = vec![Layer::new("conv1", conv(6, 1, !batch_norm, !batch_norm))];
    if batch_norm {
        layers.push(Layer::new(
            "bn1",
            LayerKind::BatchNorm {
                eps: 1e-5,
                relu: true,
            },
        ));
    }
    layers.extend([
        Layer::new(
            "pool",
            LayerKind::MaxPool {
                window: Window::square(2, 2, Padding::Valid),
            },
        ),
        Layer::new("conv2", conv(8, 2, true, true)),
        Layer::new(
            "fc",
            LayerKind::Linear {
                out_features: 5,
                relu: false,
            },
        ),
    ]);
    let mut network = Network::new("small", dims(3, 9, 11), layers);
    network.init = Init::Torchvision;
    network
}

/// Fails, naming the tensor, unless every tensor of `a` is within `tolerance` of `b`'s
/// ([`relative_error`]).
pub fn assert_weights_close(a: &Weights, b: &Weights, tolerance: f32, what: &str) {
    for ((name, x), (_, y)) in a.iter().zip(b.iter()) {
        let r = relative_error(&x.data, &y.data);
        assert!(r <= tolerance, "{what}: {name} differs by {r:e}");
    }
}
