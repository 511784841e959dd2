//! `homeaddr-bench`: the data-plane benchmark behind `scripts/bench`.
//!
//! Topology ([`topology`]): a client LAN (legacy client, shim client) and
//! a server LAN (access point, member 1), each a bridge, joined by a router
//! namespace that forwards between them, so every measured path crosses a
//! router hop. ULA addresses only.
//!
//! Paths ([`paths`]), all in one run: the direct kernel path, haproxy in
//! TCP mode on the router, boringtun (user-space WireGuard, which also
//! encrypts) between the legacy client and the member, homeaddr's legacy
//! path (client -> HoA through the AP's tunnel) and its route-optimized
//! shim path (shim client -> HoA, tunnelled straight to the member). The
//! homeaddr paths run once per protection mode the daemons offer
//! (`--protection encrypt|integrity`, when their `--help` lists it) and
//! once encrypting with `--busy-poll-us 0` ("encrypt, no busy-poll") and
//! once encrypting with the member's `--direct-return` ("encrypt, direct
//! return": legacy answers leave the member natively), else
//! once as "v1 (unprotected)"; and once more with the daemons in
//! `HOMEADDR_V1_BIN_DIR` (when set: `scripts/bench` builds the last v1
//! release there, wire version 1, no protection), labelled "none (v1)"
//! ([`homeaddr`]).
//!
//! Figures ([`tools`]): single-stream TCP throughput (iperf3), then wrk
//! against nginx's 1 KiB file on the member: keep-alive requests/s,
//! new-connection requests/s (`Connection: close`) and the c=1 median
//! latency. Rounds are interleaved (each round measures every path once),
//! so a noisy neighbour on the VM slows all paths alike; the tables
//! ([`table`]) have the medians, ratios to the direct path and to each
//! peer, the cost of each protection mode against "none (v1)", the
//! issue-12 targets with PASS/MISS (informational: the exit status only
//! reports errors), the daemons' I/O batching and memory per flow entry.
//! `BENCH_SET=LABEL` runs only that daemon set next to the peers.

use std::process::ExitCode;
use std::time::Instant;

use homeaddr_netns_tests::require_root;

mod boringtun;
mod haproxy;
mod homeaddr;
mod memory;
mod nginx;
mod paths;
mod table;
mod tools;
mod topology;

use table::Row;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(default)
}

/// Seconds per figure: each of iperf3 and the three wrk loads
/// (`BENCH_SECONDS`, default 4).
fn seconds() -> u64 {
    env_number("BENCH_SECONDS", 4)
}

/// Interleaved rounds over all paths; the table has the medians
/// (`BENCH_ROUNDS`, default 3).
fn rounds() -> u64 {
    env_number("BENCH_ROUNDS", 3)
}

/// With `BENCH_SET=LABEL`, only the homeaddr daemon set of that label
/// (the peers always run: the ratios need them); an unknown label is an
/// error that lists the labels.
fn only_set(sets: Vec<homeaddr::DaemonSet>) -> anyhow::Result<Vec<homeaddr::DaemonSet>> {
    let Ok(want) = std::env::var("BENCH_SET") else {
        return Ok(sets);
    };
    let labels: Vec<&str> = sets.iter().map(|s| s.label).collect();
    if !labels.contains(&want.as_str()) {
        anyhow::bail!(
            "BENCH_SET={want:?} names no daemon set; give one of: {}",
            labels
                .iter()
                .map(|l| format!("{l:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(sets.into_iter().filter(|s| s.label == want).collect())
}

fn main() -> ExitCode {
    if !require_root("homeaddr-bench") {
        return ExitCode::FAILURE;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("homeaddr-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn measure(p: &paths::Path<'_>, script: &std::path::Path, secs: u64) -> anyhow::Result<Row> {
    eprintln!("homeaddr-bench:   {} ({})", p.label, p.protection);
    let f = tools::measure(p.client, script, p.target, secs)
        .map_err(|e| e.context(format!("{} ({})", p.label, p.protection)))?;
    Ok(Row {
        path: p.label,
        protection: p.protection.to_string(),
        f,
    })
}

fn run() -> anyhow::Result<()> {
    let secs = seconds();
    let rounds = rounds();
    let started = Instant::now();
    // Before any namespace exists: a bad BENCH_SET costs nothing.
    let sets = only_set(homeaddr::daemon_sets()?)?;
    let bed = topology::setup()?;
    let script = tools::write_wrk_script(bed.topo.dir())?;
    let peers = paths::start_peers(&bed)?;
    let fixed = paths::peer_paths(&bed, &peers);
    let n_paths = fixed.len() + 2 * sets.len();
    // Four figures per path plus about 1 s of checks and daemon starts.
    let estimate = rounds * n_paths as u64 * (4 * secs + 1);
    eprintln!(
        "homeaddr-bench: {rounds} interleaved rounds over {n_paths} paths, {secs} s per figure (4 per path), medians; about {} min",
        estimate.div_ceil(60)
    );
    let mut samples: Vec<Row> = Vec::new();
    let mut io = Vec::new();
    let mut run_no = 0;
    for round in 1..=rounds {
        eprintln!("homeaddr-bench: round {round}/{rounds}");
        for p in &fixed {
            samples.push(measure(p, &script, secs)?);
        }
        for set in &sets {
            run_no += 1;
            let h = homeaddr::start(&bed, set, run_no)?;
            for p in &paths::homeaddr_paths(&bed, set.label) {
                samples.push(measure(p, &script, secs)?);
            }
            if round == rounds {
                // Counters only: a daemon that cannot tell them costs its
                // rows of the I/O table, not the run.
                match homeaddr::io_rows(&h, set.label) {
                    Ok(rows) => io.extend(rows),
                    Err(e) => eprintln!("homeaddr-bench: no I/O rows for {}: {e:#}", set.label),
                }
            }
            h.stop();
        }
    }
    drop(peers);
    let rows = table::medians(&samples);
    table::print_table(&rows);
    table::print_protection_cost(&rows);
    table::print_targets(&rows, sets[0].label);
    if sets[0].label != homeaddr::DIRECT_RETURN
        && rows.iter().any(|r| r.protection == homeaddr::DIRECT_RETURN)
    {
        println!(
            "  with direct server return (\"{}\" rows):",
            homeaddr::DIRECT_RETURN
        );
        table::via_ap_targets(&rows, homeaddr::DIRECT_RETURN);
    }
    homeaddr::print_io(&io);
    memory::print_memory();
    println!();
    println!(
        "client LAN -> router namespace -> server LAN (AP, member), veth, MTU 1500; wrk -t2 -c16 (keep-alive, new-conn) and -t1 -c1 (latency, p50) against nginx's 1 KiB file; medians of {rounds} rounds, {secs} s per figure; the run took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!("tools: {}", tools::versions());
    Ok(())
}
