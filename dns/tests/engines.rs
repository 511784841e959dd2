//! The two UDP engines side by side over real sockets: the same queries go
//! to a server with the fast engine (the default) and to one with
//! hickory's, and the replies must be the same message (hickory's
//! re-encoding compresses names differently: it does not point back into
//! the question, but does compress SOA RDATA; every field is the same). The
//! exception is a query hickory's own parser rejects (an unknown ECS family, say): hickory
//! answers that FORMERR itself, without our OPT, and never shows it to our
//! handler; there both engines must answer FORMERR with the query's ID.
//! Afterwards the metrics of the two servers must agree as well.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use homeaddr_dns::config::Zone;
use homeaddr_dns::metrics::{MALFORMED_REASONS, malformed_reason};
use homeaddr_dns::server::{self, RunningServer, ServeOptions, UdpEngine};
use homeaddr_dns::wire::{
    self, ClientSubnet, Name, ParseError, Query, build_query, put_rr_header, rtype,
};

const ZONE: &str = r#"
origin = "example.com."
ttl = 60
uncertain_ttl = 5
max_udp_payload = 1232

[soa]
mname = "ns1.example.com."
rname = "hostmaster.example.com."

[[ns]]
name = "ns1.example.com."
addrs = ["::1", "127.0.0.1"]

[[service]]
name = "svc.example.com."
sites = ["ams", "fra", "nyc"]

[[service]]
name = "big.example.com."
sites = ["many"]

[[site]]
name = "ams"
hoas = ["2001:db8:a::1"]
ipv4 = ["192.0.2.10"]
ap_endpoint = "[2001:db8:a::100]:4500"
location = { lat = 52.37, lon = 4.90 }
region = "eu"

[[site]]
name = "fra"
hoas = ["2001:db8:f::1"]
ap_endpoint = "[2001:db8:f::100]:4500"
location = { lat = 50.11, lon = 8.68 }
region = "eu"

[[site]]
name = "nyc"
hoas = ["2001:db8:c::1", { addr = "2001:db8:c::2", weight = 3 }]
ipv4 = ["198.51.100.10"]
ap_endpoint = "198.51.100.100:4500"
location = { lat = 40.71, lon = -74.01 }

[[site]]
name = "many"
hoas = [
  "2001:db8:e::1", "2001:db8:e::2", "2001:db8:e::3", "2001:db8:e::4", "2001:db8:e::5",
  "2001:db8:e::6", "2001:db8:e::7", "2001:db8:e::8", "2001:db8:e::9", "2001:db8:e::a",
  "2001:db8:e::b", "2001:db8:e::c", "2001:db8:e::d", "2001:db8:e::e", "2001:db8:e::f",
  "2001:db8:e::10", "2001:db8:e::11", "2001:db8:e::12", "2001:db8:e::13", "2001:db8:e::14",
  "2001:db8:e::15", "2001:db8:e::16", "2001:db8:e::17", "2001:db8:e::18", "2001:db8:e::19",
  "2001:db8:e::1a", "2001:db8:e::1b", "2001:db8:e::1c", "2001:db8:e::1d", "2001:db8:e::1e",
  "2001:db8:e::1f", "2001:db8:e::20", "2001:db8:e::21", "2001:db8:e::22", "2001:db8:e::23",
  "2001:db8:e::24", "2001:db8:e::25", "2001:db8:e::26", "2001:db8:e::27", "2001:db8:e::28",
  "2001:db8:e::29", "2001:db8:e::2a", "2001:db8:e::2b", "2001:db8:e::2c", "2001:db8:e::2d",
  "2001:db8:e::2e", "2001:db8:e::2f", "2001:db8:e::30", "2001:db8:e::31", "2001:db8:e::32",
  "2001:db8:e::33", "2001:db8:e::34", "2001:db8:e::35", "2001:db8:e::36", "2001:db8:e::37",
  "2001:db8:e::38", "2001:db8:e::39", "2001:db8:e::3a", "2001:db8:e::3b", "2001:db8:e::3c",
  "2001:db8:e::3d", "2001:db8:e::3e", "2001:db8:e::3f", "2001:db8:e::40", "2001:db8:e::41",
  "2001:db8:e::42", "2001:db8:e::43", "2001:db8:e::44", "2001:db8:e::45", "2001:db8:e::46",
  "2001:db8:e::47", "2001:db8:e::48", "2001:db8:e::49", "2001:db8:e::4a", "2001:db8:e::4b",
  "2001:db8:e::4c", "2001:db8:e::4d", "2001:db8:e::4e", "2001:db8:e::4f", "2001:db8:e::50",
]
ap_endpoint = "[2001:db8:e::100]:4500"

[default]
location = { lat = 51.5, lon = -0.12 }

[[network]]
prefix = "2001:db8:100::/40"
region = "eu"

[[network]]
prefix = "2001:db8:100:ff00::/56"
sites = ["fra"]

[[network]]
prefix = "203.0.113.0/24"
sites = ["nyc"]

[[network]]
prefix = "127.0.0.0/8"
sites = ["ams"]
"#;

async fn start(engine: UdpEngine) -> RunningServer {
    let zone = Zone::from_toml(ZONE).expect("test zone is valid");
    let opts = ServeOptions {
        listen: vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()],
        udp_sockets: 2,
        udp_engine: engine,
        udp_batch: server::DEFAULT_UDP_BATCH,
        tcp_timeout: Duration::from_secs(5),
        metrics: None,
    };
    server::start(Arc::new(zone), &opts)
        .await
        .expect("server starts on loopback")
}

fn name(n: &str) -> Name {
    Name::from_dotted(n).unwrap()
}

fn plain(n: &str, qtype: u16) -> Vec<u8> {
    build_query(0, &name(n), qtype, None)
}

fn edns(n: &str, qtype: u16, payload: u16, ecs: Option<(&str, u8)>) -> Vec<u8> {
    let ecs = ecs.map(|(a, p)| ClientSubnet::for_query(a.parse().unwrap(), p));
    build_query(0, &name(n), qtype, Some((payload, ecs)))
}

/// svc AAAA with an OPT whose options are `options` verbatim.
fn raw_options(options: &[u8]) -> Vec<u8> {
    let mut m = plain("svc.example.com.", rtype::AAAA);
    m[11] = 1;
    put_rr_header(&mut m, &[0], rtype::OPT, 1232, 0, options.len());
    m.extend_from_slice(options);
    m
}

/// svc AAAA with one ECS option of OPTION-DATA `data`.
fn raw_ecs(data: &[u8]) -> Vec<u8> {
    let mut opt = wire::OPTION_CLIENT_SUBNET.to_be_bytes().to_vec();
    opt.extend_from_slice(&(data.len() as u16).to_be_bytes());
    opt.extend_from_slice(data);
    raw_options(&opt)
}

/// Everything the UDP path answers, well-formed and not.
fn queries() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = vec![
        (
            "ecs v4 /24",
            edns(
                "svc.example.com.",
                rtype::AAAA,
                1232,
                Some(("203.0.113.0", 24)),
            ),
        ),
        (
            "ecs v6 /56",
            edns(
                "svc.example.com.",
                rtype::AAAA,
                1232,
                Some(("2001:db8:100:ff00::", 56)),
            ),
        ),
        (
            "ecs v6 /40, scope > source",
            edns(
                "svc.example.com.",
                rtype::AAAA,
                1232,
                Some(("2001:db8:100::", 40)),
            ),
        ),
        (
            "ecs private",
            edns(
                "svc.example.com.",
                rtype::AAAA,
                1232,
                Some(("10.1.2.0", 24)),
            ),
        ),
        (
            "ecs source 0",
            edns("svc.example.com.", rtype::AAAA, 1232, Some(("0.0.0.0", 0))),
        ),
        (
            "edns, no ecs",
            edns("svc.example.com.", rtype::AAAA, 1232, None),
        ),
        ("no edns", plain("svc.example.com.", rtype::AAAA)),
        (
            "A",
            edns(
                "svc.example.com.",
                rtype::A,
                1232,
                Some(("203.0.113.0", 24)),
            ),
        ),
        ("ANY", edns("svc.example.com.", rtype::ANY, 1232, None)),
        (
            "discovery TXT",
            edns(
                "_homeaddr._udp.svc.example.com.",
                rtype::TXT,
                1232,
                Some(("203.0.113.0", 24)),
            ),
        ),
        ("apex SOA", plain("example.com.", rtype::SOA)),
        ("apex NS", edns("example.com.", rtype::NS, 1232, None)),
        ("NS glue", plain("ns1.example.com.", rtype::AAAA)),
        (
            "NXDOMAIN",
            edns(
                "nope.example.com.",
                rtype::AAAA,
                1232,
                Some(("203.0.113.0", 24)),
            ),
        ),
        ("NODATA", plain("svc.example.com.", 15)),
        (
            "empty non-terminal",
            plain("_udp.svc.example.com.", rtype::TXT),
        ),
        (
            "REFUSED other zone",
            edns("example.org.", rtype::A, 1232, Some(("203.0.113.0", 24))),
        ),
        ("REFUSED AXFR", plain("example.com.", rtype::AXFR)),
        ("TC without EDNS", plain("big.example.com.", rtype::AAAA)),
        (
            "TC at 1232",
            edns(
                "big.example.com.",
                rtype::AAAA,
                1232,
                Some(("203.0.113.0", 24)),
            ),
        ),
        (
            "TC at 4096 (ours is 1232)",
            edns("big.example.com.", rtype::AAAA, 4096, None),
        ),
        (
            "payload below 512",
            edns("big.example.com.", rtype::AAAA, 100, None),
        ),
        ("qtype OPT", plain("svc.example.com.", rtype::OPT)),
        ("ecs unknown family", raw_ecs(&[0, 3, 0, 0])),
        ("ecs stray bits", raw_ecs(&[0, 1, 23, 0, 198, 51, 101])),
        ("ecs too many octets", raw_ecs(&[0, 1, 16, 0, 198, 51, 0])),
        ("ecs too few octets", raw_ecs(&[0, 1, 24, 0, 198, 51])),
        ("ecs prefix beyond 128", raw_ecs(&[0, 2, 129, 0])),
        ("ecs short option", raw_ecs(&[0, 1])),
        // Option length (9) past the end of the OPT (7 left): hickory-proto
        // logs a WARN for this one and carries on without the options.
        (
            "option overruns OPT",
            raw_options(&[0, 8, 0, 9, 0, 1, 24, 0, 198, 51, 100]),
        ),
        ("no question", {
            let mut m = plain("svc.example.com.", rtype::AAAA);
            m[5] = 0;
            m.truncate(wire::HEADER_LEN);
            m
        }),
    ];
    let mut two = raw_ecs(&[0, 1, 24, 0, 198, 51, 100]);
    let rdlen = wire::HEADER_LEN + name("svc.example.com.").as_wire().len() + 4 + 9;
    two[rdlen..rdlen + 2].copy_from_slice(&22u16.to_be_bytes());
    ClientSubnet::for_query("198.51.100.0".parse().unwrap(), 24).emit(&mut two);
    v.push(("two ecs options", two));
    let mut badvers = edns(
        "svc.example.com.",
        rtype::AAAA,
        1232,
        Some(("203.0.113.0", 24)),
    );
    let ttl_at = badvers.len() - 11 - 6; // before the ECS option: TTL, RDLENGTH
    badvers[ttl_at + 1] = 1; // EDNS version 1
    v.push(("BADVERS", badvers));
    let mut notify = plain("example.com.", rtype::SOA);
    notify[2] = 4 << 3; // opcode NOTIFY
    v.push(("NOTIMP", notify));
    let mut dnssec = edns("svc.example.com.", rtype::AAAA, 1232, None);
    let flags_at = dnssec.len() - 4; // OPT TTL: ext-rcode, version, flags
    dnssec[flags_at] = 0x80; // DO
    v.push(("DO bit copied", dnssec));
    let mut chaos = plain("svc.example.com.", rtype::TXT);
    let class_at = chaos.len() - 1;
    chaos[class_at] = 3; // class CH
    v.push(("REFUSED class CH", chaos));
    let mut mixed = plain("sVc.ExAmPlE.cOm.", rtype::AAAA);
    mixed[2] = 1; // RD
    v.push(("0x20 case, RD", mixed));
    for (i, (_, q)) in v.iter_mut().enumerate() {
        q[0..2].copy_from_slice(&(0x1000 + i as u16).to_be_bytes());
    }
    v
}

/// Sends `query` and returns the reply with its ID; any reply with another
/// ID (an answer to something that must get none) fails the test.
fn exchange(sock: &UdpSocket, to: SocketAddr, query: &[u8]) -> Vec<u8> {
    sock.send_to(query, to).expect("send");
    let mut buf = vec![0u8; 65535];
    let (n, from) = sock
        .recv_from(&mut buf)
        .expect("a reply within the timeout");
    assert_eq!(from, to);
    assert_eq!(buf[..2], query[..2], "a reply to another query arrived");
    buf.truncate(n);
    buf
}

fn client(to: SocketAddr) -> UdpSocket {
    let bind = if to.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let s = UdpSocket::bind(bind).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// The metrics text as `series -> value`.
fn series(running: &RunningServer) -> BTreeMap<String, u64> {
    running
        .metrics
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_and_hickory_engines_send_the_same_replies() {
    let fast = start(UdpEngine::Fast).await;
    let hickory = start(UdpEngine::Hickory).await;
    assert_eq!(UdpEngine::default(), UdpEngine::Fast);
    let pairs: Vec<(SocketAddr, SocketAddr)> = fast
        .addrs
        .iter()
        .copied()
        .zip(hickory.addrs.iter().copied())
        .collect();
    let all = queries();
    let mut expected_malformed: BTreeMap<&str, [u64; 2]> = BTreeMap::new();
    let results = tokio::task::spawn_blocking(move || {
        let mut rejected_by_hickory = 0u64;
        for &(f, h) in &pairs {
            let (fs, hs) = (client(f), client(h));
            for (what, q) in &all {
                let hickory_parses = Message::from_vec(q).is_ok();
                if let Err(ParseError::Malformed(m)) = Query::parse(q) {
                    let c = expected_malformed
                        .entry(malformed_reason(m.error))
                        .or_default();
                    c[0] += 1;
                    c[1] += u64::from(hickory_parses);
                }
                let a = exchange(&fs, f, q);
                let b = exchange(&hs, h, q);
                if hickory_parses {
                    let (ma, mb) = (Message::from_vec(&a), Message::from_vec(&b));
                    assert_eq!(
                        ma.unwrap(),
                        mb.unwrap(),
                        "{what} via {f} and {h}: replies differ"
                    );
                } else {
                    rejected_by_hickory += 1;
                    for r in [&a, &b] {
                        let m = Message::from_vec(r).expect("reply parses");
                        assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{what}");
                    }
                }
                let m = Message::from_vec(&a).expect("fast reply parses");
                assert!(m.metadata.message_type == hickory_proto::op::MessageType::Response);
            }
            // No reply to a response or a runt (no reflection): the next
            // exchange must see its own reply first.
            let mut response = plain("svc.example.com.", rtype::AAAA);
            response[2] |= 0x80;
            for (sock, to) in [(&fs, f), (&hs, h)] {
                sock.send_to(&response, to).unwrap();
                sock.send_to(&[0x12, 0x34, 0], to).unwrap();
                let mut probe = plain("svc.example.com.", rtype::AAAA);
                probe[0..2].copy_from_slice(&0xfeedu16.to_be_bytes());
                exchange(sock, to, &probe);
            }
        }
        (rejected_by_hickory, expected_malformed)
    });
    let (rejected_by_hickory, expected_malformed) = results.await.unwrap();
    assert!(
        rejected_by_hickory > 0,
        "the list must include what hickory rejects"
    );

    let (f, h) = (series(&fast), series(&hickory));
    for reason in MALFORMED_REASONS {
        let key = format!("homeaddr_dns_malformed_queries_total{{reason=\"{reason}\"}}");
        let want = expected_malformed.get(reason).copied().unwrap_or_default();
        assert_eq!(f[&key], want[0], "fast: {key}");
        assert_eq!(h[&key], want[1], "hickory: {key}");
    }
    // What hickory rejects or drops before our handler is not counted
    // there; everything else must be counted alike.
    let sent = (queries().len() as u64 + 3) * 2;
    assert_eq!(f["homeaddr_dns_queries_total{transport=\"udp\"}"], sent);
    assert_eq!(f["homeaddr_dns_dropped_total"], 4);
    let formerr = "homeaddr_dns_responses_total{rcode=\"FORMERR\"}";
    assert_eq!(f[formerr], h[formerr] + rejected_by_hickory);
    for (k, v) in &f {
        if k.contains("malformed")
            || k.contains("queries_total")
            || k.contains("dropped")
            || k == formerr
        {
            continue;
        }
        assert_eq!(h.get(k), Some(v), "{k}");
    }
    fast.shutdown().await;
    hickory.shutdown().await;
}
