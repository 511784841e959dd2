//! Control messages from the AP and from members.

use std::net::SocketAddr;
use std::time::Instant;

use super::Shim;
use crate::engine::{DataAction, DropReason, ReceivedBu, Transmit, canonical, control_frame};
use crate::wire::mh::{MessageBody, be_status};
use crate::wire::{MobilityMessage, WireError};

impl Shim {
    pub(super) fn handle_control(
        &mut self,
        now: Instant,
        from: SocketAddr,
        mh: &[u8],
    ) -> DataAction {
        let msg = match MobilityMessage::parse(mh) {
            Ok(m) => m,
            Err(WireError::UnknownMhType(_)) => {
                self.send_binding_error(now, from, be_status::UNRECOGNIZED_MH_TYPE);
                return self.counters.drops.drop(DropReason::UnexpectedMessage);
            }
            Err(_) => return self.counters.drops.drop(DropReason::Malformed),
        };
        let from_ap = from == canonical(self.config.access_point);
        match msg.body {
            MessageBody::HomeTestInit { cookie } if from_ap => self.answer_home_test(&msg, cookie),
            MessageBody::BindingRevocation { .. } if from_ap => self.revoke(&msg),
            MessageBody::BindingError { .. } if !from_ap => self.binding_error(from),
            MessageBody::CareOfTestInit { cookie } if !from_ap => {
                self.answer_care_of_test(from, cookie)
            }
            MessageBody::BindingUpdate {
                sequence,
                ack,
                home: false,
                lifetime,
            } if !from_ap => self.handle_binding_update(
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

    pub(super) fn send_binding_error(&mut self, now: Instant, to: SocketAddr, status: u8) {
        // At most one per endpoint per second (RFC 6275 sec. 9.3.3 rate limit).
        if !self.binding_errors_sent.allow(now, to) {
            return;
        }
        let be = MobilityMessage::new(MessageBody::BindingError {
            status,
            home_address: self.config.home_address,
        });
        self.transmits.push_back(Transmit {
            to,
            payload: control_frame(None, &be),
        });
        self.counters.binding_errors += 1;
    }
}
