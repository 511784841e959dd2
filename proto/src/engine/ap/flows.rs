//! Several access points for one home address (docs/PROTOCOL.md section
//! 10): members' Flow Reports pin the flows they serve, a started AP holds
//! back segments of flows it does not know for `settle`, and the table
//! digest lets operators check that every AP built the same Maglev table.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use super::{AccessPoint, ApTimer};
use crate::affinity::{Adoption, FlowState};
use crate::engine::{DataAction, DropReason};
use crate::wire::inner::InnerInfo;
use crate::wire::mh::FLOWS_PER_REPORT;
use crate::wire::{FlowKey, MemberId, MobilityMessage};

/// IP protocol numbers of the transports whose flows have ports.
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

impl AccessPoint {
    /// A Flow Report, opened in member `id`'s session: each valid flow is
    /// pinned to the member ([`crate::affinity::AffinityTable::adopt`]).
    /// A report from a member that is down changes nothing; one with more
    /// than [`FLOWS_PER_REPORT`] flows is malformed.
    pub(super) fn flow_report(
        &mut self,
        now: Instant,
        id: MemberId,
        msg: &MobilityMessage,
    ) -> DataAction {
        match self.members.get_mut(&id) {
            Some(m) if !m.is_down() => m.last_heard = now,
            _ => return self.counters.drops.drop(DropReason::UnknownPeer),
        }
        if msg.flows().count() > FLOWS_PER_REPORT {
            return self.counters.drops.drop(DropReason::Malformed);
        }
        let homes = self.config.homes();
        for flow in msg.flows() {
            // The Flow option leaves the home address out: the one of the
            // client's family.
            let Some(home) = homes.for_peer(flow.client) else {
                continue;
            };
            let key = flow.key(home);
            if !is_valid_reported(&key) {
                continue;
            }
            self.counters.flows_reported += 1;
            let state = FlowState::from(flow.state);
            if let Adoption::Moved { .. } = self.affinity.adopt(now, &key, id, state) {
                self.counters.flows_moved += 1;
            }
        }
        if !self.affinity.is_empty() && self.timers.get(ApTimer::AffinitySweep).is_none() {
            self.timers
                .set(ApTimer::AffinitySweep, now + Duration::from_secs(1));
        }
        DataAction::Consumed
    }

    /// Is the AP still settling at `now`: `settle` has not passed since the
    /// first member registration, or no member has registered yet? Never
    /// with a `settle` of zero.
    pub fn settling(&self, now: Instant) -> bool {
        !self.config.settle.is_zero()
            && self
                .first_registration
                .is_none_or(|first| now < first + self.config.settle)
    }

    /// Should this packet of a flow the affinity table does not know be held
    /// back (dropped as [`DropReason::Settling`]) instead of pinned to a
    /// Maglev pick? Only while settling, and only a TCP segment without SYN
    /// or RST (its owner will report the flow and TCP retransmits it; an RST
    /// is not retransmitted, and a wrong member ignores it) that no shim tag
    /// pins.
    pub(super) fn hold_back(&self, now: Instant, info: &InnerInfo, pinned: bool) -> bool {
        !pinned
            && info
                .tcp
                .is_some_and(|t| !t.flags.syn && !t.flags.rst && self.settling(now))
    }

    /// A digest of the Maglev table's input, the same on every machine: two
    /// APs with the same digest give every new client the same member.
    /// FNV-1a 64 over the table size (8 bytes, big-endian) and then, sorted
    /// by member id, each member with a weight above zero as its id (2
    /// bytes) and effective weight (4 bytes), big-endian. Members of weight
    /// zero (draining, down) own no slot and are left out.
    pub fn table_digest(&self) -> u64 {
        self.maglev.digest()
    }
}

/// A reported flow the AP may pin: from a unicast, global client (not the
/// home address itself) and, for TCP and UDP, with both ports set.
fn is_valid_reported(key: &FlowKey) -> bool {
    let client: Ipv6Addr = key.src;
    let ports = match key.proto {
        IPPROTO_TCP | IPPROTO_UDP => key.src_port != 0 && key.dst_port != 0,
        _ => true,
    };
    ports
        && client != key.dst
        && !client.is_unspecified()
        && !client.is_loopback()
        && !client.is_multicast()
        && !client.is_unicast_link_local()
}
