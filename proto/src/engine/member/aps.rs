//! The member's access points: one registration and one member - AP
//! session per configured AP (docs/PROTOCOL.md 7.2), the aggregate
//! registration state, and which AP an answer goes back through
//! (docs/PROTOCOL.md 7.5).

use std::net::SocketAddr;
use std::time::Instant;

use super::{Member, MemberConfig, PendingBu, RegistrationState, SessionId};
use crate::crypto::{COOKIE_LEN, Drbg};
use crate::engine::sealed::PeerSessions;
use crate::engine::{ApEndpoints, canonical};

/// What the operator sees of one access point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApView {
    /// Its tunnel endpoint in use: the configured one of our care-of's
    /// family (else its first).
    pub endpoint: SocketAddr,
    /// Every endpoint configured for it (one per family at most).
    pub endpoints: ApEndpoints,
    /// Our registration with it.
    pub state: RegistrationState,
    /// A member - AP session is in place.
    pub has_session: bool,
    /// The last sealed frame from it (or its last registration BA 0).
    pub last_heard: Option<Instant>,
    /// Its operator drains us (its last BA said so).
    pub draining: bool,
    /// Our endpoint as it saw it (the Endpoint option of its last
    /// registration BA 0): the NAT's mapping when we are behind one.
    pub observed: Option<SocketAddr>,
}

/// Our registration with one AP and our session with it (docs/PROTOCOL.md
/// 4.1): each AP grants, refreshes and forgets us on its own.
#[derive(Debug)]
pub(super) struct ApLink {
    /// Its tunnel endpoint in use (of our care-of's family, if it has one).
    pub(super) endpoint: SocketAddr,
    /// Its configured endpoints.
    pub(super) endpoints: ApEndpoints,
    pub(super) state: RegistrationState,
    pub(super) pending: Option<PendingBu>,
    pub(super) next_seq: u16,
    /// Signed "id in use" refusals in a row.
    pub(super) id_in_use: u32,
    /// The care-of endpoint of the last BA 0.
    pub(super) registered_care_of: Option<SocketAddr>,
    /// Our endpoint as the AP saw it (Endpoint option of its last BA 0).
    pub(super) observed: Option<SocketAddr>,
    /// Our Session {Im, Nm} with this AP: drawn once per process, its
    /// index distinct from every other AP's.
    pub(super) ours: SessionId,
    /// The newest cookie the AP gave for our endpoint.
    pub(super) cookie: Option<[u8; COOKIE_LEN]>,
    /// The AP's Session {Ia, Na} of the current session.
    pub(super) theirs: Option<SessionId>,
    /// The sessions with the AP (current, previous in its grace).
    pub(super) sessions: Option<PeerSessions>,
    /// The last sealed frame from the AP (or registration).
    pub(super) heard: Option<Instant>,
    /// The AP's operator drains us (its last BA 0 said so).
    pub(super) drains_us: bool,
    /// Silence or a hint made us register again: a new session from its
    /// next BA 0 means the AP restarted.
    pub(super) probing: bool,
    /// The last zero-nonce hint acted on.
    pub(super) last_hint: Option<Instant>,
}

impl ApLink {
    /// One link per distinct configured AP (a duplicate is ignored:
    /// [`MemberConfig::check`] refuses it), with its own sequence numbers
    /// and Session {Im, Nm}.
    pub(super) fn for_config(config: &MemberConfig, rng: &mut Drbg) -> Vec<ApLink> {
        let mut aps: Vec<ApLink> = Vec::with_capacity(config.access_points.len());
        for &endpoints in &config.access_points {
            if aps.iter().any(|a| a.endpoints.overlaps(&endpoints)) {
                continue;
            }
            let next_seq = rng.next_u16();
            let index = loop {
                let i = rng.session_index();
                if aps.iter().all(|a| a.ours.0 != i) {
                    break i;
                }
            };
            aps.push(ApLink {
                endpoint: endpoints.for_local(config.care_of),
                endpoints,
                state: RegistrationState::Idle,
                pending: None,
                next_seq,
                id_in_use: 0,
                registered_care_of: None,
                observed: None,
                ours: (index, rng.nonce16()),
                cookie: None,
                theirs: None,
                sessions: None,
                heard: None,
                drains_us: false,
                probing: false,
                last_hint: None,
            });
        }
        aps
    }

    /// No sealed frame from the AP for `silence` (or never one).
    pub(super) fn silent(&self, now: Instant, silence: std::time::Duration) -> bool {
        self.heard
            .is_none_or(|h| now.saturating_duration_since(h) >= silence)
    }

    /// Registered with this AP.
    pub(super) fn registered(&self) -> bool {
        matches!(self.state, RegistrationState::Registered { .. })
    }

    /// Registered or on the way: a BU to it is in order (drain, move).
    pub(super) fn active(&self) -> bool {
        matches!(
            self.state,
            RegistrationState::Registered { .. } | RegistrationState::Registering
        )
    }

    /// The AP takes Flow Reports from us: a session, and not leaving.
    pub(super) fn reportable(&self) -> bool {
        self.sessions.is_some() && self.active()
    }

    fn view(&self) -> ApView {
        ApView {
            endpoint: self.endpoint,
            endpoints: self.endpoints,
            state: self.state,
            has_session: self.sessions.is_some(),
            last_heard: self.heard,
            draining: self.drains_us,
            observed: self.observed,
        }
    }
}

/// The member's registration state over all its APs: Registered (until the
/// latest expiry) if any AP registered it; Refused only if every AP
/// refused; Idle before the start; Left when every AP is left (or
/// refused); Deregistering while the rest is leaving; else Registering.
pub(super) fn aggregate(aps: &[ApLink]) -> RegistrationState {
    use RegistrationState as S;
    let latest = aps
        .iter()
        .filter_map(|a| match a.state {
            S::Registered { expires } => Some(expires),
            _ => None,
        })
        .max();
    if let Some(expires) = latest {
        return S::Registered { expires };
    }
    let all = |f: fn(&S) -> bool| aps.iter().all(|a| f(&a.state));
    if let Some(S::Refused { status }) = aps.first().map(|a| a.state)
        && all(|s| matches!(s, S::Refused { .. }))
    {
        return S::Refused { status };
    }
    if all(|s| matches!(s, S::Idle)) {
        return S::Idle;
    }
    if all(|s| matches!(s, S::Left | S::Refused { .. })) {
        return S::Left;
    }
    if all(|s| matches!(s, S::Deregistering | S::Left | S::Refused { .. })) {
        return S::Deregistering;
    }
    S::Registering
}

impl Member {
    /// Registration state over all APs (see [`ApView`] for each one):
    /// Registered if any AP registered us, Refused only if every AP
    /// refused, Left when every AP is left.
    pub fn state(&self) -> RegistrationState {
        aggregate(&self.aps)
    }

    /// Behind a NAT: an AP saw us at an endpoint other than our care-of
    /// (the socket's local endpoint).
    pub fn behind_nat(&self) -> bool {
        let local = canonical(self.config.care_of);
        self.aps
            .iter()
            .any(|a| a.observed.is_some_and(|o| canonical(o) != local))
    }

    /// Each configured AP (duplicates once), in configured order.
    pub fn access_points(&self) -> impl Iterator<Item = ApView> + '_ {
        self.aps.iter().map(ApLink::view)
    }

    /// The AP one of whose endpoints is `from` (canonical).
    pub(super) fn ap_at(&self, from: SocketAddr) -> Option<usize> {
        self.aps.iter().position(|a| a.endpoints.contains(from))
    }

    /// Does some AP have an endpoint of `care_of`'s family? A move to a
    /// care-of of a family none has would reach no AP.
    pub fn reaches_an_ap_from(&self, care_of: SocketAddr) -> bool {
        self.aps
            .iter()
            .any(|a| a.endpoints.of_family(care_of).is_some())
    }

    /// The AP whose session our receive index `index` names.
    pub(super) fn ap_with_index(&self, index: u32) -> Option<usize> {
        self.aps
            .iter()
            .position(|a| a.ours.0 == index && a.sessions.is_some())
    }

    /// Our receive index is one of an AP session's.
    pub(super) fn is_ap_index(&self, index: u32) -> bool {
        self.aps.iter().any(|a| a.ours.0 == index)
    }

    /// The AP an answer goes through (docs/PROTOCOL.md 7.2): `preferred`
    /// (the AP the flow's last packet came through) if its session is
    /// there, not silent and not being re-registered after a silence or a
    /// hint (it may have lost the session); else the first AP, in
    /// configured order, that is registered and live so; else `preferred`
    /// or the first AP with a session at all. `None` without any session.
    pub(super) fn answer_ap(&self, now: Instant, preferred: Option<usize>) -> Option<usize> {
        let silence = self.config.ap_silence;
        let live = |a: &ApLink| a.sessions.is_some() && !a.silent(now, silence) && !a.probing;
        let preferred = preferred.filter(|&i| i < self.aps.len());
        if let Some(i) = preferred.filter(|&i| live(&self.aps[i])) {
            return Some(i);
        }
        if let Some(i) = self.aps.iter().position(|a| a.registered() && live(a)) {
            return Some(i);
        }
        preferred
            .filter(|&i| self.aps[i].sessions.is_some())
            .or_else(|| self.aps.iter().position(|a| a.sessions.is_some()))
    }
}
