//! Helpers shared by the daemon namespace tests (`daemons.rs`,
//! `daemons_bulk.rs`): reading the daemons' status JSON, running test
//! clients inside a host's namespace, and kernel counters of a namespace.

#![allow(dead_code)] // each test file uses a different subset

use std::net::{Ipv6Addr, SocketAddr};
use std::thread::JoinHandle;
use std::time::Duration;

use homeaddr_control::{MemberRow, Request, ShimBindingRow, ShimFlowRow, ShimStatus, Status};
use homeaddr_netns_tests::Netns;
use homeaddr_netns_tests::service::{Host, SERVICE_PORT, Service};
use homeaddr_netns_tests::testapp;
use serde_json::Value;

/// How often bounded waits poll the daemons.
pub const POLL: Duration = Duration::from_millis(20);

/// Timeout of each socket operation of a test client.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// The number at a JSON pointer (`"/counters/direct_in"`), 0 when absent.
pub fn num(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// The AP's entry for member `id`; panics with the member table if missing.
pub fn ap_member(svc: &Service, id: u16) -> MemberRow {
    svc.ap_member(id).unwrap_or_else(|| {
        panic!(
            "the AP does not list member {id}: {:?}",
            svc.ap.control(Request::Members)
        )
    })
}

/// A counter of the AP's entry for member `id`.
pub fn ap_member_num(svc: &Service, id: u16, field: fn(&MemberRow) -> u64) -> u64 {
    field(&ap_member(svc, id))
}

/// The state the AP shows for member `id` ("active", "draining", "down").
pub fn ap_member_state(svc: &Service, id: u16) -> String {
    svc.ap_member(id)
        .map(|m| m.state.name().to_string())
        .unwrap_or_default()
}

/// The shim's `status`, if it answers.
pub fn shim_status(shim: &Host) -> Option<ShimStatus> {
    match shim.ask(Request::Status).ok()? {
        Status::Shim(s) => Some(s),
        _ => None,
    }
}

/// The shim's TCP flow to the service port that carried the most bytes
/// (the shim lists flows by bytes, largest first).
pub fn shim_service_flow(shim: &Host) -> Option<ShimFlowRow> {
    shim_status(shim)?
        .flows
        .into_iter()
        .find(|f| f.proto == 6 && f.dst_port == SERVICE_PORT)
}

/// The shim's binding for member `id`, if any.
pub fn shim_binding(shim: &Host, id: u16) -> Option<ShimBindingRow> {
    shim_status(shim)?
        .bindings
        .into_iter()
        .find(|b| b.member == id)
}

/// The care-of endpoint string the daemons print for `addr`.
/// Wait until the AP lists member `id` at `care_of` and then until the
/// shim client `shim` binds it there; returns how long each took.
pub fn await_move(svc: &Service, shim: usize, id: u16, care_of: &str) -> (Duration, Duration) {
    let at_ap = homeaddr_netns_tests::wait_until(
        Duration::from_secs(5),
        POLL,
        "the AP to list the new care-of",
        || ap_member(svc, id).care_of.to_string() == care_of,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(svc)));
    let at_shim = homeaddr_netns_tests::wait_until(
        Duration::from_secs(5),
        POLL,
        "the shim's binding to follow",
        || shim_binding(&svc.clients[shim], id).is_some_and(|b| b.care_of.to_string() == care_of),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(svc)));
    (at_ap, at_shim)
}

/// Two members, one shim client and six legacy clients: returns the
/// service, the shim client's index and the legacy clients' indices.
pub fn two_member_pool(tag: &str) -> (Service, usize, Vec<usize>) {
    let mut svc = Service::start(tag).expect("service starts");
    svc.add_member(1, &[]).expect("member starts");
    svc.add_member(2, &[]).expect("member starts");
    let shim = svc.add_client(true, &[]).expect("shim client");
    let legacy = (0..6)
        .map(|_| svc.add_client(false, &[]).expect("legacy client"))
        .collect();
    (svc, shim, legacy)
}

pub fn endpoint(addr: Ipv6Addr) -> String {
    SocketAddr::new(addr.into(), homeaddr_netns_tests::service::TUNNEL_PORT).to_string()
}

/// Runs `f` inside the host's namespace and returns its result.
pub fn in_ns<R: Send>(host: &Host, f: impl FnOnce() -> R + Send) -> R {
    host.ns
        .enter(f)
        .unwrap_or_else(|e| panic!("cannot enter the namespace of {}: {e}", host.name))
}

/// Starts `f` on a thread inside the host's namespace.
pub fn spawn_in<R: Send + 'static>(
    host: &Host,
    name: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> JoinHandle<R> {
    host.ns
        .spawn_thread(name, f)
        .unwrap_or_else(|e| panic!("cannot start {name} in {}: {e}", host.name))
}

/// The member that answers a fresh connection from client `index`.
pub fn who(svc: &Service, index: usize) -> String {
    let server = svc.service_endpoint();
    let client = &svc.clients[index];
    in_ns(client, || testapp::who(server, OP_TIMEOUT))
        .unwrap_or_else(|e| panic!("client {} cannot reach the service: {e}", client.name))
}

/// TCP connections in state ESTABLISHED from the namespace to the service
/// port (read from the namespace's `/proc/net/tcp6`).
pub fn established_to_service(ns: &Netns) -> usize {
    let table = ns
        .enter(|| std::fs::read_to_string("/proc/thread-self/net/tcp6"))
        .expect("enter the namespace")
        .expect("read /proc/net/tcp6");
    let port = format!(":{SERVICE_PORT:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ...; 01 = ESTABLISHED.
            cols.len() > 3 && cols[2].ends_with(&port) && cols[3] == "01"
        })
        .count()
}

/// A counter of the namespace's `/proc/net/snmp6` (e.g. `Ip6FragCreates`).
pub fn snmp6(ns: &Netns, key: &str) -> u64 {
    let text = ns
        .enter(|| std::fs::read_to_string("/proc/thread-self/net/snmp6"))
        .expect("enter the namespace")
        .expect("read /proc/net/snmp6");
    text.lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(key)).then(|| words.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {key} in /proc/net/snmp6"))
}

/// Every daemon's status, for failure messages.
pub fn dump(svc: &Service) -> String {
    let mut out = format!("ap: {}\n", svc.ap.status());
    for (id, m) in &svc.members {
        out.push_str(&format!("member {id}: {}\n", m.status()));
    }
    for c in svc.clients.iter().filter(|c| c.daemon.is_some()) {
        out.push_str(&format!("shim {}: {}\n", c.name, c.status()));
    }
    out.push_str(&format!(
        "wan: {}\nlogs: {}",
        serde_json::to_string(&svc.wan.counters()).unwrap_or_default(),
        svc.topo.dir().display()
    ));
    out
}

/// Milliseconds of each round trip of an RTT report.
pub fn rtt_ms(report: &testapp::RttReport) -> Vec<f64> {
    report.rtt_us.iter().map(|&us| us as f64 / 1000.0).collect()
}

/// `samples` rounded to 0.1 ms, for printing.
pub fn fmt_ms(samples: &[f64]) -> String {
    let parts: Vec<String> = samples.iter().map(|ms| format!("{ms:.1}")).collect();
    format!("[{}]", parts.join(", "))
}
