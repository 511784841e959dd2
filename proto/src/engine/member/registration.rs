//! Registration with each access point (RFC 6275 sec. 11.7.1): the
//! authenticated BU with retransmission and backoff, its refresh and
//! expiry, draining and leaving. Every AP has its own; the BAs are in
//! `ack`.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use super::{
    AP_PROBE_INTERVAL, DEREGISTRATION_ATTEMPTS, Member, MemberEvent, MemberTimer, PendingBu,
    RegistrationState,
};
use crate::engine::ap::AUTH_SUBTYPE_MN_HA;
use crate::engine::sealed::sealed_control;
use crate::engine::{Transmit, control_frame, sign_registration, to_units};
use crate::wire::mh::MessageBody;
use crate::wire::{MobilityMessage, MobilityOption};

impl Member {
    /// Begin registering with every AP.
    pub fn start(&mut self, now: Instant) {
        for ap in 0..self.aps.len() {
            if matches!(self.aps[ap].state, RegistrationState::Idle) {
                self.aps[ap].state = RegistrationState::Registering;
                self.send_registration(now, ap, to_units(self.config.lifetime));
            }
        }
    }

    /// Start or stop draining: the APs give us no new clients, and bound
    /// shims stop sending us new flows.
    pub fn set_draining(&mut self, now: Instant, draining: bool) {
        if draining == self.draining {
            return;
        }
        let before = self.is_draining();
        self.draining = draining;
        for ap in 0..self.aps.len() {
            if self.aps[ap].active() {
                self.send_registration(now, ap, to_units(self.config.lifetime));
            }
        }
        self.rebind_if_drain_changed(now, before);
    }

    /// Deregister from every AP and the shims (RFC 6275 sec. 11.5.4).
    pub fn leave(&mut self, now: Instant) {
        if matches!(
            self.state(),
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
        for ap in 0..self.aps.len() {
            match self.aps[ap].state {
                RegistrationState::Registered { .. } | RegistrationState::Registering => {
                    self.aps[ap].state = RegistrationState::Deregistering;
                    self.send_registration(now, ap, 0);
                }
                RegistrationState::Idle => self.aps[ap].state = RegistrationState::Left,
                _ => {}
            }
        }
        self.left_if_done();
    }

    /// An AP is done with us: `Left` once every AP is.
    pub(super) fn left_if_done(&mut self) {
        if self.state() == RegistrationState::Left {
            self.events.push_back(MemberEvent::Left);
        }
    }

    /// A new BU to `ap` (the next sequence number), retransmitted from
    /// `initial_retransmit` on.
    pub(super) fn send_registration(&mut self, now: Instant, ap: usize, lifetime: u16) {
        let wait = self.config.initial_retransmit;
        self.send_registration_after(now, ap, lifetime, wait);
    }

    /// A new BU to `ap`, first retransmitted after `first_wait`.
    pub(super) fn send_registration_after(
        &mut self,
        now: Instant,
        ap: usize,
        lifetime: u16,
        first_wait: Duration,
    ) {
        let link = &mut self.aps[ap];
        let seq = link.next_seq;
        link.next_seq = link.next_seq.wrapping_add(1);
        link.pending = Some(PendingBu {
            seq,
            lifetime,
            attempt: 1,
            first_wait,
        });
        self.transmit_registration(ap, seq, lifetime);
        self.timers
            .set(MemberTimer::Retransmit(ap), now + first_wait);
    }

    fn transmit_registration(&mut self, ap: usize, seq: u16, lifetime: u16) {
        let msg = MobilityMessage::new(MessageBody::BindingUpdate {
            sequence: seq,
            ack: true,
            home: true,
            lifetime,
        });
        let (index, nonce) = self.aps[ap].ours;
        let mut msg = self
            .with_bu_options(msg, self.draining, self.config.home_address)
            .with(MobilityOption::Session { index, nonce });
        if let Some(cookie) = self.aps[ap].cookie {
            msg = msg.with(MobilityOption::Cookie(cookie));
        }
        self.counters.registration_bus += 1;
        self.send_signed_to_ap(ap, msg);
    }

    /// Send `msg` unsealed to `ap`, signed with the registration key (the
    /// Authentication option last): the registration BU only.
    fn send_signed_to_ap(&mut self, ap: usize, msg: MobilityMessage) {
        let c = &self.config;
        let msg = msg.with(MobilityOption::Authentication {
            subtype: AUTH_SUBTYPE_MN_HA,
            spi: c.spi,
            data: [0; 16],
        });
        let mut payload = control_frame(Some(c.id), &msg);
        sign_registration(&mut payload, &c.key, c.home_address);
        self.transmits.push_back(Transmit {
            to: self.aps[ap].endpoint,
            payload,
        });
    }

    /// Send `msg` to `ap` sealed in its session; false if there is none yet.
    pub(super) fn send_sealed_to_ap(&mut self, ap: usize, msg: &MobilityMessage) -> bool {
        let (protection, id) = (self.config.protection, self.config.id);
        let Some(link) = self.aps.get_mut(ap) else {
            return false;
        };
        let Some(sessions) = link.sessions.as_mut() else {
            return false;
        };
        let Some(payload) = sealed_control(sessions, protection, Some(id), msg) else {
            return false;
        };
        let to = link.endpoint;
        self.transmits.push_back(Transmit { to, payload });
        true
    }

    pub(super) fn retransmit(&mut self, now: Instant, ap: usize) {
        let Some(p) = self.aps.get_mut(ap).and_then(|a| a.pending.as_mut()) else {
            return;
        };
        p.attempt += 1;
        let (seq, lifetime, attempt, first_wait) = (p.seq, p.lifetime, p.attempt, p.first_wait);
        if matches!(self.aps[ap].state, RegistrationState::Deregistering)
            && attempt > DEREGISTRATION_ATTEMPTS
        {
            self.aps[ap].pending = None;
            self.aps[ap].state = RegistrationState::Left;
            self.left_if_done();
            return;
        }
        self.counters.retransmissions += 1;
        self.transmit_registration(ap, seq, lifetime);
        let backoff = first_wait * 2u32.saturating_pow(attempt - 1);
        // An AP we lost, or have not reached yet, is probed at least once a
        // second (a restarted AP learns its members only from their BUs).
        let lost = self.aps[ap].probing || !self.aps[ap].registered();
        let cap = if lost {
            AP_PROBE_INTERVAL.min(self.config.max_retransmit)
        } else {
            self.config.max_retransmit
        };
        self.timers
            .set(MemberTimer::Retransmit(ap), now + backoff.min(cap));
    }

    /// Whether we drain decides whether shims start new flows here: tell
    /// them with a fresh BU when that changed since `before`.
    pub(super) fn rebind_if_drain_changed(&mut self, now: Instant, before: bool) {
        if before != self.is_draining() {
            let clients: Vec<Ipv6Addr> = self.correspondents.keys().copied().collect();
            for client in clients {
                self.rebind(now, client);
            }
        }
    }

    /// The refresh timer: re-register with `ap` before the lifetime ends.
    pub(super) fn refresh_due(&mut self, now: Instant, ap: usize) {
        if self.aps[ap].registered() && self.aps[ap].pending.is_none() {
            self.send_registration(now, ap, to_units(self.config.lifetime));
        }
    }

    /// The expiry timer: the registration with `ap` lapsed without a BA.
    pub(super) fn expiry_due(&mut self, now: Instant, ap: usize) {
        if let RegistrationState::Registered { expires } = self.aps[ap].state
            && expires <= now
        {
            self.aps[ap].state = RegistrationState::Registering;
            self.events.push_back(MemberEvent::RegistrationLost {
                ap: self.aps[ap].endpoint,
            });
            if self.aps[ap].pending.is_none() {
                self.send_registration(now, ap, to_units(self.config.lifetime));
            }
        }
    }
}
