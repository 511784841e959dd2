//! NAT keepalives (docs/PROTOCOL.md 7.3): behind a NAT (an AP saw us at an
//! endpoint other than our own), each direct binding session that sent
//! nothing for `nat_keepalive` gets an empty sealed data frame, so the
//! NAT's mapping towards the shim outlives an idle spell.

use std::time::Instant;

use super::data::Via;
use super::{Member, MemberTimer};
use crate::engine::Transmit;

impl Member {
    /// Arm the keepalive timer if we are behind a NAT and it is not armed.
    pub(super) fn arm_nat_keepalive(&mut self, now: Instant) {
        let every = self.config.nat_keepalive;
        if every.is_zero() || !self.behind_nat() {
            return;
        }
        if self.timers.get(MemberTimer::NatKeepalive).is_none() {
            self.timers.set(MemberTimer::NatKeepalive, now + every);
        }
    }

    pub(super) fn nat_keepalive_due(&mut self, now: Instant) {
        let every = self.config.nat_keepalive;
        if every.is_zero() || !self.behind_nat() {
            return;
        }
        let mut next = now + every;
        let due: Vec<_> = self
            .correspondents
            .values()
            .filter(|c| c.sessions.is_some() && c.binding.is_some_and(|b| b.expires > now))
            .filter_map(|c| {
                let at = c.last_direct_out + every;
                if at <= now {
                    Some(c.client)
                } else {
                    next = next.min(at);
                    None
                }
            })
            .collect();
        for client in due {
            let Some(payload) = self.sealed_packet(Via::Shim(client), &[]) else {
                continue;
            };
            let Some(c) = self.correspondents.get_mut(&client) else {
                continue;
            };
            c.last_direct_out = now;
            let to = c.shim;
            self.counters.nat_keepalives += 1;
            self.transmits.push_back(Transmit { to, payload });
        }
        self.timers.set(MemberTimer::NatKeepalive, next);
    }
}
