//! The member node engine: the mobile node of RFC 6275 sec. 11, one of many
//! sharing the home address, identified by its Binding ID.
//!
//! It registers its care-of endpoint with every configured access point
//! (one registration and one member - AP session per AP: authenticated BU
//! with retransmission and exponential backoff, refreshed on that AP's BRR
//! heartbeat), serves packets for the HoA (decapsulated into the TUN),
//! sends answers back through the AP the flow came from (reverse
//! tunnelling, RFC 6275 sec. 5.5) or, once route optimization is done,
//! straight to the client's shim; reports the legacy flows it serves to
//! every AP (Flow Report), so any AP can take any flow over; runs return
//! routability and binding updates per shim client; re-registers and
//! re-binds when its care-of endpoint changes; drains and leaves on request.
//!
//! Registration states, per AP (docs/PROTOCOL.md sec. 7.2):
//!
//! ```text
//! Idle --start--> Registering --BA 0--> Registered --BRR/refresh--> Registered
//! Registering|Registered --signed BA 202--> same state, BU again at once (new seq, cookie)
//! Registering|Registered --signed BA 129/133, or 4x 200--> Refused
//! Registered --lifetime over without BA--> Registering
//! Registered --no sealed frame from the AP for ap_silence--> Registered, BU at once
//! Registering|Registered --zero-nonce Shim Cookie from the AP (500 ms apart)--> same, BU at once
//! any --leave--> Deregistering --BA / 3 tries--> Left
//! ```
//!
//! [`Member::state`] is the aggregate: Registered if any AP registered us,
//! Refused only if every AP refused, Left when every AP is done.
//!
//! An unsigned BA 146 is never final (docs/PROTOCOL.md 4.5). Every BA 0
//! carries the AP's Session {Ia, Na}; a new one makes a new member - AP
//! session (docs/PROTOCOL.md 4.1), in which everything else between that
//! AP and the member is sealed.
//!
//! Route optimization per client (sec. 7.3):
//!
//! ```text
//! Idle --Shim Notice--> Testing (HoTI; CoTI once the HoT and its ticket are in)
//! Testing --HoT+CoT--> BindingSent --BA 0 (Session)--> Idle, binding and session active
//! Testing --no tokens: resend with backoff; client idle--> Idle
//! BindingSent --3 tries or BA 136-138--> Testing;  --BA 135--> BindingSent (resync)
//! BindingSent --other BA error--> Backoff --timer or notice--> Testing
//! binding active --80% of its lifetime, client active--> Testing (binding still used)
//! binding active --80% of its lifetime, client idle--> lapsing (binding, session kept)
//! lapsing --packet to or from the client--> Testing (binding still used)
//! lapsing --binding expiry--> state dropped
//! binding active --CoA change--> Testing, binding dropped
//! any --Shim Notice with a new shim instance--> state dropped, Testing
//! ```
//!
//! By concern: `config` (configuration and defaults), `aps` (the access
//! points, the aggregate state, which AP an answer takes), `registration`
//! (BUs to the APs), `ack` (their BAs and the AP sessions), `restart`
//! (AP silence and the zero-nonce hint), `flows` (the legacy flow table and
//! Flow Reports), `correspondents` (return routability per shim client),
//! `bindings` (BUs to shims, their BAs and timers), `hold` (a move of the
//! care-of endpoint, answers held meanwhile), `keepalive` (NAT keepalives
//! on idle direct sessions), `data` (the data path),
//! `control` (dispatch of control messages), `events` (events and
//! counters).

mod ack;
mod aps;
mod bindings;
mod config;
mod control;
mod correspondents;
mod data;
mod events;
mod flows;
mod hold;
mod keepalive;
mod registration;
mod restart;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use self::aps::ApLink;
use self::flows::FlowTable;
use super::sealed::PeerSessions;
use super::{DataAction, Engine, TimerQueue, Transmit, TunPacket, family_name, reaches};
use crate::crypto::{Drbg, Kbm, Token};
use crate::wire::mh::ba_status;
use crate::wire::{MobilityMessage, MobilityOption};

pub use self::aps::ApView;
pub use self::config::{
    AP_PROBE_INTERVAL, DEFAULT_AP_SILENCE, DEFAULT_BINDING_LIFETIME, DEFAULT_INITIAL_RETRANSMIT,
    DEFAULT_LIFETIME, DEFAULT_MAX_CORRESPONDENTS, DEFAULT_MAX_FLOWS, DEFAULT_MAX_RETRANSMIT,
    DEFAULT_SPI, DEFAULT_WEIGHT, MemberConfig, MemberConfigError, SILENCE_RETRANSMIT,
    check_access_points,
};
pub use self::events::{LimitHits, MemberCounters, MemberEvent};
pub use self::flows::{FLOW_REPORT_DELAY, FLOW_REPORT_REFRESH};

/// RFC 6275 sec. 12: MAX_TOKEN_LIFETIME, how long a keygen token may be reused.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(210);
/// BA statuses 136-138: a nonce index expired; run return routability again.
const EXPIRED_NONCE_STATUSES: std::ops::RangeInclusive<u8> =
    ba_status::EXPIRED_HOME_NONCE_INDEX..=ba_status::EXPIRED_NONCES;
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
/// Zero-nonce Shim Cookies (an AP's hint that it lost our session) acted
/// on at most this often per AP.
pub const AP_HINT_INTERVAL: Duration = Duration::from_millis(500);
/// Where the member's registration with an AP (or, from
/// [`Member::state`], with its APs together) stands.
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
    /// The AP refused us (every AP, in the aggregate); the daemon should
    /// stop and say why.
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
    /// Home token only: the care-of ticket the shim gave with it (the
    /// CoTI must show it).
    ticket: Option<(u16, Token)>,
}

/// A session index and nonce of ours or a peer's (the Session option).
type SessionId = (u32, [u8; 16]);

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
#[derive(Debug)]
pub struct Correspondent {
    /// The client's address (inner source of its packets).
    pub client: Ipv6Addr,
    /// Its shim's tunnel endpoint.
    pub shim: SocketAddr,
    /// The home address its shim serves (the Shim Notice's Home Address;
    /// an IPv4 one as IPv4-mapped): used in its return routability and
    /// BUs, and the only source of our answers that go to it direct.
    pub home_address: Ipv6Addr,
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
    /// Answers held while re-binding after a move.
    hold: Option<Hold>,
    /// The AP (index in the configuration) whose Shim Notice last named
    /// the client: it has the shim's session, so the HoTI goes through it.
    ap: usize,
    /// The shim process the AP has a session with (Shim Notice).
    instance: Option<[u8; 8]>,
    /// Our Session {Im, Nm} of the outstanding (or last) RO BU.
    bu_session: SessionId,
    /// The member - shim sessions (from the RO BA 0).
    sessions: Option<PeerSessions>,
    /// The last datagram we sent direct to the shim (its NAT keepalive
    /// clock).
    last_direct_out: Instant,
    /// Care-of tests sent in a row without a CoT back.
    care_of_unanswered: u32,
    /// Where a Punch from the shim's address came from, when that is not
    /// `shim` (its NAT maps per destination: this is its mapping towards
    /// us). Care-of tests go there too; a CoT from it moves `shim` there.
    punched: Option<SocketAddr>,
}

/// Care-of tests unanswered in a row after which the status says why
/// there is no binding.
pub const CARE_OF_TESTS_BEFORE_NOTE: u32 = 3;

impl Correspondent {
    /// Care-of tests (CoTI) sent in a row without a CoT back.
    pub fn care_of_tests_unanswered(&self) -> u32 {
        self.care_of_unanswered
    }

    /// Why there is no binding from our `care_of`, when we can name it:
    /// the shim's endpoint is of the other family (no direct path), or the
    /// care-of test goes unanswered (the shim's NAT has no hole for us, or
    /// a firewall drops it); answers then stay on the AP path.
    pub fn why_unbound(&self, care_of: SocketAddr) -> Option<String> {
        if self.binding.is_some() {
            return None;
        }
        if !reaches(care_of, self.shim) {
            return Some(format!(
                "no common family: the shim is on {}, our care-of on {} (through the AP)",
                family_name(self.shim),
                family_name(care_of)
            ));
        }
        let n = self.care_of_unanswered;
        (n >= CARE_OF_TESTS_BEFORE_NOTE)
            .then(|| format!("care-of test unanswered ({n} tries): NAT without a hole?"))
    }

    /// An idle client's binding past its refresh point (80 % of its
    /// lifetime): no return routability run, it lapses at `expires`. Kept
    /// until then, as the shim still sends direct.
    fn lapsing(&self, now: Instant, lifetime: Duration) -> bool {
        matches!(self.rr, RoState::Idle)
            && self
                .binding
                .is_some_and(|b| now + lifetime / 5 >= b.expires)
    }
}

/// Answers to a shim held while the member re-binds after a move: sent
/// direct once the new binding is acknowledged, or through the AP at `until`.
#[derive(Debug, Clone)]
struct Hold {
    until: Instant,
    packets: VecDeque<Vec<u8>>,
}

/// Every timer of the member. The registration timers name the AP by its
/// index in [`MemberConfig::access_points`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberTimer {
    /// Retransmit the outstanding registration BU to the AP.
    Retransmit(usize),
    /// Refresh the registration with the AP before it lapses.
    Refresh(usize),
    /// The registration with the AP lapses.
    Expiry(usize),
    /// A correspondent's next deadline (retransmission, refresh or expiry).
    Correspondent(Ipv6Addr),
    /// Time to check whether the AP has been silent for `ap_silence`.
    ApSilence(usize),
    /// Report new flows (batched), re-report open ones, sweep the flow table.
    FlowReport,
    /// Behind a NAT: keep idle direct binding sessions' mappings alive.
    NatKeepalive,
}

#[derive(Debug, Clone)]
struct PendingBu {
    seq: u16,
    lifetime: u16,
    attempt: u32,
    /// Wait before the first retransmission (doubling from there).
    first_wait: Duration,
}

/// The member engine.
#[derive(Debug)]
pub struct Member {
    config: MemberConfig,
    rng: Drbg,
    /// Our own drain request (operator command at the member); our
    /// registration BUs carry it. Each AP's own is in its [`ApLink`].
    draining: bool,
    ro_seq: u16,
    /// One per distinct configured AP, in configured order.
    aps: Vec<ApLink>,
    /// The legacy flows served, and what is still to report.
    flows: FlowTable,
    correspondents: HashMap<Ipv6Addr, Correspondent>,
    /// Our receive indices of member - shim sessions -> their client.
    shim_indices: HashMap<u32, Ipv6Addr>,
    timers: TimerQueue<MemberTimer>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MemberEvent>,
    counters: MemberCounters,
}

impl Member {
    /// A member that has not registered yet; call [`Member::start`].
    pub fn new(config: MemberConfig) -> Self {
        let mut rng = Drbg::new(config.seed);
        let aps = ApLink::for_config(&config, &mut rng);
        let ro_seq = aps.first().map_or(0, |a| a.next_seq.rotate_left(8));
        let flows = FlowTable::new(config.max_flows);
        Self {
            config,
            rng,
            draining: false,
            ro_seq,
            aps,
            flows,
            correspondents: HashMap::new(),
            shim_indices: HashMap::new(),
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

    /// True while draining, on our own request or the operator's at any AP.
    pub fn is_draining(&self) -> bool {
        self.draining || self.aps.iter().any(|a| a.drains_us)
    }

    /// Counters.
    pub fn counters(&self) -> &MemberCounters {
        &self.counters
    }

    /// The shim clients and their bindings.
    pub fn correspondents(&self) -> impl Iterator<Item = &Correspondent> {
        self.correspondents.values()
    }

    /// The options every BU of this member carries, to the AP or a shim:
    /// Binding ID with the care-of address, HoA (`home`: ours to the AP,
    /// the shim's to a shim), Member State.
    fn with_bu_options(
        &self,
        msg: MobilityMessage,
        draining: bool,
        home: Ipv6Addr,
    ) -> MobilityMessage {
        let c = &self.config;
        msg.with(MobilityOption::BindingId {
            id: c.id,
            status: 0,
            flags: 0,
            care_of: Some(c.care_of.ip()),
        })
        .with(MobilityOption::HomeAddress(home))
        .with(MobilityOption::MemberState {
            weight: c.weight,
            draining,
            instance: c.instance,
        })
    }

    /// The next event for the operator.
    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        self.events.pop_front()
    }
}

impl Engine for Member {
    fn handle_udp(&mut self, now: Instant, from: SocketAddr, frame: &mut [u8]) -> DataAction {
        self.receive(now, from, frame)
    }

    fn handle_tun(&mut self, now: Instant, pkt: TunPacket<'_>) -> DataAction {
        self.data_out(now, pkt)
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
                MemberTimer::Retransmit(ap) => self.retransmit(now, ap),
                MemberTimer::Refresh(ap) => self.refresh_due(now, ap),
                MemberTimer::Expiry(ap) => self.expiry_due(now, ap),
                MemberTimer::Correspondent(client) => self.correspondent_timer(now, client),
                MemberTimer::ApSilence(ap) => self.ap_silence_due(now, ap),
                MemberTimer::FlowReport => self.flow_report_due(now),
                MemberTimer::NatKeepalive => self.nat_keepalive_due(now),
            }
        }
    }
}
