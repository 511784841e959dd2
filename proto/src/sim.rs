//! A deterministic multi-node simulator for the three engines.
//!
//! Layer: test harness on top of the engines (no sockets, no clock: the
//! only `Instant` read is the anchor of virtual time). One access point,
//! any number of members (each with a tiny TCP-like echo application
//! bound to the HoA), shim clients and legacy clients (each with a
//! request/response application), joined by links with a one-way latency
//! per node pair, seeded loss and jitter (jitter reorders). A whole
//! handoff runs in milliseconds of real time.
//!
//! The applications speak just enough TCP for the engines to see what
//! they care about: a SYN opens a flow at a member, each request is one
//! data segment answered by one segment naming the member that served
//! it, a segment for a flow a member does not know is answered by a RST
//! (as a kernel would), and a client retransmits what is not answered.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use crate::engine::ap::{AccessPoint, ApConfig, ApEvent, MemberKey};
use crate::engine::member::{Member, MemberConfig, MemberEvent};
use crate::engine::shim::{Shim, ShimConfig, ShimEvent};
use crate::engine::{DataAction, Engine};
use crate::wire::inner::{self, FlowKey};
use crate::wire::{MemberId, TUNNEL_HEADER_LEN};

/// The UDP port of the AP and of members in the simulation.
pub const TUNNEL_PORT: u16 = 4790;
/// The UDP port of shims in the simulation.
pub const SHIM_PORT: u16 = 40000;
/// The port the member applications listen on.
pub const SERVICE_PORT: u16 = 80;
/// The registration key of the simulated service.
pub const KEY: &[u8] = b"homeaddr simulation shared key!!";

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

/// Index of a node in the simulation.
pub type NodeId = usize;

/// xorshift64*: small, seeded, good enough for loss and jitter.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator from a seed (0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// 32 random bytes (engine seeds).
    pub fn seed(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        for chunk in s.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_be_bytes());
        }
        s
    }
}

/// Build an IPv6 + TCP segment with a correct checksum.
pub fn tcp_segment(
    src: SocketAddrV6,
    dst: SocketAddrV6,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let tcp_len = 20 + payload.len();
    let mut p = vec![0u8; 40 + tcp_len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    p[6] = 6;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.ip().octets());
    p[24..40].copy_from_slice(&dst.ip().octets());
    let t = &mut p[40..];
    t[0..2].copy_from_slice(&src.port().to_be_bytes());
    t[2..4].copy_from_slice(&dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t[20..].copy_from_slice(payload);
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
        }
    };
    add(&src.ip().octets());
    add(&dst.ip().octets());
    add(&(tcp_len as u32).to_be_bytes());
    add(&[0, 0, 0, 6]);
    add(&p[40..]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[40 + 16..40 + 18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p
}

struct Segment {
    src: SocketAddrV6,
    dst: SocketAddrV6,
    flags: u8,
    seq: u32,
    payload: Vec<u8>,
}

fn parse_segment(p: &[u8]) -> Option<Segment> {
    if p.len() < 60 || p[0] >> 4 != 6 || p[6] != 6 {
        return None;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).ok()?);
    let t = &p[40..];
    let off = ((t[12] >> 4) as usize) * 4;
    Some(Segment {
        src: SocketAddrV6::new(src, u16::from_be_bytes([t[0], t[1]]), 0, 0),
        dst: SocketAddrV6::new(dst, u16::from_be_bytes([t[2], t[3]]), 0, 0),
        flags: t[13],
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        payload: t.get(off..)?.to_vec(),
    })
}

/// The service on a member: answers SYNs and requests, resets unknown flows.
#[derive(Debug, Default)]
pub struct MemberApp {
    /// Flows this member holds state for.
    pub flows: BTreeSet<FlowKey>,
    /// Requests answered (duplicates included).
    pub requests: u64,
    /// Requests seen more than once (client retransmissions).
    pub duplicate_requests: u64,
    /// Resets sent for segments of unknown flows.
    pub resets_sent: u64,
    /// Packets that are not TCP segments (e.g. fragments), as received.
    pub other: Vec<Vec<u8>>,
    seen: HashSet<(FlowKey, u32)>,
}

impl MemberApp {
    fn receive(&mut self, id: MemberId, packet: &[u8]) -> Option<Vec<u8>> {
        let Some(s) = parse_segment(packet) else {
            self.other.push(packet.to_vec());
            return None;
        };
        let flow = FlowKey {
            src: *s.src.ip(),
            dst: *s.dst.ip(),
            proto: 6,
            src_port: s.src.port(),
            dst_port: s.dst.port(),
        };
        if s.flags & TCP_RST != 0 {
            self.flows.remove(&flow);
            return None;
        }
        if s.flags & TCP_SYN != 0 {
            self.flows.insert(flow);
            return Some(tcp_segment(
                s.dst,
                s.src,
                TCP_SYN | TCP_ACK,
                0,
                s.seq.wrapping_add(1),
                &[],
            ));
        }
        if !self.flows.contains(&flow) {
            self.resets_sent += 1;
            return Some(tcp_segment(s.dst, s.src, TCP_RST, 0, 0, &[]));
        }
        if s.flags & TCP_FIN != 0 {
            self.flows.remove(&flow);
            return Some(tcp_segment(s.dst, s.src, TCP_FIN | TCP_ACK, 0, s.seq, &[]));
        }
        if s.payload.len() < 4 {
            return None;
        }
        let request = u32::from_be_bytes([s.payload[0], s.payload[1], s.payload[2], s.payload[3]]);
        self.requests += 1;
        if !self.seen.insert((flow, request)) {
            self.duplicate_requests += 1;
        }
        let mut answer = request.to_be_bytes().to_vec();
        answer.extend_from_slice(&id.0.to_be_bytes());
        Some(tcp_segment(
            s.dst,
            s.src,
            TCP_ACK | TCP_PSH,
            request,
            s.seq,
            &answer,
        ))
    }
}

/// Where a client session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// SYN sent.
    Connecting,
    /// Requests in progress.
    Open,
    /// All requests answered.
    Done,
    /// The connection was reset.
    Reset,
}

/// One answered request.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord {
    /// Request number.
    pub id: u32,
    /// When the request was first sent.
    pub sent: Instant,
    /// From first send to answer.
    pub rtt: Duration,
    /// The member that answered.
    pub member: MemberId,
    /// It had to be sent more than once.
    pub retransmitted: bool,
}

/// One TCP-like connection of a client application.
#[derive(Debug, Clone)]
pub struct Session {
    /// Local port (identifies the flow).
    pub port: u16,
    /// State.
    pub state: SessionState,
    /// Requests to make.
    pub total: u32,
    /// Gap between an answer and the next request.
    pub interval: Duration,
    /// Answered requests, in order.
    pub records: Vec<RequestRecord>,
    /// Answers that arrived twice.
    pub duplicate_answers: u64,
    /// Retransmissions (SYN or request).
    pub retransmissions: u64,
    /// When the session started.
    pub started: Instant,
    /// When the SYN was answered.
    pub connected: Option<Instant>,
    next: u32,
    outstanding: Option<(u32, Instant, Instant, Duration)>,
    next_send: Instant,
    answered: HashSet<u32>,
}

impl Session {
    /// Members that answered.
    pub fn members(&self) -> BTreeSet<MemberId> {
        self.records.iter().map(|r| r.member).collect()
    }

    /// RTT of the first and of the last answered request.
    pub fn first_last_rtt(&self) -> Option<(Duration, Duration)> {
        Some((self.records.first()?.rtt, self.records.last()?.rtt))
    }
}

const INITIAL_RTO: Duration = Duration::from_millis(300);

/// The request/response application on a client.
#[derive(Debug)]
pub struct ClientApp {
    addr: Ipv6Addr,
    hoa: Ipv6Addr,
    /// Sessions, by start order.
    pub sessions: Vec<Session>,
    next_port: u16,
}

impl ClientApp {
    fn new(addr: Ipv6Addr, hoa: Ipv6Addr) -> Self {
        Self {
            addr,
            hoa,
            sessions: Vec::new(),
            next_port: 10000,
        }
    }

    fn start(&mut self, now: Instant, total: u32, interval: Duration) -> usize {
        let port = self.next_port;
        self.next_port += 1;
        self.sessions.push(Session {
            port,
            state: SessionState::Connecting,
            total,
            interval,
            records: Vec::new(),
            duplicate_answers: 0,
            retransmissions: 0,
            started: now,
            connected: None,
            next: 0,
            outstanding: None,
            next_send: now,
            answered: HashSet::new(),
        });
        self.sessions.len() - 1
    }

    fn next_tick(&self) -> Option<Instant> {
        self.sessions
            .iter()
            .filter(|s| matches!(s.state, SessionState::Connecting | SessionState::Open))
            .map(|s| match s.outstanding {
                Some((_, _, last, rto)) => last + rto,
                None => s.next_send,
            })
            .min()
    }

    fn tick(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for s in self.sessions.iter_mut() {
            let src = SocketAddrV6::new(self.addr, s.port, 0, 0);
            let dst = SocketAddrV6::new(self.hoa, SERVICE_PORT, 0, 0);
            let ack = s.records.len() as u32;
            match (s.state, s.outstanding) {
                (SessionState::Connecting | SessionState::Open, Some((id, first, last, rto)))
                    if last + rto <= now =>
                {
                    s.retransmissions += 1;
                    s.outstanding = Some((id, first, now, (rto * 2).min(Duration::from_secs(4))));
                    out.push(Self::segment(src, dst, s.state, id, ack));
                }
                (SessionState::Connecting, None) if s.next_send <= now => {
                    s.outstanding = Some((u32::MAX, now, now, INITIAL_RTO));
                    out.push(Self::segment(src, dst, s.state, u32::MAX, ack));
                }
                (SessionState::Open, None) if s.next_send <= now => {
                    if s.next >= s.total {
                        s.state = SessionState::Done;
                        out.push(tcp_segment(src, dst, TCP_FIN | TCP_ACK, s.next, ack, &[]));
                        continue;
                    }
                    let id = s.next;
                    s.next += 1;
                    s.outstanding = Some((id, now, now, INITIAL_RTO));
                    out.push(Self::segment(src, dst, s.state, id, ack));
                }
                _ => {}
            }
        }
        out
    }

    fn segment(
        src: SocketAddrV6,
        dst: SocketAddrV6,
        state: SessionState,
        id: u32,
        ack: u32,
    ) -> Vec<u8> {
        match state {
            SessionState::Connecting => tcp_segment(src, dst, TCP_SYN, 0, 0, &[]),
            _ => tcp_segment(src, dst, TCP_ACK | TCP_PSH, id, ack, &id.to_be_bytes()),
        }
    }

    fn receive(&mut self, now: Instant, packet: &[u8]) {
        let Some(seg) = parse_segment(packet) else {
            return;
        };
        let Some(s) = self.sessions.iter_mut().find(|s| s.port == seg.dst.port()) else {
            return;
        };
        if seg.flags & TCP_RST != 0 {
            if matches!(s.state, SessionState::Connecting | SessionState::Open) {
                s.state = SessionState::Reset;
            }
            return;
        }
        if seg.flags & TCP_SYN != 0 {
            if s.state == SessionState::Connecting {
                s.state = SessionState::Open;
                s.connected = Some(now);
                s.outstanding = None;
                s.next_send = now;
            }
            return;
        }
        if seg.payload.len() < 6 {
            return;
        }
        let id = u32::from_be_bytes([
            seg.payload[0],
            seg.payload[1],
            seg.payload[2],
            seg.payload[3],
        ]);
        let member = MemberId(u16::from_be_bytes([seg.payload[4], seg.payload[5]]));
        if !s.answered.insert(id) {
            s.duplicate_answers += 1;
            return;
        }
        if let Some((out, first, last, _)) = s.outstanding
            && out == id
        {
            s.records.push(RequestRecord {
                id,
                sent: first,
                rtt: now - first,
                member,
                retransmitted: last != first,
            });
            s.outstanding = None;
            s.next_send = now + s.interval;
        }
    }
}

/// What runs on a node.
#[derive(Debug)]
pub enum NodeKind {
    /// The access point.
    AccessPoint(Box<AccessPoint>),
    /// A member with its service.
    Member(Box<Member>, MemberApp),
    /// A client with a shim.
    Shim(Box<Shim>, ClientApp),
    /// A client without a shim.
    Legacy(ClientApp),
    /// A host that only injects crafted datagrams.
    Attacker,
}

/// A simulated host.
#[derive(Debug)]
pub struct Node {
    /// Name for logs.
    pub name: String,
    /// Underlay address.
    pub addr: Ipv6Addr,
    /// Tunnel port.
    pub port: u16,
    /// Role.
    pub kind: NodeKind,
    /// A killed node receives nothing and runs no timers.
    pub alive: bool,
}

impl Node {
    /// Its tunnel endpoint.
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(self.addr), self.port)
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Delivery {
    Udp {
        to: NodeId,
        from: SocketAddr,
        payload: Vec<u8>,
    },
    Native {
        to: NodeId,
        packet: Vec<u8>,
    },
}

/// A timestamped event of any engine, for assertions and printing.
#[derive(Debug, Clone)]
pub enum LoggedEvent {
    /// From the AP.
    Ap(ApEvent),
    /// From a member.
    Member(MemberId, MemberEvent),
    /// From a shim client's shim.
    Shim(NodeId, ShimEvent),
}

/// Datagrams sent, for tests that replay or tamper with them.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Virtual send time.
    pub at: Instant,
    /// Sender endpoint.
    pub from: SocketAddr,
    /// Destination endpoint.
    pub to: SocketAddr,
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// The simulator.
#[derive(Debug)]
pub struct Sim {
    /// Virtual now.
    pub now: Instant,
    start: Instant,
    rng: SimRng,
    /// Nodes by id; node 0 is the AP.
    pub nodes: Vec<Node>,
    by_addr: HashMap<Ipv6Addr, NodeId>,
    latency: HashMap<(NodeId, NodeId), Duration>,
    /// Default one-way latency.
    pub default_latency: Duration,
    /// Loss probability on every link.
    pub loss: f64,
    /// Extra uniform random delay in [0, jitter) per packet (reorders).
    pub jitter: Duration,
    queue: BinaryHeap<Reverse<(Instant, u64, Delivery)>>,
    seq: u64,
    /// Everything the engines reported.
    pub log: Vec<(Instant, LoggedEvent)>,
    /// Every control datagram sent (data is not captured).
    pub captured: Vec<Captured>,
    /// Datagrams lost to the loss model.
    pub lost: u64,
    /// Datagrams to an address no node has.
    pub unroutable: u64,
    /// Print events as they happen (env SIM_LOG=1).
    pub verbose: bool,
    next_host: u16,
}

/// The simulated home address.
pub fn home_address() -> Ipv6Addr {
    "2001:db8:ffff::1".parse().unwrap_or(Ipv6Addr::LOCALHOST)
}

impl Sim {
    /// A simulation with an AP (node 0) and nothing else.
    pub fn new(seed: u64) -> Self {
        Self::with_ap_config(seed, |_| {})
    }

    /// As [`Sim::new`], letting the test adjust the AP configuration.
    pub fn with_ap_config(seed: u64, adjust: impl FnOnce(&mut ApConfig)) -> Self {
        let start = Instant::now();
        let mut config = ApConfig::new(
            home_address(),
            vec![MemberKey {
                spi: 1,
                key: KEY.to_vec(),
            }],
        );
        adjust(&mut config);
        let ap = AccessPoint::new(config).expect("simulation AP config is valid");
        let mut sim = Self {
            now: start,
            start,
            rng: SimRng::new(seed),
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            latency: HashMap::new(),
            default_latency: Duration::from_millis(1),
            loss: 0.0,
            jitter: Duration::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            log: Vec::new(),
            captured: Vec::new(),
            lost: 0,
            unroutable: 0,
            verbose: std::env::var_os("SIM_LOG").is_some(),
            next_host: 1,
        };
        sim.add_node("ap", TUNNEL_PORT, NodeKind::AccessPoint(Box::new(ap)));
        sim
    }

    fn fresh_addr(&mut self) -> Ipv6Addr {
        let n = self.next_host;
        self.next_host += 1;
        Ipv6Addr::new(0x2001, 0xdb8, 0, n, 0, 0, 0, 1)
    }

    fn add_node(&mut self, name: &str, port: u16, kind: NodeKind) -> NodeId {
        let addr = self.fresh_addr();
        let id = self.nodes.len();
        self.nodes.push(Node {
            name: name.to_string(),
            addr,
            port,
            kind,
            alive: true,
        });
        self.by_addr.insert(addr, id);
        id
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The AP node id.
    pub const AP: NodeId = 0;

    /// The AP engine.
    pub fn ap(&self) -> &AccessPoint {
        match &self.nodes[Self::AP].kind {
            NodeKind::AccessPoint(ap) => ap,
            _ => unreachable!("node 0 is the AP"),
        }
    }

    /// The AP engine, mutably (operator commands).
    pub fn ap_mut(&mut self) -> &mut AccessPoint {
        match &mut self.nodes[Self::AP].kind {
            NodeKind::AccessPoint(ap) => ap,
            _ => unreachable!("node 0 is the AP"),
        }
    }

    /// Add a member (not yet started) with a configuration tweak.
    pub fn add_member_with(&mut self, id: u16, adjust: impl FnOnce(&mut MemberConfig)) -> NodeId {
        let seed = self.rng.seed();
        let node = self.add_node(&format!("member{id}"), TUNNEL_PORT, NodeKind::Attacker);
        let care_of = self.nodes[node].endpoint();
        let ap = self.nodes[Self::AP].endpoint();
        let mut config = MemberConfig::new(
            MemberId(id),
            home_address(),
            ap,
            care_of,
            KEY.to_vec(),
            seed,
        );
        adjust(&mut config);
        self.nodes[node].kind =
            NodeKind::Member(Box::new(Member::new(config)), MemberApp::default());
        node
    }

    /// Add a member and start its registration.
    pub fn add_member(&mut self, id: u16) -> NodeId {
        let node = self.add_member_with(id, |_| {});
        self.start_member(node);
        node
    }

    /// Start a member's registration now.
    pub fn start_member(&mut self, node: NodeId) {
        let now = self.now;
        if let NodeKind::Member(m, _) = &mut self.nodes[node].kind {
            m.start(now);
        }
        self.flush(node);
    }

    /// Add a client with a shim.
    pub fn add_shim_client(&mut self) -> NodeId {
        let seed = self.rng.seed();
        let node = self.add_node("shim", SHIM_PORT, NodeKind::Attacker);
        let local = self.nodes[node].endpoint();
        let ap = self.nodes[Self::AP].endpoint();
        let shim = Shim::new(self.now, ShimConfig::new(ap, home_address(), local, seed));
        let app = ClientApp::new(self.nodes[node].addr, home_address());
        self.nodes[node].kind = NodeKind::Shim(Box::new(shim), app);
        node
    }

    /// Restart a client's shim: a fresh engine on a new port, as after a
    /// crash; the application keeps its sessions.
    pub fn restart_shim(&mut self, node: NodeId) {
        let seed = self.rng.seed();
        self.nodes[node].port += 1;
        let local = self.nodes[node].endpoint();
        let ap = self.nodes[Self::AP].endpoint();
        let fresh = Shim::new(self.now, ShimConfig::new(ap, home_address(), local, seed));
        if let NodeKind::Shim(shim, _) = &mut self.nodes[node].kind {
            **shim = fresh;
        }
    }

    /// Restart a member's process: a fresh engine (new instance, new
    /// sequence numbers) on the same endpoint, registering at once.
    pub fn restart_member(&mut self, node: NodeId) {
        let seed = self.rng.seed();
        let now = self.now;
        if let NodeKind::Member(m, app) = &mut self.nodes[node].kind {
            let mut config = m.config().clone();
            config.seed = seed;
            config.instance = u64::from_be_bytes(seed[..8].try_into().unwrap_or([0; 8]));
            let mut fresh = Member::new(config);
            fresh.start(now);
            **m = fresh;
            *app = MemberApp::default();
        }
        self.flush(node);
    }

    /// Add a client without a shim.
    pub fn add_legacy_client(&mut self) -> NodeId {
        let node = self.add_node("legacy", 0, NodeKind::Attacker);
        let app = ClientApp::new(self.nodes[node].addr, home_address());
        self.nodes[node].kind = NodeKind::Legacy(app);
        node
    }

    /// Add a host that only injects datagrams.
    pub fn add_attacker(&mut self) -> NodeId {
        self.add_node("attacker", 6666, NodeKind::Attacker)
    }

    /// Set the one-way latency between two nodes (both directions).
    pub fn set_latency(&mut self, a: NodeId, b: NodeId, one_way: Duration) {
        self.latency.insert((a, b), one_way);
        self.latency.insert((b, a), one_way);
    }

    fn link_delay(&mut self, a: NodeId, b: NodeId) -> Option<Duration> {
        if self.rng.chance(self.loss) {
            self.lost += 1;
            return None;
        }
        let base = self
            .latency
            .get(&(a, b))
            .copied()
            .unwrap_or(self.default_latency);
        let jitter = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.jitter.mul_f64(self.rng.unit())
        };
        Some(base + jitter)
    }

    fn schedule(&mut self, at: Instant, d: Delivery) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, d)));
    }

    /// Send a UDP datagram from node `from` (its endpoint, or `spoofed`).
    pub fn send_udp(&mut self, from: NodeId, source: SocketAddr, to: SocketAddr, payload: Vec<u8>) {
        let Some(&dst) = (match to.ip() {
            IpAddr::V6(a) => self.by_addr.get(&a),
            IpAddr::V4(_) => None,
        }) else {
            self.unroutable += 1;
            return;
        };
        if payload.len() >= TUNNEL_HEADER_LEN && payload[0] & 0x0f == 1 {
            self.captured.push(Captured {
                at: self.now,
                from: source,
                to,
                payload: payload.clone(),
            });
        }
        if let Some(delay) = self.link_delay(from, dst) {
            self.schedule(
                self.now + delay,
                Delivery::Udp {
                    to: dst,
                    from: source,
                    payload,
                },
            );
        }
    }

    fn send_native(&mut self, from: NodeId, packet: Vec<u8>) {
        let Ok((_, dst)) = inner::addresses(&packet) else {
            return;
        };
        let to = if dst == home_address() {
            Some(Self::AP)
        } else {
            self.by_addr.get(&dst).copied()
        };
        let Some(to) = to else {
            self.unroutable += 1;
            return;
        };
        if let Some(delay) = self.link_delay(from, to) {
            self.schedule(self.now + delay, Delivery::Native { to, packet });
        }
    }

    /// Start a client session of `total` requests, `interval` apart.
    pub fn start_session(&mut self, client: NodeId, total: u32, interval: Duration) -> usize {
        let now = self.now;
        let idx = match &mut self.nodes[client].kind {
            NodeKind::Shim(_, app) | NodeKind::Legacy(app) => app.start(now, total, interval),
            _ => panic!("node {client} is not a client"),
        };
        self.app_tick(client);
        idx
    }

    /// A client's session.
    pub fn session(&self, client: NodeId, idx: usize) -> &Session {
        match &self.nodes[client].kind {
            NodeKind::Shim(_, app) | NodeKind::Legacy(app) => &app.sessions[idx],
            _ => panic!("node {client} is not a client"),
        }
    }

    /// A shim client's shim.
    pub fn shim(&self, client: NodeId) -> &Shim {
        match &self.nodes[client].kind {
            NodeKind::Shim(s, _) => s,
            _ => panic!("node {client} is not a shim client"),
        }
    }

    /// A member's engine.
    pub fn member(&self, node: NodeId) -> &Member {
        match &self.nodes[node].kind {
            NodeKind::Member(m, _) => m,
            _ => panic!("node {node} is not a member"),
        }
    }

    /// A member's engine, mutably.
    pub fn member_mut(&mut self, node: NodeId) -> &mut Member {
        match &mut self.nodes[node].kind {
            NodeKind::Member(m, _) => m,
            _ => panic!("node {node} is not a member"),
        }
    }

    /// A member's service.
    pub fn member_app(&self, node: NodeId) -> &MemberApp {
        match &self.nodes[node].kind {
            NodeKind::Member(_, app) => app,
            _ => panic!("node {node} is not a member"),
        }
    }

    /// Run an operator or member command on a member, then send what it queued.
    pub fn with_member(&mut self, node: NodeId, f: impl FnOnce(&mut Member, Instant)) {
        let now = self.now;
        f(self.member_mut(node), now);
        self.flush(node);
    }

    /// Run an operator command on the AP, then send what it queued.
    pub fn with_ap(&mut self, f: impl FnOnce(&mut AccessPoint, Instant)) {
        let now = self.now;
        f(self.ap_mut(), now);
        self.flush(Self::AP);
    }

    /// Kill a node: it stops receiving and running timers.
    pub fn kill(&mut self, node: NodeId) {
        self.nodes[node].alive = false;
    }

    /// Move a member to a new address (a new care-of endpoint). With
    /// `keep_old`, the old address keeps reaching the node (make before
    /// break) until [`Sim::retire_address`]; without, it is gone at once.
    pub fn move_member(&mut self, node: NodeId, keep_old: bool) -> SocketAddr {
        let old = self.nodes[node].addr;
        if !keep_old {
            self.by_addr.remove(&old);
        }
        let addr = self.fresh_addr();
        self.nodes[node].addr = addr;
        self.by_addr.insert(addr, node);
        let ep = self.nodes[node].endpoint();
        self.with_member(node, |m, now| m.set_care_of(now, ep));
        ep
    }

    /// Stop routing an old address of a node.
    pub fn retire_address(&mut self, addr: Ipv6Addr) {
        self.by_addr.remove(&addr);
    }

    fn app_tick(&mut self, node: NodeId) {
        let now = self.now;
        let packets = match &mut self.nodes[node].kind {
            NodeKind::Shim(_, app) | NodeKind::Legacy(app) => app.tick(now),
            _ => return,
        };
        for mut p in packets {
            self.packet_from_app(node, &mut p);
        }
    }

    /// An application on `node` sends `packet` (an IPv6 packet to the
    /// HoA): through its shim, or natively for a legacy client.
    pub fn send_from_app(&mut self, node: NodeId, mut packet: Vec<u8>) {
        self.packet_from_app(node, &mut packet);
    }

    fn packet_from_app(&mut self, node: NodeId, packet: &mut [u8]) {
        let now = self.now;
        let src = self.nodes[node].endpoint();
        match &mut self.nodes[node].kind {
            NodeKind::Legacy(_) => {
                self.send_native(node, packet.to_vec());
                return;
            }
            NodeKind::Shim(shim, _) => {
                let action = shim.handle_tun(now, packet);
                self.encap(node, src, action, packet);
            }
            NodeKind::Member(m, _) => {
                let action = m.handle_tun(now, packet);
                self.encap(node, src, action, packet);
            }
            _ => {}
        }
        self.flush(node);
    }

    fn encap(&mut self, node: NodeId, src: SocketAddr, action: DataAction, inner: &[u8]) {
        if let DataAction::Encap { to, header } = action {
            let mut payload = header.to_bytes().to_vec();
            payload.extend_from_slice(inner);
            self.send_udp(node, src, to, payload);
        }
    }

    /// Drain an engine's transmits, TUN packets and events.
    fn flush(&mut self, node: NodeId) {
        let now = self.now;
        let src = self.nodes[node].endpoint();
        let mut transmits = Vec::new();
        let mut tun = Vec::new();
        match &mut self.nodes[node].kind {
            NodeKind::AccessPoint(ap) => {
                while let Some(t) = ap.poll_transmit() {
                    transmits.push(t);
                }
                while let Some(e) = ap.poll_event() {
                    self.log.push((now, LoggedEvent::Ap(e)));
                }
            }
            NodeKind::Member(m, _) => {
                while let Some(t) = m.poll_transmit() {
                    transmits.push(t);
                }
                let id = m.config().id;
                while let Some(e) = m.poll_event() {
                    self.log.push((now, LoggedEvent::Member(id, e)));
                }
            }
            NodeKind::Shim(s, _) => {
                while let Some(t) = s.poll_transmit() {
                    transmits.push(t);
                }
                while let Some(p) = s.poll_tun() {
                    tun.push(p);
                }
                while let Some(e) = s.poll_event() {
                    self.log.push((now, LoggedEvent::Shim(node, e)));
                }
            }
            _ => {}
        }
        if self.verbose {
            for (at, e) in self.log.iter().rev().take_while(|(at, _)| *at == now) {
                eprintln!(
                    "[{:>9.3} ms] {:?}",
                    (*at - self.start).as_secs_f64() * 1e3,
                    e
                );
            }
        }
        for t in transmits {
            self.send_udp(node, src, t.to, t.payload);
        }
        if let NodeKind::Shim(_, app) = &mut self.nodes[node].kind {
            for p in tun {
                app.receive(now, &p);
            }
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let now = self.now;
        let (to, mut payload, from, native) = match d {
            Delivery::Udp { to, from, payload } => (to, payload, Some(from), false),
            Delivery::Native { to, packet } => (to, packet, None, true),
        };
        if !self.nodes[to].alive {
            return;
        }
        let src = self.nodes[to].endpoint();
        match &mut self.nodes[to].kind {
            NodeKind::AccessPoint(ap) => {
                let action = match (native, from) {
                    (true, _) => ap.handle_tun(now, &mut payload),
                    (false, Some(from)) => ap.handle_udp(now, from, &mut payload),
                    _ => return,
                };
                // As the daemon's driver does: control messages the packet
                // caused leave before the packet itself.
                self.flush(to);
                match action {
                    DataAction::Encap { to: dst, header } if native => {
                        let mut p = header.to_bytes().to_vec();
                        p.extend_from_slice(&payload);
                        self.send_udp(to, src, dst, p);
                    }
                    DataAction::Encap { to: dst, header } => {
                        payload[..TUNNEL_HEADER_LEN].copy_from_slice(&header.to_bytes());
                        self.send_udp(to, src, dst, payload);
                    }
                    DataAction::ToTun => {
                        self.send_native(to, payload[TUNNEL_HEADER_LEN..].to_vec())
                    }
                    _ => {}
                }
            }
            NodeKind::Member(m, app) => {
                let Some(from) = from else { return };
                let action = m.handle_udp(now, from, &mut payload);
                if action == DataAction::ToTun {
                    let id = m.config().id;
                    if let Some(mut answer) = app.receive(id, &payload[TUNNEL_HEADER_LEN..]) {
                        let action = m.handle_tun(now, &mut answer);
                        if action == DataAction::ToTun {
                            // Direct server return: the member's kernel routes it.
                            self.send_native(to, answer);
                        } else {
                            self.encap(to, src, action, &answer);
                        }
                    }
                }
            }
            NodeKind::Shim(shim, app) => {
                let Some(from) = from else { return };
                let action = shim.handle_udp(now, from, &mut payload);
                if action == DataAction::ToTun {
                    app.receive(now, &payload[TUNNEL_HEADER_LEN..]);
                }
            }
            NodeKind::Legacy(app) => {
                if native {
                    app.receive(now, &payload);
                }
            }
            NodeKind::Attacker => {}
        }
        self.flush(to);
        self.app_tick(to);
    }

    fn next_timer(&self) -> Option<(Instant, NodeId)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.alive)
            .filter_map(|(i, n)| {
                let t = match &n.kind {
                    NodeKind::AccessPoint(ap) => ap.poll_timeout(),
                    NodeKind::Member(m, _) => m.poll_timeout(),
                    NodeKind::Shim(s, app) => min_opt(s.poll_timeout(), app.next_tick()),
                    NodeKind::Legacy(app) => app.next_tick(),
                    NodeKind::Attacker => None,
                };
                t.map(|t| (t, i))
            })
            .min()
    }

    /// Advance virtual time, processing every delivery and timer, up to `until`.
    pub fn run_until(&mut self, until: Instant) {
        // A timer that fires without moving time on, again and again, is an
        // engine bug: fail loudly instead of spinning.
        let mut same_instant = 0u32;
        let mut last = self.now;
        loop {
            let next_delivery = self.queue.peek().map(|Reverse((at, _, _))| *at);
            let next_timer = self.next_timer();
            let next = min_opt(next_delivery, next_timer.map(|(t, _)| t));
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    if self.now == last {
                        same_instant += 1;
                        assert!(
                            same_instant < 100_000,
                            "simulation stuck at {:?}: a timer keeps firing",
                            self.elapsed()
                        );
                    } else {
                        same_instant = 0;
                        last = self.now;
                    }
                    if next_delivery == Some(t) {
                        if let Some(Reverse((_, _, d))) = self.queue.pop() {
                            self.deliver(d);
                        }
                    } else if let Some((_, node)) = next_timer {
                        self.run_timers(node);
                    }
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    fn run_timers(&mut self, node: NodeId) {
        let now = self.now;
        match &mut self.nodes[node].kind {
            NodeKind::AccessPoint(ap) => ap.handle_timeout(now),
            NodeKind::Member(m, _) => m.handle_timeout(now),
            NodeKind::Shim(s, _) if s.poll_timeout().is_some_and(|t| t <= now) => {
                s.handle_timeout(now)
            }
            _ => {}
        }
        self.flush(node);
        self.app_tick(node);
    }

    /// Run for a span of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Run until `cond` holds, checking every `step`, for at most `max`.
    /// Returns the virtual time it took, or None if it never held.
    pub fn run_until_cond(
        &mut self,
        max: Duration,
        mut cond: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let begin = self.now;
        let step = Duration::from_millis(1);
        while self.now - begin <= max {
            if cond(self) {
                return Some(self.now - begin);
            }
            self.run_for(step);
        }
        None
    }

    /// Events logged so far, filtered.
    pub fn events<'a, T>(
        &'a self,
        f: impl FnMut(&'a (Instant, LoggedEvent)) -> Option<T> + 'a,
    ) -> impl Iterator<Item = T> + 'a {
        self.log.iter().filter_map(f)
    }

    /// Datagrams captured, by sender and destination, newest last.
    pub fn captured_between(&self, from: SocketAddr, to: SocketAddr) -> Vec<&Captured> {
        self.captured
            .iter()
            .filter(|c| c.from == from && c.to == to)
            .collect()
    }

    /// Per-member served flows, for the "a flow never changes member" invariant.
    pub fn flows_by_member(&self) -> BTreeMap<MemberId, BTreeSet<FlowKey>> {
        let mut out = BTreeMap::new();
        for n in &self.nodes {
            if let NodeKind::Member(m, app) = &n.kind {
                out.insert(m.config().id, app.flows.clone());
            }
        }
        out
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_segment_round_trips_through_the_parsers() {
        let a = SocketAddrV6::new("2001:db8::1".parse().unwrap(), 1000, 0, 0);
        let b = SocketAddrV6::new("2001:db8::2".parse().unwrap(), 80, 0, 0);
        let p = tcp_segment(a, b, TCP_SYN, 7, 0, b"hi");
        let info = inner::inspect(&p).unwrap();
        assert_eq!(info.flow.src_port, 1000);
        assert!(info.tcp.unwrap().flags.syn);
        let s = parse_segment(&p).unwrap();
        assert_eq!(
            (s.src, s.dst, s.seq, s.payload.as_slice()),
            (a, b, 7, &b"hi"[..])
        );
    }

    #[test]
    fn rng_is_seeded() {
        let mut a = SimRng::new(5);
        let mut b = SimRng::new(5);
        assert_eq!(a.next_u64(), b.next_u64());
        let hits = (0..10_000).filter(|_| a.chance(0.1)).count();
        assert!((800..1200).contains(&hits), "{hits}");
    }
}
