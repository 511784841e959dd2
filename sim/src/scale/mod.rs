//! Several access points at scale (issue 10): N AP engines and M member
//! engines (every member registered with every AP through the real
//! BU / cookie / BA exchange), F legacy TCP flows entering at the AP an
//! ECMP router picks, the members' Flow Reports to every AP, then an AP's
//! death with and without a member joining first.
//!
//! Drives the real sans-IO engines through a message pump (`pump`): one
//! fixed one-way latency between any AP and any member, one virtual clock.
//! What [`run`] measures is a [`ScaleReport`]; `benches/multi_ap.rs`
//! prints it at full size (10 APs, 1,000 members, one million flows) and
//! `tests/multi_ap.rs` asserts it at a small one.
//!
//! The run, in virtual time:
//! 1. every member starts registering with every AP at once; done when
//!    every AP has every member active and every member is registered
//!    with every AP: the APs' table digests must agree;
//! 2. the flows open at `rate` per second (SYN, then one `rtt` later a
//!    data segment, both to `ecmp(flow) % N`); done when every AP's
//!    affinity table holds every flow (the owner AP saw it, the others
//!    were told by its member);
//! 3. the flows stay idle for `idle`, then AP 0 dies: the router hashes
//!    every flow over the N - 1 others and each flow sends its next
//!    segment; a flow is lost if it reaches another member (whose kernel
//!    would answer with an RST) or none;
//! 4. a new member registers with every AP (the live ones answer; the
//!    digests must agree again), then AP 1 dies: every flow is hashed over
//!    the N - 2 left and sends its next segment. The second death is AP 1
//!    because AP 0 is dead already; its re-hash lands most flows on APs
//!    that know them only from Flow Reports, now with a changed Maglev
//!    table, which is the case that can lose flows.
//!
//! Wall-clock times are read for the report only; nothing the engines
//! see depends on them.

mod pump;
mod report;
mod traffic;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use homeaddr_proto::affinity::AffinityConfig;
use homeaddr_proto::engine::ap::{AccessPoint, ApConfig, MemberKey, MemberState};
use homeaddr_proto::engine::member::{Member, MemberConfig, RegistrationState};
use homeaddr_proto::wire::MemberId;

use self::pump::{NoTraffic, Pump};
use self::traffic::{Wave, WaveKind};
use crate::{KEY, SimRng, TUNNEL_PORT, home_address};

pub use self::report::{Phase, ScaleReport, rss_kib};
pub use self::traffic::Continuity;

/// Sizes and timings of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleConfig {
    /// Access points (at least 3: two of them die).
    pub aps: usize,
    /// Members registered from the start (one more joins later).
    pub members: u16,
    /// Legacy TCP flows, one client address each.
    pub flows: u32,
    /// Flows opened per second (and next segments per second later).
    pub rate: u64,
    /// A client's round trip: SYN to its first data segment.
    pub rtt: Duration,
    /// One-way latency between any AP and any member.
    pub latency: Duration,
    /// How long the flows are idle before the first AP dies.
    pub idle: Duration,
    /// Seed of the engines' generators.
    pub seed: u64,
}

impl ScaleConfig {
    /// Issue 10's size: 10 APs, 1,000 members, one million flows opened
    /// over 10 s, idle for 15 s (past the 10 s idle timeout of flows
    /// reported while opening, before the 60 s refresh) before AP 0 dies.
    pub fn full() -> Self {
        Self {
            aps: 10,
            members: 1000,
            flows: 1_000_000,
            rate: 100_000,
            rtt: Duration::from_millis(20),
            latency: Duration::from_millis(1),
            idle: Duration::from_secs(15),
            seed: 10,
        }
    }

    /// A test size: 3 APs, 20 members, 5,000 flows.
    pub fn small() -> Self {
        Self {
            aps: 3,
            members: 20,
            flows: 5_000,
            rate: 5_000,
            ..Self::full()
        }
    }

    /// `self` with what the environment sets: `MULTI_AP_APS`,
    /// `MULTI_AP_MEMBERS`, `MULTI_AP_FLOWS`, `MULTI_AP_RATE` (flows per
    /// second), `MULTI_AP_RTT_MS`, `MULTI_AP_LATENCY_US`,
    /// `MULTI_AP_IDLE_MS`, `MULTI_AP_SEED`.
    pub fn with_env(self) -> Result<Self, String> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .replace('_', "")
                    .parse()
                    .map_err(|_| format!("{name}={v} is not a number: give a whole number")),
                Err(_) => Ok(default),
            }
        }
        let ms = |d: Duration| d.as_millis() as u64;
        let c = Self {
            aps: var("MULTI_AP_APS", self.aps)?,
            members: var("MULTI_AP_MEMBERS", self.members)?,
            flows: var("MULTI_AP_FLOWS", self.flows)?,
            rate: var("MULTI_AP_RATE", self.rate)?,
            rtt: Duration::from_millis(var("MULTI_AP_RTT_MS", ms(self.rtt))?),
            latency: Duration::from_micros(var(
                "MULTI_AP_LATENCY_US",
                self.latency.as_micros() as u64,
            )?),
            idle: Duration::from_millis(var("MULTI_AP_IDLE_MS", ms(self.idle))?),
            seed: var("MULTI_AP_SEED", self.seed)?,
        };
        c.check()?;
        Ok(c)
    }

    /// The sizes a run needs.
    pub fn check(&self) -> Result<(), String> {
        if self.aps < 3 {
            return Err(format!("{} APs: give at least 3 (two die)", self.aps));
        }
        if self.members == 0 || self.members == u16::MAX {
            return Err("members: give 1 to 65534".into());
        }
        if self.flows == 0 || self.rate == 0 {
            return Err("flows and rate: give at least 1".into());
        }
        if self.latency.is_zero() {
            return Err("latency: give at least 1 us".into());
        }
        Ok(())
    }
}

fn endpoint(kind: u16, n: usize) -> SocketAddr {
    let addr = Ipv6Addr::new(0xfd00, 0x4841, kind, 0, 0, 0, (n >> 16) as u16, n as u16);
    SocketAddr::new(IpAddr::V6(addr), TUNNEL_PORT)
}

/// The member engine of member index `j` (id `j + 1`), configured with
/// every AP.
fn member(j: usize, aps: &[SocketAddr], rng: &mut SimRng) -> Member {
    let id = MemberId(j as u16 + 1);
    let mut config = MemberConfig::new(
        id,
        home_address(),
        aps[0],
        endpoint(0xb, j + 1),
        KEY.to_vec(),
        rng.seed(),
    );
    config.access_points = aps.iter().map(|&a| a.into()).collect();
    Member::new(config)
}

/// Every live AP has every member in `ids` active, and every member is
/// registered with every live AP.
fn registered(p: &Pump, ids: std::ops::Range<usize>) -> bool {
    let live: Vec<SocketAddr> = p
        .aps
        .iter()
        .filter(|a| a.alive)
        .map(|a| a.endpoint)
        .collect();
    p.aps.iter().filter(|a| a.alive).all(|a| {
        ids.clone().all(|j| {
            a.engine
                .member(MemberId(j as u16 + 1))
                .is_some_and(|m| m.state == MemberState::Active)
        })
    }) && p.members[ids].iter().all(|m| {
        m.engine.access_points().all(|v| {
            !live.contains(&v.endpoint) || matches!(v.state, RegistrationState::Registered { .. })
        })
    })
}

/// The APs that are alive, in order.
fn live_aps(p: &Pump) -> Vec<usize> {
    (0..p.aps.len()).filter(|&i| p.aps[i].alive).collect()
}

/// Run the whole scenario of the [module docs](self).
pub fn run(cfg: ScaleConfig) -> Result<ScaleReport, String> {
    cfg.check()?;
    let mut rng = SimRng::new(cfg.seed);
    let t0 = Instant::now();
    let mut pump = Pump::new(t0, cfg.latency);
    let ap_endpoints: Vec<SocketAddr> = (0..cfg.aps).map(|i| endpoint(0xa, i + 1)).collect();
    for &ep in &ap_endpoints {
        let mut config = ApConfig::new(home_address(), vec![MemberKey::new(1, KEY.to_vec())]);
        config.seed = rng.seed();
        config.affinity = AffinityConfig {
            max_entries: AffinityConfig::default()
                .max_entries
                .max(cfg.flows as usize),
            ..AffinityConfig::default()
        };
        let ap = AccessPoint::new(config).map_err(|e| e.to_string())?;
        pump.add_ap(ap, ep);
    }
    let mut report = ScaleReport::new(cfg);

    // 1. Registration.
    let phase = Phase::begin(&pump);
    for j in 0..cfg.members as usize {
        let m = member(j, &ap_endpoints, &mut rng);
        pump.add_member(m);
    }
    let n = cfg.members as usize;
    let ok = pump.run_until_cond(
        Duration::from_secs(60),
        Duration::from_millis(1),
        &mut NoTraffic,
        |p| registered(p, 0..n),
    );
    if !ok {
        return Err("the members did not register with every AP within 60 s".into());
    }
    report.digest = pump.agreed_digest();
    report.registration_converged = pump.last_digest_change().map(|t| t - t0);
    report.registration = phase.end(&pump);

    // 2. The flows open and are reported.
    report.rss_before_flows = rss_kib();
    let phase = Phase::begin(&pump);
    let start = pump.now + Duration::from_millis(1);
    let hops = live_aps(&pump);
    let mut open = Wave::new(WaveKind::Open, start, cfg.flows, cfg.rate, cfg.rtt, hops);
    pump.run_until(open.last_send(), &mut open);
    let last_send = pump.now;
    let total = cfg.flows as usize;
    let known = pump.run_until_cond(
        Duration::from_secs(10),
        Duration::from_millis(1),
        &mut open,
        |p| p.aps.iter().all(|a| a.engine.affinity().len() >= total) && p.in_flight() == 0,
    );
    report.reports_lag = known.then(|| pump.now - last_send);
    report.flows_phase = phase.end(&pump);
    report.opened_unreached = open.unreached() as u32;
    report.opened_split = open.split;
    report.rss_after_flows = rss_kib();
    report.measure_memory(&pump);

    // 3. Idle, then AP 0 dies.
    let phase = Phase::begin(&pump);
    pump.run_until(pump.now + cfg.idle, &mut NoTraffic);
    report.idle_phase = phase.end(&pump);
    let phase = Phase::begin(&pump);
    pump.kill_ap(0);
    report.death = next_wave(&mut pump, &open, cfg, 1);
    report.death_phase = phase.end(&pump);

    // 4. A member joins, then AP 1 dies.
    let phase = Phase::begin(&pump);
    let joined_at = pump.now;
    let m = member(n, &ap_endpoints, &mut rng);
    pump.add_member(m);
    let ok = pump.run_until_cond(
        Duration::from_secs(10),
        Duration::from_millis(1),
        &mut NoTraffic,
        |p| registered(p, n..n + 1) && p.agreed_digest().is_some(),
    );
    report.join_converged = ok
        .then(|| {
            pump.last_digest_change()
                .map(|t| t.saturating_duration_since(joined_at))
        })
        .flatten();
    report.join_digest = pump.agreed_digest();
    report.join_phase = phase.end(&pump);
    let phase = Phase::begin(&pump);
    pump.kill_ap(1);
    report.death_after_join = next_wave(&mut pump, &open, cfg, 2);
    report.death_after_join_phase = phase.end(&pump);

    report.count(&pump);
    report.virtual_total = pump.now - t0;
    Ok(report)
}

/// Every flow sends its next segment (`round`) to the AP the router picks
/// among the live ones; compared with the opening wave.
fn next_wave(pump: &mut Pump, open: &Wave, cfg: ScaleConfig, round: u32) -> Continuity {
    let start = pump.now + Duration::from_millis(1);
    let hops = live_aps(pump);
    let kind = WaveKind::Next(round);
    let mut wave = Wave::new(kind, start, cfg.flows, cfg.rate, cfg.rtt, hops);
    pump.run_until(wave.last_send(), &mut wave);
    // The last segments reach their members one latency later.
    pump.run_until(pump.now + cfg.latency * 4, &mut wave);
    Continuity::between(open, &wave)
}
