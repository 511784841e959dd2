//! The shim's own moves (docs/PROTOCOL.md 6.5.2): its host's address
//! changed, perhaps to the other family; and the fallback to the AP path
//! when a member answers through the AP although we are bound to it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Shim, ShimEvent};
use crate::crypto::session::HEADER_LEN;
use crate::engine::sealed::seal_data;
use crate::engine::{Transmit, canonical, reaches};
use crate::wire::mh::MessageBody;
use crate::wire::{MemberId, MobilityMessage, TAG_LEN};

/// A member's data through the AP this long after its last BU to us means
/// it dropped the binding (earlier ones may have left it before it had the
/// BA).
pub const BINDING_SETTLE: Duration = Duration::from_secs(1);

impl Shim {
    /// Our endpoint moved to `local` (the host's address changed) and we
    /// now reach the AP at `access_point` (its endpoint of `local`'s
    /// family). The AP session stays: a keepalive sent at once makes the AP
    /// follow us (roaming, 4.6), and the client address stays with it.
    /// Bindings with members of the other family are dropped (no direct
    /// path: their flows go through the AP, and each member follows when
    /// the AP names our new endpoint); the others get an empty sealed
    /// frame at once, on which their member roams.
    pub fn moved(&mut self, now: Instant, access_point: SocketAddr, local: SocketAddr) {
        if canonical(local) == canonical(self.config.local)
            && canonical(access_point) == canonical(self.config.access_point)
        {
            return;
        }
        let from = std::mem::replace(&mut self.config.local, local);
        self.config.access_point = access_point;
        self.counters.moves += 1;
        let other_family: Vec<MemberId> = self
            .bindings
            .iter()
            .filter(|(_, b)| !reaches(local, b.care_of))
            .map(|(m, _)| *m)
            .collect();
        for member in other_family {
            self.delete_binding(member);
        }
        let brr = MobilityMessage::new(MessageBody::BindingRefreshRequest);
        if self.send_sealed_to_ap(None, &brr) {
            self.counters.keepalives += 1;
        }
        let protection = self.config.protection;
        let bound: Vec<(MemberId, SocketAddr)> = self
            .bindings
            .iter()
            .filter(|(_, b)| b.expires > now)
            .map(|(m, b)| (*m, b.care_of))
            .collect();
        for (member, to) in bound {
            let Some(ms) = self.member_sessions.get_mut(&member) else {
                continue;
            };
            let mut frame = vec![0u8; HEADER_LEN + TAG_LEN];
            if seal_data(&mut ms.sessions, protection, Some(member), &mut frame).is_ok() {
                ms.last_out = now;
                self.transmits.push_back(Transmit { to, payload: frame });
            }
        }
        self.events.push_back(ShimEvent::Moved {
            from,
            local,
            access_point,
        });
    }

    /// Data from `member` came through the AP: if we are bound to it and
    /// its last BU is older than [`BINDING_SETTLE`], the member has no
    /// binding with us any more (it moved to a family we are not on, or
    /// lost it): drop ours, so that our packets to it go through the AP
    /// too, where it hears them. Its flows stay pinned to it.
    pub(super) fn member_answers_via_ap(&mut self, now: Instant, member: MemberId) {
        let settled = self
            .valid_binding(member, now)
            .is_some_and(|b| now >= b.updated + BINDING_SETTLE);
        if settled {
            self.delete_binding(member);
            self.counters.fallbacks += 1;
        }
    }
}
