//! The access point's metrics: a collector that reads the engine when
//! scraped (docs/OPERATING.md lists every family).

use std::time::Instant;

use homeaddr_daemon::driver::Shared;
use homeaddr_daemon::metrics::{
    EngineCollector, IoSource, Metrics, counter, counters, encode_drops, gauge, gauges,
};
use homeaddr_proto::engine::ap::{AccessPoint, MemberEntry, MemberState};
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, GaugeValueEncoder,
};
use prometheus_client::registry::Registry;

/// The AP's registry: its engine's counters and gauges, then `io`'s.
pub fn metrics(engine: Shared<AccessPoint>, io: IoSource) -> Metrics {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(EngineCollector::new(engine, encode)));
    Metrics::new(registry, io)
}

#[derive(Debug, EncodeLabelSet)]
struct MemberLabels {
    member: u16,
}

#[derive(Debug, EncodeLabelSet)]
struct MemberStateLabels {
    member: u16,
    state: &'static str,
}

#[derive(Debug, EncodeLabelSet)]
struct MemberDirectionLabels {
    member: u16,
    direction: &'static str,
}

#[derive(Debug, EncodeLabelSet)]
struct PathLabels {
    path: &'static str,
}

/// A per-member gauge: a count, or seconds.
#[derive(Debug)]
enum Value {
    Count(i64),
    Seconds(std::time::Duration),
}

impl EncodeGaugeValue for Value {
    fn encode(&self, encoder: &mut GaugeValueEncoder<'_>) -> std::fmt::Result {
        match self {
            Value::Count(n) => n.encode(encoder),
            Value::Seconds(d) => d.as_secs_f64().encode(encoder),
        }
    }
}

fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Active => "active",
        MemberState::Draining { .. } => "draining",
        MemberState::Down { .. } => "down",
    }
}

/// Per-member gauges and counters (label `member`), the AP's counters,
/// drops by reason.
pub fn encode(ap: &AccessPoint, now: Instant, e: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    let members: Vec<&MemberEntry> = ap.members().collect();
    gauges(
        e,
        "homeaddr_ap_member_state",
        "1 for the state each member is in (active, draining, down).",
        members.iter().flat_map(|m| {
            ["active", "draining", "down"].map(|state| {
                let labels = MemberStateLabels {
                    member: m.id.0,
                    state,
                };
                (labels, i64::from(state_name(m.state) == state))
            })
        }),
    )?;
    let per_member = |e: &mut DescriptorEncoder<'_>,
                      name: &str,
                      help: &str,
                      f: &dyn Fn(&MemberEntry) -> Value| {
        gauges(
            e,
            name,
            help,
            members
                .iter()
                .map(|m| (MemberLabels { member: m.id.0 }, f(m))),
        )
    };
    per_member(
        e,
        "homeaddr_ap_member_weight",
        "Maglev weight in force (0 while draining or down).",
        &|m| Value::Count(m.effective_weight().into()),
    )?;
    per_member(
        e,
        "homeaddr_ap_member_flows",
        "Flows pinned to the member in the affinity table.",
        &|m| Value::Count(ap.affinity().flows_of(m.id) as i64),
    )?;
    per_member(
        e,
        "homeaddr_ap_member_shim_clients",
        "Shim clients told about the member.",
        &|m| {
            let n = ap
                .shim_clients()
                .filter(|(_, s)| s.members.contains_key(&m.id))
                .count();
            Value::Count(n as i64)
        },
    )?;
    per_member(
        e,
        "homeaddr_ap_member_lifetime_seconds",
        "Registration lifetime left.",
        &|m| Value::Seconds(m.lifetime_expires.saturating_duration_since(now)),
    )?;
    per_member(
        e,
        "homeaddr_ap_member_drain_deadline_seconds",
        "Seconds until a draining member's flows are cut (0: no deadline).",
        &|m| match m.state {
            MemberState::Draining {
                deadline: Some(d), ..
            } => Value::Seconds(d.saturating_duration_since(now)),
            _ => Value::Seconds(std::time::Duration::ZERO),
        },
    )?;
    let to_from = |to: fn(&MemberEntry) -> u64, from: fn(&MemberEntry) -> u64| {
        members.iter().flat_map(move |m| {
            [("to", to(m)), ("from", from(m))].map(|(direction, n)| {
                let labels = MemberDirectionLabels {
                    member: m.id.0,
                    direction,
                };
                (labels, n)
            })
        })
    };
    counters(
        e,
        "homeaddr_ap_member_packets",
        "Packets forwarded to and received from the member.",
        to_from(|m| m.counters.packets_to, |m| m.counters.packets_from),
    )?;
    counters(
        e,
        "homeaddr_ap_member_bytes",
        "Bytes forwarded to and received from the member.",
        to_from(|m| m.counters.bytes_to, |m| m.counters.bytes_from),
    )?;
    let c = ap.counters();
    counters(
        e,
        "homeaddr_ap_forwarded_packets",
        "Data packets forwarded, by path.",
        [
            ("legacy_in", c.legacy_in),
            ("legacy_out", c.legacy_out),
            ("shim_in", c.shim_in),
            ("shim_out", c.shim_out),
        ]
        .map(|(path, n)| (PathLabels { path }, n)),
    )?;
    for (name, help, n) in [
        (
            "homeaddr_ap_home_tests_relayed",
            "Home tests relayed (HoTI and HoT).",
            c.home_tests_relayed,
        ),
        (
            "homeaddr_ap_shim_notices",
            "Shim Notices sent to members.",
            c.notices,
        ),
        (
            "homeaddr_ap_revocations",
            "Revocations sent to shims (each repeat counts).",
            c.revocations,
        ),
        (
            "homeaddr_ap_registrations",
            "Registrations accepted, refreshes included.",
            c.registrations,
        ),
        (
            "homeaddr_ap_mss_clamped",
            "TCP SYNs whose MSS was clamped to the inner MTU.",
            c.mss_clamped,
        ),
        (
            "homeaddr_ap_affinity_overflows",
            "Flows not pinned because the affinity table was full.",
            ap.affinity().overflows(),
        ),
    ] {
        counter(e, name, help, n)?;
    }
    gauge(
        e,
        "homeaddr_ap_flows",
        "Flows in the affinity table.",
        ap.affinity().len() as i64,
    )?;
    gauge(
        e,
        "homeaddr_ap_members",
        "Members in the member table.",
        members.len() as i64,
    )?;
    gauge(
        e,
        "homeaddr_ap_shim_clients",
        "Shim clients known.",
        ap.shim_clients().count() as i64,
    )?;
    encode_drops(e, "homeaddr_ap_dropped_packets", &c.drops)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use homeaddr_proto::engine::Engine;
    use homeaddr_proto::engine::ap::{ApConfig, MemberKey};
    use homeaddr_proto::engine::member::{Member, MemberConfig};
    use homeaddr_proto::wire::MemberId;

    use super::*;

    const KEY: &[u8] = b"a test key of the access point!!";

    /// An AP whose member 1 registered through the wire, as a member
    /// engine sends it.
    fn ap_with_member_1(now: Instant) -> AccessPoint {
        let hoa = "2001:db8::80".parse().unwrap();
        let ap_at: SocketAddr = "[2001:db8::1]:4790".parse().unwrap();
        let care_of: SocketAddr = "[2001:db8:1::7]:4790".parse().unwrap();
        let keys = vec![MemberKey {
            spi: 1,
            key: KEY.to_vec(),
        }];
        let mut ap = AccessPoint::new(ApConfig::new(hoa, keys)).unwrap();
        let config = MemberConfig::new(MemberId(1), hoa, ap_at, care_of, KEY.to_vec(), [7; 32]);
        let mut member = Member::new(config);
        member.start(now);
        let mut bu = member.poll_transmit().expect("a registration");
        assert_eq!(bu.to, ap_at);
        ap.handle_udp(now, care_of, &mut bu.payload);
        assert_eq!(ap.members().count(), 1, "the AP took the registration");
        ap
    }

    #[test]
    fn a_registered_member_shows_with_its_labels_and_zeroed_counters() {
        let now = Instant::now();
        let engine = Arc::new(tokio::sync::Mutex::new(ap_with_member_1(now)));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(EngineCollector::new(engine, encode)));
        let text = homeaddr_daemon::metrics::encode(&registry);
        for line in [
            "# HELP homeaddr_ap_member_state 1 for the state each member is in (active, draining, down).",
            "# TYPE homeaddr_ap_member_state gauge",
            "homeaddr_ap_member_state{member=\"1\",state=\"active\"} 1",
            "homeaddr_ap_member_state{member=\"1\",state=\"draining\"} 0",
            "homeaddr_ap_member_state{member=\"1\",state=\"down\"} 0",
            "homeaddr_ap_member_weight{member=\"1\"} 100",
            "homeaddr_ap_member_flows{member=\"1\"} 0",
            "homeaddr_ap_member_drain_deadline_seconds{member=\"1\"} 0.0",
            "# TYPE homeaddr_ap_member_bytes counter",
            "homeaddr_ap_member_bytes_total{member=\"1\",direction=\"to\"} 0",
            "homeaddr_ap_member_packets_total{member=\"1\",direction=\"from\"} 0",
            "homeaddr_ap_forwarded_packets_total{path=\"legacy_in\"} 0",
            "homeaddr_ap_registrations_total 1",
            "homeaddr_ap_members 1",
            "homeaddr_ap_flows 0",
            "homeaddr_ap_shim_clients 0",
            "homeaddr_ap_dropped_packets_total{reason=\"malformed\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        let lifetime = text
            .lines()
            .find_map(|l| l.strip_prefix("homeaddr_ap_member_lifetime_seconds{member=\"1\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("a lifetime sample");
        assert!(lifetime > 0.0, "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
