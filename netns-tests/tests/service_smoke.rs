//! The smallest whole service: one AP, two members, a legacy client and a
//! shim client, over the WAN emulator.

use std::time::Duration;

use homeaddr_netns_tests::scenario::{self, Client};
use homeaddr_netns_tests::{require_root, testapp, wait_until};

#[test]
fn legacy_and_shim_clients_reach_a_member() {
    if !require_root("legacy_and_shim_clients_reach_a_member") {
        return;
    }
    let svc = scenario::start_service("smoke", 2, &[Client::Legacy, Client::Shim])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (legacy, shim) = (0, 1);
    let server = svc.service_endpoint();
    let who = svc.clients[legacy]
        .ns
        .enter(|| testapp::who(server, Duration::from_secs(5)))
        .unwrap();
    let who = who.expect("legacy client reaches a member");
    assert!(who == "member1" || who == "member2", "{who}");
    let report = svc.clients[shim]
        .ns
        .enter(|| testapp::get(server, 1 << 20, Duration::from_secs(20)))
        .unwrap();
    let report = report.expect("shim client downloads");
    assert_eq!(report.sha256, testapp::expected_sha256(1 << 20));
    // The shim's flows end up on the direct path.
    let shim_host = &svc.clients[shim];
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        "a binding at the shim",
        || {
            shim_host.status()["bindings"]
                .as_array()
                .is_some_and(|b| !b.is_empty())
        },
    )
    .expect("route optimization");
}
