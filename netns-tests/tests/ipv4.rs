//! An IPv4 underlay and an IPv4 home address beside the IPv6 one, end to
//! end: the AP listens on an IPv4 address, a member registers over IPv4
//! (it has no IPv6 address at all), a legacy IPv4 client downloads from
//! the IPv4 home address and a legacy IPv6 client from the IPv6 one, both
//! served by the member; a shim client on IPv4 for the IPv4 home address
//! downloads through the AP.
//!
//! ```text
//!  one LAN 198.18.0.0/24 + fd00:4842:1::/64
//!  ap  198.18.0.1, ::1   homeaddr-ap --listen 198.18.0.1:4790
//!  m1  198.18.0.2        homeaddr-member --access-point 198.18.0.1:4790
//!  c   198.18.0.3, ::3   routes 198.19.0.1 and fd00:4841:aaaa::1 via the AP
//!  s   198.18.0.4        homeaddr-shim --home-address 198.19.0.1
//! ```

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use homeaddr_netns_tests::service::{
    HOME_ADDRESS, KEY, SERVICE_PORT, START_TIMEOUT, TUNNEL_PORT, bin, log_args, member_server,
    start_daemon, status_at as status,
};
use homeaddr_netns_tests::{Topology, require_root, testapp, wait_until};
use serde_json::Value;

/// The IPv4 home address.
const HOA4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const AP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const MEMBER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const SHIM4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);
const AP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x4842, 1, 0, 0, 0, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x4842, 1, 0, 0, 0, 0, 3);

#[test]
fn ipv4_underlay_and_ipv4_home_address_end_to_end() {
    if !require_root("ipv4_underlay_and_ipv4_home_address_end_to_end") {
        return;
    }
    let topo = Topology::new("ipv4e2e").expect("topology");
    let ap = topo.add_netns("ap").unwrap();
    let m1 = topo.add_netns("m1").unwrap();
    let client = topo.add_netns("c").unwrap();
    let shim = topo.add_netns("s").unwrap();
    topo.lan(
        "sw",
        &[
            (&ap, "eth0"),
            (&m1, "eth0"),
            (&client, "eth0"),
            (&shim, "eth0"),
        ],
    )
    .unwrap();
    shim.ip(&format!("-4 addr add {SHIM4}/24 dev eth0"))
        .unwrap();
    ap.ip(&format!("-4 addr add {AP4}/24 dev eth0")).unwrap();
    ap.add_addr("eth0", AP6, 64).unwrap();
    m1.ip(&format!("-4 addr add {MEMBER4}/24 dev eth0"))
        .unwrap();
    client
        .ip(&format!("-4 addr add {CLIENT4}/24 dev eth0"))
        .unwrap();
    client.add_addr("eth0", CLIENT6, 64).unwrap();
    client
        .ip(&format!("-4 route add {HOA4}/32 via {AP4}"))
        .unwrap();
    client
        .ip(&format!("-6 route add {HOME_ADDRESS}/128 via {AP6}"))
        .unwrap();

    let ap_control = topo.dir().join("ap.sock");
    let ap_daemon = start_daemon(
        &ap,
        "homeaddr-ap",
        "homeaddr-ap",
        vec![
            "--home-address".into(),
            HOA4.to_string(),
            "--home-address".into(),
            HOME_ADDRESS.to_string(),
            "--key".into(),
            KEY.into(),
            "--listen".into(),
            SocketAddr::new(AP4.into(), TUNNEL_PORT).to_string(),
            "--control".into(),
            ap_control.display().to_string(),
        ],
        &[],
        "access point up",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let routes = ap.ip("-4 route show").unwrap();
    assert!(routes.contains(&format!("{HOA4} dev")), "{routes}");

    let _server = member_server(&m1, 1).unwrap_or_else(|e| panic!("{e:#}"));
    let m1_control = topo.dir().join("m1.sock");
    let mut args = vec![
        "--id".to_string(),
        "1".into(),
        "--home-address".into(),
        HOME_ADDRESS.to_string(),
        "--home-address".into(),
        HOA4.to_string(),
        "--access-point".into(),
        SocketAddr::new(AP4.into(), TUNNEL_PORT).to_string(),
        "--care-of".into(),
        SocketAddr::new(MEMBER4.into(), TUNNEL_PORT).to_string(),
        "--key".into(),
        KEY.into(),
        "--control".into(),
        m1_control.display().to_string(),
    ];
    args.extend(log_args());
    let member = m1
        .spawn("homeaddr-member-1", bin("homeaddr-member").unwrap(), &args)
        .unwrap();
    member
        .wait_for_output("registered with the access point", START_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", member.stderr()));
    let rules = m1.ip("-4 rule show").unwrap();
    assert!(rules.contains(&format!("from {HOA4}")), "{rules}");

    // The AP sees the member at its IPv4 care-of endpoint.
    let ap_status = status(&ap_control);
    assert_eq!(
        ap_status["home_address_v4"],
        HOA4.to_string(),
        "{ap_status}"
    );
    assert_eq!(
        ap_status["members"][0]["care_of"],
        format!("{MEMBER4}:{TUNNEL_PORT}"),
        "{ap_status}"
    );

    // A legacy IPv4 client and a legacy IPv6 client, 4 MiB each.
    let bytes = 4 << 20;
    for server in [
        SocketAddr::new(HOA4.into(), SERVICE_PORT),
        SocketAddr::new(HOME_ADDRESS.into(), SERVICE_PORT),
    ] {
        let report = client
            .enter(|| testapp::get(server, bytes, Duration::from_secs(30)))
            .unwrap()
            .unwrap_or_else(|e| panic!("download from {server}: {e}\nAP: {}", ap_daemon.stderr()));
        assert_eq!(report.server, "member1", "{server}");
        assert_eq!(report.bytes, bytes);
        assert_eq!(report.sha256, testapp::expected_sha256(bytes), "{server}");
        assert_eq!(report.peer, server);
    }
    // Both went through the AP's legacy path and the member's AP session.
    wait_until(
        Duration::from_secs(5),
        Duration::from_millis(50),
        "the AP's and the member's counters",
        || {
            let a = status(&ap_control);
            let m = status(&m1_control);
            a.pointer("/counters/legacy_in")
                .and_then(Value::as_u64)
                .is_some_and(|n| n > 100)
                && m.pointer("/counters/via_ap_in")
                    .and_then(Value::as_u64)
                    .is_some_and(|n| n > 100)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nAP: {}\nmember: {}",
            status(&ap_control),
            status(&m1_control)
        )
    });
    // A shim on IPv4 for the IPv4 home address, through the AP (route
    // optimization of an IPv4 home address is not wired yet).
    let shim_control = topo.dir().join("shim.sock");
    let shim_daemon = start_daemon(
        &shim,
        "homeaddr-shim",
        "homeaddr-shim",
        vec![
            "--home-address".into(),
            HOA4.to_string(),
            "--access-point".into(),
            SocketAddr::new(AP4.into(), TUNNEL_PORT).to_string(),
            "--no-route-optimization".into(),
            "--control".into(),
            shim_control.display().to_string(),
        ],
        &[],
        "shim up",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let routes = shim.ip("-4 route show").unwrap();
    assert!(routes.contains(&format!("{HOA4} dev")), "{routes}");
    assert!(routes.contains(&format!("src {SHIM4}")), "{routes}");
    let server = SocketAddr::new(HOA4.into(), SERVICE_PORT);
    let report = shim
        .enter(|| testapp::get(server, bytes, Duration::from_secs(30)))
        .unwrap()
        .unwrap_or_else(|e| panic!("shim download: {e}\nshim: {}", status(&shim_control)));
    assert_eq!(report.server, "member1");
    assert_eq!(report.sha256, testapp::expected_sha256(bytes));
    let shim_in = status(&ap_control)
        .pointer("/counters/shim_in")
        .and_then(Value::as_u64);
    assert!(shim_in.is_some_and(|n| n > 10), "{shim_in:?}");
    shim_daemon.stop(Duration::from_secs(5));
    let routes = shim.ip("-4 route show").unwrap();
    assert!(!routes.contains(&HOA4.to_string()), "{routes}");

    // A clean stop removes the member's IPv4 rule and the AP's route.
    member.stop(Duration::from_secs(5));
    ap_daemon.stop(Duration::from_secs(5));
    let rules = m1.ip("-4 rule show").unwrap();
    assert!(!rules.contains(&format!("from {HOA4}")), "{rules}");
    let routes = ap.ip("-4 route show").unwrap();
    assert!(!routes.contains(&HOA4.to_string()), "{routes}");
}
