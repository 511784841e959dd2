//! Sealed sessions at the AP (docs/PROTOCOL.md sections 1, 4, 4.6):
//! the one index map from our receive indices to their owners, the
//! member - AP sessions made by registrations, and the dispatch of every
//! received frame: unsealed ones may only be handshakes (registration BU,
//! Shim Hello), sealed ones are opened with the session they name.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::{AccessPoint, ApTimer};
use crate::crypto::session::{HEADER_LEN, session_index_of};
use crate::crypto::{CookieJar, KeyMaterial, Role, Session};
use crate::engine::sealed::{PeerSessions, SESSION_GRACE, open_drop_reason, sealed_control};
use crate::engine::{DataAction, DropReason, Transmit, canonical};
use crate::wire::mh::MessageBody;
use crate::wire::{FrameKind, MemberId, MobilityHeader, MobilityMessage};

/// Who one of our receive indices belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// A registered member's session.
    Member(MemberId),
    /// A shim client's session (by client address).
    Shim(Ipv6Addr),
}

/// A member's session with the AP and the handshake values it came from.
#[derive(Debug)]
pub(super) struct MemberSession {
    /// Current and previous session.
    pub sessions: PeerSessions,
    /// The member's index and nonce (its BU's Session option).
    pub member_index: u32,
    pub member_nonce: [u8; 16],
    /// The member instance the session belongs to.
    pub instance: u64,
    /// Our nonce (the BA's Session option carries it with our index).
    pub ap_nonce: [u8; 16],
}

/// The limit hits of the AP, by limit name (docs/PROTOCOL.md 7.6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitHits {
    /// Hellos dropped over `max_handshakes_per_second`.
    pub handshake_rate: u64,
    /// Shim records over `max_shim_clients` (evicted or refused).
    pub shim_clients: u64,
    /// Shim records over `max_shims_per_prefix` (evicted or refused).
    pub shims_per_prefix: u64,
}

impl LimitHits {
    /// (limit name, hits) for every limit, for metrics.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("handshake_rate", self.handshake_rate),
            ("shim_clients", self.shim_clients),
            ("shims_per_prefix", self.shims_per_prefix),
        ]
        .into_iter()
    }
}

/// At most one answer per source per second, in bounded memory: when the
/// table is full of recent sources, nobody new gets an answer.
#[derive(Debug, Default)]
pub(super) struct AnswerLimit {
    last: HashMap<SocketAddr, Instant>,
}

impl AnswerLimit {
    const GAP: Duration = Duration::from_secs(1);
    const MAX: usize = 4096;

    pub fn allow(&mut self, now: Instant, peer: SocketAddr) -> bool {
        if self.last.get(&peer).is_some_and(|t| now < *t + Self::GAP) {
            return false;
        }
        if self.last.len() >= Self::MAX {
            self.last.retain(|_, t| now < *t + Self::GAP);
            if self.last.len() >= Self::MAX {
                return false;
            }
        }
        self.last.insert(peer, now);
        true
    }
}

/// The action that sends the (rewritten, sealed) frame to `to`.
pub(super) fn send_to(to: SocketAddr) -> DataAction {
    DataAction::Send { to }
}

/// The client address of a shim: the UDP source address, IPv4 as
/// IPv4-mapped IPv6 (as every address in the engines).
pub(super) fn client_address(from: SocketAddr) -> Ipv6Addr {
    match from.ip() {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// An unsealed control frame: header (Session 0, Counter 0) | message.
pub(super) use crate::engine::control_frame as unsealed_frame;

/// Fills in the member <-> AP authenticator of an unsealed control frame.
pub(super) fn sign_frame(frame: &mut [u8], key: &[u8], hoa: Ipv6Addr) {
    let Some(mh) = frame.get_mut(HEADER_LEN..) else {
        return;
    };
    let range = MobilityHeader::new_checked(&*mh)
        .ok()
        .and_then(|h| h.authenticator_range());
    if let Some(r) = range {
        let mac = crate::crypto::registration_authenticator(key, hoa, mh, r.clone());
        mh[r].copy_from_slice(&mac);
    }
}

impl AccessPoint {
    /// The cookie jar, rotated if its epoch is over (created on first use).
    pub(super) fn cookie_jar(&mut self, now: Instant) -> &CookieJar {
        let drbg = &mut self.drbg;
        let jar = self
            .cookies
            .get_or_insert_with(|| CookieJar::new(now, drbg));
        jar.maybe_rotate(now, drbg);
        jar
    }

    /// A fresh receive index no session of ours uses.
    pub(super) fn new_index(&mut self) -> u32 {
        loop {
            let i = self.drbg.session_index();
            if !self.index.contains_key(&i) {
                return i;
            }
        }
    }

    /// Make `session` the member's current one (the BU's values are kept
    /// to tell a retransmission from a new session).
    pub(super) fn install_member_session(
        &mut self,
        now: Instant,
        id: MemberId,
        session: Session,
        fields: (u32, [u8; 16], u64, [u8; 16]),
    ) {
        let (member_index, member_nonce, instance, ap_nonce) = fields;
        self.index.insert(session.local_index, Owner::Member(id));
        match self.member_sessions.get_mut(&id) {
            Some(ms) => {
                if let Some(gone) = ms.sessions.replace(session, now) {
                    self.index.remove(&gone);
                }
                ms.member_index = member_index;
                ms.member_nonce = member_nonce;
                ms.instance = instance;
                ms.ap_nonce = ap_nonce;
                self.timers
                    .set_earliest(ApTimer::SessionSweep, now + SESSION_GRACE);
            }
            None => {
                self.member_sessions.insert(
                    id,
                    MemberSession {
                        sessions: PeerSessions::new(session),
                        member_index,
                        member_nonce,
                        instance,
                        ap_nonce,
                    },
                );
            }
        }
    }

    /// The member's session after an accepted registration: kept if the
    /// BU names the one it has, else a new one. Returns (Ia, Na) for the BA.
    pub(super) fn member_session_for(
        &mut self,
        now: Instant,
        id: MemberId,
        key: &[u8],
        instance: u64,
        (im, nm): (u32, [u8; 16]),
    ) -> (u32, [u8; 16]) {
        if let Some(ms) = self.member_sessions.get(&id)
            && ms.member_index == im
            && ms.member_nonce == nm
            && ms.instance == instance
        {
            return (ms.sessions.current().local_index, ms.ap_nonce);
        }
        let ia = self.new_index();
        let na = self.drbg.nonce16();
        let km: KeyMaterial = crate::crypto::member_ap_keys(key, &nm, &na, id.0, instance, im, ia);
        let session = Session::new(&km, Role::Responder, ia, im);
        self.install_member_session(now, id, session, (im, nm, instance, na));
        (ia, na)
    }

    /// Forget every session of member `id`.
    pub(super) fn drop_member_sessions(&mut self, id: MemberId) {
        if let Some(ms) = self.member_sessions.remove(&id) {
            for i in ms.sessions.local_indices() {
                self.index.remove(&i);
            }
        }
    }

    /// Forget previous sessions whose grace is over.
    pub(super) fn sweep_sessions(&mut self, now: Instant) {
        let mut gone = Vec::new();
        for ms in self.member_sessions.values_mut() {
            gone.extend(ms.sessions.expire(now));
        }
        for shim in self.shims.values_mut() {
            gone.extend(shim.session.sessions.expire(now));
        }
        for i in gone {
            self.index.remove(&i);
        }
        let pending = self
            .member_sessions
            .values()
            .map(|ms| &ms.sessions)
            .chain(self.shims.values().map(|s| &s.session.sessions))
            .any(|p| p.local_indices().nth(1).is_some());
        if pending {
            self.timers
                .set(ApTimer::SessionSweep, now + Duration::from_secs(1));
        }
    }

    /// Queue a sealed control message to member `id` at its care-of
    /// endpoint (BRR, Shim Notice, HoT relay).
    pub(super) fn send_sealed_to_member(&mut self, id: MemberId, msg: &MobilityMessage) -> bool {
        let Some(to) = self.members.get(&id).map(|m| m.care_of) else {
            return false;
        };
        let protection = self.config.protection;
        let Some(ms) = self.member_sessions.get_mut(&id) else {
            return false;
        };
        match sealed_control(&mut ms.sessions, protection, Some(id), msg) {
            Some(payload) => {
                self.transmits.push_back(Transmit { to, payload });
                true
            }
            None => false,
        }
    }

    /// Queue a sealed control message to the shim of `client`, tagged with
    /// `member` (HoTI relay, BRI).
    pub(super) fn send_sealed_to_shim(
        &mut self,
        client: Ipv6Addr,
        member: Option<MemberId>,
        msg: &MobilityMessage,
    ) -> bool {
        let protection = self.config.protection;
        let Some(shim) = self.shims.get_mut(&client) else {
            return false;
        };
        let to = shim.endpoint;
        match sealed_control(&mut shim.session.sessions, protection, member, msg) {
            Some(payload) => {
                self.transmits.push_back(Transmit { to, payload });
                true
            }
            None => false,
        }
    }

    /// Every received datagram: unsealed handshakes, or sealed frames of a
    /// session we know.
    pub(super) fn dispatch_udp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        frame: &mut [u8],
    ) -> DataAction {
        let header = match crate::engine::parse_header(frame, &mut self.counters.drops) {
            Ok(h) => h,
            Err(action) => return action,
        };
        let Some(index) = session_index_of(frame) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        let from = canonical(from);
        if index == 0 {
            return match header.kind {
                FrameKind::Control => self.unsealed_control(now, from, &frame[HEADER_LEN..]),
                FrameKind::Data => self.counters.drops.drop(DropReason::Unauthenticated),
            };
        }
        let Some(owner) = self.index.get(&index).copied() else {
            self.no_session_for(now, from, frame.len());
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        let protection = self.config.protection;
        let opened = match owner {
            Owner::Member(id) => self.member_sessions.get_mut(&id).map(|ms| {
                ms.sessions
                    .open(now, index, protection, frame)
                    .map(|()| false)
            }),
            Owner::Shim(client) => self.shims.get_mut(&client).map(|s| {
                s.session
                    .sessions
                    .open_newest(now, index, protection, frame)
            }),
        };
        match opened {
            Some(Ok(newest)) => {
                if let Owner::Shim(client) = owner
                    && newest
                {
                    self.shim_roam(client, from);
                }
            }
            Some(Err(e)) => return self.counters.drops.drop(open_drop_reason(e)),
            None => {
                // A stale index (its owner is gone): forget it.
                self.index.remove(&index);
                self.no_session_for(now, from, frame.len());
                return self.counters.drops.drop(DropReason::UnknownPeer);
            }
        }
        match (owner, header.kind) {
            (Owner::Member(id), FrameKind::Data) => self.data_from_member(now, id, header, frame),
            (Owner::Member(id), FrameKind::Control) => {
                self.sealed_from_member(now, id, crate::engine::sealed::payload(frame))
            }
            (Owner::Shim(client), FrameKind::Data) => self.data_from_shim(now, client, frame),
            (Owner::Shim(client), FrameKind::Control) => {
                self.sealed_from_shim(now, client, crate::engine::sealed::payload(frame))
            }
        }
    }

    /// A sealed frame names no session of ours: tell the source (a shim
    /// whose AP restarted or forgot it) to handshake again, with a Shim
    /// Cookie of nonce 0; at most once per source per second, and never
    /// larger than what came in (no amplification).
    fn no_session_for(&mut self, now: Instant, from: SocketAddr, len: usize) {
        let msg = MobilityMessage::new(MessageBody::ShimCookie {
            nonce: [0; 16],
            cookie: [0; 16],
        });
        let payload = unsealed_frame(None, &msg);
        if payload.len() > len || !self.stale_answers.allow(now, from) {
            return;
        }
        self.transmits.push_back(Transmit { to: from, payload });
    }

    /// The unsealed control messages the AP accepts: registration BUs and
    /// Shim Hellos. Everything else must be sealed.
    fn unsealed_control(&mut self, now: Instant, from: SocketAddr, mh: &[u8]) -> DataAction {
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
            } => self.handle_registration(
                now,
                &crate::engine::ReceivedBu {
                    from,
                    mh,
                    msg: &msg,
                    seq: sequence,
                    ack,
                    lifetime,
                },
            ),
            MessageBody::ShimHello {
                instance,
                index,
                nonce,
                cookie,
                public,
            } => self.handle_shim_hello(
                now,
                from,
                super::handshake::Hello {
                    instance,
                    index,
                    nonce,
                    cookie,
                    public,
                    local: msg.endpoint(),
                    home: msg.home_address(),
                },
            ),
            _ => self.counters.drops.drop(DropReason::Unauthenticated),
        }
    }

    /// A sealed control message from member `id`: a HoTI to relay or a
    /// Flow Report.
    fn sealed_from_member(&mut self, now: Instant, id: MemberId, mh: &[u8]) -> DataAction {
        let msg = match MobilityMessage::parse(mh) {
            Ok(m) => m,
            Err(_) => return self.counters.drops.drop(DropReason::Malformed),
        };
        match msg.body {
            MessageBody::HomeTestInit { cookie } => {
                self.relay_home_test_init(now, id, &msg, cookie)
            }
            MessageBody::FlowReport { .. } => self.flow_report(now, id, &msg),
            _ => self.counters.drops.drop(DropReason::UnexpectedMessage),
        }
    }

    /// A sealed control message from the shim of `client`: a keepalive
    /// (BRR, no answer) or a HoT to relay.
    fn sealed_from_shim(&mut self, now: Instant, client: Ipv6Addr, mh: &[u8]) -> DataAction {
        let msg = match MobilityMessage::parse(mh) {
            Ok(m) => m,
            Err(_) => return self.counters.drops.drop(DropReason::Malformed),
        };
        self.shim_refresh(now, client);
        match msg.body {
            MessageBody::BindingRefreshRequest => {
                self.counters.keepalives += 1;
                DataAction::Consumed
            }
            MessageBody::HomeTest { .. } => self.relay_home_test(client, &msg),
            _ => self.counters.drops.drop(DropReason::UnexpectedMessage),
        }
    }
}
