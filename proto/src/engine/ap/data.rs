//! The data path: legacy clients' packets from the TUN and shims' packets
//! to their member (affinity table, Maglev on a miss), members' answers back
//! to the TUN or the shim, and the Shim Notices that start route
//! optimization.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::{AccessPoint, ApEvent, ApTimer, inner};
use crate::engine::{
    DataAction, DropReason, TunPacket, data_packet, frame_tun, is_local_chatter, reframe,
};
use crate::wire::inner::InnerInfo;
use crate::wire::mh::MessageBody;
use crate::wire::{MemberId, MobilityMessage, TunnelHeader};

/// A client that runs a shim, as the AP knows it.
#[derive(Debug, Clone)]
pub struct ShimClient {
    /// Its tunnel endpoint.
    pub endpoint: SocketAddr,
    /// Last packet from it.
    pub last_seen: Instant,
    /// Members it has been served by, and when each was last noticed.
    pub members: HashMap<MemberId, NoticeState>,
}

/// Notice bookkeeping for one (shim client, member) pair.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoticeState {
    /// Last Shim Notice sent.
    pub last_notice: Option<Instant>,
    /// The member has sent a HoTI for this client.
    pub rr_seen: bool,
}

impl AccessPoint {
    /// A legacy client's packet, forwarded by the kernel into the TUN.
    pub(super) fn data_from_tun(&mut self, now: Instant, mut pkt: TunPacket<'_>) -> DataAction {
        let packet = pkt.packet_mut();
        let Ok(info) = inner::inspect(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if is_local_chatter(info.flow.src, info.flow.dst) {
            return self.counters.drops.drop(DropReason::NotTunnelled);
        }
        if info.flow.dst != self.config.home_address {
            return self.counters.drops.drop(DropReason::UnknownHomeAddress);
        }
        let Some((id, to)) = self.route_to_member(now, &info, packet.len(), None) else {
            return self.counters.drops.drop(DropReason::NoMember);
        };
        self.clamp(packet, &info);
        self.counters.legacy_in += 1;
        frame_tun(&mut pkt, TunnelHeader::data(Some(id)));
        DataAction::Send { to }
    }

    /// Forward a packet of a new or known flow to its member.
    ///
    /// `pinned` is the member a shim says the flow belongs to (its tag):
    /// a flow that began directly at a member is unknown here, and when its
    /// binding lapses it must still reach that member, not a Maglev pick.
    fn route_to_member(
        &mut self,
        now: Instant,
        info: &InnerInfo,
        len: usize,
        pinned: Option<MemberId>,
    ) -> Option<(MemberId, SocketAddr)> {
        let Self {
            affinity,
            maglev,
            members,
            timers,
            fragments,
            ..
        } = self;
        let client = info.flow.src;
        // A later fragment has no ports: it goes where its first fragment
        // went, not where its portless flow key leads.
        let first_went = info
            .fragment
            .filter(|f| f.is_later())
            .and_then(|f| fragments.later(now, client, f));
        let id = match first_went {
            Some(id) => id,
            None => affinity.lookup_or_insert(
                now,
                &info.flow,
                info.tcp.map(|t| t.flags),
                len,
                || {
                    pinned
                        .filter(|p| members.get(p).is_some_and(|m| !m.is_down()))
                        .or_else(|| maglev.lookup_client(&client))
                },
            )?,
        };
        if let Some(f) = info.fragment.filter(|f| f.is_first()) {
            fragments.first(now, client, f, id);
        }
        let m = members.get_mut(&id)?;
        if m.is_down() {
            return None;
        }
        m.counters.packets_to += 1;
        m.counters.bytes_to += len as u64;
        if timers.get(ApTimer::AffinitySweep).is_none() {
            timers.set(ApTimer::AffinitySweep, now + Duration::from_secs(1));
        }
        Some((id, m.care_of))
    }

    fn clamp(&mut self, packet: &mut [u8], info: &InnerInfo) {
        if info.tcp.is_some_and(|t| t.flags.syn)
            && inner::clamp_tcp_mss(packet, self.config.inner_mtu.saturating_sub(60))
        {
            self.counters.mss_clamped += 1;
        }
    }

    /// A member's answer (reverse tunnelling): to the TUN for a legacy
    /// client, to the shim (tagged with the member) for a shim client.
    pub(super) fn data_from_member(
        &mut self,
        now: Instant,
        id: MemberId,
        header: TunnelHeader,
        frame: &mut [u8],
    ) -> DataAction {
        if header.member.is_some_and(|h| h != id) {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        let Some(packet) = data_packet(frame) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        let Ok(info) = inner::inspect(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if info.flow.src != self.config.home_address {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        let len = packet.len();
        match self.members.get_mut(&id) {
            Some(m) if !m.is_down() => {
                m.counters.packets_from += 1;
                m.counters.bytes_from += len as u64;
            }
            _ => return self.counters.drops.drop(DropReason::UnknownPeer),
        }
        let client = info.flow.dst;
        self.affinity
            .observe_reverse(now, &info.flow.reversed(), info.tcp.map(|t| t.flags), len);
        if let Some(shim) = self.shims.get(&client) {
            self.counters.shim_out += 1;
            let to = shim.endpoint;
            reframe(frame, TunnelHeader::data(Some(id)));
            DataAction::Send { to }
        } else {
            self.clamp(packet, &info);
            self.counters.legacy_out += 1;
            DataAction::ToTun
        }
    }

    /// A shim's packet: the inner source must be the outer source address.
    pub(super) fn data_from_shim(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: TunnelHeader,
        frame: &mut [u8],
    ) -> DataAction {
        let Some(packet) = data_packet(frame) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        let Ok(info) = inner::inspect(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        let client = info.flow.src;
        if SocketAddr::new(client.into(), from.port()) != from {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        if info.flow.dst != self.config.home_address {
            return self.counters.drops.drop(DropReason::UnknownHomeAddress);
        }
        self.shim_seen(now, client, from);
        let len = packet.len();
        let Some((id, to)) = self.route_to_member(now, &info, len, header.member) else {
            return self.counters.drops.drop(DropReason::NoMember);
        };
        self.maybe_notice(now, client, from, id);
        self.counters.shim_in += 1;
        reframe(frame, TunnelHeader::data(Some(id)));
        DataAction::Send { to }
    }

    /// Record a packet from `client`'s shim at `from`.
    fn shim_seen(&mut self, now: Instant, client: Ipv6Addr, from: SocketAddr) {
        match self.shims.get_mut(&client) {
            Some(s) => {
                if s.endpoint != from {
                    // The shim restarted or moved: its members must run
                    // return routability with the new endpoint.
                    s.endpoint = from;
                    for st in s.members.values_mut() {
                        *st = NoticeState::default();
                    }
                }
                s.last_seen = now;
            }
            None => {
                self.shims.insert(
                    client,
                    ShimClient {
                        endpoint: from,
                        last_seen: now,
                        members: HashMap::new(),
                    },
                );
                self.events.push_back(ApEvent::ShimClientSeen {
                    client,
                    endpoint: from,
                });
                self.timers
                    .set_earliest(ApTimer::ShimSweep, now + self.config.shim_idle);
            }
        }
    }

    /// Forget shim clients idle for `shim_idle`.
    pub(super) fn sweep_shims(&mut self, now: Instant) {
        let idle = self.config.shim_idle;
        self.shims.retain(|_, s| s.last_seen + idle > now);
        if let Some(oldest) = self.shims.values().map(|s| s.last_seen).min() {
            self.timers.set(ApTimer::ShimSweep, oldest + idle);
        }
    }

    /// Tell member `id` that `client` runs a shim at `endpoint`, unless told
    /// recently (RFC 6275 has no such message: deviation D5).
    fn maybe_notice(&mut self, now: Instant, client: Ipv6Addr, endpoint: SocketAddr, id: MemberId) {
        let interval = self.config.notice_interval;
        let Some(shim) = self.shims.get_mut(&client) else {
            return;
        };
        let st = shim.members.entry(id).or_default();
        let gap = if st.rr_seen { interval * 30 } else { interval };
        if st.last_notice.is_some_and(|t| now < t + gap) {
            return;
        }
        st.last_notice = Some(now);
        let Some(m) = self.members.get(&id) else {
            return;
        };
        let (to, spi) = (m.care_of, m.spi);
        let [bid, hoa] = self.member_id_options(id);
        let msg = MobilityMessage::new(MessageBody::ShimNotice {
            client,
            shim: endpoint,
        })
        .with(bid)
        .with(hoa);
        self.send_to_member(to, id, spi, msg);
        self.counters.notices += 1;
    }
}
