//! The home test of return routability (RFC 6275 sec. 5.2.5, 10.4.6): the
//! AP relays a member's HoTI to the client's shim and the shim's HoT back.

use std::net::SocketAddr;
use std::time::Instant;

use super::AccessPoint;
use crate::engine::{
    DataAction, DropReason, Transmit, canonical, control_frame, verify_registration,
};
use crate::wire::mh::MessageBody;
use crate::wire::{MemberId, MobilityMessage, MobilityOption};

impl AccessPoint {
    /// Check that a control message comes from the registered member it
    /// names and carries that member's valid authenticator.
    fn authenticated_member(
        &self,
        from: SocketAddr,
        mh: &[u8],
        msg: &MobilityMessage,
    ) -> Option<MemberId> {
        let (id, _) = msg.binding_id()?;
        let m = self.members.get(&id)?;
        if m.care_of != canonical(from) || m.is_down() {
            return None;
        }
        let key = self.config.key(m.spi)?;
        verify_registration(mh, key, self.config.home_address).then_some(id)
    }

    /// HoTI from a member: relay it to the shim of the client it names.
    pub(super) fn relay_home_test_init(
        &mut self,
        now: Instant,
        from: SocketAddr,
        mh: &[u8],
        msg: &MobilityMessage,
        cookie: [u8; 8],
    ) -> DataAction {
        let Some(id) = self.authenticated_member(from, mh, msg) else {
            return self.counters.drops.drop(DropReason::AuthFailed);
        };
        let Some(client) = msg.correspondent() else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        let Some(shim) = self.shims.get_mut(&client) else {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        shim.members.entry(id).or_default().rr_seen = true;
        let to = shim.endpoint;
        let [bid, hoa] = self.member_id_options(id);
        let relayed = MobilityMessage::new(MessageBody::HomeTestInit { cookie })
            .with(bid)
            .with(hoa)
            .with(MobilityOption::Correspondent(client));
        self.transmits.push_back(Transmit {
            to,
            payload: control_frame(Some(id), &relayed),
        });
        self.counters.home_tests_relayed += 1;
        if let Some(m) = self.members.get_mut(&id) {
            m.last_heard = now;
        }
        DataAction::Consumed
    }

    /// HoT from a shim: relay it to the member it names.
    pub(super) fn relay_home_test(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &MobilityMessage,
    ) -> DataAction {
        let (Some((id, _)), Some(client)) = (msg.binding_id(), msg.correspondent()) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        match self.shims.get_mut(&client) {
            // Route-optimized shims send little else through the AP: their
            // home tests keep them known (for revocations).
            Some(s) if s.endpoint == canonical(from) => s.last_seen = now,
            _ => return self.counters.drops.drop(DropReason::SpoofedSource),
        }
        let Some(m) = self.members.get(&id) else {
            return self.counters.drops.drop(DropReason::NoMember);
        };
        let (to, spi) = (m.care_of, m.spi);
        let mut relayed = MobilityMessage::new(msg.body.clone());
        for opt in &msg.options {
            if matches!(
                opt,
                MobilityOption::BindingId { .. }
                    | MobilityOption::HomeAddress(_)
                    | MobilityOption::Correspondent(_)
            ) {
                relayed = relayed.with(opt.clone());
            }
        }
        self.send_to_member(to, id, spi, relayed);
        self.counters.home_tests_relayed += 1;
        DataAction::Consumed
    }
}
