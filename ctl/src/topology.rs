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

use serde_json::Value;

use crate::table::{bytes, duration, u};

/// At most this many clients are drawn; the rest are summed up in one node.
pub const MAX_CLIENTS: usize = 40;

/// Per client: bytes through the AP, and flows per member id.
type ClientTraffic = (u64, BTreeMap<u64, u64>);

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
pub fn dot(status: &Value, flows: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph homeaddr {{");
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(
        out,
        "  node [fontname=\"Helvetica\", fontsize=10]; edge [fontname=\"Helvetica\", fontsize=9];"
    );
    let c = &status["counters"];
    let ap_label = format!(
        "access point\nHoA {}\n{} flows · {} legacy + {} shim packets in",
        status["home_address"].as_str().unwrap_or("?"),
        u(&status["flows"]),
        u(&c["legacy_in"]),
        u(&c["shim_in"]),
    );
    let _ = writeln!(
        out,
        "  ap [shape=box, style=\"rounded,filled\", fillcolor=\"#dde8ff\", label={}];",
        quote(&ap_label)
    );

    let _ = writeln!(out, "  subgraph members {{ rank=same;");
    for m in status["members"].as_array().into_iter().flatten() {
        let id = u(&m["id"]);
        let state = m["state"].as_str().unwrap_or("?");
        let colour = match state {
            "active" => "#c8f0c8",
            "draining" => "#ffd9a0",
            _ => "#f4b0b0",
        };
        let countdown = match m["drain_deadline_s"].as_f64() {
            Some(left) if state == "draining" => format!(", cut in {}", duration(Some(left))),
            _ => String::new(),
        };
        let label = format!(
            "member {id}\n{}\n{state}{countdown} · weight {}\n{} flows · {} shim clients",
            m["care_of"].as_str().unwrap_or("?"),
            u(&m["weight"]),
            u(&m["flows"]),
            u(&m["shim_clients"]),
        );
        let _ = writeln!(
            out,
            "    m{id} [shape=box3d, style=filled, fillcolor=\"{colour}\", label={}];",
            quote(&label)
        );
    }
    let _ = writeln!(out, "  }}");
    for m in status["members"].as_array().into_iter().flatten() {
        let id = u(&m["id"]);
        let (to, from) = (u(&m["bytes_to"]), u(&m["bytes_from"]));
        let _ = writeln!(
            out,
            "  ap -> m{id} [dir=both, penwidth={:.1}, label={}];",
            pen(to + from),
            quote(&format!("→ {}\n← {}", bytes(to), bytes(from)))
        );
    }

    // Clients: bytes through the AP and the members their flows are pinned to.
    let mut clients: BTreeMap<String, ClientTraffic> = BTreeMap::new();
    for f in flows["flows"].as_array().into_iter().flatten() {
        let Some(client) = f["client"].as_str() else {
            continue;
        };
        let e = clients.entry(client.to_string()).or_default();
        e.0 += u(&f["bytes"]);
        *e.1.entry(u(&f["member"])).or_default() += 1;
    }
    let shims: BTreeMap<String, Vec<u64>> = status["shim_clients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let members = s["members"].as_array()?.iter().filter_map(Value::as_u64);
            Some((s["client"].as_str()?.to_string(), members.collect()))
        })
        .collect();
    for client in shims.keys() {
        clients.entry(client.clone()).or_default();
    }
    let mut ranked: Vec<(String, ClientTraffic)> = clients.into_iter().collect();
    ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    let hidden = ranked.len().saturating_sub(MAX_CLIENTS);
    let _ = writeln!(out, "  subgraph clients {{ rank=same;");
    for (i, (client, _)) in ranked.iter().take(MAX_CLIENTS).enumerate() {
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
    for (i, (client, (b, pinned))) in ranked.iter().take(MAX_CLIENTS).enumerate() {
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
        for m in shims.get(client).into_iter().flatten() {
            let _ = writeln!(
                out,
                "  c{i} -> m{m} [style=dashed, color=\"#3060c0\", constraint=false, label=\"route optimized\"];"
            );
        }
    }
    if hidden > 0 {
        let _ = writeln!(out, "  more -> ap [style=dotted];");
    }
    let _ = writeln!(out, "}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_graph_has_every_member_client_and_pinned_flow() {
        let status = json!({
            "home_address": "fd00::1", "flows": 2,
            "counters": {"legacy_in": 10, "shim_in": 3},
            "members": [
                {"id": 1, "care_of": "[fd00::2]:4790", "state": "active", "weight": 1, "flows": 1,
                 "shim_clients": 1, "bytes_to": 2048, "bytes_from": 4096},
                {"id": 2, "care_of": "[fd00::3]:4790", "state": "draining", "drain_deadline_s": 9.0,
                 "weight": 0, "flows": 1, "shim_clients": 0, "bytes_to": 0, "bytes_from": 0}],
            "shim_clients": [{"client": "fd00::9", "members": [1]}],
        });
        let flows = json!({"flows": [
            {"client": "fd00::8", "member": 2, "bytes": 100},
            {"client": "fd00::9", "member": 1, "bytes": 5000}]});
        let d = dot(&status, &flows);
        assert!(
            d.starts_with("digraph homeaddr {") && d.ends_with("}\n"),
            "{d}"
        );
        assert!(
            d.contains("m2 [shape=box3d, style=filled, fillcolor=\"#ffd9a0\""),
            "{d}"
        );
        assert!(d.contains("draining, cut in 9.0s"), "{d}");
        assert!(d.contains("ap -> m1 [dir=both"), "{d}");
        // Largest client first; the shim client also has a dashed edge to its member.
        assert!(
            d.contains("c0 [shape=ellipse, label=\"shim client\\nfd00::9\"]"),
            "{d}"
        );
        assert!(d.contains("c0 -> m1 [style=dashed"), "{d}");
        assert!(
            d.contains("c1 -> ap [penwidth=2.1, label=\"100 B → m2×1\"]"),
            "{d}"
        );
    }
}
