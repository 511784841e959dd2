//! Members behind a NAT; legacy clients behind a NAT.

use homeaddr_control::{MemberRow, MemberState, Request};
use homeaddr_netns_tests::natlab::daemons::DaemonOptions;
use homeaddr_netns_tests::natlab::{Family, LabConfig, NatOptions, Site};

use crate::common::heavy_test;
use crate::support::*;

/// (a) A member behind a NAT (IPv4 underlay, the AP's IPv4 endpoint)
/// registers; the AP lists it active at its mapped endpoint (the NAT's
/// outside address); a public legacy client reaches the IPv6 home address
/// through the AP and gets its download intact.
#[test]
fn member_behind_nat_registers_and_serves_a_legacy_client() {
    let Some(_guard) = heavy_test() else { return };
    let mut lab = lab("natmemb", LabConfig::default());
    let n = lab.add_nat(NatOptions::default()).expect("NAT");
    lab.add_member(1, Site::Nat(n), &DaemonOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    let rows: Vec<MemberRow> = lab.ap.ask(Request::Members).expect("AP members");
    let row = rows
        .iter()
        .find(|m| m.id == 1)
        .expect("the AP lists member 1");
    println!(
        "member 1 at {} behind nat{n}: the AP lists it {} at {}; member status aps: {}",
        lab.member(1).v4,
        row.state.name(),
        row.care_of,
        lab.member(1).status()["aps"]
    );
    assert_eq!(row.state, MemberState::Active);
    assert_eq!(
        row.care_of.ip(),
        std::net::IpAddr::from(lab.nat(n).outside),
        "the AP sees the member at its NAT's outside address"
    );
    lab.add_legacy("c0", Site::Public).expect("client");
    let c0 = lab.client("c0");
    assert_eq!(who(&lab, c0, lab.service(Family::V6)), "member1");
    let get = get_intact(&lab, c0, lab.service(Family::V6), 4 << 20);
    println!(
        "legacy client over IPv6 via the AP to a member behind a NAT: {} bytes, {:.1} Mbit/s",
        get.bytes,
        get.mbit_per_s()
    );
}

/// (c) A member behind a NAT and a public shim (IPv4 underlay, IPv6 home
/// address, so its client address comes from the AP's pool): route
/// optimization (the member signs its BU over the endpoint the AP
/// observed); the download goes direct and is intact.
#[test]
fn member_behind_nat_route_optimizes_with_a_public_shim() {
    let Some(_guard) = heavy_test() else { return };
    let mut lab = lab("natmemro", LabConfig::pools());
    let n = lab.add_nat(NatOptions::default()).expect("NAT");
    lab.add_member(1, Site::Nat(n), &DaemonOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    lab.add_shim("s", Site::Public, Family::V6, &DaemonOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (shim, member) = (lab.client("s"), lab.member(1));
    assert_eq!(who(&lab, shim, lab.service(Family::V6)), "member1");
    let took = await_ro(&lab, shim, member, 1);
    println!(
        "route optimization with a member behind a NAT after {} ms; member aps: {}; rows: {:?}",
        took.as_millis(),
        member.status()["aps"],
        member_rows(member)
    );
    let status = member.status();
    assert_eq!(
        status["behind_nat"],
        serde_json::Value::Bool(true),
        "{status}"
    );
    let observed = status["aps"][0]["observed"].as_str().unwrap_or_default();
    assert!(
        observed.starts_with(&format!("{}:", lab.nat(n).outside)),
        "the member learnt its mapped endpoint from the AP: {status}"
    );
    let before = ap_shim_packets(&lab);
    let get = get_intact(&lab, shim, lab.service(Family::V6), 16 << 20);
    let after = ap_shim_packets(&lab);
    println!(
        "16 MB direct: {:.1} Mbit/s, path {}, AP shim packets +{}",
        get.mbit_per_s(),
        shim_path(shim),
        after - before
    );
    assert_eq!(shim_path(shim), "direct", "{}", lab.dump());
    assert!(
        after - before < 200,
        "the AP carried the transfer: +{}",
        after - before
    );
}

/// A legacy IPv4 client behind a NAT reaches the IPv4 home address through
/// the AP (masqueraded to its NAT's address) and gets its download intact.
#[test]
fn legacy_ipv4_client_behind_nat_reaches_the_ipv4_home_address() {
    let Some(_guard) = heavy_test() else { return };
    let mut lab = lab("natleg4", LabConfig::v4());
    let n = lab.add_nat(NatOptions::default()).expect("NAT");
    lab.add_member(1, Site::Public, &DaemonOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    lab.add_legacy("c0", Site::Nat(n)).expect("client");
    let c0 = lab.client("c0");
    let before = ap_legacy_packets(&lab);
    assert_eq!(who(&lab, c0, lab.service(Family::V4)), "member1");
    let get = get_intact(&lab, c0, lab.service(Family::V4), 4 << 20);
    println!(
        "IPv4 legacy client behind nat{n} to {}: {} bytes, {:.1} Mbit/s, AP legacy packets +{}",
        lab.service(Family::V4),
        get.bytes,
        get.mbit_per_s(),
        ap_legacy_packets(&lab) - before
    );
    assert!(ap_legacy_packets(&lab) > before, "through the AP");
}

/// Mixed underlays in one service: the AP on the dual-stack `[::]:4790`,
/// member 1 public on IPv6, member 2 behind a NAT on IPv4. Both register;
/// public legacy clients (the AP picks by client address) reach both.
#[test]
fn mixed_underlays_in_one_service() {
    let Some(_guard) = heavy_test() else { return };
    let config = LabConfig {
        ap_listen_v6: true,
        ..LabConfig::default()
    };
    let mut lab = lab("natmixed", config);
    let n = lab.add_nat(NatOptions::default()).expect("NAT");
    let v6 = DaemonOptions {
        underlay: Family::V6,
        ..DaemonOptions::default()
    };
    lab.add_member(1, Site::Public, &v6)
        .unwrap_or_else(|e| panic!("{e:#}"));
    lab.add_member(2, Site::Nat(n), &DaemonOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    let rows: Vec<MemberRow> = lab.ap.ask(Request::Members).expect("AP members");
    println!(
        "AP members: {:?}",
        rows.iter()
            .map(|m| (m.id, m.state.name(), m.care_of))
            .collect::<Vec<_>>()
    );
    assert!(rows.iter().all(|m| m.state == MemberState::Active));
    assert!(rows.iter().any(|m| m.id == 1 && m.care_of.is_ipv6()));
    assert!(rows.iter().any(|m| m.id == 2 && m.care_of.is_ipv4()));
    // The AP picks a member by the client's address: one connection from
    // each of 8 clients (addresses and table are deterministic).
    let mut served = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..8 {
        let name = format!("c{i}");
        lab.add_legacy(&name, Site::Public).expect("client");
        let c = lab.client(&name);
        *served
            .entry(who(&lab, c, lab.service(Family::V6)))
            .or_default() += 1;
    }
    println!("8 clients: {served:?}");
    assert_eq!(served.len(), 2, "one member served all: {served:?}");
}
