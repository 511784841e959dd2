//! The access point engine: the home agent of RFC 6275 sec. 10, for a home
//! address shared by many members.
//!
//! It keeps the member table (authenticated registrations with lifetimes and
//! a BRR heartbeat), picks a member per client by Maglev with an affinity
//! table in front (an established flow never changes member), forwards
//! native and shim-tunnelled packets to members, returns members' answers
//! to legacy clients (TUN) or shims (tagged with the member id), relays the
//! home test of return routability, tells members which clients run a shim,
//! and revokes a gone member at the shims it served.
//!
//! By concern:
//! - `config`: configuration, defaults, errors;
//! - [`state`]: a member's life (Active, Draining, Down) as one state machine;
//! - `registration`: the checks of a registration BU as a pure function, and
//!   the steps that apply an accepted one;
//! - `table`: the member table, Maglev and the operator's commands;
//! - `policy`: the configuration file's per-member weights and drains;
//! - `data`: the data path (legacy clients, shims, members' answers);
//! - `home_test`: the relay of the home test of return routability;
//! - `liveness`: heartbeat, members declared down, revocations;
//! - `sessions`: the index map of sealed sessions, member - AP sessions and
//!   the dispatch of every received frame (unsealed handshakes, sealed
//!   frames opened with the session they name);
//! - `handshake`: the shim - AP handshake and the limits on shim records;
//! - `flows`: with several APs per home address, members' Flow Reports,
//!   the settle time after a start, and the table digest.

mod config;
mod data;
mod flows;
mod handshake;
mod home_test;
mod liveness;
mod policy;
mod registration;
mod sessions;
pub mod state;
mod table;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::fragments::FragmentRoutes;
use super::{DataAction, DropCounters, Engine, TimerQueue, Transmit, TunPacket, binding_id};
use crate::affinity::AffinityTable;
use crate::crypto::{CookieJar, Drbg};
use crate::maglev::Maglev;
use crate::wire::inner;
use crate::wire::mh::revocation_trigger;
use crate::wire::{MemberId, MobilityMessage, MobilityOption};

pub use self::config::{
    ApConfig, ApError, DEFAULT_DEAD_AFTER, DEFAULT_HEARTBEAT, DEFAULT_INNER_MTU,
    DEFAULT_MAX_HANDSHAKES_PER_SECOND, DEFAULT_MAX_LIFETIME, DEFAULT_MAX_SHIM_CLIENTS,
    DEFAULT_MAX_SHIMS_PER_PREFIX, DEFAULT_NOTICE_INTERVAL, DEFAULT_REVOCATION_INTERVAL,
    DEFAULT_REVOCATION_REPEATS, DEFAULT_SETTLE, DEFAULT_SHIM_IDLE, DEFAULT_WEIGHT, Ipv4Prefix,
    MemberKey, parse_shim_prefix_v6,
};
pub use self::data::{NoticeState, ShimClient};
pub use self::handshake::{EVICTABLE_IDLE, ShimSession};
pub use self::policy::MemberPolicy;
pub use self::sessions::LimitHits;
pub use self::state::{DrainCause, DrainedBy, IllegalTransition, MemberState};
pub use self::table::{MemberCounters, MemberEntry, WeightOverride};
pub use crate::wire::option::AUTH_SUBTYPE_MN_HA;

/// Something the AP wants its operator to know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApEvent {
    /// A member (instance) registered.
    MemberRegistered {
        /// Member.
        id: MemberId,
        /// Its care-of endpoint.
        care_of: SocketAddr,
    },
    /// A registered member re-registered from a new care-of endpoint.
    MemberMoved {
        /// Member.
        id: MemberId,
        /// Old endpoint.
        from: SocketAddr,
        /// New endpoint.
        to: SocketAddr,
    },
    /// A registration was refused.
    RegistrationRefused {
        /// Who tried.
        from: SocketAddr,
        /// The id it claimed, if any.
        id: Option<MemberId>,
        /// BA status sent.
        status: u8,
    },
    /// A member started draining.
    MemberDraining {
        /// Member.
        id: MemberId,
    },
    /// A draining member is active again.
    MemberUndrained {
        /// Member.
        id: MemberId,
    },
    /// A member was declared down.
    MemberDown {
        /// Member.
        id: MemberId,
    },
    /// A member deregistered or was removed.
    MemberLeft {
        /// Member.
        id: MemberId,
    },
    /// A new shim client appeared.
    ShimClientSeen {
        /// Client address.
        client: Ipv6Addr,
        /// Its tunnel endpoint.
        endpoint: SocketAddr,
    },
    /// A shim that needs a pool address hand-shook, and the pool of its
    /// HoA's family is not configured (reported once per family).
    NoClientAddress {
        /// The shim's HoA is IPv4.
        ipv4: bool,
        /// Its tunnel endpoint.
        endpoint: SocketAddr,
    },
    /// A shim record's endpoint moved (roaming: a sealed frame from a new
    /// source, docs/PROTOCOL.md 4.6).
    ShimRoamed {
        /// Client address.
        client: Ipv6Addr,
        /// Old endpoint.
        from: SocketAddr,
        /// New endpoint.
        to: SocketAddr,
    },
    /// A shim was told that a member is gone.
    Revoked {
        /// Client address.
        client: Ipv6Addr,
        /// Member revoked.
        member: MemberId,
    },
    /// The configuration's policy changed a member's weight or drain.
    PolicyApplied {
        /// Member.
        id: MemberId,
        /// The weight the policy sets, if any.
        weight: Option<u32>,
        /// The policy drains it.
        drain: bool,
    },
}

/// Every timer of the AP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApTimer {
    /// Send the BRR heartbeat to every member.
    Heartbeat,
    /// A member's liveness deadline.
    Liveness(MemberId),
    /// A member's registration lifetime ends.
    Lifetime(MemberId),
    /// A draining member's flows are cut.
    DrainDeadline(MemberId),
    /// Expire idle affinity entries.
    AffinitySweep,
    /// Forget idle shim clients.
    ShimSweep,
    /// Send due repeated revocations.
    Revocations,
    /// Forget replaced sessions whose grace is over.
    SessionSweep,
}

/// AP-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApCounters {
    /// Drops by reason.
    pub drops: DropCounters,
    /// Native packets from legacy clients forwarded to members.
    pub legacy_in: u64,
    /// Packets from shims forwarded to members.
    pub shim_in: u64,
    /// Member answers written to the TUN (legacy clients).
    pub legacy_out: u64,
    /// Member answers relayed to shims.
    pub shim_out: u64,
    /// Home tests relayed (HoTI + HoT).
    pub home_tests_relayed: u64,
    /// Shim Notices sent.
    pub notices: u64,
    /// Revocations sent (each repeat counts).
    pub revocations: u64,
    /// Registrations accepted (including refreshes).
    pub registrations: u64,
    /// TCP SYNs whose MSS was clamped.
    pub mss_clamped: u64,
    /// Registration BUs answered with BA 202 (retry with cookie).
    pub cookie_challenges: u64,
    /// Shim Hellos answered with a Shim Cookie.
    pub shim_cookies: u64,
    /// Shim handshakes completed (Welcomes for new sessions).
    pub shim_handshakes: u64,
    /// Sealed keepalives (BRR) from shims, and empty sealed data frames
    /// (NAT keepalives) from shims and members.
    pub keepalives: u64,
    /// Completed shim handshakes left unanswered: a pool address was
    /// needed and that family's pool is not configured.
    pub no_client_address: u64,
    /// Welcomes without a Client Address: the instance's IPv4 pool
    /// address is held by another instance's live record.
    pub pool_collisions: u64,
    /// Shim records whose endpoint moved to the source of a newer sealed
    /// frame (roaming).
    pub roams: u64,
    /// Limit hits by limit.
    pub limit_hits: LimitHits,
    /// Flows members reported (every valid Flow option of a Flow Report).
    pub flows_reported: u64,
    /// Reported flows re-pinned from another member.
    pub flows_moved: u64,
}

/// The access point engine.
#[derive(Debug)]
pub struct AccessPoint {
    config: ApConfig,
    members: BTreeMap<MemberId, MemberEntry>,
    maglev: Maglev,
    affinity: AffinityTable,
    shims: HashMap<Ipv6Addr, ShimClient>,
    /// Shim records by prefix (/64, IPv4 /32), for `max_shims_per_prefix`.
    shim_prefixes: HashMap<Ipv6Addr, HashSet<Ipv6Addr>>,
    /// Every receive index of ours: whose session it is.
    index: HashMap<u32, sessions::Owner>,
    member_sessions: HashMap<MemberId, sessions::MemberSession>,
    drbg: Drbg,
    cookies: Option<CookieJar>,
    handshake_rate: handshake::HandshakeRate,
    /// Shim Cookies of nonce 0 to sources naming no session.
    stale_answers: sessions::AnswerLimit,
    timers: TimerQueue<ApTimer>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ApEvent>,
    revocations: Vec<liveness::PendingRevocation>,
    revocation_seq: u16,
    /// Member instances the operator removed: refused until they restart.
    banned: HashSet<(MemberId, u64)>,
    /// The member each recent first fragment went to.
    fragments: FragmentRoutes<MemberId>,
    /// `NoClientAddress` was reported for (IPv6 HoA, IPv4 HoA).
    no_pool_reported: (bool, bool),
    /// The first accepted registration: the settle time runs from it.
    first_registration: Option<Instant>,
    counters: ApCounters,
}

impl AccessPoint {
    /// A new AP with no members.
    pub fn new(config: ApConfig) -> Result<Self, ApError> {
        if config.keys.is_empty() {
            return Err(ApError::Config(
                "no registration key configured: add at least one [[keys]] entry".into(),
            ));
        }
        if config
            .shim_prefix_v6
            .is_some_and(|p| p.octets()[8..] != [0; 8])
        {
            return Err(ApError::Config(
                "shim_prefix_v6 must be a /64's network address".into(),
            ));
        }
        if config.shim_pool_v4.is_some_and(|p| p.len > 30) {
            return Err(ApError::Config(
                "shim_pool_v4 must be a prefix of /30 or shorter".into(),
            ));
        }
        let maglev =
            Maglev::new(config.maglev_table_size).map_err(|e| ApError::Config(e.to_string()))?;
        Ok(Self {
            affinity: AffinityTable::new(config.affinity),
            maglev,
            drbg: Drbg::new(config.seed),
            config,
            members: BTreeMap::new(),
            shims: HashMap::new(),
            shim_prefixes: HashMap::new(),
            index: HashMap::new(),
            member_sessions: HashMap::new(),
            cookies: None,
            handshake_rate: Default::default(),
            stale_answers: Default::default(),
            timers: TimerQueue::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            revocations: Vec::new(),
            revocation_seq: 0,
            banned: HashSet::new(),
            fragments: FragmentRoutes::default(),
            no_pool_reported: (false, false),
            first_registration: None,
            counters: ApCounters::default(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &ApConfig {
        &self.config
    }

    /// Replace the registration keys (config reload). Registered members keep
    /// their registration until their next message, which must use a key in force.
    pub fn set_keys(&mut self, keys: Vec<MemberKey>) -> Result<(), ApError> {
        if keys.is_empty() {
            return Err(ApError::Config("no registration key configured".into()));
        }
        self.config.keys = keys;
        Ok(())
    }

    /// The member table.
    pub fn members(&self) -> impl Iterator<Item = &MemberEntry> {
        self.members.values()
    }

    /// One member.
    pub fn member(&self, id: MemberId) -> Option<&MemberEntry> {
        self.members.get(&id)
    }

    /// Known shim clients.
    pub fn shim_clients(&self) -> impl Iterator<Item = (&Ipv6Addr, &ShimClient)> {
        self.shims.iter()
    }

    /// The affinity table.
    pub fn affinity(&self) -> &AffinityTable {
        &self.affinity
    }

    /// Counters.
    pub fn counters(&self) -> &ApCounters {
        &self.counters
    }

    /// The member Maglev would give a new client, if any.
    pub fn choose_member(&self, client: &Ipv6Addr) -> Option<MemberId> {
        self.maglev.lookup_client(client)
    }

    /// The next event for the operator.
    pub fn poll_event(&mut self) -> Option<ApEvent> {
        self.events.pop_front()
    }

    /// Emit, sign and queue an unsealed control message to a member (the
    /// registration BAs).
    fn send_to_member(&mut self, to: SocketAddr, id: MemberId, spi: u32, msg: MobilityMessage) {
        let msg = msg.with(MobilityOption::Authentication {
            subtype: AUTH_SUBTYPE_MN_HA,
            spi,
            data: [0; 16],
        });
        let mut payload = sessions::unsealed_frame(Some(id), &msg);
        if let Some(key) = self.config.key(spi) {
            sessions::sign_frame(&mut payload, key, self.config.home_address);
        }
        self.transmits.push_back(Transmit { to, payload });
    }

    /// Number of shim clients with a session.
    pub fn shim_client_count(&self) -> usize {
        self.shims.len()
    }

    /// A packet read from the TUN in a frame buffer: `frame` =
    /// `header(16) | packet | tag(16)`; on [`DataAction::Send``] the
    /// whole buffer is the sealed frame to send.
    pub fn handle_tun_frame(&mut self, now: Instant, frame: &mut [u8]) -> DataAction {
        self.data_from_tun(now, frame)
    }

    /// The Binding ID and Home Address options every message names a member by.
    fn member_id_options(&self, id: MemberId) -> [MobilityOption; 2] {
        [
            binding_id(id),
            MobilityOption::HomeAddress(self.config.home_address),
        ]
    }
}

impl Engine for AccessPoint {
    fn handle_udp(&mut self, now: Instant, from: SocketAddr, frame: &mut [u8]) -> DataAction {
        self.dispatch_udp(now, from, frame)
    }

    fn handle_tun(&mut self, now: Instant, mut pkt: TunPacket<'_>) -> DataAction {
        self.data_from_tun(now, pkt.frame_mut())
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
                ApTimer::Heartbeat => self.heartbeat(now),
                ApTimer::Liveness(id) => self.check_liveness(now, id),
                ApTimer::Lifetime(id) => self.check_lifetime(now, id),
                ApTimer::DrainDeadline(id) => {
                    self.member_gone(now, id, revocation_trigger::ADMINISTRATIVE)
                }
                ApTimer::AffinitySweep => {
                    self.affinity.expire(now);
                    if let Some(at) = self.affinity.next_expiry() {
                        self.timers.set(
                            ApTimer::AffinitySweep,
                            at.max(now + Duration::from_millis(100)),
                        );
                    }
                }
                ApTimer::ShimSweep => self.sweep_shims(now),
                ApTimer::Revocations => self.send_revocations(now),
                ApTimer::SessionSweep => self.sweep_sessions(now),
            }
        }
    }
}
