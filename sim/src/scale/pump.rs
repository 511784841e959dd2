//! The message pump: access point and member engines joined by links of
//! one fixed one-way latency, one virtual clock, and the legacy clients'
//! packets handed to the AP the router picks.
//!
//! Lighter than [`crate::Sim`] (no loss, no jitter, no capture, no
//! applications): its timers sit in one heap with lazy deletion, so a step
//! costs O(log n) whatever the number of engines, where `Sim` scans every
//! node per step.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use homeaddr_proto::engine::ap::AccessPoint;
use homeaddr_proto::engine::member::Member;
use homeaddr_proto::engine::{DataAction, Engine};
use homeaddr_proto::wire::MemberId;

use crate::node::{handle_tun, tun_packet};

/// An engine of the pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Peer {
    /// Access point, by index.
    Ap(usize),
    /// Member, by index (its id is the index + 1).
    Member(usize),
}

/// The client side of the pump: the legacy clients' packets (already
/// routed to an AP) and what the members' engines hand to their TUN.
pub(crate) trait Traffic {
    /// When the next client packet reaches its AP.
    fn next_at(&self) -> Option<Instant>;
    /// That packet, and the index of the AP the router sent it to.
    fn pop(&mut self) -> (usize, Vec<u8>);
    /// A member's engine wrote an inner packet to its TUN.
    fn delivered(&mut self, member: MemberId, packet: &[u8]);
}

/// No client traffic.
#[derive(Debug)]
pub(crate) struct NoTraffic;

impl Traffic for NoTraffic {
    fn next_at(&self) -> Option<Instant> {
        None
    }
    fn pop(&mut self) -> (usize, Vec<u8>) {
        unreachable!("next_at is None")
    }
    fn delivered(&mut self, _: MemberId, _: &[u8]) {}
}

/// An access point of the pump.
#[derive(Debug)]
pub(crate) struct ApNode {
    pub engine: AccessPoint,
    pub endpoint: SocketAddr,
    /// A dead AP receives nothing and runs no timers.
    pub alive: bool,
    /// Its table digest, recomputed after every step that raised an event.
    pub digest: u64,
    /// When `digest` last changed.
    pub digest_changed: Instant,
}

/// A member of the pump.
#[derive(Debug)]
pub(crate) struct MemberNode {
    pub engine: Member,
    pub endpoint: SocketAddr,
}

/// A datagram in flight.
#[derive(Debug)]
struct InFlight {
    at: Instant,
    seq: u64,
    to: Peer,
    from: SocketAddr,
    payload: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    /// Reversed: the heap's top is the earliest, then the first sent.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// What went through the pump.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PumpStats {
    /// Datagrams sent between engines (control and data).
    pub datagrams: u64,
    /// Client packets handed to an AP.
    pub client_packets: u64,
    /// Datagrams to a dead AP or to no engine.
    pub undeliverable: u64,
    /// Engine timer runs.
    pub timer_runs: u64,
}

/// The engines, the links between them and the clock.
#[derive(Debug)]
pub(crate) struct Pump {
    pub now: Instant,
    pub latency: Duration,
    pub aps: Vec<ApNode>,
    pub members: Vec<MemberNode>,
    pub stats: PumpStats,
    by_endpoint: HashMap<SocketAddr, Peer>,
    queue: BinaryHeap<InFlight>,
    sent: u64,
    timers: BinaryHeap<Reverse<(Instant, Peer)>>,
    /// The deadline `timers` holds for each engine: other entries are stale.
    scheduled: HashMap<Peer, Instant>,
}

impl Pump {
    pub(crate) fn new(now: Instant, latency: Duration) -> Self {
        Self {
            now,
            latency,
            aps: Vec::new(),
            members: Vec::new(),
            stats: PumpStats::default(),
            by_endpoint: HashMap::new(),
            queue: BinaryHeap::new(),
            sent: 0,
            timers: BinaryHeap::new(),
            scheduled: HashMap::new(),
        }
    }

    pub(crate) fn add_ap(&mut self, engine: AccessPoint, endpoint: SocketAddr) -> usize {
        let i = self.aps.len();
        let digest = engine.table_digest();
        self.aps.push(ApNode {
            engine,
            endpoint,
            alive: true,
            digest,
            digest_changed: self.now,
        });
        self.by_endpoint.insert(endpoint, Peer::Ap(i));
        self.flush(Peer::Ap(i));
        i
    }

    /// Add a member and start its registration with every AP it names.
    pub(crate) fn add_member(&mut self, mut engine: Member) -> usize {
        let j = self.members.len();
        let endpoint = engine.config().care_of;
        engine.start(self.now);
        self.members.push(MemberNode { engine, endpoint });
        self.by_endpoint.insert(endpoint, Peer::Member(j));
        self.flush(Peer::Member(j));
        j
    }

    /// The AP stops: it receives nothing and runs no timers from now on.
    pub(crate) fn kill_ap(&mut self, i: usize) {
        self.aps[i].alive = false;
        self.scheduled.remove(&Peer::Ap(i));
    }

    /// The digest every live AP has, if they agree.
    pub(crate) fn agreed_digest(&self) -> Option<u64> {
        let mut live = self.aps.iter().filter(|a| a.alive).map(|a| a.digest);
        let first = live.next()?;
        live.all(|d| d == first).then_some(first)
    }

    /// The last time a live AP's digest changed.
    pub(crate) fn last_digest_change(&self) -> Option<Instant> {
        self.aps
            .iter()
            .filter(|a| a.alive)
            .map(|a| a.digest_changed)
            .max()
    }

    /// Datagrams in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Deliver, inject and fire timers in time order up to `until`.
    pub(crate) fn run_until(&mut self, until: Instant, traffic: &mut impl Traffic) {
        loop {
            let msg = self.queue.peek().map(|m| m.at);
            let client = traffic.next_at();
            let timer = self.next_timer();
            let next = [msg, client, timer.map(|(t, _)| t)]
                .into_iter()
                .flatten()
                .min();
            let Some(at) = next.filter(|&at| at <= until) else {
                break;
            };
            self.now = self.now.max(at);
            if msg == Some(at) {
                let m = self.queue.pop().expect("peeked");
                self.deliver(m, traffic);
            } else if client == Some(at) {
                let (ap, packet) = traffic.pop();
                self.client_packet(ap, &packet);
            } else if let Some((_, peer)) = timer {
                self.fire(peer);
            }
        }
        self.now = self.now.max(until);
    }

    /// Run in steps of `step` until `done` holds, for at most `max`.
    /// Returns whether it held.
    pub(crate) fn run_until_cond(
        &mut self,
        max: Duration,
        step: Duration,
        traffic: &mut impl Traffic,
        mut done: impl FnMut(&Pump) -> bool,
    ) -> bool {
        let deadline = self.now + max;
        loop {
            if done(self) {
                return true;
            }
            if self.now >= deadline {
                return false;
            }
            let until = (self.now + step).min(deadline);
            self.run_until(until, traffic);
        }
    }

    /// The earliest live timer, dropping stale heap entries.
    fn next_timer(&mut self) -> Option<(Instant, Peer)> {
        while let Some(&Reverse((at, peer))) = self.timers.peek() {
            if self.scheduled.get(&peer) == Some(&at) {
                return Some((at, peer));
            }
            self.timers.pop();
        }
        None
    }

    fn fire(&mut self, peer: Peer) {
        self.scheduled.remove(&peer);
        self.stats.timer_runs += 1;
        let now = self.now;
        match peer {
            Peer::Ap(i) => self.aps[i].engine.handle_timeout(now),
            Peer::Member(j) => self.members[j].engine.handle_timeout(now),
        }
        self.flush(peer);
    }

    /// A legacy client's packet, read from AP `i`'s TUN.
    fn client_packet(&mut self, i: usize, packet: &[u8]) {
        self.stats.client_packets += 1;
        if !self.aps[i].alive {
            self.stats.undeliverable += 1;
            return;
        }
        let (action, frame) = handle_tun(&mut self.aps[i].engine, self.now, packet);
        // As the daemon's driver does: what the packet caused goes first.
        self.flush(Peer::Ap(i));
        if let DataAction::Send { to } = action {
            self.send(self.aps[i].endpoint, to, frame);
        }
    }

    fn deliver(&mut self, m: InFlight, traffic: &mut impl Traffic) {
        let InFlight {
            to,
            from,
            mut payload,
            ..
        } = m;
        let now = self.now;
        match to {
            Peer::Ap(i) => {
                if !self.aps[i].alive {
                    self.stats.undeliverable += 1;
                    return;
                }
                let action = self.aps[i].engine.handle_udp(now, from, &mut payload);
                self.flush(to);
                if let DataAction::Send { to } = action {
                    self.send(self.aps[i].endpoint, to, payload);
                }
            }
            Peer::Member(j) => {
                let node = &mut self.members[j];
                let action = node.engine.handle_udp(now, from, &mut payload);
                if action == DataAction::ToTun {
                    traffic.delivered(node.engine.config().id, tun_packet(&payload));
                }
                self.flush(to);
            }
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, payload: Vec<u8>) {
        self.stats.datagrams += 1;
        let Some(&peer) = self.by_endpoint.get(&to) else {
            self.stats.undeliverable += 1;
            return;
        };
        self.sent += 1;
        self.queue.push(InFlight {
            at: self.now + self.latency,
            seq: self.sent,
            to: peer,
            from,
            payload,
        });
    }

    /// Send what an engine queued, drain its events, re-arm its timer.
    fn flush(&mut self, peer: Peer) {
        let mut out = Vec::new();
        let (from, deadline) = match peer {
            Peer::Ap(i) => {
                let node = &mut self.aps[i];
                while let Some(t) = node.engine.poll_transmit() {
                    out.push(t);
                }
                let mut events = false;
                while node.engine.poll_event().is_some() {
                    events = true;
                }
                if events {
                    let digest = node.engine.table_digest();
                    if digest != node.digest {
                        node.digest = digest;
                        node.digest_changed = self.now;
                    }
                }
                let deadline = node.alive.then(|| node.engine.poll_timeout()).flatten();
                (node.endpoint, deadline)
            }
            Peer::Member(j) => {
                let node = &mut self.members[j];
                while let Some(t) = node.engine.poll_transmit() {
                    out.push(t);
                }
                while node.engine.poll_event().is_some() {}
                (node.endpoint, node.engine.poll_timeout())
            }
        };
        for t in out {
            self.send(from, t.to, t.payload);
        }
        match deadline {
            Some(at) if self.scheduled.get(&peer) != Some(&at) => {
                self.scheduled.insert(peer, at);
                self.timers.push(Reverse((at, peer)));
            }
            Some(_) => {}
            None => {
                self.scheduled.remove(&peer);
            }
        }
    }
}
