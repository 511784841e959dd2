//! Registration: RFC 6275 sec. 10.3.1 (primary care-of address
//! registration) and 10.3.2 (deregistration), with RFC 4285 authentication
//! and the homeaddr member-instance rule.
//!
//! [`check_registration`] decides, without changing anything, whether a
//! registration BU is accepted; the steps below apply its answer.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::sessions::unsealed_frame;
use super::state::{Change, DrainCause, DrainedBy, MemberState};
use super::table::{MemberCounters, MemberEntry};
use super::{AUTH_SUBTYPE_MN_HA, AccessPoint, ApConfig, ApEvent, ApTimer, DEFAULT_WEIGHT};
use crate::crypto::{CookieJar, CookieKind};
use crate::engine::{
    DataAction, DropReason, ReceivedBu, Transmit, binding_id, from_units, seq_newer, to_units,
    verify_registration,
};
use crate::wire::mh::{MessageBody, ba_status, revocation_trigger};
use crate::wire::{MemberId, MobilityMessage, MobilityOption};

/// A registration that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Accepted {
    pub id: MemberId,
    pub spi: u32,
    pub what: Registration,
    /// The BU's Session option: the member's index and nonce.
    pub session: (u32, [u8; 16]),
}

/// What an accepted BU asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Registration {
    /// Lifetime 0.
    Deregister,
    /// Register or refresh.
    Register {
        /// Lifetime granted (at most the configured maximum).
        granted: Duration,
        /// Weight advertised.
        weight: u16,
        /// The member asks to drain.
        draining: bool,
        /// The member's process id.
        instance: u64,
    },
}

/// A refused registration: the BA to answer and the drop to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refusal {
    /// The id it claimed, if any.
    pub id: Option<MemberId>,
    /// Sequence number for the BA.
    pub seq: u16,
    /// BA status.
    pub status: u8,
    /// The SPI of a valid key: the refusal is signed with it.
    pub spi: Option<u32>,
    /// A drop to count, if the refusal is one.
    pub drop: Option<DropReason>,
    /// No answer at all (a BU we cannot make sense of).
    pub silent: bool,
}

impl Refusal {
    fn new(id: Option<MemberId>, seq: u16, status: u8, spi: Option<u32>) -> Self {
        Self {
            id,
            seq,
            status,
            spi,
            drop: None,
            silent: false,
        }
    }

    fn counting(self, reason: DropReason) -> Self {
        Self {
            drop: Some(reason),
            ..self
        }
    }
}

/// Check a registration BU against the keys (and the ids each may
/// register), the home address, the cookie of its endpoint, the operator's
/// bans and the member table, changing nothing.
pub(super) fn check_registration(
    config: &ApConfig,
    members: &BTreeMap<MemberId, MemberEntry>,
    banned: &HashSet<(MemberId, u64)>,
    jar: &CookieJar,
    now: Instant,
    req: &ReceivedBu<'_>,
) -> Result<Accepted, Refusal> {
    let (seq, msg) = (req.seq, req.msg);
    let id = msg.binding_id().map(|(id, _)| id);
    let auth_failed = Refusal::new(id, seq, ba_status::AUTHENTICATION_FAILED, None)
        .counting(DropReason::AuthFailed);
    let Some((AUTH_SUBTYPE_MN_HA, spi, _)) = msg.authentication() else {
        return Err(auth_failed);
    };
    let valid = config
        .key(spi)
        .is_some_and(|key| verify_registration(req.mh, key, config.home_address));
    if !valid {
        return Err(auth_failed);
    }
    let Some(id) = id else {
        return Err(Refusal::new(
            None,
            seq,
            ba_status::ADMINISTRATIVELY_PROHIBITED,
            Some(spi),
        ));
    };
    let refuse = |status| Refusal::new(Some(id), seq, status, Some(spi));
    if !config.member_key(spi).is_some_and(|k| k.may_register(id)) {
        return Err(refuse(ba_status::ADMINISTRATIVELY_PROHIBITED).counting(DropReason::AuthFailed));
    }
    if msg.home_address() != Some(config.home_address) {
        return Err(refuse(ba_status::NOT_HOME_AGENT));
    }
    let Some(session) = msg.session() else {
        // A v1 BU: no session to make; nothing to answer.
        return Err(Refusal {
            silent: true,
            ..refuse(0).counting(DropReason::Malformed)
        });
    };
    let cookie_ok = msg
        .cookie()
        .is_some_and(|c| jar.check(CookieKind::Registration, req.from, &id.0.to_be_bytes(), &c));
    if !cookie_ok {
        return Err(refuse(ba_status::RETRY_WITH_COOKIE));
    }
    let (weight, draining, instance) = msg.member_state().unwrap_or((DEFAULT_WEIGHT, false, 0));
    if banned.contains(&(id, instance)) {
        return Err(refuse(ba_status::ADMINISTRATIVELY_PROHIBITED));
    }
    if let Some(m) = members.get(&id) {
        let alive = !m.is_down() && m.lifetime_expires > now;
        if m.instance != instance {
            // A new instance from the same endpoint is a restart: two
            // live processes cannot own one UDP endpoint.
            if alive && m.care_of != req.from {
                return Err(refuse(ba_status::MEMBER_ID_IN_USE));
            }
        } else if !seq_newer(seq, m.last_seq) {
            // The BA names the last number accepted, to resynchronise on.
            return Err(Refusal::new(
                Some(id),
                m.last_seq,
                ba_status::SEQUENCE_OUT_OF_WINDOW,
                Some(spi),
            )
            .counting(DropReason::Replay));
        }
    }
    let what = if req.lifetime == 0 {
        Registration::Deregister
    } else {
        Registration::Register {
            granted: from_units(req.lifetime).min(config.max_lifetime),
            weight,
            draining,
            instance,
        }
    };
    Ok(Accepted {
        id,
        spi,
        what,
        session,
    })
}

impl AccessPoint {
    pub(super) fn handle_registration(&mut self, now: Instant, req: &ReceivedBu<'_>) -> DataAction {
        self.cookie_jar(now);
        let Some(jar) = self.cookies.as_ref() else {
            return DataAction::Consumed;
        };
        match check_registration(&self.config, &self.members, &self.banned, jar, now, req) {
            Err(refusal) => self.refuse(now, req.from, refusal),
            Ok(Accepted {
                id,
                spi,
                what: Registration::Deregister,
                ..
            }) => {
                if req.ack {
                    self.acknowledge(now, req, id, spi, 0, None);
                }
                if self.members.contains_key(&id) {
                    self.forget_member(now, id, revocation_trigger::ADMINISTRATIVE);
                }
                DataAction::Consumed
            }
            Ok(Accepted {
                id,
                spi,
                what:
                    Registration::Register {
                        granted,
                        weight,
                        draining,
                        instance,
                    },
                session,
            }) => {
                self.counters.registrations += 1;
                let before = self.members.get(&id).map(MemberEntry::effective_weight);
                let entry = Registered {
                    id,
                    spi,
                    from: req.from,
                    seq: req.seq,
                    granted,
                    weight,
                    draining,
                    instance,
                };
                if self.register(now, &entry) {
                    // Before Maglev is rebuilt: no flow pins to a member its
                    // policy drains.
                    self.apply_policy(now, id);
                }
                let key = self.config.key(spi).unwrap_or_default().to_vec();
                let ours = self.member_session_for(now, id, &key, instance, session);
                if self.members.get(&id).map(MemberEntry::effective_weight) != before {
                    self.rebuild();
                }
                self.timers
                    .set(ApTimer::Liveness(id), now + self.config.dead_after);
                self.timers.set(ApTimer::Lifetime(id), now + granted);
                self.timers
                    .set_earliest(ApTimer::Heartbeat, now + self.config.heartbeat);
                if req.ack {
                    self.acknowledge(now, req, id, spi, to_units(granted), Some((granted, ours)));
                }
                DataAction::Consumed
            }
        }
    }

    /// Answer a refused registration; signed when we know the key, so the
    /// member can trust the refusal.
    /// A BA 202 (retry with cookie) creates no state: no event either, so
    /// that replayed BUs cost the AP nothing but the answer.
    fn refuse(&mut self, now: Instant, from: SocketAddr, r: Refusal) -> DataAction {
        if let Some(reason) = r.drop {
            self.counters.drops.drop(reason);
        }
        if r.silent {
            return DataAction::Consumed;
        }
        let retry = r.status == ba_status::RETRY_WITH_COOKIE;
        if retry {
            self.counters.cookie_challenges += 1;
        } else {
            self.events.push_back(ApEvent::RegistrationRefused {
                from,
                id: r.id,
                status: r.status,
            });
        }
        let mut msg = MobilityMessage::new(MessageBody::BindingAck {
            status: r.status,
            sequence: r.seq,
            lifetime: 0,
        });
        if let Some(id) = r.id {
            msg = msg.with(binding_id(id));
            if retry {
                msg = msg.with(MobilityOption::Cookie(
                    self.registration_cookie(now, from, id),
                ));
            }
        }
        match (r.id, r.spi) {
            (Some(id), Some(spi)) if self.config.key(spi).is_some() => {
                self.send_to_member(from, id, spi, msg)
            }
            _ => self.transmits.push_back(Transmit {
                to: from,
                payload: unsealed_frame(r.id, &msg),
            }),
        }
        DataAction::Consumed
    }

    /// The accepting BA. For a registration (`granted`), it advises the
    /// refresh interval and tells the member whether the AP drains it, so
    /// that it stops its shims from starting new flows at it (sec. 7.1).
    /// A registration BA 0 carries the AP's half of the session (Session
    /// {Ia, Na}) and a fresh cookie for the member's endpoint.
    fn acknowledge(
        &mut self,
        now: Instant,
        req: &ReceivedBu<'_>,
        id: MemberId,
        spi: u32,
        lifetime: u16,
        granted: Option<(Duration, (u32, [u8; 16]))>,
    ) {
        let mut msg = MobilityMessage::new(MessageBody::BindingAck {
            status: ba_status::ACCEPTED,
            sequence: req.seq,
            lifetime,
        })
        .with(binding_id(id));
        if let Some((granted, (index, nonce))) = granted {
            msg = msg
                .with(MobilityOption::BindingRefreshAdvice {
                    interval: to_units(granted / 2),
                })
                .with(MobilityOption::HomeAddress(self.config.home_address))
                .with(MobilityOption::Endpoint(req.from));
            if let Some(m) = self.members.get(&id) {
                msg = msg.with(MobilityOption::MemberState {
                    weight: m.effective_weight().min(u16::MAX as u32) as u16,
                    draining: m.drained_by().at_ap(),
                    instance: 0,
                });
            }
            msg = msg
                .with(MobilityOption::Session { index, nonce })
                .with(MobilityOption::Cookie(
                    self.registration_cookie(now, req.from, id),
                ));
        }
        self.send_to_member(req.from, id, spi, msg);
    }

    /// The registration cookie of (`from`, `id`) under the current secret.
    fn registration_cookie(&mut self, now: Instant, from: SocketAddr, id: MemberId) -> [u8; 16] {
        self.cookie_jar(now)
            .make(CookieKind::Registration, from, &id.0.to_be_bytes())
    }

    /// Create or update the member's entry; true if it (re)appeared: new,
    /// or back from Down.
    fn register(&mut self, now: Instant, r: &Registered) -> bool {
        self.first_registration.get_or_insert(now);
        let Some(m) = self.members.get_mut(&r.id) else {
            self.insert_member(now, r);
            return true;
        };
        let restarted = m.instance != r.instance;
        if restarted {
            m.registered_since = now;
            m.instance = r.instance;
            m.counters = MemberCounters::default();
        }
        if m.care_of != r.from {
            self.events.push_back(ApEvent::MemberMoved {
                id: r.id,
                from: m.care_of,
                to: r.from,
            });
            m.care_of = r.from;
        }
        m.last_seq = r.seq;
        m.spi = r.spi;
        m.last_heard = now;
        m.lifetime_expires = now + r.granted;
        m.advertised_weight = r.weight;
        let back = m.state.come_back(now, r.draining).is_ok();
        let change = if back {
            self.events.push_back(ApEvent::MemberRegistered {
                id: r.id,
                care_of: r.from,
            });
            Change::None
        } else if r.draining {
            // Cannot fail: the member is up.
            m.state
                .drain(now, DrainCause::Member)
                .unwrap_or(Change::None)
        } else {
            // Not drained by itself: nothing to undo.
            m.state.undrain(DrainCause::Member).unwrap_or(Change::None)
        };
        self.announce(r.id, change);
        if restarted {
            // A new process knows none of its shims: they hear of the
            // restart (BRI 126) and are noticed again.
            self.member_restarted(now, r.id);
        }
        back
    }

    /// A member registers for the first time (or after it left).
    fn insert_member(&mut self, now: Instant, r: &Registered) {
        self.members.insert(
            r.id,
            MemberEntry {
                id: r.id,
                care_of: r.from,
                state: MemberState::registered(
                    now,
                    DrainedBy {
                        member: r.draining,
                        ..DrainedBy::NONE
                    },
                ),
                advertised_weight: r.weight,
                weight_override: None,
                instance: r.instance,
                spi: r.spi,
                last_seq: r.seq,
                registered_since: now,
                lifetime_expires: now + r.granted,
                last_heard: now,
                counters: MemberCounters::default(),
            },
        );
        self.events.push_back(ApEvent::MemberRegistered {
            id: r.id,
            care_of: r.from,
        });
    }
}

/// The fields of an accepted registration the entry is updated from.
struct Registered {
    id: MemberId,
    spi: u32,
    from: SocketAddr,
    seq: u16,
    granted: Duration,
    weight: u16,
    draining: bool,
    instance: u64,
}
