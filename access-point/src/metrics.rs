//! The access point's metrics: a collector that reads the engine when
//! scraped (docs/OPERATING.md lists every family).

use std::time::Instant;

use homeaddr_daemon::driver::Shared;
use homeaddr_daemon::metrics::{
    IoSource, MemberLabels, Metrics, PathLabels, counter, counters, encode_drops, gauge, gauges,
};
use homeaddr_proto::engine::ap::{AccessPoint, MemberEntry, MemberState};
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, GaugeValueEncoder,
};
use prometheus_client::registry::Registry;

/// The AP's registry: its engine's counters and gauges, then `io`'s.
pub fn metrics(engine: Shared<AccessPoint>, io: IoSource) -> Metrics {
    Metrics::with_engine(Registry::default(), engine, encode, io)
}

#[derive(Debug, EncodeLabelSet)]
struct MemberStateLabels {
    member: u16,
    state: &'static str,
}

#[derive(Debug, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DigestLabels {
    digest: String,
}

#[derive(Debug, EncodeLabelSet)]
struct MemberDirectionLabels {
    member: u16,
    direction: &'static str,
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
    encode_member_states(e, &members)?;
    encode_member_gauges(e, ap, &members, now)?;
    encode_member_traffic(e, &members)?;
    encode_ap_counters(e, ap)?;
    encode_ap_gauges(e, ap, members.len())?;
    encode_table_info(e, ap, now)?;
    encode_drops(e, "homeaddr_ap_dropped_packets", &ap.counters().drops)
}

/// One sample per member and state: 1 for the state it is in.
fn encode_member_states(
    e: &mut DescriptorEncoder<'_>,
    members: &[&MemberEntry],
) -> std::fmt::Result {
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
    )
}

/// A gauge family with one sample per member.
fn per_member(
    e: &mut DescriptorEncoder<'_>,
    members: &[&MemberEntry],
    name: &str,
    help: &str,
    value: impl Fn(&MemberEntry) -> Value,
) -> std::fmt::Result {
    gauges(
        e,
        name,
        help,
        members
            .iter()
            .map(|m| (MemberLabels { member: m.id.0 }, value(m))),
    )
}

/// The per-member gauges: weight, flows, shim clients, lifetime and drain
/// deadline left.
fn encode_member_gauges(
    e: &mut DescriptorEncoder<'_>,
    ap: &AccessPoint,
    members: &[&MemberEntry],
    now: Instant,
) -> std::fmt::Result {
    per_member(
        e,
        members,
        "homeaddr_ap_member_weight",
        "Maglev weight in force (0 while draining or down).",
        |m| Value::Count(m.effective_weight().into()),
    )?;
    per_member(
        e,
        members,
        "homeaddr_ap_member_flows",
        "Flows pinned to the member in the affinity table.",
        |m| Value::Count(ap.affinity().flows_of(m.id) as i64),
    )?;
    per_member(
        e,
        members,
        "homeaddr_ap_member_shim_clients",
        "Shim clients told about the member.",
        |m| {
            let n = ap
                .shim_clients()
                .filter(|(_, s)| s.members.contains_key(&m.id))
                .count();
            Value::Count(n as i64)
        },
    )?;
    per_member(
        e,
        members,
        "homeaddr_ap_member_lifetime_seconds",
        "Registration lifetime left.",
        |m| Value::Seconds(m.lifetime_expires.saturating_duration_since(now)),
    )?;
    per_member(
        e,
        members,
        "homeaddr_ap_member_drain_deadline_seconds",
        "Seconds until a draining member's flows are cut (0: no deadline).",
        |m| match m.state {
            MemberState::Draining {
                deadline: Some(d), ..
            } => Value::Seconds(d.saturating_duration_since(now)),
            _ => Value::Seconds(std::time::Duration::ZERO),
        },
    )
}

/// Packets and bytes to and from each member (label `direction`).
fn encode_member_traffic(
    e: &mut DescriptorEncoder<'_>,
    members: &[&MemberEntry],
) -> std::fmt::Result {
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
    )
}

/// The AP's own counters: packets forwarded by path, then one counter per
/// kind of message or event.
fn encode_ap_counters(e: &mut DescriptorEncoder<'_>, ap: &AccessPoint) -> std::fmt::Result {
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
    counters(
        e,
        "homeaddr_ap_limit_hits",
        "Times a limit was reached, by limit (handshake_rate, shim_clients, shims_per_prefix).",
        c.limit_hits
            .iter()
            .map(|(limit, n)| (LimitLabels { limit }, n)),
    )?;
    for (name, help, n) in [
        (
            "homeaddr_ap_cookie_challenges",
            "Registration BUs answered with BA 202 (retry with cookie).",
            c.cookie_challenges,
        ),
        (
            "homeaddr_ap_shim_cookies",
            "Shim Hellos answered with a Shim Cookie.",
            c.shim_cookies,
        ),
        (
            "homeaddr_ap_shim_handshakes",
            "Shim handshakes completed (new sessions).",
            c.shim_handshakes,
        ),
        (
            "homeaddr_ap_shim_keepalives",
            "Sealed keepalives received from shims.",
            c.keepalives,
        ),
        (
            "homeaddr_ap_shim_no_client_address",
            "Shim handshakes left unanswered: no pool for a translated shim's family.",
            c.no_client_address,
        ),
        (
            "homeaddr_ap_shim_pool_collisions",
            "Welcomes without a Client Address (IPv4 pool address held by another instance).",
            c.pool_collisions,
        ),
        (
            "homeaddr_ap_shim_roams",
            "Shim records moved to the source of a newer sealed frame.",
            c.roams,
        ),
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
        (
            "homeaddr_ap_flows_reported",
            "Flows members reported in Flow Reports.",
            c.flows_reported,
        ),
        (
            "homeaddr_ap_flows_moved",
            "Reported flows re-pinned from another member.",
            c.flows_moved,
        ),
    ] {
        counter(e, name, help, n)?;
    }
    Ok(())
}

/// The sizes of the AP's tables: flows, members, shim clients.
fn encode_ap_gauges(
    e: &mut DescriptorEncoder<'_>,
    ap: &AccessPoint,
    members: usize,
) -> std::fmt::Result {
    for (name, help, n) in [
        (
            "homeaddr_ap_flows",
            "Flows in the affinity table.",
            ap.affinity().len(),
        ),
        (
            "homeaddr_ap_members",
            "Members in the member table.",
            members,
        ),
        (
            "homeaddr_ap_shim_clients",
            "Shim clients known.",
            ap.shim_client_count(),
        ),
    ] {
        gauge(e, name, help, n as i64)?;
    }
    Ok(())
}

/// The Maglev table's digest as an info metric, and whether the AP still
/// settles after its start: with several APs per home address, every AP
/// should show the same digest.
fn encode_table_info(
    e: &mut DescriptorEncoder<'_>,
    ap: &AccessPoint,
    now: Instant,
) -> std::fmt::Result {
    let digest = format!("{:016x}", ap.table_digest());
    gauges(
        e,
        "homeaddr_ap_table_info",
        "1, labelled with the digest of the Maglev table's input (member ids, weights, table size).",
        [(DigestLabels { digest }, 1i64)],
    )?;
    gauge(
        e,
        "homeaddr_ap_settling",
        "1 while the AP settles after its start (segments of unknown flows are held back).",
        i64::from(ap.settling(now)),
    )
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use homeaddr_daemon::metrics::engine_text;
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
        let keys = vec![MemberKey::new(1, KEY.to_vec())];
        let mut ap = AccessPoint::new(ApConfig::new(hoa, keys)).unwrap();
        let config = MemberConfig::new(MemberId(1), hoa, ap_at, care_of, KEY.to_vec(), [7; 32]);
        let mut member = Member::new(config);
        member.start(now);
        // BU, BA 202 (retry with cookie), BU with the cookie, BA 0.
        for _ in 0..4 {
            while let Some(mut bu) = member.poll_transmit() {
                assert_eq!(bu.to, ap_at);
                ap.handle_udp(now, care_of, &mut bu.payload);
            }
            while let Some(mut ba) = ap.poll_transmit() {
                member.handle_udp(now, ap_at, &mut ba.payload);
            }
        }
        assert_eq!(ap.members().count(), 1, "the AP took the registration");
        ap
    }

    #[test]
    fn a_registered_member_shows_with_its_labels_and_zeroed_counters() {
        let text = engine_text(ap_with_member_1(Instant::now()), encode);
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

    #[test]
    fn limit_hits_are_exported_by_limit() {
        let hoa = "2001:db8::80".parse().unwrap();
        let ap =
            AccessPoint::new(ApConfig::new(hoa, vec![MemberKey::new(1, KEY.to_vec())])).unwrap();
        let text = engine_text(ap, encode);
        for limit in ["handshake_rate", "shim_clients", "shims_per_prefix"] {
            let line = format!("homeaddr_ap_limit_hits_total{{limit=\"{limit}\"}} 0");
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(text.contains("homeaddr_ap_dropped_packets_total{reason=\"unauthenticated\"} 0"));
    }

    /// Encodes the AP as of one fixed instant, so the text is the same at
    /// every run.
    #[derive(Debug)]
    struct At(std::sync::Mutex<AccessPoint>, Instant);

    impl prometheus_client::collector::Collector for At {
        fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
            encode(&self.0.lock().unwrap(), self.1, &mut e)
        }
    }

    #[test]
    fn the_whole_text_is_every_family_in_order() {
        let now = Instant::now();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(At(
            std::sync::Mutex::new(ap_with_member_1(now)),
            now,
        )));
        let text = homeaddr_daemon::metrics::encode(&registry);
        assert_eq!(text, FULL_TEXT, "{text}");
    }

    /// Every family of an AP whose member 1 has just registered, in order.
    const FULL_TEXT: &str = r#"# HELP homeaddr_ap_member_state 1 for the state each member is in (active, draining, down).
# TYPE homeaddr_ap_member_state gauge
homeaddr_ap_member_state{member="1",state="active"} 1
homeaddr_ap_member_state{member="1",state="draining"} 0
homeaddr_ap_member_state{member="1",state="down"} 0
# HELP homeaddr_ap_member_weight Maglev weight in force (0 while draining or down).
# TYPE homeaddr_ap_member_weight gauge
homeaddr_ap_member_weight{member="1"} 100
# HELP homeaddr_ap_member_flows Flows pinned to the member in the affinity table.
# TYPE homeaddr_ap_member_flows gauge
homeaddr_ap_member_flows{member="1"} 0
# HELP homeaddr_ap_member_shim_clients Shim clients told about the member.
# TYPE homeaddr_ap_member_shim_clients gauge
homeaddr_ap_member_shim_clients{member="1"} 0
# HELP homeaddr_ap_member_lifetime_seconds Registration lifetime left.
# TYPE homeaddr_ap_member_lifetime_seconds gauge
homeaddr_ap_member_lifetime_seconds{member="1"} 60.0
# HELP homeaddr_ap_member_drain_deadline_seconds Seconds until a draining member's flows are cut (0: no deadline).
# TYPE homeaddr_ap_member_drain_deadline_seconds gauge
homeaddr_ap_member_drain_deadline_seconds{member="1"} 0.0
# HELP homeaddr_ap_member_packets Packets forwarded to and received from the member.
# TYPE homeaddr_ap_member_packets counter
homeaddr_ap_member_packets_total{member="1",direction="to"} 0
homeaddr_ap_member_packets_total{member="1",direction="from"} 0
# HELP homeaddr_ap_member_bytes Bytes forwarded to and received from the member.
# TYPE homeaddr_ap_member_bytes counter
homeaddr_ap_member_bytes_total{member="1",direction="to"} 0
homeaddr_ap_member_bytes_total{member="1",direction="from"} 0
# HELP homeaddr_ap_forwarded_packets Data packets forwarded, by path.
# TYPE homeaddr_ap_forwarded_packets counter
homeaddr_ap_forwarded_packets_total{path="legacy_in"} 0
homeaddr_ap_forwarded_packets_total{path="legacy_out"} 0
homeaddr_ap_forwarded_packets_total{path="shim_in"} 0
homeaddr_ap_forwarded_packets_total{path="shim_out"} 0
# HELP homeaddr_ap_limit_hits Times a limit was reached, by limit (handshake_rate, shim_clients, shims_per_prefix).
# TYPE homeaddr_ap_limit_hits counter
homeaddr_ap_limit_hits_total{limit="handshake_rate"} 0
homeaddr_ap_limit_hits_total{limit="shim_clients"} 0
homeaddr_ap_limit_hits_total{limit="shims_per_prefix"} 0
# HELP homeaddr_ap_cookie_challenges Registration BUs answered with BA 202 (retry with cookie).
# TYPE homeaddr_ap_cookie_challenges counter
homeaddr_ap_cookie_challenges_total 1
# HELP homeaddr_ap_shim_cookies Shim Hellos answered with a Shim Cookie.
# TYPE homeaddr_ap_shim_cookies counter
homeaddr_ap_shim_cookies_total 0
# HELP homeaddr_ap_shim_handshakes Shim handshakes completed (new sessions).
# TYPE homeaddr_ap_shim_handshakes counter
homeaddr_ap_shim_handshakes_total 0
# HELP homeaddr_ap_shim_keepalives Sealed keepalives received from shims.
# TYPE homeaddr_ap_shim_keepalives counter
homeaddr_ap_shim_keepalives_total 0
# HELP homeaddr_ap_shim_no_client_address Shim handshakes left unanswered: no pool for a translated shim's family.
# TYPE homeaddr_ap_shim_no_client_address counter
homeaddr_ap_shim_no_client_address_total 0
# HELP homeaddr_ap_shim_pool_collisions Welcomes without a Client Address (IPv4 pool address held by another instance).
# TYPE homeaddr_ap_shim_pool_collisions counter
homeaddr_ap_shim_pool_collisions_total 0
# HELP homeaddr_ap_shim_roams Shim records moved to the source of a newer sealed frame.
# TYPE homeaddr_ap_shim_roams counter
homeaddr_ap_shim_roams_total 0
# HELP homeaddr_ap_home_tests_relayed Home tests relayed (HoTI and HoT).
# TYPE homeaddr_ap_home_tests_relayed counter
homeaddr_ap_home_tests_relayed_total 0
# HELP homeaddr_ap_shim_notices Shim Notices sent to members.
# TYPE homeaddr_ap_shim_notices counter
homeaddr_ap_shim_notices_total 0
# HELP homeaddr_ap_revocations Revocations sent to shims (each repeat counts).
# TYPE homeaddr_ap_revocations counter
homeaddr_ap_revocations_total 0
# HELP homeaddr_ap_registrations Registrations accepted, refreshes included.
# TYPE homeaddr_ap_registrations counter
homeaddr_ap_registrations_total 1
# HELP homeaddr_ap_mss_clamped TCP SYNs whose MSS was clamped to the inner MTU.
# TYPE homeaddr_ap_mss_clamped counter
homeaddr_ap_mss_clamped_total 0
# HELP homeaddr_ap_affinity_overflows Flows not pinned because the affinity table was full.
# TYPE homeaddr_ap_affinity_overflows counter
homeaddr_ap_affinity_overflows_total 0
# HELP homeaddr_ap_flows_reported Flows members reported in Flow Reports.
# TYPE homeaddr_ap_flows_reported counter
homeaddr_ap_flows_reported_total 0
# HELP homeaddr_ap_flows_moved Reported flows re-pinned from another member.
# TYPE homeaddr_ap_flows_moved counter
homeaddr_ap_flows_moved_total 0
# HELP homeaddr_ap_flows Flows in the affinity table.
# TYPE homeaddr_ap_flows gauge
homeaddr_ap_flows 0
# HELP homeaddr_ap_members Members in the member table.
# TYPE homeaddr_ap_members gauge
homeaddr_ap_members 1
# HELP homeaddr_ap_shim_clients Shim clients known.
# TYPE homeaddr_ap_shim_clients gauge
homeaddr_ap_shim_clients 0
# HELP homeaddr_ap_table_info 1, labelled with the digest of the Maglev table's input (member ids, weights, table size).
# TYPE homeaddr_ap_table_info gauge
homeaddr_ap_table_info{digest="b32cb1d739e3dcd6"} 1
# HELP homeaddr_ap_settling 1 while the AP settles after its start (segments of unknown flows are held back).
# TYPE homeaddr_ap_settling gauge
homeaddr_ap_settling 1
# HELP homeaddr_ap_dropped_packets Packets dropped, by reason.
# TYPE homeaddr_ap_dropped_packets counter
homeaddr_ap_dropped_packets_total{reason="malformed"} 0
homeaddr_ap_dropped_packets_total{reason="bad_version"} 0
homeaddr_ap_dropped_packets_total{reason="unknown_peer"} 0
homeaddr_ap_dropped_packets_total{reason="spoofed_source"} 0
homeaddr_ap_dropped_packets_total{reason="unknown_home_address"} 0
homeaddr_ap_dropped_packets_total{reason="no_member"} 0
homeaddr_ap_dropped_packets_total{reason="auth_failed"} 0
homeaddr_ap_dropped_packets_total{reason="replay"} 0
homeaddr_ap_dropped_packets_total{reason="unexpected_message"} 0
homeaddr_ap_dropped_packets_total{reason="overflow"} 0
homeaddr_ap_dropped_packets_total{reason="not_tunnelled"} 0
homeaddr_ap_dropped_packets_total{reason="unauthenticated"} 0
homeaddr_ap_dropped_packets_total{reason="no_session"} 0
homeaddr_ap_dropped_packets_total{reason="settling"} 0
# EOF
"#;
}
