//! Finding out fast that an access point restarted (docs/PROTOCOL.md 4.5):
//! its silence (no sealed frame for `ap_silence`, while its BRR heartbeat
//! comes every 500 ms), or its hint (an unsealed zero-nonce Shim Cookie,
//! the restarted AP's answer to a sealed frame naming a session it does not
//! have). Either makes a BU to that AP at once, retransmitted quickly.

use std::time::Instant;

use super::{AP_HINT_INTERVAL, Member, MemberTimer, SILENCE_RETRANSMIT};
use crate::engine::{DataAction, DropReason, to_units};

impl Member {
    /// The silence timer of `ap`: registered with it but no sealed frame
    /// from it for `ap_silence`: register again at once (it may have
    /// restarted and forgotten us).
    pub(super) fn ap_silence_due(&mut self, now: Instant, ap: usize) {
        let link = &self.aps[ap];
        if !link.registered() {
            return;
        }
        let Some(heard) = link.heard else {
            return;
        };
        let due = heard + self.config.ap_silence;
        if now < due {
            self.timers.set(MemberTimer::ApSilence(ap), due);
        } else if link.pending.is_none() {
            self.register_again_quickly(now, ap);
        }
    }

    /// An unsealed zero-nonce Shim Cookie from `ap`'s endpoint: that AP
    /// knows no session of ours. Unauthenticated, so all it may cause is
    /// one BU (which needs the AP's cookie to do anything), and only if we
    /// have (or had) a session with that AP and are registering or
    /// registered with it, at most once per [`AP_HINT_INTERVAL`].
    pub(super) fn ap_hint(&mut self, now: Instant, ap: usize) -> DataAction {
        let link = &self.aps[ap];
        let recent = link
            .last_hint
            .is_some_and(|at| now.saturating_duration_since(at) < AP_HINT_INTERVAL);
        if link.theirs.is_none() || !link.active() || recent {
            return self.counters.drops.drop(DropReason::UnexpectedMessage);
        }
        self.aps[ap].last_hint = Some(now);
        self.counters.ap_hints += 1;
        self.register_again_quickly(now, ap);
        DataAction::Consumed
    }

    /// A BU to `ap` now, retransmitted from [`SILENCE_RETRANSMIT`] on; a
    /// new session from its BA 0 is an `ApRestarted`.
    fn register_again_quickly(&mut self, now: Instant, ap: usize) {
        self.aps[ap].probing = true;
        let lifetime = to_units(self.config.lifetime);
        self.send_registration_after(now, ap, lifetime, SILENCE_RETRANSMIT);
    }
}
