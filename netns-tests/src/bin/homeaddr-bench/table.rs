//! The bench's tables: one row per (path, protection) with the medians of
//! the rounds, ratios to the direct path and to each peer (haproxy,
//! boringtun), the cost of each protection mode against "none (v1)", and
//! the issue-12 targets with PASS/MISS (informational).

use crate::homeaddr::V1;
use crate::paths::{BORINGTUN, DIRECT, HAPROXY, LEGACY, RO};
use crate::tools::Figures;

/// One path's figures: a sample of one round, or the medians.
pub struct Row {
    pub path: &'static str,
    pub protection: String,
    pub f: Figures,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// One row per (path, protection), in first-seen order, each figure the
/// median over the rounds.
pub fn medians(samples: &[Row]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for s in samples {
        if rows
            .iter()
            .any(|r| r.path == s.path && r.protection == s.protection)
        {
            continue;
        }
        let same: Vec<&Figures> = samples
            .iter()
            .filter(|r| r.path == s.path && r.protection == s.protection)
            .map(|r| &r.f)
            .collect();
        let m = |get: fn(&Figures) -> f64| median(same.iter().map(|f| get(f)).collect());
        rows.push(Row {
            path: s.path,
            protection: s.protection.clone(),
            f: Figures {
                gbps: m(|f| f.gbps),
                keepalive_rps: m(|f| f.keepalive_rps),
                newconn_rps: m(|f| f.newconn_rps),
                latency_us: m(|f| f.latency_us),
            },
        });
    }
    rows
}

fn find<'a>(rows: &'a [Row], path: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.path == path)
}

fn x(v: f64, base: f64) -> f64 {
    if base > 0.0 { v / base } else { f64::NAN }
}

/// The four figures of `r` as multiples of `base`'s, `/`-separated, in
/// column order (throughput, keep-alive, new-conn, latency); "-" without
/// a base.
fn ratios(r: &Figures, base: Option<&Row>) -> String {
    match base {
        None => "-".into(),
        Some(b) => format!(
            "{:.2}/{:.2}/{:.2}/{:.2}",
            x(r.gbps, b.f.gbps),
            x(r.keepalive_rps, b.f.keepalive_rps),
            x(r.newconn_rps, b.f.newconn_rps),
            x(r.latency_us, b.f.latency_us),
        ),
    }
}

/// The main table.
pub fn print_table(rows: &[Row]) {
    let direct = find(rows, DIRECT);
    let haproxy = find(rows, HAPROXY);
    let bt = find(rows, BORINGTUN);
    println!();
    println!(
        "| path                      | protection            | Gbit/s | keep-alive req/s | new-conn req/s | c=1 latency | vs direct              | vs haproxy             | vs boringtun           |"
    );
    println!(
        "|---------------------------|-----------------------|-------:|-----------------:|---------------:|------------:|-----------------------:|-----------------------:|-----------------------:|"
    );
    for r in rows {
        println!(
            "| {:<25} | {:<21} | {:>6.2} | {:>16.0} | {:>14.0} | {:>8.0} us | {:>22} | {:>22} | {:>22} |",
            r.path,
            r.protection,
            r.f.gbps,
            r.f.keepalive_rps,
            r.f.newconn_rps,
            r.f.latency_us,
            ratios(&r.f, direct),
            ratios(&r.f, haproxy),
            ratios(&r.f, bt),
        );
    }
    println!(
        "ratios: Gbit/s / keep-alive / new-conn / c=1 latency, each as a multiple of the peer's (above 1 is better for the first three, below 1 for latency)"
    );
}

/// Each protected row against the "none (v1)" row of its path.
pub fn print_protection_cost(rows: &[Row]) {
    let lines: Vec<(&Row, &Row)> = rows
        .iter()
        .filter(|r| r.protection == "encrypt" || r.protection == "integrity")
        .filter_map(|r| {
            rows.iter()
                .find(|v| v.path == r.path && v.protection == V1)
                .map(|v| (r, v))
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    println!();
    println!(
        "| path                      | protection vs v1  | Gbit/s | keep-alive req/s | new-conn req/s | c=1 latency |"
    );
    println!(
        "|---------------------------|-------------------|-------:|-----------------:|---------------:|------------:|"
    );
    for (r, v) in lines {
        println!(
            "| {:<25} | {:<17} | {:>5.2}x | {:>15.2}x | {:>13.2}x | {:>10.2}x |",
            r.path,
            format!("{} vs none", r.protection),
            x(r.f.gbps, v.f.gbps),
            x(r.f.keepalive_rps, v.f.keepalive_rps),
            x(r.f.newconn_rps, v.f.newconn_rps),
            x(r.f.latency_us, v.f.latency_us),
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn target(what: &str, value: String, ok: bool) {
    println!("  {what:<48} {value:>22}  {}", verdict(ok));
}

/// The issue-12 targets, on the rows of `label` (the encrypted ones when
/// the daemons offer protection).
pub fn print_targets(rows: &[Row], label: &str) {
    let row = |path: &str| {
        rows.iter()
            .find(|r| r.path == path && r.protection == label)
    };
    let (direct, bt) = (find(rows, DIRECT), find(rows, BORINGTUN));
    println!();
    println!("targets (issue 12), on the \"{label}\" rows (informational):");
    via_ap_targets(rows, label);
    let Some(ro) = row(RO) else {
        println!("  route-optimized: no row");
        return;
    };
    let ro = &ro.f;
    if let Some(d) = direct {
        let share = x(ro.gbps, d.f.gbps);
        target(
            "route-optimized: Gbit/s >= 50% of direct",
            format!("{:.0}%", 100.0 * share),
            share >= 0.5,
        );
        let lat = x(ro.latency_us, d.f.latency_us);
        target(
            "route-optimized: c=1 latency <= 1.5x direct",
            format!("{lat:.2}x"),
            lat <= 1.5,
        );
    }
    match bt {
        Some(b) => {
            let m = x(ro.gbps, b.f.gbps);
            target(
                "route-optimized: Gbit/s >= 10x boringtun",
                format!("{m:.2}x"),
                m >= 10.0,
            );
            target(
                "route-optimized: c=1 latency < boringtun's (us)",
                format!("{:.0} vs {:.0}", ro.latency_us, b.f.latency_us),
                ro.latency_us < b.f.latency_us,
            );
        }
        None => println!("  boringtun targets: no boringtun row"),
    }
}

/// The via-the-AP targets (against haproxy) on the rows of `label`.
pub fn via_ap_targets(rows: &[Row], label: &str) {
    let ap = rows
        .iter()
        .find(|r| r.path == LEGACY && r.protection == label);
    match (ap, find(rows, HAPROXY)) {
        (Some(ap), Some(h)) => {
            let (a, h) = (&ap.f, &h.f);
            let vs = |v: f64, b: f64| format!("{v:.0} vs {b:.0}");
            target(
                "via the AP: Gbit/s >= haproxy's",
                format!("{:.2} vs {:.2}", a.gbps, h.gbps),
                a.gbps >= h.gbps,
            );
            target(
                "via the AP: keep-alive req/s >= haproxy's",
                vs(a.keepalive_rps, h.keepalive_rps),
                a.keepalive_rps >= h.keepalive_rps,
            );
            target(
                "via the AP: new-conn req/s >= haproxy's",
                vs(a.newconn_rps, h.newconn_rps),
                a.newconn_rps >= h.newconn_rps,
            );
            target(
                "via the AP: c=1 latency <= haproxy's (us)",
                vs(a.latency_us, h.latency_us),
                a.latency_us <= h.latency_us,
            );
        }
        _ => println!("  via the AP: no row to compare (haproxy or the AP path missing)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &'static str, gbps: f64, ka: f64, nc: f64, lat: f64) -> Row {
        Row {
            path,
            protection: "none".into(),
            f: Figures {
                gbps,
                keepalive_rps: ka,
                newconn_rps: nc,
                latency_us: lat,
            },
        }
    }

    #[test]
    fn medians_take_each_figure_separately_in_first_seen_order() {
        let samples = [
            row(DIRECT, 10.0, 300.0, 9.0, 80.0),
            row(HAPROXY, 6.0, 250.0, 5.0, 125.0),
            row(DIRECT, 12.0, 100.0, 11.0, 90.0),
            row(DIRECT, 11.0, 200.0, 10.0, 70.0),
        ];
        let rows = medians(&samples);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].path, DIRECT);
        let f = rows[0].f;
        assert_eq!(
            (f.gbps, f.keepalive_rps, f.newconn_rps, f.latency_us),
            (11.0, 200.0, 10.0, 80.0)
        );
        assert_eq!(rows[1].f.gbps, 6.0);
    }

    #[test]
    fn ratios_are_multiples_of_the_peer_in_column_order() {
        let base = row(HAPROXY, 6.0, 25000.0, 5000.0, 125.0);
        let r = row(LEGACY, 3.0, 50000.0, 5000.0, 250.0);
        assert_eq!(ratios(&r.f, Some(&base)), "0.50/2.00/1.00/2.00");
        assert_eq!(ratios(&r.f, None), "-");
    }
}
