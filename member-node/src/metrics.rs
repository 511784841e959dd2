//! The member's metrics: a collector that reads the engine when scraped,
//! and the route-optimization histograms fed from engine events
//! (docs/OPERATING.md lists every family).

use std::collections::HashSet;
use std::net::Ipv6Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use homeaddr_daemon::driver::Shared;
use homeaddr_daemon::metrics::{
    IoSource, LATENCY_BUCKETS, MemberLabels, Metrics, counters, encode_drops, gauges,
};
use homeaddr_proto::engine::member::{Member, RegistrationState};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Route-optimization timings, fed from engine events.
#[derive(Debug)]
pub struct Timings {
    /// Return routability with a new correspondent: start to the shim's BA.
    rr: Histogram,
    /// After a move: return routability restart to the shim's BA, i.e. how
    /// long a bound shim's flows go through the AP until they are direct again.
    handoff: Histogram,
    /// Clients bound when the member last moved, whose re-binding is a handoff.
    moving: Mutex<HashSet<Ipv6Addr>>,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            rr: Histogram::new(LATENCY_BUCKETS),
            handoff: Histogram::new(LATENCY_BUCKETS),
            moving: Mutex::default(),
        }
    }
}

impl Timings {
    /// The member moved: the next binding of each of `bound` is a handoff.
    pub fn moved(&self, bound: impl IntoIterator<Item = Ipv6Addr>) {
        *self.moving.lock().unwrap_or_else(|p| p.into_inner()) = bound.into_iter().collect();
    }

    /// `client`'s shim acknowledged a binding `elapsed` after the tests began.
    pub fn route_optimized(&self, client: Ipv6Addr, elapsed: Duration) {
        let handoff = self
            .moving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&client);
        let h = if handoff { &self.handoff } else { &self.rr };
        h.observe(elapsed.as_secs_f64());
    }

    /// The registry ends each help text with a period of its own.
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "homeaddr_member_return_routability_seconds",
            "Return routability with a new shim client: first test sent to the shim's binding acknowledgement",
            self.rr.clone(),
        );
        registry.register(
            "homeaddr_member_handoff_seconds",
            "After a move: from re-testing a bound shim to its acknowledgement of the new care-of address",
            self.handoff.clone(),
        );
    }
}

/// The member's registry: the histograms of `timings`, the engine's
/// counters and gauges, then `io`'s.
pub fn metrics(engine: Shared<Member>, timings: &Timings, io: IoSource) -> Metrics {
    let mut registry = Registry::default();
    timings.register(&mut registry);
    Metrics::with_engine(registry, engine, encode, io)
}

#[derive(Debug, EncodeLabelSet)]
struct PathLabels {
    member: u16,
    path: &'static str,
}

#[derive(Debug, EncodeLabelSet)]
struct LimitLabels {
    member: u16,
    limit: &'static str,
}

#[derive(Debug, EncodeLabelSet)]
struct ApLabels {
    member: u16,
    ap: String,
}

#[derive(Debug, EncodeLabelSet)]
struct ResultLabels {
    member: u16,
    result: &'static str,
}

/// The one sample of a family labelled with the member's id.
fn one<V>(member: u16, v: V) -> [(MemberLabels, V); 1] {
    [(MemberLabels { member }, v)]
}

/// The member's gauges and counters (label `member`: its id) and drops.
pub fn encode(m: &Member, now: Instant, e: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    let c = m.counters();
    let member = m.config().id.0;
    let (registered, left) = match m.state() {
        RegistrationState::Registered { expires } => {
            (1, expires.saturating_duration_since(now).as_secs_f64())
        }
        _ => (0, 0.0),
    };
    let bound = m
        .correspondents()
        .filter(|c| c.binding.is_some_and(|b| b.expires > now))
        .count();
    gauges(
        e,
        "homeaddr_member_registered",
        "1 while registered with at least one access point.",
        one(member, registered),
    )?;
    gauges(
        e,
        "homeaddr_member_ap_registered",
        "1 while registered with this access point.",
        m.access_points().map(|v| {
            let ap = v.endpoint.to_string();
            let up = i64::from(matches!(v.state, RegistrationState::Registered { .. }));
            (ApLabels { member, ap }, up)
        }),
    )?;
    gauges(
        e,
        "homeaddr_member_flows",
        "Legacy flows served (tracked and reported to the access points).",
        one(member, m.flows() as i64),
    )?;
    gauges(
        e,
        "homeaddr_member_lifetime_seconds",
        "Registration lifetime left.",
        one(member, left),
    )?;
    gauges(
        e,
        "homeaddr_member_draining",
        "1 while the member drains.",
        one(member, i64::from(m.is_draining())),
    )?;
    gauges(
        e,
        "homeaddr_member_bindings",
        "Shim clients with a binding in force (route optimized).",
        one(member, bound as i64),
    )?;
    counters(
        e,
        "homeaddr_member_packets",
        "Data packets by path: in/out through the AP or direct with shims, and direct server return.",
        [
            ("via_ap_in", c.via_ap_in),
            ("via_ap_out", c.via_ap_out),
            ("direct_in", c.direct_in),
            ("direct_out", c.direct_out),
            ("direct_return", c.direct_return),
        ]
        .map(|(path, n)| (PathLabels { member, path }, n)),
    )?;
    counters(
        e,
        "homeaddr_member_registration_updates",
        "Binding updates sent to the access point.",
        one(member, c.registration_bus),
    )?;
    counters(
        e,
        "homeaddr_member_retransmissions",
        "Control messages sent again after a timeout.",
        one(member, c.retransmissions),
    )?;
    counters(
        e,
        "homeaddr_member_return_routability",
        "Return routability runs with shims, by result.",
        [("success", c.rr_successes), ("failure", c.rr_failures)]
            .map(|(result, n)| (ResultLabels { member, result }, n)),
    )?;
    counters(
        e,
        "homeaddr_member_auth_failures_reported",
        "Unsigned authentication-failure BAs for our outstanding BU (never believed: counted only).",
        one(member, c.auth_failures_reported),
    )?;
    counters(
        e,
        "homeaddr_member_flow_reports",
        "Flow Report messages sent to the access points.",
        one(member, c.flow_reports),
    )?;
    counters(
        e,
        "homeaddr_member_flows_reported",
        "Flows reported in Flow Reports (each flow once per access point and report).",
        one(member, c.flows_reported),
    )?;
    counters(
        e,
        "homeaddr_member_ap_hints",
        "Zero-nonce hints of a restarted access point acted on (a registration at once).",
        one(member, c.ap_hints),
    )?;
    counters(
        e,
        "homeaddr_member_nat_keepalives",
        "NAT keepalives (empty sealed frames) sent to bound shims while behind a NAT.",
        one(member, c.nat_keepalives),
    )?;
    counters(
        e,
        "homeaddr_member_keepalives",
        "NAT keepalives (empty sealed frames) received from bound shims.",
        one(member, c.keepalives),
    )?;
    counters(
        e,
        "homeaddr_member_punches",
        "Punch datagrams from shims (dropped; they open the shim's NAT).",
        one(member, c.punches),
    )?;
    counters(
        e,
        "homeaddr_member_limit_hits",
        "Times a limit was hit, by limit (correspondents: the shim-client table was full; flows: the flow table was full).",
        c.limit_hits
            .iter()
            .map(|(limit, n)| (LimitLabels { member, limit }, n)),
    )?;
    encode_drops(e, "homeaddr_member_dropped_packets", &c.drops)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use homeaddr_daemon::metrics::{EngineCollector, encode as text, engine_text};
    use homeaddr_proto::engine::member::MemberConfig;
    use homeaddr_proto::wire::MemberId;

    use super::*;

    fn member_3() -> Member {
        let config = MemberConfig::new(
            MemberId(3),
            "2001:db8::80".parse().unwrap(),
            "[2001:db8::1]:4790".parse().unwrap(),
            "[2001:db8:1::7]:4790".parse().unwrap(),
            b"a member key".to_vec(),
            [1; 32],
        );
        let mut config = config;
        config
            .access_points
            .push("[2001:db8::2]:4790".parse().unwrap());
        Member::new(config)
    }

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }

    #[test]
    fn an_unregistered_member_shows_its_id_and_zeroed_counters() {
        let t = engine_text(member_3(), encode);
        for line in [
            "# HELP homeaddr_member_registered 1 while registered with at least one access point.",
            "# TYPE homeaddr_member_registered gauge",
            "homeaddr_member_registered{member=\"3\"} 0",
            "homeaddr_member_draining{member=\"3\"} 0",
            "homeaddr_member_bindings{member=\"3\"} 0",
            "# TYPE homeaddr_member_packets counter",
            "homeaddr_member_packets_total{member=\"3\",path=\"via_ap_in\"} 0",
            "homeaddr_member_packets_total{member=\"3\",path=\"direct_return\"} 0",
            "homeaddr_member_registration_updates_total{member=\"3\"} 0",
            "homeaddr_member_retransmissions_total{member=\"3\"} 0",
            "homeaddr_member_return_routability_total{member=\"3\",result=\"success\"} 0",
            "homeaddr_member_return_routability_total{member=\"3\",result=\"failure\"} 0",
            "homeaddr_member_dropped_packets_total{reason=\"malformed\"} 0",
            "homeaddr_member_dropped_packets_total{reason=\"unauthenticated\"} 0",
            "homeaddr_member_auth_failures_reported_total{member=\"3\"} 0",
            "homeaddr_member_limit_hits_total{member=\"3\",limit=\"correspondents\"} 0",
            "homeaddr_member_limit_hits_total{member=\"3\",limit=\"flows\"} 0",
            "homeaddr_member_ap_registered{member=\"3\",ap=\"[2001:db8::1]:4790\"} 0",
            "homeaddr_member_ap_registered{member=\"3\",ap=\"[2001:db8::2]:4790\"} 0",
            "homeaddr_member_flows{member=\"3\"} 0",
            "homeaddr_member_flow_reports_total{member=\"3\"} 0",
            "homeaddr_member_flows_reported_total{member=\"3\"} 0",
            "homeaddr_member_ap_hints_total{member=\"3\"} 0",
            "homeaddr_member_nat_keepalives_total{member=\"3\"} 0",
            "homeaddr_member_keepalives_total{member=\"3\"} 0",
            "homeaddr_member_punches_total{member=\"3\"} 0",
        ] {
            has(&t, line);
        }
        has(&t, "homeaddr_member_lifetime_seconds{member=\"3\"} 0.0");
    }

    #[test]
    fn bindings_after_a_move_count_as_handoffs_once() {
        let engine = Arc::new(tokio::sync::Mutex::new(member_3()));
        let timings = Timings::default();
        let mut registry = Registry::default();
        timings.register(&mut registry);
        registry.register_collector(Box::new(EngineCollector::new(engine, encode)));
        let (a, b): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8:c::1".parse().unwrap(),
            "2001:db8:c::2".parse().unwrap(),
        );
        timings.route_optimized(a, Duration::from_millis(3));
        timings.moved([a]);
        timings.route_optimized(b, Duration::from_millis(30));
        timings.route_optimized(a, Duration::from_millis(200));
        // A second binding of `a` is a new run, not another handoff.
        timings.route_optimized(a, Duration::from_millis(4));
        let t = text(&registry);
        for line in [
            "# HELP homeaddr_member_return_routability_seconds Return routability with a new shim client: first test sent to the shim's binding acknowledgement.",
            "# TYPE homeaddr_member_return_routability_seconds histogram",
            "homeaddr_member_return_routability_seconds_bucket{le=\"0.005\"} 2",
            "homeaddr_member_return_routability_seconds_bucket{le=\"0.05\"} 3",
            "homeaddr_member_return_routability_seconds_count 3",
            "# TYPE homeaddr_member_handoff_seconds histogram",
            "homeaddr_member_handoff_seconds_bucket{le=\"0.1\"} 0",
            "homeaddr_member_handoff_seconds_bucket{le=\"0.25\"} 1",
            "homeaddr_member_handoff_seconds_bucket{le=\"+Inf\"} 1",
            "homeaddr_member_handoff_seconds_sum 0.2",
            "homeaddr_member_handoff_seconds_count 1",
        ] {
            has(&t, line);
        }
    }
}
