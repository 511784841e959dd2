//! The applications on the simulated hosts: a member's service and a
//! client's request/response sessions.
//!
//! They speak just enough TCP for the engines to see what they care about:
//! a SYN opens a flow at a member, each request is one data segment
//! answered by one segment naming the member that served it, a segment for
//! a flow a member does not know is answered by a RST (as a kernel would),
//! and a client retransmits what is not answered.

use std::collections::{BTreeSet, HashSet};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant};

use homeaddr_proto::wire::MemberId;
use homeaddr_proto::wire::inner::FlowKey;

use crate::SERVICE_PORT;
use crate::packet::{TcpControl, parse_segment, tcp_segment};

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
    /// The host's table with direct return: the shim clients whose answers
    /// the kernel routes into the TUN, to the engine (the daemon follows
    /// the engine's `ShimClientAdded` / `ShimClientRemoved` events); every
    /// other answer leaves natively without reaching the engine.
    pub routed: BTreeSet<std::net::Ipv6Addr>,
    seen: HashSet<(FlowKey, u32)>,
}

impl MemberApp {
    /// Whether the host routes `answer` into the TUN with direct return: its
    /// destination is a shim client the engine reported.
    pub(crate) fn routes_into_tun(&self, answer: &[u8]) -> bool {
        homeaddr_proto::wire::inner::addresses(answer)
            .is_ok_and(|(_, dst)| self.routed.contains(&dst))
    }

    pub(crate) fn receive(&mut self, id: MemberId, packet: &[u8]) -> Option<Vec<u8>> {
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
        if s.rst {
            self.flows.remove(&flow);
            return None;
        }
        if s.syn {
            self.flows.insert(flow);
            return Some(tcp_segment(
                s.dst,
                s.src,
                TcpControl::Syn,
                0,
                Some(s.seq.wrapping_add(1)),
                &[],
            ));
        }
        if !self.flows.contains(&flow) {
            self.resets_sent += 1;
            return Some(tcp_segment(s.dst, s.src, TcpControl::Rst, 0, None, &[]));
        }
        if s.fin {
            self.flows.remove(&flow);
            return Some(tcp_segment(
                s.dst,
                s.src,
                TcpControl::Fin,
                0,
                Some(s.seq),
                &[],
            ));
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
            TcpControl::Psh,
            request,
            Some(s.seq),
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
    pub(crate) fn new(addr: Ipv6Addr, hoa: Ipv6Addr) -> Self {
        Self {
            addr,
            hoa,
            sessions: Vec::new(),
            next_port: 10000,
        }
    }

    pub(crate) fn start(&mut self, now: Instant, total: u32, interval: Duration) -> usize {
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

    pub(crate) fn next_tick(&self) -> Option<Instant> {
        self.sessions
            .iter()
            .filter(|s| matches!(s.state, SessionState::Connecting | SessionState::Open))
            .map(|s| match s.outstanding {
                Some((_, _, last, rto)) => last + rto,
                None => s.next_send,
            })
            .min()
    }

    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Vec<u8>> {
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
                        out.push(tcp_segment(
                            src,
                            dst,
                            TcpControl::Fin,
                            s.next,
                            Some(ack),
                            &[],
                        ));
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
            SessionState::Connecting => tcp_segment(src, dst, TcpControl::Syn, 0, None, &[]),
            _ => tcp_segment(src, dst, TcpControl::Psh, id, Some(ack), &id.to_be_bytes()),
        }
    }

    pub(crate) fn receive(&mut self, now: Instant, packet: &[u8]) {
        let Some(seg) = parse_segment(packet) else {
            return;
        };
        let Some(s) = self.sessions.iter_mut().find(|s| s.port == seg.dst.port()) else {
            return;
        };
        if seg.rst {
            if matches!(s.state, SessionState::Connecting | SessionState::Open) {
                s.state = SessionState::Reset;
            }
            return;
        }
        if seg.syn {
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
