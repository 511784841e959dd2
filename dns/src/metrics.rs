//! Counters for the query path and gauges for site health, rendered in the
//! Prometheus text exposition format.
//!
//! Layer: shared between core outcomes and the shell. Contract: recording
//! is lock-free (relaxed atomics, sharded per thread so query threads do not
//! fight over one cache line); rendering sums the shards.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::answer::{Outcome, Transport};
use crate::health::{SiteState, Verdict};
use crate::wire::WireError;

const SHARDS: usize = 16;
const RCODES: usize = 17;

/// The `reason` label of `homeaddr_dns_malformed_queries_total`, one per
/// [`WireError`].
pub const MALFORMED_REASONS: [&str; 12] = [
    "truncated",
    "bad_label",
    "name_too_long",
    "bad_pointer",
    "question_count",
    "bad_opt",
    "bad_option",
    "ecs_family",
    "ecs_prefix",
    "ecs_address_length",
    "ecs_stray_bits",
    "ecs_repeated",
];

/// The `reason` label a malformed query with error `e` is counted under.
pub fn malformed_reason(e: WireError) -> &'static str {
    MALFORMED_REASONS[reason_index(e)]
}

/// Index of `e` in [`MALFORMED_REASONS`].
fn reason_index(e: WireError) -> usize {
    match e {
        WireError::Truncated => 0,
        WireError::BadLabel => 1,
        WireError::NameTooLong => 2,
        WireError::BadPointer => 3,
        WireError::QuestionCount => 4,
        WireError::BadOpt => 5,
        WireError::BadOption => 6,
        WireError::EcsFamily(_) => 7,
        WireError::EcsPrefix => 8,
        WireError::EcsAddressLength => 9,
        WireError::EcsStrayBits => 10,
        WireError::EcsRepeated => 11,
    }
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    udp: AtomicU64,
    tcp: AtomicU64,
    dropped: AtomicU64,
    ecs: AtomicU64,
    truncated: AtomicU64,
    rcode: [AtomicU64; RCODES],
    /// Malformed queries per [`MALFORMED_REASONS`] entry.
    malformed: [AtomicU64; MALFORMED_REASONS.len()],
    /// Geo answers per site (grown to the site count at creation).
    site_answers: Vec<AtomicU64>,
}

/// Process-wide metrics.
#[derive(Debug)]
pub struct Metrics {
    shards: Vec<Shard>,
    site_names: Vec<String>,
    /// Per site: 0 down, 1 up, 2 unknown.
    site_state: Vec<AtomicU64>,
    site_uncertain: Vec<AtomicU64>,
    site_transitions: Vec<AtomicU64>,
    probes_ok: Vec<AtomicU64>,
    probes_failed: Vec<AtomicU64>,
}

fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

fn zeros(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Metrics {
    /// Metrics for a zone with these site names.
    pub fn new(site_names: Vec<String>) -> Self {
        let n = site_names.len();
        Self {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    site_answers: zeros(n),
                    ..Shard::default()
                })
                .collect(),
            site_names,
            site_state: (0..n).map(|_| AtomicU64::new(2)).collect(),
            site_uncertain: zeros(n),
            site_transitions: zeros(n),
            probes_ok: zeros(n),
            probes_failed: zeros(n),
        }
    }

    /// Records one handled query.
    pub fn record(&self, transport: Transport, outcome: Option<&Outcome>) {
        let s = &self.shards[shard_index()];
        match transport {
            Transport::Udp => s.udp.fetch_add(1, Ordering::Relaxed),
            Transport::Tcp => s.tcp.fetch_add(1, Ordering::Relaxed),
        };
        let Some(o) = outcome else {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        s.rcode[usize::from(o.rcode).min(RCODES - 1)].fetch_add(1, Ordering::Relaxed);
        if o.ecs {
            s.ecs.fetch_add(1, Ordering::Relaxed);
        }
        if o.truncated {
            s.truncated.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(e) = o.malformed {
            s.malformed[reason_index(e)].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(site) = o.site
            && let Some(c) = s.site_answers.get(site)
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a site's health after a probe.
    pub fn record_health(&self, site: usize, state: SiteState, probe_ok: bool, transitioned: bool) {
        let v = match state.verdict() {
            Verdict::Down => 0,
            Verdict::Up => 1,
            Verdict::Unknown => 2,
        };
        if let Some(g) = self.site_state.get(site) {
            g.store(v, Ordering::Relaxed);
        }
        if let Some(g) = self.site_uncertain.get(site) {
            g.store(u64::from(state.uncertain()), Ordering::Relaxed);
        }
        let probes = if probe_ok {
            &self.probes_ok
        } else {
            &self.probes_failed
        };
        if let Some(c) = probes.get(site) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if transitioned && let Some(c) = self.site_transitions.get(site) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets a statically configured site's gauge.
    pub fn set_static(&self, site: usize, up: bool) {
        if let Some(g) = self.site_state.get(site) {
            g.store(u64::from(up), Ordering::Relaxed);
        }
    }

    fn sum(&self, f: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    }

    /// Total queries seen (all transports).
    pub fn queries(&self) -> u64 {
        self.sum(|s| &s.udp) + self.sum(|s| &s.tcp)
    }

    /// Malformed queries seen with this `reason` label (0 for an unknown
    /// label).
    pub fn malformed(&self, reason: &str) -> u64 {
        MALFORMED_REASONS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.sum(|s| &s.malformed[i]))
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE homeaddr_dns_queries_total counter");
        let _ = writeln!(
            out,
            "homeaddr_dns_queries_total{{transport=\"udp\"}} {}",
            self.sum(|s| &s.udp)
        );
        let _ = writeln!(
            out,
            "homeaddr_dns_queries_total{{transport=\"tcp\"}} {}",
            self.sum(|s| &s.tcp)
        );
        let _ = writeln!(out, "# TYPE homeaddr_dns_dropped_total counter");
        let _ = writeln!(
            out,
            "homeaddr_dns_dropped_total {}",
            self.sum(|s| &s.dropped)
        );
        let _ = writeln!(out, "# TYPE homeaddr_dns_ecs_queries_total counter");
        let _ = writeln!(
            out,
            "homeaddr_dns_ecs_queries_total {}",
            self.sum(|s| &s.ecs)
        );
        let _ = writeln!(out, "# TYPE homeaddr_dns_truncated_total counter");
        let _ = writeln!(
            out,
            "homeaddr_dns_truncated_total {}",
            self.sum(|s| &s.truncated)
        );
        let _ = writeln!(out, "# TYPE homeaddr_dns_responses_total counter");
        for rc in 0..RCODES {
            let v = self.sum(|s| &s.rcode[rc]);
            if v > 0 {
                let _ = writeln!(
                    out,
                    "homeaddr_dns_responses_total{{rcode=\"{}\"}} {v}",
                    rcode_name(rc as u16)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP homeaddr_dns_malformed_queries_total queries answered FORMERR because they did not parse, by reason"
        );
        let _ = writeln!(out, "# TYPE homeaddr_dns_malformed_queries_total counter");
        for (i, reason) in MALFORMED_REASONS.iter().enumerate() {
            let v = self.sum(|s| &s.malformed[i]);
            let _ = writeln!(
                out,
                "homeaddr_dns_malformed_queries_total{{reason=\"{reason}\"}} {v}"
            );
        }
        let _ = writeln!(out, "# TYPE homeaddr_dns_site_answers_total counter");
        for (i, name) in self.site_names.iter().enumerate() {
            let v: u64 = self
                .shards
                .iter()
                .map(|s| s.site_answers[i].load(Ordering::Relaxed))
                .sum();
            let _ = writeln!(
                out,
                "homeaddr_dns_site_answers_total{{site=\"{name}\"}} {v}"
            );
        }
        let _ = writeln!(out, "# HELP homeaddr_dns_site_up 0 down, 1 up, 2 unknown");
        let _ = writeln!(out, "# TYPE homeaddr_dns_site_up gauge");
        let gauges = [
            ("homeaddr_dns_site_up", &self.site_state),
            ("homeaddr_dns_site_uncertain", &self.site_uncertain),
            (
                "homeaddr_dns_site_transitions_total",
                &self.site_transitions,
            ),
            ("homeaddr_dns_probes_ok_total", &self.probes_ok),
            ("homeaddr_dns_probes_failed_total", &self.probes_failed),
        ];
        for (metric, values) in gauges {
            for (i, name) in self.site_names.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{metric}{{site=\"{name}\"}} {}",
                    values[i].load(Ordering::Relaxed)
                );
            }
        }
        out
    }
}

/// Mnemonic of an RCODE.
pub fn rcode_name(rcode: u16) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        16 => "BADVERS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_health() {
        let m = Metrics::new(vec!["ams".into(), "nyc".into()]);
        let o = Outcome {
            rcode: 0,
            site: Some(1),
            truncated: true,
            ecs: true,
            malformed: None,
        };
        m.record(Transport::Udp, Some(&o));
        let formerr = Outcome {
            rcode: 1,
            site: None,
            truncated: false,
            ecs: false,
            malformed: Some(WireError::EcsFamily(3)),
        };
        m.record(Transport::Udp, Some(&formerr));
        m.record(Transport::Tcp, None);
        m.record_health(0, SiteState::Down { oks: 0 }, false, true);
        let text = m.render();
        assert!(text.contains("homeaddr_dns_queries_total{transport=\"udp\"} 2"));
        assert!(text.contains("homeaddr_dns_malformed_queries_total{reason=\"ecs_family\"} 1"));
        assert!(text.contains("homeaddr_dns_malformed_queries_total{reason=\"bad_option\"} 0"));
        assert_eq!(m.malformed("ecs_family"), 1);
        assert!(text.contains("homeaddr_dns_dropped_total 1"));
        assert!(text.contains("homeaddr_dns_responses_total{rcode=\"NOERROR\"} 1"));
        assert!(text.contains("homeaddr_dns_site_answers_total{site=\"nyc\"} 1"));
        assert!(text.contains("homeaddr_dns_site_up{site=\"ams\"} 0"));
        assert!(text.contains("homeaddr_dns_site_transitions_total{site=\"ams\"} 1"));
        assert_eq!(m.queries(), 3);
    }
}
