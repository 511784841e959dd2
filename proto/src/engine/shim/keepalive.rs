//! NAT keepalives (docs/PROTOCOL.md 7.4): behind a NAT (the shell or the
//! AP handshake says so, [`Shim::set_behind_nat`]), each direct binding
//! session that sent nothing for `nat_keepalive` gets an empty sealed data
//! frame to the member's care-of endpoint, so the NAT's mapping towards it
//! outlives an idle spell.

use std::time::Instant;

use super::{Shim, ShimTimer};
use crate::crypto::session::HEADER_LEN;
use crate::engine::Transmit;
use crate::engine::sealed::seal_data;
use crate::wire::TAG_LEN;

impl Shim {
    /// Whether our endpoint is translated by a NAT (the AP saw another
    /// one): if so, idle direct binding sessions get NAT keepalives.
    pub fn set_behind_nat(&mut self, now: Instant, behind: bool) {
        self.nat_keepalive_on = behind;
        self.arm_nat_keepalive(now);
    }

    /// Arm the keepalive timer if it is on and not armed.
    pub(super) fn arm_nat_keepalive(&mut self, now: Instant) {
        let every = self.config.nat_keepalive;
        if every.is_zero() || !self.nat_keepalive_on {
            return;
        }
        if self.timers.get(ShimTimer::NatKeepalive).is_none() {
            self.timers.set(ShimTimer::NatKeepalive, now + every);
        }
    }

    pub(super) fn nat_keepalive_due(&mut self, now: Instant) {
        let every = self.config.nat_keepalive;
        if every.is_zero() || !self.nat_keepalive_on {
            return;
        }
        let protection = self.config.protection;
        let mut next = now + every;
        let members: Vec<_> = self.member_sessions.keys().copied().collect();
        for member in members {
            let Some(to) = self.valid_binding(member, now).map(|b| b.care_of) else {
                continue;
            };
            let Some(ms) = self.member_sessions.get_mut(&member) else {
                continue;
            };
            let at = ms.last_out + every;
            if at > now {
                next = next.min(at);
                continue;
            }
            let mut frame = vec![0u8; HEADER_LEN + TAG_LEN];
            if seal_data(&mut ms.sessions, protection, Some(member), &mut frame).is_ok() {
                ms.last_out = now;
                self.counters.nat_keepalives += 1;
                self.transmits.push_back(Transmit { to, payload: frame });
            }
        }
        self.timers.set(ShimTimer::NatKeepalive, next);
    }
}
