//! `homeaddr-bench`: the data-plane benchmark behind `scripts/bench`.
//!
//! One LAN (a bridge) joins four namespaces: the access point, member 1,
//! a legacy client and a shim client. It measures, in one run, the direct
//! kernel path (client -> member's own address, no homeaddr), the legacy
//! path (client -> HoA through the AP's tunnel) and the route-optimized
//! shim path (shim client -> HoA, tunnelled straight to the member):
//! single-stream TCP throughput (iperf3), request RTT (one TCP connection,
//! many round trips) and new connections per second; then the memory of
//! an AP affinity entry and of a shim flow entry. It prints one table with
//! the ratios to the direct path. Nothing is asserted: targets live here.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use homeaddr_netns_tests::service::{HOME_ADDRESS, KEY, SERVICE_PORT, TUNNEL_PORT, bin};
use homeaddr_netns_tests::topology::Daemon;
use homeaddr_netns_tests::{Netns, Topology, require_root, testapp, ula, wait_until};
use homeaddr_proto::affinity::{AffinityConfig, AffinityTable};
use homeaddr_proto::wire::inner::FlowKey;

const SECONDS: u64 = 5;

struct Bed {
    ap: Netns,
    member: Netns,
    legacy: Netns,
    shim: Netns,
    member_addr: Ipv6Addr,
    _daemons: Vec<Daemon>,
    _topo: Topology,
}

fn setup() -> anyhow::Result<Bed> {
    let topo = Topology::new("bench")?;
    let ap = topo.add_netns("ap")?;
    let member = topo.add_netns("m1")?;
    let legacy = topo.add_netns("legacy")?;
    let shim = topo.add_netns("shim")?;
    topo.lan(
        "sw",
        &[
            (&ap, "eth0"),
            (&member, "eth0"),
            (&legacy, "eth0"),
            (&shim, "eth0"),
        ],
    )?;
    let addr = |n: u16| ula(1, n);
    for (i, ns) in [&ap, &member, &legacy, &shim].iter().enumerate() {
        ns.add_addr("eth0", addr(i as u16 + 1), 64)?;
        // Physical NICs receive with GRO; veth does only when asked. Without
        // it the AP's TUN gets one forwarded packet per read.
        if let Err(e) = ns.run("ethtool", ["-K", "eth0", "gro", "on"]) {
            eprintln!(
                "homeaddr-bench: cannot enable GRO on {} ({e}); install ethtool",
                ns.name()
            );
        }
    }
    let hoa = ipnet::Ipv6Net::new(HOME_ADDRESS, 128)?;
    for ns in [&legacy, &shim] {
        ns.add_route(hoa, Some(addr(1)), None)?;
    }
    let ap_ep = SocketAddr::new(addr(1).into(), TUNNEL_PORT);
    let dir = topo.dir().to_path_buf();
    let log = ["--log-level".to_string(), "warn".into()];
    let mut daemons = Vec::new();
    let mut args = vec![
        "--home-address".to_string(),
        HOME_ADDRESS.to_string(),
        "--key".into(),
        KEY.into(),
        "--listen".into(),
        ap_ep.to_string(),
        "--control".into(),
        dir.join("ap.sock").display().to_string(),
    ];
    args.extend(log.clone());
    let d = ap.spawn("ap", &bin("homeaddr-ap")?, &args)?;
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "AP control socket",
        || dir.join("ap.sock").exists(),
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
        format!("[{}]:{TUNNEL_PORT}", addr(2)),
        "--key".into(),
        KEY.into(),
        "--control".into(),
        dir.join("m1.sock").display().to_string(),
        "--log-level".into(),
        "info".into(),
    ];
    let d = member.spawn("member", &bin("homeaddr-member")?, &args)?;
    d.wait_for_output("registered with the access point", Duration::from_secs(10))?;
    daemons.push(d);
    args = vec![
        "--home-address".to_string(),
        HOME_ADDRESS.to_string(),
        "--access-point".into(),
        ap_ep.to_string(),
        "--local".into(),
        format!("[{}]:0", addr(4)),
        "--control".into(),
        dir.join("shim.sock").display().to_string(),
    ];
    args.extend(log);
    let d = shim.spawn("shim", &bin("homeaddr-shim")?, &args)?;
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "shim control socket",
        || dir.join("shim.sock").exists(),
    )?;
    daemons.push(d);
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
    daemons.push(d);
    let d = member.spawn(
        "iperf3",
        std::path::Path::new("iperf3"),
        &[
            "-s".to_string(),
            "--forceflush".into(),
            "-p".into(),
            "5201".into(),
        ],
    )?;
    d.wait_for_output("Server listening", Duration::from_secs(10))?;
    daemons.push(d);
    Ok(Bed {
        ap,
        member,
        legacy,
        shim,
        member_addr: addr(2),
        _daemons: daemons,
        _topo: topo,
    })
}

fn iperf(client: &Netns, server: IpAddr) -> anyhow::Result<f64> {
    let out = client.output(
        "iperf3",
        [
            "-c",
            &server.to_string(),
            "-p",
            "5201",
            "-t",
            &SECONDS.to_string(),
            "-J",
        ],
        Duration::from_secs(SECONDS + 20),
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

fn rtt_us(client: &Netns, server: SocketAddr) -> anyhow::Result<u64> {
    let report =
        client.enter(|| testapp::rtt(server, 2000, Duration::ZERO, Duration::from_secs(30)))??;
    Ok(report.median_us)
}

/// New TCP connections per second, each doing one request (WHO) and closing.
fn conns_per_second(client: &Netns, server: SocketAddr) -> anyhow::Result<f64> {
    client
        .enter(|| {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_secs(SECONDS) {
                let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"WHO\n")?;
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf)?;
                n += 1;
            }
            Ok::<f64, std::io::Error>(n as f64 / start.elapsed().as_secs_f64())
        })?
        .map_err(Into::into)
}

struct Row {
    path: &'static str,
    gbps: f64,
    rtt_us: u64,
    cps: f64,
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

fn run() -> anyhow::Result<()> {
    let bed = setup()?;
    let hoa = SocketAddr::new(HOME_ADDRESS.into(), SERVICE_PORT);
    let direct = SocketAddr::new(bed.member_addr.into(), SERVICE_PORT);
    // Let the shim's first connection bind it to the member.
    let _ = bed
        .shim
        .enter(|| testapp::who(hoa, Duration::from_secs(5)))?;
    let shim_sock = bed._topo.dir().join("shim.sock");
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "shim binding",
        || {
            homeaddr_netns_tests::service::control_call(
                &shim_sock,
                &homeaddr_control::Request::Status,
            )
            .is_ok_and(|v| v["bindings"].as_array().is_some_and(|b| !b.is_empty()))
        },
    )?;
    eprintln!("homeaddr-bench: measuring ({SECONDS} s per figure)...");
    let mut rows = Vec::new();
    for (path, client, target) in [
        ("direct kernel path (no homeaddr)", &bed.legacy, direct),
        ("legacy client via the AP", &bed.legacy, hoa),
        ("shim, route-optimized", &bed.shim, hoa),
    ] {
        let gbps = iperf(client, target.ip())? / 1e9;
        let rtt_us = rtt_us(client, target)?;
        let cps = conns_per_second(client, target)?;
        rows.push(Row {
            path,
            gbps,
            rtt_us,
            cps,
        });
    }
    let _ = (&bed.ap, &bed.member);
    let base = &rows[0];
    println!();
    println!(
        "| path                              | TCP 1 stream | vs direct | RTT median | +RTT/hop | new conn/s | vs direct |"
    );
    println!(
        "|-----------------------------------|-------------:|----------:|-----------:|---------:|-----------:|----------:|"
    );
    for (i, r) in rows.iter().enumerate() {
        // Both tunnelled paths cross two tunnel hops per round trip.
        let hop = if i == 0 {
            "-".to_string()
        } else {
            format!("{} us", (r.rtt_us.saturating_sub(base.rtt_us)) / 2)
        };
        println!(
            "| {:<33} | {:>7.2} Gb/s | {:>8.0}% | {:>7} us | {:>8} | {:>10.0} | {:>8.0}% |",
            r.path,
            r.gbps,
            100.0 * r.gbps / base.gbps,
            r.rtt_us,
            hop,
            r.cps,
            100.0 * r.cps / base.cps
        );
    }
    println!();
    println!(
        "| daemon | TUN packets/read | TUN packets written | UDP datagrams/recv | UDP datagrams/send |"
    );
    println!(
        "|--------|-----------------:|--------------------:|-------------------:|-------------------:|"
    );
    for (name, sock) in [
        ("ap", "ap.sock"),
        ("member", "m1.sock"),
        ("shim", "shim.sock"),
    ] {
        let v = homeaddr_netns_tests::service::control_call(
            &bed._topo.dir().join(sock),
            &homeaddr_control::Request::Status,
        )?;
        let io = &v["io"];
        let per = |a: &str, b: &str, k: &str| {
            let (x, y) = (
                io[k][a].as_f64().unwrap_or(0.0),
                io[k][b].as_f64().unwrap_or(0.0),
            );
            if y > 0.0 { x / y } else { 0.0 }
        };
        println!(
            "| {:<6} | {:>16.1} | {:>19} | {:>18.1} | {:>18.1} |",
            name,
            per("rx_packets", "rx_reads", "tun"),
            io["tun"]["tx_packets"],
            per("rx_datagrams", "rx_syscalls", "udp"),
            per("tx_datagrams", "tx_syscalls", "udp"),
        );
    }
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
        "targets (issue 3): route-optimized >= 50%, legacy via AP >= 55%, new conn/s via AP >= 65%, +RTT/hop <= 40 us"
    );
    Ok(())
}
