//! The home test of return routability (RFC 6275 sec. 5.2.5, 10.4.6): the
//! AP relays a member's HoTI to the client's shim and the shim's HoT back,
//! both legs sealed (docs/PROTOCOL.md 5.2: the HoT's Care-of Ticket is
//! copied into the relayed HoT).

use std::net::Ipv6Addr;
use std::time::Instant;

use super::AccessPoint;
use crate::engine::{DataAction, DropReason};
use crate::wire::mh::MessageBody;
use crate::wire::{MemberId, MobilityMessage, MobilityOption};

impl AccessPoint {
    /// HoTI from member `id` (opened in its session): relay it, sealed, to
    /// the shim of the client it names.
    pub(super) fn relay_home_test_init(
        &mut self,
        now: Instant,
        id: MemberId,
        msg: &MobilityMessage,
        cookie: [u8; 8],
    ) -> DataAction {
        if msg.binding_id().is_some_and(|(named, _)| named != id) {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        let care_of = match self.members.get(&id) {
            Some(m) if !m.is_down() => m.care_of,
            _ => return self.counters.drops.drop(DropReason::UnknownPeer),
        };
        let Some(client) = msg.correspondent() else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        let Some(shim) = self.shims.get_mut(&client) else {
            return self.counters.drops.drop(DropReason::UnknownPeer);
        };
        shim.members.entry(id).or_default().rr_seen = true;
        let home = shim.home;
        let [bid, _] = self.member_id_options(id);
        let relayed = MobilityMessage::new(MessageBody::HomeTestInit { cookie })
            .with(bid)
            .with(MobilityOption::HomeAddress(home))
            .with(MobilityOption::Correspondent(client))
            // The shim punches its NAT towards the member's care-of endpoint.
            .with(MobilityOption::Endpoint(care_of));
        if !self.send_sealed_to_shim(client, Some(id), &relayed) {
            return self.counters.drops.drop(DropReason::NoSession);
        }
        self.counters.home_tests_relayed += 1;
        if let Some(m) = self.members.get_mut(&id) {
            m.last_heard = now;
        }
        DataAction::Consumed
    }

    /// HoT from the shim of `client` (opened in its session): relay it,
    /// sealed, to the member it names, with its Care-of Ticket.
    pub(super) fn relay_home_test(
        &mut self,
        client: Ipv6Addr,
        msg: &MobilityMessage,
    ) -> DataAction {
        let (Some((id, _)), Some(named)) = (msg.binding_id(), msg.correspondent()) else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if named != client {
            return self.counters.drops.drop(DropReason::SpoofedSource);
        }
        match self.members.get(&id) {
            Some(m) if !m.is_down() => {}
            _ => return self.counters.drops.drop(DropReason::NoMember),
        }
        let mut relayed = MobilityMessage::new(msg.body.clone());
        for opt in &msg.options {
            if matches!(
                opt,
                MobilityOption::BindingId { .. }
                    | MobilityOption::HomeAddress(_)
                    | MobilityOption::Correspondent(_)
                    | MobilityOption::CareOfTicket { .. }
            ) {
                relayed = relayed.with(opt.clone());
            }
        }
        if !self.send_sealed_to_member(id, &relayed) {
            return self.counters.drops.drop(DropReason::NoMember);
        }
        self.counters.home_tests_relayed += 1;
        DataAction::Consumed
    }
}
