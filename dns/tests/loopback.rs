//! Real queries against a running server on loopback (127.0.0.1 and ::1):
//! our own client always, `dig` when it is installed; plus a site that goes
//! down behind a real TCP health probe and comes back.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use homeaddr_dns::client::{self, Retry};
use homeaddr_dns::config::Zone;
use homeaddr_dns::discover::discover_ap_endpoint;
use homeaddr_dns::server::{self, RunningServer, ServeOptions, UdpEngine};
use homeaddr_dns::wire::{ClientSubnet, Name, build_query, rtype};

fn config(probe_port: u16) -> String {
    let many: Vec<String> = (1..=40).map(|i| format!("\"2001:db8:e::{i:x}\"")).collect();
    format!(
        r#"
origin = "example.com."
ttl = 60
uncertain_ttl = 5

[soa]
mname = "ns1.example.com."
rname = "hostmaster.example.com."

[[ns]]
name = "ns1.example.com."
addrs = ["::1"]

[[service]]
name = "svc.example.com."
sites = ["ams", "nyc"]

[[service]]
name = "big.example.com."
sites = ["many"]

[health]
interval_ms = 50
timeout_ms = 200
down_after = 2
up_after = 2

[[site]]
name = "ams"
hoas = ["2001:db8:a::1"]
ap_endpoint = "[2001:db8:a::100]:4500"
location = {{ lat = 52.37, lon = 4.90 }}
probe = "127.0.0.1:{probe_port}"

[[site]]
name = "nyc"
hoas = ["2001:db8:c::1"]
ap_endpoint = "198.51.100.100:4500"
location = {{ lat = 40.71, lon = -74.01 }}

[[site]]
name = "many"
hoas = [{}]
ap_endpoint = "[2001:db8:e::100]:4500"

[[network]]
prefix = "198.51.100.0/24"
sites = ["ams"]

[[network]]
prefix = "203.0.113.0/24"
sites = ["nyc"]

[[network]]
prefix = "127.0.0.0/8"
sites = ["ams"]

[[network]]
prefix = "::1/128"
sites = ["ams"]
"#,
        many.join(", ")
    )
}

async fn start(engine: UdpEngine, probe_port: u16) -> RunningServer {
    let zone = Zone::from_toml(&config(probe_port)).expect("test config is valid");
    let opts = ServeOptions {
        listen: vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()],
        udp_sockets: 2,
        udp_engine: engine,
        udp_batch: server::DEFAULT_UDP_BATCH,
        tcp_timeout: Duration::from_secs(5),
        metrics: Some("127.0.0.1:0".parse().unwrap()),
    };
    server::start(Arc::new(zone), &opts)
        .await
        .expect("server starts on loopback")
}

fn query(name: &str, qtype: u16, ecs: Option<(&str, u8)>) -> Vec<u8> {
    let ecs = ecs.map(|(a, p)| ClientSubnet::for_query(a.parse().unwrap(), p));
    build_query(
        0x4242,
        &Name::from_dotted(name).unwrap(),
        qtype,
        Some((1232, ecs)),
    )
}

fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn scope(m: &Message) -> Option<u8> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some(s.scope_prefix()),
        _ => None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A probe target that stays up for the whole test.
fn probe_target() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("probe listener")
}

async fn check_server(running: &RunningServer) {
    let retry = Retry {
        timeout: Duration::from_secs(2),
        tries: 2,
    };
    for &server in &running.addrs {
        // UDP with ECS: nyc for 203.0.113/24, scope 24.
        let reply = client::exchange_udp(
            server,
            &query("svc.example.com.", rtype::AAAA, Some(("203.0.113.0", 24))),
            retry,
        )
        .await
        .expect("udp reply");
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(addrs(&m), vec![ip("2001:db8:c::1")], "via {server}");
        assert_eq!(scope(&m), Some(24));
        // TCP, no ECS: the loopback source is configured for ams.
        let reply = client::exchange_tcp(
            server,
            &query("svc.example.com.", rtype::AAAA, None),
            Duration::from_secs(2),
        )
        .await
        .expect("tcp reply");
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(addrs(&m), vec![ip("2001:db8:a::1")], "via {server}");
        assert_eq!(scope(&m), None);
        // 40 AAAA without EDNS exceed 512 octets: TC over UDP, then the
        // client retries over TCP and gets them all.
        let plain = build_query(
            7,
            &Name::from_dotted("big.example.com.").unwrap(),
            rtype::AAAA,
            None,
        );
        let udp = client::exchange_udp(server, &plain, retry).await.unwrap();
        assert!(Message::from_vec(&udp).unwrap().metadata.truncation);
        let full = client::exchange(server, &plain, retry).await.unwrap();
        assert_eq!(addrs(&Message::from_vec(&full).unwrap()).len(), 40);
        // NXDOMAIN with SOA, REFUSED outside the zone.
        let m = Message::from_vec(
            &client::exchange(
                server,
                &query("nope.example.com.", rtype::AAAA, None),
                retry,
            )
            .await
            .unwrap(),
        )
        .unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1);
        let m = Message::from_vec(
            &client::exchange(server, &query("example.org.", rtype::A, None), retry)
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        // The client shim's discovery call.
        let ap = discover_ap_endpoint(server, "svc.example.com")
            .await
            .expect("discovery");
        assert_eq!(ap, "[2001:db8:a::100]:4500".parse::<SocketAddr>().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hickory_engine_answers_real_queries_on_v4_and_v6() {
    let probe = probe_target();
    let running = start(UdpEngine::Hickory, probe.local_addr().unwrap().port()).await;
    assert_eq!(running.addrs.len(), 2);
    check_server(&running).await;
    // Metrics over HTTP.
    let metrics = running.metrics_addr.expect("metrics bound");
    let text = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(
        text.contains("homeaddr_dns_queries_total{transport=\"udp\"}"),
        "{text}"
    );
    assert!(text.contains("homeaddr_dns_site_answers_total{site=\"nyc\"}"));
    assert!(running.metrics.queries() >= 14);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_engine_answers_the_same() {
    let probe = probe_target();
    let running = start(UdpEngine::Fast, probe.local_addr().unwrap().port()).await;
    check_server(&running).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_ecs_when_installed() {
    let have_dig = Command::new("dig").arg("-v").output().is_ok();
    if !have_dig {
        println!(
            "dig not installed: skipping the dig part (our own client ran in the other tests)"
        );
        return;
    }
    let probe = probe_target();
    let running = start(UdpEngine::Hickory, probe.local_addr().unwrap().port()).await;
    let server = running.addrs[0];
    let out = tokio::task::spawn_blocking(move || {
        Command::new("dig")
            .args([
                &format!("@{}", server.ip()),
                "-p",
                &server.port().to_string(),
                "svc.example.com",
                "AAAA",
                "+subnet=203.0.113.0/24",
                "+norec",
                "+tries=2",
                "+time=2",
            ])
            .output()
            .expect("dig runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(text.contains("status: NOERROR"), "{text}");
    assert!(text.contains("flags: qr aa"), "{text}");
    assert!(text.contains("CLIENT-SUBNET: 203.0.113.0/24/24"), "{text}");
    assert!(text.contains("2001:db8:c::1"), "{text}");
    running.shutdown().await;
}

/// ams is probed over TCP. Closing its probe target moves answers to nyc
/// after `down_after` failed probes; reopening brings them back after
/// `up_after` good ones. Polls the condition with a deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_goes_down_and_comes_back_over_real_probes() {
    let probe = probe_target();
    let probe_addr = probe.local_addr().unwrap();
    let running = start(UdpEngine::Hickory, probe_addr.port()).await;
    let server = running.addrs[0];
    let q = query("svc.example.com.", rtype::AAAA, Some(("198.51.100.0", 24)));
    let ask = || async {
        let reply = client::exchange(server, &q, Retry::default())
            .await
            .expect("reply");
        let m = Message::from_vec(&reply).unwrap();
        (addrs(&m)[0], m.answers[0].ttl)
    };
    let wait_for = |want: IpAddr, ttl: u32| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = ask().await;
            if got == (want, ttl) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "answer stayed {got:?}, wanted {want} ttl {ttl}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Up after two good probes: full TTL.
    wait_for(ip("2001:db8:a::1"), 60).await;
    drop(probe);
    wait_for(ip("2001:db8:c::1"), 5).await;
    let state = running.state.load();
    assert!(!state.health[0].serving);
    let probe = TcpListener::bind(probe_addr).expect("rebind probe target");
    wait_for(ip("2001:db8:a::1"), 60).await;
    drop(probe);
    let text = running.metrics.render();
    assert!(
        text.contains("homeaddr_dns_site_transitions_total{site=\"ams\"} 3"),
        "{text}"
    );
    running.shutdown().await;
}
