//! The member node engine: the mobile node of RFC 6275 sec. 11, one of many
//! sharing the home address, identified by its Binding ID.
//!
//! It registers its care-of endpoint with the access point (authenticated
//! BU with retransmission and exponential backoff, refreshed on the AP's BRR
//! heartbeat), serves packets for the HoA (decapsulated into the TUN), sends
//! answers back through the AP (reverse tunnelling, RFC 6275 sec. 5.5) or,
//! once route optimization is done, straight to the client's shim; runs
//! return routability and binding updates per shim client; re-registers and
//! re-binds when its care-of endpoint changes; drains and leaves on request.
//!
//! Registration states (docs/PROTOCOL.md sec. 7.2):
//!
//! ```text
//! Idle --start--> Registering --BA ok--> Registered --BRR/refresh--> Registered
//! Registering|Registered --signed BA 129/133, 4x 200, or 3x unsigned 146 (for our BU)--> Refused
//! Registered --lifetime over without BA--> Registering
//! any --leave--> Deregistering --BA / 3 tries--> Left
//! ```
//!
//! Route optimization per client (sec. 7.3):
//!
//! ```text
//! Idle --Shim Notice--> Testing --HoT+CoT--> BindingSent --BA 0--> Idle, binding active
//! Testing --no tokens: resend with backoff; client idle--> Idle
//! BindingSent --3 tries or BA 136-138--> Testing;  --BA 135--> BindingSent (resync)
//! BindingSent --other BA error--> Backoff --timer or notice--> Testing
//! binding active --80% of its lifetime, client active--> Testing (binding still used)
//! binding active --CoA change or BE from the shim--> Testing, binding dropped
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::ap::AUTH_SUBTYPE_MN_HA;
use super::{
    DataAction, DropCounters, DropReason, Engine, TimerQueue, Transmit, canonical, control_frame,
    from_units, sign_binding, sign_registration, to_units, verify_binding, verify_registration,
};
use crate::crypto::{self, Drbg, Kbm, Token};
use crate::wire::inner;
use crate::wire::mh::{MessageBody, ba_status};
use crate::wire::{
    FrameKind, MemberId, MobilityMessage, MobilityOption, TUNNEL_HEADER_LEN, TunnelHeader,
};

/// RFC 6275 sec. 12: MAX_TOKEN_LIFETIME, how long a keygen token may be reused.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(210);
/// BA statuses 136-138: a nonce index expired; run return routability again.
const EXPIRED_NONCE_STATUSES: std::ops::RangeInclusive<u8> =
    ba_status::EXPIRED_HOME_NONCE_INDEX..=ba_status::EXPIRED_NONCES;
/// Negative BAs with status 146 that are believed before the member gives up.
const AUTH_FAILURES_BEFORE_REFUSAL: u32 = 3;
/// Signed "id in use" refusals (status 200) before the member gives up: a
/// restarted member may meet its previous registration until the AP
/// declares it dead.
const ID_IN_USE_BEFORE_REFUSAL: u32 = 4;
/// After a move, answers to a bound shim wait this long at most for the
/// new binding (instead of detouring through the AP, where they would
/// arrive late and out of order); then they go through the AP.
pub const MOVE_HOLD: Duration = Duration::from_millis(100);
/// Answers held per shim during a move, at most.
const MOVE_HOLD_PACKETS: usize = 512;
/// Deregistration attempts before the member leaves anyway.
const DEREGISTRATION_ATTEMPTS: u32 = 3;

/// Member node configuration.
#[derive(Clone)]
pub struct MemberConfig {
    /// This member's id (Binding ID).
    pub id: MemberId,
    /// The shared home address.
    pub home_address: Ipv6Addr,
    /// The access point's tunnel endpoint.
    pub access_point: SocketAddr,
    /// This member's tunnel endpoint.
    pub care_of: SocketAddr,
    /// Mobility SPI of the registration key.
    pub spi: u32,
    /// Registration key shared with the AP.
    pub key: Vec<u8>,
    /// Weight asked for in Maglev.
    pub weight: u16,
    /// Random id of this process, so the AP can tell a restart from a clash.
    pub instance: u64,
    /// Registration lifetime asked for.
    pub lifetime: Duration,
    /// Route optimization binding lifetime asked for (at most 420 s at a shim).
    pub binding_lifetime: Duration,
    /// First retransmission timeout (RFC 6275 INITIAL_BINDACK_TIMEOUT).
    pub initial_retransmit: Duration,
    /// Largest retransmission timeout (RFC 6275 MAX_BINDACK_TIMEOUT).
    pub max_retransmit: Duration,
    /// Offer route optimization to shim clients.
    pub route_optimization: bool,
    /// Direct server return: answers to clients without a shim leave
    /// natively from this host with the HoA as source (LVS-TUN style)
    /// instead of back through the AP. The network must let this host send
    /// from the HoA.
    pub direct_return: bool,
    /// Seed of the engine's random generator.
    pub seed: [u8; 32],
}

impl std::fmt::Debug for MemberConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberConfig")
            .field("id", &self.id)
            .field("home_address", &self.home_address)
            .field("access_point", &self.access_point)
            .field("care_of", &self.care_of)
            .field("spi", &self.spi)
            .finish_non_exhaustive()
    }
}

impl MemberConfig {
    /// Defaults for the given identity and endpoints.
    pub fn new(
        id: MemberId,
        home_address: Ipv6Addr,
        access_point: SocketAddr,
        care_of: SocketAddr,
        key: Vec<u8>,
        seed: [u8; 32],
    ) -> Self {
        Self {
            id,
            home_address,
            access_point,
            care_of,
            spi: 1,
            key,
            weight: 100,
            instance: u64::from_be_bytes(seed[..8].try_into().unwrap_or([0; 8])),
            lifetime: Duration::from_secs(60),
            binding_lifetime: Duration::from_secs(120),
            initial_retransmit: Duration::from_secs(1),
            max_retransmit: Duration::from_secs(32),
            route_optimization: true,
            direct_return: false,
            seed,
        }
    }
}

/// Where the member's registration with the AP stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationState {
    /// Not started.
    Idle,
    /// A BU is out, no registration yet.
    Registering,
    /// Registered until `expires`.
    Registered {
        /// End of the granted lifetime.
        expires: Instant,
    },
    /// The AP refused us; the daemon should stop and say why.
    Refused {
        /// BA status.
        status: u8,
    },
    /// A deregistration BU is out.
    Deregistering,
    /// Deregistered.
    Left,
}

/// Return routability progress for one shim client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoState {
    /// Nothing in progress.
    Idle,
    /// HoTI/CoTI sent, collecting tokens.
    Testing {
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// BU sent, waiting for the BA.
    BindingSent {
        /// Sequence number of the BU.
        seq: u16,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// Gave up for now; try again after `until`.
    Backoff {
        /// Earliest retry.
        until: Instant,
    },
}

#[derive(Debug, Clone, Copy)]
struct GotToken {
    index: u16,
    token: Token,
    at: Instant,
}

/// A binding the shim has acknowledged: traffic to that client goes direct.
#[derive(Debug, Clone, Copy)]
pub struct ActiveBinding {
    /// Sequence number of the acknowledged BU.
    pub seq: u16,
    /// Binding management key.
    kbm: Kbm,
    nonces: (u16, u16),
    /// When the shim drops the binding.
    pub expires: Instant,
}

/// One client whose shim this member talks to.
#[derive(Debug, Clone)]
pub struct Correspondent {
    /// The client's address (inner source of its packets).
    pub client: Ipv6Addr,
    /// Its shim's tunnel endpoint.
    pub shim: SocketAddr,
    /// Return routability progress.
    pub rr: RoState,
    /// The binding in use, if any.
    pub binding: Option<ActiveBinding>,
    /// Last packet to or from the client.
    pub last_activity: Instant,
    home_cookie: Token,
    care_of_cookie: Token,
    home: Option<GotToken>,
    care_of: Option<GotToken>,
    deadline: Option<Instant>,
    rr_started: Instant,
    /// Answers held while re-binding after a move, and until when.
    held: VecDeque<Vec<u8>>,
    hold_until: Option<Instant>,
}

/// Something the member wants its operator to know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberEvent {
    /// The AP accepted the registration.
    Registered {
        /// Care-of endpoint registered.
        care_of: SocketAddr,
        /// Lifetime granted.
        lifetime: Duration,
    },
    /// The AP refused the registration; the member will not retry.
    RegistrationRefused {
        /// BA status.
        status: u8,
    },
    /// The AP reported an authentication failure (unsigned, so not yet believed).
    AuthFailureReported,
    /// The registration lapsed without a refresh.
    RegistrationLost,
    /// Deregistration finished.
    Left,
    /// Return routability started with a shim.
    ReturnRoutabilityStarted {
        /// Client.
        client: Ipv6Addr,
    },
    /// The shim acknowledged our binding: direct path in use.
    RouteOptimized {
        /// Client.
        client: Ipv6Addr,
        /// Its shim.
        shim: SocketAddr,
        /// From starting return routability to the BA.
        elapsed: Duration,
    },
    /// The shim rejected or lost our binding.
    BindingRejected {
        /// Client.
        client: Ipv6Addr,
        /// BA or BE status.
        status: u8,
    },
}

/// Every timer of the member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberTimer {
    /// Retransmit the outstanding registration BU.
    Retransmit,
    /// Refresh the registration before it lapses.
    Refresh,
    /// The registration lapses.
    Expiry,
    /// A correspondent's next deadline (retransmission, refresh or expiry).
    Correspondent(Ipv6Addr),
}

#[derive(Debug, Clone)]
struct PendingBu {
    seq: u16,
    lifetime: u16,
    attempt: u32,
}

/// Member counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberCounters {
    /// Drops by reason.
    pub drops: DropCounters,
    /// Packets received through the AP.
    pub via_ap_in: u64,
    /// Packets received directly from shims.
    pub direct_in: u64,
    /// Packets sent through the AP.
    pub via_ap_out: u64,
    /// Packets sent directly to shims.
    pub direct_out: u64,
    /// Packets to legacy clients returned natively (direct server return).
    pub direct_return: u64,
    /// Registration BUs sent, retransmissions included.
    pub registration_bus: u64,
    /// Registration retransmissions.
    pub retransmissions: u64,
    /// Return routability runs that ended in a binding.
    pub rr_successes: u64,
    /// Return routability runs that gave up or were rejected.
    pub rr_failures: u64,
}

/// The member engine.
#[derive(Debug)]
pub struct Member {
    config: MemberConfig,
    rng: Drbg,
    state: RegistrationState,
    draining: bool,
    ap_draining: bool,
    next_seq: u16,
    pending: Option<PendingBu>,
    auth_failures: u32,
    registered_care_of: Option<SocketAddr>,
    id_in_use: u32,
    ro_seq: u16,
    binding_errors_sent: super::PerPeerLimit,
    correspondents: HashMap<Ipv6Addr, Correspondent>,
    timers: TimerQueue<MemberTimer>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MemberEvent>,
    counters: MemberCounters,
}

impl Member {
    /// A member that has not registered yet; call [`Member::start`].
    pub fn new(config: MemberConfig) -> Self {
        let mut rng = Drbg::new(config.seed);
        let next_seq = rng.next_u16();
        Self {
            config,
            rng,
            state: RegistrationState::Idle,
            draining: false,
            ap_draining: false,
            next_seq,
            pending: None,
            auth_failures: 0,
            registered_care_of: None,
            id_in_use: 0,
            binding_errors_sent: super::PerPeerLimit::default(),
            ro_seq: next_seq.rotate_left(8),
            correspondents: HashMap::new(),
            timers: TimerQueue::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: MemberCounters::default(),
        }
    }

    /// Configuration in force.
    pub fn config(&self) -> &MemberConfig {
        &self.config
    }

    /// Registration state.
    pub fn state(&self) -> RegistrationState {
        self.state
    }

    /// True while draining, on our own request or the operator's at the AP.
    pub fn is_draining(&self) -> bool {
        self.draining || self.ap_draining
    }

    /// Counters.
    pub fn counters(&self) -> &MemberCounters {
        &self.counters
    }

    /// The shim clients and their bindings.
    pub fn correspondents(&self) -> impl Iterator<Item = &Correspondent> {
        self.correspondents.values()
    }

    /// The next event for the operator.
    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        self.events.pop_front()
    }

    /// Begin registering with the AP.
    pub fn start(&mut self, now: Instant) {
        if matches!(self.state, RegistrationState::Idle) {
            self.state = RegistrationState::Registering;
            self.send_registration(now, to_units(self.config.lifetime));
        }
    }

    /// The care-of endpoint changed: re-register and re-bind every shim
    /// (RFC 6275 sec. 11.7.1 and 11.7.2).
    pub fn set_care_of(&mut self, now: Instant, care_of: SocketAddr) {
        if canonical(care_of) == canonical(self.config.care_of) {
            return;
        }
        self.config.care_of = care_of;
        if matches!(
            self.state,
            RegistrationState::Registered { .. } | RegistrationState::Registering
        ) {
            self.send_registration(now, to_units(self.config.lifetime));
        }
        let clients: Vec<Ipv6Addr> = self.correspondents.keys().copied().collect();
        for client in clients {
            if let Some(c) = self.correspondents.get_mut(&client) {
                // The old care-of token is worthless now; the binding is
                // stale. Hold the answers for a bound shim until the new
                // binding is in place (a care-of test and a BU: about two
                // round trips to the shim), rather than detour via the AP.
                if c.binding.take().is_some() {
                    c.hold_until = Some(now + MOVE_HOLD);
                }
                c.care_of = None;
            }
            self.start_rr(now, client);
        }
    }

    /// Start or stop draining: the AP gives us no new clients, and bound
    /// shims stop sending us new flows.
    pub fn set_draining(&mut self, now: Instant, draining: bool) {
        if self.draining == draining {
            return;
        }
        let before = self.is_draining();
        self.draining = draining;
        if matches!(
            self.state,
            RegistrationState::Registered { .. } | RegistrationState::Registering
        ) {
            self.send_registration(now, to_units(self.config.lifetime));
        }
        if before != self.is_draining() {
            let clients: Vec<Ipv6Addr> = self.correspondents.keys().copied().collect();
            for client in clients {
                self.rebind(now, client);
            }
        }
    }

    /// Deregister from the AP and the shims (RFC 6275 sec. 11.5.4).
    pub fn leave(&mut self, now: Instant) {
        if matches!(
            self.state,
            RegistrationState::Left | RegistrationState::Deregistering
        ) {
            return;
        }
        let clients: Vec<Ipv6Addr> = self.correspondents.keys().copied().collect();
        for client in clients {
            let Some(c) = self.correspondents.get_mut(&client) else {
                continue;
            };
            if let Some(b) = c.binding.take() {
                let seq = self.ro_seq;
                self.ro_seq = self.ro_seq.wrapping_add(1);
                let shim = c.shim;
                self.send_binding_update(shim, seq, 0, &b.kbm, b.nonces, false);
            }
        }
        self.correspondents.clear();
        self.state = RegistrationState::Deregistering;
        self.send_registration(now, 0);
    }

    // ----- registration -----

    fn send_registration(&mut self, now: Instant, lifetime: u16) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.pending = Some(PendingBu {
            seq,
            lifetime,
            attempt: 1,
        });
        self.transmit_registration(seq, lifetime);
        self.timers.set(
            MemberTimer::Retransmit,
            now + self.config.initial_retransmit,
        );
    }

    fn transmit_registration(&mut self, seq: u16, lifetime: u16) {
        let c = &self.config;
        let msg = MobilityMessage::new(MessageBody::BindingUpdate {
            sequence: seq,
            ack: true,
            home: true,
            lifetime,
        })
        .with(MobilityOption::BindingId {
            id: c.id,
            status: 0,
            flags: 0,
            care_of: Some(c.care_of.ip()),
        })
        .with(MobilityOption::HomeAddress(c.home_address))
        .with(MobilityOption::MemberState {
            weight: c.weight,
            draining: self.draining,
            instance: c.instance,
        });
        self.counters.registration_bus += 1;
        self.send_to_ap(msg);
    }

    fn send_to_ap(&mut self, msg: MobilityMessage) {
        let c = &self.config;
        let msg = msg.with(MobilityOption::Authentication {
            subtype: AUTH_SUBTYPE_MN_HA,
            spi: c.spi,
            data: [0; 16],
        });
        let mut payload = control_frame(Some(c.id), &msg);
        sign_registration(&mut payload, &c.key, c.home_address);
        self.transmits.push_back(Transmit {
            to: c.access_point,
            payload,
        });
    }

    fn retransmit(&mut self, now: Instant) {
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        p.attempt += 1;
        let (seq, lifetime, attempt) = (p.seq, p.lifetime, p.attempt);
        if matches!(self.state, RegistrationState::Deregistering)
            && attempt > DEREGISTRATION_ATTEMPTS
        {
            self.pending = None;
            self.state = RegistrationState::Left;
            self.events.push_back(MemberEvent::Left);
            return;
        }
        self.counters.retransmissions += 1;
        self.transmit_registration(seq, lifetime);
        let backoff = self.config.initial_retransmit * 2u32.saturating_pow(attempt - 1);
        self.timers.set(
            MemberTimer::Retransmit,
            now + backoff.min(self.config.max_retransmit),
        );
    }

    /// The AP's BA says whether the operator drains us (its Member State option).
    fn apply_operator_drain(&mut self, now: Instant, draining: bool) {
        if self.ap_draining == draining {
            return;
        }
        let before = self.is_draining();
        self.ap_draining = draining;
        if before != self.is_draining() {
            let clients: Vec<Ipv6Addr> = self.correspondents.keys().copied().collect();
            for client in clients {
                self.rebind(now, client);
            }
        }
    }

    fn handle_registration_ack(
        &mut self,
        now: Instant,
        signed: bool,
        status: u8,
        seq: u16,
        lifetime: u16,
    ) -> (DataAction, bool) {
        let Some(p) = self.pending.clone() else {
            return (
                self.counters.drops.drop(DropReason::UnexpectedMessage),
                false,
            );
        };
        if !signed {
            // Only a refusal for a wrong key can come unsigned. Believe it
            // only for our outstanding BU (an off-path sender does not know
            // its random sequence number), and only after several.
            if status == ba_status::AUTHENTICATION_FAILED && seq == p.seq {
                self.auth_failures += 1;
                self.events.push_back(MemberEvent::AuthFailureReported);
                if self.auth_failures >= AUTH_FAILURES_BEFORE_REFUSAL {
                    self.refused(status);
                }
                return (DataAction::Consumed, false);
            }
            return (self.counters.drops.drop(DropReason::AuthFailed), false);
        }
        self.auth_failures = 0;
        let action = match status {
            ba_status::ACCEPTED if seq == p.seq => {
                self.pending = None;
                self.timers.cancel(MemberTimer::Retransmit);
                if p.lifetime == 0 {
                    self.state = RegistrationState::Left;
                    self.events.push_back(MemberEvent::Left);
                    return (DataAction::Consumed, true);
                }
                self.id_in_use = 0;
                let granted = from_units(lifetime);
                let was_registered = matches!(self.state, RegistrationState::Registered { .. });
                self.state = RegistrationState::Registered {
                    expires: now + granted,
                };
                self.timers.set(MemberTimer::Expiry, now + granted);
                self.timers.set(MemberTimer::Refresh, now + granted * 3 / 4);
                if !was_registered || self.registered_care_of != Some(self.config.care_of) {
                    self.registered_care_of = Some(self.config.care_of);
                    self.events.push_back(MemberEvent::Registered {
                        care_of: self.config.care_of,
                        lifetime: granted,
                    });
                }
                return (DataAction::Consumed, true);
            }
            ba_status::ACCEPTED => self.counters.drops.drop(DropReason::Replay),
            ba_status::SEQUENCE_OUT_OF_WINDOW => {
                // RFC 6275 sec. 11.7.1: resynchronise on the AP's last accepted number.
                self.next_seq = seq.wrapping_add(1);
                let lifetime = p.lifetime;
                self.send_registration(now, lifetime);
                DataAction::Consumed
            }
            // A refusal that is not for our outstanding BU is a replay.
            _ if seq != p.seq => self.counters.drops.drop(DropReason::Replay),
            ba_status::MEMBER_ID_IN_USE if self.id_in_use + 1 < ID_IN_USE_BEFORE_REFUSAL => {
                // Maybe our own previous process, not yet declared dead:
                // the retransmission timer tries again.
                self.id_in_use += 1;
                DataAction::Consumed
            }
            _ => {
                self.refused(status);
                DataAction::Consumed
            }
        };
        (action, false)
    }

    fn refused(&mut self, status: u8) {
        self.pending = None;
        self.timers.cancel(MemberTimer::Retransmit);
        self.timers.cancel(MemberTimer::Refresh);
        self.state = RegistrationState::Refused { status };
        self.events
            .push_back(MemberEvent::RegistrationRefused { status });
    }

    // ----- route optimization -----

    fn start_rr(&mut self, now: Instant, client: Ipv6Addr) {
        if !self.config.route_optimization {
            return;
        }
        let home_cookie = self.rng.token();
        let care_of_cookie = self.rng.token();
        let Some(c) = self.correspondents.get_mut(&client) else {
            return;
        };
        c.home_cookie = home_cookie;
        c.care_of_cookie = care_of_cookie;
        // RFC 6275 sec. 5.2.7: a home keygen token may be reused while fresh.
        if c.home.is_some_and(|h| now >= h.at + MAX_TOKEN_LIFETIME) {
            c.home = None;
        }
        c.care_of = None;
        c.rr = RoState::Testing { attempt: 1 };
        c.rr_started = now;
        self.events
            .push_back(MemberEvent::ReturnRoutabilityStarted { client });
        self.send_tests(now, client);
    }

    fn send_tests(&mut self, now: Instant, client: Ipv6Addr) {
        let Some(c) = self.correspondents.get(&client) else {
            return;
        };
        let (shim, home_cookie, care_of_cookie, need_home) =
            (c.shim, c.home_cookie, c.care_of_cookie, c.home.is_none());
        let attempt = match c.rr {
            RoState::Testing { attempt } => attempt,
            _ => 1,
        };
        if need_home {
            let msg = MobilityMessage::new(MessageBody::HomeTestInit {
                cookie: home_cookie,
            })
            .with(MobilityOption::BindingId {
                id: self.config.id,
                status: 0,
                flags: 0,
                care_of: None,
            })
            .with(MobilityOption::HomeAddress(self.config.home_address))
            .with(MobilityOption::Correspondent(client));
            self.send_to_ap(msg);
        }
        let coti = MobilityMessage::new(MessageBody::CareOfTestInit {
            cookie: care_of_cookie,
        })
        .with(MobilityOption::BindingId {
            id: self.config.id,
            status: 0,
            flags: 0,
            care_of: None,
        });
        self.transmits.push_back(Transmit {
            to: shim,
            payload: control_frame(Some(self.config.id), &coti),
        });
        self.arm_correspondent(now, client, Some(now + self.backoff(attempt)));
    }

    fn backoff(&self, attempt: u32) -> Duration {
        (self.config.initial_retransmit * 2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.config.max_retransmit)
    }

    fn arm_correspondent(&mut self, now: Instant, client: Ipv6Addr, deadline: Option<Instant>) {
        let Some(c) = self.correspondents.get_mut(&client) else {
            return;
        };
        c.deadline = deadline;
        // The refresh point of an active binding also needs the timer, while
        // no return routability run is under way; once passed, the binding's
        // expiry is the next thing to look at.
        let total = self.config.binding_lifetime;
        let refresh = c.binding.map(|b| {
            let refresh_at = b.expires - total / 5;
            if refresh_at > now && matches!(c.rr, RoState::Idle) {
                refresh_at
            } else {
                b.expires.max(now + Duration::from_millis(1))
            }
        });
        let at = [deadline, refresh, c.hold_until]
            .into_iter()
            .flatten()
            .min();
        match at {
            Some(at) => self.timers.set(MemberTimer::Correspondent(client), at),
            None => self.timers.cancel(MemberTimer::Correspondent(client)),
        }
    }

    /// Both tokens are in: derive Kbm and send the BU (RFC 6275 sec. 11.7.2).
    fn tokens_complete(&mut self, now: Instant, client: Ipv6Addr) {
        let Some(c) = self.correspondents.get_mut(&client) else {
            return;
        };
        let (Some(home), Some(care_of)) = (c.home, c.care_of) else {
            return;
        };
        let kbm = crypto::kbm(&home.token, &care_of.token);
        // One counter for all shims: a new correspondent entry never starts
        // behind what a shim remembers of this member.
        let seq = self.ro_seq;
        self.ro_seq = self.ro_seq.wrapping_add(1);
        c.rr = RoState::BindingSent { seq, attempt: 1 };
        let shim = c.shim;
        let lifetime = to_units(self.config.binding_lifetime);
        self.send_binding_update(shim, seq, lifetime, &kbm, (home.index, care_of.index), true);
        self.arm_correspondent(now, client, Some(now + self.config.initial_retransmit));
    }

    fn send_binding_update(
        &mut self,
        shim: SocketAddr,
        seq: u16,
        lifetime: u16,
        kbm: &Kbm,
        nonces: (u16, u16),
        ack: bool,
    ) {
        let c = &self.config;
        let msg = MobilityMessage::new(MessageBody::BindingUpdate {
            sequence: seq,
            ack,
            home: false,
            lifetime,
        })
        .with(MobilityOption::BindingId {
            id: c.id,
            status: 0,
            flags: 0,
            care_of: Some(c.care_of.ip()),
        })
        .with(MobilityOption::HomeAddress(c.home_address))
        .with(MobilityOption::MemberState {
            weight: c.weight,
            draining: self.draining || self.ap_draining,
            instance: c.instance,
        })
        .with(MobilityOption::NonceIndices {
            home: nonces.0,
            care_of: nonces.1,
        })
        .with(MobilityOption::BindingAuthorization([0; 12]));
        let mut payload = control_frame(Some(c.id), &msg);
        sign_binding(&mut payload, kbm, c.care_of, shim);
        self.transmits.push_back(Transmit { to: shim, payload });
    }

    /// Send a fresh BU with the tokens we hold (drain flag change), or run
    /// return routability again if they are too old.
    fn rebind(&mut self, now: Instant, client: Ipv6Addr) {
        let Some(c) = self.correspondents.get(&client) else {
            return;
        };
        let fresh = c.home.is_some_and(|h| now < h.at + MAX_TOKEN_LIFETIME)
            && c.care_of.is_some_and(|t| now < t.at + MAX_TOKEN_LIFETIME);
        if fresh && c.binding.is_some() {
            self.tokens_complete(now, client);
        } else if c.binding.is_some() || !matches!(c.rr, RoState::Idle | RoState::Backoff { .. }) {
            self.start_rr(now, client);
        }
    }

    fn correspondent_timer(&mut self, now: Instant, client: Ipv6Addr) {
        let Some(c) = self.correspondents.get_mut(&client) else {
            return;
        };
        if c.hold_until.is_some_and(|t| t <= now) {
            // The new binding is late: what was held goes through the AP.
            c.hold_until = None;
            let held = std::mem::take(&mut c.held);
            let ap = self.config.access_point;
            self.release_held(ap, held);
        }
        let Some(c) = self.correspondents.get_mut(&client) else {
            return;
        };
        if let Some(b) = c.binding
            && b.expires <= now
        {
            c.binding = None;
        }
        let due = c.deadline.is_some_and(|d| d <= now);
        let lifetime = self.config.binding_lifetime;
        let idle = now.saturating_duration_since(c.last_activity) > lifetime;
        match c.rr {
            RoState::Testing { attempt } if due => {
                if idle {
                    c.rr = RoState::Idle;
                    self.counters.rr_failures += 1;
                } else {
                    c.rr = RoState::Testing {
                        attempt: attempt + 1,
                    };
                    self.counters.retransmissions += 1;
                    self.send_tests(now, client);
                    return;
                }
            }
            RoState::BindingSent { seq, attempt } if due => {
                if attempt >= 3 {
                    // The tokens may be stale at the shim: start over.
                    self.counters.rr_failures += 1;
                    if idle {
                        c.rr = RoState::Idle;
                    } else {
                        self.start_rr(now, client);
                        return;
                    }
                } else {
                    c.rr = RoState::BindingSent {
                        seq,
                        attempt: attempt + 1,
                    };
                    let (shim, home, care_of) = (c.shim, c.home, c.care_of);
                    if let (Some(h), Some(co)) = (home, care_of) {
                        let kbm = crypto::kbm(&h.token, &co.token);
                        let lifetime = to_units(lifetime);
                        self.counters.retransmissions += 1;
                        self.send_binding_update(
                            shim,
                            seq,
                            lifetime,
                            &kbm,
                            (h.index, co.index),
                            true,
                        );
                    }
                    let at = now + self.backoff(attempt + 1);
                    self.arm_correspondent(now, client, Some(at));
                    return;
                }
            }
            RoState::Backoff { until } if until <= now && !idle => {
                self.start_rr(now, client);
                return;
            }
            _ => {}
        }
        // Refresh an active binding that is in use before it lapses.
        let Some(c) = self.correspondents.get(&client) else {
            return;
        };
        if let Some(b) = c.binding
            && now + lifetime / 5 >= b.expires
            && matches!(c.rr, RoState::Idle)
        {
            if idle {
                // Unused: let it lapse at the shim.
                self.correspondents.remove(&client);
                self.timers.cancel(MemberTimer::Correspondent(client));
                return;
            }
            self.start_rr(now, client);
            return;
        }
        if c.binding.is_none() && matches!(c.rr, RoState::Idle) && idle {
            self.correspondents.remove(&client);
            self.timers.cancel(MemberTimer::Correspondent(client));
            return;
        }
        let deadline = match c.rr {
            RoState::Backoff { until } => Some(until),
            _ => c.deadline.filter(|d| *d > now),
        };
        self.arm_correspondent(now, client, deadline);
    }

    fn handle_shim_notice(&mut self, now: Instant, client: Ipv6Addr, shim: SocketAddr) {
        if !self.config.route_optimization {
            return;
        }
        let shim = canonical(shim);
        match self.correspondents.get_mut(&client) {
            Some(c) if c.shim == shim => {
                c.last_activity = now;
                if let RoState::Backoff { until } = c.rr
                    && until <= now
                {
                    self.start_rr(now, client);
                } else if matches!(c.rr, RoState::Idle) && c.binding.is_none() {
                    self.start_rr(now, client);
                }
            }
            _ => {
                self.correspondents.insert(
                    client,
                    Correspondent {
                        client,
                        shim,
                        rr: RoState::Idle,
                        binding: None,
                        last_activity: now,
                        home_cookie: [0; 8],
                        care_of_cookie: [0; 8],
                        home: None,
                        care_of: None,
                        deadline: None,
                        rr_started: now,
                        held: VecDeque::new(),
                        hold_until: None,
                    },
                );
                self.start_rr(now, client);
            }
        }
    }

    fn handle_control(&mut self, now: Instant, from: SocketAddr, mh: &[u8]) -> DataAction {
        let msg = match MobilityMessage::parse(mh) {
            Ok(m) => m,
            Err(_) => return self.counters.drops.drop(DropReason::Malformed),
        };
        let from = canonical(from);
        if from == canonical(self.config.access_point) {
            let signed = verify_registration(mh, &self.config.key, self.config.home_address);
            // Every AP message names its member: one key may serve many members.
            if msg.binding_id().is_some_and(|(id, _)| id != self.config.id) {
                return self.counters.drops.drop(DropReason::UnexpectedMessage);
            }
            if let MessageBody::BindingAck {
                status,
                sequence,
                lifetime,
            } = msg.body
            {
                let (action, accepted) =
                    self.handle_registration_ack(now, signed, status, sequence, lifetime);
                if accepted && let Some((_, draining, _)) = msg.member_state() {
                    self.apply_operator_drain(now, draining);
                }
                return action;
            }
            if !signed {
                return self.counters.drops.drop(DropReason::AuthFailed);
            }
            return match msg.body {
                MessageBody::BindingRefreshRequest => {
                    if matches!(self.state, RegistrationState::Registered { .. }) {
                        self.send_registration(now, to_units(self.config.lifetime));
                    }
                    DataAction::Consumed
                }
                MessageBody::ShimNotice { client, shim } => {
                    self.handle_shim_notice(now, client, shim);
                    DataAction::Consumed
                }
                MessageBody::HomeTest {
                    nonce_index,
                    cookie,
                    token,
                } => {
                    let Some(client) = msg.correspondent() else {
                        return self.counters.drops.drop(DropReason::Malformed);
                    };
                    self.handle_test(now, client, true, nonce_index, cookie, token)
                }
                _ => self.counters.drops.drop(DropReason::UnexpectedMessage),
            };
        }
        // Everything else comes from shims.
        let Some(client) = self
            .correspondents
            .values()
            .find(|c| c.shim == from)
            .map(|c| c.client)
        else {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        match msg.body {
            MessageBody::CareOfTest {
                nonce_index,
                cookie,
                token,
            } => self.handle_test(now, client, false, nonce_index, cookie, token),
            MessageBody::BindingAck {
                status,
                sequence,
                lifetime,
            } => self.handle_binding_ack(now, client, mh, status, sequence, lifetime),
            MessageBody::BindingError { status, .. } => {
                // RFC 6275 sec. 11.3.6: the shim has no binding for us.
                if let Some(c) = self.correspondents.get_mut(&client) {
                    c.binding = None;
                }
                self.events
                    .push_back(MemberEvent::BindingRejected { client, status });
                self.start_rr(now, client);
                DataAction::Consumed
            }
            MessageBody::BindingRefreshRequest => {
                self.start_rr(now, client);
                DataAction::Consumed
            }
            _ => self.counters.drops.drop(DropReason::UnexpectedMessage),
        }
    }

    /// Send answers held during a move to `to` (the shim, or the AP).
    fn release_held(&mut self, to: SocketAddr, held: VecDeque<Vec<u8>>) {
        let header = TunnelHeader::data(Some(self.config.id)).to_bytes();
        for packet in held {
            let mut payload = Vec::with_capacity(header.len() + packet.len());
            payload.extend_from_slice(&header);
            payload.extend_from_slice(&packet);
            if to == self.config.access_point {
                self.counters.via_ap_out += 1;
            } else {
                self.counters.direct_out += 1;
            }
            self.transmits.push_back(Transmit { to, payload });
        }
    }

    fn handle_test(
        &mut self,
        now: Instant,
        client: Ipv6Addr,
        home: bool,
        index: u16,
        cookie: Token,
        token: Token,
    ) -> DataAction {
        let Some(c) = self.correspondents.get_mut(&client) else {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        if !matches!(c.rr, RoState::Testing { .. }) {
            return self.counters.drops.drop(DropReason::UnexpectedMessage);
        }
        let expected = if home {
            c.home_cookie
        } else {
            c.care_of_cookie
        };
        if !crypto::constant_time_eq(&expected, &cookie) {
            return self.counters.drops.drop(DropReason::AuthFailed);
        }
        let got = Some(GotToken {
            index,
            token,
            at: now,
        });
        if home {
            c.home = got;
        } else {
            c.care_of = got;
        }
        self.tokens_complete(now, client);
        DataAction::Consumed
    }

    fn handle_binding_ack(
        &mut self,
        now: Instant,
        client: Ipv6Addr,
        mh: &[u8],
        status: u8,
        seq: u16,
        lifetime: u16,
    ) -> DataAction {
        let Some(c) = self.correspondents.get_mut(&client) else {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        let RoState::BindingSent { seq: sent, .. } = c.rr else {
            return self.counters.drops.drop(DropReason::UnexpectedMessage);
        };
        let (Some(home), Some(care_of)) = (c.home, c.care_of) else {
            return self.counters.drops.drop(DropReason::UnexpectedMessage);
        };
        if status == ba_status::SEQUENCE_OUT_OF_WINDOW {
            // RFC 6275 sec. 11.7.2: the shim names the last number it
            // accepted from us (signed with this run's Kbm); continue above it.
            let kbm = crypto::kbm(&home.token, &care_of.token);
            if !verify_binding(mh, &kbm, self.config.care_of, c.shim) {
                return self.counters.drops.drop(DropReason::AuthFailed);
            }
            if crate::engine::seq_newer(seq.wrapping_add(1), self.ro_seq) {
                self.ro_seq = seq.wrapping_add(1);
            }
            self.tokens_complete(now, client);
            return DataAction::Consumed;
        }
        if seq != sent {
            return self.counters.drops.drop(DropReason::Replay);
        }
        if status == ba_status::ACCEPTED {
            let kbm = crypto::kbm(&home.token, &care_of.token);
            if !verify_binding(mh, &kbm, self.config.care_of, c.shim) {
                return self.counters.drops.drop(DropReason::AuthFailed);
            }
            c.binding = Some(ActiveBinding {
                seq,
                kbm,
                nonces: (home.index, care_of.index),
                expires: now + from_units(lifetime),
            });
            c.rr = RoState::Idle;
            c.hold_until = None;
            let held = std::mem::take(&mut c.held);
            let (shim, elapsed) = (c.shim, now - c.rr_started);
            self.release_held(shim, held);
            self.counters.rr_successes += 1;
            self.events.push_back(MemberEvent::RouteOptimized {
                client,
                shim,
                elapsed,
            });
            self.arm_correspondent(now, client, None);
            return DataAction::Consumed;
        }
        // Errors come unauthenticated (the shim may not have our tokens).
        self.counters.rr_failures += 1;
        self.events
            .push_back(MemberEvent::BindingRejected { client, status });
        if EXPIRED_NONCE_STATUSES.contains(&status) {
            c.home = None;
            self.start_rr(now, client);
        } else {
            let until = now + self.config.max_retransmit;
            c.rr = RoState::Backoff { until };
            self.arm_correspondent(now, client, Some(until));
        }
        DataAction::Consumed
    }

    // ----- data -----

    fn data_in(&mut self, now: Instant, from: SocketAddr, frame: &mut [u8]) -> DataAction {
        let Ok((src, dst)) = inner::addresses(&frame[TUNNEL_HEADER_LEN..]) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if dst != self.config.home_address {
            return self.counters.drops.drop(DropReason::UnknownHomeAddress);
        }
        if from == canonical(self.config.access_point) {
            self.counters.via_ap_in += 1;
            if let Some(c) = self.correspondents.get_mut(&src) {
                c.last_activity = now;
            }
            return DataAction::ToTun;
        }
        match self.correspondents.get_mut(&src) {
            Some(c) if c.shim == from => {
                c.last_activity = now;
                self.counters.direct_in += 1;
                DataAction::ToTun
            }
            Some(_) => self.counters.drops.drop(DropReason::SpoofedSource),
            None => {
                // A shim still bound to us from before a restart: tell it
                // (RFC 6275 sec. 6.1.9 status 1) so that it falls back to
                // the AP, which notices us and we bind again.
                self.send_binding_error(now, from);
                self.counters.drops.drop(DropReason::UnknownPeer)
            }
        }
    }

    fn send_binding_error(&mut self, now: Instant, to: SocketAddr) {
        if !self.binding_errors_sent.allow(now, to) {
            return;
        }
        let be = MobilityMessage::new(MessageBody::BindingError {
            status: crate::wire::mh::be_status::UNKNOWN_BINDING,
            home_address: self.config.home_address,
        })
        .with(MobilityOption::BindingId {
            id: self.config.id,
            status: 0,
            flags: 0,
            care_of: None,
        });
        self.transmits.push_back(Transmit {
            to,
            payload: control_frame(Some(self.config.id), &be),
        });
    }
}

impl Engine for Member {
    fn handle_udp(&mut self, now: Instant, from: SocketAddr, frame: &mut [u8]) -> DataAction {
        let header = match super::parse_header(frame, &mut self.counters.drops) {
            Ok(h) => h,
            Err(action) => return action,
        };
        if header.member.is_some_and(|m| m != self.config.id) {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        }
        match header.kind {
            FrameKind::Control => self.handle_control(now, from, &frame[TUNNEL_HEADER_LEN..]),
            FrameKind::Data => self.data_in(now, canonical(from), frame),
        }
    }

    fn handle_tun(&mut self, now: Instant, packet: &mut [u8]) -> DataAction {
        let Ok((src, dst)) = inner::addresses(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if super::is_local_chatter(src, dst) {
            return self.counters.drops.drop(DropReason::NotTunnelled);
        }
        if src != self.config.home_address {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        let header = TunnelHeader::data(Some(self.config.id));
        if let Some(c) = self.correspondents.get_mut(&dst) {
            c.last_activity = now;
            if c.binding.is_some_and(|b| b.expires > now) {
                self.counters.direct_out += 1;
                return DataAction::Encap { to: c.shim, header };
            }
            // Past the hold deadline, too, until the timer (due now) sends
            // everything held through the AP in order.
            if c.hold_until.is_some() && c.held.len() < MOVE_HOLD_PACKETS {
                c.held.push_back(packet.to_vec());
                return DataAction::Consumed;
            }
        }
        if self.config.direct_return && !self.correspondents.contains_key(&dst) {
            // Back to the kernel, which routes it natively (the shell's
            // source rule only catches locally generated packets).
            self.counters.direct_return += 1;
            return DataAction::ToTun;
        }
        self.counters.via_ap_out += 1;
        DataAction::Encap {
            to: self.config.access_point,
            header,
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_tun(&mut self) -> Option<Vec<u8>> {
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                MemberTimer::Retransmit => self.retransmit(now),
                MemberTimer::Refresh => {
                    if matches!(self.state, RegistrationState::Registered { .. })
                        && self.pending.is_none()
                    {
                        self.send_registration(now, to_units(self.config.lifetime));
                    }
                }
                MemberTimer::Expiry => {
                    if let RegistrationState::Registered { expires } = self.state
                        && expires <= now
                    {
                        self.state = RegistrationState::Registering;
                        self.events.push_back(MemberEvent::RegistrationLost);
                        if self.pending.is_none() {
                            self.send_registration(now, to_units(self.config.lifetime));
                        }
                    }
                }
                MemberTimer::Correspondent(client) => self.correspondent_timer(now, client),
            }
        }
    }
}
