//! One queue for all the timers of an engine.
//!
//! Each engine names its timers in one enum (`ApTimer`, `MemberTimer`,
//! `ShimTimer`); a timer is either armed at one instant or not armed.
//! `poll_timeout` is the earliest armed instant.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Armed timers, ordered by deadline.
#[derive(Debug, Clone)]
pub struct TimerQueue<T: Ord + Hash + Copy> {
    by_time: BTreeSet<(Instant, T)>,
    deadline: HashMap<T, Instant>,
}

impl<T: Ord + Hash + Copy> Default for TimerQueue<T> {
    fn default() -> Self {
        Self {
            by_time: BTreeSet::new(),
            deadline: HashMap::new(),
        }
    }
}

impl<T: Ord + Hash + Copy> TimerQueue<T> {
    /// Arm `timer` at `at`, replacing an earlier arming.
    pub fn set(&mut self, timer: T, at: Instant) {
        if let Some(old) = self.deadline.insert(timer, at) {
            self.by_time.remove(&(old, timer));
        }
        self.by_time.insert((at, timer));
    }

    /// Arm `timer` at `at` unless it is already armed earlier.
    pub fn set_earliest(&mut self, timer: T, at: Instant) {
        match self.deadline.get(&timer) {
            Some(old) if *old <= at => {}
            _ => self.set(timer, at),
        }
    }

    /// Disarm `timer`.
    pub fn cancel(&mut self, timer: T) {
        if let Some(old) = self.deadline.remove(&timer) {
            self.by_time.remove(&(old, timer));
        }
    }

    /// When `timer` fires, if armed.
    pub fn get(&self, timer: T) -> Option<Instant> {
        self.deadline.get(&timer).copied()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Remove and return one timer due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        let (at, timer) = *self.by_time.first()?;
        if at > now {
            return None;
        }
        self.by_time.remove(&(at, timer));
        self.deadline.remove(&timer);
        Some(timer)
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.deadline.len()
    }

    /// True when no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.deadline.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_order_and_rearms() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        q.set(1u8, t0 + Duration::from_secs(2));
        q.set(2u8, t0 + Duration::from_secs(1));
        q.set(1u8, t0 + Duration::from_secs(3)); // re-arm replaces
        assert_eq!(q.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(q.pop_due(t0), None);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(5)), Some(2));
        assert_eq!(q.pop_due(t0 + Duration::from_secs(5)), Some(1));
        assert!(q.is_empty());
        q.set(3u8, t0 + Duration::from_secs(4));
        q.set_earliest(3u8, t0 + Duration::from_secs(9));
        assert_eq!(q.get(3), Some(t0 + Duration::from_secs(4)));
        q.set_earliest(3u8, t0 + Duration::from_secs(1));
        assert_eq!(q.get(3), Some(t0 + Duration::from_secs(1)));
        q.cancel(3);
        assert_eq!(q.next(), None);
    }
}
