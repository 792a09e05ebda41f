//! `convnet adapters` and `convnet peak`: what the machine offers.

use convnet_wgpu::gpu::{self, AdapterChoice};
use convnet_wgpu::watchdog::Watchdog;

use super::{open_context, DeviceArgs};

/// `convnet adapters`: every adapter with the limits that matter.
pub(crate) fn list(backend: Option<String>) -> anyhow::Result<()> {
    let choice = AdapterChoice {
        adapter: None,
        backend,
    };
    for a in gpu::list_adapters(&choice)? {
        let l = &a.limits;
        println!(
            "{}: {} ({:?}, {:?}{})",
            a.index,
            a.info.name,
            a.info.backend,
            a.info.device_type,
            if a.software { ", software" } else { "" }
        );
        println!("   driver: {} {}", a.info.driver, a.info.driver_info);
        println!(
            "   max storage binding {} MiB, max buffer {} MiB, workgroup storage {} KiB, \
             invocations per workgroup {}, timestamp queries {}, shader-f16 {}",
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            if a.timestamps { "yes" } else { "no" },
            if a.f16 { "yes" } else { "no" }
        );
    }
    Ok(())
}

/// `convnet peak`: the adapter's measured FMA throughput and shader bandwidth.
pub(crate) fn peak(device: &DeviceArgs) -> anyhow::Result<()> {
    let ctx = open_context(device)?;
    let _watchdog = Watchdog::start(device.timeout, format!("peak on {}", ctx.info().name))?;
    let peak = gpu::measure_peak(&ctx, 256 << 20)?;
    println!(
        "f32 FMA peak: {:.1} GFLOP/s (8 independent vec4 FMA chains per invocation)",
        peak.fma_gflops
    );
    println!(
        "shader bandwidth: {:.2} GB/s (vec4 copy of 64 MiB, bytes read + written)",
        peak.bandwidth_gbs
    );
    Ok(())
}
