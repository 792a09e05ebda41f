//! A per-layer profile drawn as an SVG bar chart: one panel per pass, one bar per layer, its
//! length the layer's time, labelled with the time and the fraction of the adapter's peak.

/// One bar: a layer's name, its time in milliseconds, and a note printed after the time.
pub struct Bar {
    pub label: String,
    pub milliseconds: f64,
    pub note: String,
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
