//! A per-layer profile drawn as an SVG bar chart: one panel per pass, one bar per layer, its
//! length the layer's time, labelled with the time and the fraction of the adapter's peak.

use crate::bench::PassProfile;

/// One bar: a layer's name, its time in milliseconds, and a note printed after the time.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// Printed left of the bar.
    pub label: String,
    /// The bar's length, scaled to the longest of its panel.
    pub milliseconds: f64,
    /// Printed after the time.
    pub note: String,
}

/// Panels of a profile: one per pass, titled with the pass and the adapter, one bar per layer
/// noted with its rate (GFLOP/s where it has products, else GB/s).
pub fn profile_panels(profiles: &[PassProfile], adapter: &str) -> Vec<(String, Vec<Bar>)> {
    profiles
        .iter()
        .map(|p| {
            let title = format!("{} pass on {adapter} (per layer)", p.pass);
            let bars = p
                .layers
                .iter()
                .map(|l| Bar {
                    label: l.layer.clone(),
                    milliseconds: l.seconds * 1e3,
                    note: if l.flops > 0.0 {
                        format!("{:.1} GFLOP/s", l.gflops_per_s)
                    } else {
                        format!("{:.2} GB/s", l.gb_per_s)
                    },
                })
                .collect();
            (title, bars)
        })
        .collect()
}

const WIDTH: f64 = 760.0;
const LABEL_WIDTH: f64 = 70.0;
const BAR_HEIGHT: f64 = 18.0;
const GAP: f64 = 4.0;
const TITLE_HEIGHT: f64 = 28.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart of `panels`: (title, bars) each.
pub fn profile_svg(panels: &[(String, Vec<Bar>)]) -> String {
    let height: f64 = panels
        .iter()
        .map(|(_, bars)| TITLE_HEIGHT + bars.len() as f64 * (BAR_HEIGHT + GAP) + GAP)
        .sum();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let mut y = 0.0;
    for (title, bars) in panels {
        svg += &format!(
            "<text x=\"4\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
            y + 18.0,
            escape(title)
        );
        y += TITLE_HEIGHT;
        let longest = bars
            .iter()
            .map(|b| b.milliseconds)
            .fold(0.0, f64::max)
            .max(1e-9);
        let scale = (WIDTH - LABEL_WIDTH - 170.0) / longest;
        for bar in bars {
            let length = (bar.milliseconds * scale).max(1.0);
            svg += &format!(
                "<text x=\"4\" y=\"{}\">{}</text>\
                 <rect x=\"{LABEL_WIDTH}\" y=\"{y}\" width=\"{length:.1}\" height=\"{BAR_HEIGHT}\" fill=\"#4a7ebb\"/>\
                 <text x=\"{:.1}\" y=\"{}\">{:.1} ms {}</text>\n",
                y + 13.0,
                escape(&bar.label),
                LABEL_WIDTH + length + 4.0,
                y + 13.0,
                bar.milliseconds,
                escape(&bar.note)
            );
            y += BAR_HEIGHT + GAP;
        }
        y += GAP;
    }
    svg + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::{profile_svg, Bar};

    fn bar(label: &str, milliseconds: f64) -> Bar {
        Bar {
            label: label.into(),
            milliseconds,
            note: "1.0 GB/s".into(),
        }
    }

    #[test]
    fn the_chart_has_a_bar_per_layer_scaled_to_the_longest() {
        let panels = vec![
            (
                "forward <pass>".to_string(),
                vec![bar("conv1", 4.0), bar("a&b", 1.0)],
            ),
            ("backward".to_string(), vec![bar("fc8", 2.0)]),
        ];
        let svg = profile_svg(&panels);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>\n"));
        // Titles and labels escaped.
        assert!(svg.contains(">forward &lt;pass&gt;</text>"), "{svg}");
        assert!(svg.contains(">a&amp;b</text>"), "{svg}");
        assert_eq!(
            svg.matches("fill=\"#4a7ebb\"").count(),
            3,
            "one bar per layer"
        );
        // Each panel's longest bar spans the same width; the others are in proportion.
        let widths: Vec<f64> = svg
            .match_indices(" width=\"")
            .skip(2) // the svg element's and the background's
            .map(|(at, m)| {
                let rest = &svg[at + m.len()..];
                rest[..rest.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(widths.len(), 3);
        assert_eq!(widths[0], widths[2], "longest bar of each panel");
        assert!((widths[1] - widths[0] / 4.0).abs() < 0.1, "{widths:?}");
        assert!(svg.contains(">4.0 ms 1.0 GB/s</text>"), "{svg}");
    }
}
