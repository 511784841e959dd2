//! The real thing, as root: two TUN devices in two fresh network namespaces,
//! joined by two `UdpTunnel`s on the loopback of a third namespace, with a
//! minimal forwarder per side. Traffic from one namespace's TUN address to
//! the other's crosses TUN -> UDP -> UDP -> TUN.
//!
//! Without root these tests skip with a loud message; with `CI=true` they
//! fail instead, so CI cannot pass without having run them.

use std::io::{self, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use homeaddr_io::{
    HEADROOM, TAILROOM, TunConfig, TunDevice, TunRecvBatch, TunSendBatch, UdpRecvBatch, UdpTunnel,
};

const ADDR_A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 1);
const ADDR_B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 2);
const INNER_MTU: u16 = 1400;
const DATA_HEADER: [u8; HEADROOM] = [0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const DATA_TAG: [u8; TAILROOM] = [0x5a; TAILROOM];
const TIMEOUT: Duration = Duration::from_secs(20);

/// True if the test may run; false (after a loud message) if it must skip.
/// Panics instead of skipping when `CI=true`.
fn may_run(test: &str, why_not: Option<String>) -> bool {
    let Some(why_not) = why_not else { return true };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: cannot run ({why_not}) but CI=true requires it: run the tests as root");
    }
    // Straight to the stderr handle: libtest captures `eprintln!` of passing
    // tests, and a skip must not pass unnoticed.
    let _ = writeln!(
        io::stderr(),
        "\n!!!!!!!! SKIPPED {test}: {why_not}. This test needs root \
         (network namespaces and TUN devices); run `cargo test -p homeaddr-io` as root. !!!!!!!!\n"
    );
    false
}

/// A network namespace kept alive by an open `/proc/.../ns/net` descriptor.
struct NetNs {
    fd: OwnedFd,
}

impl NetNs {
    /// A fresh namespace with its loopback up.
    fn new() -> io::Result<NetNs> {
        std::thread::spawn(|| {
            // SAFETY: unshare only changes this (short-lived) thread's namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            loopback_up()?;
            let file = std::fs::File::open("/proc/thread-self/ns/net")?;
            Ok(NetNs { fd: file.into() })
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// Runs `f` on a thread inside the namespace: sockets and devices it
    /// creates belong to the namespace.
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns only changes this scoped thread's namespace;
                // the descriptor is an open namespace file.
                let rc = unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
                f()
            })
            .join()
            .expect("thread in namespace panicked")
        })
    }
}

fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket + SIOC[GS]IFFLAGS ioctls on a zeroed ifreq whose
    // name is a NUL-terminated "lo"; the socket is closed before returning.
    unsafe {
        let sock = libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut rc = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        let err = io::Error::last_os_error();
        libc::close(sock);
        if rc == 0 { Ok(()) } else { Err(err) }
    }
}

/// Namespaces A and B, each with a TUN and a pump, tunnelled over the
/// loopback of a third.
struct Tunnelled {
    ns_a: NetNs,
    ns_b: NetNs,
    tun_a: Arc<TunDevice>,
    tun_b: Arc<TunDevice>,
    udp_a: Arc<UdpTunnel>,
    udp_b: Arc<UdpTunnel>,
    runtime: tokio::runtime::Runtime,
    _underlay: NetNs,
}

impl Tunnelled {
    fn new(offload: bool) -> Result<Tunnelled, String> {
        let underlay = NetNs::new().map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
        let ns_a = NetNs::new().map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
        let ns_b = NetNs::new().map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let handle = runtime.handle().clone();
        let (udp_a, udp_b) = underlay.run(|| {
            let _rt = handle.enter();
            let bind = || UdpTunnel::bind("[::1]:0".parse().unwrap()).expect("bind on ::1");
            (Arc::new(bind()), Arc::new(bind()))
        });
        let make_tun = |ns: &NetNs, addr| {
            ns.run(|| {
                let _rt = handle.enter();
                let config = TunConfig::new("hatest0", INNER_MTU)
                    .with_ipv6(addr, 64)
                    .with_offload(offload);
                TunDevice::create(&config).map(Arc::new)
            })
        };
        let tun_a = make_tun(&ns_a, ADDR_A).map_err(|e| e.to_string())?;
        let tun_b = make_tun(&ns_b, ADDR_B).map_err(|e| e.to_string())?;
        for (tun, udp, peer) in [
            (&tun_a, &udp_a, udp_b.local_addr()),
            (&tun_b, &udp_b, udp_a.local_addr()),
        ] {
            runtime.spawn(tun_to_udp(tun.clone(), udp.clone(), peer));
            runtime.spawn(udp_to_tun(tun.clone(), udp.clone()));
        }
        Ok(Tunnelled {
            ns_a,
            ns_b,
            tun_a,
            tun_b,
            udp_a,
            udp_b,
            runtime,
            _underlay: underlay,
        })
    }
}

impl Drop for Tunnelled {
    fn drop(&mut self) {
        // Stop the pumps before the devices and namespaces go.
        let runtime = std::mem::replace(
            &mut self.runtime,
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
        );
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

async fn tun_to_udp(tun: Arc<TunDevice>, udp: Arc<UdpTunnel>, peer: SocketAddr) -> io::Result<()> {
    let mut batch = TunRecvBatch::new(tun.mtu());
    loop {
        tun.recv_batch(&mut batch).await?;
        for mut p in batch.iter_mut() {
            p.header_mut().copy_from_slice(&DATA_HEADER);
            p.tag_mut().copy_from_slice(&DATA_TAG);
            *p.destination = Some(peer);
        }
        udp.send_batch(&mut batch).await?;
    }
}

async fn udp_to_tun(tun: Arc<TunDevice>, udp: Arc<UdpTunnel>) -> io::Result<()> {
    let mut rx = UdpRecvBatch::new(HEADROOM + usize::from(tun.mtu()) + TAILROOM);
    let mut tx = TunSendBatch::new();
    loop {
        udp.recv_batch(&mut rx).await?;
        for d in rx.iter_mut() {
            let Some((header, rest)) = d.data.split_first_chunk::<HEADROOM>() else {
                panic!("runt datagram from {}", d.from);
            };
            let Some((inner, tag)) = rest.split_last_chunk::<TAILROOM>() else {
                panic!("runt datagram from {}", d.from);
            };
            assert_eq!(*header, DATA_HEADER, "tunnel header changed in flight");
            assert_eq!(*tag, DATA_TAG, "tag changed in flight");
            if tx.is_full() {
                tun.send_batch(&mut tx).await?;
            }
            tx.push(inner).expect("packet fits");
        }
        tun.send_batch(&mut tx).await?;
    }
}

/// 64 datagrams of different sizes (the last at the largest size that fits
/// the inner MTU) from A to B, and each echoed back.
fn udp_batch_round_trip(t: &Tunnelled) {
    let sock_b = t
        .ns_b
        .run(|| UdpSocket::bind((ADDR_B, 7000)).expect("bind B"));
    let sock_a = t.ns_a.run(|| UdpSocket::bind((ADDR_A, 0)).expect("bind A"));
    for s in [&sock_a, &sock_b] {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
    }
    let max_payload = usize::from(INNER_MTU) - 40 - 8;
    let sent: Vec<Vec<u8>> = (0..64u8)
        .map(|i| {
            let len = if i == 63 {
                max_payload
            } else {
                20 + usize::from(i) * 19
            };
            (0..len).map(|j| i ^ (j as u8).wrapping_mul(31)).collect()
        })
        .collect();
    for d in &sent {
        sock_a.send_to(d, (ADDR_B, 7000)).expect("send from A");
    }
    let mut buf = [0u8; 2048];
    let mut got_b = Vec::new();
    for _ in 0..sent.len() {
        let (n, from) = sock_b
            .recv_from(&mut buf)
            .expect("datagram A -> B through the tunnel");
        assert_eq!(from, sock_a.local_addr().unwrap());
        got_b.push(buf[..n].to_vec());
        sock_b.send_to(&buf[..n], from).expect("echo from B");
    }
    let mut got_a = Vec::new();
    for _ in 0..sent.len() {
        let (n, _) = sock_a
            .recv_from(&mut buf)
            .expect("echo B -> A through the tunnel");
        got_a.push(buf[..n].to_vec());
    }
    let sorted = |mut v: Vec<Vec<u8>>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(got_b),
        sorted(sent.clone()),
        "A -> B payloads differ"
    );
    assert_eq!(sorted(got_a), sorted(sent), "B -> A payloads differ");
}

/// One TCP stream of `len` pseudo-random bytes from A to B; B checks length
/// and checksum.
fn tcp_stream(t: &Tunnelled, len: usize) {
    let listener = t
        .ns_b
        .run(|| TcpListener::bind((ADDR_B, 7001)).expect("listen B"));
    let receiver = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        let (mut total, mut sum) = (0usize, 0u64);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = conn.read(&mut buf).expect("read stream on B");
            if n == 0 {
                break;
            }
            sum = checksum(sum, total, &buf[..n]);
            total += n;
        }
        (total, sum)
    });
    let mut conn = t
        .ns_a
        .run(|| TcpStream::connect_timeout(&SocketAddr::from((ADDR_B, 7001)), TIMEOUT))
        .expect("connect A -> B through the tunnel");
    conn.set_write_timeout(Some(TIMEOUT)).unwrap();
    let mut sent_sum = 0u64;
    let mut chunk = vec![0u8; 1 << 16];
    let mut sent = 0usize;
    while sent < len {
        let n = chunk.len().min(len - sent);
        for (i, b) in chunk[..n].iter_mut().enumerate() {
            *b = pattern(sent + i);
        }
        conn.write_all(&chunk[..n]).expect("write stream on A");
        sent_sum = checksum(sent_sum, sent, &chunk[..n]);
        sent += n;
    }
    drop(conn);
    let (got, got_sum) = receiver.join().expect("receiver panicked");
    assert_eq!(got, len, "bytes received");
    assert_eq!(got_sum, sent_sum, "stream content differs");
}

fn pattern(i: usize) -> u8 {
    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

/// Position-dependent checksum, so reordered bytes are caught too.
fn checksum(mut sum: u64, offset: usize, data: &[u8]) -> u64 {
    for (i, &b) in data.iter().enumerate() {
        sum = sum.wrapping_add((u64::from(b) + 1).wrapping_mul(offset as u64 + i as u64 + 1));
    }
    sum
}

fn setup(test: &str, offload: bool) -> Option<Tunnelled> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !may_run(test, (euid != 0).then(|| format!("running as uid {euid}"))) {
        return None;
    }
    match Tunnelled::new(offload) {
        Ok(t) => Some(t),
        Err(e) => {
            may_run(test, Some(e));
            None
        }
    }
}

#[test]
fn offload_tunnel_carries_udp_batches_and_a_tcp_stream() {
    let Some(t) = setup("offload_tunnel_carries_udp_batches_and_a_tcp_stream", true) else {
        return;
    };
    eprintln!(
        "TUN offload: A {}, B {}; UDP GSO segments {}",
        t.tun_a.offload(),
        t.tun_b.offload(),
        t.udp_a.max_gso_segments()
    );
    udp_batch_round_trip(&t);
    tcp_stream(&t, 64 << 20);

    let (tun_a, udp_a) = (t.tun_a.counters().snapshot(), t.udp_a.counters().snapshot());
    let (tun_b, udp_b) = (t.tun_b.counters().snapshot(), t.udp_b.counters().snapshot());
    eprintln!("A: {tun_a:?}\n   {udp_a:?}\nB: {tun_b:?}\n   {udp_b:?}");
    assert_eq!(tun_a.rx_errors + tun_b.rx_errors, 0);
    assert_eq!(tun_a.tx_errors + tun_b.tx_errors, 0);
    assert_eq!(udp_a.tx_dropped + udp_b.tx_dropped, 0);
    assert_eq!(
        udp_a.tx_datagrams, udp_b.rx_datagrams,
        "UDP A -> B lost datagrams"
    );
    assert_eq!(
        udp_b.rx_datagrams, tun_b.tx_packets,
        "B wrote fewer packets than it received"
    );
    assert!(tun_a.rx_packets >= (64 << 20) / usize::from(INNER_MTU) as u64);
    if t.tun_a.offload() {
        // Offload: a TUN read carries many segments, a UDP send many datagrams.
        assert!(
            tun_a.rx_reads * 4 < tun_a.rx_packets,
            "TUN reads not batched: {tun_a:?}"
        );
        if t.udp_a.max_gso_segments() > 1 {
            assert!(
                udp_a.tx_syscalls * 4 < udp_a.tx_datagrams,
                "no GSO trains: {udp_a:?}"
            );
        }
    }
}

#[test]
fn plain_tunnel_carries_udp_batches_and_a_tcp_stream() {
    let Some(t) = setup("plain_tunnel_carries_udp_batches_and_a_tcp_stream", false) else {
        return;
    };
    assert!(!t.tun_a.offload());
    udp_batch_round_trip(&t);
    tcp_stream(&t, 16 << 20);
    let (tun_a, udp_a) = (t.tun_a.counters().snapshot(), t.udp_a.counters().snapshot());
    eprintln!("A: {tun_a:?}\n   {udp_a:?}");
    assert_eq!(
        tun_a.rx_reads, tun_a.rx_packets,
        "one packet per read without offload"
    );
    assert_eq!(udp_a.tx_dropped, 0);
}
