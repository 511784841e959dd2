//! Site health: a state machine with hysteresis per site, and a monitor that
//! schedules probes. Time is passed in; nothing here reads a clock or opens
//! a socket.
//!
//! Layer: sans-IO core. Contract: a site changes between serving and not
//! serving only after `down_after` consecutive failed probes (or `up_after`
//! consecutive good ones), so one lost probe never moves answers. The
//! monitor says which probe is due ([`HealthMonitor::poll_probe`]), when to
//! wake next ([`HealthMonitor::poll_timeout`]), and reports transitions
//! ([`HealthMonitor::poll_event`]); the shell runs the probes.
//!
//! ```text
//!            ok x up_after                       fail x down_after
//!  Unknown ───────────────▶ Up{fails:0} ◀─┐   Up{fails:n} ──────────────▶ Down{oks:0}
//!     │                        │ fail     │ ok        ▲                      │ ok
//!     │ fail x down_after      ▼          │           │ ok x up_after        ▼
//!     └──────────────▶ Down   Up{fails:n}─┘           └──────────────── Down{oks:n}
//! ```
//! Serving: `Unknown` (fail open until the first verdict) and `Up`.
//! Uncertain (answers get the short TTL): `Unknown`, `Up{fails>0}`,
//! `Down{oks>0}`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Index of a site in the zone's site list.
pub type SiteIndex = usize;

/// Consecutive-result thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    /// Consecutive failures that take a serving site down (>= 1).
    pub down_after: u32,
    /// Consecutive successes that bring a site up (>= 1).
    pub up_after: u32,
}

/// Health state of one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteState {
    /// No verdict yet; counts consecutive results of the current streak
    /// (positive: successes, negative: failures).
    Unknown {
        /// Signed streak length.
        streak: i32,
    },
    /// Serving; `fails` consecutive failures seen so far.
    Up {
        /// Consecutive failures below the threshold.
        fails: u32,
    },
    /// Not serving; `oks` consecutive successes seen so far.
    Down {
        /// Consecutive successes below the threshold.
        oks: u32,
    },
}

/// Coarse state for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not yet decided.
    Unknown,
    /// Serving.
    Up,
    /// Not serving.
    Down,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Unknown => "unknown",
            Verdict::Up => "up",
            Verdict::Down => "down",
        })
    }
}

impl SiteState {
    /// Whether answers may point at this site.
    pub fn serving(&self) -> bool {
        !matches!(self, SiteState::Down { .. })
    }

    /// Whether the state may change soon (answers then carry a short TTL).
    pub fn uncertain(&self) -> bool {
        match *self {
            SiteState::Unknown { .. } => true,
            SiteState::Up { fails } => fails > 0,
            SiteState::Down { oks } => oks > 0,
        }
    }

    /// The coarse verdict.
    pub fn verdict(&self) -> Verdict {
        match self {
            SiteState::Unknown { .. } => Verdict::Unknown,
            SiteState::Up { .. } => Verdict::Up,
            SiteState::Down { .. } => Verdict::Down,
        }
    }

    /// Applies one probe result. Every (state, result) pair is a legal
    /// transition; the thresholds decide where it leads.
    pub fn on_result(self, ok: bool, h: Hysteresis) -> SiteState {
        match (self, ok) {
            (SiteState::Unknown { streak }, true) => {
                let s = streak.max(0) + 1;
                if s as u32 >= h.up_after {
                    SiteState::Up { fails: 0 }
                } else {
                    SiteState::Unknown { streak: s }
                }
            }
            (SiteState::Unknown { streak }, false) => {
                let s = streak.min(0) - 1;
                if s.unsigned_abs() >= h.down_after {
                    SiteState::Down { oks: 0 }
                } else {
                    SiteState::Unknown { streak: s }
                }
            }
            (SiteState::Up { .. }, true) => SiteState::Up { fails: 0 },
            (SiteState::Up { fails }, false) => {
                if fails + 1 >= h.down_after {
                    SiteState::Down { oks: 0 }
                } else {
                    SiteState::Up { fails: fails + 1 }
                }
            }
            (SiteState::Down { oks }, true) => {
                if oks + 1 >= h.up_after {
                    SiteState::Up { fails: 0 }
                } else {
                    SiteState::Down { oks: oks + 1 }
                }
            }
            (SiteState::Down { .. }, false) => SiteState::Down { oks: 0 },
        }
    }
}

/// What answers need to know about a site, copied into the query snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteHealth {
    /// May be answered.
    pub serving: bool,
    /// Short TTL while true.
    pub uncertain: bool,
}

impl SiteHealth {
    /// Serving and certain: for sites with static health.
    pub const UP: SiteHealth = SiteHealth {
        serving: true,
        uncertain: false,
    };
    /// Not serving and certain.
    pub const DOWN: SiteHealth = SiteHealth {
        serving: false,
        uncertain: false,
    };
}

/// How a site's health is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthSource {
    /// Fixed by configuration (until the AP status interface exists).
    Static(bool),
    /// Probed by this server.
    Probed,
}

/// A state change, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthEvent {
    /// Which site.
    pub site: SiteIndex,
    /// Verdict before.
    pub from: Verdict,
    /// Verdict after.
    pub to: Verdict,
    /// When the deciding result arrived.
    pub at: Instant,
}

#[derive(Debug, Clone)]
struct Entry {
    source: HealthSource,
    state: SiteState,
    next_probe: Instant,
    in_flight: bool,
}

/// Probe scheduler and state holder for all sites.
#[derive(Debug, Clone)]
pub struct HealthMonitor {
    entries: Vec<Entry>,
    hysteresis: Hysteresis,
    interval: Duration,
    events: VecDeque<HealthEvent>,
}

impl HealthMonitor {
    /// A monitor for sites with the given sources; probed sites are due at
    /// `now`.
    pub fn new(
        now: Instant,
        sources: &[HealthSource],
        hysteresis: Hysteresis,
        interval: Duration,
    ) -> Self {
        let entries = sources
            .iter()
            .map(|&source| Entry {
                source,
                state: match source {
                    HealthSource::Static(true) => SiteState::Up { fails: 0 },
                    HealthSource::Static(false) => SiteState::Down { oks: 0 },
                    HealthSource::Probed => SiteState::Unknown { streak: 0 },
                },
                next_probe: now,
                in_flight: false,
            })
            .collect();
        Self {
            entries,
            hysteresis,
            interval,
            events: VecDeque::new(),
        }
    }

    /// The next site whose probe is due at `now`; marks it in flight and
    /// schedules the one after. Call until `None`.
    pub fn poll_probe(&mut self, now: Instant) -> Option<SiteIndex> {
        let interval = self.interval;
        let (i, e) = self.entries.iter_mut().enumerate().find(|(_, e)| {
            e.source == HealthSource::Probed && !e.in_flight && e.next_probe <= now
        })?;
        e.in_flight = true;
        e.next_probe = now + interval;
        Some(i)
    }

    /// When the next probe falls due (None: nothing is probed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter(|e| e.source == HealthSource::Probed && !e.in_flight)
            .map(|e| e.next_probe)
            .min()
    }

    /// Feeds a probe result (a probe that timed out is a failure). Results
    /// for statically configured sites are ignored.
    pub fn on_probe_result(&mut self, now: Instant, site: SiteIndex, ok: bool) {
        let h = self.hysteresis;
        let Some(e) = self.entries.get_mut(site) else {
            return;
        };
        e.in_flight = false;
        if e.source != HealthSource::Probed {
            return;
        }
        let before = e.state;
        e.state = before.on_result(ok, h);
        if before.verdict() != e.state.verdict() {
            self.events.push_back(HealthEvent {
                site,
                from: before.verdict(),
                to: e.state.verdict(),
                at: now,
            });
        }
    }

    /// The next state change since the last call.
    pub fn poll_event(&mut self) -> Option<HealthEvent> {
        self.events.pop_front()
    }

    /// The state of one site.
    pub fn state(&self, site: SiteIndex) -> Option<SiteState> {
        self.entries.get(site).map(|e| e.state)
    }

    /// What the query path needs, per site.
    pub fn view(&self) -> Vec<SiteHealth> {
        self.entries
            .iter()
            .map(|e| SiteHealth {
                serving: e.state.serving(),
                uncertain: e.state.uncertain(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Hysteresis = Hysteresis {
        down_after: 3,
        up_after: 2,
    };

    #[test]
    fn one_lost_probe_does_not_take_a_site_down() {
        let s = SiteState::Up { fails: 0 }.on_result(false, H);
        assert_eq!(s, SiteState::Up { fails: 1 });
        assert!(s.serving());
        assert!(s.uncertain());
        let s = s.on_result(true, H);
        assert_eq!(s, SiteState::Up { fails: 0 });
        assert!(!s.uncertain());
    }

    #[test]
    fn thresholds_are_exact() {
        let mut s = SiteState::Up { fails: 0 };
        for _ in 0..2 {
            s = s.on_result(false, H);
            assert!(s.serving());
        }
        s = s.on_result(false, H);
        assert_eq!(s, SiteState::Down { oks: 0 });
        s = s.on_result(true, H);
        assert_eq!(s, SiteState::Down { oks: 1 });
        assert!(!s.serving() && s.uncertain());
        // A failure in the middle of recovery restarts the count.
        s = s.on_result(false, H);
        assert_eq!(s, SiteState::Down { oks: 0 });
        s = s.on_result(true, H).on_result(true, H);
        assert_eq!(s, SiteState::Up { fails: 0 });
    }

    #[test]
    fn unknown_fails_open_and_resolves_by_streaks() {
        let u = SiteState::Unknown { streak: 0 };
        assert!(u.serving() && u.uncertain());
        let s = u.on_result(true, H).on_result(false, H);
        assert_eq!(s, SiteState::Unknown { streak: -1 });
        let s = s.on_result(false, H).on_result(false, H);
        assert_eq!(s, SiteState::Down { oks: 0 });
        let s = u.on_result(true, H).on_result(true, H);
        assert_eq!(s, SiteState::Up { fails: 0 });
    }

    #[test]
    fn monitor_schedules_probes_on_virtual_time() {
        let t0 = Instant::now();
        let iv = Duration::from_secs(2);
        let mut m = HealthMonitor::new(
            t0,
            &[
                HealthSource::Probed,
                HealthSource::Static(false),
                HealthSource::Probed,
            ],
            H,
            iv,
        );
        assert_eq!(m.poll_probe(t0), Some(0));
        assert_eq!(m.poll_probe(t0), Some(2));
        assert_eq!(m.poll_probe(t0), None);
        // Both in flight: nothing to wake for.
        assert_eq!(m.poll_timeout(), None);
        m.on_probe_result(t0 + Duration::from_millis(5), 0, true);
        assert_eq!(m.poll_timeout(), Some(t0 + iv));
        assert_eq!(m.poll_probe(t0 + Duration::from_secs(1)), None);
        assert_eq!(m.poll_probe(t0 + iv), Some(0));
        // Static sites never change.
        m.on_probe_result(t0, 1, true);
        assert_eq!(m.state(1), Some(SiteState::Down { oks: 0 }));
        assert_eq!(m.view()[1], SiteHealth::DOWN);
    }

    #[test]
    fn monitor_reports_transitions_once() {
        let t0 = Instant::now();
        let mut m = HealthMonitor::new(t0, &[HealthSource::Probed], H, Duration::from_secs(1));
        for k in 0..2 {
            m.on_probe_result(t0 + Duration::from_secs(k), 0, true);
        }
        let e = m.poll_event().unwrap();
        assert_eq!((e.from, e.to), (Verdict::Unknown, Verdict::Up));
        assert_eq!(m.poll_event(), None);
        for k in 2..6 {
            m.on_probe_result(t0 + Duration::from_secs(k), 0, false);
        }
        let e = m.poll_event().unwrap();
        assert_eq!((e.from, e.to), (Verdict::Up, Verdict::Down));
        assert_eq!(e.at, t0 + Duration::from_secs(4));
        assert_eq!(m.poll_event(), None);
    }
}
