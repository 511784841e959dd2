//! A minimal IPv6-in-UDP forwarder on homeaddr-io, for `scripts/bench-io`.
//!
//! Everything read from the TUN goes to `--peer` as header | packet | tag:
//! a 16-byte data header (version 2, kind data, unsealed) and a zero
//! 16-byte tag; every datagram with that header received on `--bind` is
//! written to the TUN without header and tag. No engine, no checks beyond
//! the header.
//!
//! ```text
//! pump --tun ha0 --mtu 1420 --addr fd00:1::1/64 \
//!      --bind [fd00:ab::1]:4790 --peer [fd00:ab::2]:4790 \
//!      [--no-offload] [--gso-max-size N] [--threads 2]
//! ```
//!
//! Prints its settings at start and its counters on SIGINT/SIGTERM.

use std::net::{Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use homeaddr_io::{
    HEADROOM, TAILROOM, TunConfig, TunDevice, TunRecvBatch, TunSendBatch, UdpRecvBatch, UdpTunnel,
};

/// Version 2, kind 0 (data), no flags, no member id, session 0, counter 0:
/// docs/PROTOCOL.md sec. 1.
const DATA_HEADER: [u8; HEADROOM] = [0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

#[derive(Debug)]
struct Args {
    tun: String,
    mtu: u16,
    addrs: Vec<(Ipv6Addr, u8)>,
    bind: SocketAddr,
    peer: SocketAddr,
    offload: bool,
    gso_max_size: Option<u32>,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        tun: "pump0".into(),
        mtu: 1420,
        addrs: Vec::new(),
        bind: "[::]:4790".parse().expect("literal"),
        peer: "[::1]:4790".parse().expect("literal"),
        offload: true,
        gso_max_size: None,
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--tun" => args.tun = value()?,
            "--mtu" => args.mtu = value()?.parse().map_err(|e| format!("--mtu: {e}"))?,
            "--addr" => {
                let v = value()?;
                let (ip, len) = v
                    .split_once('/')
                    .ok_or(format!("--addr {v}: expected IPV6/PREFIX"))?;
                let ip = ip.parse().map_err(|e| format!("--addr {v}: {e}"))?;
                let len = len.parse().map_err(|e| format!("--addr {v}: {e}"))?;
                args.addrs.push((ip, len));
            }
            "--bind" => args.bind = value()?.parse().map_err(|e| format!("--bind: {e}"))?,
            "--peer" => args.peer = value()?.parse().map_err(|e| format!("--peer: {e}"))?,
            "--no-offload" => args.offload = false,
            "--gso-max-size" => {
                let v = value()?
                    .parse()
                    .map_err(|e| format!("--gso-max-size: {e}"))?;
                args.gso_max_size = Some(v);
            }
            "--threads" => {
                args.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?
            }
            "-h" | "--help" => {
                return Err(
                    "usage: pump --tun NAME --mtu N --addr IPV6/LEN --bind ADDR:PORT \
                            --peer ADDR:PORT [--no-offload] [--gso-max-size N] [--threads N]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pump: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = if args.threads > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let result = runtime
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pump: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mut config = TunConfig::new(&args.tun, args.mtu).with_offload(args.offload);
    for &(ip, len) in &args.addrs {
        config = config.with_ipv6(ip, len);
    }
    if let Some(size) = args.gso_max_size {
        config = config.with_gso_max_size(size);
    }
    let tun = Arc::new(TunDevice::create(&config).map_err(|e| e.to_string())?);
    let udp = Arc::new(UdpTunnel::bind(args.bind).map_err(|e| e.to_string())?);
    let (rcvbuf, sndbuf) = udp.buffer_sizes().map_err(|e| e.to_string())?;
    eprintln!(
        "pump: tun {} mtu {} offload {} | udp {} -> {} gso {} gro {} rcvbuf {rcvbuf} sndbuf {sndbuf}",
        tun.name(),
        tun.mtu(),
        tun.offload(),
        udp.local_addr(),
        args.peer,
        udp.max_gso_segments(),
        udp.gro_segments(),
    );
    let dropped = Arc::new(AtomicU64::new(0));

    let outbound = tokio::spawn(tun_to_udp(tun.clone(), udp.clone(), args.peer));
    let inbound = tokio::spawn(udp_to_tun(tun.clone(), udp.clone(), dropped.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let outcome = tokio::select! {
        r = outbound => format!("TUN -> UDP loop ended: {r:?}"),
        r = inbound => format!("UDP -> TUN loop ended: {r:?}"),
        _ = tokio::signal::ctrl_c() => String::new(),
        _ = term.recv() => String::new(),
    };
    eprintln!("pump: tun {:?}", tun.counters().snapshot());
    eprintln!("pump: udp {:?}", udp.counters().snapshot());
    eprintln!(
        "pump: datagrams dropped (no data header): {}",
        dropped.load(Ordering::Relaxed)
    );
    if outcome.is_empty() {
        Ok(())
    } else {
        Err(outcome)
    }
}

/// TUN -> UDP: every packet to the peer, sent from the TUN buffer in place.
async fn tun_to_udp(
    tun: Arc<TunDevice>,
    udp: Arc<UdpTunnel>,
    peer: SocketAddr,
) -> std::io::Result<()> {
    let mut batch = TunRecvBatch::new(tun.mtu());
    loop {
        tun.recv_batch(&mut batch).await?;
        for mut p in batch.iter_mut() {
            p.header_mut().copy_from_slice(&DATA_HEADER);
            p.tag_mut().fill(0);
            *p.destination = Some(peer);
        }
        udp.send_batch(&mut batch).await?;
    }
}

/// UDP -> TUN: inner packets copied into the TUN batch, flushed when full
/// and after every receive batch.
async fn udp_to_tun(
    tun: Arc<TunDevice>,
    udp: Arc<UdpTunnel>,
    dropped: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut rx = UdpRecvBatch::new(HEADROOM + usize::from(tun.mtu()) + TAILROOM);
    let mut tx = TunSendBatch::new();
    loop {
        udp.recv_batch(&mut rx).await?;
        for d in rx.iter_mut() {
            let framed = d
                .data
                .split_first_chunk::<HEADROOM>()
                .and_then(|(header, rest)| Some((header, rest.split_last_chunk::<TAILROOM>()?.0)));
            let inner = match framed {
                Some((header, inner)) if *header == DATA_HEADER && !inner.is_empty() => inner,
                _ => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            if tx.is_full() {
                tun.send_batch(&mut tx).await?;
            }
            if tx.push(inner).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        tun.send_batch(&mut tx).await?;
    }
}
