//! Whole queries through [`super::answer`] (and the hickory adapter), checked
//! with hickory's parser: rcodes, ECS scope, geo choice, truncation.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{RData, RecordType};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use proptest::prelude::*;

use super::*;
use crate::config::tests::{SAMPLE, sample};
use crate::handler::tests::via_hickory;
use crate::health::{HealthMonitor, Hysteresis};
use crate::wire::{ClientSubnet, Name, build_query, put_rr_header};

const FRA: usize = 1;
const NYC: usize = 2;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn snap_all_up() -> Snapshot {
    Snapshot::new(Arc::new(sample())).with_health(vec![SiteHealth::UP; 3])
}

fn q(name: &str, qtype: u16) -> Vec<u8> {
    build_query(0xbeef, &Name::from_dotted(name).unwrap(), qtype, None)
}

fn q_ecs(name: &str, qtype: u16, addr: &str, prefix: u8) -> Vec<u8> {
    let ecs = ClientSubnet::for_query(ip(addr), prefix);
    build_query(
        0xbeef,
        &Name::from_dotted(name).unwrap(),
        qtype,
        Some((1232, Some(ecs))),
    )
}

fn q_edns(name: &str, qtype: u16, payload: u16) -> Vec<u8> {
    build_query(
        0xbeef,
        &Name::from_dotted(name).unwrap(),
        qtype,
        Some((payload, None)),
    )
}

/// A query with a raw ECS OPTION-DATA (for malformed options).
fn q_raw_ecs(data: &[u8]) -> Vec<u8> {
    let mut m = q("svc.example.com.", rtype::AAAA);
    m[11] = 1;
    put_rr_header(&mut m, &[0], rtype::OPT, 1232, 0, 4 + data.len());
    m.extend_from_slice(&wire::OPTION_CLIENT_SUBNET.to_be_bytes());
    m.extend_from_slice(&(data.len() as u16).to_be_bytes());
    m.extend_from_slice(data);
    m
}

/// Runs a query through the core and through the hickory handler with a
/// capturing sink; both must agree. Returns the parsed reply.
fn ask_on(snap: &Snapshot, query: &[u8], src: &str, transport: Transport) -> Option<Message> {
    compare_paths(snap, query, src, transport, true)
}

/// `strict`: when hickory's parser rejects the query, the core must
/// answer FORMERR too. Damaged queries in the fuzz test relax this: our
/// parser skips the RDATA of records other than OPT, which hickory
/// decodes (and hickory's server answers FORMERR for those itself).
fn compare_paths(
    snap: &Snapshot,
    query: &[u8],
    src: &str,
    transport: Transport,
    strict: bool,
) -> Option<Message> {
    let src = SocketAddr::new(ip(src), 40000);
    let mut out = Vec::new();
    let core = answer(snap, query, src.ip(), transport, &mut out).map(|_| out.clone());
    let protocol = match transport {
        Transport::Udp => Protocol::Udp,
        Transport::Tcp => Protocol::Tcp,
    };
    let hickory_parses = Request::from_bytes(query.to_vec(), src, protocol)
        .map(|r| r.metadata.message_type == MessageType::Query)
        .unwrap_or(false);
    let parsed = core
        .as_ref()
        .map(|c| Message::from_vec(c).expect("core reply parses"));
    if hickory_parses {
        let h = via_hickory(snap.clone(), query, src, protocol);
        let h = h.map(|h| Message::from_vec(&h).expect("hickory reply parses"));
        assert_eq!(parsed, h, "core and hickory paths differ");
    } else if let Some(p) = parsed.as_ref().filter(|_| strict) {
        // hickory's server answers FORMERR itself for what it cannot
        // parse, or drops a non-query; the core must agree.
        assert_eq!(
            p.metadata.response_code,
            ResponseCode::FormErr,
            "core answered what hickory rejects"
        );
    }
    parsed
}

fn ask(snap: &Snapshot, query: &[u8], src: &str) -> Message {
    ask_on(snap, query, src, Transport::Udp).expect("a reply")
}

/// [`ask`] for the geo service's AAAA, with ECS `addr/prefix`, from `src`.
fn ask_svc(snap: &Snapshot, addr: &str, prefix: u8, src: &str) -> Message {
    ask(
        snap,
        &q_ecs("svc.example.com.", rtype::AAAA, addr, prefix),
        src,
    )
}

fn aaaa(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

fn ecs(m: &Message) -> Option<(IpAddr, u8, u8)> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some((s.addr(), s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}

fn soa_in_authority(m: &Message) -> bool {
    m.authorities.len() == 1
        && m.authorities[0].record_type() == RecordType::SOA
        && m.authorities[0].name.to_ascii() == "example.com."
}

#[test]
fn ecs_selects_nearest_site_and_echoes_with_decision_scope() {
    let s = snap_all_up();
    let m = ask_svc(&s, "2001:db8:100:ff00::", 56, "192.0.2.1");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(aaaa(&m), vec![ip("2001:db8:f::1")]);
    assert_eq!(ecs(&m), Some((ip("2001:db8:100:ff00::"), 56, 56)));
    assert_eq!(m.answers[0].ttl, 60);
}

#[test]
fn scope_is_where_the_lookup_decided() {
    let s = snap_all_up();
    // Inside the eu /40, away from the /56: decided at /41.
    let m = ask_svc(&s, "2001:db8:180::", 48, "192.0.2.1");
    assert_eq!(aaaa(&m), vec![ip("2001:db8:a::1")]);
    assert_eq!(ecs(&m), Some((ip("2001:db8:180::"), 48, 41)));
    // More bits than needed: the /24 network decides, scope 24 < 32.
    let m = ask_svc(&s, "203.0.113.77", 32, "192.0.2.1");
    assert_eq!(aaaa(&m), vec![ip("2001:db8:c::1"), ip("2001:db8:c::2")]);
    assert_eq!(ecs(&m), Some((ip("203.0.113.77"), 32, 24)));
    // No configured network: default policy; the scope is the size of
    // the unconfigured block around the client (192/5 vs 203.0.113/24),
    // neither 0 nor 32.
    let m = ask_svc(&s, "192.0.2.0", 24, "198.51.100.1");
    assert_eq!(aaaa(&m), vec![ip("2001:db8:a::1")]);
    assert_eq!(ecs(&m), Some((ip("192.0.2.0"), 24, 5)));
    // Fewer bits than the config needs: scope longer than source.
    let m = ask_svc(&s, "2001:db8:100::", 40, "192.0.2.1");
    assert_eq!(ecs(&m), Some((ip("2001:db8:100::"), 40, 49)));
}

#[test]
fn no_ecs_in_query_means_none_in_reply_and_source_decides() {
    let s = snap_all_up();
    let m = ask(
        &s,
        &q_edns("svc.example.com.", rtype::AAAA, 1232),
        "203.0.113.5",
    );
    assert_eq!(aaaa(&m), vec![ip("2001:db8:c::1"), ip("2001:db8:c::2")]);
    assert!(m.edns.is_some());
    assert_eq!(ecs(&m), None);
    let m = ask(
        &s,
        &q("svc.example.com.", rtype::AAAA),
        "2001:db8:100:ff00::9",
    );
    assert_eq!(aaaa(&m), vec![ip("2001:db8:f::1")]);
    assert!(m.edns.is_none());
    // IPv4-mapped source from a dual-stack socket counts as IPv4.
    let m = ask(
        &s,
        &q("svc.example.com.", rtype::AAAA),
        "::ffff:203.0.113.5",
    );
    assert_eq!(aaaa(&m)[0], ip("2001:db8:c::1"));
}

#[test]
fn ecs_source_prefix_zero_uses_source_and_scope_zero() {
    let s = snap_all_up();
    let m = ask_svc(&s, "0.0.0.0", 0, "203.0.113.5");
    assert_eq!(aaaa(&m)[0], ip("2001:db8:c::1"));
    assert_eq!(ecs(&m), Some((ip("0.0.0.0"), 0, 0)));
}

#[test]
fn private_ecs_address_is_ignored_and_scope_covers_the_private_block() {
    let s = snap_all_up();
    // 10.0.0.0/8 is configured for nyc, but a private ECS address says
    // nothing: the resolver's address (in the fra /56) decides.
    let m = ask_svc(&s, "10.1.2.0", 24, "2001:db8:100:ff00::53");
    assert_eq!(aaaa(&m), vec![ip("2001:db8:f::1")]);
    assert_eq!(ecs(&m), Some((ip("10.1.2.0"), 24, 8)));
    let m = ask_svc(&s, "fd00:1::", 48, "203.0.113.5");
    assert_eq!(aaaa(&m)[0], ip("2001:db8:c::1"));
    assert_eq!(ecs(&m), Some((ip("fd00:1::"), 48, 7)));
    // A prefix wider than the private block is not private.
    assert_eq!(private_range(ip("10.0.0.0"), 7), None);
}

#[test]
fn malformed_ecs_is_formerr() {
    let s = snap_all_up();
    for data in [
        &[0u8, 3, 0, 0][..],          // unknown family
        &[0, 1, 23, 0, 198, 51, 101], // bit beyond source prefix
        &[0, 1, 16, 0, 198, 51, 0],   // too many octets
        &[0, 1, 24, 0, 198, 51],      // too few octets
        &[0, 2, 129, 0],              // prefix beyond 128
        &[0, 1],                      // short option
    ] {
        let m = ask(&s, &q_raw_ecs(data), "192.0.2.1");
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{data:?}");
        assert!(m.answers.is_empty());
        assert_eq!(ecs(&m), None);
    }
    // Two ECS options.
    let mut two = q("svc.example.com.", rtype::AAAA);
    two[11] = 1;
    put_rr_header(&mut two, &[0], rtype::OPT, 1232, 0, 2 * 11);
    for _ in 0..2 {
        ClientSubnet::for_query(ip("198.51.100.0"), 24).emit(&mut two);
    }
    assert_eq!(
        ask(&s, &two, "192.0.2.1").metadata.response_code,
        ResponseCode::FormErr
    );
}

#[test]
fn nxdomain_and_nodata_carry_the_soa() {
    let s = snap_all_up();
    let m = ask(
        &s,
        &q_ecs("nope.example.com.", rtype::AAAA, "198.51.100.0", 24),
        "192.0.2.1",
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    assert!(m.answers.is_empty());
    assert!(soa_in_authority(&m));
    assert_eq!(m.authorities[0].ttl, 30);
    assert_eq!(ecs(&m), Some((ip("198.51.100.0"), 24, 0)));
    // Existing name, missing type.
    let m = ask(&s, &q("svc.example.com.", 15), "192.0.2.1");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && soa_in_authority(&m));
    // Empty non-terminal: NODATA, not NXDOMAIN (RFC 8020).
    let m = ask(&s, &q("_udp.svc.example.com.", rtype::TXT), "192.0.2.1");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(soa_in_authority(&m));
    // Unknown type number.
    let m = ask(&s, &q("svc.example.com.", 65280), "192.0.2.1");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && soa_in_authority(&m));
    // A for a service whose only site has no IPv4: NODATA.
    let m = ask(&s, &q("fra.example.com.", rtype::A), "192.0.2.1");
    assert!(m.answers.is_empty() && soa_in_authority(&m));
}

#[test]
fn apex_and_name_server_records() {
    let s = snap_all_up();
    let m = ask(&s, &q("example.com.", rtype::SOA), "192.0.2.1");
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);
    let m = ask(&s, &q("example.com.", rtype::NS), "192.0.2.1");
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].record_type(), RecordType::NS);
    let m = ask(&s, &q("ns1.example.com.", rtype::AAAA), "192.0.2.1");
    assert_eq!(aaaa(&m), vec![ip("2001:db8::53")]);
    let m = ask(&s, &q("ns1.example.com.", rtype::A), "192.0.2.1");
    assert_eq!(aaaa(&m), vec![ip("192.0.2.53")]);
}

#[test]
fn refused_outside_the_zone_and_for_other_classes_and_transfers() {
    let s = snap_all_up();
    for query in [
        q("svc.example.net.", rtype::AAAA),
        q("com.", rtype::NS),
        q("xample.com.", rtype::A),
        q("example.com.", rtype::AXFR),
    ] {
        let m = ask(&s, &query, "192.0.2.1");
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.authoritative);
        assert!(m.answers.is_empty());
    }
    let mut ch = q("svc.example.com.", rtype::TXT);
    let n = ch.len();
    ch[n - 1] = 3; // class CH
    assert_eq!(
        ask(&s, &ch, "192.0.2.1").metadata.response_code,
        ResponseCode::Refused
    );
}

#[test]
fn badvers_for_edns_version_above_zero() {
    let s = snap_all_up();
    let mut m = q_ecs("svc.example.com.", rtype::AAAA, "198.51.100.0", 24);
    // OPT TTL octet 2 is the version: header + question, then OPT's
    // name(1) type(2) class(2), ttl at +5.
    let opt = 12
        + Name::from_dotted("svc.example.com.")
            .unwrap()
            .as_wire()
            .len()
        + 4;
    m[opt + 6] = 1;
    let r = ask(&s, &m, "192.0.2.1");
    // 16 is both BADVERS and BADSIG; hickory names it BADSIG.
    assert_eq!(u16::from(r.metadata.response_code), rcode::BADVERS);
    let e = r.edns.as_ref().expect("OPT in reply");
    assert_eq!(e.version(), 0);
    assert_eq!(ecs(&r), None);
    assert!(r.answers.is_empty());
}

#[test]
fn notimp_for_other_opcodes_and_case_is_preserved() {
    let s = snap_all_up();
    let mut m = q("svc.example.com.", rtype::AAAA);
    m[2] |= 2 << 3; // OPCODE 2 (STATUS)
    assert_eq!(
        ask(&s, &m, "192.0.2.1").metadata.response_code,
        ResponseCode::NotImp
    );
    let mut out = Vec::new();
    let query = q("SvC.ExAmPlE.cOm.", rtype::AAAA);
    answer(&s, &query, ip("203.0.113.5"), Transport::Udp, &mut out).unwrap();
    // Question echoed byte for byte (0x20 resolvers check it).
    assert_eq!(&out[12..query.len()], &query[12..]);
    let m = ask(&s, &query, "203.0.113.5");
    assert_eq!(aaaa(&m)[0], ip("2001:db8:c::1"));
}

#[test]
fn a_records_where_configured() {
    let s = snap_all_up();
    // eu client whose first choice fra has no IPv4: ams serves A, and
    // that is not a fallback (full TTL).
    let m = ask(
        &s,
        &q_ecs("svc.example.com.", rtype::A, "2001:db8:100:ff00::", 56),
        "192.0.2.1",
    );
    assert_eq!(aaaa(&m), vec![ip("192.0.2.10")]);
    assert_eq!(m.answers[0].ttl, 60);
    let m = ask(&s, &q("svc.example.com.", rtype::A), "203.0.113.5");
    assert_eq!(aaaa(&m), vec![ip("198.51.100.10")]);
}

#[test]
fn an_a_query_with_ipv4_ecs_picks_the_site_nearest_the_subnet() {
    let s = snap_all_up();
    // From the resolver's own address (no network: the default location,
    // London) ams is nearest...
    let m = ask(&s, &q("svc.example.com.", rtype::A), "192.0.2.1");
    assert_eq!(aaaa(&m), vec![ip("192.0.2.10")]);
    // ...but the client subnet is in San Francisco: nyc's IPv4 address,
    // the ECS option echoed with the decision's scope.
    let m = ask(
        &s,
        &q_ecs("svc.example.com.", rtype::A, "203.0.113.0", 24),
        "192.0.2.1",
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(aaaa(&m), vec![ip("198.51.100.10")]);
    assert_eq!(ecs(&m), Some((ip("203.0.113.0"), 24, 24)));
    assert_eq!(m.answers[0].ttl, 60);
}

#[test]
fn discovery_record_names_the_sites_ap_endpoint() {
    let s = snap_all_up();
    let m = ask(
        &s,
        &q_ecs(
            "_homeaddr._udp.svc.example.com.",
            rtype::TXT,
            "203.0.113.0",
            24,
        ),
        "192.0.2.1",
    );
    let texts: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts,
        vec!["v=homeaddr1 site=nyc ap=198.51.100.100:4500".to_string()]
    );
    assert_eq!(ecs(&m), Some((ip("203.0.113.0"), 24, 24)));
    assert_eq!(
        crate::discover::parse_discovery_text(&texts[0]),
        Some("198.51.100.100:4500".parse().unwrap())
    );
}

#[test]
fn ttl_is_short_while_uncertain_or_on_fallback() {
    let mut s = snap_all_up();
    s.health[NYC] = SiteHealth {
        serving: true,
        uncertain: true,
    };
    let m = ask(&s, &q("svc.example.com.", rtype::AAAA), "203.0.113.5");
    assert_eq!(m.answers[0].ttl, 5);
    s.health[NYC] = SiteHealth::DOWN;
    let m = ask(&s, &q("svc.example.com.", rtype::AAAA), "203.0.113.5");
    assert_eq!(aaaa(&m), vec![ip("2001:db8:a::1")]);
    assert_eq!(m.answers[0].ttl, 5);
}

#[test]
fn all_down_policies() {
    let mut s = snap_all_up();
    s.health = vec![SiteHealth::DOWN; 3];
    let m = ask_svc(&s, "203.0.113.0", 24, "192.0.2.1");
    // Fail open: every site, nearest first, short TTL.
    assert_eq!(
        aaaa(&m),
        vec![
            ip("2001:db8:c::1"),
            ip("2001:db8:c::2"),
            ip("2001:db8:a::1"),
            ip("2001:db8:f::1")
        ]
    );
    assert!(m.answers.iter().all(|r| r.ttl == 5));
    assert_eq!(ecs(&m), Some((ip("203.0.113.0"), 24, 24)));
    let zone =
        Zone::from_toml(&SAMPLE.replace("all_down = \"fail-open\"", "all_down = \"nodata\""))
            .unwrap();
    let s = Snapshot::new(Arc::new(zone)).with_health(vec![SiteHealth::DOWN; 3]);
    let m = ask_svc(&s, "203.0.113.0", 24, "192.0.2.1");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && soa_in_authority(&m));
}

fn big_zone() -> Snapshot {
    let hoas: Vec<String> = (1..=60).map(|i| format!("\"2001:db8:b::{i:x}\"")).collect();
    let text = SAMPLE.replacen(
        "hoas = [\"2001:db8:a::1\"]",
        &format!("hoas = [{}]", hoas.join(", ")),
        1,
    );
    Snapshot::new(Arc::new(Zone::from_toml(&text).unwrap())).with_health(vec![SiteHealth::UP; 3])
}

#[test]
fn large_answers_truncate_over_udp_and_fit_over_tcp() {
    let s = big_zone();
    // No EDNS: 512 octets, so 60 AAAA (28 octets each) cannot fit.
    let m = ask(&s, &q("svc.example.com.", rtype::AAAA), "192.0.2.1");
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    assert_eq!(m.queries.len(), 1);
    // With EDNS and ECS: still truncated at 1232, OPT and ECS kept.
    let m = ask_svc(&s, "192.0.2.0", 24, "192.0.2.1");
    assert!(m.metadata.truncation);
    assert_eq!(ecs(&m), Some((ip("192.0.2.0"), 24, 5)));
    // A 4096 payload is capped by our max_udp_payload (1232).
    let m = ask(
        &s,
        &q_edns("svc.example.com.", rtype::AAAA, 4096),
        "192.0.2.1",
    );
    assert!(m.metadata.truncation);
    // TCP: everything.
    let m = ask_on(
        &s,
        &q("svc.example.com.", rtype::AAAA),
        "192.0.2.1",
        Transport::Tcp,
    )
    .unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
}

#[test]
fn max_answers_spreads_clients_by_weight() {
    let s = snap_all_up();
    let m = ask(
        &s,
        &q_ecs("one.example.com.", rtype::AAAA, "203.0.113.0", 24),
        "192.0.2.1",
    );
    assert_eq!(m.answers.len(), 1);
    // The address choice depends on the /24, so the scope is 24.
    assert_eq!(ecs(&m), Some((ip("203.0.113.0"), 24, 24)));
    let mut seen = std::collections::HashMap::new();
    let zone = &s.zone;
    for k in 0..2000u32 {
        let client = IpAddr::V4((0xcb00_7100u32 & 0xffff_ff00 ^ (k << 8)).into());
        let mut out = Vec::new();
        let query = build_query(
            1,
            &Name::from_dotted("one.example.com.").unwrap(),
            rtype::AAAA,
            Some((1232, Some(ClientSubnet::for_query(client, 24)))),
        );
        // Force nyc: only nyc has two addresses; use a snapshot where
        // the others are down.
        let snap = Snapshot {
            zone: zone.clone(),
            health: vec![SiteHealth::DOWN, SiteHealth::DOWN, SiteHealth::UP],
        };
        answer(&snap, &query, ip("192.0.2.1"), Transport::Udp, &mut out).unwrap();
        let m = Message::from_vec(&out).unwrap();
        *seen.entry(aaaa(&m)[0]).or_insert(0u32) += 1;
    }
    let heavy = seen[&ip("2001:db8:c::2")] as f64 / 2000.0;
    assert!(
        (0.68..0.82).contains(&heavy),
        "weight-3 address share {heavy}"
    );
}

#[test]
fn dnssec_ok_bit_is_copied() {
    let s = snap_all_up();
    let mut m = q_edns("svc.example.com.", rtype::AAAA, 1232);
    let n = m.len();
    m[n - 4] = 0x80; // DO bit (OPT TTL octet 3)
    let r = ask(&s, &m, "192.0.2.1");
    assert!(r.edns.as_ref().unwrap().flags().dnssec_ok);
}

#[test]
fn responses_and_runts_get_no_reply() {
    let s = snap_all_up();
    let mut m = q("svc.example.com.", rtype::AAAA);
    m[2] |= 0x80;
    assert!(ask_on(&s, &m, "192.0.2.1", Transport::Udp).is_none());
    assert!(ask_on(&s, &[1, 2, 3], "192.0.2.1", Transport::Udp).is_none());
}

/// A site goes down: answers move only after `down_after` failed probes,
/// and come back only after `up_after` good ones. Virtual time.
#[test]
fn answers_move_after_threshold_and_return_after_recovery() {
    let zone = Arc::new(sample());
    let t0 = Instant::now();
    let h = Hysteresis {
        down_after: 3,
        up_after: 2,
    };
    assert_eq!(zone.hysteresis, h);
    let mut mon = HealthMonitor::new(t0, &zone.health_sources(), h, zone.probe_interval);
    let base = Snapshot::new(zone.clone());
    let client = q_ecs("svc.example.com.", rtype::AAAA, "2001:db8:100:ff00::", 56);
    let mut now = t0;
    let probe_round = |mon: &mut HealthMonitor, now: &mut Instant, fra_ok: bool| {
        while let Some(site) = mon.poll_probe(*now) {
            let ok = site != FRA || fra_ok;
            mon.on_probe_result(*now + Duration::from_millis(3), site, ok);
        }
        *now = mon.poll_timeout().expect("probes scheduled");
    };
    let site_for = |mon: &HealthMonitor| {
        let snap = base.with_health(mon.view());
        let m = ask(&snap, &client, "192.0.2.1");
        (aaaa(&m)[0], m.answers[0].ttl)
    };
    // Two good rounds: fra up, full TTL.
    probe_round(&mut mon, &mut now, true);
    probe_round(&mut mon, &mut now, true);
    assert_eq!(site_for(&mon), (ip("2001:db8:f::1"), 60));
    // fra fails: two failures keep answers (short TTL: uncertain)...
    probe_round(&mut mon, &mut now, false);
    assert_eq!(site_for(&mon), (ip("2001:db8:f::1"), 5));
    probe_round(&mut mon, &mut now, false);
    assert_eq!(site_for(&mon), (ip("2001:db8:f::1"), 5));
    // ...the third moves them to ams.
    probe_round(&mut mon, &mut now, false);
    assert_eq!(site_for(&mon).0, ip("2001:db8:a::1"));
    let ev = mon
        .poll_event()
        .into_iter()
        .chain(std::iter::from_fn(|| mon.poll_event()))
        .filter(|e| e.site == FRA)
        .last();
    assert_eq!(ev.map(|e| e.to), Some(crate::health::Verdict::Down));
    // One good probe is not enough to come back.
    probe_round(&mut mon, &mut now, true);
    assert_eq!(site_for(&mon).0, ip("2001:db8:a::1"));
    probe_round(&mut mon, &mut now, true);
    assert_eq!(site_for(&mon), (ip("2001:db8:f::1"), 60));
    assert!(now >= t0 + zone.probe_interval * 6);
}

fn check_reply(query: &[u8], reply: &[u8]) {
    let m = Message::from_vec(reply).expect("every reply parses");
    assert_eq!(&reply[0..2], &query[0..2], "id echoed");
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert!(reply.len() <= 512 || m.edns.is_some());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_crash(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let s = snap_all_up();
        let mut out = Vec::new();
        if answer(&s, &bytes, ip("192.0.2.1"), Transport::Udp, &mut out).is_some() {
            check_reply(&bytes, &out);
        }
    }

    #[test]
    fn mutated_queries_never_crash(flips in proptest::collection::vec((0usize..80, any::<u8>()), 1..6), cut in 0usize..80) {
        let s = snap_all_up();
        let mut m = q_ecs("_homeaddr._udp.svc.example.com.", rtype::TXT, "2001:db8:100:ff00::", 56);
        for (at, v) in flips {
            let n = m.len();
            m[at % n] ^= v;
        }
        if cut > 0 && cut < m.len() {
            m.truncate(m.len() - cut);
        }
        let mut out = Vec::new();
        for t in [Transport::Udp, Transport::Tcp] {
            if answer(&s, &m, ip("2001:db8::1"), t, &mut out).is_some() {
                check_reply(&m, &out);
            }
        }
    }

    /// The hickory adapter sends exactly what the core computed, for
    /// damaged input too (or hickory rejects it and the core says
    /// FORMERR).
    #[test]
    fn hickory_path_agrees_on_damaged_queries(flips in proptest::collection::vec((0usize..70, any::<u8>()), 1..4)) {
        let s = snap_all_up();
        let mut m = q_ecs("svc.example.com.", rtype::AAAA, "198.51.100.0", 24);
        for (at, v) in flips {
            let n = m.len();
            m[at % n] ^= v;
        }
        let _ = compare_paths(&s, &m, "192.0.2.1", Transport::Udp, false);
    }
}
