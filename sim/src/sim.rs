//! The simulator: nodes on a [`Network`], one virtual clock, and the run
//! loop that delivers packets and fires timers in time order.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use homeaddr_proto::engine::ap::{AccessPoint, ApConfig, MemberKey};
use homeaddr_proto::engine::member::{Member, MemberConfig};
use homeaddr_proto::engine::shim::{Shim, ShimConfig};
use homeaddr_proto::wire::MemberId;
use homeaddr_proto::wire::inner::FlowKey;

use crate::app::{ClientApp, MemberApp, Session};
use crate::net::Network;
use crate::node::{LoggedEvent, Node, NodeKind, Outbox, Outgoing, min_opt};
use crate::{KEY, NodeId, SHIM_PORT, TUNNEL_PORT, home_address};

/// The simulator.
#[derive(Debug)]
pub struct Sim {
    /// Virtual now.
    pub now: Instant,
    start: Instant,
    /// Nodes by id; node 0 is the AP.
    pub nodes: Vec<Node>,
    /// Links, loss, jitter, the packets in flight, the capture.
    pub net: Network,
    /// Everything the engines reported.
    pub log: Vec<(Instant, LoggedEvent)>,
    /// Print events as they happen (env SIM_LOG=1).
    pub verbose: bool,
}

impl Sim {
    /// The AP node id.
    pub const AP: NodeId = 0;

    /// A simulation with an AP (node 0) and nothing else.
    pub fn new(seed: u64) -> Self {
        Self::with_ap_config(seed, |_| {})
    }

    /// As [`Sim::new`], letting the test adjust the AP configuration.
    pub fn with_ap_config(seed: u64, adjust: impl FnOnce(&mut ApConfig)) -> Self {
        let start = Instant::now();
        let mut config = ApConfig::new(home_address(), vec![MemberKey::new(1, KEY.to_vec())]);
        adjust(&mut config);
        let ap = AccessPoint::new(config).expect("simulation AP config is valid");
        let mut sim = Self {
            now: start,
            start,
            nodes: Vec::new(),
            net: Network::new(seed),
            log: Vec::new(),
            verbose: std::env::var_os("SIM_LOG").is_some(),
        };
        sim.add_node("ap", TUNNEL_PORT, NodeKind::AccessPoint(Box::new(ap)));
        sim
    }

    fn add_node(&mut self, name: &str, port: u16, kind: NodeKind) -> NodeId {
        let addr = self.net.fresh_addr();
        let id = self.nodes.len();
        self.nodes.push(Node {
            name: name.to_string(),
            addr,
            port,
            kind,
            alive: true,
        });
        self.net.attach(addr, id);
        id
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Add a member (not yet started) with a configuration tweak.
    pub fn add_member_with(&mut self, id: u16, adjust: impl FnOnce(&mut MemberConfig)) -> NodeId {
        let seed = self.net.engine_seed();
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
        self.with_member(node, |m, now| m.start(now));
    }

    /// A fresh shim engine for a client node, on its current endpoint.
    fn new_shim(&mut self, node: NodeId, adjust: impl FnOnce(&mut ShimConfig)) -> Shim {
        let seed = self.net.engine_seed();
        let local = self.nodes[node].endpoint();
        let ap = self.nodes[Self::AP].endpoint();
        let mut config = ShimConfig::new(ap, home_address(), local, seed);
        adjust(&mut config);
        Shim::new(self.now, config)
    }

    /// Add a client with a shim.
    pub fn add_shim_client(&mut self) -> NodeId {
        self.add_shim_client_with(|_| {})
    }

    /// Add a client with a shim, with a configuration tweak.
    pub fn add_shim_client_with(&mut self, adjust: impl FnOnce(&mut ShimConfig)) -> NodeId {
        let node = self.add_node("shim", SHIM_PORT, NodeKind::Attacker);
        let shim = self.new_shim(node, adjust);
        let app = ClientApp::new(self.nodes[node].addr, home_address());
        self.nodes[node].kind = NodeKind::Shim(Box::new(shim), app);
        // A new shim starts its AP handshake at once (the Shim Hello).
        self.flush(node);
        node
    }

    /// Restart a client's shim: a fresh engine on a new port, as after a
    /// crash; the application keeps its sessions and the shim its
    /// configuration (but for the endpoint and seed).
    pub fn restart_shim(&mut self, node: NodeId) {
        self.nodes[node].port += 1;
        let old = self.shim(node).config().clone();
        let fresh = self.new_shim(node, |c| {
            *c = ShimConfig {
                local: c.local,
                seed: c.seed,
                ..old
            }
        });
        if let NodeKind::Shim(shim, _) = &mut self.nodes[node].kind {
            **shim = fresh;
        }
        self.flush(node);
    }

    /// Restart a member's process: a fresh engine (new instance, new
    /// sequence numbers) on the same endpoint, registering at once.
    pub fn restart_member(&mut self, node: NodeId) {
        let seed = self.net.engine_seed();
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
            self.net.detach(old);
        }
        let addr = self.net.fresh_addr();
        self.nodes[node].addr = addr;
        self.net.attach(addr, node);
        let ep = self.nodes[node].endpoint();
        self.with_member(node, |m, now| m.set_care_of(now, ep));
        ep
    }

    /// Put nodes behind a new NAPT (see [`crate::net::Nat`]); returns its
    /// index in `net.nats`.
    pub fn add_nat(&mut self, inside: &[NodeId]) -> usize {
        self.net.add_nat(inside)
    }

    /// Stop routing an old address of a node.
    pub fn retire_address(&mut self, addr: Ipv6Addr) {
        self.net.detach(addr);
    }

    /// Start a client session of `total` requests, `interval` apart.
    pub fn start_session(&mut self, client: NodeId, total: u32, interval: Duration) -> usize {
        let now = self.now;
        let idx = match &mut self.nodes[client].kind {
            NodeKind::Shim(_, app) | NodeKind::Legacy(app) => app.start(now, total, interval),
            _ => panic!("node {client} is not a client"),
        };
        self.step(client, Node::app_tick);
        idx
    }

    /// An application on `node` sends `packet` (an IPv6 packet to the
    /// HoA): through its shim, or natively for a legacy client.
    pub fn send_from_app(&mut self, node: NodeId, mut packet: Vec<u8>) {
        self.step(node, |n, out| n.send_from_app(out, &mut packet));
    }

    /// Send a UDP datagram from node `from`, claiming source `source`
    /// (its endpoint, or a spoofed one).
    pub fn send_udp(&mut self, from: NodeId, source: SocketAddr, to: SocketAddr, payload: Vec<u8>) {
        self.net.send_udp(self.now, from, source, to, payload);
    }

    /// Let a node do one thing now, then log and send what it produced.
    fn step(&mut self, node: NodeId, f: impl FnOnce(&mut Node, &mut Outbox)) {
        let mut out = Outbox::new(node, self.now);
        f(&mut self.nodes[node], &mut out);
        for e in out.events {
            if self.verbose {
                eprintln!(
                    "[{:>9.3} ms] {:?}",
                    (out.now - self.start).as_secs_f64() * 1e3,
                    e
                );
            }
            self.log.push((out.now, e));
        }
        for p in out.packets {
            match p {
                Outgoing::Udp { from, to, payload } => {
                    self.net.send_udp(out.now, node, from, to, payload)
                }
                Outgoing::Native(packet) => self.net.send_native(out.now, node, packet),
            }
        }
    }

    /// Drain an engine's transmits, TUN packets and events.
    fn flush(&mut self, node: NodeId) {
        self.step(node, Node::flush);
    }

    /// The next timer due, and its node.
    fn next_timer(&self) -> Option<(Instant, NodeId)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.poll_timeout().map(|t| (t, i)))
            .min()
    }

    /// Advance virtual time, processing every delivery and timer, up to `until`.
    pub fn run_until(&mut self, until: Instant) {
        // A timer that fires without moving time on, again and again, is an
        // engine bug: fail loudly instead of spinning.
        let mut same_instant = 0u32;
        let mut last = self.now;
        loop {
            let next_arrival = self.net.next_arrival();
            let next_timer = self.next_timer();
            let next = min_opt(next_arrival, next_timer.map(|(t, _)| t));
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
                    if next_arrival == Some(t) {
                        if let Some(d) = self.net.pop_arrival() {
                            self.step(d.to(), |n, out| n.deliver(out, d));
                        }
                    } else if let Some((_, node)) = next_timer {
                        self.step(node, Node::run_timers);
                    }
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
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
