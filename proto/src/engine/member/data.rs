//! The data path: packets for the HoA in (opened from an AP session or a
//! bound shim's session; legacy flows tracked), answers out (sealed direct
//! to a bound shim, held during a move, sealed through the AP the flow came
//! from, or natively with direct server return).

use std::net::Ipv6Addr;
use std::time::Instant;

use super::{MOVE_HOLD_PACKETS, Member};
use crate::crypto::session::{HEADER_LEN, TAG_LEN};
use crate::engine::sealed::seal_data;
use crate::engine::{DataAction, DropReason, TunPacket};
use crate::wire::inner;

/// Where a sealed data frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    /// Through the AP of that index, in its session.
    Ap(usize),
    /// Direct to the client's shim, in the member - shim session.
    Shim(Ipv6Addr),
}

impl Member {
    /// An opened data frame from `ap`: for the HoA, to the TUN; its flow
    /// is tracked (and reported) with that AP.
    pub(super) fn data_from_ap(&mut self, now: Instant, ap: usize, packet: &[u8]) -> DataAction {
        let Ok((src, dst)) = inner::addresses(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if !self.config.homes().is_home(dst) {
            return self.counters.drops.drop(DropReason::UnknownHomeAddress);
        }
        self.counters.via_ap_in += 1;
        self.touch(now, src);
        // A packet whose upper layer does not parse still goes to the
        // kernel (as before flows were tracked); only its flow is unknown.
        if let Ok(info) = inner::inspect(packet) {
            self.flow_from_ap(now, ap, &info, packet.len());
        }
        DataAction::ToTun
    }

    /// An opened data frame from `client`'s shim: its inner source must be
    /// the client.
    pub(super) fn data_from_shim(
        &mut self,
        now: Instant,
        client: Ipv6Addr,
        packet: &[u8],
    ) -> DataAction {
        if packet.is_empty() {
            // A NAT keepalive: it opened in the session, that is all. Not
            // activity (an idle binding still lapses).
            self.counters.keepalives += 1;
            return DataAction::Consumed;
        }
        let Ok((src, dst)) = inner::addresses(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if src != client {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        let lifetime = self.config.binding_lifetime;
        let correspondent = self.correspondents.get_mut(&client);
        let home = correspondent
            .as_ref()
            .map_or(self.config.home_address, |c| c.home_address);
        if dst != home {
            return self.counters.drops.drop(DropReason::UnknownHomeAddress);
        }
        // What `touch` does, on the entry already in hand.
        let lapsing = correspondent.is_some_and(|c| {
            c.last_activity = now;
            c.lapsing(now, lifetime)
        });
        if lapsing {
            self.start_rr(now, client);
        }
        self.counters.direct_in += 1;
        DataAction::ToTun
    }

    /// Seal `frame` (header | packet | tag) for `via`; false if there is no
    /// session to seal it in.
    pub(super) fn seal_frame(&mut self, via: Via, frame: &mut [u8]) -> bool {
        let (protection, id) = (self.config.protection, Some(self.config.id));
        let sessions = match via {
            Via::Ap(ap) => self.aps.get_mut(ap).and_then(|a| a.sessions.as_mut()),
            Via::Shim(client) => self
                .correspondents
                .get_mut(&client)
                .and_then(|c| c.sessions.as_mut()),
        };
        sessions.is_some_and(|s| seal_data(s, protection, id, frame).is_ok())
    }

    /// A packet sealed for `via` as a whole datagram, or `None` without a
    /// session.
    pub(super) fn sealed_packet(&mut self, via: Via, packet: &[u8]) -> Option<Vec<u8>> {
        let mut frame = vec![0u8; HEADER_LEN + packet.len() + TAG_LEN];
        frame[HEADER_LEN..HEADER_LEN + packet.len()].copy_from_slice(packet);
        self.seal_frame(via, &mut frame).then_some(frame)
    }

    /// Where an answer from the local TUN goes: direct to a bound shim,
    /// held during a move (`None`, the packet is kept), natively (direct
    /// server return) or through an AP: the AP its flow's last packet came
    /// through, a shim client's AP, or the fallback of
    /// [`Member::answer_ap`].
    pub(super) fn route_out(&mut self, now: Instant, packet: &[u8]) -> Result<Route, DataAction> {
        let Ok((src, dst)) = inner::addresses(packet) else {
            return Err(self.counters.drops.drop(DropReason::Malformed));
        };
        if crate::engine::is_local_chatter(src, dst) {
            return Err(self.counters.drops.drop(DropReason::NotTunnelled));
        }
        if !self.config.homes().is_home(src) {
            return Err(self.counters.drops.drop(DropReason::SpoofedSource));
        }
        self.touch(now, dst);
        if let Some(c) = self.correspondents.get_mut(&dst) {
            if c.binding.is_some_and(|b| b.expires > now)
                && c.sessions.is_some()
                && src == c.home_address
            {
                return Ok(Route::Direct(dst, c.shim));
            }
            // Past the hold deadline, too, until the timer (due now) sends
            // everything held through the AP in order.
            if let Some(hold) = c.hold.as_mut()
                && hold.packets.len() < MOVE_HOLD_PACKETS
            {
                hold.packets.push_back(packet.to_vec());
                return Err(DataAction::Consumed);
            }
        }
        // Past the direct path: only an answer that may take an AP (or
        // leaves natively) looks its flow up, and keeps it alive.
        let flow_ap = self.flow_of_answer(now, packet);
        if self.config.direct_return && !self.correspondents.contains_key(&dst) {
            // Back to the kernel, which routes it natively (the shell's
            // source rule only catches locally generated packets).
            self.counters.direct_return += 1;
            return Err(DataAction::ToTun);
        }
        // A shim client's answers go through its shim's AP (which re-seals
        // them for the shim); a legacy client's through its flow's.
        let preferred = self.correspondents.get(&dst).map(|c| c.ap).or(flow_ap);
        match self.answer_ap(now, preferred) {
            Some(ap) => Ok(Route::Ap(ap)),
            // Not registered yet: nothing to seal it in.
            None => Err(self.counters.drops.drop(DropReason::NoSession)),
        }
    }

    /// An answer from the local TUN, sealed in place in `pkt`'s frame for
    /// a bound shim or the AP.
    pub(super) fn data_out(&mut self, now: Instant, mut pkt: TunPacket<'_>) -> DataAction {
        let (via, to) = match self.route_out(now, pkt.packet()) {
            Ok(Route::Direct(client, shim)) => (Via::Shim(client), shim),
            Ok(Route::Ap(ap)) => (Via::Ap(ap), self.aps[ap].endpoint),
            Err(action) => return action,
        };
        if !self.seal_frame(via, pkt.frame_mut()) {
            return self.counters.drops.drop(DropReason::NoSession);
        }
        match via {
            Via::Ap(_) => self.counters.via_ap_out += 1,
            Via::Shim(client) => {
                self.counters.direct_out += 1;
                if let Some(c) = self.correspondents.get_mut(&client) {
                    c.last_direct_out = now;
                }
            }
        }
        DataAction::Send { to }
    }
}

/// Where an answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// Through the AP of that index.
    Ap(usize),
    /// Direct to the client's (first) shim endpoint (second).
    Direct(Ipv6Addr, std::net::SocketAddr),
}
