//! `bench --sweep clients=1,4,16,…`: throughput and p99 latency against the number of
//! clients, one line per system, as a plain SVG (two panels, logarithmic client axis), in the
//! style of [`crate::timeline`].

use std::fmt::Write;

use super::report::{Report, Summary};
use crate::timeline::open_svg;

const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 240.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 50.0;
const GAP: f64 = 90.0;
const COLORS: [(&str, &str); 2] = [("petkv", "#4a7ebb"), ("etcd", "#d9822b")];

/// Parses `clients=1,4,16` (or just `1,4,16`).
pub fn parse(spec: &str) -> anyhow::Result<Vec<usize>> {
    let list = spec.strip_prefix("clients=").unwrap_or(spec);
    let counts = list
        .split(',')
        .map(|c| c.trim().parse::<usize>().map_err(|e| anyhow::anyhow!("bad client count {c:?} in --sweep: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(counts.iter().all(|c| *c > 0), "client counts must be at least 1");
    Ok(counts)
}

/// The points of one system: (clients, ops/s, p99 ms).
fn points(reports: &[Report], pick: fn(&Report) -> &Option<Summary>) -> Vec<(usize, f64, f64)> {
    reports.iter().filter_map(|r| pick(r).as_ref().map(|s| (r.clients, s.ops_per_sec, s.p99_ms))).collect()
}

/// Renders the sweep.
pub fn svg(title: &str, reports: &[Report]) -> String {
    let series = [points(reports, |r| &r.petkv), points(reports, |r| &r.etcd)];
    let max_clients = reports.iter().map(|r| r.clients).max().unwrap_or(1).max(2) as f64;
    let min_clients = reports.iter().map(|r| r.clients).min().unwrap_or(1).max(1) as f64;
    let span = (max_clients.ln() - min_clients.ln()).max(1e-9);
    let x = |c: usize, left: f64| left + ((c as f64).ln() - min_clients.ln()) / span * PANEL_W;
    let width = LEFT + 2.0 * PANEL_W + GAP + 30.0;
    let height = TOP + PANEL_H + 70.0;
    let mut out = open_svg(width, height, title, (LEFT, 20));
    type Panel = (&'static str, fn(&(usize, f64, f64)) -> f64);
    let panels: [Panel; 2] = [("throughput (ops/s)", |p| p.1), ("p99 latency (ms)", |p| p.2)];
    for (i, (label, value)) in panels.iter().enumerate() {
        let left = LEFT + i as f64 * (PANEL_W + GAP);
        let max = series.iter().flatten().map(value).fold(0.0, f64::max).max(1e-9) * 1.1;
        let y = |v: f64| TOP + PANEL_H - v / max * PANEL_H;
        let _ = writeln!(
            out,
            r##"<rect x="{left}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>"##
        );
        let _ = writeln!(out, r#"<text x="{left}" y="{}">{label}</text>"#, TOP - 8.0);
        for t in 0..=4 {
            let v = max * t as f64 / 4.0;
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                left - 4.0,
                y(v) + 4.0,
                if max >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
            );
        }
        for r in reports {
            let cx = x(r.clients, left);
            let _ = writeln!(
                out,
                r#"<text x="{cx}" y="{}" text-anchor="middle">{}</text>"#,
                TOP + PANEL_H + 16.0,
                r.clients
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">clients</text>"#,
            left + PANEL_W / 2.0,
            TOP + PANEL_H + 32.0
        );
        for (points, (name, color)) in series.iter().zip(COLORS) {
            if points.is_empty() {
                continue;
            }
            let path: Vec<String> = points.iter().map(|p| format!("{:.1},{:.1}", x(p.0, left), y(value(p)))).collect();
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"><title>{name}</title></polyline>"#,
                path.join(" ")
            );
            for p in points {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{name}, {} clients: {:.2}</title></circle>"#,
                    x(p.0, left),
                    y(value(p)),
                    p.0,
                    value(p)
                );
            }
        }
    }
    for (i, (points, (name, color))) in series.iter().zip(COLORS).enumerate() {
        if points.is_empty() {
            continue;
        }
        let lx = LEFT + i as f64 * 90.0;
        let ly = height - 12.0;
        let _ = writeln!(out, r#"<rect x="{lx}" y="{}" width="14" height="4" fill="{color}"/>"#, ly - 4.0);
        let _ = writeln!(out, r#"<text x="{}" y="{ly}">{name}</text>"#, lx + 18.0);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_lists() {
        assert_eq!(parse("clients=1,4,16").unwrap(), vec![1, 4, 16]);
        assert_eq!(parse("2, 8").unwrap(), vec![2, 8]);
        assert!(parse("clients=0").is_err());
        assert!(parse("clients=a").is_err());
    }
}
