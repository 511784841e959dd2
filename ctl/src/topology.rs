//! `topology --dot`: the service as the AP sees it, as a Graphviz graph.
//!
//! Clients on the left, the access point in the middle, members on the
//! right. Members are coloured by state (green active, orange draining,
//! red down) and show weight, flows and traffic; the AP -> member edges
//! are as thick as the traffic they carried; each client's edge shows its
//! bytes through the AP and the member(s) its flows are pinned to; dashed
//! edges join a shim client to the members that route-optimize it.

use std::collections::BTreeMap;
use std::fmt::Write;

use homeaddr_control::{ApStatus, FlowTable, MemberRow, MemberState};

use crate::table::{bytes, duration};

/// At most this many clients are drawn; the rest are summed up in one node.
pub const MAX_CLIENTS: usize = 40;

/// Per client: bytes through the AP, and flows per member id.
type ClientTraffic = (u64, BTreeMap<u16, u64>);

fn quote(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

fn pen(b: u64) -> f64 {
    // 1 for nothing, about 6 for a gigabyte.
    1.0 + ((b as f64) + 1.0).log2() / 6.0
}

/// The DOT text of the AP's `status` and `flows` answers.
pub fn dot(status: &ApStatus, flows: &FlowTable) -> String {
    let mut out = String::new();
    access_point(&mut out, status);
    member_nodes(&mut out, &status.members);
    member_edges(&mut out, &status.members);
    let shims: BTreeMap<String, &[u16]> = status
        .shim_clients
        .iter()
        .map(|s| (s.client.to_string(), s.members.as_slice()))
        .collect();
    let ranked = ranked_clients(flows, &shims);
    let hidden = ranked.len().saturating_sub(MAX_CLIENTS);
    let shown = &ranked[..ranked.len().min(MAX_CLIENTS)];
    client_nodes(&mut out, shown, &shims, hidden);
    client_edges(&mut out, shown, &shims, hidden);
    let _ = writeln!(out, "}}");
    out
}

/// The graph's head and the access point's node.
fn access_point(out: &mut String, status: &ApStatus) {
    let _ = writeln!(out, "digraph homeaddr {{");
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(
        out,
        "  node [fontname=\"Helvetica\", fontsize=10]; edge [fontname=\"Helvetica\", fontsize=9];"
    );
    let c = &status.counters;
    let ap_label = format!(
        "access point\nHoA {}\n{} flows · {} legacy + {} shim packets in",
        status.home_address, status.flows, c.legacy_in, c.shim_in,
    );
    let _ = writeln!(
        out,
        "  ap [shape=box, style=\"rounded,filled\", fillcolor=\"#dde8ff\", label={}];",
        quote(&ap_label)
    );
}

/// One node per member, coloured by its state, in one rank.
fn member_nodes(out: &mut String, members: &[MemberRow]) {
    let _ = writeln!(out, "  subgraph members {{ rank=same;");
    for m in members {
        let id = m.id;
        let state = m.state.name();
        let colour = match m.state {
            MemberState::Active => "#c8f0c8",
            MemberState::Draining => "#ffd9a0",
            MemberState::Down => "#f4b0b0",
        };
        let countdown = match m.drain_deadline_s {
            Some(left) if m.state == MemberState::Draining => {
                format!(", cut in {}", duration(Some(left)))
            }
            _ => String::new(),
        };
        let label = format!(
            "member {id}\n{}\n{state}{countdown} · weight {}\n{} flows · {} shim clients",
            m.care_of, m.weight, m.flows, m.shim_clients,
        );
        let _ = writeln!(
            out,
            "    m{id} [shape=box3d, style=filled, fillcolor=\"{colour}\", label={}];",
            quote(&label)
        );
    }
    let _ = writeln!(out, "  }}");
}

/// AP -> member edges, as thick as the traffic they carried.
fn member_edges(out: &mut String, members: &[MemberRow]) {
    for m in members {
        let (to, from) = (m.bytes_to, m.bytes_from);
        let _ = writeln!(
            out,
            "  ap -> m{} [dir=both, penwidth={:.1}, label={}];",
            m.id,
            pen(to + from),
            quote(&format!("→ {}\n← {}", bytes(to), bytes(from)))
        );
    }
}

/// Every client with a flow or a binding: bytes through the AP and the
/// members its flows are pinned to, the largest first.
fn ranked_clients(
    flows: &FlowTable,
    shims: &BTreeMap<String, &[u16]>,
) -> Vec<(String, ClientTraffic)> {
    let mut clients: BTreeMap<String, ClientTraffic> = BTreeMap::new();
    for f in &flows.flows {
        let e = clients.entry(f.client.to_string()).or_default();
        e.0 += f.bytes;
        *e.1.entry(f.member).or_default() += 1;
    }
    for client in shims.keys() {
        clients.entry(client.clone()).or_default();
    }
    let mut ranked: Vec<(String, ClientTraffic)> = clients.into_iter().collect();
    ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    ranked
}

/// One node per `shown` client in one rank, and one for the `hidden` rest.
fn client_nodes(
    out: &mut String,
    shown: &[(String, ClientTraffic)],
    shims: &BTreeMap<String, &[u16]>,
    hidden: usize,
) {
    let _ = writeln!(out, "  subgraph clients {{ rank=same;");
    for (i, (client, _)) in shown.iter().enumerate() {
        let kind = if shims.contains_key(client) {
            "shim client"
        } else {
            "client"
        };
        let _ = writeln!(
            out,
            "    c{i} [shape=ellipse, label={}];",
            quote(&format!("{kind}\n{client}"))
        );
    }
    if hidden > 0 {
        let _ = writeln!(
            out,
            "    more [shape=note, label={}];",
            quote(&format!("{hidden} more clients"))
        );
    }
    let _ = writeln!(out, "  }}");
}

/// Client -> AP edges with bytes and pinned members; dashed edges to the
/// members that route-optimize a shim client.
fn client_edges(
    out: &mut String,
    shown: &[(String, ClientTraffic)],
    shims: &BTreeMap<String, &[u16]>,
    hidden: usize,
) {
    for (i, (client, (b, pinned))) in shown.iter().enumerate() {
        let to: Vec<String> = pinned.iter().map(|(m, n)| format!("m{m}×{n}")).collect();
        let label = if to.is_empty() {
            bytes(*b)
        } else {
            format!("{} → {}", bytes(*b), to.join(" "))
        };
        let _ = writeln!(
            out,
            "  c{i} -> ap [penwidth={:.1}, label={}];",
            pen(*b),
            quote(&label)
        );
        for m in shims.get(client).copied().unwrap_or_default() {
            let _ = writeln!(
                out,
                "  c{i} -> m{m} [style=dashed, color=\"#3060c0\", constraint=false, label=\"route optimized\"];"
            );
        }
    }
    if hidden > 0 {
        let _ = writeln!(out, "  more -> ap [style=dotted];");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::tests::{ap_status, member};
    use homeaddr_control::{FlowRow, FlowState, ShimClientRow};

    fn flow(client: &str, member: u16, bytes: u64) -> FlowRow {
        FlowRow {
            client: client.parse().unwrap(),
            client_port: 40000,
            port: 8080,
            proto: 6,
            member,
            state: FlowState::Open,
            packets: 1,
            bytes,
            idle_s: 0.0,
        }
    }

    /// Two members (one draining), a legacy client and a shim client.
    fn example() -> (ApStatus, FlowTable) {
        let mut status = ap_status(
            vec![
                MemberRow {
                    flows: 1,
                    shim_clients: 1,
                    bytes_to: 2048,
                    bytes_from: 4096,
                    ..member(1, MemberState::Active, 1)
                },
                MemberRow {
                    drain_deadline_s: Some(9.0),
                    flows: 1,
                    ..member(2, MemberState::Draining, 0)
                },
            ],
            vec![ShimClientRow {
                client: "fd00::9".parse().unwrap(),
                endpoint: "[fd00::9]:5000".parse().unwrap(),
                members: vec![1],
                flows_by_member: Default::default(),
                idle_s: 0.0,
            }],
        );
        status.counters.legacy_in = 10;
        status.counters.shim_in = 3;
        let flows = FlowTable {
            total: 2,
            flows: vec![flow("fd00::8", 2, 100), flow("fd00::9", 1, 5000)],
        };
        (status, flows)
    }

    #[test]
    fn the_graph_has_every_member_client_and_pinned_flow() {
        let (status, flows) = example();
        let d = dot(&status, &flows);
        assert!(
            d.starts_with("digraph homeaddr {") && d.ends_with("}\n"),
            "{d}"
        );
        contains_all(
            &d,
            &[
                "m2 [shape=box3d, style=filled, fillcolor=\"#ffd9a0\"",
                "draining, cut in 9.0s",
                "ap -> m1 [dir=both",
                "access point\\nHoA fd00::1\\n2 flows · 10 legacy + 3 shim packets in",
                // Largest client first; the shim client also has a dashed edge to its member.
                "c0 [shape=ellipse, label=\"shim client\\nfd00::9\"]",
                "c0 -> m1 [style=dashed",
                "c1 -> ap [penwidth=2.1, label=\"100 B → m2×1\"]",
            ],
        );
    }

    /// Each of `parts` is somewhere in the graph `d`.
    fn contains_all(d: &str, parts: &[&str]) {
        for part in parts {
            assert!(d.contains(part), "no {part:?} in:\n{d}");
        }
    }

    #[test]
    fn the_whole_graph_is_nodes_then_edges_in_order() {
        let (status, flows) = example();
        let d = dot(&status, &flows);
        assert_eq!(d, WHOLE_GRAPH, "{d}");
    }

    const WHOLE_GRAPH: &str = r##"digraph homeaddr {
  rankdir=LR;
  node [fontname="Helvetica", fontsize=10]; edge [fontname="Helvetica", fontsize=9];
  ap [shape=box, style="rounded,filled", fillcolor="#dde8ff", label="access point\nHoA fd00::1\n2 flows · 10 legacy + 3 shim packets in"];
  subgraph members { rank=same;
    m1 [shape=box3d, style=filled, fillcolor="#c8f0c8", label="member 1\n[fd00::2]:4790\nactive · weight 1\n1 flows · 1 shim clients"];
    m2 [shape=box3d, style=filled, fillcolor="#ffd9a0", label="member 2\n[fd00::3]:4790\ndraining, cut in 9.0s · weight 0\n1 flows · 0 shim clients"];
  }
  ap -> m1 [dir=both, penwidth=3.1, label="→ 2.0 KiB\n← 4.0 KiB"];
  ap -> m2 [dir=both, penwidth=1.0, label="→ 0 B\n← 0 B"];
  subgraph clients { rank=same;
    c0 [shape=ellipse, label="shim client\nfd00::9"];
    c1 [shape=ellipse, label="client\nfd00::8"];
  }
  c0 -> ap [penwidth=3.0, label="4.9 KiB → m1×1"];
  c0 -> m1 [style=dashed, color="#3060c0", constraint=false, label="route optimized"];
  c1 -> ap [penwidth=2.1, label="100 B → m2×1"];
}
"##;

    #[test]
    fn clients_past_the_limit_are_one_node() {
        let (status, _) = example();
        let flows = FlowTable {
            total: MAX_CLIENTS as u64 + 2,
            flows: (0..MAX_CLIENTS + 2)
                .map(|i| flow(&format!("fd00::1:{i:x}"), 1, 1000 - i as u64))
                .collect(),
        };
        let d = dot(&status, &flows);
        let last = MAX_CLIENTS - 1;
        contains_all(
            &d,
            &[
                &format!("\n    c{last} [shape=ellipse"),
                "    c0 [shape=ellipse, label=\"client\\nfd00::1:0\"];\n",
                "    more [shape=note, label=\"3 more clients\"];\n  }\n",
            ],
        );
        // The shim client carried nothing: it is among the hidden.
        assert!(
            !d.contains(&format!("c{MAX_CLIENTS} ")) && !d.contains("shim client\\n"),
            "{d}"
        );
        assert!(d.ends_with("  more -> ap [style=dotted];\n}\n"), "{d}");
    }
}
