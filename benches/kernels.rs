//! Every forward kernel at AlexNet's real layer shapes (batch 8), on the default adapter.
//! Throughput is reported in FLOP/s for convolutions and fully connected layers (a multiply-add
//! counts as 2) and in bytes/s (input read + output written) for LRN and pooling.
//!
//! `cargo bench` — on a software adapter expect minutes; each sample is one dispatch of one layer,
//! timed until the queue has finished it.

use convnet_wgpu::gpu::{AdapterChoice, GpuContext, GpuNetwork};
use convnet_wgpu::model::{self, LayerKind, Network};
use convnet_wgpu::weights::{self, Weights};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BATCH: usize = 8;

fn bench_layers(c: &mut Criterion) {
    let ctx = GpuContext::new(&AdapterChoice::default()).expect("an adapter");
    let alexnet = model::alexnet();
    let plan = alexnet.plan(BATCH).expect("alexnet plans");
    let mut group = c.benchmark_group(format!("alexnet-b{BATCH} on {}", ctx.info.name));
    group.sample_size(10);
    for layer in &plan {
        // One layer as a network of its own, on its real input shape.
        let network = Network::new(
            layer.layer.name.clone(),
            layer.input,
            vec![layer.layer.clone()],
        );
        let single = network.plan(BATCH).expect("layer plans");
        let params = Weights::init(&network, 1).expect("weights");
        let net = GpuNetwork::new(&ctx, &single, &params).expect("network builds");
        net.upload_input(&weights::random_input(&single, 1))
            .expect("upload");
        let throughput = match layer.layer.kind {
            LayerKind::Conv2d { .. } | LayerKind::Linear { .. } => {
                Throughput::Elements(layer.flops_per_image() * BATCH as u64)
            }
            _ => Throughput::Bytes(((layer.input.len() + layer.output.len()) * BATCH * 4) as u64),
        };
        group.throughput(throughput);
        net.forward().expect("warm-up compiles the shader");
        group.bench_function(&layer.layer.name, |b| {
            b.iter(|| net.forward().expect("forward"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_layers);
criterion_main!(benches);
