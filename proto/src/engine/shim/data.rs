//! The data path: the HoA's packets in (sealed by the AP, or by a bound
//! member) and the applications' packets out (sealed for the member they
//! go to directly, else for the AP).

use std::time::Instant;

use super::{FlowPath, Shim, ShimEvent};
use crate::crypto::session::{HEADER_LEN, TAG_LEN};
use crate::engine::sealed::{open_drop_reason, seal_data};
use crate::engine::{DataAction, DropReason};
use crate::wire::inner;
use crate::wire::{MemberId, TunnelHeader};

impl Shim {
    /// An opened data frame from the AP (tagged with the serving member).
    pub(super) fn data_from_ap(
        &mut self,
        now: Instant,
        header: TunnelHeader,
        packet: &[u8],
    ) -> DataAction {
        let Ok((src, _)) = inner::addresses(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if src != self.config.home_address {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        self.counters.via_ap_in += 1;
        if let Some(m) = header.member {
            self.member_answers_via_ap(now, m);
        }
        self.track_incoming(now, packet, header.member);
        DataAction::ToTun
    }

    /// An opened data frame from `member`'s binding session: header `M`
    /// must name that member, the inner source be the HoA, and the binding
    /// be unexpired.
    pub(super) fn data_from_member(
        &mut self,
        now: Instant,
        member: MemberId,
        header: TunnelHeader,
        packet: &[u8],
    ) -> DataAction {
        if header.member != Some(member) || self.valid_binding(member, now).is_none() {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        }
        if packet.is_empty() {
            // A NAT keepalive: it opened in the binding's session; nothing
            // more to do.
            self.counters.keepalives_in += 1;
            return DataAction::Consumed;
        }
        let Ok((src, _)) = inner::addresses(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if src != self.config.home_address {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        self.counters.direct_in += 1;
        self.track_incoming(now, packet, Some(member));
        DataAction::ToTun
    }

    /// A local application's packet to the HoA, in `frame` = header room |
    /// packet | tag room: direct to the bound member its flow is pinned
    /// to, else through the AP (tagged with the member), sealed for the
    /// one it goes to. `Ok(to)`: `frame` is sealed, send it to `to`.
    pub(super) fn data_out(
        &mut self,
        now: Instant,
        frame: &mut [u8],
    ) -> Result<std::net::SocketAddr, DataAction> {
        let len = frame.len();
        if len < HEADER_LEN + TAG_LEN {
            return Err(self.counters.drops.drop(DropReason::Malformed));
        }
        let packet = crate::engine::sealed::payload(frame);
        let Ok(info) = inner::inspect(packet) else {
            return Err(self.counters.drops.drop(DropReason::Malformed));
        };
        if crate::engine::is_local_chatter(info.flow.src, info.flow.dst) {
            return Err(self.counters.drops.drop(DropReason::NotTunnelled));
        }
        if info.flow.dst != self.config.home_address {
            return Err(self.counters.drops.drop(DropReason::UnknownHomeAddress));
        }
        if self.ap.sessions.is_none() {
            // Nothing leaves unsealed; the application's stack retries.
            return Err(self.counters.drops.drop(DropReason::NoSession));
        }
        // A later fragment has no ports: it goes the way its first fragment
        // went, not where its portless flow key is pinned.
        let first_went = info
            .fragment
            .filter(|f| f.is_later())
            .and_then(|f| self.fragments.later(now, info.flow.src, f));
        let member = match first_went {
            Some(m) => m,
            None => match self.track_outgoing(now, &info, packet.len()) {
                Ok(m) => m,
                Err(reason) => {
                    self.counters.drops.drop(reason);
                    None
                }
            },
        };
        if let Some(f) = info.fragment.filter(|f| f.is_first()) {
            self.fragments.first(now, info.flow.src, f, member);
        }
        let protection = self.config.protection;
        if let Some(m) = member
            && let Some(to) = self.valid_binding(m, now).map(|b| b.care_of)
            && self.member_sessions.contains_key(&m)
        {
            if let Some(f) = self.flows.get_mut(&info.flow)
                && f.path != FlowPath::Direct
            {
                f.path = FlowPath::Direct;
                self.events.push_back(ShimEvent::FlowDirect {
                    flow: info.flow,
                    member: m,
                });
            }
            let sealed = match self.member_sessions.get_mut(&m) {
                Some(ms) => {
                    ms.last_out = now;
                    seal_data(&mut ms.sessions, protection, Some(m), frame)
                }
                None => return Err(self.counters.drops.drop(DropReason::UnknownPeer)),
            };
            sealed.map_err(|e| self.counters.drops.drop(open_drop_reason(e)))?;
            self.counters.direct_out += 1;
            return Ok(to);
        }
        if let Some(f) = self.flows.get_mut(&info.flow) {
            f.path = FlowPath::ViaAccessPoint;
        }
        let sealed = match self.ap.sessions.as_mut() {
            Some(s) => seal_data(s, protection, member, frame),
            None => return Err(self.counters.drops.drop(DropReason::NoSession)),
        };
        sealed.map_err(|e| self.counters.drops.drop(open_drop_reason(e)))?;
        self.counters.via_ap_out += 1;
        Ok(self.config.access_point)
    }
}
