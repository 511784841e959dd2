//! The simulated network: addresses, a one-way latency per node pair,
//! seeded loss and jitter (jitter reorders), the queue of packets in
//! flight, the capture of every control datagram, and NAPTs ([`Nat`]) in
//! front of chosen nodes.
//!
//! Two kinds of packets travel: UDP datagrams between tunnel endpoints
//! (where the engines talk) and native IPv6 packets (legacy clients, the
//! AP's forwarding to them, a member's direct server return), routed by
//! their destination address; the home address routes to the AP.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use homeaddr_proto::wire::FRAME_HEADER_LEN;
use homeaddr_proto::wire::inner;

use crate::rng::SimRng;
use crate::{NodeId, Sim, home_address};

/// A packet in flight to a node.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Delivery {
    /// A UDP datagram, with the source endpoint it claims.
    Udp {
        to: NodeId,
        from: SocketAddr,
        payload: Vec<u8>,
    },
    /// A native IPv6 packet.
    Native { to: NodeId, packet: Vec<u8> },
}

impl Delivery {
    /// The node it is for.
    pub(crate) fn to(&self) -> NodeId {
        match self {
            Delivery::Udp { to, .. } | Delivery::Native { to, .. } => *to,
        }
    }
}

/// A control datagram sent, for tests that replay or tamper with it.
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

/// A NAPT in front of some nodes, as Linux masquerade with conntrack does
/// it for UDP: endpoint-independent mapping (one public port per inside
/// endpoint, a new port whenever a mapping is made), address-and-port-
/// dependent filtering (a datagram in passes only from a remote endpoint
/// the mapping has sent to), and each (mapping, remote) pair expires after
/// `timeout` without a datagram either way. No hairpinning: nodes behind
/// one NAT do not talk to each other through it.
#[derive(Debug)]
pub struct Nat {
    /// The outside address the inside endpoints are mapped to.
    pub public: Ipv6Addr,
    /// Idle time after which a (mapping, remote) pair is forgotten.
    pub timeout: Duration,
    inside: BTreeSet<NodeId>,
    next_port: u16,
    /// Inside endpoint -> public port.
    ports: HashMap<SocketAddr, u16>,
    /// Public port -> its mapping.
    mappings: HashMap<u16, Mapping>,
    /// Datagrams in that no live pair let through.
    pub filtered: u64,
    /// Mappings made.
    pub mappings_made: u64,
}

#[derive(Debug)]
struct Mapping {
    inside: SocketAddr,
    node: NodeId,
    /// Remote endpoint -> last datagram either way.
    remotes: HashMap<SocketAddr, Instant>,
}

impl Nat {
    fn new(public: Ipv6Addr, inside: &[NodeId]) -> Self {
        Self {
            public,
            timeout: Duration::from_secs(30),
            inside: inside.iter().copied().collect(),
            next_port: 1024,
            ports: HashMap::new(),
            mappings: HashMap::new(),
            filtered: 0,
            mappings_made: 0,
        }
    }

    /// Forget every mapping (`conntrack -F`).
    pub fn flush(&mut self) {
        self.ports.clear();
        self.mappings.clear();
    }

    /// The public endpoint `inside` is mapped to now, if any.
    pub fn mapped(&self, inside: SocketAddr) -> Option<SocketAddr> {
        let port = self.ports.get(&inside)?;
        Some(SocketAddr::new(IpAddr::V6(self.public), *port))
    }

    /// Drop the pairs idle for `timeout`, and mappings left with none.
    fn expire(&mut self, now: Instant) {
        let timeout = self.timeout;
        self.mappings.retain(|_, m| {
            m.remotes.retain(|_, at| *at + timeout > now);
            !m.remotes.is_empty()
        });
        let mappings = &self.mappings;
        self.ports.retain(|_, p| mappings.contains_key(p));
    }

    /// Map a datagram from `node` at `source` to `to`: its public source.
    fn outbound(
        &mut self,
        now: Instant,
        node: NodeId,
        source: SocketAddr,
        to: SocketAddr,
    ) -> SocketAddr {
        self.expire(now);
        let port = match self.ports.get(&source) {
            Some(p) => *p,
            None => {
                let p = self.next_port;
                self.next_port = self.next_port.checked_add(1).unwrap_or(1024);
                self.ports.insert(source, p);
                self.mappings.insert(
                    p,
                    Mapping {
                        inside: source,
                        node,
                        remotes: HashMap::new(),
                    },
                );
                self.mappings_made += 1;
                p
            }
        };
        if let Some(m) = self.mappings.get_mut(&port) {
            m.remotes.insert(to, now);
        }
        SocketAddr::new(IpAddr::V6(self.public), port)
    }

    /// A datagram from `from` to our public `port`: the inside endpoint
    /// and node it goes to, or None if filtered.
    fn inbound(
        &mut self,
        now: Instant,
        from: SocketAddr,
        port: u16,
    ) -> Option<(SocketAddr, NodeId)> {
        self.expire(now);
        let m = self.mappings.get_mut(&port);
        match m.and_then(|m| m.remotes.get_mut(&from).map(|at| (at, m.inside, m.node))) {
            Some((at, inside, node)) => {
                *at = now;
                Some((inside, node))
            }
            None => {
                self.filtered += 1;
                None
            }
        }
    }
}

/// Links, routing and the packets in flight.
#[derive(Debug)]
pub struct Network {
    /// Loss, jitter and engine seeds come from this one stream, in the
    /// order things happen, so a seed replays the whole run.
    rng: SimRng,
    by_addr: HashMap<Ipv6Addr, NodeId>,
    latency: HashMap<(NodeId, NodeId), Duration>,
    /// Default one-way latency.
    pub default_latency: Duration,
    /// Loss probability on every link.
    pub loss: f64,
    /// Extra uniform random delay in [0, jitter) per packet (reorders).
    pub jitter: Duration,
    /// Ordered by due time, then by send order.
    queue: BinaryHeap<Reverse<(Instant, u64, Delivery)>>,
    sent: u64,
    /// Every control datagram sent (data is not captured).
    pub captured: Vec<Captured>,
    /// Datagrams lost to the loss model.
    pub lost: u64,
    /// Datagrams to an address no node has.
    pub unroutable: u64,
    /// NAPTs in front of some nodes (see [`Network::add_nat`]).
    pub nats: Vec<Nat>,
    next_host: u16,
}

impl Network {
    /// An empty network: 1 ms links, no loss, no jitter.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rng: SimRng::new(seed),
            by_addr: HashMap::new(),
            latency: HashMap::new(),
            default_latency: Duration::from_millis(1),
            loss: 0.0,
            jitter: Duration::ZERO,
            queue: BinaryHeap::new(),
            sent: 0,
            captured: Vec::new(),
            lost: 0,
            unroutable: 0,
            nats: Vec::new(),
            next_host: 1,
        }
    }

    /// A seed for a new engine, from the simulation's stream.
    pub(crate) fn engine_seed(&mut self) -> [u8; 32] {
        self.rng.seed()
    }

    /// An underlay address no node has had yet.
    pub(crate) fn fresh_addr(&mut self) -> Ipv6Addr {
        let n = self.next_host;
        self.next_host += 1;
        Ipv6Addr::new(0x2001, 0xdb8, 0, n, 0, 0, 0, 1)
    }

    /// Route `addr` to `node`.
    pub(crate) fn attach(&mut self, addr: Ipv6Addr, node: NodeId) {
        self.by_addr.insert(addr, node);
    }

    /// Stop routing `addr`.
    pub(crate) fn detach(&mut self, addr: Ipv6Addr) {
        self.by_addr.remove(&addr);
    }

    /// Put `inside` behind a new NAPT with a fresh public address; returns
    /// its index in [`Network::nats`]. From then on their datagrams to
    /// nodes outside leave from the public address, and outside nodes reach
    /// them only through a mapping (their own addresses are unroutable).
    pub fn add_nat(&mut self, inside: &[NodeId]) -> usize {
        let public = self.fresh_addr();
        self.nats.push(Nat::new(public, inside));
        self.nats.len() - 1
    }

    /// The NAT `node` is behind.
    fn nat_of(&self, node: NodeId) -> Option<usize> {
        self.nats.iter().position(|n| n.inside.contains(&node))
    }

    /// Set the one-way latency between two nodes (both directions).
    pub fn set_latency(&mut self, a: NodeId, b: NodeId, one_way: Duration) {
        self.latency.insert((a, b), one_way);
        self.latency.insert((b, a), one_way);
    }

    /// The delay of one packet from `a` to `b`, or None if it is lost.
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

    /// Put `d` on the link from `from` unless the loss model drops it.
    fn transmit(&mut self, now: Instant, from: NodeId, d: Delivery) {
        if let Some(delay) = self.link_delay(from, d.to()) {
            self.sent += 1;
            self.queue.push(Reverse((now + delay, self.sent, d)));
        }
    }

    /// Send a UDP datagram from node `from`, claiming source `source`.
    pub(crate) fn send_udp(
        &mut self,
        now: Instant,
        from: NodeId,
        source: SocketAddr,
        to: SocketAddr,
        payload: Vec<u8>,
    ) {
        let mut source = source;
        let mut to = to;
        let ours = self.nat_of(from);
        let public = self
            .nats
            .iter()
            .position(|n| IpAddr::V6(n.public) == to.ip());
        let dst = if let Some(n) = public {
            // Through a NAT to the inside: only what a mapping lets in.
            let Some((inside, node)) = self.nats[n].inbound(now, source, to.port()) else {
                return;
            };
            to = inside;
            Some(node)
        } else {
            match to.ip() {
                IpAddr::V6(a) => self.by_addr.get(&a).copied(),
                IpAddr::V4(_) => None,
            }
        };
        let Some(dst) = dst else {
            self.unroutable += 1;
            return;
        };
        let theirs = self.nat_of(dst);
        if public.is_none() && theirs.is_some() && theirs != ours {
            // An inside address from outside its NAT.
            self.unroutable += 1;
            return;
        }
        if let Some(n) = ours
            && theirs != ours
        {
            source = self.nats[n].outbound(now, from, source, to);
        }
        // Control frames: the low nibble of the first byte is 1.
        if payload.len() >= FRAME_HEADER_LEN && payload[0] & 0x0f == 1 {
            self.captured.push(Captured {
                at: now,
                from: source,
                to,
                payload: payload.clone(),
            });
        }
        let d = Delivery::Udp {
            to: dst,
            from: source,
            payload,
        };
        self.transmit(now, from, d);
    }

    /// Send a native IPv6 packet from node `from`, routed by its destination.
    pub(crate) fn send_native(&mut self, now: Instant, from: NodeId, packet: Vec<u8>) {
        let Ok((_, dst)) = inner::addresses(&packet) else {
            return;
        };
        let to = if dst == home_address() {
            Some(Sim::AP)
        } else {
            self.by_addr.get(&dst).copied()
        };
        let Some(to) = to else {
            self.unroutable += 1;
            return;
        };
        self.transmit(now, from, Delivery::Native { to, packet });
    }

    /// When the next packet arrives.
    pub(crate) fn next_arrival(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next packet to arrive.
    pub(crate) fn pop_arrival(&mut self) -> Option<Delivery> {
        self.queue.pop().map(|Reverse((_, _, d))| d)
    }

    /// Datagrams captured, by sender and destination, oldest first.
    pub fn captured_between(&self, from: SocketAddr, to: SocketAddr) -> Vec<&Captured> {
        self.captured
            .iter()
            .filter(|c| c.from == from && c.to == to)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{TcpControl, tcp_segment};
    use std::net::SocketAddrV6;

    const CONTROL: [u8; 16] = [0x21, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    const DATA: [u8; 16] = [0x20, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    /// A network with nodes 0, 1, 2 attached at fresh addresses.
    fn three_nodes() -> (Network, [SocketAddr; 3]) {
        let mut net = Network::new(1);
        let eps = [0, 1, 2].map(|n| {
            let addr = net.fresh_addr();
            net.attach(addr, n);
            SocketAddr::new(IpAddr::V6(addr), 4790)
        });
        (net, eps)
    }

    fn v6(ep: SocketAddr) -> Ipv6Addr {
        match ep.ip() {
            IpAddr::V6(a) => a,
            IpAddr::V4(_) => unreachable!("the simulation is IPv6 only"),
        }
    }

    fn arrivals(net: &mut Network) -> Vec<(Instant, NodeId)> {
        let mut out = Vec::new();
        while let Some(at) = net.next_arrival() {
            let d = net.pop_arrival().expect("peeked");
            out.push((at, d.to()));
        }
        out
    }

    #[test]
    fn packets_arrive_after_their_link_latency_in_due_order() {
        let (mut net, eps) = three_nodes();
        net.set_latency(0, 1, Duration::from_millis(5));
        let t = Instant::now();
        net.send_udp(t, 0, eps[0], eps[1], DATA.to_vec());
        net.send_udp(t, 0, eps[0], eps[2], DATA.to_vec());
        // The reverse direction has the same latency.
        net.send_udp(t, 2, eps[2], eps[1], DATA.to_vec());
        net.send_udp(t, 1, eps[1], eps[0], DATA.to_vec());
        let ms = Duration::from_millis;
        assert_eq!(
            arrivals(&mut net),
            vec![
                (t + ms(1), 2),
                (t + ms(1), 1),
                (t + ms(5), 1),
                (t + ms(5), 0)
            ]
        );
    }

    #[test]
    fn loss_drops_and_counts_and_unknown_addresses_are_unroutable() {
        let (mut net, eps) = three_nodes();
        let t = Instant::now();
        net.loss = 1.0;
        net.send_udp(t, 0, eps[0], eps[1], DATA.to_vec());
        assert_eq!((net.lost, net.next_arrival()), (1, None));
        net.loss = 0.0;
        net.detach(v6(eps[2]));
        net.send_udp(t, 0, eps[0], eps[2], DATA.to_vec());
        assert_eq!((net.unroutable, net.next_arrival()), (1, None));
    }

    #[test]
    fn only_control_datagrams_are_captured_with_their_claimed_source() {
        let (mut net, eps) = three_nodes();
        let t = Instant::now();
        net.send_udp(t, 2, eps[0], eps[1], CONTROL.to_vec());
        net.send_udp(t, 0, eps[0], eps[1], DATA.to_vec());
        let captured = net.captured_between(eps[0], eps[1]);
        assert_eq!(captured.len(), 1);
        assert_eq!(captured[0].payload, CONTROL);
        // Captured or not, both are delivered.
        assert_eq!(arrivals(&mut net).len(), 2);
    }

    #[test]
    fn native_packets_to_the_home_address_go_to_the_access_point() {
        let (mut net, eps) = three_nodes();
        let t = Instant::now();
        let src = SocketAddrV6::new(v6(eps[2]), 10000, 0, 0);
        let dst = SocketAddrV6::new(home_address(), 80, 0, 0);
        net.send_native(t, 2, tcp_segment(src, dst, TcpControl::Syn, 0, None, &[]));
        net.send_native(t, 0, tcp_segment(dst, src, TcpControl::Rst, 0, None, &[]));
        let to: Vec<NodeId> = arrivals(&mut net).into_iter().map(|(_, n)| n).collect();
        assert_eq!(to, vec![Sim::AP, 2]);
    }

    #[test]
    fn a_nat_maps_out_filters_in_and_expires() {
        let (mut net, eps) = three_nodes();
        let n = net.add_nat(&[1]);
        net.nats[n].timeout = Duration::from_secs(30);
        let t = Instant::now();
        let arrive = |net: &mut Network| match net.pop_arrival() {
            Some(Delivery::Udp { to, from, .. }) => Some((to, from)),
            _ => None,
        };
        // Out: the source is the public mapping.
        net.send_udp(t, 1, eps[1], eps[0], DATA.to_vec());
        let mapped = net.nats[n].mapped(eps[1]).expect("mapped");
        assert_eq!(arrive(&mut net), Some((0, mapped)));
        // In from the remote it sent to: to the inside endpoint.
        net.send_udp(t, 0, eps[0], mapped, DATA.to_vec());
        assert_eq!(arrive(&mut net), Some((1, eps[0])));
        // From another remote, or to the inside address: nothing.
        net.send_udp(t, 2, eps[2], mapped, DATA.to_vec());
        net.send_udp(t, 0, eps[0], eps[1], DATA.to_vec());
        assert_eq!(net.next_arrival(), None);
        assert_eq!((net.nats[n].filtered, net.unroutable), (1, 1));
        // Idle past the timeout: the mapping is gone, and a new one differs.
        let later = t + Duration::from_secs(31);
        net.send_udp(later, 0, eps[0], mapped, DATA.to_vec());
        assert_eq!(net.next_arrival(), None);
        net.send_udp(later, 1, eps[1], eps[0], DATA.to_vec());
        let remapped = net.nats[n].mapped(eps[1]).expect("mapped again");
        assert_ne!(remapped, mapped);
        assert_eq!(arrive(&mut net), Some((0, remapped)));
        net.nats[n].flush();
        assert_eq!(net.nats[n].mapped(eps[1]), None);
    }
}
