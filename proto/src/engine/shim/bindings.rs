//! The binding cache (RFC 6275 sec. 9.5): keygen tokens from rotating
//! nonces for the home and care-of tests (the care-of test only for a
//! member showing the care-of ticket of its home test), binding updates
//! verified and acknowledged, and each binding's session keyed from Kbm
//! (docs/PROTOCOL.md section 5.5).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::control::unsealed_frame;
use super::{Shim, ShimBinding, ShimEvent, ShimTimer};
use crate::crypto::session::HEADER_LEN;
use crate::crypto::{self, Kbm, Role, Session, Token, member_shim_keys};
use crate::engine::sealed::PeerSessions;
use crate::engine::{
    DataAction, DropReason, ReceivedBu, Transmit, from_units, seq_newer, to_units, verify_binding,
};
use crate::wire::mh::{MessageBody, ba_status};
use crate::wire::{MemberId, MobilityHeader, MobilityMessage, MobilityOption};

/// A binding's session with its member, and what it was made from.
#[derive(Debug)]
pub(super) struct MemberSession {
    /// Current and replaced session.
    pub sessions: PeerSessions,
    /// The Kbm of the BU that made the current one.
    kbm: Kbm,
    /// The member's Session option (Im, Nm) of that BU.
    theirs: (u32, [u8; 16]),
    /// Ours (Is, Ns), sent in the BA.
    ours: (u32, [u8; 16]),
    /// The last datagram we sent the member direct (NAT keepalive clock).
    pub last_out: Instant,
}

/// An unsealed control frame to a member whose last option, Binding
/// Authorization Data, is signed with `kbm` (RFC 6275 sec. 5.2.6).
pub(super) fn signed_binding_frame(member: MemberId, msg: &MobilityMessage, kbm: &Kbm) -> Vec<u8> {
    let mut frame = unsealed_frame(Some(member), msg);
    let mh = &mut frame[HEADER_LEN..];
    let range = MobilityHeader::new_checked(&*mh)
        .ok()
        .and_then(|h| h.authenticator_range());
    if let Some(r) = range {
        let mac = crypto::binding_authenticator(kbm, mh, r.clone());
        mh[r].copy_from_slice(&mac);
    }
    frame
}

impl Shim {
    pub(super) fn rotate_nonces(&mut self, now: Instant) {
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

    pub(super) fn nonce(&self, index: u16) -> Option<Token> {
        self.nonces
            .iter()
            .find(|(i, _, _)| *i == index)
            .map(|(_, n, _)| *n)
    }

    pub(super) fn current_nonce(&self) -> (u16, Token) {
        // rotate_nonces always leaves the newest nonce at the back.
        self.nonces
            .back()
            .map(|(i, n, _)| (*i, *n))
            .unwrap_or((0, [0; 8]))
    }

    /// A frame that opened in `member`'s binding session with its newest
    /// counter came from `from`: the member's care-of endpoint moved there
    /// (a NAT rebinding; roaming, docs/PROTOCOL.md 4.6).
    pub(super) fn binding_roam(&mut self, member: MemberId, from: SocketAddr) {
        if let Some(b) = self.bindings.get_mut(&member)
            && b.care_of != from
        {
            let old = std::mem::replace(&mut b.care_of, from);
            self.counters.roams += 1;
            self.events.push_back(ShimEvent::BindingUpdated {
                member,
                care_of: from,
                moved_from: Some(old),
            });
        }
    }

    pub(super) fn valid_binding(&self, member: MemberId, now: Instant) -> Option<&ShimBinding> {
        self.bindings.get(&member).filter(|b| b.expires > now)
    }

    /// HoTI relayed by the AP (sealed): answer with a home keygen token
    /// (RFC 6275 sec. 9.4.1) and the care-of ticket the member must show in
    /// its CoTI, sealed back to the AP.
    pub(super) fn answer_home_test(&mut self, msg: &MobilityMessage, cookie: Token) -> DataAction {
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
        .with(MobilityOption::Correspondent(client))
        .with(MobilityOption::CareOfTicket {
            nonce_index: index,
            ticket: crypto::care_of_ticket(&self.kcn, self.config.home_address, member, &nonce),
        });
        if !self.send_sealed_to_ap(Some(member), &reply) {
            return self.counters.drops.drop(DropReason::NoSession);
        }
        self.counters.tests_answered += 1;
        // The member's care-of endpoint, as the AP knows it: one unsealed
        // Punch there opens our NAT (if any) for the member's CoTI, which
        // comes from that endpoint (docs/PROTOCOL.md 5.3). It is the AP's
        // word, sealed, and at most one datagram per relayed HoTI.
        if let Some(care_of) = msg.endpoint() {
            let punch = MobilityMessage::new(MessageBody::Punch);
            self.transmits.push_back(Transmit {
                to: care_of,
                payload: unsealed_frame(Some(member), &punch),
            });
            self.counters.punches += 1;
        }
        DataAction::Consumed
    }

    /// CoTI from a member's care-of endpoint (RFC 6275 sec. 9.4.2),
    /// answered only if its care-of ticket verifies for its Binding ID and
    /// a nonce still known: else no answer at all.
    pub(super) fn answer_care_of_test(
        &mut self,
        from: SocketAddr,
        msg: &MobilityMessage,
        cookie: Token,
    ) -> DataAction {
        if !self.config.route_optimization {
            return self.counters.drops.drop(DropReason::UnexpectedMessage);
        }
        let (Some((member, _)), Some((home_index, ticket))) =
            (msg.binding_id(), msg.care_of_ticket())
        else {
            return self.counters.drops.drop(DropReason::AuthFailed);
        };
        let valid = self.nonce(home_index).is_some_and(|home| {
            let expected =
                crypto::care_of_ticket(&self.kcn, self.config.home_address, member, &home);
            crypto::constant_time_eq(&expected, &ticket)
        });
        if !valid {
            return self.counters.drops.drop(DropReason::AuthFailed);
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
            payload: unsealed_frame(None, &reply),
        });
        self.counters.tests_answered += 1;
        DataAction::Consumed
    }

    pub(super) fn reject_bu(&mut self, from: SocketAddr, reason: DropReason) -> DataAction {
        self.counters.bus_rejected += 1;
        self.events
            .push_back(ShimEvent::BindingRejected { from, reason });
        self.counters.drops.drop(reason)
    }

    /// RFC 6275 sec. 9.5.1: receiving binding updates. A BU must carry the
    /// member's Session {Im, Nm}; an accepted one gives the binding a
    /// session (new if Kbm or the member's Session changed) whose Session
    /// {Is, Ns} the BA 0 carries.
    pub(super) fn handle_binding_update(
        &mut self,
        now: Instant,
        bu: &ReceivedBu<'_>,
    ) -> DataAction {
        let (from, msg, seq) = (bu.from, bu.msg, bu.seq);
        if !self.config.route_optimization {
            return self.reject_bu(from, DropReason::UnexpectedMessage);
        }
        let (Some((member, _)), Some(indices), Some(theirs)) =
            (msg.binding_id(), msg.nonce_indices(), msg.session())
        else {
            return self.reject_bu(from, DropReason::Malformed);
        };
        if theirs.0 == 0 {
            return self.reject_bu(from, DropReason::Malformed);
        }
        if msg.home_address() != Some(self.config.home_address) {
            return self.reject_bu(from, DropReason::UnknownHomeAddress);
        }
        let kbm = match self.binding_key(member, from, indices) {
            Ok(kbm) => kbm,
            Err(status) => {
                // Unsigned: we no longer have the tokens to sign with.
                let ba = MobilityMessage::new(MessageBody::BindingAck {
                    status,
                    sequence: seq,
                    lifetime: 0,
                });
                self.transmits.push_back(Transmit {
                    to: from,
                    payload: unsealed_frame(Some(member), &ba),
                });
                return self.reject_bu(from, DropReason::Replay);
            }
        };
        if !verify_binding(bu.mh, &kbm) {
            return self.reject_bu(from, DropReason::AuthFailed);
        }
        let send_ba = |shim: &mut Self,
                       status: u8,
                       sequence: u16,
                       lifetime: u16,
                       session: Option<(u32, [u8; 16])>| {
            let mut ba = MobilityMessage::new(MessageBody::BindingAck {
                status,
                sequence,
                lifetime,
            });
            if let Some((index, nonce)) = session {
                ba = ba.with(MobilityOption::Session { index, nonce });
            }
            let ba = ba.with(MobilityOption::BindingAuthorization([0; 12]));
            let payload = signed_binding_frame(member, &ba, &kbm);
            shim.transmits.push_back(Transmit { to: from, payload });
        };
        if let Some(last) = self.last_seq.get(&member).copied()
            && !seq_newer(seq, last)
        {
            send_ba(self, ba_status::SEQUENCE_OUT_OF_WINDOW, last, 0, None);
            return self.reject_bu(from, DropReason::Replay);
        }
        self.last_seq.insert(member, seq);
        self.counters.bus_accepted += 1;
        if bu.lifetime == 0 {
            self.delete_binding(member);
            if bu.ack {
                send_ba(self, ba_status::ACCEPTED, seq, 0, None);
            }
            return DataAction::Consumed;
        }
        let granted = from_units(bu.lifetime).min(self.config.max_binding_lifetime);
        let draining = msg.member_state().is_some_and(|(_, d, _)| d);
        self.store_binding(now, member, from, seq, granted, draining);
        let ours = self.bind_session(now, member, &kbm, theirs);
        if let Some(ms) = self.member_sessions.get_mut(&member) {
            // The BA (or the member's BU) just used the mapping.
            ms.last_out = now;
        }
        self.arm_nat_keepalive(now);
        if bu.ack {
            send_ba(
                self,
                ba_status::ACCEPTED,
                seq,
                to_units(granted),
                Some(ours),
            );
        }
        DataAction::Consumed
    }

    /// The session of `member`'s binding after a BU with `kbm` and the
    /// member's Session `theirs`: kept if both are unchanged, else a new
    /// one from a fresh Is, Ns (the previous one opens frames for
    /// `SESSION_GRACE`). Returns our Session {Is, Ns}.
    fn bind_session(
        &mut self,
        now: Instant,
        member: MemberId,
        kbm: &Kbm,
        theirs: (u32, [u8; 16]),
    ) -> (u32, [u8; 16]) {
        if let Some(ms) = self.member_sessions.get(&member)
            && ms.kbm == *kbm
            && ms.theirs == theirs
        {
            return ms.ours;
        }
        let ours = (self.fresh_index(), self.rng.nonce16());
        let (im, nm) = theirs;
        let keys = member_shim_keys(kbm, &nm, &ours.1, member.0, im, ours.0);
        let session = Session::new(&keys, Role::Responder, ours.0, im);
        self.by_index.insert(ours.0, member);
        match self.member_sessions.get_mut(&member) {
            Some(ms) => {
                if let Some(gone) = ms.sessions.replace(session, now) {
                    self.by_index.remove(&gone);
                }
                ms.kbm = *kbm;
                ms.theirs = theirs;
                ms.ours = ours;
                self.arm_session_grace(now);
            }
            None => {
                self.member_sessions.insert(
                    member,
                    MemberSession {
                        sessions: PeerSessions::new(session),
                        kbm: *kbm,
                        theirs,
                        ours,
                        last_out: now,
                    },
                );
            }
        }
        ours
    }

    /// Forget `member`'s binding session (both of them).
    pub(super) fn drop_member_session(&mut self, member: MemberId) {
        if let Some(ms) = self.member_sessions.remove(&member) {
            for index in ms.sessions.local_indices() {
                self.by_index.remove(&index);
            }
        }
    }

    /// Kbm from the tokens of the nonces a BU names, or the BA status
    /// (136-138) saying which of them expired.
    fn binding_key(
        &self,
        member: MemberId,
        from: SocketAddr,
        (home_index, care_of_index): (u16, u16),
    ) -> Result<Kbm, u8> {
        match (self.nonce(home_index), self.nonce(care_of_index)) {
            (Some(home), Some(care_of)) => {
                let home_token =
                    crypto::home_keygen_token(&self.kcn, self.config.home_address, member, &home);
                let care_of_token = crypto::care_of_keygen_token(&self.kcn, from, &care_of);
                Ok(crypto::kbm(&home_token, &care_of_token))
            }
            (None, None) => Err(ba_status::EXPIRED_NONCES),
            (None, _) => Err(ba_status::EXPIRED_HOME_NONCE_INDEX),
            _ => Err(ba_status::EXPIRED_CARE_OF_NONCE_INDEX),
        }
    }

    /// Create or refresh `member`'s binding at `care_of`.
    fn store_binding(
        &mut self,
        now: Instant,
        member: MemberId,
        care_of: SocketAddr,
        seq: u16,
        granted: Duration,
        draining: bool,
    ) {
        let previous = self.bindings.get(&member).copied();
        let moved_from = previous.map(|b| b.care_of).filter(|c| *c != care_of);
        self.bindings.insert(
            member,
            ShimBinding {
                care_of,
                seq,
                expires: now + granted,
                draining,
                created: previous.map_or(now, |b| b.created),
                updated: now,
            },
        );
        self.timers
            .set(ShimTimer::BindingExpiry(member), now + granted);
        if previous.is_none() || moved_from.is_some() {
            self.events.push_back(ShimEvent::BindingUpdated {
                member,
                care_of,
                moved_from,
            });
        }
    }

    /// Delete `member`'s binding (deregistration, a move to the other
    /// family, a fallback); its flows stay pinned to it.
    pub(super) fn delete_binding(&mut self, member: MemberId) {
        if self.bindings.remove(&member).is_some() {
            self.events.push_back(ShimEvent::BindingRemoved { member });
        }
        self.drop_member_session(member);
        self.timers.cancel(ShimTimer::BindingExpiry(member));
    }
}
