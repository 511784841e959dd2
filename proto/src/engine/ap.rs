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
//! Member states (docs/PROTOCOL.md sec. 7.1):
//!
//! ```text
//!   (none) --BU ok--> Active, or Draining (drain flag / operator drain)
//!   Active <--BU drain flag, operator drain / undrain--> Draining
//!   Active|Draining --no signed BU or HoTI for dead_after, or lifetime over--> Down
//!   Down --BU ok--> Active or Draining
//!   any --BU lifetime 0 / operator remove (instance refused from then on)--> (none)
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::fragments::FragmentRoutes;
use super::{
    DataAction, DropCounters, DropReason, Engine, TimerQueue, Transmit, canonical, control_frame,
    from_units, seq_newer, sign_registration, to_units, verify_registration,
};
use crate::affinity::{AffinityConfig, AffinityTable};
use crate::maglev::{DEFAULT_TABLE_SIZE, Maglev};
use crate::wire::inner::{self, InnerInfo};
use crate::wire::mh::{MessageBody, ba_status, revocation_trigger};
use crate::wire::{
    FrameKind, MemberId, MobilityMessage, MobilityOption, TUNNEL_HEADER_LEN, TunnelHeader,
};

pub use crate::wire::option::AUTH_SUBTYPE_MN_HA;

/// A registration key, named by its Security Parameter Index.
#[derive(Clone, PartialEq, Eq)]
pub struct MemberKey {
    /// Mobility SPI (RFC 4285) the member puts in its authentication option.
    pub spi: u32,
    /// Shared secret.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberKey")
            .field("spi", &self.spi)
            .finish_non_exhaustive()
    }
}

/// Access point configuration.
#[derive(Debug, Clone)]
pub struct ApConfig {
    /// The home address this AP owns.
    pub home_address: Ipv6Addr,
    /// Accepted registration keys.
    pub keys: Vec<MemberKey>,
    /// Interval of the BRR heartbeat to every member.
    pub heartbeat: Duration,
    /// A member not heard from for this long is down.
    pub dead_after: Duration,
    /// Longest registration lifetime granted.
    pub max_lifetime: Duration,
    /// Maglev lookup table size (prime).
    pub maglev_table_size: usize,
    /// Affinity table limits and idle timeouts.
    pub affinity: AffinityConfig,
    /// A shim client not heard from for this long is forgotten.
    pub shim_idle: Duration,
    /// Least time between two Shim Notices for one client and member
    /// before the member has started return routability.
    pub notice_interval: Duration,
    /// Inner MTU of the tunnels; TCP SYNs are clamped to `inner_mtu - 60`.
    pub inner_mtu: u16,
    /// How often a Binding Revocation Indication is sent (it is not acknowledged).
    pub revocation_repeats: u8,
    /// Gap between repeated revocations.
    pub revocation_interval: Duration,
}

impl ApConfig {
    /// Defaults for a home address and one key.
    pub fn new(home_address: Ipv6Addr, keys: Vec<MemberKey>) -> Self {
        Self {
            home_address,
            keys,
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(3),
            max_lifetime: Duration::from_secs(600),
            maglev_table_size: DEFAULT_TABLE_SIZE,
            affinity: AffinityConfig::default(),
            shim_idle: Duration::from_secs(300),
            notice_interval: Duration::from_secs(1),
            inner_mtu: 1448,
            revocation_repeats: 3,
            revocation_interval: Duration::from_millis(500),
        }
    }
}

/// Errors of operator commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApError {
    /// No member with that id is registered.
    #[error("unknown member {0}: list members to see the registered ids")]
    UnknownMember(MemberId),
    /// The configuration cannot be used.
    #[error("invalid access point configuration: {0}")]
    Config(String),
}

/// Where a member is in its life at this AP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Serving new and established flows.
    Active,
    /// Weight 0: established flows only, until `deadline` if set.
    Draining {
        /// When draining began.
        since: Instant,
        /// When the remaining flows are cut.
        deadline: Option<Instant>,
    },
    /// Not heard from: no flows.
    Down {
        /// When it was declared down.
        since: Instant,
    },
}

/// Per-member traffic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberCounters {
    /// Packets forwarded to the member.
    pub packets_to: u64,
    /// Bytes forwarded to the member.
    pub bytes_to: u64,
    /// Packets received from the member.
    pub packets_from: u64,
    /// Bytes received from the member.
    pub bytes_from: u64,
}

/// One registered member.
#[derive(Debug, Clone)]
pub struct MemberEntry {
    /// Binding ID.
    pub id: MemberId,
    /// Registered care-of endpoint.
    pub care_of: SocketAddr,
    /// Life state.
    pub state: MemberState,
    /// Weight the member asks for.
    pub advertised_weight: u16,
    /// Operator override of the weight.
    pub admin_weight: Option<u32>,
    /// Operator asked it to drain.
    pub admin_drain: bool,
    /// The member asked to drain.
    pub self_drain: bool,
    /// Random id of the member's process, to tell a restart from an id clash.
    pub instance: u64,
    /// SPI of the key it authenticated with.
    pub spi: u32,
    /// Last accepted BU sequence number.
    pub last_seq: u16,
    /// First registration of this instance.
    pub registered_since: Instant,
    /// End of the granted lifetime.
    pub lifetime_expires: Instant,
    /// Last authenticated message.
    pub last_heard: Instant,
    /// Traffic.
    pub counters: MemberCounters,
}

impl MemberEntry {
    /// The Maglev weight in force (0 = gets no new clients).
    pub fn effective_weight(&self) -> u32 {
        match self.state {
            MemberState::Active if !self.admin_drain && !self.self_drain => {
                self.admin_weight.unwrap_or(self.advertised_weight as u32)
            }
            _ => 0,
        }
    }
}

/// A client that runs a shim, as the AP knows it.
#[derive(Debug, Clone)]
pub struct ShimClient {
    /// Its tunnel endpoint.
    pub endpoint: SocketAddr,
    /// Last packet from it.
    pub last_seen: Instant,
    /// Members it has been served by, and when each was last noticed.
    pub members: HashMap<MemberId, NoticeState>,
}

/// Notice bookkeeping for one (shim client, member) pair.
#[derive(Debug, Clone, Copy)]
pub struct NoticeState {
    /// Last Shim Notice sent.
    pub last_notice: Option<Instant>,
    /// The member has sent a HoTI for this client.
    pub rr_seen: bool,
}

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
    /// A shim was told that a member is gone.
    Revoked {
        /// Client address.
        client: Ipv6Addr,
        /// Member revoked.
        member: MemberId,
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
}

#[derive(Debug, Clone)]
struct PendingRevocation {
    to: SocketAddr,
    payload: Vec<u8>,
    remaining: u8,
    next: Instant,
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
}

/// The access point engine.
#[derive(Debug)]
pub struct AccessPoint {
    config: ApConfig,
    members: BTreeMap<MemberId, MemberEntry>,
    by_care_of: HashMap<SocketAddr, MemberId>,
    maglev: Maglev,
    affinity: AffinityTable,
    shims: HashMap<Ipv6Addr, ShimClient>,
    timers: TimerQueue<ApTimer>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ApEvent>,
    revocations: Vec<PendingRevocation>,
    revocation_seq: u16,
    /// Member instances the operator removed: refused until they restart.
    banned: std::collections::HashSet<(MemberId, u64)>,
    /// The member each recent first fragment went to.
    fragments: FragmentRoutes<MemberId>,
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
        let maglev =
            Maglev::new(config.maglev_table_size).map_err(|e| ApError::Config(e.to_string()))?;
        Ok(Self {
            affinity: AffinityTable::new(config.affinity),
            maglev,
            config,
            members: BTreeMap::new(),
            by_care_of: HashMap::new(),
            shims: HashMap::new(),
            timers: TimerQueue::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            revocations: Vec::new(),
            revocation_seq: 0,
            banned: std::collections::HashSet::new(),
            fragments: FragmentRoutes::default(),
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

    // ----- operator commands -----

    /// Set a member's weight (overrides the weight it advertises).
    pub fn set_weight(&mut self, id: MemberId, weight: u32) -> Result<(), ApError> {
        let m = self
            .members
            .get_mut(&id)
            .ok_or(ApError::UnknownMember(id))?;
        m.admin_weight = Some(weight);
        self.rebuild();
        Ok(())
    }

    /// Drain a member: no new clients; its flows are cut after `deadline`.
    pub fn drain(
        &mut self,
        now: Instant,
        id: MemberId,
        deadline: Option<Duration>,
    ) -> Result<(), ApError> {
        let m = self
            .members
            .get_mut(&id)
            .ok_or(ApError::UnknownMember(id))?;
        m.admin_drain = true;
        let deadline = deadline.map(|d| now + d);
        if let MemberState::Active = m.state {
            m.state = MemberState::Draining {
                since: now,
                deadline,
            };
            self.events.push_back(ApEvent::MemberDraining { id });
        } else if let MemberState::Draining { deadline: d, .. } = &mut m.state {
            *d = deadline;
        }
        match deadline {
            Some(at) => self.timers.set(ApTimer::DrainDeadline(id), at),
            None => self.timers.cancel(ApTimer::DrainDeadline(id)),
        }
        self.rebuild();
        self.request_refresh(id);
        Ok(())
    }

    /// Undo an operator drain.
    pub fn undrain(&mut self, id: MemberId) -> Result<(), ApError> {
        let m = self
            .members
            .get_mut(&id)
            .ok_or(ApError::UnknownMember(id))?;
        m.admin_drain = false;
        self.timers.cancel(ApTimer::DrainDeadline(id));
        if matches!(m.state, MemberState::Draining { .. }) && !m.self_drain {
            m.state = MemberState::Active;
            self.events.push_back(ApEvent::MemberUndrained { id });
        }
        self.rebuild();
        self.request_refresh(id);
        Ok(())
    }

    /// Ask one member for a BU now (its BA carries the operator's drain flag).
    fn request_refresh(&mut self, id: MemberId) {
        let Some(m) = self.members.get(&id) else {
            return;
        };
        if matches!(m.state, MemberState::Down { .. }) {
            return;
        }
        let (to, spi) = (m.care_of, m.spi);
        let [bid, hoa] = self.member_id_options(id);
        let msg = MobilityMessage::new(MessageBody::BindingRefreshRequest)
            .with(bid)
            .with(hoa);
        self.send_to_member(to, id, spi, msg);
    }

    /// Remove a member now: its flows end, its shims are told.
    pub fn remove(&mut self, now: Instant, id: MemberId) -> Result<(), ApError> {
        let Some(m) = self.members.get(&id) else {
            return Err(ApError::UnknownMember(id));
        };
        // Refuse this process from now on (a restarted one may come back),
        // and make it ask now so that it learns at once.
        self.banned.insert((id, m.instance));
        self.request_refresh(id);
        self.forget_member(now, id, revocation_trigger::ADMINISTRATIVE);
        Ok(())
    }

    // ----- internals -----

    fn rebuild(&mut self) {
        let set: Vec<(MemberId, u32)> = self
            .members
            .values()
            .map(|m| (m.id, m.effective_weight()))
            .collect();
        // Cannot fail: ids are unique (map keys) and fewer than the table's slots.
        let _ = self.maglev.set_members(&set);
    }

    fn key(&self, spi: u32) -> Option<&[u8]> {
        self.config
            .keys
            .iter()
            .find(|k| k.spi == spi)
            .map(|k| k.key.as_slice())
    }

    /// Emit, sign and queue a control message to a member.
    fn send_to_member(&mut self, to: SocketAddr, id: MemberId, spi: u32, msg: MobilityMessage) {
        let msg = msg.with(MobilityOption::Authentication {
            subtype: AUTH_SUBTYPE_MN_HA,
            spi,
            data: [0; 16],
        });
        let mut payload = control_frame(Some(id), &msg);
        if let Some(key) = self.key(spi) {
            let key = key.to_vec();
            sign_registration(&mut payload, &key, self.config.home_address);
        }
        self.transmits.push_back(Transmit { to, payload });
    }

    fn member_id_options(&self, id: MemberId) -> [MobilityOption; 2] {
        [
            MobilityOption::BindingId {
                id,
                status: 0,
                flags: 0,
                care_of: None,
            },
            MobilityOption::HomeAddress(self.config.home_address),
        ]
    }

    fn handle_control(&mut self, now: Instant, from: SocketAddr, mh: &[u8]) -> DataAction {
        let msg = match MobilityMessage::parse(mh) {
            Ok(m) => m,
            Err(_) => return self.counters.drops.drop(DropReason::Malformed),
        };
        match msg.body {
            MessageBody::BindingUpdate {
                sequence,
                ack,
                home: true,
                lifetime,
            } => self.handle_registration(now, from, mh, &msg, sequence, ack, lifetime),
            MessageBody::HomeTestInit { cookie } => {
                self.relay_home_test_init(now, from, mh, &msg, cookie)
            }
            MessageBody::HomeTest { .. } => self.relay_home_test(now, from, &msg),
            _ => self.counters.drops.drop(DropReason::UnexpectedMessage),
        }
    }

    fn refuse(
        &mut self,
        from: SocketAddr,
        id: Option<MemberId>,
        seq: u16,
        status: u8,
        spi: Option<u32>,
    ) -> DataAction {
        self.events
            .push_back(ApEvent::RegistrationRefused { from, id, status });
        let mut msg = MobilityMessage::new(MessageBody::BindingAck {
            status,
            sequence: seq,
            lifetime: 0,
        });
        if let Some(id) = id {
            msg = msg.with(MobilityOption::BindingId {
                id,
                status: 0,
                flags: 0,
                care_of: None,
            });
        }
        match (id, spi) {
            // Signed when we know the key, so the member can trust the refusal.
            (Some(id), Some(spi)) if self.key(spi).is_some() => {
                self.send_to_member(from, id, spi, msg)
            }
            _ => self.transmits.push_back(Transmit {
                to: from,
                payload: control_frame(id, &msg),
            }),
        }
        DataAction::Consumed
    }

    /// RFC 6275 sec. 10.3.1 (primary care-of address registration), with
    /// RFC 4285 authentication and the homeaddr member-instance rule.
    #[allow(clippy::too_many_arguments)]
    fn handle_registration(
        &mut self,
        now: Instant,
        from: SocketAddr,
        mh: &[u8],
        msg: &MobilityMessage,
        seq: u16,
        ack: bool,
        lifetime: u16,
    ) -> DataAction {
        let from = canonical(from);
        let id = msg.binding_id().map(|(id, _)| id);
        let Some((AUTH_SUBTYPE_MN_HA, spi, _)) = msg.authentication() else {
            self.counters.drops.drop(DropReason::AuthFailed);
            return self.refuse(from, id, seq, ba_status::AUTHENTICATION_FAILED, None);
        };
        let valid = match self.key(spi) {
            Some(key) => verify_registration(mh, key, self.config.home_address),
            None => false,
        };
        if !valid {
            self.counters.drops.drop(DropReason::AuthFailed);
            return self.refuse(from, id, seq, ba_status::AUTHENTICATION_FAILED, None);
        }
        let Some(id) = id else {
            return self.refuse(
                from,
                None,
                seq,
                ba_status::ADMINISTRATIVELY_PROHIBITED,
                Some(spi),
            );
        };
        if msg.home_address() != Some(self.config.home_address) {
            return self.refuse(from, Some(id), seq, ba_status::NOT_HOME_AGENT, Some(spi));
        }
        let (weight, draining, instance) = msg.member_state().unwrap_or((100, false, 0));

        // Sequence and instance checks against an existing entry.
        if self.banned.contains(&(id, instance)) {
            return self.refuse(
                from,
                Some(id),
                seq,
                ba_status::ADMINISTRATIVELY_PROHIBITED,
                Some(spi),
            );
        }
        if let Some(m) = self.members.get(&id) {
            let alive = !matches!(m.state, MemberState::Down { .. }) && m.lifetime_expires > now;
            if m.instance != instance {
                // A new instance from the same endpoint is a restart: two
                // live processes cannot own one UDP endpoint.
                if alive && m.care_of != from {
                    return self.refuse(
                        from,
                        Some(id),
                        seq,
                        ba_status::MEMBER_ID_IN_USE,
                        Some(spi),
                    );
                }
            } else if !seq_newer(seq, m.last_seq) {
                self.counters.drops.drop(DropReason::Replay);
                let last = m.last_seq;
                return self.refuse(
                    from,
                    Some(id),
                    last,
                    ba_status::SEQUENCE_OUT_OF_WINDOW,
                    Some(spi),
                );
            }
        }

        if lifetime == 0 {
            // Deregistration (RFC 6275 sec. 10.3.2).
            if ack {
                let msg = MobilityMessage::new(MessageBody::BindingAck {
                    status: ba_status::ACCEPTED,
                    sequence: seq,
                    lifetime: 0,
                })
                .with(MobilityOption::BindingId {
                    id,
                    status: 0,
                    flags: 0,
                    care_of: None,
                });
                self.send_to_member(from, id, spi, msg);
            }
            if self.members.contains_key(&id) {
                self.forget_member(now, id, revocation_trigger::ADMINISTRATIVE);
            }
            return DataAction::Consumed;
        }

        let granted = from_units(lifetime).min(self.config.max_lifetime);
        self.counters.registrations += 1;
        let mut rebuild = false;
        match self.members.get_mut(&id) {
            Some(m) => {
                if m.instance != instance {
                    m.registered_since = now;
                    m.instance = instance;
                    m.counters = MemberCounters::default();
                    // A new process knows none of its shims: notice it again.
                    for shim in self.shims.values_mut() {
                        if let Some(st) = shim.members.get_mut(&id) {
                            *st = NoticeState {
                                last_notice: None,
                                rr_seen: false,
                            };
                        }
                    }
                }
                if m.care_of != from {
                    self.events.push_back(ApEvent::MemberMoved {
                        id,
                        from: m.care_of,
                        to: from,
                    });
                    self.by_care_of.remove(&m.care_of);
                    m.care_of = from;
                }
                m.last_seq = seq;
                m.spi = spi;
                m.last_heard = now;
                m.lifetime_expires = now + granted;
                if m.advertised_weight != weight {
                    m.advertised_weight = weight;
                    rebuild = true;
                }
                if m.self_drain != draining {
                    m.self_drain = draining;
                    rebuild = true;
                }
                let want_drain = m.self_drain || m.admin_drain;
                match m.state {
                    MemberState::Down { .. } => {
                        m.state = if want_drain {
                            MemberState::Draining {
                                since: now,
                                deadline: None,
                            }
                        } else {
                            MemberState::Active
                        };
                        self.events
                            .push_back(ApEvent::MemberRegistered { id, care_of: from });
                        rebuild = true;
                    }
                    MemberState::Active if want_drain => {
                        m.state = MemberState::Draining {
                            since: now,
                            deadline: None,
                        };
                        self.events.push_back(ApEvent::MemberDraining { id });
                        rebuild = true;
                    }
                    MemberState::Draining { .. } if !want_drain => {
                        m.state = MemberState::Active;
                        self.events.push_back(ApEvent::MemberUndrained { id });
                        rebuild = true;
                    }
                    _ => {}
                }
            }
            None => {
                let state = if draining {
                    MemberState::Draining {
                        since: now,
                        deadline: None,
                    }
                } else {
                    MemberState::Active
                };
                self.members.insert(
                    id,
                    MemberEntry {
                        id,
                        care_of: from,
                        state,
                        advertised_weight: weight,
                        admin_weight: None,
                        admin_drain: false,
                        self_drain: draining,
                        instance,
                        spi,
                        last_seq: seq,
                        registered_since: now,
                        lifetime_expires: now + granted,
                        last_heard: now,
                        counters: MemberCounters::default(),
                    },
                );
                self.events
                    .push_back(ApEvent::MemberRegistered { id, care_of: from });
                rebuild = true;
            }
        }
        self.by_care_of.insert(from, id);
        if rebuild {
            self.rebuild();
        }
        self.timers
            .set(ApTimer::Liveness(id), now + self.config.dead_after);
        self.timers.set(ApTimer::Lifetime(id), now + granted);
        self.timers
            .set_earliest(ApTimer::Heartbeat, now + self.config.heartbeat);
        if ack {
            let mut msg = MobilityMessage::new(MessageBody::BindingAck {
                status: ba_status::ACCEPTED,
                sequence: seq,
                lifetime: to_units(granted),
            })
            .with(MobilityOption::BindingId {
                id,
                status: 0,
                flags: 0,
                care_of: None,
            })
            .with(MobilityOption::BindingRefreshAdvice {
                interval: to_units(granted / 2),
            });
            msg = msg.with(MobilityOption::HomeAddress(self.config.home_address));
            // Tell the member whether the operator drains it, so that it
            // stops its shims from starting new flows at it (sec. 7.1).
            if let Some(m) = self.members.get(&id) {
                let weight = m.effective_weight().min(u16::MAX as u32) as u16;
                msg = msg.with(MobilityOption::MemberState {
                    weight,
                    draining: m.admin_drain,
                    instance: 0,
                });
            }
            self.send_to_member(from, id, spi, msg);
        }
        DataAction::Consumed
    }

    /// Check that a control message comes from the registered member it
    /// names and carries that member's valid authenticator.
    fn authenticated_member(
        &self,
        from: SocketAddr,
        mh: &[u8],
        msg: &MobilityMessage,
    ) -> Option<MemberId> {
        let (id, _) = msg.binding_id()?;
        let m = self.members.get(&id)?;
        if m.care_of != canonical(from) || matches!(m.state, MemberState::Down { .. }) {
            return None;
        }
        let key = self.key(m.spi)?;
        verify_registration(mh, key, self.config.home_address).then_some(id)
    }

    /// HoTI from a member: relay it to the shim of the client it names
    /// (the home part of return routability, RFC 6275 sec. 5.2.5 / 10.4.6).
    fn relay_home_test_init(
        &mut self,
        now: Instant,
        from: SocketAddr,
        mh: &[u8],
        msg: &MobilityMessage,
        cookie: [u8; 8],
    ) -> DataAction {
        let Some(id) = self.authenticated_member(from, mh, msg) else {
            return self.counters.drops.drop(DropReason::AuthFailed);
        };
        let Some(client) = msg.correspondent() else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        let Some(shim) = self.shims.get_mut(&client) else {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        shim.members
            .entry(id)
            .or_insert(NoticeState {
                last_notice: None,
                rr_seen: false,
            })
            .rr_seen = true;
        let to = shim.endpoint;
        let [bid, hoa] = self.member_id_options(id);
        let relayed = MobilityMessage::new(MessageBody::HomeTestInit { cookie })
            .with(bid)
            .with(hoa)
            .with(MobilityOption::Correspondent(client));
        self.transmits.push_back(Transmit {
            to,
            payload: control_frame(Some(id), &relayed),
        });
        self.counters.home_tests_relayed += 1;
        if let Some(m) = self.members.get_mut(&id) {
            m.last_heard = now;
        }
        DataAction::Consumed
    }

    /// HoT from a shim: relay it to the member it names.
    fn relay_home_test(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &MobilityMessage,
    ) -> DataAction {
        let (Some((id, _)), Some(client)) = (msg.binding_id(), msg.correspondent()) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        match self.shims.get_mut(&client) {
            // Route-optimized shims send little else through the AP: their
            // home tests keep them known (for revocations).
            Some(s) if s.endpoint == canonical(from) => s.last_seen = now,
            _ => return self.counters.drops.drop(DropReason::SpoofedSource),
        }
        let Some(m) = self.members.get(&id) else {
            return self.counters.drops.drop(DropReason::NoMember);
        };
        let (to, spi) = (m.care_of, m.spi);
        let mut relayed = MobilityMessage::new(msg.body.clone());
        for opt in &msg.options {
            if matches!(
                opt,
                MobilityOption::BindingId { .. }
                    | MobilityOption::HomeAddress(_)
                    | MobilityOption::Correspondent(_)
            ) {
                relayed = relayed.with(opt.clone());
            }
        }
        self.send_to_member(to, id, spi, relayed);
        self.counters.home_tests_relayed += 1;
        DataAction::Consumed
    }

    /// Forward a packet of a new or known flow to its member.
    ///
    /// `pinned` is the member a shim says the flow belongs to (its tag):
    /// a flow that began directly at a member is unknown here, and when its
    /// binding lapses it must still reach that member, not a Maglev pick.
    fn route_to_member(
        &mut self,
        now: Instant,
        info: &InnerInfo,
        len: usize,
        pinned: Option<MemberId>,
    ) -> Option<(MemberId, SocketAddr)> {
        let Self {
            affinity,
            maglev,
            members,
            timers,
            fragments,
            ..
        } = self;
        let client = info.flow.src;
        // A later fragment has no ports: it goes where its first fragment
        // went, not where its portless flow key leads.
        let first_went = info
            .fragment
            .filter(|f| f.is_later())
            .and_then(|f| fragments.later(now, client, f));
        let id = match first_went {
            Some(id) => id,
            None => affinity.lookup_or_insert(
                now,
                &info.flow,
                info.tcp.map(|t| t.flags),
                len,
                || {
                    pinned
                        .filter(|p| {
                            members
                                .get(p)
                                .is_some_and(|m| !matches!(m.state, MemberState::Down { .. }))
                        })
                        .or_else(|| maglev.lookup_client(&client))
                },
            )?,
        };
        if let Some(f) = info.fragment.filter(|f| f.is_first()) {
            fragments.first(now, client, f, id);
        }
        let m = members.get_mut(&id)?;
        if matches!(m.state, MemberState::Down { .. }) {
            return None;
        }
        m.counters.packets_to += 1;
        m.counters.bytes_to += len as u64;
        if timers.get(ApTimer::AffinitySweep).is_none() {
            timers.set(ApTimer::AffinitySweep, now + Duration::from_secs(1));
        }
        Some((id, m.care_of))
    }

    fn clamp(&mut self, packet: &mut [u8], info: &InnerInfo) {
        if info.tcp.is_some_and(|t| t.flags.syn)
            && inner::clamp_tcp_mss(packet, self.config.inner_mtu.saturating_sub(60))
        {
            self.counters.mss_clamped += 1;
        }
    }

    fn data_from_member(
        &mut self,
        now: Instant,
        id: MemberId,
        header: TunnelHeader,
        frame: &mut [u8],
    ) -> DataAction {
        if header.member.is_some_and(|h| h != id) {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        let packet = &mut frame[TUNNEL_HEADER_LEN..];
        let Ok(info) = inner::inspect(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if info.flow.src != self.config.home_address {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        let len = packet.len();
        match self.members.get_mut(&id) {
            Some(m) if !matches!(m.state, MemberState::Down { .. }) => {
                m.counters.packets_from += 1;
                m.counters.bytes_from += len as u64;
            }
            _ => return self.counters.drops.drop(DropReason::UnknownPeer),
        }
        let client = info.flow.dst;
        self.affinity
            .observe_reverse(now, &info.flow.reversed(), info.tcp.map(|t| t.flags), len);
        if let Some(shim) = self.shims.get(&client) {
            self.counters.shim_out += 1;
            DataAction::Encap {
                to: shim.endpoint,
                header: TunnelHeader::data(Some(id)),
            }
        } else {
            self.clamp(packet, &info);
            self.counters.legacy_out += 1;
            DataAction::ToTun
        }
    }

    fn data_from_shim(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: TunnelHeader,
        frame: &mut [u8],
    ) -> DataAction {
        let packet = &mut frame[TUNNEL_HEADER_LEN..];
        let Ok(info) = inner::inspect(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        let client = info.flow.src;
        if SocketAddr::new(client.into(), from.port()) != from {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        if info.flow.dst != self.config.home_address {
            return self.counters.drops.drop(DropReason::UnknownHomeAddress);
        }
        match self.shims.get_mut(&client) {
            Some(s) => {
                if s.endpoint != from {
                    // The shim restarted or moved: its members must run
                    // return routability with the new endpoint.
                    s.endpoint = from;
                    for st in s.members.values_mut() {
                        *st = NoticeState {
                            last_notice: None,
                            rr_seen: false,
                        };
                    }
                }
                s.last_seen = now;
            }
            None => {
                self.shims.insert(
                    client,
                    ShimClient {
                        endpoint: from,
                        last_seen: now,
                        members: HashMap::new(),
                    },
                );
                self.events.push_back(ApEvent::ShimClientSeen {
                    client,
                    endpoint: from,
                });
                self.timers
                    .set_earliest(ApTimer::ShimSweep, now + self.config.shim_idle);
            }
        }
        let len = packet.len();
        let Some((id, to)) = self.route_to_member(now, &info, len, header.member) else {
            return self.counters.drops.drop(DropReason::NoMember);
        };
        self.maybe_notice(now, client, from, id);
        self.counters.shim_in += 1;
        DataAction::Encap {
            to,
            header: TunnelHeader::data(Some(id)),
        }
    }

    /// Tell member `id` that `client` runs a shim at `endpoint`, unless told
    /// recently (RFC 6275 has no such message: deviation D5).
    fn maybe_notice(&mut self, now: Instant, client: Ipv6Addr, endpoint: SocketAddr, id: MemberId) {
        let interval = self.config.notice_interval;
        let Some(shim) = self.shims.get_mut(&client) else {
            return;
        };
        let st = shim.members.entry(id).or_insert(NoticeState {
            last_notice: None,
            rr_seen: false,
        });
        let gap = if st.rr_seen { interval * 30 } else { interval };
        if st.last_notice.is_some_and(|t| now < t + gap) {
            return;
        }
        st.last_notice = Some(now);
        let Some(m) = self.members.get(&id) else {
            return;
        };
        let (to, spi) = (m.care_of, m.spi);
        let [bid, hoa] = self.member_id_options(id);
        let msg = MobilityMessage::new(MessageBody::ShimNotice {
            client,
            shim: endpoint,
        })
        .with(bid)
        .with(hoa);
        self.send_to_member(to, id, spi, msg);
        self.counters.notices += 1;
    }

    /// The member is gone for good (deregistered or removed).
    fn forget_member(&mut self, now: Instant, id: MemberId, trigger: u8) {
        self.member_gone(now, id, trigger);
        if let Some(m) = self.members.remove(&id) {
            self.by_care_of.remove(&m.care_of);
        }
        for t in [
            ApTimer::Liveness(id),
            ApTimer::Lifetime(id),
            ApTimer::DrainDeadline(id),
        ] {
            self.timers.cancel(t);
        }
        self.rebuild();
        self.events.push_back(ApEvent::MemberLeft { id });
    }

    /// The member serves no flow any more: cut its affinity entries and tell
    /// the shims it served.
    fn member_gone(&mut self, now: Instant, id: MemberId, trigger: u8) {
        self.affinity.remove_member(id);
        let mut to_revoke = Vec::new();
        for (client, shim) in self.shims.iter_mut() {
            if shim.members.remove(&id).is_some() {
                to_revoke.push((*client, shim.endpoint));
            }
        }
        for (client, endpoint) in to_revoke {
            self.revocation_seq = self.revocation_seq.wrapping_add(1);
            let [bid, hoa] = self.member_id_options(id);
            let msg = MobilityMessage::new(MessageBody::BindingRevocation {
                trigger,
                sequence: self.revocation_seq,
            })
            .with(bid)
            .with(hoa)
            .with(MobilityOption::Correspondent(client));
            self.revocations.push(PendingRevocation {
                to: endpoint,
                payload: control_frame(Some(id), &msg),
                remaining: self.config.revocation_repeats.max(1),
                next: now,
            });
            self.events
                .push_back(ApEvent::Revoked { client, member: id });
        }
        self.send_revocations(now);
    }

    fn send_revocations(&mut self, now: Instant) {
        let interval = self.config.revocation_interval;
        let mut next: Option<Instant> = None;
        for r in self.revocations.iter_mut() {
            if r.next <= now && r.remaining > 0 {
                self.transmits.push_back(Transmit {
                    to: r.to,
                    payload: r.payload.clone(),
                });
                self.counters.revocations += 1;
                r.remaining -= 1;
                r.next = now + interval;
            }
            if r.remaining > 0 {
                next = Some(next.map_or(r.next, |n: Instant| n.min(r.next)));
            }
        }
        self.revocations.retain(|r| r.remaining > 0);
        match next {
            Some(at) => self.timers.set(ApTimer::Revocations, at),
            None => self.timers.cancel(ApTimer::Revocations),
        }
    }

    fn mark_down(&mut self, now: Instant, id: MemberId) {
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if matches!(m.state, MemberState::Down { .. }) {
            return;
        }
        m.state = MemberState::Down { since: now };
        self.timers.cancel(ApTimer::DrainDeadline(id));
        self.events.push_back(ApEvent::MemberDown { id });
        self.rebuild();
        self.member_gone(now, id, revocation_trigger::LIVENESS_FAILURE);
    }

    fn heartbeat(&mut self, now: Instant) {
        let targets: Vec<(SocketAddr, MemberId, u32)> = self
            .members
            .values()
            .filter(|m| !matches!(m.state, MemberState::Down { .. }))
            .map(|m| (m.care_of, m.id, m.spi))
            .collect();
        for (to, id, spi) in &targets {
            let [bid, hoa] = self.member_id_options(*id);
            let msg = MobilityMessage::new(MessageBody::BindingRefreshRequest)
                .with(bid)
                .with(hoa);
            self.send_to_member(*to, *id, *spi, msg);
        }
        if !targets.is_empty() {
            self.timers
                .set(ApTimer::Heartbeat, now + self.config.heartbeat);
        }
    }
}

impl Engine for AccessPoint {
    fn handle_udp(&mut self, now: Instant, from: SocketAddr, frame: &mut [u8]) -> DataAction {
        let header = match super::parse_header(frame, &mut self.counters.drops) {
            Ok(h) => h,
            Err(action) => return action,
        };
        match header.kind {
            FrameKind::Control => self.handle_control(now, from, &frame[TUNNEL_HEADER_LEN..]),
            FrameKind::Data => match self.by_care_of.get(&canonical(from)).copied() {
                Some(id) => self.data_from_member(now, id, header, frame),
                None => self.data_from_shim(now, canonical(from), header, frame),
            },
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
        let Some((id, to)) = self.route_to_member(now, &info, packet.len(), None) else {
            return self.counters.drops.drop(DropReason::NoMember);
        };
        self.clamp(packet, &info);
        self.counters.legacy_in += 1;
        DataAction::Encap {
            to,
            header: TunnelHeader::data(Some(id)),
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
                ApTimer::Heartbeat => self.heartbeat(now),
                ApTimer::Liveness(id) => {
                    let deadline = self
                        .members
                        .get(&id)
                        .map(|m| m.last_heard + self.config.dead_after);
                    match deadline {
                        Some(at) if at > now => self.timers.set(ApTimer::Liveness(id), at),
                        Some(_) => self.mark_down(now, id),
                        None => {}
                    }
                }
                ApTimer::Lifetime(id) => {
                    let expires = self.members.get(&id).map(|m| m.lifetime_expires);
                    match expires {
                        Some(at) if at > now => self.timers.set(ApTimer::Lifetime(id), at),
                        Some(_) => self.mark_down(now, id),
                        None => {}
                    }
                }
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
                ApTimer::ShimSweep => {
                    let idle = self.config.shim_idle;
                    self.shims.retain(|_, s| s.last_seen + idle > now);
                    if let Some(oldest) = self.shims.values().map(|s| s.last_seen).min() {
                        self.timers.set(ApTimer::ShimSweep, oldest + idle);
                    }
                }
                ApTimer::Revocations => self.send_revocations(now),
            }
        }
    }
}
