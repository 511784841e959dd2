//! Reading the daemons: the fields of their `status` and `members`
//! answers that the scenarios, the demo and the tests look at, in one place.
//! Rows are the typed ones of `homeaddr-control`; the counters of any role's
//! status are read by name from its JSON form (`counter`, `drop_counts`).

use std::collections::BTreeMap;

use homeaddr_control::{MemberRow, Request, ShimBindingRow, ShimFlowRow, ShimStatus, Status};
use serde_json::Value;

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
pub fn ap_members(svc: &Service) -> anyhow::Result<Vec<MemberRow>> {
    svc.ap
        .ask(Request::Members)
        .map_err(|e| anyhow::anyhow!("access point `members`: {e}"))
}

/// The state the AP shows for member `id` ("active", "draining", "down"),
/// empty when it does not list it.
pub fn ap_member_state(svc: &Service, id: u16) -> String {
    svc.ap_member(id)
        .map(|m| m.state.name().to_string())
        .unwrap_or_default()
}

/// The care-of endpoint the AP lists for member `id`, empty when none.
pub fn ap_care_of(svc: &Service, id: u16) -> String {
    svc.ap_member(id)
        .map(|m| m.care_of.to_string())
        .unwrap_or_default()
}

/// The shim's `status`, if it answers.
pub fn shim_status(shim: &Host) -> Option<ShimStatus> {
    match shim.ask(Request::Status).ok()? {
        Status::Shim(s) => Some(s),
        _ => None,
    }
}

/// The shim's binding for member `id`, if any.
pub fn shim_binding(shim: &Host, id: u16) -> Option<ShimBindingRow> {
    shim_status(shim)?
        .bindings
        .into_iter()
        .find(|b| b.member == id)
}

/// Whether the shim holds any binding.
pub fn shim_bound(shim: &Host) -> bool {
    shim_status(shim).is_some_and(|s| !s.bindings.is_empty())
}

/// The care-of endpoint of the shim's binding for member `id`.
pub fn shim_care_of(shim: &Host, id: u16) -> Option<String> {
    shim_binding(shim, id).map(|b| b.care_of.to_string())
}

/// Whether the shim's binding for member `id` carries the draining flag.
pub fn shim_sees_drain(shim: &Host, id: u16) -> bool {
    shim_binding(shim, id).is_some_and(|b| b.draining)
}

/// The shim's flows as its status lists them (by bytes, largest first).
fn shim_flows(shim: &Host) -> Vec<ShimFlowRow> {
    shim_status(shim).map(|s| s.flows).unwrap_or_default()
}

/// The shim's TCP flow to the service port that carried the most bytes.
pub fn shim_service_flow(shim: &Host) -> Option<ShimFlowRow> {
    shim_flows(shim)
        .into_iter()
        .find(|f| f.proto == 6 && f.dst_port == SERVICE_PORT)
}

/// The local ports of the shim's flows.
pub fn shim_flow_ports(shim: &Host) -> Vec<u64> {
    shim_flows(shim)
        .iter()
        .map(|f| u64::from(f.src_port))
        .collect()
}

/// Whether the shim has a flow from a port not in `known`, on member
/// `member`, that has received at least `packets_in` packets.
pub fn shim_new_flow_on(shim: &Host, known: &[u64], member: u16, packets_in: u64) -> bool {
    shim_flows(shim).iter().any(|f| {
        !known.contains(&u64::from(f.src_port))
            && f.member == Some(member)
            && f.packets_in >= packets_in
    })
}

/// The path of the shim's TCP flow from local port `port`: "direct",
/// "access-point" or "unknown".
pub fn shim_path(shim: &Host, port: u16) -> String {
    shim_flows(shim)
        .iter()
        .find(|f| f.src_port == port && f.proto == 6)
        .map_or("unknown", |f| f.path.name())
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
    matches!(member.ask(Request::Status), Ok(Status::Member(m)) if m.draining)
}
