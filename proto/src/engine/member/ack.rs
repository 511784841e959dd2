//! The registration BAs of each access point (docs/PROTOCOL.md 4.5) and
//! the member - AP sessions they make (4.1).

use std::time::Instant;

use super::{
    ID_IN_USE_BEFORE_REFUSAL, Member, MemberEvent, MemberTimer, RegistrationState, SessionId,
};
use crate::crypto::{Role, Session, member_ap_keys};
use crate::engine::sealed::PeerSessions;
use crate::engine::{DataAction, DropReason, from_units};
use crate::wire::MobilityMessage;
use crate::wire::mh::ba_status;

/// A registration BA of one AP, as received.
pub(super) struct RegistrationAck<'a> {
    /// Signed with the registration key.
    pub(super) signed: bool,
    pub(super) msg: &'a MobilityMessage,
    pub(super) status: u8,
    pub(super) seq: u16,
    pub(super) lifetime: u16,
}

impl Member {
    /// A BA from `ap`; true (with the action) when it accepted our
    /// outstanding BU.
    pub(super) fn handle_registration_ack(
        &mut self,
        now: Instant,
        ap: usize,
        ba: &RegistrationAck<'_>,
    ) -> (DataAction, bool) {
        let (status, seq) = (ba.status, ba.seq);
        let Some(p) = self.aps[ap].pending.clone() else {
            return (
                self.counters.drops.drop(DropReason::UnexpectedMessage),
                false,
            );
        };
        if !ba.signed {
            // Only a refusal for a wrong key can come unsigned. It is never
            // final (anyone can send one): counted and reported for our
            // outstanding BU, and the retransmissions go on.
            if status == ba_status::AUTHENTICATION_FAILED && seq == p.seq {
                self.counters.auth_failures_reported += 1;
                self.events.push_back(MemberEvent::AuthFailureReported {
                    ap: self.aps[ap].endpoint,
                });
                return (DataAction::Consumed, false);
            }
            return (self.counters.drops.drop(DropReason::AuthFailed), false);
        }
        let action = match status {
            ba_status::ACCEPTED if seq == p.seq => {
                return self.accepted(now, ap, ba.msg, p.lifetime, ba.lifetime);
            }
            ba_status::ACCEPTED => self.counters.drops.drop(DropReason::Replay),
            ba_status::RETRY_WITH_COOKIE if seq == p.seq => {
                // The AP made no state for that BU: the next one, with its
                // cookie for our endpoint, may take a new number.
                let Some(cookie) = ba.msg.cookie() else {
                    return (self.counters.drops.drop(DropReason::Malformed), false);
                };
                self.aps[ap].cookie = Some(cookie);
                self.send_registration_after(now, ap, p.lifetime, p.first_wait);
                DataAction::Consumed
            }
            ba_status::SEQUENCE_OUT_OF_WINDOW => {
                // RFC 6275 sec. 11.7.1: resynchronise on the AP's last accepted number.
                self.aps[ap].next_seq = seq.wrapping_add(1);
                self.send_registration_after(now, ap, p.lifetime, p.first_wait);
                DataAction::Consumed
            }
            // A refusal that is not for our outstanding BU is a replay.
            _ if seq != p.seq => self.counters.drops.drop(DropReason::Replay),
            ba_status::MEMBER_ID_IN_USE
                if self.aps[ap].id_in_use + 1 < ID_IN_USE_BEFORE_REFUSAL =>
            {
                // Maybe our own previous process, not yet declared dead:
                // the retransmission timer tries again.
                self.aps[ap].id_in_use += 1;
                DataAction::Consumed
            }
            _ => {
                self.refused(ap, status);
                DataAction::Consumed
            }
        };
        (action, false)
    }

    /// A signed BA 0 for our outstanding BU to `ap` (asked `asked` units,
    /// granted `granted`).
    fn accepted(
        &mut self,
        now: Instant,
        ap: usize,
        msg: &MobilityMessage,
        asked: u16,
        granted: u16,
    ) -> (DataAction, bool) {
        let mut new_session = false;
        if asked != 0 {
            // The session the AP made for this registration.
            let Some(theirs) = msg.session() else {
                return (self.counters.drops.drop(DropReason::Malformed), false);
            };
            new_session = self.ap_session(now, ap, theirs);
        }
        let endpoint = self.aps[ap].endpoint;
        let link = &mut self.aps[ap];
        if let Some(cookie) = msg.cookie() {
            link.cookie = Some(cookie);
        }
        link.pending = None;
        let probing = std::mem::take(&mut link.probing);
        self.timers.cancel(MemberTimer::Retransmit(ap));
        if asked == 0 {
            self.aps[ap].state = RegistrationState::Left;
            for t in [
                MemberTimer::ApSilence(ap),
                MemberTimer::Refresh(ap),
                MemberTimer::Expiry(ap),
            ] {
                self.timers.cancel(t);
            }
            self.left_if_done();
            return (DataAction::Consumed, true);
        }
        let link = &mut self.aps[ap];
        link.id_in_use = 0;
        let granted = from_units(granted);
        let was_registered = link.registered();
        link.state = RegistrationState::Registered {
            expires: now + granted,
        };
        link.heard = Some(now);
        link.observed = msg.endpoint();
        let care_of = self.config.care_of;
        let moved = link.registered_care_of != Some(care_of);
        link.registered_care_of = Some(care_of);
        self.timers.set(MemberTimer::Expiry(ap), now + granted);
        self.timers
            .set(MemberTimer::Refresh(ap), now + granted * 3 / 4);
        self.timers
            .set(MemberTimer::ApSilence(ap), now + self.config.ap_silence);
        self.arm_nat_keepalive(now);
        if !was_registered || moved {
            self.events.push_back(MemberEvent::Registered {
                ap: endpoint,
                care_of,
                lifetime: granted,
            });
        }
        if new_session {
            if probing {
                self.events
                    .push_back(MemberEvent::ApRestarted { ap: endpoint });
            }
            // The AP knows none of our flows yet (first registration, or
            // it restarted): all of them, at once.
            self.full_flow_report(ap);
        }
        (DataAction::Consumed, true)
    }

    /// The AP's Session {Ia, Na} from a BA 0: a new one makes a new
    /// member - AP session (the member is the initiator); the previous one
    /// still opens frames for its grace. True if the session is new.
    fn ap_session(&mut self, now: Instant, ap: usize, theirs: SessionId) -> bool {
        let link = &mut self.aps[ap];
        if link.theirs == Some(theirs) && link.sessions.is_some() {
            return false;
        }
        let (ours, c) = (link.ours, &self.config);
        let keys = member_ap_keys(
            &c.key, &ours.1, &theirs.1, c.id.0, c.instance, ours.0, theirs.0,
        );
        let session = Session::new(&keys, Role::Initiator, ours.0, theirs.0);
        match link.sessions.as_mut() {
            Some(s) => {
                s.replace(session, now);
            }
            None => link.sessions = Some(PeerSessions::new(session)),
        }
        link.theirs = Some(theirs);
        true
    }

    /// `ap`'s BA says whether its operator drains us (its Member State option).
    pub(super) fn apply_operator_drain(&mut self, now: Instant, ap: usize, draining: bool) {
        let before = self.is_draining();
        self.aps[ap].drains_us = draining;
        self.rebind_if_drain_changed(now, before);
    }

    /// `ap` refused us for good; the others go on.
    pub(super) fn refused(&mut self, ap: usize, status: u8) {
        self.aps[ap].pending = None;
        for t in [
            MemberTimer::Retransmit(ap),
            MemberTimer::Refresh(ap),
            MemberTimer::ApSilence(ap),
        ] {
            self.timers.cancel(t);
        }
        self.aps[ap].state = RegistrationState::Refused { status };
        self.events.push_back(MemberEvent::RegistrationRefused {
            ap: self.aps[ap].endpoint,
            status,
        });
    }
}
