//! `homeaddr-bench`: the data-plane benchmark behind `scripts/bench`.
//!
//! Topology: a client LAN (legacy client, shim client) and a server LAN
//! (access point, member 1), each a bridge, joined by a router namespace
//! that forwards between them, so every measured path crosses a router hop.
//! ULA addresses only.
//!
//! Paths, all in one run: the direct kernel path (legacy client -> the
//! member's own address, no tunnel), boringtun (user-space WireGuard,
//! which also encrypts, between the legacy client and the member), the
//! legacy path (client -> HoA through the AP's tunnel) and the
//! route-optimized shim path (shim client -> HoA, tunnelled straight to the
//! member). The homeaddr paths run once per protection mode the daemons
//! offer (`--protection encrypt|integrity`, when their `--help` lists it),
//! else once as "v1 (unprotected)"; and once more with the daemons in
//! `HOMEADDR_V1_BIN_DIR` (when set: `scripts/bench` builds the last v1
//! release there, wire version 1, no protection), labelled "none (v1)", in
//! the same interleaved rounds, so the cost of protection is measured
//! against the unprotected path under the same conditions.
//!
//! Figures: single-stream TCP throughput (iperf3), c=1 request latency
//! (median round trip of one request at a time on an open connection),
//! new connections per second (c=1: connect, one request, close) and the
//! median time of such a new-connection request. One table with ratios to
//! the direct path and to boringtun, the ratios of each protection mode to
//! "none (v1)", then the issue-9 targets with PASS/MISS (informational:
//! the exit status only reports errors).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use homeaddr_netns_tests::service::{HOME_ADDRESS, KEY, SERVICE_PORT, TUNNEL_PORT, bin};
use homeaddr_netns_tests::topology::Daemon;
use homeaddr_netns_tests::{Netns, Topology, require_root, testapp, ula, wait_until};
use homeaddr_proto::affinity::{AffinityConfig, AffinityTable};
use homeaddr_proto::wire::inner::FlowKey;

#[path = "homeaddr-bench/boringtun.rs"]
mod boringtun;

/// Client LAN: router ::1, legacy client ::2, shim client ::3.
const CLIENT_NET: u16 = 1;
/// Server LAN: router ::1, access point ::2, member ::3.
const SERVER_NET: u16 = 2;
/// boringtun's tunnel addresses: client ::1, member ::2.
const WG_NET: u16 = 0x77;
const IPERF_PORT: u16 = 5201;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(default)
}

/// Seconds per throughput and per connection-rate figure
/// (`BENCH_SECONDS`, default 4).
fn seconds() -> u64 {
    env_number("BENCH_SECONDS", 4)
}

/// Interleaved rounds over all paths; the table has the medians
/// (`BENCH_ROUNDS`, default 3).
fn rounds() -> u64 {
    env_number("BENCH_ROUNDS", 3)
}

struct Bed {
    /// iperf3 and the test server in the member namespace.
    _servers: Vec<Daemon>,
    ap: Netns,
    member: Netns,
    legacy: Netns,
    shim: Netns,
    topo: Topology,
}

fn gro_on(ns: &Netns, iface: &str) {
    // Physical NICs receive with GRO; veth does only when asked. Without
    // it a TUN gets one forwarded packet per read.
    if let Err(e) = ns.run("ethtool", ["-K", iface, "gro", "on"]) {
        eprintln!(
            "homeaddr-bench: cannot enable GRO on {iface} in {} ({e}); install ethtool",
            ns.name()
        );
    }
}

fn setup() -> anyhow::Result<Bed> {
    let topo = Topology::new("bench")?;
    let router = topo.add_netns("router")?;
    let ap = topo.add_netns("ap")?;
    let member = topo.add_netns("m1")?;
    let legacy = topo.add_netns("legacy")?;
    let shim = topo.add_netns("shim")?;
    topo.lan(
        "csw",
        &[(&router, "eth1"), (&legacy, "eth0"), (&shim, "eth0")],
    )?;
    topo.lan(
        "ssw",
        &[(&router, "eth2"), (&ap, "eth0"), (&member, "eth0")],
    )?;
    router.add_addr("eth1", ula(CLIENT_NET, 1), 64)?;
    router.add_addr("eth2", ula(SERVER_NET, 1), 64)?;
    router.set_forwarding(true)?;
    gro_on(&router, "eth1");
    gro_on(&router, "eth2");
    for (ns, net, host) in [
        (&legacy, CLIENT_NET, 2),
        (&shim, CLIENT_NET, 3),
        (&ap, SERVER_NET, 2),
        (&member, SERVER_NET, 3),
    ] {
        ns.add_addr("eth0", ula(net, host), 64)?;
        ns.ip(&format!("-6 route add default via {}", ula(net, 1)))?;
        gro_on(ns, "eth0");
    }
    // Each round opens thousands of connections per path from the same
    // client: let connect() reuse TIME_WAIT ports (timestamps keep it
    // safe), so later rounds do not hunt for free ports.
    for ns in [&legacy, &shim] {
        ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
    }
    // The router sends the home address to the access point.
    router.add_route(
        ipnet::Ipv6Net::new(HOME_ADDRESS, 128)?,
        Some(ula(SERVER_NET, 2)),
        None,
    )?;
    let mut servers = Vec::new();
    let d = member.spawn(
        "server",
        &bin("homeaddr-testapp")?,
        &[
            "serve".to_string(),
            "--bind".into(),
            format!("[::]:{SERVICE_PORT}"),
            "--name".into(),
            "member1".into(),
        ],
    )?;
    d.wait_for_output("listening on", Duration::from_secs(10))?;
    servers.push(d);
    let d = member.spawn(
        "iperf3",
        std::path::Path::new("iperf3"),
        &[
            "-s".to_string(),
            "--forceflush".into(),
            "-p".into(),
            IPERF_PORT.to_string(),
        ],
    )?;
    d.wait_for_output("Server listening", Duration::from_secs(10))?;
    servers.push(d);
    Ok(Bed {
        _servers: servers,
        ap,
        member,
        legacy,
        shim,
        topo,
    })
}

const DAEMONS: [&str; 3] = ["homeaddr-ap", "homeaddr-member", "homeaddr-shim"];

/// The label of the rows of the v1 daemons from `HOMEADDR_V1_BIN_DIR`.
const V1: &str = "none (v1)";

/// A daemon binary: from `dir` when given, else from `HOMEADDR_BIN_DIR`
/// (or next to this program).
fn daemon_bin(dir: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    match dir {
        None => bin(name),
        Some(dir) => {
            let path = dir.join(name);
            anyhow::ensure!(path.exists(), "{} not found", path.display());
            Ok(path)
        }
    }
}

/// Whether all three daemons list `--protection` in their `--help`.
fn daemons_offer_protection(dir: Option<&Path>) -> anyhow::Result<bool> {
    for name in DAEMONS {
        let out = Command::new(daemon_bin(dir, name)?)
            .arg("--help")
            .output()?;
        let help = String::from_utf8_lossy(&out.stdout);
        if !help.contains("--protection") {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One set of homeaddr rows: which binaries, started with which
/// `--protection` (none: the flag is not passed), under which label.
struct DaemonSet {
    label: &'static str,
    protection: Option<&'static str>,
    /// `None`: the daemons of `HOMEADDR_BIN_DIR`.
    dir: Option<PathBuf>,
}

/// The current daemons once per protection mode they offer (or once as
/// "v1 (unprotected)" when they have no `--protection`), then the v1
/// daemons of `HOMEADDR_V1_BIN_DIR` when set and usable (else a note).
fn daemon_sets() -> anyhow::Result<Vec<DaemonSet>> {
    let mut sets = if daemons_offer_protection(None)? {
        vec![
            DaemonSet {
                label: "encrypt",
                protection: Some("encrypt"),
                dir: None,
            },
            DaemonSet {
                label: "integrity",
                protection: Some("integrity"),
                dir: None,
            },
        ]
    } else {
        vec![DaemonSet {
            label: "v1 (unprotected)",
            protection: None,
            dir: None,
        }]
    };
    match std::env::var_os("HOMEADDR_V1_BIN_DIR").map(PathBuf::from) {
        None => eprintln!(
            "homeaddr-bench: HOMEADDR_V1_BIN_DIR not set: no \"{V1}\" rows (scripts/bench builds the v1 daemons)"
        ),
        Some(dir) => match daemons_offer_protection(Some(&dir)) {
            Ok(false) => sets.push(DaemonSet {
                label: V1,
                protection: None,
                dir: Some(dir),
            }),
            Ok(true) => eprintln!(
                "homeaddr-bench: the daemons in {} offer --protection, they are not v1: no \"{V1}\" rows",
                dir.display()
            ),
            Err(e) => eprintln!(
                "homeaddr-bench: no \"{V1}\" rows: the daemons in {}: {e:#}",
                dir.display()
            ),
        },
    }
    Ok(sets)
}

/// The AP, the member and the shim of `set`, started with its protection
/// (the flag only when given), the shim bound to the member.
struct Homeaddr {
    daemons: Vec<Daemon>,
    sockets: Vec<(&'static str, PathBuf)>,
}

fn start_homeaddr(bed: &Bed, set: &DaemonSet, run_no: u32) -> anyhow::Result<Homeaddr> {
    let dir_bin = |name: &str| daemon_bin(set.dir.as_deref(), name);
    let dir = bed.topo.dir().to_path_buf();
    // Fresh control socket paths each start: a stopped daemon's may linger.
    let sock = |name: &str| dir.join(format!("{name}-{run_no}.sock"));
    let ap_ep = SocketAddr::new(ula(SERVER_NET, 2).into(), TUNNEL_PORT);
    let mut common: Vec<String> = Vec::new();
    if let Some(p) = set.protection {
        common.extend(["--protection".into(), p.into()]);
    }
    let warn = ["--log-level".to_string(), "warn".into()];
    let mut daemons = Vec::new();
    let mut args = vec![
        "--home-address".to_string(),
        HOME_ADDRESS.to_string(),
        "--key".into(),
        KEY.into(),
        "--listen".into(),
        ap_ep.to_string(),
        "--control".into(),
        sock("ap").display().to_string(),
    ];
    args.extend(common.clone());
    args.extend(warn.clone());
    let d = bed.ap.spawn("ap", &dir_bin("homeaddr-ap")?, &args)?;
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "AP control socket",
        || sock("ap").exists(),
    )?;
    daemons.push(d);
    let mut args = vec![
        "--id".to_string(),
        "1".into(),
        "--home-address".into(),
        HOME_ADDRESS.to_string(),
        "--access-point".into(),
        ap_ep.to_string(),
        "--care-of".into(),
        format!("[{}]:{TUNNEL_PORT}", ula(SERVER_NET, 3)),
        "--key".into(),
        KEY.into(),
        "--control".into(),
        sock("m1").display().to_string(),
    ];
    args.extend(common.clone());
    // The readiness line is logged at info.
    args.extend(["--log-level".into(), "info".into()]);
    let d = bed
        .member
        .spawn("member", &dir_bin("homeaddr-member")?, &args)?;
    d.wait_for_output("registered with the access point", Duration::from_secs(10))?;
    daemons.push(d);
    let mut args = vec![
        "--home-address".to_string(),
        HOME_ADDRESS.to_string(),
        "--access-point".into(),
        ap_ep.to_string(),
        "--local".into(),
        format!("[{}]:0", ula(CLIENT_NET, 3)),
        "--control".into(),
        sock("shim").display().to_string(),
    ];
    args.extend(common);
    args.extend(warn);
    let d = bed.shim.spawn("shim", &dir_bin("homeaddr-shim")?, &args)?;
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "shim control socket",
        || sock("shim").exists(),
    )?;
    daemons.push(d);
    // The shim's first connection binds it to the member.
    let hoa = SocketAddr::new(HOME_ADDRESS.into(), SERVICE_PORT);
    let _ = bed
        .shim
        .enter(|| testapp::who(hoa, Duration::from_secs(5)))?;
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "shim binding",
        || {
            homeaddr_netns_tests::service::control_call(
                &sock("shim"),
                &homeaddr_control::Request::Status,
            )
            .is_ok_and(|v| v["bindings"].as_array().is_some_and(|b| !b.is_empty()))
        },
    )?;
    Ok(Homeaddr {
        daemons,
        sockets: vec![
            ("ap", sock("ap")),
            ("member", sock("m1")),
            ("shim", sock("shim")),
        ],
    })
}

fn iperf(client: &Netns, server: IpAddr, secs: u64) -> anyhow::Result<f64> {
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

/// Median round trip of one request at a time on an open connection.
fn rtt_us(client: &Netns, server: SocketAddr) -> anyhow::Result<u64> {
    let report =
        client.enter(|| testapp::rtt(server, 2000, Duration::ZERO, Duration::from_secs(30)))??;
    Ok(report.median_us)
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// New TCP connections per second at c=1, each doing one request (WHO)
/// and closing, and the median time of one such connection.
fn conns_per_second(client: &Netns, server: SocketAddr, secs: u64) -> anyhow::Result<(f64, u64)> {
    client
        .enter(|| {
            let start = Instant::now();
            let mut samples = Vec::new();
            while start.elapsed() < Duration::from_secs(secs) {
                let t = Instant::now();
                let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"WHO\n")?;
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf)?;
                samples.push(t.elapsed().as_micros() as u64);
            }
            let cps = samples.len() as f64 / start.elapsed().as_secs_f64();
            Ok::<_, std::io::Error>((cps, median(&mut samples)))
        })?
        .map_err(Into::into)
}

struct Row {
    path: &'static str,
    protection: String,
    gbps: f64,
    rtt_us: u64,
    cps: f64,
    conn_us: u64,
}

fn measure(
    path: &'static str,
    protection: &str,
    client: &Netns,
    target: SocketAddr,
    secs: u64,
) -> anyhow::Result<Row> {
    eprintln!("homeaddr-bench:   {path} ({protection})");
    let gbps = iperf(client, target.ip(), secs)? / 1e9;
    let rtt_us = rtt_us(client, target)?;
    let (cps, conn_us) = conns_per_second(client, target, secs)?;
    Ok(Row {
        path,
        protection: protection.to_string(),
        gbps,
        rtt_us,
        cps,
        conn_us,
    })
}

/// One daemon's I/O batching, from its status.
struct IoRow {
    protection: String,
    daemon: &'static str,
    tun_per_read: f64,
    tun_written: u64,
    udp_per_recv: f64,
    udp_per_send: f64,
}

fn io_rows(h: &Homeaddr, protection: &str) -> anyhow::Result<Vec<IoRow>> {
    let mut rows = Vec::new();
    for (daemon, sock) in &h.sockets {
        let v =
            homeaddr_netns_tests::service::control_call(sock, &homeaddr_control::Request::Status)?;
        let io = &v["io"];
        let per = |k: &str, a: &str, b: &str| {
            let (x, y) = (
                io[k][a].as_f64().unwrap_or(0.0),
                io[k][b].as_f64().unwrap_or(0.0),
            );
            if y > 0.0 { x / y } else { 0.0 }
        };
        rows.push(IoRow {
            protection: protection.to_string(),
            daemon,
            tun_per_read: per("tun", "rx_packets", "rx_reads"),
            tun_written: io["tun"]["tx_packets"].as_u64().unwrap_or(0),
            udp_per_recv: per("udp", "rx_datagrams", "rx_syscalls"),
            udp_per_send: per("udp", "tx_datagrams", "tx_syscalls"),
        });
    }
    Ok(rows)
}

fn affinity_bytes_per_entry() -> f64 {
    let mut table = AffinityTable::new(AffinityConfig::default());
    let now = Instant::now();
    let n = 200_000u32;
    for i in 0..n {
        let key = FlowKey {
            src: Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(i)),
            dst: HOME_ADDRESS,
            proto: 6,
            src_port: (i % 60000) as u16,
            dst_port: 443,
        };
        table.lookup_or_insert(now, &key, None, 100, || {
            Some(homeaddr_proto::wire::MemberId(1))
        });
    }
    table.memory_bytes() as f64 / f64::from(n)
}

fn shim_flow_bytes_per_entry() -> f64 {
    // A std HashMap entry: key + value, one control byte, at the 7/8 load factor.
    let entry = std::mem::size_of::<(FlowKey, homeaddr_proto::engine::shim::FlowEntry)>() as f64;
    (entry + 1.0) * 8.0 / 7.0
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

const DIRECT: &str = "direct kernel path";
const BORINGTUN: &str = "boringtun (WireGuard)";
const LEGACY: &str = "legacy client via the AP";
const RO: &str = "shim, route-optimized";

fn run() -> anyhow::Result<()> {
    let secs = seconds();
    let rounds = rounds();
    let started = Instant::now();
    let bed = setup()?;
    let hoa = SocketAddr::new(HOME_ADDRESS.into(), SERVICE_PORT);
    let direct = SocketAddr::new(ula(SERVER_NET, 3).into(), SERVICE_PORT);
    let wg_target = SocketAddr::new(ula(WG_NET, 2).into(), SERVICE_PORT);
    let tunnel = match std::env::var_os("BORINGTUN").map(PathBuf::from) {
        Some(exe) => Some(boringtun::start(
            &bed.topo,
            &exe,
            boringtun::End {
                ns: &bed.legacy,
                underlay: ula(CLIENT_NET, 2),
                tunnel: ula(WG_NET, 1),
            },
            boringtun::End {
                ns: &bed.member,
                underlay: ula(SERVER_NET, 3),
                tunnel: ula(WG_NET, 2),
            },
            SERVICE_PORT,
        )?),
        None => {
            eprintln!(
                "homeaddr-bench: BORINGTUN not set: no boringtun row (scripts/bench installs it)"
            );
            None
        }
    };
    let sets = daemon_sets()?;
    eprintln!(
        "homeaddr-bench: {rounds} interleaved rounds, {secs} s per throughput and connection-rate figure, medians"
    );
    let mut samples: Vec<Row> = Vec::new();
    let mut io = Vec::new();
    let mut run_no = 0;
    for round in 1..=rounds {
        eprintln!("homeaddr-bench: round {round}/{rounds}");
        samples.push(measure(DIRECT, "none", &bed.legacy, direct, secs)?);
        if tunnel.is_some() {
            samples.push(measure(
                BORINGTUN,
                "ChaCha20-Poly1305",
                &bed.legacy,
                wg_target,
                secs,
            )?);
        }
        for set in &sets {
            let label = set.label;
            run_no += 1;
            let h = start_homeaddr(&bed, set, run_no)?;
            samples.push(measure(LEGACY, label, &bed.legacy, hoa, secs)?);
            samples.push(measure(RO, label, &bed.shim, hoa, secs)?);
            if round == rounds {
                io.extend(io_rows(&h, label)?);
            }
            // Stop the shim first, the AP last.
            let mut daemons = h.daemons;
            while let Some(d) = daemons.pop() {
                drop(d);
            }
        }
    }
    drop(tunnel);
    let rows = medians(&samples);
    print_table(&rows);
    print_protection_cost(&rows);
    print_targets(&rows, sets[0].protection.is_some());
    print_io(&io);
    println!();
    println!("| memory                 | bytes/entry | target |");
    println!("|------------------------|------------:|-------:|");
    println!(
        "| AP affinity entry      | {:>11.1} |  <= 128 |",
        affinity_bytes_per_entry()
    );
    println!(
        "| shim flow entry        | {:>11.1} |  <= 128 |",
        shim_flow_bytes_per_entry()
    );
    println!();
    println!(
        "client LAN -> router namespace -> server LAN (AP, member), veth, MTU 1500; medians of {rounds} rounds, {secs} s per figure; the run took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One row per (path, protection), in first-seen order, each figure the
/// median over the rounds.
fn medians(samples: &[Row]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for s in samples {
        if rows
            .iter()
            .any(|r| r.path == s.path && r.protection == s.protection)
        {
            continue;
        }
        let same: Vec<&Row> = samples
            .iter()
            .filter(|r| r.path == s.path && r.protection == s.protection)
            .collect();
        let f = |get: fn(&Row) -> f64| {
            let mut v: Vec<f64> = same.iter().map(|r| get(r)).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        rows.push(Row {
            path: s.path,
            protection: s.protection.clone(),
            gbps: f(|r| r.gbps),
            rtt_us: f(|r| r.rtt_us as f64) as u64,
            cps: f(|r| r.cps),
            conn_us: f(|r| r.conn_us as f64) as u64,
        });
    }
    rows
}

fn ratio(x: f64, base: Option<f64>, percent: bool) -> String {
    match base {
        Some(b) if b > 0.0 && percent => format!("{:.0}%", 100.0 * x / b),
        Some(b) if b > 0.0 => format!("{:.2}x", x / b),
        _ => "-".into(),
    }
}

fn print_table(rows: &[Row]) {
    let direct = rows.iter().find(|r| r.path == DIRECT);
    let bt = rows.iter().find(|r| r.path == BORINGTUN);
    println!();
    println!(
        "| path                      | protection        | TCP 1 stream | vs direct | vs boringtun | c=1 latency | vs boringtun | new conn/s | vs direct | vs boringtun | new-conn request |"
    );
    println!(
        "|---------------------------|-------------------|-------------:|----------:|-------------:|------------:|-------------:|-----------:|----------:|-------------:|-----------------:|"
    );
    for r in rows {
        println!(
            "| {:<25} | {:<17} | {:>6.2} Gb/s | {:>9} | {:>12} | {:>8} us | {:>12} | {:>10.0} | {:>9} | {:>12} | {:>13} us |",
            r.path,
            r.protection,
            r.gbps,
            ratio(r.gbps, direct.map(|d| d.gbps), true),
            ratio(r.gbps, bt.map(|b| b.gbps), false),
            r.rtt_us,
            ratio(r.rtt_us as f64, bt.map(|b| b.rtt_us as f64), false),
            r.cps,
            ratio(r.cps, direct.map(|d| d.cps), true),
            ratio(r.cps, bt.map(|b| b.cps), false),
            r.conn_us,
        );
    }
}

/// Each protected row against the "none (v1)" row of its path: throughput
/// and new connections per second as a share of v1's, c=1 latency as a
/// multiple of v1's.
fn print_protection_cost(rows: &[Row]) {
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
        "| path                      | protection vs v1  | TCP 1 stream | c=1 latency | new conn/s | new-conn request |"
    );
    println!(
        "|---------------------------|-------------------|-------------:|------------:|-----------:|-----------------:|"
    );
    for (r, v) in lines {
        println!(
            "| {:<25} | {:<17} | {:>12} | {:>11} | {:>10} | {:>16} |",
            r.path,
            format!("{} vs none", r.protection),
            ratio(r.gbps, Some(v.gbps), true),
            ratio(r.rtt_us as f64, Some(v.rtt_us as f64), false),
            ratio(r.cps, Some(v.cps), true),
            ratio(r.conn_us as f64, Some(v.conn_us as f64), false),
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn print_targets(rows: &[Row], protected: bool) {
    let direct = rows.iter().find(|r| r.path == DIRECT);
    let bt = rows.iter().find(|r| r.path == BORINGTUN);
    let ro = rows
        .iter()
        .find(|r| r.path == RO && (!protected || r.protection == "encrypt"));
    println!();
    let (Some(direct), Some(ro)) = (direct, ro) else {
        return;
    };
    if protected {
        println!("targets (issue 9), on the encrypted route-optimized row (informational):");
    } else {
        println!(
            "targets (issue 9), on the route-optimized row: these daemons have no --protection yet, so this is v1 (unprotected), not the encrypted path (informational):"
        );
    }
    let share = ro.gbps / direct.gbps;
    println!(
        "  TCP 1 stream >= 40% of direct:              {:>6.0}%        {}",
        100.0 * share,
        verdict(share >= 0.40)
    );
    match bt {
        Some(bt) => {
            let x = ro.gbps / bt.gbps;
            println!(
                "  TCP 1 stream >= 8x boringtun:               {x:>6.2}x        {}",
                verdict(x >= 8.0)
            );
            println!(
                "  c=1 request latency <= boringtun's:         {:>6} us vs {} us  {}",
                ro.rtt_us,
                bt.rtt_us,
                verdict(ro.rtt_us <= bt.rtt_us)
            );
            println!(
                "  (new-connection request <= boringtun's:     {:>6} us vs {} us  {})",
                ro.conn_us,
                bt.conn_us,
                verdict(ro.conn_us <= bt.conn_us)
            );
        }
        None => println!("  boringtun targets: no boringtun row"),
    }
}

fn print_io(io: &[IoRow]) {
    println!();
    println!(
        "| protection        | daemon | TUN packets/read | TUN packets written | UDP datagrams/recv | UDP datagrams/send |"
    );
    println!(
        "|-------------------|--------|-----------------:|--------------------:|-------------------:|-------------------:|"
    );
    for r in io {
        println!(
            "| {:<17} | {:<6} | {:>16.1} | {:>19} | {:>18.1} | {:>18.1} |",
            r.protection, r.daemon, r.tun_per_read, r.tun_written, r.udp_per_recv, r.udp_per_send,
        );
    }
}
