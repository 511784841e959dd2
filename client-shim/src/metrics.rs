//! The shim's metrics: a collector that reads the engine when scraped
//! (docs/OPERATING.md lists every family).

use std::time::Instant;

use homeaddr_daemon::driver::Shared;
use homeaddr_daemon::metrics::{
    IoSource, MemberLabels, Metrics, PathLabels, counter, counters, encode_drops, gauge, gauges,
};
use homeaddr_proto::engine::shim::Shim;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::registry::Registry;

/// The shim's registry: its engine's counters and gauges, then `io`'s.
pub fn metrics(engine: Shared<Shim>, io: IoSource) -> Metrics {
    Metrics::with_engine(Registry::default(), engine, encode, io)
}

#[derive(Debug, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The shim's counters and gauges, and drops.
pub fn encode(s: &Shim, now: Instant, e: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    let c = s.counters();
    counters(
        e,
        "homeaddr_shim_packets",
        "Data packets by path: through the AP or direct to a member.",
        [
            ("via_ap_out", c.via_ap_out),
            ("via_ap_in", c.via_ap_in),
            ("direct_out", c.direct_out),
            ("direct_in", c.direct_in),
        ]
        .map(|(path, n)| (PathLabels { path }, n)),
    )?;
    counters(
        e,
        "homeaddr_shim_binding_updates",
        "Binding updates from members, by result.",
        [("accepted", c.bus_accepted), ("rejected", c.bus_rejected)]
            .map(|(result, n)| (ResultLabels { result }, n)),
    )?;
    for (name, help, n) in [
        (
            "homeaddr_shim_tests_answered",
            "Home and care-of tests answered.",
            c.tests_answered,
        ),
        (
            "homeaddr_shim_binding_errors",
            "Binding errors sent (none since wire v2).",
            c.binding_errors,
        ),
        (
            "homeaddr_shim_hellos_sent",
            "Shim Hellos sent to the AP (first, with cookie, retransmitted).",
            c.hellos_sent,
        ),
        (
            "homeaddr_shim_ap_sessions",
            "Sessions established with the AP.",
            c.ap_sessions,
        ),
        (
            "homeaddr_shim_keepalives",
            "Sealed keepalives sent to the AP.",
            c.keepalives,
        ),
        (
            "homeaddr_shim_resets",
            "TCP resets sent to local applications (member revoked).",
            c.resets,
        ),
        (
            "homeaddr_shim_roams",
            "Bindings whose care-of endpoint moved to a newer sealed frame's source.",
            c.roams,
        ),
        (
            "homeaddr_shim_pool_collisions",
            "Welcomes without a Client Address (a new instance was drawn).",
            c.pool_collisions,
        ),
        (
            "homeaddr_shim_moves",
            "Moves of the shim's own endpoint (the host's address changed).",
            c.moves,
        ),
        (
            "homeaddr_shim_fallbacks",
            "Bindings dropped because their member answered through the AP.",
            c.fallbacks,
        ),
    ] {
        counter(e, name, help, n)?;
    }
    gauges(
        e,
        "homeaddr_shim_binding_lifetime_seconds",
        "Lifetime left of each member binding.",
        s.bindings().map(|(id, b)| {
            let left = b.expires.saturating_duration_since(now).as_secs_f64();
            (MemberLabels { member: id.0 }, left)
        }),
    )?;
    gauge(
        e,
        "homeaddr_shim_ap_session_up",
        "1 while a session with the AP is up.",
        i64::from(s.has_ap_session()),
    )?;
    gauge(
        e,
        "homeaddr_shim_behind_nat",
        "1 while the AP sees another endpoint than the local one.",
        i64::from(s.behind_nat()),
    )?;
    gauge(
        e,
        "homeaddr_shim_flows",
        "Flows in the flow table.",
        s.flows().count() as i64,
    )?;
    encode_drops(e, "homeaddr_shim_dropped_packets", &c.drops)
}

#[cfg(test)]
mod tests {
    use homeaddr_daemon::metrics::engine_text;
    use homeaddr_proto::engine::shim::ShimConfig;

    use super::*;

    #[test]
    fn a_new_shim_shows_zeroed_counters_and_no_bindings() {
        let config = ShimConfig::new(
            "[2001:db8::1]:4790".parse().unwrap(),
            "2001:db8::80".parse().unwrap(),
            "[2001:db8:c::1]:40000".parse().unwrap(),
            [5; 32],
        );
        let text = engine_text(Shim::new(Instant::now(), config), encode);
        for line in [
            "# TYPE homeaddr_shim_packets counter",
            "homeaddr_shim_packets_total{path=\"via_ap_out\"} 0",
            "homeaddr_shim_packets_total{path=\"direct_in\"} 0",
            "homeaddr_shim_binding_updates_total{result=\"accepted\"} 0",
            "homeaddr_shim_binding_updates_total{result=\"rejected\"} 0",
            "homeaddr_shim_tests_answered_total 0",
            "homeaddr_shim_binding_errors_total 0",
            "homeaddr_shim_resets_total 0",
            "homeaddr_shim_hellos_sent_total 1",
            "homeaddr_shim_ap_sessions_total 0",
            "homeaddr_shim_keepalives_total 0",
            "homeaddr_shim_ap_session_up 0",
            "homeaddr_shim_behind_nat 0",
            "homeaddr_shim_roams_total 0",
            "homeaddr_shim_moves_total 0",
            "homeaddr_shim_fallbacks_total 0",
            "homeaddr_shim_dropped_packets_total{reason=\"no_session\"} 0",
            "# TYPE homeaddr_shim_binding_lifetime_seconds gauge",
            "homeaddr_shim_flows 0",
            "homeaddr_shim_dropped_packets_total{reason=\"malformed\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(
            !text.contains("homeaddr_shim_binding_lifetime_seconds{"),
            "{text}"
        );
    }
}
