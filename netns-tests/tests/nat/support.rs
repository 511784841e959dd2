//! What the NAT tests share: starting a lab, a client's connections and
//! downloads, reading bindings and the AP's counters.

#![allow(dead_code)] // each test module uses a different subset

use std::net::SocketAddr;
use std::time::Duration;

use homeaddr_netns_tests::natlab::{Lab, LabConfig, LabHost};
use homeaddr_netns_tests::scenario::{self, read};
use homeaddr_netns_tests::testapp::{self, GetReport};
use serde_json::Value;

/// How long route optimization may take once the first connection is made
/// (a handshake, the relayed home test, the care-of test; behind NATs a
/// punch and a retransmitted care-of test).
pub const RO_TIMEOUT: Duration = Duration::from_secs(15);
/// Socket operations of the tests' clients.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// A lab with its AP running; panics with the reason.
pub fn lab(tag: &str, config: LabConfig) -> Lab {
    Lab::start(tag, config).unwrap_or_else(|e| panic!("the lab does not start: {e:#}"))
}

/// The member's name answering a new connection from `client` to `server`.
pub fn who(lab: &Lab, client: &LabHost, server: SocketAddr) -> String {
    scenario::who_at(&client.host, server).unwrap_or_else(|e| {
        panic!(
            "{} cannot reach {server}: {e:#}\n{}",
            client.host.name,
            lab.dump()
        )
    })
}

/// A download of `bytes` by `client` from `server`; panics unless it is
/// intact (the SHA-256 of the payload stream).
pub fn get_intact(lab: &Lab, client: &LabHost, server: SocketAddr, bytes: u64) -> GetReport {
    let report = client
        .host
        .ns
        .enter(|| testapp::get(server, bytes, OP_TIMEOUT))
        .expect("enter the client's namespace")
        .unwrap_or_else(|e| {
            panic!(
                "{}: download of {bytes} bytes from {server}: {e}\n{}",
                client.host.name,
                lab.dump()
            )
        });
    assert!(
        scenario::intact(&report),
        "{}: the download is not the payload: sha256 {} (want {})\n{}",
        client.host.name,
        report.sha256,
        testapp::expected_sha256(report.bytes),
        lab.dump()
    );
    report
}

/// The members the shim holds bindings with.
pub fn shim_bindings(shim: &LabHost) -> Vec<u64> {
    shim.status()["bindings"]
        .as_array()
        .map(|b| b.iter().filter_map(|r| r["member"].as_u64()).collect())
        .unwrap_or_default()
}

/// The member's correspondent rows (`bindings` of its status).
pub fn member_rows(member: &LabHost) -> Vec<Value> {
    member.status()["bindings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether the member holds a live binding with a correspondent.
pub fn member_bound(member: &LabHost) -> bool {
    member_rows(member)
        .iter()
        .any(|r| r["bound"] == Value::Bool(true))
}

/// Waits until the shim holds a binding with member `id` and the member
/// one with the shim; how long it took.
pub fn await_ro(lab: &Lab, shim: &LabHost, member: &LabHost, id: u16) -> Duration {
    lab.wait(
        &format!(
            "route optimization between {} and member {id}",
            shim.host.name
        ),
        RO_TIMEOUT,
        || shim_bindings(shim).contains(&u64::from(id)) && member_bound(member),
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The AP's shim traffic counters added up (`shim_in + shim_out`).
pub fn ap_shim_packets(lab: &Lab) -> u64 {
    let s = lab.ap.status();
    read::counter(&s, "shim_in") + read::counter(&s, "shim_out")
}

/// The AP's legacy traffic counters added up (`legacy_in + legacy_out`).
pub fn ap_legacy_packets(lab: &Lab) -> u64 {
    let s = lab.ap.status();
    read::counter(&s, "legacy_in") + read::counter(&s, "legacy_out")
}

/// The path of the shim's flow to the service (`direct`, `access-point`).
pub fn shim_path(shim: &LabHost) -> String {
    read::shim_service_flow(&shim.host)
        .map(|f| f.path.name().to_string())
        .unwrap_or_else(|| "no flow".into())
}

/// The shim's local UDP port (from its status' `local`).
pub fn shim_local_port(shim: &LabHost) -> u16 {
    shim.status()["local"]
        .as_str()
        .and_then(|s| s.parse::<SocketAddr>().ok())
        .map_or(0, |a| a.port())
}
