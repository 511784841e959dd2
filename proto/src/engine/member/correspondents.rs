//! Return routability with each shim client (RFC 6275 sec. 5.2, 11.6):
//! the Shim Notice that starts it, the home test through the AP and the
//! care-of test direct, and the keygen tokens they bring back.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::{
    Correspondent, GotToken, MAX_TOKEN_LIFETIME, Member, MemberEvent, MemberTimer, RoState,
};
use crate::crypto::{self, Token};
use crate::engine::{
    DataAction, DropReason, Transmit, binding_id, canonical, control_frame, reaches,
};
use crate::wire::mh::MessageBody;
use crate::wire::{MobilityMessage, MobilityOption};

impl Member {
    /// AP `ap` tells us about a shim client (sealed Shim Notice), with the
    /// shim process it has a session with: that AP relays our HoTIs to it.
    pub(super) fn handle_shim_notice(
        &mut self,
        now: Instant,
        ap: usize,
        client: Ipv6Addr,
        shim: SocketAddr,
        instance: Option<[u8; 8]>,
        home: Ipv6Addr,
    ) {
        if !self.config.route_optimization {
            return;
        }
        let shim = canonical(shim);
        match self.correspondents.get_mut(&client) {
            Some(c) if c.shim == shim && c.instance == instance && c.home_address == home => {
                let lapsing = c.lapsing(now, self.config.binding_lifetime);
                c.last_activity = now;
                c.ap = ap;
                if let RoState::Backoff { until } = c.rr
                    && until <= now
                {
                    self.start_rr(now, client);
                } else if (matches!(c.rr, RoState::Idle) && c.binding.is_none()) || lapsing {
                    self.start_rr(now, client);
                }
            }
            Some(c) if instance.is_some() && c.instance == instance && c.home_address == home => {
                // The same shim process at a new endpoint (it roamed, and
                // the AP followed it): its binding and session stay, unless
                // it moved to the other family (it took its own binding
                // down then: its packets come through the AP).
                c.shim = shim;
                c.last_activity = now;
                c.ap = ap;
                self.counters.roams += 1;
                let shares = reaches(self.config.care_of, shim);
                if !shares {
                    c.binding = None;
                    c.rr = RoState::Idle;
                } else if c.binding.is_none() && !matches!(c.rr, RoState::Testing { .. }) {
                    // Back in our family: route optimization again.
                    self.start_rr(now, client);
                }
            }
            Some(_) => {
                // Another shim endpoint or a new shim process: what we had
                // with the old one (tokens, binding, session) is worthless.
                self.forget_correspondent(client);
                self.new_correspondent(now, ap, client, shim, instance, home);
            }
            None => {
                if self.correspondents.len() >= self.config.max_correspondents {
                    self.counters.limit_hits.correspondents += 1;
                    if !self.evict_correspondent(now) {
                        return;
                    }
                }
                self.new_correspondent(now, ap, client, shim, instance, home);
            }
        }
    }

    /// Can we reach `shim` directly: is it of our care-of's family?
    pub(super) fn shares_family(&self, shim: SocketAddr) -> bool {
        reaches(self.config.care_of, shim)
    }

    /// A frame that opened in `client`'s binding session with its newest
    /// counter came from `from`: the shim's endpoint moved there (roaming,
    /// docs/PROTOCOL.md 4.6).
    pub(super) fn shim_roam(&mut self, client: Ipv6Addr, from: SocketAddr) {
        if let Some(c) = self.correspondents.get_mut(&client)
            && c.shim != from
        {
            c.shim = from;
            self.counters.roams += 1;
        }
    }

    fn new_correspondent(
        &mut self,
        now: Instant,
        ap: usize,
        client: Ipv6Addr,
        shim: SocketAddr,
        instance: Option<[u8; 8]>,
        home: Ipv6Addr,
    ) {
        self.correspondents.insert(
            client,
            Correspondent {
                client,
                shim,
                home_address: home,
                rr: RoState::Idle,
                binding: None,
                last_activity: now,
                home_cookie: [0; 8],
                care_of_cookie: [0; 8],
                home: None,
                care_of: None,
                deadline: None,
                rr_started: now,
                hold: None,
                ap,
                instance,
                bu_session: (0, [0; 16]),
                sessions: None,
                last_direct_out: now,
                care_of_unanswered: 0,
                punched: None,
            },
        );
        if self.config.direct_return {
            self.events
                .push_back(MemberEvent::ShimClientAdded { client });
        }
        self.start_rr(now, client);
    }

    /// The table is full: evict the least recently active entry whose
    /// return routability has not finished (unproven) or whose binding is
    /// lapsing (an idle client's) if there is one, else the least recently
    /// active one. False if there is nothing to evict.
    fn evict_correspondent(&mut self, now: Instant) -> bool {
        let lifetime = self.config.binding_lifetime;
        let victim = self
            .correspondents
            .values()
            .min_by_key(|c| {
                let kept = c.binding.is_some() && !c.lapsing(now, lifetime);
                (kept, c.last_activity)
            })
            .map(|c| c.client);
        match victim {
            Some(client) => {
                self.forget_correspondent(client);
                true
            }
            None => false,
        }
    }

    /// A packet to or from `client`, or its Shim Notice: the client is
    /// active. A lapsing binding (the client was idle at its refresh
    /// point) is refreshed at once.
    pub(super) fn touch(&mut self, now: Instant, client: Ipv6Addr) {
        let lifetime = self.config.binding_lifetime;
        let Some(c) = self.correspondents.get_mut(&client) else {
            return;
        };
        c.last_activity = now;
        if c.lapsing(now, lifetime) {
            self.start_rr(now, client);
        }
    }

    /// Drop everything about `client`: entry, sessions, timer.
    pub(super) fn forget_correspondent(&mut self, client: Ipv6Addr) {
        if let Some(c) = self.correspondents.remove(&client) {
            for index in c.sessions.iter().flat_map(|s| s.local_indices()) {
                self.shim_indices.remove(&index);
            }
            if self.config.direct_return {
                self.events
                    .push_back(MemberEvent::ShimClientRemoved { client });
            }
        }
        self.timers.cancel(MemberTimer::Correspondent(client));
    }

    pub(super) fn start_rr(&mut self, now: Instant, client: Ipv6Addr) {
        if !self.config.route_optimization {
            return;
        }
        // No direct path between two families: the client stays on the AP
        // path (its status says why) until one of us moves.
        if self
            .correspondents
            .get(&client)
            .is_some_and(|c| !self.shares_family(c.shim))
        {
            return;
        }
        let home_cookie = self.rng.token();
        let care_of_cookie = self.rng.token();
        let Some(c) = self.correspondents.get_mut(&client) else {
            return;
        };
        c.home_cookie = home_cookie;
        c.care_of_cookie = care_of_cookie;
        // RFC 6275 sec. 5.2.7: a home keygen token may be reused while fresh.
        if c.home.is_some_and(|h| now >= h.at + MAX_TOKEN_LIFETIME) {
            c.home = None;
        }
        c.care_of = None;
        c.rr = RoState::Testing { attempt: 1 };
        c.rr_started = now;
        self.events
            .push_back(MemberEvent::ReturnRoutabilityStarted { client });
        self.send_tests(now, client);
    }

    /// Send what the run still needs: the HoTI (sealed, through the AP of
    /// the client's last Shim Notice)
    /// until the home token and its ticket are in, then the CoTI (direct,
    /// showing the ticket).
    pub(super) fn send_tests(&mut self, now: Instant, client: Ipv6Addr) {
        let Some(c) = self.correspondents.get(&client) else {
            return;
        };
        let (shim, ap, home_cookie, care_of_cookie, punched) =
            (c.shim, c.ap, c.home_cookie, c.care_of_cookie, c.punched);
        let ticket = c.home.and_then(|h| h.ticket);
        let attempt = match c.rr {
            RoState::Testing { attempt } => attempt,
            _ => 1,
        };
        match ticket {
            None => {
                let msg = MobilityMessage::new(MessageBody::HomeTestInit {
                    cookie: home_cookie,
                })
                .with(binding_id(self.config.id))
                .with(MobilityOption::HomeAddress(c.home_address))
                .with(MobilityOption::Correspondent(client));
                self.send_sealed_to_ap(ap, &msg);
            }
            Some((nonce_index, ticket)) => {
                let coti = MobilityMessage::new(MessageBody::CareOfTestInit {
                    cookie: care_of_cookie,
                })
                .with(binding_id(self.config.id))
                .with(MobilityOption::CareOfTicket {
                    nonce_index,
                    ticket,
                });
                let frame = control_frame(Some(self.config.id), &coti);
                if let Some(p) = punched.filter(|p| *p != shim) {
                    self.transmits.push_back(Transmit {
                        to: p,
                        payload: frame.clone(),
                    });
                }
                self.transmits.push_back(Transmit {
                    to: shim,
                    payload: frame,
                });
                if let Some(c) = self.correspondents.get_mut(&client) {
                    c.care_of_unanswered += 1;
                }
            }
        }
        self.arm_correspondent(now, client, Some(now + self.backoff(attempt)));
    }

    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        (self.config.initial_retransmit * 2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.config.max_retransmit)
    }

    pub(super) fn arm_correspondent(
        &mut self,
        now: Instant,
        client: Ipv6Addr,
        deadline: Option<Instant>,
    ) {
        let Some(c) = self.correspondents.get_mut(&client) else {
            return;
        };
        c.deadline = deadline;
        // The refresh point of an active binding also needs the timer, while
        // no return routability run is under way; once passed, the binding's
        // expiry is the next thing to look at.
        let total = self.config.binding_lifetime;
        let refresh = c.binding.map(|b| {
            let refresh_at = b.expires - total / 5;
            if refresh_at > now && matches!(c.rr, RoState::Idle) {
                refresh_at
            } else {
                b.expires.max(now + Duration::from_millis(1))
            }
        });
        let at = [deadline, refresh, c.hold.as_ref().map(|h| h.until)]
            .into_iter()
            .flatten()
            .min();
        match at {
            Some(at) => self.timers.set(MemberTimer::Correspondent(client), at),
            None => self.timers.cancel(MemberTimer::Correspondent(client)),
        }
    }

    /// A HoT (with the shim's care-of ticket) or a CoT.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_test(
        &mut self,
        now: Instant,
        client: Ipv6Addr,
        home: bool,
        index: u16,
        cookie: Token,
        token: Token,
        ticket: Option<(u16, Token)>,
        from: Option<SocketAddr>,
    ) -> DataAction {
        let Some(c) = self.correspondents.get_mut(&client) else {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        if !matches!(c.rr, RoState::Testing { .. }) {
            return self.counters.drops.drop(DropReason::UnexpectedMessage);
        }
        let expected = if home {
            c.home_cookie
        } else {
            c.care_of_cookie
        };
        if !crypto::constant_time_eq(&expected, &cookie) {
            return self.counters.drops.drop(DropReason::AuthFailed);
        }
        let got = Some(GotToken {
            index,
            token,
            at: now,
            ticket,
        });
        if home {
            let first = c.home.is_none();
            c.home = got;
            if first && c.care_of.is_none() {
                // Now the care-of test may go, with the ticket.
                self.send_tests(now, client);
                return DataAction::Consumed;
            }
        } else {
            c.care_of = got;
            c.care_of_unanswered = 0;
            // A CoT from the punched endpoint: the shim answers there (it
            // echoed the cookie), so the BU and direct answers go there.
            if let Some(from) = from
                && c.punched == Some(from)
            {
                c.shim = from;
                c.punched = None;
                self.counters.roams += 1;
            }
        }
        self.tokens_complete(now, client);
        DataAction::Consumed
    }
}
