//! The configuration file's per-member policy (weights and drains), applied
//! inside the engine: when a member registers, before Maglev is rebuilt (so
//! a member the file drains never takes a new flow), and when the policies
//! are replaced (reload).

use std::time::Instant;

use super::state::{Change, DrainCause};
use super::table::WeightOverride;
use super::{AccessPoint, ApEvent};
use crate::wire::MemberId;

/// What the configuration says about one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberPolicy {
    /// The member.
    pub id: MemberId,
    /// Maglev weight instead of the one it advertises.
    pub weight: Option<u32>,
    /// Drain it: no new clients, open flows go on.
    pub drain: bool,
}

impl AccessPoint {
    /// Replace the per-member policies (config reload) and apply them to
    /// every registered member. A member drained only because the old
    /// policy said so is undrained; drains by operator command stay; a
    /// removed weight restores the member's advertised weight.
    pub fn set_member_policies(&mut self, now: Instant, policies: Vec<MemberPolicy>) {
        self.config.member_policies = policies;
        let ids: Vec<MemberId> = self.members.keys().copied().collect();
        let mut changed = false;
        for id in ids {
            let drained_before = self.members.get(&id).map(|m| m.drained_by().at_ap());
            if !self.apply_policy(now, id) {
                continue;
            }
            changed = true;
            if self.members.get(&id).map(|m| m.drained_by().at_ap()) != drained_before {
                // Its BA tells the member (and so its shims).
                self.request_refresh(id);
            }
        }
        if changed {
            self.rebuild();
        }
    }

    /// Bring one member's weight override and config drain in line with its
    /// policy; true (and an event) if anything changed. Does not rebuild
    /// Maglev: the caller does, once.
    pub(super) fn apply_policy(&mut self, now: Instant, id: MemberId) -> bool {
        let policy = self
            .config
            .member_policies
            .iter()
            .find(|p| p.id == id)
            .copied();
        let Some(m) = self.members.get_mut(&id) else {
            return false;
        };
        let weight = policy.and_then(|p| p.weight);
        let drain = policy.is_some_and(|p| p.drain);
        let mut changed = false;
        match (weight, m.weight_override) {
            (Some(w), current) if current != Some(WeightOverride::Config(w)) => {
                m.weight_override = Some(WeightOverride::Config(w));
                changed = true;
            }
            (None, Some(WeightOverride::Config(_))) => {
                m.weight_override = None;
                changed = true;
            }
            _ => {}
        }
        let mut change = Change::None;
        if drain != m.drained_by().config {
            changed = true;
            // Both are legal here: the config cause is off before a drain
            // and on before an undrain.
            let step = if drain {
                m.state.drain(now, DrainCause::Config)
            } else {
                m.state.undrain(DrainCause::Config)
            };
            change = step.unwrap_or(Change::None);
        }
        self.announce(id, change);
        if changed {
            self.events
                .push_back(ApEvent::PolicyApplied { id, weight, drain });
        }
        changed
    }
}
