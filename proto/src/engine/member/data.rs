//! The data path: packets for the HoA in (through the AP or direct from a
//! bound shim), answers out (direct, held during a move, through the AP,
//! or natively with direct server return).

use std::net::SocketAddr;
use std::time::Instant;

use super::{MOVE_HOLD_PACKETS, Member};
use crate::engine::{
    DataAction, DropReason, Transmit, TunPacket, binding_id, canonical, control_frame, data_packet,
    frame_tun,
};
use crate::wire::inner;
use crate::wire::mh::MessageBody;
use crate::wire::{MobilityMessage, TunnelHeader};

impl Member {
    pub(super) fn data_in(
        &mut self,
        now: Instant,
        from: SocketAddr,
        frame: &mut [u8],
    ) -> DataAction {
        let Some(packet) = data_packet(frame) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        let Ok((src, dst)) = inner::addresses(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if dst != self.config.home_address {
            return self.counters.drops.drop(DropReason::UnknownHomeAddress);
        }
        if from == canonical(self.config.access_point) {
            self.counters.via_ap_in += 1;
            if let Some(c) = self.correspondents.get_mut(&src) {
                c.last_activity = now;
            }
            return DataAction::ToTun;
        }
        match self.correspondents.get_mut(&src) {
            Some(c) if c.shim == from => {
                c.last_activity = now;
                self.counters.direct_in += 1;
                DataAction::ToTun
            }
            Some(_) => self.counters.drops.drop(DropReason::SpoofedSource),
            None => {
                // A shim still bound to us from before a restart: tell it
                // (RFC 6275 sec. 6.1.9 status 1) so that it falls back to
                // the AP, which notices us and we bind again.
                self.send_binding_error(now, from);
                self.counters.drops.drop(DropReason::UnknownPeer)
            }
        }
    }

    pub(super) fn send_binding_error(&mut self, now: Instant, to: SocketAddr) {
        if !self.binding_errors_sent.allow(now, to) {
            return;
        }
        let be = MobilityMessage::new(MessageBody::BindingError {
            status: crate::wire::mh::be_status::UNKNOWN_BINDING,
            home_address: self.config.home_address,
        })
        .with(binding_id(self.config.id));
        self.transmits.push_back(Transmit {
            to,
            payload: control_frame(Some(self.config.id), &be),
        });
    }

    /// An answer from the local TUN: direct to a bound shim, held during a
    /// move, natively (direct server return) or through the AP.
    pub(super) fn data_out(&mut self, now: Instant, mut pkt: TunPacket<'_>) -> DataAction {
        let packet = &*pkt.packet;
        let Ok((src, dst)) = inner::addresses(packet) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if crate::engine::is_local_chatter(src, dst) {
            return self.counters.drops.drop(DropReason::NotTunnelled);
        }
        if src != self.config.home_address {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        let header = TunnelHeader::data(Some(self.config.id));
        if let Some(c) = self.correspondents.get_mut(&dst) {
            c.last_activity = now;
            if c.binding.is_some_and(|b| b.expires > now) {
                self.counters.direct_out += 1;
                let to = c.shim;
                frame_tun(&mut pkt, header);
                return DataAction::Send { to };
            }
            // Past the hold deadline, too, until the timer (due now) sends
            // everything held through the AP in order.
            if let Some(hold) = c.hold.as_mut()
                && hold.packets.len() < MOVE_HOLD_PACKETS
            {
                hold.packets.push_back(packet.to_vec());
                return DataAction::Consumed;
            }
        }
        if self.config.direct_return && !self.correspondents.contains_key(&dst) {
            // Back to the kernel, which routes it natively (the shell's
            // source rule only catches locally generated packets).
            self.counters.direct_return += 1;
            return DataAction::ToTun;
        }
        self.counters.via_ap_out += 1;
        frame_tun(&mut pkt, header);
        DataAction::Send {
            to: self.config.access_point,
        }
    }
}
