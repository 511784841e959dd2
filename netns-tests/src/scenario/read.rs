//! Reading the daemons: the fields of their `status` and `members`
//! answers that the scenarios, the demo and the tests look at, in one place.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::service::{Host, SERVICE_PORT, Service};

/// The number at a JSON pointer (`"/counters/direct_in"`), 0 when absent.
pub fn num(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// Counter `name` of a daemon's status (`status.counters.<name>`), 0 when absent.
pub fn counter(status: &Value, name: &str) -> u64 {
    status["counters"][name].as_u64().unwrap_or(0)
}

/// The access point's member table (`members`).
pub fn ap_members(svc: &Service) -> anyhow::Result<Vec<Value>> {
    let v = svc
        .ap
        .control(json!({"cmd": "members"}))
        .map_err(|e| anyhow::anyhow!("access point `members`: {e}"))?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// The state the AP shows for member `id` ("active", "draining", "down"),
/// empty when it does not list it.
pub fn ap_member_state(svc: &Service, id: u16) -> String {
    svc.ap_member(id)
        .and_then(|m| m["state"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The care-of endpoint the AP lists for member `id`, empty when none.
pub fn ap_care_of(svc: &Service, id: u16) -> String {
    svc.ap_member(id)
        .and_then(|m| m["care_of"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The shim's binding for member `id`, if any.
pub fn shim_binding(shim: &Host, id: u16) -> Option<Value> {
    shim.status()["bindings"]
        .as_array()?
        .iter()
        .find(|b| b["member"].as_u64() == Some(u64::from(id)))
        .cloned()
}

/// Whether the shim holds any binding.
pub fn shim_bound(shim: &Host) -> bool {
    shim.status()["bindings"]
        .as_array()
        .is_some_and(|b| !b.is_empty())
}

/// The care-of endpoint of the shim's binding for member `id`.
pub fn shim_care_of(shim: &Host, id: u16) -> Option<String> {
    shim_binding(shim, id).and_then(|b| b["care_of"].as_str().map(str::to_string))
}

/// Whether the shim's binding for member `id` carries the draining flag.
pub fn shim_sees_drain(shim: &Host, id: u16) -> bool {
    shim_binding(shim, id).is_some_and(|b| b["draining"] == json!(true))
}

/// The shim's flows as its status lists them (by bytes, largest first).
fn shim_flows(shim: &Host) -> Vec<Value> {
    shim.status()["flows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The shim's TCP flow to the service port that carried the most bytes.
pub fn shim_service_flow(shim: &Host) -> Option<Value> {
    shim_flows(shim).into_iter().find(|f| {
        f["proto"].as_u64() == Some(6) && f["dst_port"].as_u64() == Some(u64::from(SERVICE_PORT))
    })
}

/// The local ports of the shim's flows.
pub fn shim_flow_ports(shim: &Host) -> Vec<u64> {
    shim_flows(shim)
        .iter()
        .filter_map(|f| f["src_port"].as_u64())
        .collect()
}

/// Whether the shim has a flow from a port not in `known`, on member
/// `member`, that has received at least `packets_in` packets.
pub fn shim_new_flow_on(shim: &Host, known: &[u64], member: u16, packets_in: u64) -> bool {
    shim_flows(shim).iter().any(|f| {
        !f["src_port"].as_u64().is_some_and(|p| known.contains(&p))
            && f["member"] == json!(member)
            && num(f, "/packets_in") >= packets_in
    })
}

/// The path of the shim's TCP flow from local port `port`: "direct",
/// "access-point" or "unknown".
pub fn shim_path(shim: &Host, port: u16) -> String {
    shim_flows(shim)
        .iter()
        .find(|f| f["src_port"] == json!(port) && f["proto"] == json!(6))
        .and_then(|f| f["path"].as_str())
        .unwrap_or("unknown")
        .to_string()
}

/// The drop counters of a daemon's status, by reason (all but the
/// kernel's own link-local chatter on a TUN, which is never tunnelled).
pub fn drop_counts(status: &Value) -> BTreeMap<String, u64> {
    status["counters"]["drops"]
        .as_object()
        .map(|d| {
            d.iter()
                .filter(|(reason, _)| *reason != "not_tunnelled")
                .map(|(reason, n)| (reason.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the member's own status says it is draining.
pub fn member_draining(member: &Host) -> bool {
    member.status()["draining"] == json!(true)
}
