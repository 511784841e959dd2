//! The load generators, run in a client namespace against one path's
//! target address: iperf3 (one TCP stream) and wrk (Debian's package,
//! 4.1) against nginx's 1 KiB file.
//!
//! wrk's three figures, sized for two cores shared by wrk, the router,
//! the daemons of the path and nginx:
//! - keep-alive requests/s: `-t 2 -c 16` (two threads, 16 open
//!   connections);
//! - new-connection requests/s: the same with a `Connection: close`
//!   header, so nginx closes after each response and wrk connects again
//!   (one TCP handshake and teardown per request);
//! - c=1 latency: `-t 1 -c 1 --latency`, the median (p50) time of one
//!   request at a time on an open connection.
//!
//! A small Lua `done` hook prints wrk's summary as one JSON line (request
//! count, duration, p50 and the error counters), so nothing depends on
//! wrk's human-readable units.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use homeaddr_netns_tests::Netns;

use crate::nginx;
use crate::topology::{HTTP_PORT, IPERF_PORT};

/// The four figures of one path in one round.
#[derive(Clone, Copy, Debug)]
pub struct Figures {
    /// iperf3, one TCP stream, received.
    pub gbps: f64,
    /// wrk keep-alive requests per second.
    pub keepalive_rps: f64,
    /// wrk requests per second with a new connection each.
    pub newconn_rps: f64,
    /// wrk c=1 median request latency.
    pub latency_us: f64,
}

/// Single-stream TCP throughput to the iperf3 server at `server`, bit/s.
pub fn iperf(client: &Netns, server: IpAddr, secs: u64) -> anyhow::Result<f64> {
    let out = client.output(
        "iperf3",
        [
            "-c",
            &server.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &secs.to_string(),
            "-J",
        ],
        Duration::from_secs(secs + 20),
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "iperf3 gave no result: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
}

const WRK_REPORT: &str = r#"done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK-JSON {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"#;

/// Writes wrk's report hook into `dir`; returns its path.
pub fn write_wrk_script(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("wrk-report.lua");
    std::fs::write(&path, WRK_REPORT)?;
    Ok(path)
}

/// What one wrk run reported.
#[derive(Debug, serde::Deserialize)]
struct WrkReport {
    requests: u64,
    duration_us: u64,
    p50_us: u64,
    connect: u64,
    read: u64,
    write: u64,
    status: u64,
    timeout: u64,
}

/// The report line of [`WRK_REPORT`] in wrk's output.
fn parse_wrk(stdout: &str) -> Option<WrkReport> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("WRK-JSON "))?;
    serde_json::from_str(line).ok()
}

/// One wrk load: `threads` x `conns`, optionally `Connection: close`.
struct Load {
    threads: u32,
    conns: u32,
    close: bool,
}

fn wrk(
    client: &Netns,
    script: &Path,
    server: IpAddr,
    load: &Load,
    secs: u64,
) -> anyhow::Result<WrkReport> {
    let url = format!(
        "http://{}{}",
        SocketAddr::new(server, HTTP_PORT),
        nginx::FILE
    );
    let mut args = vec![
        format!("-t{}", load.threads),
        format!("-c{}", load.conns),
        format!("-d{secs}s"),
        "--latency".into(),
        "-s".into(),
        script.display().to_string(),
    ];
    if load.close {
        args.extend(["-H".into(), "Connection: close".into()]);
    }
    args.push(url);
    let out = client.output("wrk", &args, Duration::from_secs(secs + 20))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r = parse_wrk(&stdout).ok_or_else(|| {
        anyhow::anyhow!(
            "wrk {args:?} gave no result: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let errors = r.connect + r.read + r.write + r.status + r.timeout;
    if errors > 0 {
        eprintln!(
            "homeaddr-bench:     wrk {args:?}: {} requests, errors: connect {}, read {}, write {}, status {}, timeout {}",
            r.requests, r.connect, r.read, r.write, r.status, r.timeout
        );
    }
    anyhow::ensure!(r.requests > 0, "wrk {args:?}: no request completed");
    Ok(r)
}

fn rate(r: &WrkReport) -> f64 {
    r.requests as f64 / (r.duration_us.max(1) as f64 / 1e6)
}

/// All four figures against `server`: iperf3, then wrk keep-alive,
/// new connections and c=1, each for `secs`.
pub fn measure(
    client: &Netns,
    script: &Path,
    server: IpAddr,
    secs: u64,
) -> anyhow::Result<Figures> {
    // A path that does not reach nginx fails here, with a clear error.
    client.enter(|| nginx::get(SocketAddr::new(server, HTTP_PORT)))??;
    let gbps = iperf(client, server, secs)? / 1e9;
    let keepalive = Load {
        threads: 2,
        conns: 16,
        close: false,
    };
    let newconn = Load {
        close: true,
        ..keepalive
    };
    let c1 = Load {
        threads: 1,
        conns: 1,
        close: false,
    };
    let keepalive_rps = rate(&wrk(client, script, server, &keepalive, secs)?);
    let newconn_rps = rate(&wrk(client, script, server, &newconn, secs)?);
    let latency_us = wrk(client, script, server, &c1, secs)?.p50_us as f64;
    Ok(Figures {
        gbps,
        keepalive_rps,
        newconn_rps,
        latency_us,
    })
}

/// The versions of the load generators and the peers, as one line for
/// the footer (what a run measured is only comparable with the same).
pub fn versions() -> String {
    let boringtun = std::env::var_os("BORINGTUN").unwrap_or_default();
    let tools: [(&str, &std::ffi::OsStr, &str, usize); 5] = [
        ("haproxy", "haproxy".as_ref(), "-v", 2),
        ("nginx", "nginx".as_ref(), "-v", 2),
        ("wrk", "wrk".as_ref(), "-v", 1),
        ("iperf3", "iperf3".as_ref(), "-v", 1),
        ("boringtun", &boringtun, "--version", 1),
    ];
    let mut out = Vec::new();
    for (name, program, flag, word) in tools {
        let version = std::process::Command::new(program)
            .arg(flag)
            .output()
            .ok()
            .and_then(|o| {
                // nginx writes it to stderr, the others to stdout.
                let text = [o.stdout, o.stderr].concat();
                let text = String::from_utf8_lossy(&text);
                let first = text.lines().next()?;
                first.split_whitespace().nth(word).map(str::to_string)
            })
            .unwrap_or_else(|| "-".into());
        out.push(format!("{name} {version}"));
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_report_line_is_found_among_wrk_output() {
        let out = "Running 1s test @ http://[fd00:4841:2::3]:80/1k
  1 threads and 1 connections
  Latency Distribution
     50%   31.00us
  25812 requests in 2.10s, 31.10MB read
Requests/sec:  12294.15
WRK-JSON {\"requests\":25812,\"duration_us\":2099509,\"p50_us\":31,\"connect\":0,\"read\":0,\"write\":0,\"status\":2,\"timeout\":0}
";
        let r = parse_wrk(out).expect("report line");
        assert_eq!((r.requests, r.p50_us, r.status), (25812, 31, 2));
        assert!((rate(&r) - 12294.15).abs() < 1.0, "{}", rate(&r));
        assert!(parse_wrk("Requests/sec: 1\n").is_none());
    }
}
