//! Typed views of the access point engine for the control socket
//! (`status`, `members`, `flows`), and its Prometheus text.

use std::time::Instant;

use homeaddr_control::{
    ApCounters, ApStatus, FlowRow, FlowState, FlowTable, IoStatus, MemberRow, ShimClientRow,
};
use homeaddr_daemon::control::drops;
use homeaddr_daemon::metrics::Exposition;
use homeaddr_proto::affinity;
use homeaddr_proto::engine::ap::{AccessPoint, MemberEntry, MemberState};
use serde_json::Value;

/// A member's state as the control API names it, with the seconds left
/// until a drain deadline.
fn member_state(state: MemberState, now: Instant) -> (homeaddr_control::MemberState, Option<f64>) {
    use homeaddr_control::MemberState as Row;
    match state {
        MemberState::Active => (Row::Active, None),
        MemberState::Draining { deadline, .. } => (
            Row::Draining,
            deadline.map(|d| d.saturating_duration_since(now).as_secs_f64()),
        ),
        MemberState::Down { .. } => (Row::Down, None),
    }
}

fn state_name(state: MemberState, now: Instant) -> (String, Option<f64>) {
    let (state, left) = member_state(state, now);
    (state.name().into(), left)
}

/// The member table.
pub fn members(ap: &AccessPoint, now: Instant) -> Vec<MemberRow> {
    let clients = |id| {
        ap.shim_clients()
            .filter(|(_, s)| s.members.contains_key(&id))
            .count() as u64
    };
    ap.members()
        .map(|m| {
            let (state, drain_deadline_s) = member_state(m.state, now);
            MemberRow {
                id: m.id.0,
                care_of: m.care_of,
                state,
                drain_deadline_s,
                weight: m.effective_weight(),
                registered_s: now
                    .saturating_duration_since(m.registered_since)
                    .as_secs_f64(),
                lifetime_left_s: m
                    .lifetime_expires
                    .saturating_duration_since(now)
                    .as_secs_f64(),
                shim_clients: clients(m.id),
                flows: ap.affinity().flows_of(m.id) as u64,
                packets_to: m.counters.packets_to,
                bytes_to: m.counters.bytes_to,
                packets_from: m.counters.packets_from,
                bytes_from: m.counters.bytes_from,
            }
        })
        .collect()
}

/// The `top` largest flows of the affinity table by bytes, and how many
/// there are.
pub fn flows(ap: &AccessPoint, now: Instant, top: usize) -> FlowTable {
    let mut all: Vec<_> = ap.affinity().iter().collect();
    all.sort_by_key(|(_, e)| std::cmp::Reverse(e.bytes));
    let flows = all
        .iter()
        .take(top)
        .map(|(k, e)| FlowRow {
            client: k.src,
            client_port: k.src_port,
            port: k.dst_port,
            proto: k.proto,
            member: e.member.0,
            state: match e.state() {
                affinity::FlowState::Opening => FlowState::Opening,
                affinity::FlowState::Closing => FlowState::Closing,
                // Open, and any state a newer table adds: the flow is live.
                _ => FlowState::Open,
            },
            packets: e.packets,
            bytes: e.bytes,
            idle_s: now.saturating_duration_since(e.last_seen).as_secs_f64(),
        })
        .collect();
    FlowTable {
        total: all.len() as u64,
        flows,
    }
}

/// The engine's counters.
pub fn counters(ap: &AccessPoint) -> ApCounters {
    let c = ap.counters();
    ApCounters {
        legacy_in: c.legacy_in,
        legacy_out: c.legacy_out,
        shim_in: c.shim_in,
        shim_out: c.shim_out,
        home_tests_relayed: c.home_tests_relayed,
        notices: c.notices,
        revocations: c.revocations,
        registrations: c.registrations,
        mss_clamped: c.mss_clamped,
        drops: drops(&c.drops),
    }
}

/// Everything: members, shim clients, counters, and the daemon's `io`.
pub fn status(ap: &AccessPoint, now: Instant, io: IoStatus) -> ApStatus {
    let shim_clients = ap
        .shim_clients()
        .map(|(client, s)| {
            let mut members: Vec<u16> = s.members.keys().map(|m| m.0).collect();
            members.sort_unstable();
            let mut flows_by_member = std::collections::BTreeMap::new();
            for (_, e) in ap.affinity().iter().filter(|(k, _)| k.src == *client) {
                *flows_by_member.entry(e.member.0).or_insert(0) += 1;
            }
            ShimClientRow {
                client: *client,
                endpoint: s.endpoint,
                members,
                flows_by_member,
                idle_s: now.saturating_duration_since(s.last_seen).as_secs_f64(),
            }
        })
        .collect();
    ApStatus {
        home_address: ap.config().home_address,
        members: members(ap, now),
        shim_clients,
        flows: ap.affinity().len() as u64,
        counters: counters(ap),
        io,
    }
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
