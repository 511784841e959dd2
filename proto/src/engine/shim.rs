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
//! binding updates (RFC 6275 sec. 9.5.1), answers stray traffic with
//! binding errors, and on a revocation from the AP resets the flows of the
//! gone member locally, so applications fail fast.
//!
//! Binding states per member (docs/PROTOCOL.md sec. 7.4):
//!
//! ```text
//! (none) --valid BU--> Bound --valid BU (new seq)--> Bound (maybe moved)
//! Bound --BU lifetime 0 / lifetime over--> (none): its flows go through the AP
//! Bound|(none) --BRI from the AP--> (none): its flows are reset locally
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use super::fragments::FragmentRoutes;
use super::{
    DataAction, DropCounters, DropReason, Engine, TimerQueue, Transmit, canonical, control_frame,
    from_units, seq_newer, sign_binding, to_units, verify_binding,
};
use crate::crypto::{self, Drbg, Token};
use crate::wire::inner::{self, FlowKey, InnerInfo};
use crate::wire::mh::{MessageBody, ba_status, be_status};
use crate::wire::{
    FrameKind, MemberId, MobilityMessage, MobilityOption, TUNNEL_HEADER_LEN, TunnelHeader,
    WireError,
};

/// Client shim configuration.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    /// The access point's tunnel endpoint.
    pub access_point: SocketAddr,
    /// The home address whose traffic this shim carries.
    pub home_address: Ipv6Addr,
    /// This shim's own tunnel endpoint, as members see it.
    pub local: SocketAddr,
    /// Accept binding updates (route optimization).
    pub route_optimization: bool,
    /// A new nonce every this often (RFC 6275 sec. 5.2.7).
    pub nonce_interval: Duration,
    /// A nonce is accepted this long (MAX_NONCE_LIFETIME, 240 s).
    pub nonce_lifetime: Duration,
    /// Longest binding lifetime granted (MAX_RR_BINDING_LIFETIME, 420 s).
    pub max_binding_lifetime: Duration,
    /// Idle timeout of a TCP flow.
    pub tcp_idle: Duration,
    /// Idle timeout of a TCP flow after FIN, and of non-TCP flows.
    pub other_idle: Duration,
    /// Flow table size limit.
    pub max_flows: usize,
    /// Seed of the engine's random generator (Kcn, nonces).
    pub seed: [u8; 32],
}

impl ShimConfig {
    /// Defaults for the given endpoints.
    pub fn new(
        access_point: SocketAddr,
        home_address: Ipv6Addr,
        local: SocketAddr,
        seed: [u8; 32],
    ) -> Self {
        Self {
            access_point,
            home_address,
            local,
            route_optimization: true,
            nonce_interval: Duration::from_secs(30),
            nonce_lifetime: Duration::from_secs(240),
            max_binding_lifetime: Duration::from_secs(420),
            tcp_idle: Duration::from_secs(600),
            other_idle: Duration::from_secs(60),
            max_flows: 262_144,
            seed,
        }
    }
}

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
    /// Binding errors sent.
    pub binding_errors: u64,
    /// TCP resets sent to local applications.
    pub resets: u64,
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
    by_care_of: HashMap<SocketAddr, MemberId>,
    last_seq: HashMap<MemberId, u16>,
    flows: HashMap<FlowKey, FlowEntry>,
    /// The member (if any) each recent first fragment was sent for.
    fragments: FragmentRoutes<Option<MemberId>>,
    binding_errors_sent: super::PerPeerLimit,
    timers: TimerQueue<ShimTimer>,
    transmits: VecDeque<Transmit>,
    to_tun: VecDeque<Vec<u8>>,
    events: VecDeque<ShimEvent>,
    counters: ShimCounters,
}

impl Shim {
    /// A new shim; nonces start at `now`.
    pub fn new(now: Instant, config: ShimConfig) -> Self {
        let mut rng = Drbg::new(config.seed);
        let kcn = rng.key();
        let mut shim = Self {
            kcn,
            next_nonce_index: rng.next_u16(),
            rng,
            config,
            nonces: VecDeque::new(),
            bindings: HashMap::new(),
            by_care_of: HashMap::new(),
            last_seq: HashMap::new(),
            flows: HashMap::new(),
            fragments: FragmentRoutes::default(),
            binding_errors_sent: super::PerPeerLimit::default(),
            timers: TimerQueue::default(),
            transmits: VecDeque::new(),
            to_tun: VecDeque::new(),
            events: VecDeque::new(),
            counters: ShimCounters::default(),
        };
        shim.rotate_nonces(now);
        shim
    }

    /// Configuration in force.
    pub fn config(&self) -> &ShimConfig {
        &self.config
    }

    /// Point the shim at another access point (e.g. after DNS discovery).
    pub fn set_access_point(&mut self, access_point: SocketAddr) {
        self.config.access_point = access_point;
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

    fn rotate_nonces(&mut self, now: Instant) {
        let index = self.next_nonce_index;
        self.next_nonce_index = self.next_nonce_index.wrapping_add(1);
        let nonce = self.rng.token();
        self.nonces.push_back((index, nonce, now));
        let lifetime = self.config.nonce_lifetime;
        while self
            .nonces
            .front()
            .is_some_and(|(_, _, at)| *at + lifetime <= now)
        {
            self.nonces.pop_front();
        }
        self.timers
            .set(ShimTimer::NonceRotation, now + self.config.nonce_interval);
    }

    fn nonce(&self, index: u16) -> Option<Token> {
        self.nonces
            .iter()
            .find(|(i, _, _)| *i == index)
            .map(|(_, n, _)| *n)
    }

    fn current_nonce(&self) -> (u16, Token) {
        // rotate_nonces always leaves the newest nonce at the back.
        self.nonces
            .back()
            .map(|(i, n, _)| (*i, *n))
            .unwrap_or((0, [0; 8]))
    }

    fn valid_binding(&self, member: MemberId, now: Instant) -> Option<&ShimBinding> {
        self.bindings.get(&member).filter(|b| b.expires > now)
    }

    /// The member new flows may start at directly: the newest live,
    /// non-draining binding.
    fn preferred_member(&self, now: Instant) -> Option<MemberId> {
        self.bindings
            .iter()
            .filter(|(_, b)| b.expires > now && !b.draining)
            .max_by_key(|(_, b)| b.created)
            .map(|(id, _)| *id)
    }

    fn arm_flow_sweep(&mut self, now: Instant) {
        if self.timers.get(ShimTimer::FlowSweep).is_none() {
            self.timers
                .set(ShimTimer::FlowSweep, now + Duration::from_secs(5));
        }
    }

    fn sweep_flows(&mut self, now: Instant) {
        let (tcp_idle, other_idle) = (self.config.tcp_idle, self.config.other_idle);
        self.flows.retain(|k, f| {
            let idle = if k.proto == 6 && !f.closing {
                tcp_idle
            } else {
                other_idle
            };
            f.last_seen + idle > now
        });
        if !self.flows.is_empty() {
            self.arm_flow_sweep(now);
        }
    }

    /// Outgoing flow bookkeeping; returns the member the flow is pinned to.
    fn track_outgoing(
        &mut self,
        now: Instant,
        info: &InnerInfo,
        len: usize,
    ) -> Result<Option<MemberId>, DropReason> {
        let tcp = info.tcp;
        if let Some(f) = self.flows.get_mut(&info.flow) {
            f.last_seen = now;
            f.packets_out += 1;
            f.bytes += len as u64;
            if let Some(t) = tcp {
                if t.flags.ack {
                    f.tcp_rcv_nxt = Some(t.ack);
                }
                f.closing |= t.flags.fin || t.flags.rst;
            }
            return Ok(f.member);
        }
        if self.flows.len() >= self.config.max_flows {
            self.sweep_flows(now);
            if self.flows.len() >= self.config.max_flows {
                // Still routed (through the AP, which knows the flow), not tracked.
                return Err(DropReason::Overflow);
            }
        }
        // Only the start of a flow may go to a member directly; a segment of
        // a flow we do not know goes through the AP, whose affinity knows it.
        let starts = tcp.is_none_or(|t| t.flags.syn && !t.flags.ack);
        let member = if starts && self.config.route_optimization {
            self.preferred_member(now)
        } else {
            None
        };
        self.flows.insert(
            info.flow,
            FlowEntry {
                member,
                path: FlowPath::ViaAccessPoint,
                last_seen: now,
                packets_out: 1,
                packets_in: 0,
                bytes: len as u64,
                tcp_rcv_nxt: tcp.filter(|t| t.flags.ack).map(|t| t.ack),
                closing: tcp.is_some_and(|t| t.flags.fin || t.flags.rst),
            },
        );
        self.arm_flow_sweep(now);
        Ok(member)
    }

    /// Incoming flow bookkeeping: pin a flow to the member that served it.
    fn track_incoming(&mut self, now: Instant, packet: &[u8], member: Option<MemberId>) {
        let Ok(info) = inner::inspect(packet) else {
            return;
        };
        let key = info.flow.reversed();
        let len = packet.len() as u64;
        let room = self.flows.len() < self.config.max_flows;
        match self.flows.get_mut(&key) {
            Some(f) => {
                f.last_seen = now;
                f.packets_in += 1;
                f.bytes += len;
                if f.member.is_none() {
                    f.member = member;
                }
                if info.tcp.is_some_and(|t| t.flags.fin || t.flags.rst) {
                    f.closing = true;
                }
            }
            None if room => {
                self.flows.insert(
                    key,
                    FlowEntry {
                        member,
                        path: FlowPath::ViaAccessPoint,
                        last_seen: now,
                        packets_out: 0,
                        packets_in: 1,
                        bytes: len,
                        tcp_rcv_nxt: None,
                        closing: false,
                    },
                );
                self.arm_flow_sweep(now);
            }
            None => {}
        }
    }

    fn handle_control(&mut self, now: Instant, from: SocketAddr, mh: &[u8]) -> DataAction {
        let msg = match MobilityMessage::parse(mh) {
            Ok(m) => m,
            Err(WireError::UnknownMhType(_)) => {
                self.send_binding_error(now, from, be_status::UNRECOGNIZED_MH_TYPE);
                return self.counters.drops.drop(DropReason::UnexpectedMessage);
            }
            Err(_) => return self.counters.drops.drop(DropReason::Malformed),
        };
        let from_ap = from == canonical(self.config.access_point);
        match msg.body {
            MessageBody::HomeTestInit { cookie } if from_ap => self.answer_home_test(&msg, cookie),
            MessageBody::BindingRevocation { .. } if from_ap => self.revoke(&msg),
            MessageBody::BindingError { .. } if !from_ap => self.binding_error(from),
            MessageBody::CareOfTestInit { cookie } if !from_ap => {
                self.answer_care_of_test(from, cookie)
            }
            MessageBody::BindingUpdate {
                sequence,
                ack,
                home: false,
                lifetime,
            } if !from_ap => {
                self.handle_binding_update(now, from, mh, &msg, sequence, ack, lifetime)
            }
            _ => self.counters.drops.drop(DropReason::UnexpectedMessage),
        }
    }

    /// HoTI relayed by the AP: answer with a home keygen token (RFC 6275 sec. 9.4.1).
    fn answer_home_test(&mut self, msg: &MobilityMessage, cookie: Token) -> DataAction {
        if !self.config.route_optimization {
            return self.counters.drops.drop(DropReason::UnexpectedMessage);
        }
        let (Some((member, _)), Some(client)) = (msg.binding_id(), msg.correspondent()) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if msg.home_address() != Some(self.config.home_address) {
            return self.counters.drops.drop(DropReason::UnknownHomeAddress);
        }
        let (index, nonce) = self.current_nonce();
        let token = crypto::home_keygen_token(&self.kcn, self.config.home_address, member, &nonce);
        let reply = MobilityMessage::new(MessageBody::HomeTest {
            nonce_index: index,
            cookie,
            token,
        })
        .with(MobilityOption::BindingId {
            id: member,
            status: 0,
            flags: 0,
            care_of: None,
        })
        .with(MobilityOption::HomeAddress(self.config.home_address))
        .with(MobilityOption::Correspondent(client));
        self.transmits.push_back(Transmit {
            to: self.config.access_point,
            payload: control_frame(Some(member), &reply),
        });
        self.counters.tests_answered += 1;
        DataAction::Consumed
    }

    /// CoTI from a member's care-of endpoint (RFC 6275 sec. 9.4.2).
    fn answer_care_of_test(&mut self, from: SocketAddr, cookie: Token) -> DataAction {
        if !self.config.route_optimization {
            return self.counters.drops.drop(DropReason::UnexpectedMessage);
        }
        let (index, nonce) = self.current_nonce();
        let token = crypto::care_of_keygen_token(&self.kcn, from, &nonce);
        let reply = MobilityMessage::new(MessageBody::CareOfTest {
            nonce_index: index,
            cookie,
            token,
        });
        self.transmits.push_back(Transmit {
            to: from,
            payload: control_frame(None, &reply),
        });
        self.counters.tests_answered += 1;
        DataAction::Consumed
    }

    fn reject_bu(&mut self, from: SocketAddr, reason: DropReason) -> DataAction {
        self.counters.bus_rejected += 1;
        self.events
            .push_back(ShimEvent::BindingRejected { from, reason });
        self.counters.drops.drop(reason)
    }

    /// RFC 6275 sec. 9.5.1: receiving binding updates.
    #[allow(clippy::too_many_arguments)]
    fn handle_binding_update(
        &mut self,
        now: Instant,
        from: SocketAddr,
        mh: &[u8],
        msg: &MobilityMessage,
        seq: u16,
        ack: bool,
        lifetime: u16,
    ) -> DataAction {
        if !self.config.route_optimization {
            return self.reject_bu(from, DropReason::UnexpectedMessage);
        }
        let (Some((member, _)), Some((home_index, care_of_index))) =
            (msg.binding_id(), msg.nonce_indices())
        else {
            return self.reject_bu(from, DropReason::Malformed);
        };
        if msg.home_address() != Some(self.config.home_address) {
            return self.reject_bu(from, DropReason::UnknownHomeAddress);
        }
        let (home_nonce, care_of_nonce) = (self.nonce(home_index), self.nonce(care_of_index));
        let (Some(home_nonce), Some(care_of_nonce)) = (home_nonce, care_of_nonce) else {
            let status = match (home_nonce, care_of_nonce) {
                (None, None) => ba_status::EXPIRED_NONCES,
                (None, _) => ba_status::EXPIRED_HOME_NONCE_INDEX,
                _ => ba_status::EXPIRED_CARE_OF_NONCE_INDEX,
            };
            let ba = MobilityMessage::new(MessageBody::BindingAck {
                status,
                sequence: seq,
                lifetime: 0,
            });
            self.transmits.push_back(Transmit {
                to: from,
                payload: control_frame(Some(member), &ba),
            });
            return self.reject_bu(from, DropReason::Replay);
        };
        let home_token =
            crypto::home_keygen_token(&self.kcn, self.config.home_address, member, &home_nonce);
        let care_of_token = crypto::care_of_keygen_token(&self.kcn, from, &care_of_nonce);
        let kbm = crypto::kbm(&home_token, &care_of_token);
        if !verify_binding(mh, &kbm, from, self.config.local) {
            return self.reject_bu(from, DropReason::AuthFailed);
        }
        let send_ba = |shim: &mut Self, status: u8, sequence: u16, lifetime: u16| {
            let ba = MobilityMessage::new(MessageBody::BindingAck {
                status,
                sequence,
                lifetime,
            })
            .with(MobilityOption::BindingAuthorization([0; 12]));
            let mut payload = control_frame(Some(member), &ba);
            sign_binding(&mut payload, &kbm, from, shim.config.local);
            shim.transmits.push_back(Transmit { to: from, payload });
        };
        if let Some(last) = self.last_seq.get(&member).copied()
            && !seq_newer(seq, last)
        {
            send_ba(self, ba_status::SEQUENCE_OUT_OF_WINDOW, last, 0);
            return self.reject_bu(from, DropReason::Replay);
        }
        self.last_seq.insert(member, seq);
        self.counters.bus_accepted += 1;
        if lifetime == 0 {
            if let Some(old) = self.bindings.remove(&member) {
                self.by_care_of.remove(&old.care_of);
                self.events.push_back(ShimEvent::BindingRemoved { member });
            }
            self.timers.cancel(ShimTimer::BindingExpiry(member));
            if ack {
                send_ba(self, ba_status::ACCEPTED, seq, 0);
            }
            return DataAction::Consumed;
        }
        let granted = from_units(lifetime).min(self.config.max_binding_lifetime);
        let draining = msg.member_state().is_some_and(|(_, d, _)| d);
        let previous = self.bindings.get(&member).copied();
        let moved_from = previous.map(|b| b.care_of).filter(|c| *c != from);
        if let Some(old) = moved_from {
            self.by_care_of.remove(&old);
        }
        self.bindings.insert(
            member,
            ShimBinding {
                care_of: from,
                seq,
                expires: now + granted,
                draining,
                created: previous.map_or(now, |b| b.created),
            },
        );
        self.by_care_of.insert(from, member);
        self.timers
            .set(ShimTimer::BindingExpiry(member), now + granted);
        if previous.is_none() || moved_from.is_some() {
            self.events.push_back(ShimEvent::BindingUpdated {
                member,
                care_of: from,
                moved_from,
            });
        }
        if ack {
            send_ba(self, ba_status::ACCEPTED, seq, to_units(granted));
        }
        DataAction::Consumed
    }

    /// A member says it has no binding with us (it restarted): drop ours,
    /// so that its flows go through the AP (which keeps them on it) until
    /// it binds again. Only the member's registered care-of endpoint counts.
    fn binding_error(&mut self, from: SocketAddr) -> DataAction {
        let Some(member) = self.by_care_of.remove(&from) else {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        self.bindings.remove(&member);
        self.timers.cancel(ShimTimer::BindingExpiry(member));
        self.events.push_back(ShimEvent::BindingRemoved { member });
        DataAction::Consumed
    }

    /// The AP says a member is gone: drop its binding and reset its flows
    /// (RFC 5846 semantics, homeaddr's local reset).
    fn revoke(&mut self, msg: &MobilityMessage) -> DataAction {
        let Some((member, _)) = msg.binding_id() else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if let Some(b) = self.bindings.remove(&member) {
            self.by_care_of.remove(&b.care_of);
            self.timers.cancel(ShimTimer::BindingExpiry(member));
        }
        let hoa = self.config.home_address;
        let mut reset = 0;
        let mut gone = Vec::new();
        for (key, f) in &self.flows {
            if f.member != Some(member) {
                continue;
            }
            gone.push(*key);
            if let (6, Some(seq)) = (key.proto, f.tcp_rcv_nxt) {
                let from = SocketAddrV6::new(hoa, key.dst_port, 0, 0);
                let to = SocketAddrV6::new(key.src, key.src_port, 0, 0);
                self.to_tun.push_back(inner::tcp_reset(from, to, seq));
                reset += 1;
            }
        }
        for key in gone {
            self.flows.remove(&key);
        }
        self.counters.resets += reset as u64;
        self.events.push_back(ShimEvent::Revoked {
            member,
            flows_reset: reset,
        });
        DataAction::Consumed
    }

    fn send_binding_error(&mut self, now: Instant, to: SocketAddr, status: u8) {
        // At most one per endpoint per second (RFC 6275 sec. 9.3.3 rate limit).
        if !self.binding_errors_sent.allow(now, to) {
            return;
        }
        let be = MobilityMessage::new(MessageBody::BindingError {
            status,
            home_address: self.config.home_address,
        });
        self.transmits.push_back(Transmit {
            to,
            payload: control_frame(None, &be),
        });
        self.counters.binding_errors += 1;
    }
}

impl Engine for Shim {
    fn handle_udp(&mut self, now: Instant, from: SocketAddr, frame: &mut [u8]) -> DataAction {
        let header = match super::parse_header(frame, &mut self.counters.drops) {
            Ok(h) => h,
            Err(action) => return action,
        };
        let from = canonical(from);
        if header.kind == FrameKind::Control {
            return self.handle_control(now, from, &frame[TUNNEL_HEADER_LEN..]);
        }
        let packet = &frame[TUNNEL_HEADER_LEN..];
        let Ok((src, _)) = inner::addresses(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if src != self.config.home_address {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        if from == canonical(self.config.access_point) {
            self.counters.via_ap_in += 1;
            self.track_incoming(now, packet, header.member);
            return DataAction::ToTun;
        }
        match self.by_care_of.get(&from).copied() {
            Some(member)
                if header.member == Some(member) && self.valid_binding(member, now).is_some() =>
            {
                self.counters.direct_in += 1;
                self.track_incoming(now, packet, Some(member));
                DataAction::ToTun
            }
            _ => {
                self.send_binding_error(now, from, be_status::UNKNOWN_BINDING);
                self.counters.drops.drop(DropReason::UnknownPeer)
            }
        }
    }

    fn handle_tun(&mut self, now: Instant, packet: &mut [u8]) -> DataAction {
        let Ok(info) = inner::inspect(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if super::is_local_chatter(info.flow.src, info.flow.dst) {
            return self.counters.drops.drop(DropReason::NotTunnelled);
        }
        if info.flow.dst != self.config.home_address {
            return self.counters.drops.drop(DropReason::UnknownHomeAddress);
        }
        // A later fragment has no ports: it goes the way its first fragment
        // went, not where its portless flow key is pinned.
        let first_went = info
            .fragment
            .filter(|f| f.is_later())
            .and_then(|f| self.fragments.later(now, info.flow.src, f));
        let member = match first_went {
            Some(m) => m,
            None => match self.track_outgoing(now, &info, packet.len()) {
                Ok(m) => m,
                Err(reason) => {
                    self.counters.drops.drop(reason);
                    None
                }
            },
        };
        if let Some(f) = info.fragment.filter(|f| f.is_first()) {
            self.fragments.first(now, info.flow.src, f, member);
        }
        if let Some(m) = member
            && let Some(b) = self.valid_binding(m, now)
        {
            let to = b.care_of;
            if let Some(f) = self.flows.get_mut(&info.flow)
                && f.path != FlowPath::Direct
            {
                f.path = FlowPath::Direct;
                self.events.push_back(ShimEvent::FlowDirect {
                    flow: info.flow,
                    member: m,
                });
            }
            self.counters.direct_out += 1;
            return DataAction::Encap {
                to,
                header: TunnelHeader::data(Some(m)),
            };
        }
        if let Some(f) = self.flows.get_mut(&info.flow) {
            f.path = FlowPath::ViaAccessPoint;
        }
        self.counters.via_ap_out += 1;
        DataAction::Encap {
            to: self.config.access_point,
            header: TunnelHeader::data(member),
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
                    if self.bindings.get(&member).is_some_and(|b| b.expires <= now)
                        && let Some(b) = self.bindings.remove(&member)
                    {
                        self.by_care_of.remove(&b.care_of);
                        self.events.push_back(ShimEvent::BindingRemoved { member });
                    }
                }
                ShimTimer::FlowSweep => self.sweep_flows(now),
            }
        }
    }
}
