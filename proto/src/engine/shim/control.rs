//! Every received frame: unsealed handshakes (docs/PROTOCOL.md section 1.4)
//! and frames sealed in the AP session or a member's binding session.

use std::net::SocketAddr;
use std::time::Instant;

use super::Shim;
use crate::crypto::session::{HEADER_LEN, TAG_LEN, session_index_of};
use crate::engine::sealed::open_drop_reason;
use crate::engine::{DataAction, DropReason, ReceivedBu, canonical, parse_header, reaches};
use crate::wire::mh::MessageBody;
use crate::wire::{FrameKind, MobilityMessage, TunnelHeader, WireError};

/// An unsealed control frame (Session 0, no tag): the v2 16-byte header
/// and the message.
pub(super) use crate::engine::control_frame as unsealed_frame;

/// Unsealed messages a shim accepts (each from one side only); any other
/// known message must come sealed.
fn may_be_unsealed(body: &MessageBody) -> bool {
    matches!(
        body,
        MessageBody::ShimHello { .. }
            | MessageBody::ShimCookie { .. }
            | MessageBody::ShimWelcome { .. }
            | MessageBody::CareOfTestInit { .. }
            | MessageBody::CareOfTest { .. }
            | MessageBody::BindingUpdate { .. }
            | MessageBody::BindingAck { .. }
    )
}

impl Shim {
    /// A UDP datagram from `from`.
    pub(super) fn frame_in(
        &mut self,
        now: Instant,
        from: SocketAddr,
        frame: &mut [u8],
    ) -> DataAction {
        let header = match parse_header(frame, &mut self.counters.drops) {
            Ok(h) => h,
            Err(action) => return action,
        };
        if frame.len() < HEADER_LEN {
            return self.counters.drops.drop(DropReason::Malformed);
        }
        let from = canonical(from);
        match session_index_of(frame).unwrap_or(0) {
            0 => self.unsealed_in(now, from, header, &frame[HEADER_LEN..]),
            index => self.sealed_in(now, from, header, index, frame),
        }
    }

    /// Session 0: only the handshakes of section 3 (no tag).
    fn unsealed_in(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: TunnelHeader,
        mh: &[u8],
    ) -> DataAction {
        if header.kind == FrameKind::Data {
            // Never delivered: anyone can send it (the v1 injection).
            return self.counters.drops.drop(DropReason::Unauthenticated);
        }
        let msg = match MobilityMessage::parse(mh) {
            Ok(m) => m,
            // No answer (no more BE 2): a scan learns nothing.
            Err(WireError::UnknownMhType(_)) => {
                return self.counters.drops.drop(DropReason::UnexpectedMessage);
            }
            Err(_) => return self.counters.drops.drop(DropReason::Malformed),
        };
        if !may_be_unsealed(&msg.body) {
            return self.counters.drops.drop(DropReason::Unauthenticated);
        }
        let from_ap = from == canonical(self.config.access_point);
        // A member of the other family than ours (a test or BU that was on
        // its way to our old socket when we moved, 6.5.2): no direct path.
        let our_family = reaches(self.config.local, from);
        match msg.body {
            MessageBody::ShimCookie { nonce, cookie } if from_ap => {
                self.shim_cookie(now, nonce, cookie)
            }
            MessageBody::ShimWelcome {
                nonce,
                index,
                ap_nonce,
                public,
            } if from_ap => self.shim_welcome(
                now,
                super::aplink::Welcome {
                    nonce,
                    ap_index: index,
                    ap_nonce,
                    ap_public: public,
                    observed: msg.endpoint(),
                    client: msg.client_address(),
                },
            ),
            MessageBody::CareOfTestInit { cookie } if !from_ap && our_family => {
                self.answer_care_of_test(from, &msg, cookie)
            }
            MessageBody::BindingUpdate {
                sequence,
                ack,
                home: false,
                lifetime,
            } if !from_ap && our_family => self.handle_binding_update(
                now,
                &ReceivedBu {
                    from,
                    mh,
                    msg: &msg,
                    seq: sequence,
                    ack,
                    lifetime,
                },
            ),
            _ => self.counters.drops.drop(DropReason::UnexpectedMessage),
        }
    }

    /// A sealed frame: opened by the session its index names, whatever
    /// its source endpoint (the seal authenticates it).
    fn sealed_in(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: TunnelHeader,
        index: u32,
        frame: &mut [u8],
    ) -> DataAction {
        if frame.len() < HEADER_LEN + TAG_LEN {
            return self.counters.drops.drop(DropReason::Malformed);
        }
        if self.ap.owns(index) {
            if let Err(action) = self.open_from_ap(now, index, frame) {
                return action;
            }
            let payload = crate::engine::sealed::payload(frame);
            return match header.kind {
                FrameKind::Data => self.data_from_ap(now, header, payload),
                FrameKind::Control => self.sealed_control_from_ap(payload),
            };
        }
        let Some(member) = self.by_index.get(&index).copied() else {
            // No binding error any more: just counted.
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        let protection = self.config.protection;
        let Some(ms) = self.member_sessions.get_mut(&member) else {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        let newest = match ms.sessions.open_newest(now, index, protection, frame) {
            Ok(newest) => newest,
            Err(e) => return self.counters.drops.drop(open_drop_reason(e)),
        };
        if newest {
            self.binding_roam(member, from);
        }
        let payload = crate::engine::sealed::payload(frame);
        match header.kind {
            FrameKind::Data => self.data_from_member(now, member, header, payload),
            // Nothing goes sealed from a member to a shim but data.
            FrameKind::Control => self.counters.drops.drop(DropReason::UnexpectedMessage),
        }
    }

    /// A control message sealed by the AP: a relayed HoTI or a revocation.
    fn sealed_control_from_ap(&mut self, mh: &[u8]) -> DataAction {
        let msg = match MobilityMessage::parse(mh) {
            Ok(m) => m,
            Err(WireError::UnknownMhType(_)) => {
                return self.counters.drops.drop(DropReason::UnexpectedMessage);
            }
            Err(_) => return self.counters.drops.drop(DropReason::Malformed),
        };
        match msg.body {
            MessageBody::HomeTestInit { cookie } => self.answer_home_test(&msg, cookie),
            // Any trigger, 126 (member restarted) included.
            MessageBody::BindingRevocation { .. } => self.revoke(&msg),
            _ => self.counters.drops.drop(DropReason::UnexpectedMessage),
        }
    }
}
