//! Direct server return: a member answers legacy clients natively, from the
//! home address, and the answers pass through neither the access point nor
//! the member daemon; a shim client of the same member is still answered
//! through the engine, sealed.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use homeaddr_netns_tests::service::Service;
use homeaddr_netns_tests::{Netns, require_root, testapp, wait_until};

/// After a 4 MiB download: requests went in through the AP, and no answer
/// came back through it or reached the member's TUN reader (~3,000
/// packets; the kernel routed them natively).
fn answers_bypassed_ap_and_member(ap: &serde_json::Value, member: &serde_json::Value) {
    assert!(ap["counters"]["legacy_in"].as_u64().unwrap() > 0, "{ap}");
    assert_eq!(
        ap["counters"]["legacy_out"], 0,
        "answers went through the AP: {ap}"
    );
    let read = member["io"]["tun"]["rx_packets"].as_u64().unwrap();
    assert!(read < 50, "answers crossed the member daemon: {member}");
}

/// The send MSS of a connection from `ns` to `server` (TCP_MAXSEG after
/// the handshake: the SYN-ACK's MSS less the timestamp option).
fn client_mss(ns: &Netns, server: SocketAddr) -> u32 {
    ns.enter(|| {
        let s = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
        socket2::SockRef::from(&s).tcp_mss()
    })
    .unwrap()
    .expect("connect and read TCP_MAXSEG")
}

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
    answers_bypassed_ap_and_member(&ap, &member);
    assert_eq!(member["counters"]["via_ap_out"], 0, "{member}");
    assert_eq!(member["direct_return"], true, "status says so: {member}");

    // The SYN-ACK's MSS is clamped to what the tunnel carries: the
    // client's segments to the HoA fit the 1420-byte inner MTU (IPv6:
    // 1360), not the 1500-byte path the answers take (1440).
    let mss = client_mss(&svc.clients[legacy].ns, server);
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

/// IPv4: the IPv4 home address's answers fall through the member's table to
/// the main one as well, and their SYN-ACKs are clamped to `mtu - 40`.
///
/// ```text
///  one LAN 198.18.0.0/24
///  ap  198.18.0.1   homeaddr-ap --listen 198.18.0.1:4790
///  m1  198.18.0.2   homeaddr-member --direct-return
///  c   198.18.0.3   routes 198.19.0.1 via the AP
/// ```
#[test]
fn ipv4_answers_leave_natively_with_direct_return() {
    use std::net::Ipv4Addr;

    use homeaddr_netns_tests::Topology;
    use homeaddr_netns_tests::service::{
        HOME_ADDRESS, KEY, SERVICE_PORT, TUNNEL_PORT, ap_args, member_args, member_server,
        start_daemon, status_at,
    };

    if !require_root("ipv4_answers_leave_natively_with_direct_return") {
        return;
    }
    const HOA4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
    const AP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const MEMBER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
    let topo = Topology::new("dsr4").expect("topology");
    let ap = topo.add_netns("ap").unwrap();
    let m1 = topo.add_netns("m1").unwrap();
    let client = topo.add_netns("c").unwrap();
    topo.lan("sw", &[(&ap, "eth0"), (&m1, "eth0"), (&client, "eth0")])
        .unwrap();
    for (ns, addr) in [(&ap, AP4), (&m1, MEMBER4), (&client, CLIENT4)] {
        ns.ip(&format!("-4 addr add {addr}/24 dev eth0")).unwrap();
    }
    client
        .ip(&format!("-4 route add {HOA4}/32 via {AP4}"))
        .unwrap();
    let ap_ep = SocketAddr::new(AP4.into(), TUNNEL_PORT);
    let ap_control = topo.dir().join("ap.sock");
    let mut ap_flags = ap_args(HOME_ADDRESS, ap_ep, &ap_control);
    ap_flags.extend(["--home-address".into(), HOA4.to_string()]);
    let _ap = start_daemon(
        &ap,
        "homeaddr-ap",
        "homeaddr-ap",
        ap_flags,
        &[],
        "access point up",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let _server = member_server(&m1, 1).unwrap_or_else(|e| panic!("{e:#}"));
    let m1_control = topo.dir().join("m1.sock");
    let care_of = SocketAddr::new(MEMBER4.into(), TUNNEL_PORT);
    let mut args = member_args(1, &[ap_ep], care_of, KEY, &m1_control);
    args.extend(["--home-address".into(), HOA4.to_string()]);
    let member = start_daemon(
        &m1,
        "homeaddr-member-1",
        "homeaddr-member",
        args.clone(),
        &["--direct-return"],
        "registered with the access point",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));

    let server = SocketAddr::new(HOA4.into(), SERVICE_PORT);
    let bytes = 4 << 20;
    let report = client
        .enter(|| testapp::get(server, bytes, Duration::from_secs(30)))
        .unwrap()
        .expect("IPv4 download through direct server return");
    assert_eq!(report.sha256, testapp::expected_sha256(bytes));
    assert_eq!(report.server, "member1");
    answers_bypassed_ap_and_member(&status_at(&ap_control), &status_at(&m1_control));
    let mss = client_mss(&client, server);
    assert!(mss <= 1380, "client MSS {mss}: the SYN-ACK was not clamped");

    // Killed, the member leaves its clamp behind; the next member of the
    // table, without direct return, removes it (the claim was stale).
    member.kill();
    let tables = m1.run("nft", ["list", "tables"]).unwrap();
    assert!(tables.contains("homeaddr-member-4790"), "{tables}");
    let _member = start_daemon(
        &m1,
        "homeaddr-member-1",
        "homeaddr-member",
        args,
        &[],
        "registered with the access point",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let tables = m1.run("nft", ["list", "tables"]).unwrap();
    assert!(!tables.contains("homeaddr-member"), "{tables}");
}

/// `daemon::routes` over rtnetlink in a namespace: host routes of both
/// families appear in the table through the device and go again; removing
/// one that is gone is not an error; an unknown device is.
#[test]
fn host_routes_come_and_go_over_rtnetlink() {
    use homeaddr_daemon::routes::HostRoutes;
    use homeaddr_netns_tests::Topology;

    if !require_root("host_routes_come_and_go_over_rtnetlink") {
        return;
    }
    let topo = Topology::new("rtnl").expect("topology");
    let a = topo.add_netns("a").unwrap();
    let b = topo.add_netns("b").unwrap();
    topo.veth(&a, "eth0", &b, "eth0").unwrap();
    let v6: std::net::Ipv6Addr = "fd00:4841:1::c1".parse().unwrap();
    let v4: std::net::Ipv6Addr = "::ffff:100.64.0.9".parse().unwrap();
    let show = |family: &str| a.ip(&format!("{family} route show table 4790")).unwrap();
    a.enter(|| {
        assert!(HostRoutes::open(4790, "nosuchdev0").is_err());
        let mut routes = HostRoutes::open(4790, "eth0").unwrap();
        routes.add(v6).unwrap();
        routes.add(v4).unwrap();
        // Again: replaced, not an error.
        routes.add(v6).unwrap();
    })
    .unwrap();
    assert!(
        show("-6").contains("fd00:4841:1::c1 dev eth0"),
        "{}",
        show("-6")
    );
    assert!(show("-4").contains("100.64.0.9 dev eth0"), "{}", show("-4"));
    a.enter(|| {
        let mut routes = HostRoutes::open(4790, "eth0").unwrap();
        routes.remove(v6).unwrap();
        routes.remove(v4).unwrap();
        routes.remove(v6).unwrap();
    })
    .unwrap();
    assert!(!show("-6").contains("fd00:4841:1::c1"), "{}", show("-6"));
    assert!(!show("-4").contains("100.64.0.9"), "{}", show("-4"));
}
