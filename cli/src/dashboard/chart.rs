//! Small line charts as inline SVG, drawn on the server: no chart library, nothing for
//! the browser to run. Each chart also says its figures in text (the caption and the
//! `aria-label`), so it is readable without seeing the line.

use maud::{html, Markup};

/// The time a chart spans, ending now.
pub const WINDOW_MS: u64 = 60 * 60 * 1000;
const WIDTH: f64 = 300.0;
const HEIGHT: f64 = 60.0;

/// The `points` attribute of the polyline: `x,y` pairs (one decimal), the last hour
/// left to right, 0 at the bottom and `top` (at least the largest value) at the top.
/// Points older than the window or in the future are left out.
pub fn polyline_points(points: &[(u64, f64)], now_ms: u64, top: f64) -> String {
    let start = now_ms.saturating_sub(WINDOW_MS);
    let top = points
        .iter()
        .map(|p| p.1)
        .fold(top, f64::max)
        .max(f64::MIN_POSITIVE);
    let mut out = Vec::new();
    for &(at, v) in points {
        if at < start || at > now_ms || !v.is_finite() {
            continue;
        }
        let x = (at - start) as f64 / WINDOW_MS as f64 * WIDTH;
        let y = HEIGHT - (v.max(0.0) / top * HEIGHT);
        out.push(format!("{x:.1},{y:.1}"));
    }
    out.join(" ")
}

/// A titled chart of `points` (time in ms, value) with values shown through `fmt`;
/// `top` is the least the vertical axis reaches (e.g. 100 for percentages).
pub fn chart(
    title: &str,
    points: &[(u64, f64)],
    now_ms: u64,
    top: f64,
    fmt: impl Fn(f64) -> String,
) -> Markup {
    let start = now_ms.saturating_sub(WINDOW_MS);
    let inside: Vec<f64> = points
        .iter()
        .filter(|p| p.0 >= start && p.0 <= now_ms)
        .map(|p| p.1)
        .collect();
    let summary = match inside.last() {
        None => "no figures in the last hour".to_string(),
        Some(last) => {
            let peak = inside.iter().copied().fold(f64::MIN, f64::max);
            format!("now {}, peak {} over the last hour", fmt(*last), fmt(peak))
        }
    };
    let label = format!("{title}: {summary}");
    html! {
        figure class="chart" {
            svg viewBox="0 0 300 60" width="300" height="60" role="img" aria-label=(label)
                preserveAspectRatio="none" {
                line class="axis" x1="0" y1="60" x2="300" y2="60" {}
                @if inside.len() > 1 {
                    polyline class="series" fill="none" points=(polyline_points(points, now_ms, top)) {}
                } @else if inside.len() == 1 {
                    // One point: a dot, since a line needs two.
                    @let p = polyline_points(points, now_ms, top);
                    @let (x, y) = p.split_once(',').unwrap_or(("0", "60"));
                    circle class="series" cx=(x) cy=(y) r="2" {}
                }
            }
            figcaption { strong { (title) } ": " (summary) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_span_the_hour_and_scale_to_the_top() {
        let now = 10 * WINDOW_MS;
        let pts = [
            (now - WINDOW_MS - 1, 50.0), // too old
            (now - WINDOW_MS, 0.0),
            (now - WINDOW_MS / 2, 50.0),
            (now, 100.0),
            (now + 1, 10.0), // in the future
        ];
        assert_eq!(
            polyline_points(&pts, now, 100.0),
            "0.0,60.0 150.0,30.0 300.0,0.0"
        );
        // A value above `top` raises the top.
        assert_eq!(
            polyline_points(&[(now, 200.0), (now - WINDOW_MS, 100.0)], now, 100.0),
            "300.0,0.0 0.0,30.0"
        );
        // All zeros stay at the bottom (no division by zero).
        assert_eq!(polyline_points(&[(now, 0.0)], now, 0.0), "300.0,60.0");
    }

    #[test]
    fn charts_say_their_figures_in_words() {
        let now = 10 * WINDOW_MS;
        let html = chart(
            "CPU",
            &[(now - 60_000, 20.0), (now, 35.5)],
            now,
            100.0,
            |v| format!("{v:.1} %"),
        )
        .into_string();
        assert!(html.contains("<polyline"), "{html}");
        assert!(
            html.contains("aria-label=\"CPU: now 35.5 %, peak 35.5 % over the last hour\""),
            "{html}"
        );
        let empty = chart("Memory", &[], now, 1.0, |v| v.to_string()).into_string();
        assert!(empty.contains("no figures in the last hour"), "{empty}");
        assert!(!empty.contains("<polyline"), "{empty}");
    }
}
