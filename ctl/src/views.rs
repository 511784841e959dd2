//! What each command prints: the daemons' typed answers turned into tables.
//!
//! Every view returns what it shows (for `--json`) and the table.

use std::fmt::Display;
use std::net::{Ipv6Addr, SocketAddr};

use homeaddr_control::{
    ApStatus, BusyPollIo, FlowTable, MemberApRow, MemberRow, MemberState, Registration,
    ShimFlowRow, ShimStatus, Status,
};
use serde::Serialize;
use serde_json::Value;

use crate::table::{Table, bytes, cell, duration};

fn or_dash<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// The AP's member table.
pub fn members(members: &[MemberRow]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "CARE-OF",
        "STATE",
        "WEIGHT",
        "REGISTERED",
        "LIFETIME",
        "CLIENTS",
        "FLOWS",
        "PACKETS",
        "BYTES",
    ]);
    for m in members {
        let state = match (m.state, m.drain_deadline_s) {
            (MemberState::Draining, Some(left)) => {
                format!("draining ({} left)", duration(Some(left)))
            }
            (s, _) => s.name().to_string(),
        };
        t.row(vec![
            m.id.to_string(),
            m.care_of.to_string(),
            state,
            m.weight.to_string(),
            duration(Some(m.registered_s)),
            duration(Some(m.lifetime_left_s)),
            m.shim_clients.to_string(),
            m.flows.to_string(),
            (m.packets_to + m.packets_from).to_string(),
            bytes(m.bytes_to + m.bytes_from),
        ]);
    }
    t
}

/// One route-optimization binding as the AP sees it: a shim client and a
/// member that binds it.
#[derive(Debug, Serialize)]
pub struct ApBindingRow {
    /// The client's address.
    pub client: Ipv6Addr,
    /// Its shim's endpoint.
    pub shim: SocketAddr,
    /// The member.
    pub member: u16,
    /// The member's care-of endpoint (none if it is no longer listed).
    pub care_of: Option<SocketAddr>,
    /// The client's flows pinned to the member.
    pub flows: u64,
    /// Since the client's last packet.
    pub idle_s: f64,
}

fn ap_bindings(status: &ApStatus) -> Vec<ApBindingRow> {
    let care_of = |id: u16| {
        status
            .members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.care_of)
    };
    let mut rows = Vec::new();
    for c in &status.shim_clients {
        for &member in &c.members {
            rows.push(ApBindingRow {
                client: c.client,
                shim: c.endpoint,
                member,
                care_of: care_of(member),
                flows: c.flows_by_member.get(&member).copied().unwrap_or(0),
                idle_s: c.idle_s,
            });
        }
    }
    rows
}

fn to_json<T: Serialize>(rows: &T) -> Value {
    serde_json::to_value(rows).unwrap_or(Value::Null)
}

/// Bindings as the daemon behind `status` knows them: the AP per shim
/// client and member, a member per correspondent shim, a shim per member.
pub fn bindings(status: &Status) -> (Value, Table) {
    match status {
        Status::AccessPoint(s) => {
            let rows = ap_bindings(s);
            let mut t = Table::new(&["CLIENT", "SHIM", "MEMBER", "CARE-OF", "FLOWS", "IDLE"]);
            for r in &rows {
                t.row(vec![
                    r.client.to_string(),
                    r.shim.to_string(),
                    r.member.to_string(),
                    or_dash(r.care_of),
                    r.flows.to_string(),
                    duration(Some(r.idle_s)),
                ]);
            }
            (to_json(&rows), t)
        }
        Status::Member(s) => {
            let mut t = Table::new(&["CLIENT", "SHIM", "RETURN-ROUTABILITY", "BOUND", "LIFETIME"]);
            for b in &s.bindings {
                t.row(vec![
                    b.client.to_string(),
                    b.shim.to_string(),
                    match &b.ro {
                        Some(why) => format!("{} ({why})", b.route_optimization.to_lowercase()),
                        None => b.route_optimization.to_lowercase(),
                    },
                    yes_no(b.bound),
                    duration(b.lifetime_left_s),
                ]);
            }
            (to_json(&s.bindings), t)
        }
        Status::Shim(s) => {
            let mut t = Table::new(&["MEMBER", "CARE-OF", "LIFETIME", "DRAINING", "FLOWS"]);
            for b in &s.bindings {
                t.row(vec![
                    b.member.to_string(),
                    b.care_of.to_string(),
                    duration(Some(b.lifetime_left_s)),
                    yes_no(b.draining),
                    b.flows.to_string(),
                ]);
            }
            (to_json(&s.bindings), t)
        }
    }
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        other => other.to_string(),
    }
}

/// The AP's affinity table (the `flows` command), largest first.
pub fn ap_flows(flows: &FlowTable) -> Table {
    let mut t = Table::new(&[
        "CLIENT", "PORT", "TO-PORT", "PROTO", "MEMBER", "STATE", "PACKETS", "BYTES", "IDLE",
    ]);
    for f in &flows.flows {
        t.row(vec![
            f.client.to_string(),
            f.client_port.to_string(),
            f.port.to_string(),
            proto_name(f.proto),
            f.member.to_string(),
            f.state.name().to_string(),
            f.packets.to_string(),
            bytes(f.bytes),
            duration(Some(f.idle_s)),
        ]);
    }
    t
}

/// A shim's flow table (from its `status`), the `top` largest.
pub fn shim_flows(status: &ShimStatus, top: usize) -> (Vec<ShimFlowRow>, Table) {
    let rows: Vec<ShimFlowRow> = status.flows.iter().take(top).cloned().collect();
    let mut t = Table::new(&[
        "SOURCE", "PORT", "TO-PORT", "PROTO", "MEMBER", "PATH", "PACKETS", "BYTES",
    ]);
    for f in &rows {
        t.row(vec![
            f.src.to_string(),
            f.src_port.to_string(),
            f.dst_port.to_string(),
            proto_name(f.proto),
            or_dash(f.member),
            f.path.name().to_string(),
            (f.packets_out + f.packets_in).to_string(),
            bytes(f.bytes),
        ]);
    }
    (rows, t)
}

/// Counters of any daemon, flattened: drops by reason as `drops.<reason>`.
pub fn stats(status: &Status) -> (Value, Table) {
    let mut flat = serde_json::Map::new();
    if let Value::Object(counters) = status.counters() {
        for (k, v) in counters {
            match v {
                Value::Object(inner) => {
                    for (reason, n) in inner {
                        flat.insert(format!("{k}.{reason}"), n);
                    }
                }
                v => {
                    flat.insert(k, v);
                }
            }
        }
    }
    let mut t = Table::new(&["COUNTER", "VALUE"]);
    for (k, v) in &flat {
        t.row(vec![k.clone(), cell(v)]);
    }
    (Value::Object(flat), t)
}

/// A registration as `registered (59.5s left)`, `refused (status 129)`.
fn registration(r: &Registration) -> String {
    match r {
        Registration::Registered { lifetime_left_s } => {
            format!("registered ({} left)", duration(Some(*lifetime_left_s)))
        }
        Registration::Refused { status } => format!("refused (status {status})"),
        other => other.name().to_string(),
    }
}

/// Keys of a member's per-AP status rows (a member has a handful of APs).
const AP_KEYS: [&str; 16] = [
    "aps.0", "aps.1", "aps.2", "aps.3", "aps.4", "aps.5", "aps.6", "aps.7", "aps.8", "aps.9",
    "aps.10", "aps.11", "aps.12", "aps.13", "aps.14", "aps.15",
];

/// One AP of a member: endpoint, registration, last heard, drain.
fn member_ap(ap: &MemberApRow) -> String {
    let heard = match ap.heard_ms_ago {
        Some(ms) => format!("heard {} ago", duration(Some(ms as f64 / 1000.0))),
        None => "not heard yet".into(),
    };
    let mut out = format!("{} {}, {heard}", ap.endpoint, registration(&ap.state));
    if ap.draining {
        out.push_str(", drains us");
    }
    if let Some(seen) = ap.observed {
        out.push_str(&format!(", sees us at {seen}"));
    }
    out
}

/// The busy-poll window and its counters: `200us (40 windows, 137 hits)`
/// or `off`.
fn busy_poll(b: &BusyPollIo) -> String {
    if b.window_us == 0 {
        return "off".into();
    }
    format!("{}us ({} windows, {} hits)", b.window_us, b.windows, b.hits)
}

fn entries<T>(list: &[T]) -> String {
    format!("{} entries", list.len())
}

/// The scalar facts of a `status` answer, and the length of its lists,
/// by field name.
pub fn status(status: &Status) -> Table {
    let role = status.role().to_string();
    let mut rows: Vec<(&str, String)> = match status {
        Status::AccessPoint(s) => {
            let mut rows = vec![
                ("flows", s.flows.to_string()),
                ("flows_moved", s.flows_moved.to_string()),
                ("flows_reported", s.flows_reported.to_string()),
                ("home_address", s.home_address.to_string()),
                ("members", entries(&s.members)),
                ("settling", s.settling.to_string()),
                ("shim_clients", entries(&s.shim_clients)),
                (
                    "table_digest",
                    or_dash(Some(&s.table_digest).filter(|d| !d.is_empty())),
                ),
            ];
            if let Some(v4) = s.home_address_v4 {
                rows.insert(4, ("home_address_v4", v4.to_string()));
            }
            rows
        }
        Status::Member(s) => {
            let answers = if s.direct_return {
                "direct return (legacy clients natively)"
            } else {
                "through the APs"
            };
            let mut rows = vec![
                ("access_point", s.access_point.to_string()),
                ("answers", answers.to_string()),
                ("bindings", entries(&s.bindings)),
                ("care_of", s.care_of.to_string()),
                ("draining", s.draining.to_string()),
                ("flows", s.flows.to_string()),
                ("id", s.id.to_string()),
                ("registration", registration(&s.registration)),
            ];
            // One row per AP, `aps.0` the first (in configured order).
            rows.extend(
                s.aps
                    .iter()
                    .zip(AP_KEYS)
                    .map(|(ap, key)| (key, member_ap(ap))),
            );
            rows
        }
        Status::Shim(s) => vec![
            ("access_point", s.access_point.to_string()),
            ("bindings", entries(&s.bindings)),
            ("flows", entries(&s.flows)),
            ("home_address", s.home_address.to_string()),
            ("local", s.local.to_string()),
        ],
    };
    rows.push(("busy_poll", busy_poll(&status.io().busy_poll)));
    rows.push(("role", role));
    rows.sort_by_key(|(k, _)| *k);
    let mut t = Table::new(&["FIELD", "VALUE"]);
    for (k, v) in rows {
        t.row(vec![k.to_string(), v]);
    }
    t
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use homeaddr_control::{ApCounters, IoStatus, ShimClientRow};

    pub(crate) fn member(id: u16, state: MemberState, weight: u32) -> MemberRow {
        MemberRow {
            id,
            care_of: format!("[fd00::{}]:4790", id + 1).parse().unwrap(),
            state,
            drain_deadline_s: None,
            weight,
            registered_s: 75.0,
            lifetime_left_s: 50.0,
            shim_clients: 0,
            flows: 0,
            packets_to: 0,
            bytes_to: 0,
            packets_from: 0,
            bytes_from: 0,
        }
    }

    pub(crate) fn ap_status(members: Vec<MemberRow>, shim_clients: Vec<ShimClientRow>) -> ApStatus {
        ApStatus {
            home_address: "fd00::1".parse().unwrap(),
            home_address_v4: None,
            members,
            shim_clients,
            flows: 2,
            table_digest: "00000000000000aa".into(),
            settling: false,
            flows_reported: 0,
            flows_moved: 0,
            counters: ApCounters::default(),
            io: IoStatus::default(),
        }
    }

    #[test]
    fn members_show_the_drain_countdown_and_sum_both_directions() {
        let m = MemberRow {
            drain_deadline_s: Some(25.0),
            shim_clients: 1,
            flows: 3,
            packets_to: 10,
            packets_from: 5,
            bytes_to: 1024,
            bytes_from: 512,
            ..member(2, MemberState::Draining, 0)
        };
        let out = members(&[m]).render();
        assert!(out.contains("draining (25.0s left)"), "{out}");
        assert!(
            out.contains("1m15s") && out.contains("1.5 KiB") && out.contains(" 15 "),
            "{out}"
        );
    }

    #[test]
    fn ap_bindings_name_the_member_care_of() {
        let s = ap_status(
            vec![member(1, MemberState::Active, 100)],
            vec![ShimClientRow {
                client: "fd00::9".parse().unwrap(),
                endpoint: "[fd00::9]:5000".parse().unwrap(),
                members: vec![1],
                flows_by_member: [(1, 2)].into(),
                idle_s: 0.5,
            }],
        );
        let (rows, t) = bindings(&Status::AccessPoint(s));
        assert_eq!(rows[0]["care_of"], "[fd00::2]:4790");
        assert_eq!(rows[0]["flows"], 2);
        assert!(t.render().contains("[fd00::9]:5000"));
    }

    #[test]
    fn stats_flatten_drops_by_reason() {
        let mut s = ap_status(Vec::new(), Vec::new());
        s.counters.legacy_in = 4;
        s.counters.drops.insert("spoofed".into(), 2);
        let (flat, _) = stats(&Status::AccessPoint(s));
        assert_eq!(flat["drops.spoofed"], 2);
        assert_eq!(flat["legacy_in"], 4);
    }

    #[test]
    fn status_lists_scalars_and_list_lengths_by_field_name() {
        let s = ap_status(vec![member(1, MemberState::Active, 100)], Vec::new());
        assert_eq!(
            status(&Status::AccessPoint(s)).render(),
            "FIELD           VALUE\nbusy_poll       off\nflows           2\nflows_moved     0\nflows_reported  0\n\
             home_address    fd00::1\nmembers         1 entries\nrole            access-point\n\
             settling        false\nshim_clients    0 entries\ntable_digest    00000000000000aa\n"
        );
    }

    #[test]
    fn a_member_status_has_a_row_per_access_point() {
        use homeaddr_control::{MemberCounters, MemberStatus};
        let ap = |port: u16, state, heard_ms_ago, draining| MemberApRow {
            endpoint: SocketAddr::new("fd00::1".parse().unwrap(), port),
            state,
            heard_ms_ago,
            draining,
            observed: None,
        };
        let s = MemberStatus {
            id: 2,
            care_of: "[fd00::3]:4790".parse().unwrap(),
            access_point: "[fd00::1]:1".parse().unwrap(),
            registration: Registration::Registering,
            aps: vec![
                ap(
                    1,
                    Registration::Registered {
                        lifetime_left_s: 59.5,
                    },
                    Some(250),
                    true,
                ),
                ap(2, Registration::Refused { status: 129 }, None, false),
            ],
            flows: 7,
            draining: false,
            behind_nat: false,
            direct_return: true,
            bindings: Vec::new(),
            counters: MemberCounters::default(),
            io: IoStatus::default(),
        };
        let out = status(&Status::Member(s)).render();
        assert!(
            out.contains(
                "aps.0         [fd00::1]:1 registered (59.5s left), heard 250ms ago, drains us\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("aps.1         [fd00::1]:2 refused (status 129), not heard yet\n"),
            "{out}"
        );
        assert!(out.contains("flows         7\n"), "{out}");
        assert!(out.contains("busy_poll     off\n"), "{out}");
        assert!(
            out.contains("answers       direct return (legacy clients natively)\n"),
            "{out}"
        );
    }

    #[test]
    fn status_shows_the_busy_poll_window_and_counters() {
        let b = BusyPollIo {
            window_us: 200,
            windows: 40,
            hits: 137,
        };
        assert_eq!(busy_poll(&b), "200us (40 windows, 137 hits)");
        assert_eq!(busy_poll(&BusyPollIo::default()), "off");
    }
}
