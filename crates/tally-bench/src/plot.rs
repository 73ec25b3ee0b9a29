//! `--plot`: a hand-written SVG with two panels over the measured seconds: committed
//! transfers per second, and p50/p99 request latency (log scale), one colour per run.

use std::fmt::Write;

use crate::stats::Report;

const W: f64 = 900.0;
const PANEL_H: f64 = 260.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 260.0;
const TOP: f64 = 40.0;
const GAP: f64 = 70.0;
const COLOURS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

fn label(r: &Report) -> String {
    format!(
        "{} {} {} accts, {} clients, batch {}",
        r.head.system,
        if r.head.variant == "udf" { "udf" } else { &r.head.workload },
        r.head.accounts,
        r.head.clients,
        r.head.batch
    )
}

/// A "nice" upper bound for an axis.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

pub fn svg(reports: &[Report]) -> String {
    let secs = reports.iter().map(|r| r.timeline.len()).max().unwrap_or(1).max(2) as f64;
    let plot_w = W - LEFT - RIGHT;
    let h = TOP + 2.0 * PANEL_H + GAP + 50.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="15" font-weight="bold">tally bench: throughput and latency over time</text>
"#
    );
    let x_of = |t: f64| LEFT + plot_w * t / (secs - 1.0).max(1.0);

    // Panel 1: transfers per second, linear.
    let y0 = TOP;
    let tmax =
        nice_max(reports.iter().flat_map(|r| r.timeline.iter().map(|p| p.transfers_per_s as f64)).fold(0.0, f64::max));
    axes(&mut s, y0, "transfers/s", &secs, |k| format!("{:.0}", tmax * k as f64 / 4.0), 4);
    for (i, r) in reports.iter().enumerate() {
        let pts: Vec<String> = r
            .timeline
            .iter()
            .map(|p| format!("{:.1},{:.1}", x_of(p.t as f64), y0 + PANEL_H * (1.0 - p.transfers_per_s as f64 / tmax)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
            COLOURS[i % COLOURS.len()],
            pts.join(" ")
        );
    }

    // Panel 2: latency, log10 from 0.1 ms to a decade above the worst p99.
    let y1 = TOP + PANEL_H + GAP;
    let lmax = reports.iter().flat_map(|r| r.timeline.iter().map(|p| p.p99_ms)).fold(1.0, f64::max);
    let (lo, hi) = (-1.0f64, nice_max(lmax).log10().ceil().max(0.0));
    let decades = (hi - lo) as usize;
    axes(
        &mut s,
        y1,
        "latency ms (solid p99, dashed p50)",
        &secs,
        |k| format!("{}", 10f64.powf(lo + k as f64)),
        decades,
    );
    let ly = |ms: f64| y1 + PANEL_H * (1.0 - (ms.max(0.1).log10() - lo) / (hi - lo));
    for (i, r) in reports.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        for (dash, get) in [("", (|p: &crate::stats::Second| p.p99_ms) as fn(&_) -> f64), ("4 3", |p| p.p50_ms)] {
            let pts: Vec<String> =
                r.timeline.iter().map(|p| format!("{:.1},{:.1}", x_of(p.t as f64), ly(get(p)))).collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{c}" stroke-width="1.5" stroke-dasharray="{dash}" points="{}"/>"#,
                pts.join(" ")
            );
        }
    }

    // Legend.
    for (i, r) in reports.iter().enumerate() {
        let y = TOP + 10.0 + 18.0 * i as f64;
        let x = W - RIGHT + 15.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{}" width="14" height="4" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            y - 4.0,
            COLOURS[i % COLOURS.len()],
            x + 20.0,
            y,
            label(r)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds into the measured run</text>"#,
        LEFT + plot_w / 2.0,
        h - 12.0
    );
    s.push_str("</svg>\n");
    s
}

/// Frame, horizontal grid lines with labels, and x ticks every few seconds.
fn axes(s: &mut String, y0: f64, title: &str, secs: &f64, ylabel: impl Fn(usize) -> String, ticks: usize) {
    let plot_w = W - LEFT - RIGHT;
    let _ = writeln!(s, r#"<text x="{LEFT}" y="{}" font-weight="bold">{title}</text>"#, y0 - 8.0);
    let _ =
        writeln!(s, r##"<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#444"/>"##);
    for k in 0..=ticks {
        let y = y0 + PANEL_H * (1.0 - k as f64 / ticks.max(1) as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            ylabel(k)
        );
    }
    let step = ((*secs / 10.0).ceil() as usize).max(1);
    for t in (0..*secs as usize).step_by(step) {
        let x = LEFT + plot_w * t as f64 / (secs - 1.0).max(1.0);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{}" stroke="#444"/><text x="{x:.1}" y="{}" text-anchor="middle">{t}</text>"##,
            y0 + PANEL_H,
            y0 + PANEL_H + 4.0,
            y0 + PANEL_H + 16.0
        );
    }
}
