//! At most one log line per interval for errors that can repeat per packet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets one event through per `interval`; the rest are only counted by the
/// caller's counters.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    origin: Instant,
    interval: Duration,
    next_allowed_ms: AtomicU64,
}

impl LogThrottle {
    pub(crate) fn new(interval: Duration) -> Self {
        LogThrottle {
            origin: Instant::now(),
            interval,
            next_allowed_ms: AtomicU64::new(0),
        }
    }

    /// True if the caller may log now.
    pub(crate) fn allow(&self) -> bool {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_allowed_ms.load(Ordering::Relaxed);
        if now < next {
            return false;
        }
        let interval = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        self.next_allowed_ms
            .compare_exchange(
                next,
                now.saturating_add(interval),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_event_of_an_interval_passes() {
        let t = LogThrottle::new(Duration::from_secs(3600));
        assert!(t.allow());
        assert!(!t.allow());
        assert!(!t.allow());
    }
}
