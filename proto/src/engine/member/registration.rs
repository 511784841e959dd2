//! Registration with the access point (RFC 6275 sec. 11.7.1): the
//! authenticated BU with retransmission and backoff, its refresh, the BA,
//! draining and leaving.

use std::net::Ipv6Addr;
use std::time::Instant;

use super::{
    DEREGISTRATION_ATTEMPTS, Drain, ID_IN_USE_BEFORE_REFUSAL, Member, MemberEvent, MemberTimer,
    PendingBu, RegistrationState, SessionId,
};
use crate::crypto::{Role, Session, member_ap_keys};
use crate::engine::ap::AUTH_SUBTYPE_MN_HA;
use crate::engine::sealed::{PeerSessions, sealed_control};
use crate::engine::{
    DataAction, DropReason, Transmit, control_frame, from_units, sign_registration, to_units,
};
use crate::wire::mh::{MessageBody, ba_status};
use crate::wire::{MobilityMessage, MobilityOption};

impl Member {
    /// Begin registering with the AP.
    pub fn start(&mut self, now: Instant) {
        if matches!(self.state, RegistrationState::Idle) {
            self.state = RegistrationState::Registering;
            self.send_registration(now, to_units(self.config.lifetime));
        }
    }

    /// Start or stop draining: the AP gives us no new clients, and bound
    /// shims stop sending us new flows.
    pub fn set_draining(&mut self, now: Instant, draining: bool) {
        let asked = Drain {
            own: draining,
            ..self.drain
        };
        if asked == self.drain {
            return;
        }
        let before = std::mem::replace(&mut self.drain, asked);
        if matches!(
            self.state,
            RegistrationState::Registered { .. } | RegistrationState::Registering
        ) {
            self.send_registration(now, to_units(self.config.lifetime));
        }
        self.rebind_if_drain_changed(now, before);
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
                let (shim, session) = (c.shim, c.bu_session);
                self.send_binding_update(shim, seq, 0, &b.kbm, b.nonces, session, false);
            }
            self.forget_correspondent(client);
        }
        self.state = RegistrationState::Deregistering;
        self.send_registration(now, 0);
    }

    pub(super) fn send_registration(&mut self, now: Instant, lifetime: u16) {
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

    pub(super) fn transmit_registration(&mut self, seq: u16, lifetime: u16) {
        let msg = MobilityMessage::new(MessageBody::BindingUpdate {
            sequence: seq,
            ack: true,
            home: true,
            lifetime,
        });
        let (index, nonce) = self.ap.ours;
        let mut msg = self
            .with_bu_options(msg, self.drain.own)
            .with(MobilityOption::Session { index, nonce });
        if let Some(cookie) = self.ap.cookie {
            msg = msg.with(MobilityOption::Cookie(cookie));
        }
        self.counters.registration_bus += 1;
        self.send_signed_to_ap(msg);
    }

    /// Send `msg` unsealed to the AP, signed with the registration key
    /// (the Authentication option last): the registration BU only.
    fn send_signed_to_ap(&mut self, msg: MobilityMessage) {
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

    /// Send `msg` to the AP sealed in the AP session; false if there is
    /// none yet.
    pub(super) fn send_sealed_to_ap(&mut self, msg: &MobilityMessage) -> bool {
        let (protection, id) = (self.config.protection, self.config.id);
        let Some(sessions) = self.ap.sessions.as_mut() else {
            return false;
        };
        let Some(payload) = sealed_control(sessions, protection, Some(id), msg) else {
            return false;
        };
        self.transmits.push_back(Transmit {
            to: self.config.access_point,
            payload,
        });
        true
    }

    /// The AP's Session {Ia, Na} from a BA 0: a new one makes a new
    /// member - AP session (the member is the initiator); the previous one
    /// still opens frames for its grace.
    fn ap_session(&mut self, now: Instant, theirs: SessionId) {
        if self.ap.theirs == Some(theirs) && self.ap.sessions.is_some() {
            return;
        }
        let (ours, c) = (self.ap.ours, &self.config);
        let keys = member_ap_keys(
            &c.key, &ours.1, &theirs.1, c.id.0, c.instance, ours.0, theirs.0,
        );
        let session = Session::new(&keys, Role::Initiator, ours.0, theirs.0);
        match self.ap.sessions.as_mut() {
            Some(s) => {
                s.replace(session, now);
            }
            None => self.ap.sessions = Some(PeerSessions::new(session)),
        }
        self.ap.theirs = Some(theirs);
    }

    /// The silence timer: a registered member that heard no sealed frame
    /// from the AP for `ap_silence` registers again at once (the AP may
    /// have restarted and forgotten us).
    pub(super) fn ap_silence_due(&mut self, now: Instant) {
        if !matches!(self.state, RegistrationState::Registered { .. }) {
            return;
        }
        let Some(heard) = self.ap.heard else {
            return;
        };
        let due = heard + self.config.ap_silence;
        if now < due {
            self.timers.set(MemberTimer::ApSilence, due);
        } else if self.pending.is_none() {
            self.send_registration(now, to_units(self.config.lifetime));
        }
    }

    pub(super) fn retransmit(&mut self, now: Instant) {
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
    pub(super) fn apply_operator_drain(&mut self, now: Instant, draining: bool) {
        let before = std::mem::replace(&mut self.drain.at_ap, draining);
        let before = Drain {
            at_ap: before,
            ..self.drain
        };
        self.rebind_if_drain_changed(now, before);
    }

    /// Whether we drain decides whether shims start new flows here: tell
    /// them with a fresh BU when that changed since `before`.
    fn rebind_if_drain_changed(&mut self, now: Instant, before: Drain) {
        if before.any() != self.drain.any() {
            let clients: Vec<Ipv6Addr> = self.correspondents.keys().copied().collect();
            for client in clients {
                self.rebind(now, client);
            }
        }
    }

    pub(super) fn handle_registration_ack(
        &mut self,
        now: Instant,
        signed: bool,
        msg: &MobilityMessage,
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
            // Only a refusal for a wrong key can come unsigned. It is never
            // final (anyone can send one): counted and reported for our
            // outstanding BU, and the retransmissions go on.
            if status == ba_status::AUTHENTICATION_FAILED && seq == p.seq {
                self.counters.auth_failures_reported += 1;
                self.events.push_back(MemberEvent::AuthFailureReported);
                return (DataAction::Consumed, false);
            }
            return (self.counters.drops.drop(DropReason::AuthFailed), false);
        }
        let action = match status {
            ba_status::ACCEPTED if seq == p.seq => {
                if p.lifetime != 0 {
                    // The session the AP made for this registration.
                    let Some(theirs) = msg.session() else {
                        return (self.counters.drops.drop(DropReason::Malformed), false);
                    };
                    self.ap_session(now, theirs);
                }
                if let Some(cookie) = msg.cookie() {
                    self.ap.cookie = Some(cookie);
                }
                self.pending = None;
                self.timers.cancel(MemberTimer::Retransmit);
                if p.lifetime == 0 {
                    self.state = RegistrationState::Left;
                    self.timers.cancel(MemberTimer::ApSilence);
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
                self.ap.heard = Some(now);
                self.timers
                    .set(MemberTimer::ApSilence, now + self.config.ap_silence);
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
            ba_status::RETRY_WITH_COOKIE if seq == p.seq => {
                // The AP made no state for that BU: the next one, with its
                // cookie for our endpoint, may take a new number.
                let Some(cookie) = msg.cookie() else {
                    return (self.counters.drops.drop(DropReason::Malformed), false);
                };
                self.ap.cookie = Some(cookie);
                self.send_registration(now, p.lifetime);
                DataAction::Consumed
            }
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

    pub(super) fn refused(&mut self, status: u8) {
        self.pending = None;
        self.timers.cancel(MemberTimer::Retransmit);
        self.timers.cancel(MemberTimer::Refresh);
        self.timers.cancel(MemberTimer::ApSilence);
        self.state = RegistrationState::Refused { status };
        self.events
            .push_back(MemberEvent::RegistrationRefused { status });
    }

    /// The refresh timer: re-register before the lifetime ends.
    pub(super) fn refresh_due(&mut self, now: Instant) {
        if matches!(self.state, RegistrationState::Registered { .. }) && self.pending.is_none() {
            self.send_registration(now, to_units(self.config.lifetime));
        }
    }

    /// The expiry timer: the registration lapsed without a BA.
    pub(super) fn expiry_due(&mut self, now: Instant) {
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
}
