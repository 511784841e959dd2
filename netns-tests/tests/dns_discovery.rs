//! The client shim finds its access point through the geo-DNS discovery
//! record (issue 5: "wire the shim to use it").

use std::net::SocketAddr;
use std::time::Duration;

use homeaddr_netns_tests::service::{HOME_ADDRESS, bin};
use homeaddr_netns_tests::{require_root, scenario, testapp};

#[test]
fn shim_discovers_its_access_point_through_the_geo_dns() {
    if !require_root("shim_discovers_its_access_point_through_the_geo_dns") {
        return;
    }
    let mut svc = scenario::start_service("dnsdisc", 1, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    // The DNS server runs on the AP host. Two sites: the real one, nearer
    // the default client location, and a far one whose AP does not exist.
    let dns = SocketAddr::new(svc.ap.addr.into(), 5353);
    let zone = format!(
        r#"origin = "example.com."
ttl = 60
uncertain_ttl = 5
all_down = "fail-open"
[soa]
mname = "ns1.example.com."
rname = "hostmaster.example.com."
serial = 1
minimum = 30
[[ns]]
name = "ns1.example.com."
addrs = ["{ap}"]
[[service]]
name = "svc.example.com."
[[site]]
name = "near"
hoas = ["{hoa}"]
ap_endpoint = "{ap_ep}"
location = {{ lat = 52.37, lon = 4.90 }}
health = "up"
[[site]]
name = "far"
hoas = ["2001:db8:f::1"]
ap_endpoint = "[2001:db8:f::100]:4790"
location = {{ lat = -33.87, lon = 151.21 }}
health = "up"
[default]
location = {{ lat = 50.11, lon = 8.68 }}
"#,
        ap = svc.ap.addr,
        hoa = HOME_ADDRESS,
        ap_ep = svc.ap_endpoint(),
    );
    let zone_path = svc.topo.dir().join("zone.toml");
    std::fs::write(&zone_path, zone).expect("zone written");
    let server = svc
        .ap
        .ns
        .spawn(
            "homeaddr-dns",
            bin("homeaddr-dns").expect("homeaddr-dns built"),
            &[
                "--config".to_string(),
                zone_path.display().to_string(),
                "--listen".into(),
                dns.to_string(),
            ],
        )
        .expect("dns starts");
    // The shim asks the server once at start: it must be listening first.
    server
        .wait_for_output("listening (udp+tcp)", Duration::from_secs(20))
        .expect("dns listens");
    let shim = svc
        .add_client(
            true,
            &[
                "--dns-server",
                &dns.to_string(),
                "--service",
                "svc.example.com",
            ],
        )
        .expect("shim discovers the AP and starts");
    let status = svc.clients[shim].status();
    assert_eq!(
        status["access_point"],
        svc.ap_endpoint().to_string(),
        "{status}"
    );
    let endpoint = svc.service_endpoint();
    let who = svc.clients[shim]
        .ns
        .enter(|| testapp::who(endpoint, Duration::from_secs(10)))
        .unwrap();
    assert_eq!(who.expect("served through the discovered AP"), "member1");
    drop(server);
}
