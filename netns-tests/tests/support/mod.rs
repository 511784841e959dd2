//! Helpers shared by the daemon namespace tests (`daemons.rs`,
//! `daemons_bulk.rs`): reading the daemons' answers, running test
//! clients inside a host's namespace, and kernel counters of a namespace.

#![allow(dead_code, unused_imports)] // each test file uses a different subset

use std::thread::JoinHandle;
use std::time::Duration;

use homeaddr_control::{MemberRow, Request};
use homeaddr_netns_tests::service::{Host, SERVICE_PORT, Service};
use homeaddr_netns_tests::testapp::{self, RttReport};
use homeaddr_netns_tests::{Netns, scenario, wait_until};
use serde_json::Value;

pub use homeaddr_netns_tests::scenario::read::{
    ap_member_state, member_draining, num, shim_binding, shim_service_flow,
};
pub use homeaddr_netns_tests::scenario::{Client, OP_TIMEOUT, POLL};

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

/// A service with members `1..=members` and then `clients` (see
/// `scenario::start_service`); panics with the reason if it cannot start.
pub fn service(tag: &str, members: u16, clients: &[Client]) -> Service {
    scenario::start_service(tag, members, clients).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Two members, one shim client and six legacy clients: returns the
/// service, the shim client's index and the legacy clients' indices.
pub fn two_member_pool(tag: &str) -> (Service, usize, Vec<usize>) {
    let mut clients = vec![Client::Shim];
    clients.extend([Client::Legacy; 6]);
    (service(tag, 2, &clients), 0, (1..=6).collect())
}

/// Member 1, a shim client bound to it and a legacy client: returns the
/// service, the shim client's index and the legacy client's.
pub fn shim_bound_and_legacy(tag: &str) -> (Service, usize, usize) {
    let svc = service(tag, 1, &[Client::Shim, Client::Legacy]);
    let (shim, legacy) = (0, 1);
    assert_eq!(who(&svc, shim), "member1");
    bound(&svc, shim, 1);
    (svc, shim, legacy)
}

/// Waits until shim client `shim` holds a binding with `member`.
pub fn bound(svc: &Service, shim: usize, member: u16) {
    scenario::await_binding(&svc.clients[shim], member)
        .unwrap_or_else(|e| panic!("route optimization: {e}\n{}", dump(svc)));
}

/// Moves member `id` and waits until the AP and shim client `shim` follow.
pub fn move_member(svc: &mut Service, id: u16, shim: usize) -> scenario::Move {
    let mv = scenario::move_member(svc, id, shim).expect("member moves");
    assert!(
        mv.rebind.complete(),
        "the AP and the shim did not follow the move to {}: {:?}\n{}",
        mv.care_of,
        mv.rebind,
        dump(svc)
    );
    mv
}

/// Drains member `id` and waits until shim client `shim` hears of it;
/// how long that took.
pub fn drain(svc: &Service, id: u16, shim: usize) -> Duration {
    scenario::drain(svc, id, Some(shim))
        .expect("drain accepted")
        .unwrap_or_else(|| panic!("the shim's binding does not show the drain\n{}", dump(svc)))
}

/// Sessions of `count` round trips 50 ms apart from each of `clients`,
/// once every one of them is established.
pub fn open_sessions(svc: &Service, clients: &[usize], count: usize) -> scenario::Sessions {
    let sessions = scenario::Sessions::start(svc, clients, count, Duration::from_millis(50))
        .expect("sessions start");
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        "every session to be established",
        || {
            clients
                .iter()
                .all(|&c| established_to_service(&svc.clients[c].ns) >= 1)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(svc)));
    sessions
}

/// Each session's report, with its client; panics if one broke.
pub fn session_reports(svc: &Service, sessions: scenario::Sessions) -> Vec<(usize, RttReport)> {
    let clients = sessions.clients.clone();
    clients
        .into_iter()
        .zip(sessions.join())
        .map(|(c, r)| {
            let report = r.unwrap_or_else(|e| panic!("c{c}'s session broke: {e}\n{}", dump(svc)));
            (c, report)
        })
        .collect()
}

/// A download of `bytes` by client `index`; panics unless it is intact.
pub fn download(svc: &Service, index: usize, bytes: u64) -> testapp::GetReport {
    let get = scenario::download(svc, &svc.clients[index], bytes)
        .unwrap_or_else(|e| panic!("download: {e:#}\n{}", dump(svc)));
    assert!(
        scenario::intact(&get),
        "the download is not intact: {get:?}"
    );
    get
}

/// The member id of a server name ("member2" -> 2).
pub fn id_of(server_name: &str) -> u16 {
    scenario::member_of(server_name).unwrap_or_else(|| panic!("not a member: {server_name}"))
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
    scenario::who(svc, &svc.clients[index])
        .unwrap_or_else(|e| panic!("cannot reach the service: {e:#}"))
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
