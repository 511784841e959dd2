//! The shim - AP session (docs/PROTOCOL.md section 4.6): an X25519
//! handshake proven by a cookie round trip, retransmitted with backoff, a
//! new one when the AP says it lost ours, and a sealed keepalive while the
//! shim has flows.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::{Shim, ShimEvent, ShimTimer};
use crate::crypto::{DhKeyPair, Role, Session, shim_ap_keys};
use crate::engine::sealed::{PeerSessions, SESSION_GRACE, open_drop_reason, sealed_control};
use crate::engine::{DataAction, DropReason, Transmit};
use crate::wire::mh::MessageBody;
use crate::wire::{MemberId, MobilityMessage, MobilityOption};

/// First retransmission of a Hello; doubled up to [`HELLO_MAX_GAP`].
const HELLO_FIRST_GAP: Duration = Duration::from_secs(1);
/// Longest gap between two Hellos.
const HELLO_MAX_GAP: Duration = Duration::from_secs(32);
/// At most one new handshake a second on the AP's "no session" cookies.
const REHANDSHAKE_GAP: Duration = Duration::from_secs(1);

/// A handshake in flight: what the Hello carried and what the Welcome
/// needs.
#[derive(Debug)]
pub(super) struct Handshake {
    /// Our receive index (Is).
    index: u32,
    /// Our nonce (Ns): only the AP knows it, so its echo proves the AP.
    nonce: [u8; 16],
    /// Our ephemeral X25519 pair.
    keys: DhKeyPair,
    /// The AP's cookie, zero until a Shim Cookie came.
    cookie: [u8; 16],
    /// Gap before the next retransmission.
    gap: Duration,
}

/// The fields of a received Shim Welcome.
#[derive(Debug, Clone, Copy)]
pub(super) struct Welcome {
    pub nonce: [u8; 16],
    pub ap_index: u32,
    pub ap_nonce: [u8; 16],
    pub ap_public: [u8; 32],
    /// Its Endpoint option: our endpoint as the AP saw it.
    pub observed: Option<SocketAddr>,
    /// Its Client Address option: the inner source we must use. Absent:
    /// our pool address is taken, draw another instance.
    pub client: Option<Ipv6Addr>,
}

/// The shim's relation with the AP.
#[derive(Debug)]
pub(super) struct ApLink {
    /// This process's instance, the same in every Hello.
    pub instance: [u8; 8],
    /// The established session (current and replaced one).
    pub sessions: Option<PeerSessions>,
    /// The handshake in flight, if any.
    pub pending: Option<Handshake>,
    /// The client address of the established session (the Welcome's).
    pub client: Option<Ipv6Addr>,
    /// Our endpoint as the AP saw it (the Welcome's).
    pub observed: Option<SocketAddr>,
    /// When the last handshake started.
    last_start: Option<Instant>,
    /// Per member, the sequence number of the last revocation acted on:
    /// the AP repeats each BRI with the same number, and a repeat must not
    /// revoke what the member (a new instance, after trigger 126) bound
    /// since. Numbers are the AP's: forgotten with its session.
    pub revoked: HashMap<MemberId, u16>,
}

impl ApLink {
    pub(super) fn new(instance: [u8; 8]) -> ApLink {
        ApLink {
            instance,
            sessions: None,
            pending: None,
            client: None,
            observed: None,
            last_start: None,
            revoked: HashMap::new(),
        }
    }

    /// Is `index` one of our receive indices of the AP session?
    pub(super) fn owns(&self, index: u32) -> bool {
        self.sessions
            .as_ref()
            .is_some_and(|s| s.local_indices().any(|i| i == index))
    }
}

impl Shim {
    /// A receive index in use by no session of ours (nor the pending one).
    pub(super) fn fresh_index(&mut self) -> u32 {
        loop {
            let i = self.rng.session_index();
            let pending = self.ap.pending.as_ref().is_some_and(|h| h.index == i);
            if !pending && !self.ap.owns(i) && !self.by_index.contains_key(&i) {
                return i;
            }
        }
    }

    /// Draw Is, Ns and an X25519 pair and send the first Hello.
    pub(super) fn start_handshake(&mut self, now: Instant) {
        self.ap.pending = None;
        let index = self.fresh_index();
        let nonce = self.rng.nonce16();
        let keys = DhKeyPair::generate(&mut self.rng);
        self.ap.pending = Some(Handshake {
            index,
            nonce,
            keys,
            cookie: [0; 16],
            gap: HELLO_FIRST_GAP,
        });
        self.ap.last_start = Some(now);
        self.send_hello(now);
    }

    /// Send the pending Hello (now) and arm its retransmission.
    fn send_hello(&mut self, now: Instant) {
        let Some(h) = &self.ap.pending else {
            return;
        };
        let hello = MobilityMessage::new(MessageBody::ShimHello {
            instance: self.ap.instance,
            index: h.index,
            nonce: h.nonce,
            cookie: h.cookie,
            public: h.keys.public,
        })
        .with(MobilityOption::Endpoint(self.config.local))
        .with(MobilityOption::HomeAddress(self.config.home_address));
        let gap = h.gap;
        self.transmits.push_back(Transmit {
            to: self.config.access_point,
            payload: super::control::unsealed_frame(None, &hello),
        });
        self.counters.hellos_sent += 1;
        self.timers.set(ShimTimer::HelloRetransmit, now + gap);
    }

    /// No Welcome yet: the Hello again, after 1 s, 2 s, ... 32 s, 32 s ...
    pub(super) fn retransmit_hello(&mut self, now: Instant) {
        if let Some(h) = &mut self.ap.pending {
            h.gap = (h.gap * 2).min(HELLO_MAX_GAP);
            self.send_hello(now);
        }
    }

    /// A Shim Cookie from the AP endpoint.
    pub(super) fn shim_cookie(
        &mut self,
        now: Instant,
        nonce: [u8; 16],
        cookie: [u8; 16],
    ) -> DataAction {
        if nonce == [0; 16] {
            // "I have no session for you". Only worth a new handshake if
            // none is in flight, and at most one a second: anyone can send
            // this, and the old session keeps working until the Welcome.
            let recent = self
                .ap
                .last_start
                .is_some_and(|t| now < t + REHANDSHAKE_GAP);
            if self.ap.pending.is_none() && !recent {
                self.start_handshake(now);
            }
            return DataAction::Consumed;
        }
        match &mut self.ap.pending {
            Some(h) if h.nonce == nonce => {
                h.cookie = cookie;
                h.gap = HELLO_FIRST_GAP;
                self.send_hello(now);
                DataAction::Consumed
            }
            // Not the echo of our nonce: not from the AP.
            Some(_) => self.counters.drops.drop(DropReason::AuthFailed),
            // Late (a retransmission's answer): nothing to do.
            None => self.counters.drops.drop(DropReason::UnexpectedMessage),
        }
    }

    /// A Shim Welcome from the AP endpoint.
    pub(super) fn shim_welcome(&mut self, now: Instant, w: Welcome) -> DataAction {
        let Welcome {
            nonce,
            ap_index,
            ap_nonce,
            ap_public,
            ..
        } = w;
        let Some(h) = self.ap.pending.as_ref() else {
            // Late: the AP answered a retransmitted Hello again.
            return self.counters.drops.drop(DropReason::UnexpectedMessage);
        };
        if h.nonce != nonce {
            // Not the echo of our nonce: not from the AP.
            return self.counters.drops.drop(DropReason::AuthFailed);
        }
        let Some(client) = w.client else {
            // Our IPv4 pool address is another instance's: a new instance
            // (a new pool address), and a new handshake, at most one a
            // second. The old session, if any, goes on until its Welcome.
            self.counters.pool_collisions += 1;
            self.rng.fill(&mut self.ap.instance);
            self.ap.pending = None;
            self.timers.cancel(ShimTimer::HelloRetransmit);
            let at = self
                .ap
                .last_start
                .map_or(now, |t| (t + REHANDSHAKE_GAP).max(now));
            self.timers.set(ShimTimer::Rehandshake, at);
            return DataAction::Consumed;
        };
        if ap_index == 0 {
            return self.counters.drops.drop(DropReason::Malformed);
        }
        // A low-order point would give a key that does not depend on our
        // secret: refused (the pending handshake stays).
        let Some(shared) = h.keys.agree(&ap_public) else {
            return self.counters.drops.drop(DropReason::AuthFailed);
        };
        let keys = shim_ap_keys(
            &shared,
            &h.nonce,
            &ap_nonce,
            client,
            h.index,
            ap_index,
            &h.keys.public,
            &ap_public,
        );
        let session = Session::new(&keys, Role::Initiator, h.index, ap_index);
        let index = h.index;
        self.ap.pending = None;
        self.ap.client = Some(client);
        self.ap.observed = w.observed.map(crate::engine::canonical);
        // Behind a NAT, idle direct sessions get NAT keepalives too.
        let behind = self.behind_nat();
        self.set_behind_nat(now, behind);
        self.ap.revoked.clear();
        self.timers.cancel(ShimTimer::HelloRetransmit);
        let renewed = match &mut self.ap.sessions {
            Some(s) => {
                s.replace(session, now);
                self.arm_session_grace(now);
                true
            }
            None => {
                self.ap.sessions = Some(PeerSessions::new(session));
                false
            }
        };
        if self.timers.get(ShimTimer::Keepalive).is_none() {
            self.timers
                .set(ShimTimer::Keepalive, now + self.keepalive_interval());
        }
        self.counters.ap_sessions += 1;
        self.events.push_back(ShimEvent::ApSession {
            index,
            renewed,
            client,
            observed: self.ap.observed,
        });
        DataAction::Consumed
    }

    /// Queue `msg` sealed in the AP session; false if there is none.
    pub(super) fn send_sealed_to_ap(
        &mut self,
        member: Option<MemberId>,
        msg: &MobilityMessage,
    ) -> bool {
        let protection = self.config.protection;
        let Some(payload) = self
            .ap
            .sessions
            .as_mut()
            .and_then(|s| sealed_control(s, protection, member, msg))
        else {
            return false;
        };
        self.transmits.push_back(Transmit {
            to: self.config.access_point,
            payload,
        });
        true
    }

    /// The keepalive timer: a sealed BRR (the AP does not answer it) while
    /// there are flows, so that the AP keeps our record.
    pub(super) fn keepalive(&mut self, now: Instant) {
        if self.ap.sessions.is_none() {
            return;
        }
        if !self.flows.is_empty() {
            let brr = MobilityMessage::new(MessageBody::BindingRefreshRequest);
            if self.send_sealed_to_ap(None, &brr) {
                self.counters.keepalives += 1;
            }
        }
        self.timers
            .set(ShimTimer::Keepalive, now + self.keepalive_interval());
    }

    /// `nat_keepalive` behind a NAT (if set), else `keepalive`.
    pub(super) fn keepalive_interval(&self) -> Duration {
        if self.behind_nat() && !self.config.nat_keepalive.is_zero() {
            self.config.nat_keepalive
        } else {
            self.config.keepalive
        }
    }

    /// Open a frame sealed to one of our AP receive indices.
    pub(super) fn open_from_ap(
        &mut self,
        now: Instant,
        index: u32,
        frame: &mut [u8],
    ) -> Result<(), DataAction> {
        let protection = self.config.protection;
        let Some(s) = self.ap.sessions.as_mut() else {
            return Err(self.counters.drops.drop(DropReason::UnknownPeer));
        };
        s.open(now, index, protection, frame)
            .map_err(|e| self.counters.drops.drop(open_drop_reason(e)))
    }

    /// A session was replaced at `now`: its predecessor goes at the end of
    /// its grace. One timer for all: every later replacement pushes it, and
    /// a lingering predecessor opens nothing after its grace anyway.
    pub(super) fn arm_session_grace(&mut self, now: Instant) {
        self.timers
            .set(ShimTimer::SessionGrace, now + SESSION_GRACE);
    }

    /// Forget replaced sessions (AP and members) whose grace is over.
    pub(super) fn expire_sessions(&mut self, now: Instant) {
        if let Some(s) = &mut self.ap.sessions {
            s.expire(now);
        }
        let mut gone = Vec::new();
        for ms in self.member_sessions.values_mut() {
            gone.extend(ms.sessions.expire(now));
        }
        for index in gone {
            self.by_index.remove(&index);
        }
    }
}
