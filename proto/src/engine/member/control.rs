//! Received frames: sealed ones open in the session their index names
//! (an AP's, or a shim's), unsealed ones may only be the handshakes of
//! docs/PROTOCOL.md section 1.4 (registration BA, or the zero-nonce hint,
//! from an AP; CoT and RO BA from a shim). Control messages are dispatched
//! from here.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Instant;

use super::Member;
use super::ack::RegistrationAck;
use crate::engine::sealed::open_drop_reason;
use crate::engine::{
    DataAction, DropReason, canonical, parse_header, to_units, verify_registration,
};
use crate::wire::mh::MessageBody;
use crate::wire::{FrameKind, MobilityMessage};

/// Where the Mobility Header of an unsealed control frame starts.
pub(super) const UNSEALED_MH: usize = crate::wire::FRAME_HEADER_LEN;

/// Who a sealed frame is from, by the receive index it names.
#[derive(Debug, Clone, Copy)]
enum Peer {
    /// The AP of that index.
    Ap(usize),
    Shim(Ipv6Addr),
}

impl Member {
    /// A datagram from `from`.
    pub(super) fn receive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        frame: &mut [u8],
    ) -> DataAction {
        let header = match parse_header(frame, &mut self.counters.drops) {
            Ok(h) => h,
            Err(action) => return action,
        };
        if header.member.is_some_and(|m| m != self.config.id) {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        }
        let from = canonical(from);
        let index = header.session;
        if index == 0 {
            return match header.kind {
                FrameKind::Control => match frame.get(UNSEALED_MH..) {
                    Some(mh) => self.unsealed_control(now, from, mh),
                    None => self.counters.drops.drop(DropReason::Malformed),
                },
                FrameKind::Data => self.counters.drops.drop(DropReason::Unauthenticated),
            };
        }
        let peer = if let Some(ap) = self.ap_with_index(index) {
            Peer::Ap(ap)
        } else if let Some(client) = self.shim_indices.get(&index) {
            Peer::Shim(*client)
        } else {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        let protection = self.config.protection;
        let sessions = match peer {
            Peer::Ap(ap) => self.aps[ap].sessions.as_mut(),
            Peer::Shim(client) => self
                .correspondents
                .get_mut(&client)
                .and_then(|c| c.sessions.as_mut()),
        };
        let Some(sessions) = sessions else {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        let newest = match sessions.open_newest(now, index, protection, frame) {
            Ok(newest) => newest,
            Err(e) => return self.counters.drops.drop(open_drop_reason(e)),
        };
        if let Peer::Shim(client) = peer
            && newest
        {
            self.shim_roam(client, from);
        }
        // Opened: the frame is at least header + tag long.
        let body = crate::engine::sealed::payload(frame);
        match (peer, header.kind) {
            (Peer::Ap(ap), kind) => {
                self.aps[ap].heard = Some(now);
                match kind {
                    FrameKind::Control => self.ap_sealed_control(now, ap, body),
                    FrameKind::Data => self.data_from_ap(now, ap, body),
                }
            }
            (Peer::Shim(client), FrameKind::Control) => self.shim_sealed_control(now, client, body),
            (Peer::Shim(client), FrameKind::Data) => self.data_from_shim(now, client, body),
        }
    }

    /// An unsealed control message: only the handshakes may come so.
    fn unsealed_control(&mut self, now: Instant, from: SocketAddr, mh: &[u8]) -> DataAction {
        let msg = match MobilityMessage::parse(mh) {
            Ok(m) => m,
            Err(_) => return self.counters.drops.drop(DropReason::Malformed),
        };
        if msg.body == MessageBody::Punch {
            // A shim opening its NAT towards us: no answer. From another
            // port of a correspondent's shim address (a NAT that maps per
            // destination), it is where that shim's NAT lets us in: the
            // care-of test goes there too (docs/PROTOCOL.md 5.3).
            self.counters.punches += 1;
            self.note_punch(from);
            return DataAction::Consumed;
        }
        if let Some(ap) = self.ap_at(from) {
            return self.ap_unsealed_control(now, ap, mh, &msg);
        }
        self.shim_control(now, from, mh, &msg)
    }

    /// Records a Punch from `from` for the correspondent whose shim has
    /// that address on another port and no binding yet; at most one per
    /// correspondent (the latest), so spoofed punches cost a CoTI to the
    /// shim's own address at the member's retransmission pace, no more.
    fn note_punch(&mut self, from: SocketAddr) {
        if let Some(c) = self
            .correspondents
            .values_mut()
            .find(|c| c.shim.ip() == from.ip() && c.shim != from && c.binding.is_none())
        {
            c.punched = Some(from);
        }
    }

    /// An unsealed control message from a shim: the care-of test and BAs.
    fn shim_control(
        &mut self,
        now: Instant,
        from: SocketAddr,
        mh: &[u8],
        msg: &MobilityMessage,
    ) -> DataAction {
        let Some(client) = self
            .correspondents
            .values()
            .find(|c| c.shim == from)
            .map(|c| c.client)
        else {
            // Only a CoT may come from a punched endpoint.
            let punched = self
                .correspondents
                .values()
                .find(|c| c.punched == Some(from))
                .map(|c| c.client);
            if let (
                Some(client),
                MessageBody::CareOfTest {
                    nonce_index,
                    cookie,
                    token,
                },
            ) = (punched, &msg.body)
            {
                return self.handle_test(
                    now,
                    client,
                    false,
                    *nonce_index,
                    *cookie,
                    *token,
                    None,
                    Some(from),
                );
            }
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        match msg.body {
            MessageBody::CareOfTest {
                nonce_index,
                cookie,
                token,
            } => self.handle_test(now, client, false, nonce_index, cookie, token, None, None),
            MessageBody::BindingAck {
                status,
                sequence,
                lifetime,
            } => self.handle_binding_ack(now, client, mh, msg, status, sequence, lifetime),
            // Binding errors are no longer sent between nodes; everything
            // else must be sealed.
            _ => self.counters.drops.drop(DropReason::Unauthenticated),
        }
    }

    /// A sealed control message from a bound shim.
    fn shim_sealed_control(&mut self, now: Instant, client: Ipv6Addr, mh: &[u8]) -> DataAction {
        let msg = match MobilityMessage::parse(mh) {
            Ok(m) => m,
            Err(_) => return self.counters.drops.drop(DropReason::Malformed),
        };
        match msg.body {
            MessageBody::BindingRefreshRequest => {
                self.start_rr(now, client);
                DataAction::Consumed
            }
            _ => self.counters.drops.drop(DropReason::UnexpectedMessage),
        }
    }

    /// The unsealed messages from `ap`: registration BAs (signed, or an
    /// unsigned 146) and the zero-nonce Shim Cookie (the AP lost our
    /// session). Anything else must come sealed.
    fn ap_unsealed_control(
        &mut self,
        now: Instant,
        ap: usize,
        mh: &[u8],
        msg: &MobilityMessage,
    ) -> DataAction {
        let (status, seq, lifetime) = match msg.body {
            MessageBody::BindingAck {
                status,
                sequence,
                lifetime,
            } => (status, sequence, lifetime),
            MessageBody::ShimCookie { nonce, .. } if nonce == [0; 16] => {
                return self.ap_hint(now, ap);
            }
            MessageBody::ShimCookie { .. } => {
                return self.counters.drops.drop(DropReason::UnexpectedMessage);
            }
            _ => return self.counters.drops.drop(DropReason::Unauthenticated),
        };
        // Every AP message names its member: one key may serve many members.
        if msg.binding_id().is_some_and(|(id, _)| id != self.config.id) {
            return self.counters.drops.drop(DropReason::UnexpectedMessage);
        }
        let ba = RegistrationAck {
            signed: verify_registration(mh, &self.config.key, self.config.home_address),
            msg,
            status,
            seq,
            lifetime,
        };
        let (action, accepted) = self.handle_registration_ack(now, ap, &ba);
        if accepted && let Some((_, draining, _)) = msg.member_state() {
            self.apply_operator_drain(now, ap, draining);
        }
        action
    }

    /// A sealed control message from `ap`: BRR (refreshes the
    /// registration with that AP only), Shim Notice, HoT relay. An
    /// Authentication option, if any, is ignored: the session authenticates
    /// the message.
    fn ap_sealed_control(&mut self, now: Instant, ap: usize, mh: &[u8]) -> DataAction {
        let msg = match MobilityMessage::parse(mh) {
            Ok(m) => m,
            Err(_) => return self.counters.drops.drop(DropReason::Malformed),
        };
        if msg.binding_id().is_some_and(|(id, _)| id != self.config.id) {
            return self.counters.drops.drop(DropReason::UnexpectedMessage);
        }
        match msg.body {
            MessageBody::BindingRefreshRequest => {
                if self.aps[ap].registered() {
                    self.send_registration(now, ap, to_units(self.config.lifetime));
                }
                DataAction::Consumed
            }
            MessageBody::ShimNotice { client, shim } => {
                // The HoA the shim serves (absent: our primary one).
                let home = msg.home_address().unwrap_or(self.config.home_address);
                if !self.config.homes().is_home(home) {
                    return self.counters.drops.drop(DropReason::UnknownHomeAddress);
                }
                self.handle_shim_notice(now, ap, client, shim, msg.shim_instance(), home);
                DataAction::Consumed
            }
            MessageBody::HomeTest {
                nonce_index,
                cookie,
                token,
            } => {
                let Some(client) = msg.correspondent() else {
                    return self.counters.drops.drop(DropReason::Malformed);
                };
                // The CoTI must show the shim's ticket: no ticket, no test.
                let Some(ticket) = msg.care_of_ticket() else {
                    return self.counters.drops.drop(DropReason::Malformed);
                };
                self.handle_test(
                    now,
                    client,
                    true,
                    nonce_index,
                    cookie,
                    token,
                    Some(ticket),
                    None,
                )
            }
            _ => self.counters.drops.drop(DropReason::UnexpectedMessage),
        }
    }
}
