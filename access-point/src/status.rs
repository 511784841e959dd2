//! JSON views of the access point engine for the control socket.

use std::time::Instant;

use homeaddr_daemon::metrics::Exposition;
use homeaddr_proto::engine::ap::{AccessPoint, MemberEntry, MemberState};
use serde_json::{Value, json};

fn state_name(state: MemberState, now: Instant) -> (String, Option<f64>) {
    match state {
        MemberState::Active => ("active".into(), None),
        MemberState::Draining { deadline, .. } => (
            "draining".into(),
            deadline.map(|d| d.saturating_duration_since(now).as_secs_f64()),
        ),
        MemberState::Down { .. } => ("down".into(), None),
    }
}

/// The member table.
pub fn members(ap: &AccessPoint, now: Instant) -> Value {
    let clients = |id| {
        ap.shim_clients()
            .filter(|(_, s)| s.members.contains_key(&id))
            .count()
    };
    let rows: Vec<Value> = ap
        .members()
        .map(|m| {
            let (state, drain_left) = state_name(m.state, now);
            json!({
                "id": m.id.0,
                "care_of": m.care_of.to_string(),
                "state": state,
                "drain_deadline_s": drain_left,
                "weight": m.effective_weight(),
                "registered_s": now.saturating_duration_since(m.registered_since).as_secs_f64(),
                "lifetime_left_s": m.lifetime_expires.saturating_duration_since(now).as_secs_f64(),
                "shim_clients": clients(m.id),
                "flows": ap.affinity().flows_of(m.id),
                "packets_to": m.counters.packets_to,
                "bytes_to": m.counters.bytes_to,
                "packets_from": m.counters.packets_from,
                "bytes_from": m.counters.bytes_from,
            })
        })
        .collect();
    Value::Array(rows)
}

/// A client's flows in the affinity table, counted per member id.
fn flows_by_member(ap: &AccessPoint, client: &std::net::Ipv6Addr) -> Value {
    let mut counts = serde_json::Map::new();
    for (_, e) in ap.affinity().iter().filter(|(k, _)| k.src == *client) {
        let n = counts.entry(e.member.0.to_string()).or_insert(json!(0));
        *n = json!(n.as_u64().unwrap_or(0) + 1);
    }
    Value::Object(counts)
}

/// The `top` largest flows of the affinity table by bytes, and how many
/// there are.
pub fn flows(ap: &AccessPoint, now: Instant, top: usize) -> Value {
    let mut all: Vec<_> = ap.affinity().iter().collect();
    all.sort_by_key(|(_, e)| std::cmp::Reverse(e.bytes));
    let rows: Vec<Value> = all
        .iter()
        .take(top)
        .map(|(k, e)| {
            json!({
                "client": k.src.to_string(),
                "client_port": k.src_port,
                "port": k.dst_port,
                "proto": k.proto,
                "member": e.member.0,
                "state": format!("{:?}", e.state()).to_lowercase(),
                "packets": e.packets,
                "bytes": e.bytes,
                "idle_s": now.saturating_duration_since(e.last_seen).as_secs_f64(),
            })
        })
        .collect();
    json!({"total": all.len(), "flows": rows})
}

/// Everything: members, shim clients, counters.
pub fn status(ap: &AccessPoint, now: Instant) -> Value {
    let c = ap.counters();
    let drops: serde_json::Map<String, Value> = c
        .drops
        .iter()
        .map(|(r, n)| (r.name().to_string(), json!(n)))
        .collect();
    let shims: Vec<Value> = ap
        .shim_clients()
        .map(|(client, s)| {
            json!({
                "client": client.to_string(),
                "endpoint": s.endpoint.to_string(),
                "members": s.members.keys().map(|m| m.0).collect::<Vec<_>>(),
                "flows_by_member": flows_by_member(ap, client),
                "idle_s": now.saturating_duration_since(s.last_seen).as_secs_f64(),
            })
        })
        .collect();
    json!({
        "role": "access-point",
        "home_address": ap.config().home_address.to_string(),
        "members": members(ap, now),
        "shim_clients": shims,
        "flows": ap.affinity().len(),
        "counters": {
            "legacy_in": c.legacy_in,
            "legacy_out": c.legacy_out,
            "shim_in": c.shim_in,
            "shim_out": c.shim_out,
            "home_tests_relayed": c.home_tests_relayed,
            "notices": c.notices,
            "revocations": c.revocations,
            "registrations": c.registrations,
            "mss_clamped": c.mss_clamped,
            "drops": drops,
        },
    })
}

/// Prometheus text: per-member gauges and counters (label `member`), the
/// AP's counters, drops by reason, and the daemon's I/O counters.
pub fn metrics(ap: &AccessPoint, now: Instant, io: &Value) -> String {
    let mut e = Exposition::default();
    let members: Vec<_> = ap.members().collect();
    let ids: Vec<String> = members.iter().map(|m| m.id.0.to_string()).collect();
    e.family(
        "homeaddr_ap_member_state",
        "gauge",
        "1 for the state each member is in (active, draining, down).",
    );
    for (m, id) in members.iter().zip(&ids) {
        let (state, _) = state_name(m.state, now);
        for s in ["active", "draining", "down"] {
            e.sample(
                "homeaddr_ap_member_state",
                &[("member", id), ("state", s)],
                u8::from(state == s),
            );
        }
    }
    let gauge = |e: &mut Exposition, name: &str, help: &str, f: &dyn Fn(&MemberEntry) -> f64| {
        e.family(name, "gauge", help);
        for (m, id) in members.iter().zip(&ids) {
            e.sample(name, &[("member", id)], f(m));
        }
    };
    gauge(
        &mut e,
        "homeaddr_ap_member_weight",
        "Maglev weight in force (0 while draining or down).",
        &|m| m.effective_weight().into(),
    );
    gauge(
        &mut e,
        "homeaddr_ap_member_flows",
        "Flows pinned to the member in the affinity table.",
        &|m| ap.affinity().flows_of(m.id) as f64,
    );
    gauge(
        &mut e,
        "homeaddr_ap_member_shim_clients",
        "Shim clients told about the member.",
        &|m| {
            ap.shim_clients()
                .filter(|(_, s)| s.members.contains_key(&m.id))
                .count() as f64
        },
    );
    gauge(
        &mut e,
        "homeaddr_ap_member_lifetime_seconds",
        "Registration lifetime left.",
        &|m| {
            m.lifetime_expires
                .saturating_duration_since(now)
                .as_secs_f64()
        },
    );
    gauge(
        &mut e,
        "homeaddr_ap_member_drain_deadline_seconds",
        "Seconds until a draining member's flows are cut (0: no deadline).",
        &|m| match m.state {
            MemberState::Draining {
                deadline: Some(d), ..
            } => d.saturating_duration_since(now).as_secs_f64(),
            _ => 0.0,
        },
    );
    for (name, help, to, from) in [
        (
            "homeaddr_ap_member_packets_total",
            "Packets forwarded to and received from the member.",
            0,
            1,
        ),
        (
            "homeaddr_ap_member_bytes_total",
            "Bytes forwarded to and received from the member.",
            2,
            3,
        ),
    ] {
        e.family(name, "counter", help);
        for (m, id) in members.iter().zip(&ids) {
            let c = [
                m.counters.packets_to,
                m.counters.packets_from,
                m.counters.bytes_to,
                m.counters.bytes_from,
            ];
            e.sample(name, &[("member", id), ("direction", "to")], c[to] as f64);
            e.sample(
                name,
                &[("member", id), ("direction", "from")],
                c[from] as f64,
            );
        }
    }
    let c = ap.counters();
    e.family(
        "homeaddr_ap_forwarded_packets_total",
        "counter",
        "Data packets forwarded, by path.",
    )
    .sample(
        "homeaddr_ap_forwarded_packets_total",
        &[("path", "legacy_in")],
        c.legacy_in as f64,
    )
    .sample(
        "homeaddr_ap_forwarded_packets_total",
        &[("path", "legacy_out")],
        c.legacy_out as f64,
    )
    .sample(
        "homeaddr_ap_forwarded_packets_total",
        &[("path", "shim_in")],
        c.shim_in as f64,
    )
    .sample(
        "homeaddr_ap_forwarded_packets_total",
        &[("path", "shim_out")],
        c.shim_out as f64,
    );
    e.single(
        "homeaddr_ap_home_tests_relayed_total",
        "counter",
        "Home tests relayed (HoTI and HoT).",
        c.home_tests_relayed as f64,
    );
    e.single(
        "homeaddr_ap_shim_notices_total",
        "counter",
        "Shim Notices sent to members.",
        c.notices as f64,
    );
    e.single(
        "homeaddr_ap_revocations_total",
        "counter",
        "Revocations sent to shims (each repeat counts).",
        c.revocations as f64,
    );
    e.single(
        "homeaddr_ap_registrations_total",
        "counter",
        "Registrations accepted, refreshes included.",
        c.registrations as f64,
    );
    e.single(
        "homeaddr_ap_mss_clamped_total",
        "counter",
        "TCP SYNs whose MSS was clamped to the inner MTU.",
        c.mss_clamped as f64,
    );
    e.single(
        "homeaddr_ap_affinity_overflows_total",
        "counter",
        "Flows not pinned because the affinity table was full.",
        ap.affinity().overflows() as f64,
    );
    e.single(
        "homeaddr_ap_flows",
        "gauge",
        "Flows in the affinity table.",
        ap.affinity().len() as f64,
    );
    e.single(
        "homeaddr_ap_members",
        "gauge",
        "Members in the member table.",
        members.len() as f64,
    );
    e.single(
        "homeaddr_ap_shim_clients",
        "gauge",
        "Shim clients known.",
        ap.shim_clients().count() as f64,
    );
    e.drops("homeaddr_ap_dropped_packets_total", &c.drops);
    e.io(io);
    e.finish()
}
