//! Typed views of the access point engine for the control socket
//! (`status`, `members`, `flows`), and its Prometheus text.

use std::time::Instant;

use homeaddr_control::{
    ApCounters, ApStatus, FlowRow, FlowState, FlowTable, IoStatus, MemberRow, ShimClientRow,
};
use homeaddr_daemon::control::drops;
use homeaddr_proto::affinity;
use homeaddr_proto::engine::ap::{AccessPoint, MemberState};

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
        shim_roams: c.roams,
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
        home_address_v4: ap.config().home_address_v4,
        members: members(ap, now),
        shim_clients,
        flows: ap.affinity().len() as u64,
        table_digest: format!("{:016x}", ap.table_digest()),
        settling: ap.settling(now),
        flows_reported: ap.counters().flows_reported,
        flows_moved: ap.counters().flows_moved,
        counters: counters(ap),
        io,
    }
}
