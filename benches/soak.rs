//! Soak: many forward-backward steps of AlexNet at a small batch on the default adapter, sampling
//! every 100 steps the GPU memory in use (the program's count of its live buffers, and the
//! driver's allocation where the backend reports it) and the process's resident memory. Both
//! must stay flat, and no wgpu error may occur over the run (any would end it with an error).
//!
//!   cargo bench --bench soak -- [steps, default 1000] [batch, default 1]

use std::time::Instant;

use convnet_wgpu::gpu::{AdapterChoice, GpuContext, GpuNetwork};
use convnet_wgpu::model;
use convnet_wgpu::weights::{self, Weights};

/// Resident set size of this process in bytes, from /proc (None elsewhere).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn megabytes(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".into(), |b| format!("{:.1} MB", b as f64 / 1e6))
}

fn main() -> Result<(), convnet_wgpu::Error> {
    // cargo bench passes "--bench"; the numbers are ours.
    let numbers: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let steps = numbers.first().copied().unwrap_or(1000);
    let batch = numbers.get(1).copied().unwrap_or(1);
    let ctx = GpuContext::new(&AdapterChoice::default())?;
    let network = model::alexnet();
    let plan = network.plan(batch)?;
    let params = Weights::init(&network, 42)?;
    let net = GpuNetwork::with_gradients(&ctx, &plan, &params)?;
    net.upload_input(&weights::random_input(&plan, 42))?;
    println!(
        "soak: {steps} forward-backward steps of alexnet at batch {batch} on {}",
        ctx.describe()
    );
    println!("step, seconds, program GPU memory, driver allocation, process RSS");
    let start = Instant::now();
    for step in 0..=steps {
        if step % 100 == 0 {
            println!(
                "{step}, {:.1}, {}, {}, {}",
                start.elapsed().as_secs_f64(),
                megabytes(Some(net.memory().total())),
                megabytes(ctx.allocated_bytes()),
                megabytes(rss_bytes())
            );
        }
        if step < steps {
            net.forward_backward()?;
        }
    }
    ctx.check("soak")?;
    println!("no wgpu error over {steps} steps");
    Ok(())
}
