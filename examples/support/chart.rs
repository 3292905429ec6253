//! Small hand-written SVG charts for the benchmarks: grouped bars on a log
//! scale (one colour per series, one shade per measure), and curves of the
//! share of subscribers reached over time. No plotting crate: the output is
//! a few dozen elements.

use std::fmt::Write;

/// One bar group member: `series` (a server) in `group` (a transport),
/// with one value per measure (p50, p99, …).
pub struct Bar {
    pub group: String,
    pub series: String,
    pub values: Vec<f64>,
}

const COLOURS: [&str; 4] = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"];
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 72.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The groups in first-seen order, the series likewise.
fn order(bars: &[Bar], key: impl Fn(&Bar) -> &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for bar in bars {
        if !seen.iter().any(|s| s == key(bar)) {
            seen.push(key(bar).to_owned());
        }
    }
    seen
}

/// One line of [`curves`]: `ms[k]` is when `k + 1` percent of the
/// subscribers had the event (`NaN`: never).
pub struct Curve {
    pub name: String,
    pub ms: Vec<f64>,
}

/// An SVG document with the head of every chart, its title at the top.
fn document(title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    )
}

/// A round top for a linear axis up to `max`: 1, 2 or 5 times a power of ten.
fn round_top(max: f64) -> f64 {
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|s| s * power)
        .find(|top| *top >= max)
        .unwrap_or(10.0 * power)
}

/// An SVG document: the share of subscribers reached (0–100 %, up) over
/// the time since the publish (ms, right), one coloured line per curve.
pub fn curves(title: &str, curves: &[Curve]) -> String {
    let max = curves
        .iter()
        .flat_map(|c| &c.ms)
        .filter(|v| v.is_finite())
        .fold(1.0f64, |m, v| m.max(*v));
    let right = round_top(max);
    let (plot_w, plot_h) = (WIDTH - LEFT - 20.0, HEIGHT - TOP - BOTTOM);
    let x = |ms: f64| LEFT + plot_w * ms / right;
    let y = |percent: f64| TOP + plot_h * (1.0 - percent / 100.0);
    let mut svg = document(title);
    for i in 0..=5 {
        let (ms, percent) = (right * f64::from(i) / 5.0, f64::from(i) * 20.0);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#e5e7eb"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#6b7280">{percent}%</text><line x1="{:.1}" x2="{:.1}" y1="{TOP}" y2="{:.1}" stroke="#f3f4f6"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#6b7280">{ms:.0}</text>"##,
            LEFT + plot_w,
            y(percent),
            y(percent),
            LEFT - 6.0,
            y(percent) + 4.0,
            x(ms),
            x(ms),
            TOP + plot_h,
            x(ms),
            TOP + plot_h + 16.0,
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#6b7280">ms after the publish</text><text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle" fill="#6b7280">subscribers reached</text>"##,
        LEFT + plot_w / 2.0,
        TOP + plot_h + 32.0,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
    );
    let mut lx = LEFT;
    for (c, curve) in curves.iter().enumerate() {
        let colour = COLOURS[c % COLOURS.len()];
        // From (0, 0) up through every percent reached.
        let mut path = format!("M{:.1},{:.1}", x(0.0), y(0.0));
        for (k, ms) in curve.ms.iter().enumerate().filter(|(_, ms)| ms.is_finite()) {
            let _ = write!(path, " L{:.1},{:.1}", x(*ms), y((k + 1) as f64));
        }
        let _ = write!(
            svg,
            r#"<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/><rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            HEIGHT - 20.0,
            lx + 16.0,
            HEIGHT - 10.0,
            escape(&curve.name)
        );
        lx += 40.0 + 7.0 * curve.name.len() as f64;
    }
    svg.push_str("</svg>\n");
    svg
}

/// An SVG document: `bars` grouped by `group`, a column per series, one
/// bar per measure (`measures` names them), heights on a log scale (or a
/// linear one from 0).
pub fn grouped_bars(title: &str, unit: &str, measures: &[&str], bars: &[Bar], log: bool) -> String {
    let groups = order(bars, |b| &b.group);
    let series = order(bars, |b| &b.series);
    let finite = bars
        .iter()
        .flat_map(|b| &b.values)
        .filter(|v| v.is_finite() && **v > 0.0);
    let max = finite.clone().fold(1.0f64, |m, v| m.max(*v));
    let min = finite.fold(max, |m, v| m.min(*v));
    let plot_h = HEIGHT - TOP - BOTTOM;
    let (low, high) = if log {
        (min.log10().floor().min(-1.0), max.log10().ceil().max(1.0))
    } else {
        (0.0, round_top(max))
    };
    let scale = |v: f64| {
        if log {
            v.max(10f64.powf(low)).log10()
        } else {
            v
        }
    };
    let y = |v: f64| TOP + plot_h * (1.0 - (scale(v) - low) / (high - low));

    let mut svg = document(title);
    // Grid lines at each power of ten, or at fifths of a linear scale.
    let ticks: Vec<f64> = if log {
        ((low as i32)..=(high as i32))
            .map(|p| 10f64.powi(p))
            .collect()
    } else {
        (0..=5).map(|i| high * f64::from(i) / 5.0).collect()
    };
    for v in ticks {
        let at = y(v);
        let label = if v > 0.0 && v < 1.0 {
            format!("{v}")
        } else {
            format!("{v:.0}")
        };
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{at:.1}" y2="{at:.1}" stroke="#e5e7eb"/><text x="{}" y="{:.1}" text-anchor="end" fill="#6b7280">{label}</text>"##,
            WIDTH - 10.0,
            LEFT - 6.0,
            at + 4.0
        );
    }
    let _ = write!(
        svg,
        r##"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle" fill="#6b7280">{}</text>"##,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(unit)
    );
    let group_w = (WIDTH - LEFT - 10.0) / groups.len().max(1) as f64;
    let column_w = group_w * 0.8 / series.len().max(1) as f64;
    let bar_w = column_w / measures.len().max(1) as f64;
    for (g, group) in groups.iter().enumerate() {
        let gx = LEFT + g as f64 * group_w + group_w * 0.1;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text>"#,
            gx + group_w * 0.4,
            HEIGHT - BOTTOM + 18.0,
            escape(group)
        );
        for (s, name) in series.iter().enumerate() {
            let Some(bar) = bars.iter().find(|b| &b.group == group && &b.series == name) else {
                continue;
            };
            let colour = COLOURS[s % COLOURS.len()];
            for (m, value) in bar.values.iter().enumerate() {
                if !value.is_finite() {
                    continue;
                }
                let x = gx + s as f64 * column_w + m as f64 * bar_w;
                let top = y(*value);
                let opacity = 1.0 - 0.3 * m as f64;
                let _ = write!(
                    svg,
                    r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{colour}" fill-opacity="{opacity:.1}"><title>{} {} {}: {value:.2}</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text>"#,
                    bar_w - 1.0,
                    TOP + plot_h - top,
                    escape(name),
                    escape(group),
                    measures.get(m).unwrap_or(&""),
                    x + bar_w / 2.0,
                    top - 3.0,
                    if *value < 10.0 {
                        format!("{value:.1}")
                    } else {
                        format!("{value:.0}")
                    }
                );
            }
        }
    }
    // Legend: servers by colour, measures by shade.
    let mut lx = LEFT;
    let ly = HEIGHT - 18.0;
    for (s, name) in series.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 10.0,
            COLOURS[s % COLOURS.len()],
            lx + 16.0,
            escape(name)
        );
        lx += 90.0;
    }
    if measures.len() > 1 {
        let shades: Vec<String> = measures
            .iter()
            .zip(["solid", "lighter", "lightest"])
            .map(|(name, shade)| format!("{name} {shade}"))
            .collect();
        let _ = write!(
            svg,
            r##"<text x="{lx:.1}" y="{ly:.1}" fill="#6b7280">bars per server, left to right: {}</text>"##,
            escape(&shades.join(", "))
        );
    }
    svg.push_str("</svg>");
    svg.push('\n');
    svg
}
