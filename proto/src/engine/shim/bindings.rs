//! The binding cache (RFC 6275 sec. 9.5): keygen tokens from rotating
//! nonces for the home and care-of tests, binding updates verified and
//! acknowledged, bindings dropped on a member's binding error.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Shim, ShimBinding, ShimEvent, ShimTimer};
use crate::crypto::{self, Kbm, Token};
use crate::engine::{
    DataAction, DropReason, ReceivedBu, Transmit, control_frame, from_units, seq_newer,
    sign_binding, to_units, verify_binding,
};
use crate::wire::mh::{MessageBody, ba_status};
use crate::wire::{MemberId, MobilityMessage, MobilityOption};

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

    pub(super) fn valid_binding(&self, member: MemberId, now: Instant) -> Option<&ShimBinding> {
        self.bindings.get(&member).filter(|b| b.expires > now)
    }

    /// HoTI relayed by the AP: answer with a home keygen token (RFC 6275 sec. 9.4.1).
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
        .with(MobilityOption::Correspondent(client));
        self.transmits.push_back(Transmit {
            to: self.config.access_point,
            payload: control_frame(Some(member), &reply),
        });
        self.counters.tests_answered += 1;
        DataAction::Consumed
    }

    /// CoTI from a member's care-of endpoint (RFC 6275 sec. 9.4.2).
    pub(super) fn answer_care_of_test(&mut self, from: SocketAddr, cookie: Token) -> DataAction {
        if !self.config.route_optimization {
            return self.counters.drops.drop(DropReason::UnexpectedMessage);
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
            payload: control_frame(None, &reply),
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

    /// RFC 6275 sec. 9.5.1: receiving binding updates.
    pub(super) fn handle_binding_update(
        &mut self,
        now: Instant,
        bu: &ReceivedBu<'_>,
    ) -> DataAction {
        let (from, msg, seq) = (bu.from, bu.msg, bu.seq);
        if !self.config.route_optimization {
            return self.reject_bu(from, DropReason::UnexpectedMessage);
        }
        let (Some((member, _)), Some(indices)) = (msg.binding_id(), msg.nonce_indices()) else {
            return self.reject_bu(from, DropReason::Malformed);
        };
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
                    payload: control_frame(Some(member), &ba),
                });
                return self.reject_bu(from, DropReason::Replay);
            }
        };
        if !verify_binding(bu.mh, &kbm, from, self.config.local) {
            return self.reject_bu(from, DropReason::AuthFailed);
        }
        let send_ba = |shim: &mut Self, status: u8, sequence: u16, lifetime: u16| {
            let ba = MobilityMessage::new(MessageBody::BindingAck {
                status,
                sequence,
                lifetime,
            })
            .with(MobilityOption::BindingAuthorization([0; 12]));
            let mut payload = control_frame(Some(member), &ba);
            sign_binding(&mut payload, &kbm, from, shim.config.local);
            shim.transmits.push_back(Transmit { to: from, payload });
        };
        if let Some(last) = self.last_seq.get(&member).copied()
            && !seq_newer(seq, last)
        {
            send_ba(self, ba_status::SEQUENCE_OUT_OF_WINDOW, last, 0);
            return self.reject_bu(from, DropReason::Replay);
        }
        self.last_seq.insert(member, seq);
        self.counters.bus_accepted += 1;
        if bu.lifetime == 0 {
            self.delete_binding(member);
            if bu.ack {
                send_ba(self, ba_status::ACCEPTED, seq, 0);
            }
            return DataAction::Consumed;
        }
        let granted = from_units(bu.lifetime).min(self.config.max_binding_lifetime);
        let draining = msg.member_state().is_some_and(|(_, d, _)| d);
        self.store_binding(now, member, from, seq, granted, draining);
        if bu.ack {
            send_ba(self, ba_status::ACCEPTED, seq, to_units(granted));
        }
        DataAction::Consumed
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
        if let Some(old) = moved_from {
            self.by_care_of.remove(&old);
        }
        self.bindings.insert(
            member,
            ShimBinding {
                care_of,
                seq,
                expires: now + granted,
                draining,
                created: previous.map_or(now, |b| b.created),
            },
        );
        self.by_care_of.insert(care_of, member);
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

    /// Delete `member`'s binding (deregistration).
    fn delete_binding(&mut self, member: MemberId) {
        if let Some(old) = self.bindings.remove(&member) {
            self.by_care_of.remove(&old.care_of);
            self.events.push_back(ShimEvent::BindingRemoved { member });
        }
        self.timers.cancel(ShimTimer::BindingExpiry(member));
    }

    /// A member says it has no binding with us (it restarted): drop ours,
    /// so that its flows go through the AP (which keeps them on it) until
    /// it binds again. Only the member's registered care-of endpoint counts.
    pub(super) fn binding_error(&mut self, from: SocketAddr) -> DataAction {
        let Some(member) = self.by_care_of.remove(&from) else {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        self.bindings.remove(&member);
        self.timers.cancel(ShimTimer::BindingExpiry(member));
        self.events.push_back(ShimEvent::BindingRemoved { member });
        DataAction::Consumed
    }
}
