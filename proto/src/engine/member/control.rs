//! Control messages: from the AP (signed) or from shims.

use std::net::SocketAddr;
use std::time::Instant;

use super::{Member, MemberEvent, RegistrationState};
use crate::engine::{DataAction, DropReason, canonical, to_units, verify_registration};
use crate::wire::MobilityMessage;
use crate::wire::mh::MessageBody;

impl Member {
    pub(super) fn handle_control(
        &mut self,
        now: Instant,
        from: SocketAddr,
        mh: &[u8],
    ) -> DataAction {
        let msg = match MobilityMessage::parse(mh) {
            Ok(m) => m,
            Err(_) => return self.counters.drops.drop(DropReason::Malformed),
        };
        let from = canonical(from);
        if from == canonical(self.config.access_point) {
            return self.ap_control(now, mh, &msg);
        }
        self.shim_control(now, from, mh, &msg)
    }

    /// A control message from a shim: the care-of test, BAs, errors.
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
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        match msg.body {
            MessageBody::CareOfTest {
                nonce_index,
                cookie,
                token,
            } => self.handle_test(now, client, false, nonce_index, cookie, token),
            MessageBody::BindingAck {
                status,
                sequence,
                lifetime,
            } => self.handle_binding_ack(now, client, mh, status, sequence, lifetime),
            MessageBody::BindingError { status, .. } => {
                // RFC 6275 sec. 11.3.6: the shim has no binding for us.
                if let Some(c) = self.correspondents.get_mut(&client) {
                    c.binding = None;
                }
                self.events
                    .push_back(MemberEvent::BindingRejected { client, status });
                self.start_rr(now, client);
                DataAction::Consumed
            }
            MessageBody::BindingRefreshRequest => {
                self.start_rr(now, client);
                DataAction::Consumed
            }
            _ => self.counters.drops.drop(DropReason::UnexpectedMessage),
        }
    }

    /// A control message from the AP: BAs (signed, or an unsigned 146),
    /// and signed BRRs, Shim Notices and HoTs.
    fn ap_control(&mut self, now: Instant, mh: &[u8], msg: &MobilityMessage) -> DataAction {
        let signed = verify_registration(mh, &self.config.key, self.config.home_address);
        // Every AP message names its member: one key may serve many members.
        if msg.binding_id().is_some_and(|(id, _)| id != self.config.id) {
            return self.counters.drops.drop(DropReason::UnexpectedMessage);
        }
        if let MessageBody::BindingAck {
            status,
            sequence,
            lifetime,
        } = msg.body
        {
            let (action, accepted) =
                self.handle_registration_ack(now, signed, status, sequence, lifetime);
            if accepted && let Some((_, draining, _)) = msg.member_state() {
                self.apply_operator_drain(now, draining);
            }
            return action;
        }
        if !signed {
            return self.counters.drops.drop(DropReason::AuthFailed);
        }
        match msg.body {
            MessageBody::BindingRefreshRequest => {
                if matches!(self.state, RegistrationState::Registered { .. }) {
                    self.send_registration(now, to_units(self.config.lifetime));
                }
                DataAction::Consumed
            }
            MessageBody::ShimNotice { client, shim } => {
                self.handle_shim_notice(now, client, shim);
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
                self.handle_test(now, client, true, nonce_index, cookie, token)
            }
            _ => self.counters.drops.drop(DropReason::UnexpectedMessage),
        }
    }
}
