//! JSON views of the access point engine for the control socket.

use std::time::Instant;

use homeaddr_proto::engine::ap::{AccessPoint, MemberState};
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
