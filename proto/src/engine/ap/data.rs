//! The data path: legacy clients' packets from the TUN and shims' packets
//! to their member (affinity table, Maglev on a miss), members' answers back
//! to the TUN or the shim, and the Shim Notices that start route
//! optimization.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::handshake::ShimSession;
use super::sessions::send_to;
use super::{AccessPoint, ApTimer, inner};
use crate::crypto::session::{HEADER_LEN, TAG_LEN};
use crate::engine::sealed::{payload_mut, seal_data};
use crate::engine::{DataAction, DropReason, is_local_chatter};
use crate::wire::inner::InnerInfo;
use crate::wire::mh::MessageBody;
use crate::wire::{MemberId, MobilityMessage, MobilityOption, TunnelHeader};

/// A client that runs a shim, as the AP knows it: made by a completed
/// handshake (docs/PROTOCOL.md 4.6), never by a data frame.
#[derive(Debug)]
pub struct ShimClient {
    /// Its tunnel endpoint (the source of its handshake).
    pub endpoint: SocketAddr,
    /// Last sealed frame from it.
    pub last_seen: Instant,
    /// Members it has been served by, and when each was last noticed.
    pub members: HashMap<MemberId, NoticeState>,
    /// The shim process's instance (from its Hello).
    pub instance: [u8; 8],
    /// The home address it serves (its Hello's Home Address option, else
    /// the AP's primary).
    pub home: Ipv6Addr,
    /// The prefix (/64, IPv4 /32) of the source of its first handshake,
    /// which `max_shims_per_prefix` counts it against.
    pub prefix: Ipv6Addr,
    /// Its session.
    pub(super) session: ShimSession,
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
    /// A legacy client's packet, forwarded by the kernel into the TUN, in
    /// a frame buffer `header | packet | tag`: sealed in place in the
    /// member's session.
    pub(super) fn data_from_tun(&mut self, now: Instant, frame: &mut [u8]) -> DataAction {
        if frame.len() < HEADER_LEN + TAG_LEN {
            return self.counters.drops.drop(DropReason::Malformed);
        }
        let packet = payload_mut(frame);
        let Ok(info) = inner::inspect(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if is_local_chatter(info.flow.src, info.flow.dst) {
            return self.counters.drops.drop(DropReason::NotTunnelled);
        }
        if !self.config.homes().is_home(info.flow.dst) {
            return self.counters.drops.drop(DropReason::UnknownHomeAddress);
        }
        let len = packet.len();
        let (id, to) = match self.route_to_member(now, &info, len, None) {
            Ok(pick) => pick,
            Err(reason) => return self.counters.drops.drop(reason),
        };
        self.clamp(payload_mut(frame), &info);
        if !self.seal_for_member(id, frame) {
            return self.counters.drops.drop(DropReason::NoMember);
        }
        self.counters.legacy_in += 1;
        send_to(to)
    }

    /// Seal a data frame in place in member `id`'s session.
    fn seal_for_member(&mut self, id: MemberId, frame: &mut [u8]) -> bool {
        let protection = self.config.protection;
        self.member_sessions
            .get_mut(&id)
            .is_some_and(|ms| seal_data(&mut ms.sessions, protection, Some(id), frame).is_ok())
    }

    /// Forward a packet of a new or known flow to its member.
    ///
    /// `pinned` is the member a shim says the flow belongs to (its tag):
    /// a flow that began directly at a member is unknown here, and when its
    /// binding lapses it must still reach that member, not a Maglev pick.
    /// While the AP settles, a segment of an unknown flow may be held back
    /// instead ([`AccessPoint::settling`]).
    fn route_to_member(
        &mut self,
        now: Instant,
        info: &InnerInfo,
        len: usize,
        pinned: Option<MemberId>,
    ) -> Result<(MemberId, SocketAddr), DropReason> {
        let hold_back = self.hold_back(now, info, pinned.is_some());
        let mut held = false;
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
            Some(id) => Some(id),
            None => {
                affinity.lookup_or_insert(now, &info.flow, info.tcp.map(|t| t.flags), len, || {
                    if hold_back {
                        held = true;
                        return None;
                    }
                    pinned
                        .filter(|p| members.get(p).is_some_and(|m| !m.is_down()))
                        .or_else(|| maglev.lookup_client(&client))
                })
            }
        };
        let Some(id) = id else {
            return Err(if held {
                DropReason::Settling
            } else {
                DropReason::NoMember
            });
        };
        if let Some(f) = info.fragment.filter(|f| f.is_first()) {
            fragments.first(now, client, f, id);
        }
        let m = members
            .get_mut(&id)
            .filter(|m| !m.is_down())
            .ok_or(DropReason::NoMember)?;
        m.counters.packets_to += 1;
        m.counters.bytes_to += len as u64;
        if timers.get(ApTimer::AffinitySweep).is_none() {
            timers.set(ApTimer::AffinitySweep, now + Duration::from_secs(1));
        }
        Ok((id, m.care_of))
    }

    fn clamp(&mut self, packet: &mut [u8], info: &InnerInfo) {
        if info.tcp.is_some_and(|t| t.flags.syn)
            && inner::clamp_tcp_mss(packet, inner::mss_for_mtu(packet, self.config.inner_mtu))
        {
            self.counters.mss_clamped += 1;
        }
    }

    /// A member's answer (reverse tunnelling), opened: to the TUN for a
    /// legacy client, re-sealed in the shim's session (tagged with the
    /// member) for a shim client.
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
        let packet = payload_mut(frame);
        if packet.is_empty() {
            // A NAT keepalive: it opened in the member's session.
            self.counters.keepalives += 1;
            return DataAction::Consumed;
        }
        let Ok(info) = inner::inspect(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if !self.config.homes().is_home(info.flow.src) {
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
        let protection = self.config.protection;
        if let Some(shim) = self.shims.get_mut(&client) {
            let to = shim.endpoint;
            if seal_data(&mut shim.session.sessions, protection, Some(id), frame).is_err() {
                return self.counters.drops.drop(DropReason::NoSession);
            }
            self.counters.shim_out += 1;
            send_to(to)
        } else {
            self.clamp(payload_mut(frame), &info);
            self.counters.legacy_out += 1;
            DataAction::ToTun
        }
    }

    /// A shim's packet, opened in its session: the inner source must be
    /// the session's client address; re-sealed to the member in place.
    pub(super) fn data_from_shim(
        &mut self,
        now: Instant,
        client: Ipv6Addr,
        frame: &mut [u8],
    ) -> DataAction {
        let pinned = crate::wire::TunnelHeader::parse(frame)
            .ok()
            .and_then(|h| h.member);
        let packet = payload_mut(frame);
        if packet.is_empty() {
            // A NAT keepalive: it opened in the shim's session.
            self.shim_refresh(now, client);
            self.counters.keepalives += 1;
            return DataAction::Consumed;
        }
        let Ok(info) = inner::inspect(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if info.flow.src != client {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        if !self.config.homes().is_home(info.flow.dst) {
            return self.counters.drops.drop(DropReason::UnknownHomeAddress);
        }
        self.shim_refresh(now, client);
        let len = packet.len();
        let (id, to) = match self.route_to_member(now, &info, len, pinned) {
            Ok(pick) => pick,
            Err(reason) => return self.counters.drops.drop(reason),
        };
        if !self.seal_for_member(id, frame) {
            return self.counters.drops.drop(DropReason::NoMember);
        }
        self.maybe_notice(now, client, id);
        self.counters.shim_in += 1;
        send_to(to)
    }

    /// Forget shim clients idle for `shim_idle`.
    pub(super) fn sweep_shims(&mut self, now: Instant) {
        let idle = self.config.shim_idle;
        let gone: Vec<Ipv6Addr> = self
            .shims
            .iter()
            .filter(|(_, s)| s.last_seen + idle <= now)
            .map(|(c, _)| *c)
            .collect();
        for c in gone {
            self.remove_shim(c);
        }
        if let Some(oldest) = self.shims.values().map(|s| s.last_seen).min() {
            self.timers.set(ApTimer::ShimSweep, oldest + idle);
        }
    }

    /// Tell member `id` (sealed) that `client` runs a shim, with the shim's
    /// endpoint and instance, unless told recently (RFC 6275 has no such
    /// message: deviation D5).
    fn maybe_notice(&mut self, now: Instant, client: Ipv6Addr, id: MemberId) {
        let interval = self.config.notice_interval;
        let Some(shim) = self.shims.get_mut(&client) else {
            return;
        };
        let (endpoint, instance, home) = (shim.endpoint, shim.instance, shim.home);
        let st = shim.members.entry(id).or_default();
        let gap = if st.rr_seen { interval * 30 } else { interval };
        if st.last_notice.is_some_and(|t| now < t + gap) {
            return;
        }
        st.last_notice = Some(now);
        let [bid, _] = self.member_id_options(id);
        let msg = MobilityMessage::new(MessageBody::ShimNotice {
            client,
            shim: endpoint,
        })
        .with(bid)
        .with(MobilityOption::HomeAddress(home))
        .with(MobilityOption::ShimInstance(instance));
        if self.send_sealed_to_member(id, &msg) {
            self.counters.notices += 1;
        }
    }
}
