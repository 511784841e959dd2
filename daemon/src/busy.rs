//! Adaptive busy polling: after traffic, keep the daemon's thread awake for
//! a bounded window instead of sleeping in `epoll_wait`.
//!
//! A packet that reaches a sleeping daemon pays for the wake-up (an
//! interrupt to an idle CPU, the scheduler, on a VM a halt exit): tens of
//! microseconds per daemon per direction, which is most of the latency a
//! tunnel adds to a request. While the window is open a spinner task keeps
//! the runtime busy: it yields to the scheduler, which then polls the I/O
//! driver with a zero timeout (tokio's deferred yield) and runs whatever
//! became ready at once, and it yields the CPU to other runnable
//! processes (`sched_yield`) so that the applications behind the tunnel
//! keep running on a small machine. The window reopens at every TUN batch
//! and every UDP batch with a data frame the engine accepted (the driver
//! decides: garbage never reopens it), and closes `window` after the last
//! one; an idle daemon sleeps as before. `--busy-poll-us 0` turns it off
//! (shared hosts where a core's worth of spinning after traffic is not
//! welcome).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The default window: long enough to catch the answer to a request that
/// crosses the daemon (a round trip through one more hop and a server on
/// this machine), short enough that a sparse packet costs little.
pub const DEFAULT_WINDOW: Duration = Duration::from_micros(200);

/// The longest window the flag accepts.
pub const MAX_WINDOW: Duration = Duration::from_millis(10);

/// Shared by the data tasks (which report traffic) and the spinner.
#[derive(Debug)]
pub struct BusyPoll {
    window: Duration,
    epoch: Instant,
    /// Nanoseconds since `epoch` of the last reported batch.
    last: AtomicU64,
    spinning: AtomicBool,
    wake: Notify,
    /// Windows opened (the spinner went from sleeping to spinning).
    windows: AtomicU64,
    /// Batches that arrived while the window was open.
    hits: AtomicU64,
}

impl BusyPoll {
    /// Busy polling with `window` (zero: off).
    pub fn new(window: Duration) -> Arc<Self> {
        Arc::new(Self {
            window,
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            spinning: AtomicBool::new(false),
            wake: Notify::new(),
            windows: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        })
    }

    /// The window (zero: off).
    pub fn window(&self) -> Duration {
        self.window
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A data task handled a batch at `now`: (re)open the window.
    pub fn traffic(&self, now: Instant) {
        if self.window.is_zero() {
            return;
        }
        self.last.store(self.nanos(now), Ordering::Relaxed);
        if self.spinning.load(Ordering::Relaxed) {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.wake.notify_one();
        }
    }

    /// Whether the window is open at `now`.
    fn open(&self, now: Instant) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        self.nanos(now).saturating_sub(last) < u64::try_from(self.window.as_nanos()).unwrap_or(0)
    }

    /// Windows opened and batches caught while one was open.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.windows.load(Ordering::Relaxed),
            self.hits.load(Ordering::Relaxed),
        )
    }

    /// The spinner task: sleeps until traffic, spins while the window is
    /// open. Never returns; with a zero window it sleeps for ever
    /// (`traffic` never wakes it).
    pub async fn spin(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            self.windows.fetch_add(1, Ordering::Relaxed);
            self.spinning.store(true, Ordering::Relaxed);
            while self.open(Instant::now()) {
                // Let other runnable processes (the server behind us) have
                // this CPU first; then let the runtime poll its I/O driver
                // without blocking and run what became ready.
                std::thread::yield_now();
                tokio::task::yield_now().await;
            }
            self.spinning.store(false, Ordering::Relaxed);
        }
    }
}

/// Parse `--busy-poll-us`: microseconds, 0 to turn it off.
pub fn parse_window_us(s: &str) -> Result<Duration, String> {
    let us: u64 = s.trim().parse().map_err(|_| {
        format!(
            "{s:?} is not a number of microseconds: give e.g. 200, or 0 to turn busy polling off"
        )
    })?;
    window_from_us(us)
}

/// The window of `us` microseconds (the flag's or the config key's), at
/// most [`MAX_WINDOW`].
pub fn window_from_us(us: u64) -> Result<Duration, String> {
    let window = Duration::from_micros(us);
    if window > MAX_WINDOW {
        return Err(format!(
            "{us} us is longer than the {} us a busy-poll window may be: give at most that, or 0 to turn busy polling off",
            MAX_WINDOW.as_micros()
        ));
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_opens_with_traffic_and_closes_after_it() {
        let b = BusyPoll::new(Duration::from_micros(200));
        let t0 = b.epoch + Duration::from_millis(5);
        assert!(!b.open(t0), "no traffic yet: closed");
        b.traffic(t0);
        assert!(b.open(t0 + Duration::from_micros(199)));
        assert!(!b.open(t0 + Duration::from_micros(200)));
        b.traffic(t0 + Duration::from_micros(150));
        assert!(b.open(t0 + Duration::from_micros(300)), "reopened");
    }

    #[test]
    fn off_never_opens() {
        let b = BusyPoll::new(Duration::ZERO);
        let t = b.epoch + Duration::from_millis(1);
        b.traffic(t);
        assert!(!b.open(t));
        assert_eq!(b.counts(), (0, 0));
    }

    #[test]
    fn window_flag_is_checked() {
        assert_eq!(parse_window_us("0"), Ok(Duration::ZERO));
        assert_eq!(parse_window_us("150"), Ok(Duration::from_micros(150)));
        assert!(parse_window_us("x").unwrap_err().contains("microseconds"));
        assert!(parse_window_us("-1").unwrap_err().contains("microseconds"));
        assert!(parse_window_us("20000").unwrap_err().contains("at most"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn spinner_spins_only_after_traffic_and_stops() {
        let b = BusyPoll::new(Duration::from_millis(2));
        let task = tokio::spawn(b.clone().spin());
        tokio::task::yield_now().await;
        assert_eq!(b.counts().0, 0, "no window without traffic");
        b.traffic(Instant::now());
        // The spinner runs on this thread: while it spins, this task keeps
        // getting polled (it yields), so it can watch the window close.
        let started = Instant::now();
        while b.counts().0 == 0 || b.spinning.load(Ordering::Relaxed) {
            tokio::task::yield_now().await;
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "window never closed"
            );
        }
        assert_eq!(b.counts().0, 1);
        task.abort();
    }
}
