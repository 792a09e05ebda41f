//! `convnet shapes`: a network's table, as the seed prints AlexNet's, or as JSON.

use convnet_wgpu::model;
use convnet_wgpu::table::{self, Detail};

use super::{DetailChoice, ModelArgs};

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `convnet shapes`: the network's table.
pub(crate) fn print(
    args: &ModelArgs,
    detail: Option<DetailChoice>,
    json: bool,
) -> anyhow::Result<()> {
    let network = args.network.build()?;
    let plan = network.plan(args.batch)?;
    let detail = match detail {
        Some(DetailChoice::Layer) => Detail::Layer,
        Some(DetailChoice::Stage) | None => Detail::Stage,
    };
    let rows = table::rows(&network, &plan, detail)?;
    let total_parameters = model::total_parameters(&plan);
    let flops = model::total_flops_per_image(&plan);
    if json {
        let last = plan.last().expect("a network has layers");
        let doc = serde_json::json!({
            "model": network.name,
            "batch": args.batch,
            "input_nchw": [args.batch, network.input.channels, network.input.height, network.input.width],
            "num_classes": last.output.len(),
            "detail": detail,
            "rows": rows,
            "total_parameters": total_parameters,
            "total_forward_flops_per_image": flops,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let two_devices = network.towers.is_some();
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(8);
    let row = |name: &str,
               shape: &str,
               per_device: &str,
               neurons: &str,
               params: &str,
               flops: &str| {
        if two_devices {
            println!(
                    "{name:<width$} {shape:<20} {per_device:<22} {neurons:>18} {params:>12} {flops:>14}"
                );
        } else {
            println!("{name:<width$} {shape:<22} {neurons:>18} {params:>12} {flops:>14}");
        }
    };
    row(
        if detail == Detail::Stage && !network.stages.is_empty() {
            "stage"
        } else {
            "layer"
        },
        "shape [N,H,W,C]",
        "per device",
        "neurons per image",
        "parameters",
        "MFLOP / image",
    );
    for r in &rows {
        if r.exchange_before {
            println!("  -- the devices exchange their halves --");
        }
        let per_device = match &r.shape_per_device {
            Some(shape) => format!("2 x {shape:?}"),
            None if two_devices => "device 0 only".into(),
            None => String::new(),
        };
        let flops = r.forward_flops_per_image;
        row(
            &r.name,
            &format!("{:?}", r.shape_nhwc),
            &per_device,
            &group_digits(r.neurons_per_image as u64),
            &group_digits(r.parameters as u64),
            &if flops > 0 {
                format!("{:.1}", flops as f64 / 1e6)
            } else {
                String::new()
            },
        );
    }
    row(
        "total",
        "",
        "",
        "",
        &group_digits(total_parameters as u64),
        &format!("{:.1}", flops as f64 / 1e6),
    );
    println!(
        "{}: {} layers; forward {:.1} GFLOP per batch of {} (a multiply-add counts as 2 FLOP; \
         convolutions and fully connected layers only)",
        network.name,
        plan.len(),
        flops as f64 * args.batch as f64 / 1e9,
        args.batch
    );
    Ok(())
}
