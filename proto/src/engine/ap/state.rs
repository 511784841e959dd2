//! A member's life at the AP as one state machine (docs/PROTOCOL.md sec. 7.1).
//!
//! ```text
//!   (none) --BU ok--> Active, or Draining (drain flag / operator / config drain)
//!   Active --drain(cause)--> Draining {by: cause}
//!   Draining --drain(cause)--> Draining {by + cause}
//!   Draining --undrain(cause), nobody else drains--> Active
//!   Active|Draining --no signed BU or HoTI for dead_after, or lifetime over--> Down
//!   Down --BU ok--> Active or Draining (operator and config drains survive Down)
//!   any --BU lifetime 0 / operator remove--> (none): the entry is deleted
//! ```
//!
//! The state is the only record of draining: the Maglev weight 0 of a
//! draining member and the drain flag in its BA are derived from it.

use std::time::Instant;

/// Who asks a member to drain. It drains while anyone does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DrainedBy {
    /// The member's own BU carries the drain flag.
    pub member: bool,
    /// An operator command (`drain`).
    pub operator: bool,
    /// The configuration file's per-member policy.
    pub config: bool,
}

impl DrainedBy {
    /// Nobody asks.
    pub const NONE: DrainedBy = DrainedBy {
        member: false,
        operator: false,
        config: false,
    };

    /// Drained for one cause.
    pub fn only(cause: DrainCause) -> Self {
        let mut by = Self::NONE;
        by.set(cause, true);
        by
    }

    /// Does anyone ask?
    pub fn any(self) -> bool {
        self.member || self.operator || self.config
    }

    /// Does the AP's side (operator or config) ask? This is the drain flag
    /// the AP reports to the member in its BA.
    pub fn at_ap(self) -> bool {
        self.operator || self.config
    }

    /// Does `cause` ask?
    pub fn get(self, cause: DrainCause) -> bool {
        match cause {
            DrainCause::Member => self.member,
            DrainCause::Operator => self.operator,
            DrainCause::Config => self.config,
        }
    }

    fn set(&mut self, cause: DrainCause, on: bool) {
        match cause {
            DrainCause::Member => self.member = on,
            DrainCause::Operator => self.operator = on,
            DrainCause::Config => self.config = on,
        }
    }
}

/// One reason to drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DrainCause {
    /// The member asked (drain flag in its BU).
    Member,
    /// An operator command.
    Operator,
    /// The configuration file.
    Config,
}

/// Where a member is in its life at this AP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Serving new and established flows.
    Active,
    /// Weight 0: established flows only, until `deadline` if set.
    Draining {
        /// When draining began.
        since: Instant,
        /// When the remaining flows are cut.
        deadline: Option<Instant>,
        /// Who asks it to drain (never nobody).
        by: DrainedBy,
    },
    /// Not heard from: no flows.
    Down {
        /// When it was declared down.
        since: Instant,
        /// Operator and config drains, in force again when it comes back.
        drained_by: DrainedBy,
    },
}

/// A transition the member state machine does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IllegalTransition {
    /// Only a down member can come back.
    #[error("the member is not down: it cannot come back")]
    NotDown,
    /// The member is down already.
    #[error("the member is down already")]
    AlreadyDown,
    /// Nobody of that cause drains the member.
    #[error("the member is not drained by {0:?}")]
    NotDrained(DrainCause),
    /// A down member sends nothing, so it cannot ask to drain.
    #[error("a down member cannot ask to drain")]
    MemberIsDown,
    /// Only a draining member has a drain deadline.
    #[error("the member is not draining: no drain deadline")]
    NotDraining,
}

/// What a transition changed that others must hear of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing visible: the member serves as before.
    None,
    /// Active -> Draining.
    StartedDraining,
    /// Draining -> Active.
    Undrained,
}

impl MemberState {
    /// The state of a member that just registered: draining if anyone asks.
    pub fn registered(now: Instant, by: DrainedBy) -> Self {
        if by.any() {
            MemberState::Draining {
                since: now,
                deadline: None,
                by,
            }
        } else {
            MemberState::Active
        }
    }

    /// Is it down?
    pub fn is_down(&self) -> bool {
        matches!(self, MemberState::Down { .. })
    }

    /// Who asks it to drain (a down member: the drains it will come back to).
    pub fn drained_by(&self) -> DrainedBy {
        match *self {
            MemberState::Active => DrainedBy::NONE,
            MemberState::Draining { by, .. } => by,
            MemberState::Down { drained_by, .. } => drained_by,
        }
    }

    /// Down -> Active or Draining, on a new registration; `member_drain` is
    /// the drain flag of its BU.
    pub fn come_back(&mut self, now: Instant, member_drain: bool) -> Result<(), IllegalTransition> {
        let MemberState::Down { mut drained_by, .. } = *self else {
            return Err(IllegalTransition::NotDown);
        };
        drained_by.member = member_drain;
        *self = Self::registered(now, drained_by);
        Ok(())
    }

    /// `cause` asks to drain. A down member remembers an AP-side drain for
    /// when it comes back.
    pub fn drain(&mut self, now: Instant, cause: DrainCause) -> Result<Change, IllegalTransition> {
        match self {
            MemberState::Active => {
                *self = MemberState::Draining {
                    since: now,
                    deadline: None,
                    by: DrainedBy::only(cause),
                };
                Ok(Change::StartedDraining)
            }
            MemberState::Draining { by, .. } => {
                by.set(cause, true);
                Ok(Change::None)
            }
            MemberState::Down { .. } if cause == DrainCause::Member => {
                Err(IllegalTransition::MemberIsDown)
            }
            MemberState::Down { drained_by, .. } => {
                drained_by.set(cause, true);
                Ok(Change::None)
            }
        }
    }

    /// `cause` no longer asks to drain; the member is active again when
    /// nobody else does.
    pub fn undrain(&mut self, cause: DrainCause) -> Result<Change, IllegalTransition> {
        match self {
            MemberState::Draining { by, .. } if by.get(cause) => {
                by.set(cause, false);
                if by.any() {
                    return Ok(Change::None);
                }
                *self = MemberState::Active;
                Ok(Change::Undrained)
            }
            MemberState::Down { drained_by, .. } if drained_by.get(cause) => {
                drained_by.set(cause, false);
                Ok(Change::None)
            }
            _ => Err(IllegalTransition::NotDrained(cause)),
        }
    }

    /// Set when a draining member's remaining flows are cut.
    pub fn set_deadline(&mut self, at: Option<Instant>) -> Result<(), IllegalTransition> {
        match self {
            MemberState::Draining { deadline, .. } => {
                *deadline = at;
                Ok(())
            }
            _ => Err(IllegalTransition::NotDraining),
        }
    }

    /// Active or Draining -> Down. The member's own drain flag is forgotten
    /// (its next BU says it again); the AP's drains are kept.
    pub fn go_down(&mut self, now: Instant) -> Result<(), IllegalTransition> {
        if self.is_down() {
            return Err(IllegalTransition::AlreadyDown);
        }
        let mut drained_by = self.drained_by();
        drained_by.member = false;
        *self = MemberState::Down {
            since: now,
            drained_by,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_lasts_while_anyone_asks() {
        let now = Instant::now();
        let mut s = MemberState::Active;
        assert_eq!(
            s.drain(now, DrainCause::Config),
            Ok(Change::StartedDraining)
        );
        assert_eq!(s.drain(now, DrainCause::Operator), Ok(Change::None));
        assert_eq!(s.undrain(DrainCause::Config), Ok(Change::None));
        assert!(s.drained_by().operator && !s.drained_by().config);
        assert_eq!(s.undrain(DrainCause::Operator), Ok(Change::Undrained));
        assert_eq!(s, MemberState::Active);
    }

    #[test]
    fn illegal_transitions_are_errors() {
        let now = Instant::now();
        let mut s = MemberState::Active;
        assert_eq!(
            s.undrain(DrainCause::Operator),
            Err(IllegalTransition::NotDrained(DrainCause::Operator))
        );
        assert_eq!(s.come_back(now, false), Err(IllegalTransition::NotDown));
        assert_eq!(
            s.set_deadline(Some(now)),
            Err(IllegalTransition::NotDraining)
        );
        s.go_down(now).unwrap();
        assert_eq!(s.go_down(now), Err(IllegalTransition::AlreadyDown));
        assert_eq!(
            s.drain(now, DrainCause::Member),
            Err(IllegalTransition::MemberIsDown)
        );
    }

    #[test]
    fn ap_drains_survive_down_and_the_member_flag_does_not() {
        let now = Instant::now();
        let mut s = MemberState::registered(
            now,
            DrainedBy {
                member: true,
                operator: true,
                config: false,
            },
        );
        s.go_down(now).unwrap();
        assert_eq!(
            s.drained_by(),
            DrainedBy::only(DrainCause::Operator),
            "down keeps the operator's drain only"
        );
        s.come_back(now, false).unwrap();
        assert!(
            matches!(s, MemberState::Draining { by, .. } if by == DrainedBy::only(DrainCause::Operator))
        );
        s.go_down(now).unwrap();
        s.undrain(DrainCause::Operator).unwrap();
        s.come_back(now, false).unwrap();
        assert_eq!(s, MemberState::Active);
    }
}
