//! The experiment timeline picture: successful operations per 100 ms, with faults marked.
//! Plain SVG, so it opens in any browser and diffs as text.

use std::fmt::{Display, Write};

/// Width of one 100 ms bucket, in pixels.
const BAR: u64 = 6;
/// The picture is at least this wide, so the title and labels fit.
const MIN_WIDTH: u64 = 760;
const HEIGHT: u64 = 160;
const TOP: u64 = 40;
const LEFT: u64 = 50;
const BUCKET_NS: u64 = 100_000_000;

/// Renders the timeline. `faults` are (time in ns, label).
pub fn svg(title: &str, successes_ns: &[u64], duration_ns: u64, faults: &[(u64, String)]) -> String {
    let buckets = (duration_ns / BUCKET_NS + 1) as usize;
    let mut counts = vec![0u64; buckets];
    for t in successes_ns {
        if let Some(c) = counts.get_mut((*t / BUCKET_NS) as usize) {
            *c += 1;
        }
    }
    let max = counts.iter().copied().max().unwrap_or(1).max(1);
    let width = (LEFT + buckets as u64 * BAR + 20).max(MIN_WIDTH);
    let height = TOP + HEIGHT + 40 + 16 * faults.len() as u64;
    let mut out = open_svg(width, height, title, (LEFT, 18));
    let _ = writeln!(out, r#"<text x="4" y="{}" >{max}/100ms</text>"#, TOP + 4);
    let _ = writeln!(out, r#"<text x="4" y="{}" >0</text>"#, TOP + HEIGHT);
    for (i, c) in counts.iter().enumerate() {
        let h = c * HEIGHT / max;
        let x = LEFT + i as u64 * BAR;
        let y = TOP + HEIGHT - h;
        let _ = writeln!(out, r##"<rect x="{x}" y="{y}" width="{}" height="{h}" fill="#4a7ebb"/>"##, BAR - 1);
    }
    for s in (0..=duration_ns / 1_000_000_000).step_by(1) {
        let x = LEFT + s * 10 * BAR;
        let _ = writeln!(out, r#"<text x="{x}" y="{}" text-anchor="middle">{s}s</text>"#, TOP + HEIGHT + 14);
    }
    for (i, (t, label)) in faults.iter().enumerate() {
        let x = LEFT + (*t / BUCKET_NS) * BAR;
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{}" stroke="#c0392b" stroke-width="2"/>"##,
            TOP + HEIGHT
        );
        let y = TOP + HEIGHT + 32 + 16 * i as u64;
        // Labels right of the middle end at their mark, so they stay inside the picture.
        let anchor = if x > width / 2 { "end" } else { "start" };
        let _ = writeln!(
            out,
            r##"<text x="{x}" y="{y}" fill="#c0392b" text-anchor="{anchor}">▲ {:.1}s {}</text>"##,
            *t as f64 / 1e9,
            escape(label)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The start of an SVG picture on a white background, with `title` at `title_at` (x, y).
/// Shared by the timelines and the benchmark sweep.
pub(crate) fn open_svg(
    width: impl Display,
    height: impl Display,
    title: &str,
    title_at: (impl Display, u32),
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let (x, y) = title_at;
    let _ = writeln!(out, r#"<text x="{x}" y="{y}" font-size="13">{}</text>"#, escape(title));
    out
}

/// Text made safe for SVG.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_bar_per_bucket_and_one_line_per_fault() {
        let successes: Vec<u64> = (0..50).map(|i| i * 20_000_000).collect();
        let picture = svg("t <1>", &successes, 1_000_000_000, &[(500_000_000, "kill -9 petkv-0".into())]);
        assert!(picture.starts_with("<svg"));
        assert_eq!(picture.matches("fill=\"#4a7ebb\"").count(), 11);
        assert_eq!(picture.matches("<line").count(), 1);
        assert!(picture.contains("t &lt;1&gt;"));
    }
}
