//! What each command prints: the daemons' JSON turned into tables.
//!
//! Every view returns the JSON it shows (for `--json`) and the table.

use serde_json::{Value, json};

use crate::table::{Table, bytes, cell, duration, u};

/// The role a `status` answer names: "access-point", "member" or "shim".
pub fn role(status: &Value) -> &str {
    status["role"].as_str().unwrap_or("")
}

/// The AP's member table.
pub fn members(members: &Value) -> Table {
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
    for m in members.as_array().into_iter().flatten() {
        let state = match (m["state"].as_str(), m["drain_deadline_s"].as_f64()) {
            (Some("draining"), Some(left)) => format!("draining ({} left)", duration(Some(left))),
            (Some(s), _) => s.to_string(),
            (None, _) => "-".into(),
        };
        t.row(vec![
            cell(&m["id"]),
            cell(&m["care_of"]),
            state,
            cell(&m["weight"]),
            duration(m["registered_s"].as_f64()),
            duration(m["lifetime_left_s"].as_f64()),
            cell(&m["shim_clients"]),
            cell(&m["flows"]),
            (u(&m["packets_to"]) + u(&m["packets_from"])).to_string(),
            bytes(u(&m["bytes_to"]) + u(&m["bytes_from"])),
        ]);
    }
    t
}

/// Bindings as the daemon behind `status` knows them: the AP per shim
/// client and member, a member per correspondent shim, a shim per member.
pub fn bindings(status: &Value) -> (Value, Table) {
    match role(status) {
        "access-point" => {
            let care_of = |id: &Value| {
                status["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|m| &m["id"] == id)
                    .map(|m| m["care_of"].clone())
                    .unwrap_or(Value::Null)
            };
            let mut rows = Vec::new();
            for c in status["shim_clients"].as_array().into_iter().flatten() {
                for id in c["members"].as_array().into_iter().flatten() {
                    rows.push(json!({
                        "client": c["client"], "shim": c["endpoint"], "member": id,
                        "care_of": care_of(id),
                        "flows": c["flows_by_member"][id.to_string()].as_u64().unwrap_or(0),
                        "idle_s": c["idle_s"],
                    }));
                }
            }
            let mut t = Table::new(&["CLIENT", "SHIM", "MEMBER", "CARE-OF", "FLOWS", "IDLE"]);
            for r in &rows {
                t.row(vec![
                    cell(&r["client"]),
                    cell(&r["shim"]),
                    cell(&r["member"]),
                    cell(&r["care_of"]),
                    cell(&r["flows"]),
                    duration(r["idle_s"].as_f64()),
                ]);
            }
            (Value::Array(rows), t)
        }
        "member" => {
            let rows = status["bindings"].clone();
            let mut t = Table::new(&["CLIENT", "SHIM", "RETURN-ROUTABILITY", "BOUND", "LIFETIME"]);
            for b in rows.as_array().into_iter().flatten() {
                t.row(vec![
                    cell(&b["client"]),
                    cell(&b["shim"]),
                    cell(&b["route_optimization"]).to_lowercase(),
                    if b["bound"] == json!(true) {
                        "yes"
                    } else {
                        "no"
                    }
                    .into(),
                    duration(b["lifetime_left_s"].as_f64()),
                ]);
            }
            (rows, t)
        }
        _ => {
            let rows = status["bindings"].clone();
            let mut t = Table::new(&["MEMBER", "CARE-OF", "LIFETIME", "DRAINING", "FLOWS"]);
            for b in rows.as_array().into_iter().flatten() {
                t.row(vec![
                    cell(&b["member"]),
                    cell(&b["care_of"]),
                    duration(b["lifetime_left_s"].as_f64()),
                    if b["draining"] == json!(true) {
                        "yes"
                    } else {
                        "no"
                    }
                    .into(),
                    cell(&b["flows"]),
                ]);
            }
            (rows, t)
        }
    }
}

fn proto_name(p: &Value) -> String {
    match p.as_u64() {
        Some(6) => "tcp".into(),
        Some(17) => "udp".into(),
        Some(58) => "icmpv6".into(),
        _ => cell(p),
    }
}

/// The AP's affinity table (the `flows` command), largest first.
pub fn ap_flows(flows: &Value) -> Table {
    let mut t = Table::new(&[
        "CLIENT", "PORT", "TO-PORT", "PROTO", "MEMBER", "STATE", "PACKETS", "BYTES", "IDLE",
    ]);
    for f in flows["flows"].as_array().into_iter().flatten() {
        t.row(vec![
            cell(&f["client"]),
            cell(&f["client_port"]),
            cell(&f["port"]),
            proto_name(&f["proto"]),
            cell(&f["member"]),
            cell(&f["state"]),
            cell(&f["packets"]),
            bytes(u(&f["bytes"])),
            duration(f["idle_s"].as_f64()),
        ]);
    }
    t
}

/// A shim's flow table (from its `status`), the `top` largest.
pub fn shim_flows(status: &Value, top: usize) -> (Value, Table) {
    let rows: Vec<Value> = status["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .take(top)
        .cloned()
        .collect();
    let mut t = Table::new(&[
        "SOURCE", "PORT", "TO-PORT", "PROTO", "MEMBER", "PATH", "PACKETS", "BYTES",
    ]);
    for f in &rows {
        t.row(vec![
            cell(&f["src"]),
            cell(&f["src_port"]),
            cell(&f["dst_port"]),
            proto_name(&f["proto"]),
            cell(&f["member"]),
            cell(&f["path"]),
            (u(&f["packets_out"]) + u(&f["packets_in"])).to_string(),
            bytes(u(&f["bytes"])),
        ]);
    }
    (Value::Array(rows), t)
}

/// Counters of any daemon, flattened: drops by reason as `drops.<reason>`.
pub fn stats(status: &Value) -> (Value, Table) {
    let mut flat = serde_json::Map::new();
    if let Some(counters) = status["counters"].as_object() {
        for (k, v) in counters {
            match v.as_object() {
                Some(inner) => {
                    for (reason, n) in inner {
                        flat.insert(format!("{k}.{reason}"), n.clone());
                    }
                }
                None => {
                    flat.insert(k.clone(), v.clone());
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

/// The scalar facts of a `status` answer, and the length of its lists.
pub fn status(status: &Value) -> Table {
    let mut t = Table::new(&["FIELD", "VALUE"]);
    for (k, v) in status.as_object().into_iter().flatten() {
        match v {
            Value::Array(a) => t.row(vec![k.clone(), format!("{} entries", a.len())]),
            Value::Object(o) if k == "registration" => {
                let state = cell(&o.get("state").cloned().unwrap_or(Value::Null));
                let left = o.get("lifetime_left_s").and_then(Value::as_f64);
                t.row(vec![
                    k.clone(),
                    match left {
                        Some(_) => format!("{state} ({} left)", duration(left)),
                        None => state,
                    },
                ])
            }
            Value::Object(_) => {}
            other => t.row(vec![k.clone(), cell(other)]),
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_show_the_drain_countdown_and_sum_both_directions() {
        let m = json!([{"id": 2, "care_of": "[fd00::3]:4790", "state": "draining", "drain_deadline_s": 25.0,
            "weight": 0, "registered_s": 75.0, "lifetime_left_s": 50.0, "shim_clients": 1, "flows": 3,
            "packets_to": 10, "packets_from": 5, "bytes_to": 1024, "bytes_from": 512}]);
        let out = members(&m).render();
        assert!(out.contains("draining (25.0s left)"), "{out}");
        assert!(
            out.contains("1m15s") && out.contains("1.5 KiB") && out.contains(" 15 "),
            "{out}"
        );
    }

    #[test]
    fn ap_bindings_name_the_member_care_of() {
        let s = json!({"role": "access-point",
            "members": [{"id": 1, "care_of": "[fd00::2]:4790"}],
            "shim_clients": [{"client": "fd00::9", "endpoint": "[fd00::9]:5000", "members": [1],
                "flows_by_member": {"1": 2}, "idle_s": 0.5}]});
        let (rows, t) = bindings(&s);
        assert_eq!(rows[0]["care_of"], "[fd00::2]:4790");
        assert_eq!(rows[0]["flows"], 2);
        assert!(t.render().contains("[fd00::9]:5000"));
    }

    #[test]
    fn stats_flatten_drops_by_reason() {
        let (flat, _) = stats(&json!({"counters": {"legacy_in": 4, "drops": {"spoofed": 2}}}));
        assert_eq!(flat["drops.spoofed"], 2);
        assert_eq!(flat["legacy_in"], 4);
    }
}
