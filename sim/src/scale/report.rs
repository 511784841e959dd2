//! What a scale run measured, and the table the bench prints.

use std::fmt;
use std::time::{Duration, Instant};

use homeaddr_proto::engine::DropReason;

use super::ScaleConfig;
use super::pump::Pump;
use super::traffic::Continuity;

/// Virtual and wall-clock time of one phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phase {
    /// Virtual time the phase took.
    pub virtual_time: Duration,
    /// Real time the phase took.
    pub wall: Duration,
}

/// The start of a phase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PhaseStart {
    at: Instant,
    wall: Instant,
}

impl Phase {
    pub(crate) fn begin(pump: &Pump) -> PhaseStart {
        PhaseStart {
            at: pump.now,
            wall: Instant::now(),
        }
    }
}

impl PhaseStart {
    pub(crate) fn end(self, pump: &Pump) -> Phase {
        Phase {
            virtual_time: pump.now - self.at,
            wall: self.wall.elapsed(),
        }
    }
}

/// Everything a run measured (see [`super::run`]).
#[derive(Debug, Clone)]
pub struct ScaleReport {
    /// The sizes and timings.
    pub config: ScaleConfig,
    /// Every member registering with every AP.
    pub registration: Phase,
    /// Virtual time from the start until the last AP's digest changed.
    pub registration_converged: Option<Duration>,
    /// The digest all APs agree on after the registrations, if they do.
    pub digest: Option<u64>,
    /// Opening the flows until every AP knows every flow.
    pub flows_phase: Phase,
    /// From the last packet of the opening wave until every AP's affinity
    /// table held every flow; `None` if that never happened.
    pub reports_lag: Option<Duration>,
    /// Flows of the opening wave that reached no member.
    pub opened_unreached: u32,
    /// Flows whose SYN and data segment reached different members.
    pub opened_split: u32,
    /// Fewest and most flows in an AP's affinity table after the reports.
    pub ap_entries: (usize, usize),
    /// Largest `AffinityTable::memory_bytes` of an AP, per flow it holds.
    pub ap_bytes_per_flow: f64,
    /// The members' flow tables (`Member::flow_memory_bytes`), per flow.
    pub member_bytes_per_flow: f64,
    /// Process resident size (KiB) before and after the flows opened.
    pub rss_before_flows: Option<u64>,
    /// See `rss_before_flows`.
    pub rss_after_flows: Option<u64>,
    /// The flows idle before AP 0 dies.
    pub idle_phase: Phase,
    /// AP 0 dies (no member joined).
    pub death: Continuity,
    /// Its wave.
    pub death_phase: Phase,
    /// A member joins: virtual time until every live AP's digest agreed.
    pub join_converged: Option<Duration>,
    /// The digest after the join, if the live APs agree.
    pub join_digest: Option<u64>,
    /// The join.
    pub join_phase: Phase,
    /// AP 1 dies after the join.
    pub death_after_join: Continuity,
    /// Its wave.
    pub death_after_join_phase: Phase,
    /// Flow options the APs accepted, summed.
    pub flows_reported: u64,
    /// Reported flows re-pinned from another member, summed.
    pub flows_moved: u64,
    /// Packets the APs held back while settling, summed.
    pub settling_drops: u64,
    /// Packets the APs dropped for want of a member, summed.
    pub no_member_drops: u64,
    /// Datagrams between engines.
    pub datagrams: u64,
    /// Virtual time of the whole run.
    pub virtual_total: Duration,
}

impl ScaleReport {
    pub(crate) fn new(config: ScaleConfig) -> Self {
        Self {
            config,
            registration: Phase::default(),
            registration_converged: None,
            digest: None,
            flows_phase: Phase::default(),
            reports_lag: None,
            opened_unreached: 0,
            opened_split: 0,
            ap_entries: (0, 0),
            ap_bytes_per_flow: 0.0,
            member_bytes_per_flow: 0.0,
            rss_before_flows: None,
            rss_after_flows: None,
            idle_phase: Phase::default(),
            death: Continuity::default(),
            death_phase: Phase::default(),
            join_converged: None,
            join_digest: None,
            join_phase: Phase::default(),
            death_after_join: Continuity::default(),
            death_after_join_phase: Phase::default(),
            flows_reported: 0,
            flows_moved: 0,
            settling_drops: 0,
            no_member_drops: 0,
            datagrams: 0,
            virtual_total: Duration::ZERO,
        }
    }

    pub(crate) fn measure_memory(&mut self, pump: &Pump) {
        let lens = pump.aps.iter().map(|a| a.engine.affinity().len());
        self.ap_entries = (lens.clone().min().unwrap_or(0), lens.max().unwrap_or(0));
        self.ap_bytes_per_flow = pump
            .aps
            .iter()
            .map(|a| {
                let t = a.engine.affinity();
                t.memory_bytes() as f64 / t.len().max(1) as f64
            })
            .fold(0.0, f64::max);
        let (bytes, flows) = pump.members.iter().fold((0, 0), |(b, f), m| {
            (b + m.engine.flow_memory_bytes(), f + m.engine.flows())
        });
        self.member_bytes_per_flow = bytes as f64 / flows.max(1) as f64;
    }

    pub(crate) fn count(&mut self, pump: &Pump) {
        for a in &pump.aps {
            let c = a.engine.counters();
            self.flows_reported += c.flows_reported;
            self.flows_moved += c.flows_moved;
            self.settling_drops += c.drops.get(DropReason::Settling);
            self.no_member_drops += c.drops.get(DropReason::NoMember);
        }
        self.datagrams = pump.stats.datagrams;
    }

    /// The digests agreed after the registrations and after the join, and
    /// every AP knew every flow.
    pub fn tables_agree(&self) -> bool {
        self.digest.is_some()
            && self.join_digest.is_some()
            && self.reports_lag.is_some()
            && self.ap_entries.0 == self.config.flows as usize
    }

    /// Process resident size growth per flow while the flows opened (every
    /// AP's entry and the member's), if `/proc` tells.
    pub fn rss_bytes_per_flow(&self) -> Option<f64> {
        let (a, b) = (self.rss_before_flows?, self.rss_after_flows?);
        Some(b.saturating_sub(a) as f64 * 1024.0 / f64::from(self.config.flows))
    }
}

/// This process's resident set size in KiB (`VmRSS` of /proc/self/status).
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        ms(d)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn phase(p: Phase) -> String {
    format!("{} virtual, {} wall", secs(p.virtual_time), secs(p.wall))
}

fn opt(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".into(), ms)
}

fn agreed(d: Option<u64>, live: usize) -> String {
    d.map_or_else(
        || "no: the APs DISAGREE".into(),
        |d| format!("yes, on the {live} live APs: {d:016x}"),
    )
}

fn lost(c: &Continuity, flows: u32) -> String {
    format!(
        "{} ({} changed member, {} unreached; {} of {} flows moved AP)",
        c.lost(),
        c.changed_member,
        c.unreached,
        c.moved_ap,
        flows
    )
}

impl fmt::Display for ScaleReport {
    /// A two-column Markdown table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let rss = match (self.rss_before_flows, self.rss_after_flows) {
            (Some(a), Some(b)) => format!(
                "{} -> {} MiB ({:.0} B per flow, all {} APs and the member)",
                a / 1024,
                b / 1024,
                self.rss_bytes_per_flow().unwrap_or(0.0),
                c.aps
            ),
            _ => "unknown".into(),
        };
        let rows: Vec<(&str, String)> = vec![
            ("access points", c.aps.to_string()),
            ("members (+1 joins)", c.members.to_string()),
            ("flows", c.flows.to_string()),
            (
                "timing",
                format!(
                    "{} flows/s, rtt {}, AP-member {} one way, idle {} before AP 0 dies",
                    c.rate,
                    ms(c.rtt),
                    ms(c.latency),
                    secs(c.idle)
                ),
            ),
            ("registration", phase(self.registration)),
            ("registration converged", opt(self.registration_converged)),
            ("table digest identical", agreed(self.digest, c.aps)),
            ("flows open and reported", phase(self.flows_phase)),
            (
                "last packet -> every AP knows every flow",
                opt(self.reports_lag),
            ),
            (
                "opening wave",
                format!(
                    "{} unreached, {} split across members",
                    self.opened_unreached, self.opened_split
                ),
            ),
            (
                "AP affinity entries",
                format!("{} .. {}", self.ap_entries.0, self.ap_entries.1),
            ),
            (
                "AP bytes per flow",
                format!("{:.1}", self.ap_bytes_per_flow),
            ),
            (
                "member bytes per flow",
                format!("{:.1}", self.member_bytes_per_flow),
            ),
            ("process RSS", rss),
            ("flows idle", phase(self.idle_phase)),
            ("AP 0 dies: flows lost", lost(&self.death, c.flows)),
            ("AP 0 dies", phase(self.death_phase)),
            (
                "member joins: digests agree after",
                opt(self.join_converged),
            ),
            (
                "table digest identical after join",
                agreed(self.join_digest, c.aps - 1),
            ),
            ("member joins", phase(self.join_phase)),
            (
                "then AP 1 dies: flows lost",
                lost(&self.death_after_join, c.flows),
            ),
            ("then AP 1 dies", phase(self.death_after_join_phase)),
            (
                "AP counters (sum)",
                format!(
                    "{} flows reported, {} moved, {} settling drops, {} no-member drops",
                    self.flows_reported,
                    self.flows_moved,
                    self.settling_drops,
                    self.no_member_drops
                ),
            ),
            (
                "whole run",
                format!(
                    "{} virtual, {} datagrams",
                    secs(self.virtual_total),
                    self.datagrams
                ),
            ),
        ];
        let kw = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let vw = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
        writeln!(f, "| {:kw$} | {:vw$} |", "measure", "value")?;
        writeln!(f, "|{}|{}|", "-".repeat(kw + 2), "-".repeat(vw + 2))?;
        for (k, v) in rows {
            writeln!(f, "| {k:kw$} | {v:vw$} |")?;
        }
        Ok(())
    }
}
