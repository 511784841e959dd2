//! Bindings at the shims (RFC 6275 sec. 11.7.2): the BU once both tokens
//! are in, its BA, refresh and retransmission on the correspondent timer.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Instant;

use super::data::Via;
use super::{
    ActiveBinding, EXPIRED_NONCE_STATUSES, MAX_TOKEN_LIFETIME, Member, MemberEvent, RoState,
    SessionId,
};
use crate::crypto::{self, Kbm, Role, Session, member_shim_keys};
use crate::engine::sealed::PeerSessions;
use crate::engine::{
    DataAction, DropReason, Transmit, control_frame, from_units, sign_binding, to_units,
    verify_binding,
};
use crate::wire::mh::{MessageBody, ba_status};
use crate::wire::{MobilityMessage, MobilityOption};

impl Member {
    /// Both tokens are in: derive Kbm and send the BU (RFC 6275 sec. 11.7.2).
    pub(super) fn tokens_complete(&mut self, now: Instant, client: Ipv6Addr) {
        let Some(c) = self.correspondents.get_mut(&client) else {
            return;
        };
        let (Some(home), Some(care_of)) = (c.home, c.care_of) else {
            return;
        };
        let kbm = crypto::kbm(&home.token, &care_of.token);
        // One counter for all shims: a new correspondent entry never starts
        // behind what a shim remembers of this member.
        let seq = self.ro_seq;
        self.ro_seq = self.ro_seq.wrapping_add(1);
        c.rr = RoState::BindingSent { seq, attempt: 1 };
        let shim = c.shim;
        // A fresh Session {Im, Nm} per BU: its BA 0 makes a new session.
        let session = (self.unused_shim_index(), self.rng.nonce16());
        if let Some(c) = self.correspondents.get_mut(&client) {
            c.bu_session = session;
        }
        let lifetime = to_units(self.config.binding_lifetime);
        let nonces = (home.index, care_of.index);
        self.send_binding_update(shim, seq, lifetime, &kbm, nonces, session, true);
        self.arm_correspondent(now, client, Some(now + self.config.initial_retransmit));
    }

    /// A receive index for a member - shim session: non-zero, not an AP
    /// session's, not in use.
    fn unused_shim_index(&mut self) -> u32 {
        loop {
            let i = self.rng.session_index();
            if !self.is_ap_index(i) && !self.shim_indices.contains_key(&i) {
                return i;
            }
        }
    }

    /// The RO BU (unsealed; Binding Authorization Data with Kbm, last).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_binding_update(
        &mut self,
        shim: SocketAddr,
        seq: u16,
        lifetime: u16,
        kbm: &Kbm,
        nonces: (u16, u16),
        session: SessionId,
        ack: bool,
    ) {
        // The HoA the shim at `shim` serves.
        let home = self
            .correspondents
            .values()
            .find(|c| c.shim == shim)
            .map_or(self.config.home_address, |c| c.home_address);
        let c = &self.config;
        let msg = MobilityMessage::new(MessageBody::BindingUpdate {
            sequence: seq,
            ack,
            home: false,
            lifetime,
        });
        let msg = self
            .with_bu_options(msg, self.is_draining(), home)
            .with(MobilityOption::NonceIndices {
                home: nonces.0,
                care_of: nonces.1,
            })
            .with(MobilityOption::Session {
                index: session.0,
                nonce: session.1,
            })
            .with(MobilityOption::BindingAuthorization([0; 12]));
        let mut payload = control_frame(Some(c.id), &msg);
        sign_binding(&mut payload, kbm);
        self.transmits.push_back(Transmit { to: shim, payload });
    }

    /// Send a fresh BU with the tokens we hold (drain flag change), or run
    /// return routability again if they are too old.
    pub(super) fn rebind(&mut self, now: Instant, client: Ipv6Addr) {
        let Some(c) = self.correspondents.get(&client) else {
            return;
        };
        let fresh = c.home.is_some_and(|h| now < h.at + MAX_TOKEN_LIFETIME)
            && c.care_of.is_some_and(|t| now < t.at + MAX_TOKEN_LIFETIME);
        if fresh && c.binding.is_some() {
            self.tokens_complete(now, client);
        } else if c.binding.is_some() || !matches!(c.rr, RoState::Idle | RoState::Backoff { .. }) {
            self.start_rr(now, client);
        }
    }

    /// A BA from `client`'s shim (unsealed; status 0 and 135 signed with Kbm).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_binding_ack(
        &mut self,
        now: Instant,
        client: Ipv6Addr,
        mh: &[u8],
        msg: &MobilityMessage,
        status: u8,
        seq: u16,
        lifetime: u16,
    ) -> DataAction {
        let Some(c) = self.correspondents.get_mut(&client) else {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        let RoState::BindingSent { seq: sent, .. } = c.rr else {
            return self.counters.drops.drop(DropReason::UnexpectedMessage);
        };
        let (Some(home), Some(care_of)) = (c.home, c.care_of) else {
            return self.counters.drops.drop(DropReason::UnexpectedMessage);
        };
        if status == ba_status::SEQUENCE_OUT_OF_WINDOW {
            // RFC 6275 sec. 11.7.2: the shim names the last number it
            // accepted from us (signed with this run's Kbm); continue above it.
            let kbm = crypto::kbm(&home.token, &care_of.token);
            if !verify_binding(mh, &kbm) {
                return self.counters.drops.drop(DropReason::AuthFailed);
            }
            if crate::engine::seq_newer(seq.wrapping_add(1), self.ro_seq) {
                self.ro_seq = seq.wrapping_add(1);
            }
            self.tokens_complete(now, client);
            return DataAction::Consumed;
        }
        if seq != sent {
            return self.counters.drops.drop(DropReason::Replay);
        }
        if status == ba_status::ACCEPTED {
            let kbm = crypto::kbm(&home.token, &care_of.token);
            if !verify_binding(mh, &kbm) {
                return self.counters.drops.drop(DropReason::AuthFailed);
            }
            let Some((their_index, their_nonce)) = msg.session() else {
                return self.counters.drops.drop(DropReason::Malformed);
            };
            // The member - shim session (the member is the initiator).
            let (ours, their_nonce) = (c.bu_session, their_nonce);
            let keys = member_shim_keys(
                &kbm,
                &ours.1,
                &their_nonce,
                self.config.id.0,
                ours.0,
                their_index,
            );
            let session = Session::new(&keys, Role::Initiator, ours.0, their_index);
            match c.sessions.as_mut() {
                // A duplicate BA for the same BU: the session is in place.
                Some(s)
                    if s.current().local_index == ours.0
                        && s.current().remote_index == their_index => {}
                Some(s) => {
                    if let Some(gone) = s.replace(session, now)
                        && gone != ours.0
                        && !s.local_indices().any(|i| i == gone)
                    {
                        self.shim_indices.remove(&gone);
                    }
                }
                None => c.sessions = Some(PeerSessions::new(session)),
            }
            self.shim_indices.insert(ours.0, client);
            c.binding = Some(ActiveBinding {
                seq,
                kbm,
                nonces: (home.index, care_of.index),
                expires: now + from_units(lifetime),
            });
            c.rr = RoState::Idle;
            c.last_direct_out = now;
            let held = c.hold.take().map(|h| h.packets).unwrap_or_default();
            let (shim, elapsed) = (c.shim, now - c.rr_started);
            self.release_held(Via::Shim(client), held);
            self.counters.rr_successes += 1;
            self.events.push_back(MemberEvent::RouteOptimized {
                client,
                shim,
                elapsed,
            });
            self.arm_correspondent(now, client, None);
            self.arm_nat_keepalive(now);
            return DataAction::Consumed;
        }
        // Errors come unauthenticated (the shim may not have our tokens).
        self.counters.rr_failures += 1;
        self.events
            .push_back(MemberEvent::BindingRejected { client, status });
        if EXPIRED_NONCE_STATUSES.contains(&status) {
            c.home = None;
            self.start_rr(now, client);
        } else {
            let until = now + self.config.max_retransmit;
            c.rr = RoState::Backoff { until };
            self.arm_correspondent(now, client, Some(until));
        }
        DataAction::Consumed
    }

    pub(super) fn correspondent_timer(&mut self, now: Instant, client: Ipv6Addr) {
        self.release_if_late(now, client);
        let Some(c) = self.correspondents.get_mut(&client) else {
            return;
        };
        let mut ran_out = false;
        if let Some(b) = c.binding
            && b.expires <= now
        {
            c.binding = None;
            ran_out = true;
        }
        let due = c.deadline.is_some_and(|d| d <= now);
        let lifetime = self.config.binding_lifetime;
        let idle = now.saturating_duration_since(c.last_activity) > lifetime;
        match c.rr {
            RoState::Testing { attempt } if due => {
                if idle {
                    c.rr = RoState::Idle;
                    self.counters.rr_failures += 1;
                } else {
                    c.rr = RoState::Testing {
                        attempt: attempt + 1,
                    };
                    self.counters.retransmissions += 1;
                    self.send_tests(now, client);
                    return;
                }
            }
            RoState::BindingSent { seq, attempt } if due => {
                if attempt >= 3 {
                    // The tokens may be stale at the shim: start over.
                    self.counters.rr_failures += 1;
                    if idle {
                        c.rr = RoState::Idle;
                    } else {
                        self.start_rr(now, client);
                        return;
                    }
                } else {
                    self.resend_binding_update(now, client, seq, attempt + 1);
                    return;
                }
            }
            RoState::Backoff { until } if until <= now => {
                if idle {
                    c.rr = RoState::Idle;
                } else {
                    self.start_rr(now, client);
                    return;
                }
            }
            _ => {}
        }
        // Refresh an active binding that is in use before it lapses. An
        // idle client's binding lapses instead: binding and session stay
        // until `expires`, as the shim still sends direct until then, and
        // activity meanwhile refreshes at once (`Member::touch`).
        let Some(c) = self.correspondents.get(&client) else {
            return;
        };
        if c.lapsing(now, lifetime) && !idle {
            self.start_rr(now, client);
            return;
        }
        if c.binding.is_none() && matches!(c.rr, RoState::Idle) {
            if idle {
                self.forget_correspondent(client);
                return;
            }
            if ran_out {
                // Active again, but not refreshed in time: RR again.
                self.start_rr(now, client);
                return;
            }
        }
        let deadline = match c.rr {
            RoState::Backoff { until } => Some(until),
            _ => c.deadline.filter(|d| *d > now),
        };
        self.arm_correspondent(now, client, deadline);
    }

    /// Send the outstanding BU to `client`'s shim again (attempt `attempt`).
    fn resend_binding_update(&mut self, now: Instant, client: Ipv6Addr, seq: u16, attempt: u32) {
        let Some(c) = self.correspondents.get_mut(&client) else {
            return;
        };
        c.rr = RoState::BindingSent { seq, attempt };
        let (shim, home, care_of, session) = (c.shim, c.home, c.care_of, c.bu_session);
        if let (Some(h), Some(co)) = (home, care_of) {
            let kbm = crypto::kbm(&h.token, &co.token);
            let lifetime = to_units(self.config.binding_lifetime);
            self.counters.retransmissions += 1;
            let nonces = (h.index, co.index);
            self.send_binding_update(shim, seq, lifetime, &kbm, nonces, session, true);
        }
        let at = now + self.backoff(attempt);
        self.arm_correspondent(now, client, Some(at));
    }
}
