//! A move of the member's care-of endpoint (RFC 6275 sec. 11.7.1, 11.7.2):
//! re-register, re-bind every shim, and hold the answers to bound shims
//! until the new binding is acknowledged (at most [`MOVE_HOLD`]).

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Instant;

use super::data::Via;
use super::{Hold, MOVE_HOLD, Member, RoState};
use crate::engine::{Transmit, canonical, reaches, to_units};

impl Member {
    /// The care-of endpoint changed: re-register with every AP and re-bind
    /// every shim (RFC 6275 sec. 11.7.1 and 11.7.2).
    pub fn set_care_of(&mut self, now: Instant, care_of: SocketAddr) {
        if canonical(care_of) == canonical(self.config.care_of) {
            return;
        }
        self.config.care_of = care_of;
        // The APs' cookies are bound to the old endpoint: each AP answers
        // the new one's BU with a fresh cookie (BA 202) and we send it again.
        // A move to the other family takes each AP's endpoint of it.
        for ap in 0..self.aps.len() {
            self.aps[ap].endpoint = self.aps[ap].endpoints.for_local(care_of);
            self.aps[ap].cookie = None;
            self.aps[ap].observed = None;
            if self.aps[ap].active() {
                self.send_registration(now, ap, to_units(self.config.lifetime));
            }
        }
        let clients: Vec<Ipv6Addr> = self.correspondents.keys().copied().collect();
        for client in clients {
            if let Some(c) = self.correspondents.get_mut(&client) {
                // The old care-of token is worthless now; the binding is
                // stale. Hold the answers for a bound shim until the new
                // binding is in place (a care-of test and a BU: about two
                // round trips to the shim), rather than detour via the AP;
                // a shim of the other family cannot be bound again: its
                // answers go through the AP at once.
                let rebinds = reaches(care_of, c.shim);
                if c.binding.take().is_some() && rebinds {
                    c.hold = Some(Hold {
                        until: now + MOVE_HOLD,
                        packets: c.hold.take().map(|h| h.packets).unwrap_or_default(),
                    });
                }
                c.care_of = None;
                if !rebinds {
                    // Nor does a run under way go on: its tests would go
                    // from our new family to the shim's other one.
                    c.rr = RoState::Idle;
                }
            }
            self.start_rr(now, client);
        }
    }

    /// Send answers held during a move, sealed for `via` (the client's
    /// shim, or an AP).
    pub(super) fn release_held(&mut self, via: Via, held: VecDeque<Vec<u8>>) {
        let to = match via {
            Via::Ap(ap) => self.aps[ap].endpoint,
            Via::Shim(client) => match self.correspondents.get(&client) {
                Some(c) => c.shim,
                None => return,
            },
        };
        for packet in held {
            let Some(payload) = self.sealed_packet(via, &packet) else {
                self.counters
                    .drops
                    .drop(crate::engine::DropReason::NoSession);
                continue;
            };
            match via {
                Via::Ap(_) => self.counters.via_ap_out += 1,
                Via::Shim(_) => self.counters.direct_out += 1,
            }
            self.transmits.push_back(Transmit { to, payload });
        }
    }

    /// The hold deadline passed without a new binding: what was held goes
    /// through the shim's AP (or another, 7.5), in order.
    pub(super) fn release_if_late(&mut self, now: Instant, client: Ipv6Addr) {
        let Some(c) = self.correspondents.get_mut(&client) else {
            return;
        };
        if c.hold.as_ref().is_some_and(|h| h.until <= now)
            && let Some(hold) = c.hold.take()
        {
            let notice_ap = c.ap;
            match self.answer_ap(now, Some(notice_ap)) {
                Some(ap) => self.release_held(Via::Ap(ap), hold.packets),
                None => {
                    for _ in hold.packets {
                        self.counters
                            .drops
                            .drop(crate::engine::DropReason::NoSession);
                    }
                }
            }
        }
    }
}
