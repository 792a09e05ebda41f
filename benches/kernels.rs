//! Every kernel, forward and backward, at AlexNet's real layer shapes (batch 8), on the default
//! adapter.
//! Throughput is reported in FLOP/s for convolutions and fully connected layers (a multiply-add
//! counts as 2) and in bytes/s for LRN and pooling, both counted by `model::layer_cost` (the
//! same counts as `convnet bench --profile`).
//!
//! `cargo bench` — on a software adapter expect minutes; each sample is one dispatch of one layer,
//! timed until the queue has finished it.

use convnet_wgpu::gpu::{AdapterChoice, GpuContext, GpuNetwork};
use convnet_wgpu::model::{self, Direction, LayerPlan, Network};
use convnet_wgpu::weights::{self, Weights};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BATCH: usize = 8;

/// One layer of AlexNet as a network of its own, on its real input shape.
fn alone(layer: &LayerPlan) -> (Network, Vec<LayerPlan>, Weights) {
    let network = Network::new(
        layer.layer.name.clone(),
        layer.input,
        vec![layer.layer.clone()],
    );
    let plan = network.plan(BATCH).expect("layer plans");
    let params = Weights::init(&network, 1).expect("weights");
    (network, plan, params)
}

/// FLOPs of the products (convolutions, fully connected) or bytes that must move (the rest) of
/// one pass over a layer that computes its input gradient.
fn throughput(layer: &LayerPlan, direction: Direction) -> Throughput {
    let cost = model::layer_cost(layer, direction, true);
    if cost.flops > 0 {
        Throughput::Elements(cost.flops)
    } else {
        Throughput::Bytes(cost.bytes)
    }
}

fn bench_forward(c: &mut Criterion) {
    let ctx = GpuContext::new(&AdapterChoice::default()).expect("an adapter");
    let plan = model::alexnet().plan(BATCH).expect("alexnet plans");
    let mut group = c.benchmark_group(format!("forward alexnet-b{BATCH} on {}", ctx.info().name));
    group.sample_size(10);
    for layer in &plan {
        let (_, single, params) = alone(layer);
        let net = GpuNetwork::new(&ctx, &single, &params).expect("network builds");
        net.upload_input(&weights::random_input(&single, 1))
            .expect("upload");
        group.throughput(throughput(layer, Direction::Forward));
        net.forward().expect("warm-up compiles the shader");
        group.bench_function(&layer.layer.name, |b| {
            b.iter(|| net.forward().expect("forward"))
        });
    }
    group.finish();
}

/// Every layer's backward kernels alone: the weight and input gradients of a convolution or fully
/// connected layer (two forward-sized products), the input gradient of the others.
fn bench_backward(c: &mut Criterion) {
    let ctx = GpuContext::new(&AdapterChoice::default()).expect("an adapter");
    let plan = model::alexnet().plan(BATCH).expect("alexnet plans");
    let mut group = c.benchmark_group(format!("backward alexnet-b{BATCH} on {}", ctx.info().name));
    group.sample_size(10);
    for layer in &plan {
        let (_, single, params) = alone(layer);
        let net = GpuNetwork::with_input_gradient(&ctx, &single, &params).expect("network builds");
        net.upload_input(&weights::random_input(&single, 1))
            .expect("upload");
        net.forward().expect("the forward pass the backward reads");
        group.throughput(throughput(layer, Direction::Backward));
        net.backward().expect("warm-up compiles the shaders");
        group.bench_function(&layer.layer.name, |b| {
            b.iter(|| net.backward().expect("backward"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_forward, bench_backward);
criterion_main!(benches);
