//! The client shim engine: a correspondent node with route optimization
//! (RFC 6275 sec. 9), for a home address served by many members.
//!
//! The shim owns the route to the HoA on the client. Every flow is pinned
//! to the member that serves it: a flow started through the AP is pinned
//! when the first answer comes back tagged with the member id; a new flow
//! may start directly at a bound, non-draining member. A flow pinned to a
//! member with a valid binding is tunnelled straight to that member's
//! care-of endpoint; any other flow goes through the AP. The shim answers
//! return routability with keygen tokens from rotating nonces, verifies
//! binding updates (RFC 6275 sec. 9.5.1), and on a revocation from the AP
//! resets the flows of the gone member locally, so applications fail fast.
//!
//! Wire v2 (docs/PROTOCOL.md sections 1.4, 4.6, 5.3, 5.5): everything but the
//! handshakes is sealed. The shim opens a session with the AP by an X25519
//! handshake with a cookie round trip (`aplink`); no application packet
//! leaves before it is up (`no_session`). Each accepted route-optimization
//! BU gives that member's binding a session keyed from Kbm; direct data
//! both ways is sealed in it. The care-of test is answered only to a member
//! that shows the care-of ticket of a home test: a port scan gets nothing.
//! Binding errors are neither sent nor believed any more.
//!
//! Binding states per member (docs/PROTOCOL.md sec. 7.4):
//!
//! ```text
//! (none) --valid BU--> Bound --valid BU (new seq)--> Bound (maybe moved)
//! Bound --BU lifetime 0 / lifetime over--> (none): its flows go through the AP
//! Bound|(none) --sealed BRI from the AP--> (none): its flows are reset locally
//! ```
//!
//! AP link states (`aplink`):
//!
//! ```text
//! start --Hello--> Pending --Cookie(Ns)--> Pending (Hello + cookie)
//! Pending --Welcome(Ns)--> Up --Cookie(0)--> Up + Pending --Welcome--> Up (new session)
//! ```
//!
//! By concern: `config` (configuration and defaults), `aplink` (the AP
//! session and its handshake), `bindings` (nonces, tests, the binding cache
//! and its sessions), `flows` (the flow table, revocations), `data` (the
//! data path), `keepalive` (NAT keepalives on idle direct sessions),
//! `control` (dispatch of frames).

mod aplink;
mod bindings;
mod config;
mod control;
mod data;
mod flows;
mod keepalive;
mod moves;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use self::aplink::ApLink;
use self::bindings::MemberSession;
use super::fragments::FragmentRoutes;
use super::{DataAction, DropCounters, DropReason, Engine, TimerQueue, Transmit, TunPacket};
use crate::crypto::{Drbg, Token};
use crate::wire::MemberId;
use crate::wire::inner::FlowKey;

pub use self::config::{
    DEFAULT_KEEPALIVE, DEFAULT_MAX_BINDING_LIFETIME, DEFAULT_MAX_FLOWS, DEFAULT_NAT_KEEPALIVE,
    DEFAULT_NONCE_INTERVAL, DEFAULT_NONCE_LIFETIME, DEFAULT_OTHER_IDLE, DEFAULT_TCP_IDLE,
    ShimConfig,
};

/// A member binding at the shim (the binding cache entry, keyed by member id
/// since the HoA is fixed per shim).
#[derive(Debug, Clone, Copy)]
pub struct ShimBinding {
    /// The member's care-of endpoint.
    pub care_of: SocketAddr,
    /// Last accepted sequence number.
    pub seq: u16,
    /// When the binding lapses.
    pub expires: Instant,
    /// The member is draining: no new flows start at it.
    pub draining: bool,
    /// When it was first created.
    pub created: Instant,
    /// When its last BU was accepted.
    pub updated: Instant,
}

/// Which way a flow goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowPath {
    /// Through the access point.
    ViaAccessPoint,
    /// Straight to the member's care-of endpoint.
    Direct,
}

/// One flow of a local application to the HoA.
#[derive(Debug, Clone, Copy)]
pub struct FlowEntry {
    /// The member serving it, once known.
    pub member: Option<MemberId>,
    /// Path of the last outgoing packet.
    pub path: FlowPath,
    /// Last packet either way.
    pub last_seen: Instant,
    /// Packets sent by the application.
    pub packets_out: u64,
    /// Packets delivered to the application.
    pub packets_in: u64,
    /// Bytes both ways.
    pub bytes: u64,
    /// Acknowledgement number of the application's latest segment: the
    /// sequence number a reset towards it must carry.
    tcp_rcv_nxt: Option<u32>,
    closing: bool,
}

/// Something the shim wants its user to know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShimEvent {
    /// A binding was created or updated.
    BindingUpdated {
        /// Member.
        member: MemberId,
        /// Its care-of endpoint.
        care_of: SocketAddr,
        /// The care-of endpoint it had before, if it moved.
        moved_from: Option<SocketAddr>,
    },
    /// A binding was deleted (deregistration or lifetime).
    BindingRemoved {
        /// Member.
        member: MemberId,
    },
    /// A binding update was rejected.
    BindingRejected {
        /// Who sent it.
        from: SocketAddr,
        /// Why.
        reason: DropReason,
    },
    /// A flow switched to the direct path.
    FlowDirect {
        /// The flow.
        flow: FlowKey,
        /// Its member.
        member: MemberId,
    },
    /// The AP revoked a member; its flows were reset.
    Revoked {
        /// Member.
        member: MemberId,
        /// TCP flows reset locally.
        flows_reset: usize,
    },
    /// Our own endpoint moved (the host's address changed).
    Moved {
        /// The endpoint we had.
        from: SocketAddr,
        /// The endpoint we have now.
        local: SocketAddr,
        /// The AP's endpoint we use from it.
        access_point: SocketAddr,
    },
    /// A session with the AP is up (the first one, or a new one after the
    /// AP lost ours).
    ApSession {
        /// Our receive index of it.
        index: u32,
        /// It replaced an earlier session.
        renewed: bool,
        /// The client address the AP gave (applications' inner source).
        client: std::net::Ipv6Addr,
        /// Our endpoint as the AP saw it.
        observed: Option<SocketAddr>,
    },
}

/// Every timer of the shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShimTimer {
    /// Generate a new nonce, retire old ones.
    NonceRotation,
    /// A binding lapses.
    BindingExpiry(MemberId),
    /// Forget idle flows.
    FlowSweep,
    /// Send the pending Shim Hello again.
    HelloRetransmit,
    /// Start the handshake again with a new instance (the AP said our
    /// pool address is taken).
    Rehandshake,
    /// Send a sealed keepalive to the AP if there are flows.
    Keepalive,
    /// Forget replaced sessions whose grace is over.
    SessionGrace,
    /// Behind a NAT: keep idle direct binding sessions' mappings alive.
    NatKeepalive,
}

/// Shim counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShimCounters {
    /// Drops by reason.
    pub drops: DropCounters,
    /// Packets sent through the AP.
    pub via_ap_out: u64,
    /// Packets sent directly to members.
    pub direct_out: u64,
    /// Packets received through the AP.
    pub via_ap_in: u64,
    /// Packets received directly from members.
    pub direct_in: u64,
    /// Binding updates accepted.
    pub bus_accepted: u64,
    /// Binding updates rejected.
    pub bus_rejected: u64,
    /// Home and care-of tests answered.
    pub tests_answered: u64,
    /// Binding errors sent: none since wire v2 (kept for the status API).
    pub binding_errors: u64,
    /// Shim Hellos sent (first, with cookie, retransmitted).
    pub hellos_sent: u64,
    /// Sessions established with the AP.
    pub ap_sessions: u64,
    /// Sealed keepalives sent to the AP.
    pub keepalives: u64,
    /// Welcomes without a Client Address (pool address taken): a new
    /// instance was drawn.
    pub pool_collisions: u64,
    /// Bindings whose care-of endpoint moved to the source of a newer
    /// sealed frame (roaming).
    pub roams: u64,
    /// TCP resets sent to local applications.
    pub resets: u64,
    /// Punches sent to members' care-of endpoints (one per relayed HoTI
    /// answered that named one).
    pub punches: u64,
    /// Empty sealed data frames (NAT keepalives) from members, dropped.
    pub keepalives_in: u64,
    /// NAT keepalives sent on idle direct binding sessions.
    pub nat_keepalives: u64,
    /// Our own moves (the host's address changed).
    pub moves: u64,
    /// Bindings dropped because their member answered through the AP (it
    /// had dropped its side: a move to another family).
    pub fallbacks: u64,
}

/// The client shim engine.
#[derive(Debug)]
pub struct Shim {
    config: ShimConfig,
    kcn: [u8; 32],
    rng: Drbg,
    nonces: VecDeque<(u16, Token, Instant)>,
    next_nonce_index: u16,
    bindings: HashMap<MemberId, ShimBinding>,
    /// Each bound member's session (from its BU).
    member_sessions: HashMap<MemberId, MemberSession>,
    /// Our receive indices of member sessions.
    by_index: HashMap<u32, MemberId>,
    last_seq: HashMap<MemberId, u16>,
    ap: ApLink,
    flows: HashMap<FlowKey, FlowEntry>,
    /// The member (if any) each recent first fragment was sent for.
    fragments: FragmentRoutes<Option<MemberId>>,
    timers: TimerQueue<ShimTimer>,
    transmits: VecDeque<Transmit>,
    to_tun: VecDeque<Vec<u8>>,
    events: VecDeque<ShimEvent>,
    counters: ShimCounters,
    /// Our endpoint is translated (set by the shell or the handshake from
    /// the AP's observed endpoint): send NAT keepalives.
    nat_keepalive_on: bool,
}

impl Shim {
    /// A new shim; nonces start at `now`, and so does the handshake with
    /// the AP (the first Shim Hello is queued).
    pub fn new(now: Instant, config: ShimConfig) -> Self {
        let mut rng = Drbg::new(config.seed);
        let kcn = rng.key();
        let mut instance = [0u8; 8];
        rng.fill(&mut instance);
        let mut shim = Self {
            kcn,
            next_nonce_index: rng.next_u16(),
            rng,
            config,
            nonces: VecDeque::new(),
            bindings: HashMap::new(),
            member_sessions: HashMap::new(),
            by_index: HashMap::new(),
            last_seq: HashMap::new(),
            ap: ApLink::new(instance),
            flows: HashMap::new(),
            fragments: FragmentRoutes::default(),
            timers: TimerQueue::default(),
            transmits: VecDeque::new(),
            to_tun: VecDeque::new(),
            events: VecDeque::new(),
            counters: ShimCounters::default(),
            nat_keepalive_on: false,
        };
        shim.rotate_nonces(now);
        shim.start_handshake(now);
        shim
    }

    /// Configuration in force.
    pub fn config(&self) -> &ShimConfig {
        &self.config
    }

    /// Point the shim at another access point (e.g. after DNS discovery):
    /// the session with the old one is dropped and a handshake with the new
    /// one starts at `now`.
    pub fn set_access_point(&mut self, now: Instant, access_point: SocketAddr) {
        if access_point == self.config.access_point {
            return;
        }
        self.config.access_point = access_point;
        self.ap = ApLink::new(self.ap.instance);
        self.start_handshake(now);
    }

    /// This shim process's instance (sent in every Shim Hello).
    pub fn instance(&self) -> [u8; 8] {
        self.ap.instance
    }

    /// The inner source address the AP gave us (its Welcome's Client
    /// Address), once a session is up: the address applications must use.
    pub fn client_address(&self) -> Option<std::net::Ipv6Addr> {
        self.ap.client
    }

    /// Our endpoint as the AP observed it (its Welcome's Endpoint).
    pub fn observed(&self) -> Option<SocketAddr> {
        self.ap.observed
    }

    /// Are we behind a NAT: the AP saw another endpoint than `local`?
    pub fn behind_nat(&self) -> bool {
        self.ap
            .observed
            .is_some_and(|o| o != super::canonical(self.config.local))
    }

    /// Is a session with the AP up?
    pub fn has_ap_session(&self) -> bool {
        self.ap.sessions.is_some()
    }

    /// The binding cache.
    pub fn bindings(&self) -> impl Iterator<Item = (&MemberId, &ShimBinding)> {
        self.bindings.iter()
    }

    /// The flow table.
    pub fn flows(&self) -> impl Iterator<Item = (&FlowKey, &FlowEntry)> {
        self.flows.iter()
    }

    /// One flow.
    pub fn flow(&self, key: &FlowKey) -> Option<&FlowEntry> {
        self.flows.get(key)
    }

    /// Counters.
    pub fn counters(&self) -> &ShimCounters {
        &self.counters
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ShimEvent> {
        self.events.pop_front()
    }
}

impl Engine for Shim {
    fn handle_udp(&mut self, now: Instant, from: SocketAddr, frame: &mut [u8]) -> DataAction {
        self.frame_in(now, from, frame)
    }

    fn handle_tun(&mut self, now: Instant, mut pkt: TunPacket<'_>) -> DataAction {
        match self.data_out(now, pkt.frame_mut()) {
            Ok(to) => DataAction::Send { to },
            Err(action) => action,
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_tun(&mut self) -> Option<Vec<u8>> {
        self.to_tun.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                ShimTimer::NonceRotation => self.rotate_nonces(now),
                ShimTimer::BindingExpiry(member) => {
                    if self.bindings.get(&member).is_some_and(|b| b.expires <= now) {
                        self.bindings.remove(&member);
                        self.drop_member_session(member);
                        self.events.push_back(ShimEvent::BindingRemoved { member });
                    }
                }
                ShimTimer::FlowSweep => self.sweep_flows(now),
                ShimTimer::HelloRetransmit => self.retransmit_hello(now),
                ShimTimer::Rehandshake => self.start_handshake(now),
                ShimTimer::Keepalive => self.keepalive(now),
                ShimTimer::SessionGrace => self.expire_sessions(now),
                ShimTimer::NatKeepalive => self.nat_keepalive_due(now),
            }
        }
    }
}
