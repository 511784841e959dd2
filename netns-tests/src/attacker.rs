//! An off-path attacker on the underlay, for the attack tests of issue 9.
//!
//! The attacker is one more host on the WAN emulator ([`crate::service::Service::add_attacker`]):
//! the emulator delivers to it only what is addressed to its own address
//! or its own /64 ([`ATTACKER_PREFIX`]), so it never sees the victims'
//! traffic; it can only send. What it sends:
//!
//! - [`Injector`]: any UDP datagram with any (spoofed) IPv6 source address
//!   and port, through a raw socket (`AF_INET6`, `SOCK_RAW`, `IPPROTO_RAW`,
//!   so the kernel takes our IPv6 header as is); the UDP checksum is
//!   computed ([`udp_packet`]). The WAN emulator routes by destination
//!   only, like an underlay without source filtering.
//! - [`Attacker::udp`]: a normal UDP socket on its own address, for
//!   non-spoofed probes, with [`recv_timeout`] / [`answers_within`] to show
//!   that nothing answers.
//! - [`Capture`]: an `AF_PACKET` socket on an interface inside some
//!   namespace. On a victim's interface it stands for the attacker that was
//!   on-path once ("captured once", docs/PROTOCOL.md section 0); on the attacker's
//!   own `wan0` it receives what comes back to any address of its /64.
//!
//! Frames are built from `homeaddr_proto::wire` types ([`frame`],
//! [`control_frame`], [`data_frame`]), so they follow the wire version.

use std::io;
use std::mem;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use homeaddr_proto::engine::shim::{Shim, ShimConfig};
use homeaddr_proto::engine::{DataAction, Engine, TunPacket};
use homeaddr_proto::wire::{FRAME_HEADER_LEN, MemberId, MobilityMessage, TAG_LEN, TunnelHeader};
use ipnet::Ipv6Net;

use crate::topology::Netns;

/// The attacker's own /64 (inside [`crate::topology::ULA_PREFIX`]); the
/// WAN emulator routes all of it to the attacker.
pub const ATTACKER_PREFIX: &str = "fd00:4841:bad::/64";

/// `n`-th address of the attacker's /64 (`n` = 0 is the prefix itself:
/// use 1 and up).
pub fn attacker_addr(n: u32) -> Ipv6Addr {
    let net: Ipv6Net = ATTACKER_PREFIX.parse().expect("valid constant");
    let base = u128::from(net.network());
    Ipv6Addr::from(base | u128::from(n))
}

/// The attacker host: a namespace on the WAN with its own address.
#[derive(Debug, Clone)]
pub struct Attacker {
    /// Its namespace.
    pub ns: Netns,
    /// Its WAN address (inside [`ATTACKER_PREFIX`]).
    pub addr: Ipv6Addr,
    /// Its /64.
    pub prefix: Ipv6Net,
}

impl Attacker {
    /// A raw-socket injector inside the attacker's namespace.
    pub fn injector(&self) -> io::Result<Injector> {
        self.ns.enter(Injector::new).map_err(io::Error::other)?
    }

    /// A normal UDP socket on the attacker's own address and `port`
    /// (0: any), created inside its namespace.
    pub fn udp(&self, port: u16) -> io::Result<UdpSocket> {
        let bind = SocketAddr::new(self.addr.into(), port);
        self.ns
            .enter(move || UdpSocket::bind(bind))
            .map_err(io::Error::other)?
    }

    /// A capture of what reaches the attacker's `wan0` (its address and
    /// its whole /64).
    pub fn capture(&self) -> io::Result<Capture> {
        Capture::open(&self.ns, "wan0")
    }

    /// The attacker's endpoint at `port`.
    pub fn endpoint(&self, port: u16) -> SocketAddrV6 {
        SocketAddrV6::new(self.addr, port, 0, 0)
    }
}

/// `addr:port` as a [`SocketAddrV6`]; panics on IPv4 (the tests are IPv6 only).
pub fn v6(addr: SocketAddr) -> SocketAddrV6 {
    match addr {
        SocketAddr::V6(a) => a,
        SocketAddr::V4(a) => panic!("the attack tests use IPv6 only, got {a}"),
    }
}

// ---------------------------------------------------------------------------
// Frames.

/// A tunnel frame: `header` then `payload` (the header's length is the
/// wire version's).
pub fn frame(header: TunnelHeader, payload: &[u8]) -> Vec<u8> {
    let mut f = header.to_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// A control frame carrying `message`, Member ID `member`.
pub fn control_frame(member: Option<u16>, message: &MobilityMessage) -> Vec<u8> {
    frame(
        TunnelHeader::control(member.map(MemberId)),
        &message.to_bytes(),
    )
}

/// A data frame carrying the inner IPv6 packet `inner`, Member ID `member`.
pub fn data_frame(member: Option<u16>, inner: &[u8]) -> Vec<u8> {
    frame(TunnelHeader::data(member.map(MemberId)), inner)
}

/// An inner IPv6/UDP packet with a correct checksum.
pub fn inner_udp(src: SocketAddrV6, dst: SocketAddrV6, payload: &[u8]) -> Vec<u8> {
    udp_packet(src, dst, payload)
}

/// An inner IPv6/TCP segment with only the SYN flag (no options), checksum
/// correct: the first packet of a connection.
pub fn inner_tcp_syn(src: SocketAddrV6, dst: SocketAddrV6, seq: u32) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&src.port().to_be_bytes());
    tcp.extend_from_slice(&dst.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&0u32.to_be_bytes());
    tcp.extend_from_slice(&[0x50, 0x02]); // data offset 5, SYN
    tcp.extend_from_slice(&65535u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
    let sum = checksum(src.ip(), dst.ip(), 6, &tcp);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    ipv6_packet(*src.ip(), *dst.ip(), 6, &tcp)
}

/// An IPv6 packet from `src` to `dst` with next header `proto`.
pub fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("payload fits an IPv6 packet");
    let mut p = Vec::with_capacity(40 + payload.len());
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[proto, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// An IPv6/UDP packet from `src` to `dst` with a correct UDP checksum.
pub fn udp_packet(src: SocketAddrV6, dst: SocketAddrV6, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("payload fits a UDP datagram");
    let mut udp = Vec::with_capacity(8 + payload.len());
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let sum = match checksum(src.ip(), dst.ip(), 17, &udp) {
        0 => 0xffff, // RFC 8200 8.1: a computed 0 is sent as 0xffff
        s => s,
    };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    ipv6_packet(*src.ip(), *dst.ip(), 17, &udp)
}

/// The Internet checksum of `upper` (a UDP or TCP header and payload, its
/// checksum field 0) with the IPv6 pseudo-header (RFC 8200 8.1).
pub fn checksum(src: &Ipv6Addr, dst: &Ipv6Addr, proto: u8, upper: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            let word = if chunk.len() == 2 {
                u16::from_be_bytes([chunk[0], chunk[1]])
            } else {
                u16::from_be_bytes([chunk[0], 0])
            };
            sum += u64::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(upper.len() as u32).to_be_bytes());
    add(&[0, 0, 0, proto]);
    add(upper);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

// ---------------------------------------------------------------------------
// Injector.

/// Sends IPv6/UDP datagrams with any source address and port.
///
/// Created inside a namespace (see [`Attacker::injector`]); usable from any
/// thread afterwards.
#[derive(Debug)]
pub struct Injector {
    fd: OwnedFd,
}

impl Injector {
    /// A raw IPv6 socket in the current namespace (needs CAP_NET_RAW).
    pub fn new() -> io::Result<Injector> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh socket we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // IPPROTO_RAW implies IPV6_HDRINCL on Linux; set it anyway.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IPV6,
                IPV6_HDRINCL,
                (&one as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let buf: libc::c_int = 4 << 20;
        // SAFETY: as above. A failure only means a smaller send buffer.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&buf as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Ok(Injector { fd })
    }

    /// Sends one whole IPv6 packet (its header included) to its destination.
    pub fn send_packet(&self, packet: &[u8]) -> io::Result<()> {
        if packet.len() < 40 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shorter than an IPv6 header",
            ));
        }
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&packet[24..40]);
        // SAFETY: an all-zero sockaddr_in6 is valid.
        let mut sa: libc::sockaddr_in6 = unsafe { mem::zeroed() };
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_addr.s6_addr = dst;
        loop {
            // SAFETY: sendto with a valid buffer and sockaddr_in6.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            };
            if rc >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            // A full send buffer: wait for it to drain (floods).
            if err.raw_os_error() == Some(libc::ENOBUFS) || err.kind() == io::ErrorKind::WouldBlock
            {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            return Err(err);
        }
    }

    /// Sends `payload` as one UDP datagram from `from` (any address and
    /// port: spoofed) to `to`.
    pub fn send(&self, from: SocketAddrV6, to: SocketAddrV6, payload: &[u8]) -> io::Result<()> {
        self.send_packet(&udp_packet(from, to, payload))
    }
}

/// `IPV6_HDRINCL` (linux/in6.h; not in every libc version).
const IPV6_HDRINCL: libc::c_int = 36;

// ---------------------------------------------------------------------------
// Receiving.

/// One datagram from `socket` within `timeout`, `None` if none came.
pub fn recv_timeout(
    socket: &UdpSocket,
    timeout: Duration,
) -> io::Result<Option<(Vec<u8>, SocketAddr)>> {
    socket.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    let mut buf = vec![0u8; 65536];
    match socket.recv_from(&mut buf) {
        Ok((n, from)) => {
            buf.truncate(n);
            Ok(Some((buf, from)))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Every datagram `socket` receives until `quiet` passes without one or
/// `limit` passes in all.
pub fn answers_within(
    socket: &UdpSocket,
    quiet: Duration,
    limit: Duration,
) -> io::Result<Vec<(Vec<u8>, SocketAddr)>> {
    let end = Instant::now() + limit;
    let mut out = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(out);
        }
        match recv_timeout(socket, quiet.min(left))? {
            Some(d) => out.push(d),
            None => return Ok(out),
        }
    }
}

// ---------------------------------------------------------------------------
// Capture.

/// A UDP datagram seen by a [`Capture`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Its source.
    pub src: SocketAddrV6,
    /// Its destination.
    pub dst: SocketAddrV6,
    /// The UDP payload (a tunnel frame for tunnel traffic).
    pub payload: Vec<u8>,
    /// Whether the captured host sent it (rather than received it).
    pub outgoing: bool,
}

/// An `AF_PACKET` capture of every packet an interface of one namespace
/// sends or receives.
#[derive(Debug)]
pub struct Capture {
    fd: OwnedFd,
}

const ETH_P_ALL: u16 = 0x0003;

impl Capture {
    /// Captures on `ifname` in `ns` (e.g. a victim's `wan0`).
    pub fn open(ns: &Netns, ifname: &str) -> io::Result<Capture> {
        let name = std::ffi::CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name"))?;
        ns.enter(move || -> io::Result<Capture> {
            // SAFETY: if_nametoindex with a NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if index == 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: plain socket(2); checked.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_DGRAM,
                    i32::from(ETH_P_ALL.to_be()),
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fresh socket we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: an all-zero sockaddr_ll is valid.
            let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = ETH_P_ALL.to_be();
            sll.sll_ifindex = index as i32;
            // SAFETY: bind with a valid sockaddr_ll.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            let buf: libc::c_int = 8 << 20;
            // SAFETY: setsockopt with a c_int; failure = smaller buffer.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&buf as *const libc::c_int).cast(),
                    mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            Ok(Capture { fd })
        })
        .map_err(io::Error::other)?
    }

    /// The next UDP datagram within `timeout` (non-UDP packets are skipped).
    pub fn next_udp(&self, timeout: Duration) -> io::Result<Option<Captured>> {
        let end = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let tv = libc::timeval {
                tv_sec: left.as_secs() as libc::time_t,
                tv_usec: left.subsec_micros().max(1) as libc::suseconds_t,
            };
            // SAFETY: setsockopt with a timeval.
            unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    mem::size_of::<libc::timeval>() as libc::socklen_t,
                );
            }
            // SAFETY: an all-zero sockaddr_ll is valid.
            let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
            let mut len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: recvfrom into our buffer and sockaddr_ll.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) {
                    continue;
                }
                return Err(err);
            }
            let outgoing = sll.sll_pkttype == libc::PACKET_OUTGOING;
            if let Some(mut c) = parse_udp(&buf[..n as usize]) {
                c.outgoing = outgoing;
                return Ok(Some(c));
            }
        }
    }

    /// The first captured UDP datagram within `timeout` for which `pick`
    /// holds.
    pub fn find(
        &self,
        timeout: Duration,
        mut pick: impl FnMut(&Captured) -> bool,
    ) -> io::Result<Option<Captured>> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.next_udp(left)? {
                Some(c) if pick(&c) => return Ok(Some(c)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }
}

/// An IPv6 packet whose next header is UDP, as a [`Captured`] (`outgoing`
/// false); `None` for anything else.
pub fn parse_udp(p: &[u8]) -> Option<Captured> {
    if p.len() < 48 || p[0] >> 4 != 6 || p[6] != 17 {
        return None;
    }
    let addr = |r: std::ops::Range<usize>| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&p[r]);
        Ipv6Addr::from(a)
    };
    let port = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
    let udp_len = usize::from(port(44));
    let end = (40 + udp_len).min(p.len());
    Some(Captured {
        src: SocketAddrV6::new(addr(8..24), port(40), 0, 0),
        dst: SocketAddrV6::new(addr(24..40), port(42), 0, 0),
        payload: p.get(48..end)?.to_vec(),
        outgoing: false,
    })
}

// ---------------------------------------------------------------------------
// A crowd of fake shim clients.

/// Many shim clients at once, one per address of the attacker's own /64:
/// each is a real sans-IO shim engine (`homeaddr_proto::engine::shim`), so
/// it completes whatever handshake the wire version asks of a new shim
/// (v1: none; v2: the Shim Hello cookie round trip) and answers return
/// routability, exactly as an honest shim would, at flood rate. Its
/// datagrams leave through an [`Injector`] from its own address; what comes
/// back to the /64 is read from a [`Capture`] on the attacker's `wan0`.
pub struct ShimCrowd {
    engines: HashMap<Ipv6Addr, Shim>,
    port: u16,
}

impl std::fmt::Debug for ShimCrowd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShimCrowd")
            .field("clients", &self.engines.len())
            .field("port", &self.port)
            .finish()
    }
}

/// What a [`ShimCrowd`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrowdReport {
    /// Datagrams it sent.
    pub sent: u64,
    /// Datagrams it received (and fed to its engines).
    pub received: u64,
}

impl ShimCrowd {
    /// A shim engine for each of `addrs`, tunnel port `port`, using the AP
    /// at `access_point` for the home address `home_address`.
    pub fn new(
        now: Instant,
        access_point: SocketAddr,
        home_address: Ipv6Addr,
        addrs: impl IntoIterator<Item = Ipv6Addr>,
        port: u16,
    ) -> ShimCrowd {
        let engines = addrs
            .into_iter()
            .enumerate()
            .map(|(i, addr)| {
                let mut seed = [0x5au8; 32];
                seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
                let local = SocketAddr::new(addr.into(), port);
                let mut config = ShimConfig::new(access_point, home_address, local, seed);
                config.max_flows = 16;
                (addr, Shim::new(now, config))
            })
            .collect();
        ShimCrowd { engines, port }
    }

    /// How many clients.
    pub fn len(&self) -> usize {
        self.engines.len()
    }

    /// Whether it has no client.
    pub fn is_empty(&self) -> bool {
        self.engines.is_empty()
    }

    /// Every client's application opens a TCP connection to
    /// `[home address]:service_port` (its SYN enters its engine as from the
    /// TUN); sends what the engines want sent. `pace` runs after each
    /// client (the caller's rate limit).
    pub fn connect_all(
        &mut self,
        now: Instant,
        inj: &Injector,
        service_port: u16,
        mut pace: impl FnMut(u64),
    ) -> io::Result<CrowdReport> {
        let mut report = CrowdReport::default();
        for (i, (addr, engine)) in self.engines.iter_mut().enumerate() {
            let local = SocketAddrV6::new(*addr, self.port, 0, 0);
            let hoa = SocketAddrV6::new(engine.config().home_address, service_port, 0, 0);
            let app = SocketAddrV6::new(*addr, 40000, 0, 0);
            let syn = inner_tcp_syn(app, hoa, i as u32);
            // header room | packet | tag room, as the daemon's TUN batch.
            let mut buf = vec![0u8; FRAME_HEADER_LEN];
            buf.extend_from_slice(&syn);
            buf.extend_from_slice(&[0u8; TAG_LEN]);
            let pkt = TunPacket::new(&mut buf).expect("header and tag room");
            // Before its AP session is up a shim drops the SYN (no_session);
            // the Hello it sent at creation goes out in `flush` below.
            if let DataAction::Send { to } = engine.handle_tun(now, pkt) {
                inj.send(local, v6(to), &buf)?;
                report.sent += 1;
            }
            report.sent += flush(engine, local, inj)?;
            pace(report.sent);
        }
        Ok(report)
    }

    /// Feeds every datagram `capture` sees for a client to its engine, runs
    /// the engines' timers and sends their answers, until `stop` holds.
    pub fn pump(
        &mut self,
        inj: &Injector,
        capture: &Capture,
        mut stop: impl FnMut() -> bool,
    ) -> io::Result<CrowdReport> {
        let mut report = CrowdReport::default();
        let mut next_timers = Instant::now();
        while !stop() {
            if let Some(c) = capture.next_udp(Duration::from_millis(20))? {
                if c.outgoing || c.dst.port() != self.port {
                    continue;
                }
                if let Some(engine) = self.engines.get_mut(c.dst.ip()) {
                    report.received += 1;
                    let mut payload = c.payload;
                    let _ = engine.handle_udp(Instant::now(), SocketAddr::V6(c.src), &mut payload);
                    while engine.poll_tun().is_some() {}
                    report.sent += flush(engine, c.dst, inj)?;
                }
            }
            let now = Instant::now();
            if now >= next_timers {
                for (addr, engine) in &mut self.engines {
                    if engine.poll_timeout().is_some_and(|t| t <= now) {
                        engine.handle_timeout(now);
                        let local = SocketAddrV6::new(*addr, self.port, 0, 0);
                        report.sent += flush(engine, local, inj)?;
                    }
                }
                next_timers = now + Duration::from_millis(100);
            }
        }
        Ok(report)
    }
}

/// Sends everything `engine` wants sent, from `local`.
fn flush(engine: &mut Shim, local: SocketAddrV6, inj: &Injector) -> io::Result<u64> {
    let mut n = 0;
    while let Some(t) = engine.poll_transmit() {
        inj.send(local, v6(t.to), &t.payload)?;
        n += 1;
    }
    while engine.poll_event().is_some() {}
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_checksum_verifies() {
        let src = SocketAddrV6::new("fd00:4841:bad::1".parse().unwrap(), 1234, 0, 0);
        let dst = SocketAddrV6::new("fd00:4841:ffff::1".parse().unwrap(), 4790, 0, 0);
        let p = udp_packet(src, dst, b"hello");
        // Summing a datagram with its checksum in place gives 0.
        assert_eq!(checksum(src.ip(), dst.ip(), 17, &p[40..]), 0);
        let c = parse_udp(&p).unwrap();
        assert_eq!(
            (c.src, c.dst, c.payload.as_slice()),
            (src, dst, &b"hello"[..])
        );
    }

    #[test]
    fn tcp_syn_checksum_verifies() {
        let src = SocketAddrV6::new("fd00:4841:bad::1".parse().unwrap(), 1234, 0, 0);
        let dst = SocketAddrV6::new("fd00:4841:aaaa::1".parse().unwrap(), 8080, 0, 0);
        let p = inner_tcp_syn(src, dst, 7);
        assert_eq!(checksum(src.ip(), dst.ip(), 6, &p[40..]), 0);
    }

    #[test]
    fn attacker_addresses_are_in_its_prefix() {
        let net: Ipv6Net = ATTACKER_PREFIX.parse().unwrap();
        assert!(net.contains(&attacker_addr(1)));
        assert!(net.contains(&attacker_addr(70_000)));
        assert_eq!(attacker_addr(1).to_string(), "fd00:4841:bad::1");
    }
}
