//! The member table, the Maglev table built from it, and the operator's
//! commands on members (weight, drain, undrain, remove).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::state::{Change, DrainCause, DrainedBy, MemberState};
use super::{AccessPoint, ApError, ApEvent, ApTimer};
use crate::wire::MemberId;
use crate::wire::MobilityMessage;
use crate::wire::mh::{MessageBody, revocation_trigger};

/// Per-member traffic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberCounters {
    /// Packets forwarded to the member.
    pub packets_to: u64,
    /// Bytes forwarded to the member.
    pub bytes_to: u64,
    /// Packets received from the member.
    pub packets_from: u64,
    /// Bytes received from the member.
    pub bytes_from: u64,
}

/// A weight set at the AP instead of the one the member advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightOverride {
    /// Set by an operator command.
    Operator(u32),
    /// Set by the configuration file's policy.
    Config(u32),
}

impl WeightOverride {
    /// The weight.
    pub fn weight(self) -> u32 {
        match self {
            WeightOverride::Operator(w) | WeightOverride::Config(w) => w,
        }
    }
}

/// One registered member.
#[derive(Debug, Clone)]
pub struct MemberEntry {
    /// Binding ID.
    pub id: MemberId,
    /// Registered care-of endpoint.
    pub care_of: SocketAddr,
    /// Life state, the one record of draining.
    pub state: MemberState,
    /// Weight the member asks for.
    pub advertised_weight: u16,
    /// The weight set at the AP, if any (the last of operator and config wins).
    pub weight_override: Option<WeightOverride>,
    /// Random id of the member's process, to tell a restart from an id clash.
    pub instance: u64,
    /// SPI of the key it authenticated with.
    pub spi: u32,
    /// Last accepted BU sequence number.
    pub last_seq: u16,
    /// First registration of this instance.
    pub registered_since: Instant,
    /// End of the granted lifetime.
    pub lifetime_expires: Instant,
    /// Last authenticated message.
    pub last_heard: Instant,
    /// Traffic.
    pub counters: MemberCounters,
}

impl MemberEntry {
    /// The Maglev weight in force (0 = gets no new clients).
    pub fn effective_weight(&self) -> u32 {
        match self.state {
            MemberState::Active => self
                .weight_override
                .map_or(self.advertised_weight as u32, WeightOverride::weight),
            _ => 0,
        }
    }

    /// Who asks it to drain.
    pub fn drained_by(&self) -> DrainedBy {
        self.state.drained_by()
    }

    /// Is it down?
    pub fn is_down(&self) -> bool {
        self.state.is_down()
    }
}

impl AccessPoint {
    /// Set a member's weight (overrides the weight it advertises).
    pub fn set_weight(&mut self, id: MemberId, weight: u32) -> Result<(), ApError> {
        let m = self
            .members
            .get_mut(&id)
            .ok_or(ApError::UnknownMember(id))?;
        m.weight_override = Some(WeightOverride::Operator(weight));
        self.rebuild();
        Ok(())
    }

    /// Drain a member: no new clients; its flows are cut after `deadline`.
    pub fn drain(
        &mut self,
        now: Instant,
        id: MemberId,
        deadline: Option<Duration>,
    ) -> Result<(), ApError> {
        let m = self
            .members
            .get_mut(&id)
            .ok_or(ApError::UnknownMember(id))?;
        let deadline = deadline.map(|d| now + d);
        let change = m.state.drain(now, DrainCause::Operator);
        // A down member has no deadline in its state; the timer still cuts
        // what it may have again by then.
        let _ = m.state.set_deadline(deadline);
        self.announce(id, change.unwrap_or(Change::None));
        match deadline {
            Some(at) => self.timers.set(ApTimer::DrainDeadline(id), at),
            None => self.timers.cancel(ApTimer::DrainDeadline(id)),
        }
        self.rebuild();
        self.request_refresh(id);
        Ok(())
    }

    /// Undo the AP's drains of a member (operator's and config's); a drain
    /// the member asked for itself stays.
    pub fn undrain(&mut self, id: MemberId) -> Result<(), ApError> {
        let m = self
            .members
            .get_mut(&id)
            .ok_or(ApError::UnknownMember(id))?;
        self.timers.cancel(ApTimer::DrainDeadline(id));
        let mut change = Change::None;
        for cause in [DrainCause::Operator, DrainCause::Config] {
            // Not drained for that cause: nothing to undo.
            if let Ok(Change::Undrained) = m.state.undrain(cause) {
                change = Change::Undrained;
            }
        }
        let _ = m.state.set_deadline(None);
        self.announce(id, change);
        self.rebuild();
        self.request_refresh(id);
        Ok(())
    }

    /// Remove a member now: its flows end, its shims are told.
    pub fn remove(&mut self, now: Instant, id: MemberId) -> Result<(), ApError> {
        let Some(m) = self.members.get(&id) else {
            return Err(ApError::UnknownMember(id));
        };
        // Refuse this process from now on (a restarted one may come back),
        // and make it ask now so that it learns at once.
        self.banned.insert((id, m.instance));
        self.request_refresh(id);
        self.forget_member(now, id, revocation_trigger::ADMINISTRATIVE);
        Ok(())
    }

    /// The event for a visible change of a member's state.
    pub(super) fn announce(&mut self, id: MemberId, change: Change) {
        match change {
            Change::StartedDraining => self.events.push_back(ApEvent::MemberDraining { id }),
            Change::Undrained => self.events.push_back(ApEvent::MemberUndrained { id }),
            Change::None => {}
        }
    }

    /// Ask one member for a BU now (its BA carries the AP's drain flag).
    pub(super) fn request_refresh(&mut self, id: MemberId) {
        let Some(m) = self.members.get(&id) else {
            return;
        };
        if m.is_down() {
            return;
        }
        let [bid, hoa] = self.member_id_options(id);
        let msg = MobilityMessage::new(MessageBody::BindingRefreshRequest)
            .with(bid)
            .with(hoa);
        self.send_sealed_to_member(id, &msg);
    }

    /// Rebuild Maglev from the member table's weights.
    pub(super) fn rebuild(&mut self) {
        let set: Vec<(MemberId, u32)> = self
            .members
            .values()
            .map(|m| (m.id, m.effective_weight()))
            .collect();
        // Cannot fail: ids are unique (map keys) and fewer than the table's slots.
        let _ = self.maglev.set_members(&set);
    }

    /// The member is gone for good (deregistered or removed).
    pub(super) fn forget_member(&mut self, now: Instant, id: MemberId, trigger: u8) {
        self.member_gone(now, id, trigger);
        self.members.remove(&id);
        self.drop_member_sessions(id);
        for t in [
            ApTimer::Liveness(id),
            ApTimer::Lifetime(id),
            ApTimer::DrainDeadline(id),
        ] {
            self.timers.cancel(t);
        }
        self.rebuild();
        self.events.push_back(ApEvent::MemberLeft { id });
    }
}
