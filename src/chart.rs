//! Charts as SVG: a per-layer profile as bars (one panel per pass, one bar per layer, its
//! length the layer's time, labelled with the time and the rate), and a training run's curves
//! as lines (one panel per quantity, one line per series: loss and accuracy per epoch).

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

/// One line of a curve panel: its name and its points (x, y).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// The points, in x order.
    pub points: Vec<(f64, f64)>,
}

const PLOT_HEIGHT: f64 = 220.0;
const COLOURS: [&str; 4] = ["#4a7ebb", "#d0702a", "#3a9a4a", "#9a3a8a"];

/// Line charts of `panels`: (title, x axis label, series) each, stacked; each panel scaled to
/// its own points, its axes labelled with their ranges.
pub fn curves_svg(panels: &[(String, String, Vec<Series>)]) -> String {
    let panel_height = TITLE_HEIGHT + PLOT_HEIGHT + 40.0;
    let height = panel_height * panels.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let (left, right) = (LABEL_WIDTH, WIDTH - 150.0);
    for (p, (title, x_label, series)) in panels.iter().enumerate() {
        let top = p as f64 * panel_height;
        svg += &format!(
            "<text x=\"4\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
            top + 18.0,
            escape(title)
        );
        let points = || series.iter().flat_map(|s| s.points.iter().copied());
        let (x0, x1) = range(points().map(|(x, _)| x));
        let (y0, y1) = range(points().map(|(_, y)| y));
        let (plot_top, plot_bottom) = (top + TITLE_HEIGHT, top + TITLE_HEIGHT + PLOT_HEIGHT);
        let x_at = |x: f64| left + (x - x0) / (x1 - x0) * (right - left);
        let y_at = |y: f64| plot_bottom - (y - y0) / (y1 - y0) * PLOT_HEIGHT;
        svg += &format!(
            "<rect x=\"{left}\" y=\"{plot_top}\" width=\"{}\" height=\"{PLOT_HEIGHT}\" \
             fill=\"none\" stroke=\"#888\"/>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <text x=\"{}\" y=\"{plot_bottom}\" text-anchor=\"end\">{}</text>\n\
             <text x=\"{left}\" y=\"{}\">{}</text>\
             <text x=\"{right}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            right - left,
            left - 4.0,
            plot_top + 10.0,
            number(y1),
            left - 4.0,
            number(y0),
            plot_bottom + 14.0,
            number(x0),
            plot_bottom + 14.0,
            number(x1),
            (left + right) / 2.0,
            plot_bottom + 14.0,
            escape(x_label),
        );
        for (k, line) in series.iter().enumerate() {
            let colour = COLOURS[k % COLOURS.len()];
            let path: Vec<String> = (line.points.iter())
                .map(|&(x, y)| format!("{:.1},{:.1}", x_at(x), y_at(y)))
                .collect();
            svg += &format!(
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"/>\n\
                 <text x=\"{}\" y=\"{}\" fill=\"{colour}\">{}</text>\n",
                path.join(" "),
                right + 8.0,
                plot_top + 14.0 + 16.0 * k as f64,
                escape(&line.name)
            );
        }
    }
    svg + "</svg>\n"
}

/// The range of `values`, widened where it is a single value (or there are none).
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    match (lo.is_finite(), hi > lo) {
        (true, true) => (lo, hi),
        (true, false) => (lo - 0.5, lo + 0.5),
        (false, _) => (0.0, 1.0),
    }
}

/// An axis label: four significant digits.
fn number(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let decimals = 3 - value.abs().log10().floor() as i32;
    format!("{value:.*}", decimals.clamp(0, 12) as usize)
}

#[cfg(test)]
mod tests {
    use super::{curves_svg, profile_svg, Bar, Series};

    #[test]
    fn curves_have_a_line_per_series_within_the_plot() {
        let series = |name: &str, ys: &[f64]| Series {
            name: name.into(),
            points: ys
                .iter()
                .enumerate()
                .map(|(i, &y)| (i as f64 + 1.0, y))
                .collect(),
        };
        let panels = vec![
            (
                "loss <per epoch>".to_string(),
                "epoch".to_string(),
                vec![
                    series("train", &[2.0, 1.0, 0.5]),
                    series("held out", &[2.1, 1.2, 0.7]),
                ],
            ),
            (
                "top-1".to_string(),
                "epoch".to_string(),
                vec![series("held out", &[0.5])],
            ),
        ];
        let svg = curves_svg(&panels);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert_eq!(super::number(3.14159e-5), "0.00003142");
        assert_eq!(super::number(2100.0), "2100");
        assert!(svg.contains(">loss &lt;per epoch&gt;</text>"), "{svg}");
        // Every point inside its panel's plot: x from 70 to 610.
        for line in svg.lines().filter(|l| l.starts_with("<polyline")) {
            let points = line.split('"').nth(1).unwrap();
            for point in points.split(' ') {
                let x: f64 = point.split(',').next().unwrap().parse().unwrap();
                assert!((70.0..=610.0).contains(&x), "{line}");
            }
        }
    }

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
