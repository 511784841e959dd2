//! Direct server return: a member answers legacy clients natively, from the
//! home address, and the answers pass through neither the access point nor
//! the member daemon; a shim client of the same member is still answered
//! through the engine, sealed.

use std::net::TcpStream;
use std::time::Duration;

use homeaddr_netns_tests::service::Service;
use homeaddr_netns_tests::{require_root, testapp, wait_until};

#[test]
fn legacy_answers_leave_natively_past_the_member_daemon_with_direct_return() {
    if !require_root("legacy_answers_leave_natively_past_the_member_daemon_with_direct_return") {
        return;
    }
    let mut svc = Service::start("dsr").expect("service starts");
    svc.add_member(1, &["--direct-return"]).expect("member 1");
    let legacy = svc.add_client(false, &[]).expect("legacy client");
    let server = svc.service_endpoint();
    let bytes = 4 << 20;
    let report = svc.clients[legacy]
        .ns
        .enter(|| testapp::get(server, bytes, Duration::from_secs(30)))
        .unwrap();
    let report = report.expect("download through direct server return");
    assert_eq!(report.sha256, testapp::expected_sha256(bytes));
    assert_eq!(report.server, "member1");
    let ap = svc.ap.status();
    let member = svc.members[&1].status();
    // Requests went in through the AP; no answer came back through it.
    assert!(ap["counters"]["legacy_in"].as_u64().unwrap() > 0, "{ap}");
    assert_eq!(
        ap["counters"]["legacy_out"], 0,
        "answers went through the AP: {ap}"
    );
    // 4 MiB of answers is ~3,000 packets: none reached the member's TUN
    // reader (the kernel routed them natively).
    let read = member["io"]["tun"]["rx_packets"].as_u64().unwrap();
    assert!(read < 50, "answers crossed the member daemon: {member}");
    assert_eq!(member["counters"]["via_ap_out"], 0, "{member}");
    assert_eq!(member["direct_return"], true, "status says so: {member}");

    // The SYN-ACK's MSS is clamped to what the tunnel carries: the
    // client's segments to the HoA fit the 1420-byte inner MTU (IPv6:
    // 1360), not the 1500-byte path the answers take (1440).
    let mss = svc.clients[legacy]
        .ns
        .enter(|| {
            let s = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
            socket2::SockRef::from(&s).tcp_mss()
        })
        .unwrap()
        .expect("connect and read TCP_MAXSEG");
    assert!(mss <= 1360, "client MSS {mss}: the SYN-ACK was not clamped");

    // A shim client of the same member: its answers get a route into the
    // TUN (before the first of them), and go through the engine, sealed.
    let shim = svc.add_client(true, &[]).expect("shim client");
    let shim_addr = svc.clients[shim].addr;
    let report = svc.clients[shim]
        .ns
        .enter(|| testapp::get(server, bytes, Duration::from_secs(30)))
        .unwrap()
        .expect("shim download from a direct-return member");
    assert_eq!(report.sha256, testapp::expected_sha256(bytes));
    let routes = svc.members[&1]
        .ns
        .run("ip", ["-6", "route", "show", "table", "4790"])
        .unwrap();
    assert!(
        routes.contains(&shim_addr.to_string()),
        "no route for the shim client {shim_addr}: {routes}"
    );
    assert!(
        !routes.contains("default"),
        "legacy answers would come to the daemon: {routes}"
    );
    let member = svc.members[&1].status();
    let sealed = member["counters"]["via_ap_out"].as_u64().unwrap()
        + member["counters"]["direct_out"].as_u64().unwrap();
    assert!(
        sealed > 1000,
        "the shim client's answers were not sealed: {member}"
    );

    // A stopped member leaves no clamp and no source rule behind.
    let host = svc.members.get_mut(&1).unwrap();
    drop(host.daemon.take());
    let ns = &svc.members[&1].ns;
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "member cleanup",
        || {
            let tables = ns.run("nft", ["list", "tables"]).unwrap_or_default();
            let rules = ns.run("ip", ["-6", "rule"]).unwrap_or_default();
            !tables.contains("homeaddr-member") && !rules.contains("4790")
        },
    )
    .expect("the clamp and the rule are removed on stop");
}
