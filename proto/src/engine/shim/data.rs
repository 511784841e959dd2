//! The data path: the HoA's packets in (through the AP, or direct from a
//! bound member) and the applications' packets out.

use std::net::SocketAddr;
use std::time::Instant;

use super::{FlowPath, Shim, ShimEvent};
use crate::engine::{DataAction, DropReason, TunPacket, canonical, data_packet, frame_tun};
use crate::wire::TunnelHeader;
use crate::wire::inner;
use crate::wire::mh::be_status;

impl Shim {
    /// A data frame from `from` (canonical): the AP's or a bound member's.
    pub(super) fn data_in(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: TunnelHeader,
        frame: &mut [u8],
    ) -> DataAction {
        let Some(packet) = data_packet(frame) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        let packet = &*packet;
        let Ok((src, _)) = inner::addresses(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if src != self.config.home_address {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        if from == canonical(self.config.access_point) {
            self.counters.via_ap_in += 1;
            self.track_incoming(now, packet, header.member);
            return DataAction::ToTun;
        }
        match self.by_care_of.get(&from).copied() {
            Some(member)
                if header.member == Some(member) && self.valid_binding(member, now).is_some() =>
            {
                self.counters.direct_in += 1;
                self.track_incoming(now, packet, Some(member));
                DataAction::ToTun
            }
            _ => {
                self.send_binding_error(now, from, be_status::UNKNOWN_BINDING);
                self.counters.drops.drop(DropReason::UnknownPeer)
            }
        }
    }

    /// A local application's packet to the HoA: direct to the bound member
    /// its flow is pinned to, else through the AP (tagged with the member).
    pub(super) fn data_out(&mut self, now: Instant, mut pkt: TunPacket<'_>) -> DataAction {
        let packet = pkt.packet();
        let Ok(info) = inner::inspect(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if crate::engine::is_local_chatter(info.flow.src, info.flow.dst) {
            return self.counters.drops.drop(DropReason::NotTunnelled);
        }
        if info.flow.dst != self.config.home_address {
            return self.counters.drops.drop(DropReason::UnknownHomeAddress);
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
        if let Some(m) = member
            && let Some(b) = self.valid_binding(m, now)
        {
            let to = b.care_of;
            if let Some(f) = self.flows.get_mut(&info.flow)
                && f.path != FlowPath::Direct
            {
                f.path = FlowPath::Direct;
                self.events.push_back(ShimEvent::FlowDirect {
                    flow: info.flow,
                    member: m,
                });
            }
            self.counters.direct_out += 1;
            frame_tun(&mut pkt, TunnelHeader::data(Some(m)));
            return DataAction::Send { to };
        }
        if let Some(f) = self.flows.get_mut(&info.flow) {
            f.path = FlowPath::ViaAccessPoint;
        }
        self.counters.via_ap_out += 1;
        frame_tun(&mut pkt, TunnelHeader::data(member));
        DataAction::Send {
            to: self.config.access_point,
        }
    }
}
