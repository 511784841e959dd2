//! A move may change family (issue 11, the last item): a member and a shim
//! that both know the AP at one endpoint per family
//! (`--access-point 198.18.0.10:4790,[fd00:4842:ffff::10]:4790`) move from
//! IPv4 to IPv6 one after the other while a download runs. In between they
//! are in different families: no direct path, the member says why
//! (`bindings[].ro` names the family) and the traffic goes through the AP;
//! once both are on IPv6, route optimization comes back by itself. The
//! download finishes intact.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use homeaddr_control::{MemberRow, Request};
use homeaddr_netns_tests::cluster::transfer::{self, Transfers};
use homeaddr_netns_tests::natlab::daemons::DaemonOptions;
use homeaddr_netns_tests::natlab::{Family, INET_IF, Lab, LabConfig, LabHost, Site};
use homeaddr_netns_tests::scenario::read;
use homeaddr_netns_tests::service::TUNNEL_PORT;
use serde_json::Value;

use crate::common::heavy_test;
use crate::support::*;

/// The download across both moves: 50 MB.
const BULK: u64 = 50 << 20;
/// Its pace: about 50 s, so it is still running when route optimization
/// is back after the second move (each step asserts it is).
const RATE: u64 = 1 << 20;
/// How long a move may take to show in the daemons' status (the shim
/// checks its route every second).
const MOVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Packets that show a path carries the transfer (about 1 s of it).
const SOME_PACKETS: u64 = 200;

/// An endpoint of a status field (`"[fd00::1]:4790"`), an IPv4-mapped
/// address as the IPv4 one.
fn endpoint(v: &Value) -> Option<SocketAddr> {
    let a: SocketAddr = v.as_str()?.parse().ok()?;
    Some(SocketAddr::new(a.ip().to_canonical(), a.port()))
}

/// The care-of endpoint of the shim's binding with member `id`.
fn shim_care_of(shim: &LabHost, id: u16) -> Option<SocketAddr> {
    shim.status()["bindings"]
        .as_array()?
        .iter()
        .find(|b| b["member"].as_u64() == Some(u64::from(id)))
        .and_then(|b| endpoint(&b["care_of"]))
}

/// The member's correspondent row for client address `client`.
fn member_row(member: &LabHost, client: Ipv6Addr) -> Option<Value> {
    member_rows(member).into_iter().find(|r| {
        r["client"]
            .as_str()
            .and_then(|c| c.parse::<Ipv6Addr>().ok())
            == Some(client)
    })
}

/// The care-of endpoint the AP lists for member `id`.
fn ap_care_of(lab: &Lab, id: u16) -> Option<SocketAddr> {
    let rows: Vec<MemberRow> = lab.ap.ask(Request::Members).ok()?;
    let row = rows.into_iter().find(|m| m.id == id)?;
    Some(SocketAddr::new(
        row.care_of.ip().to_canonical(),
        row.care_of.port(),
    ))
}

/// The member's first AP as its status shows it: the endpoint in use and
/// whether it is registered there.
fn member_ap(member: &LabHost) -> (Option<SocketAddr>, bool) {
    let s = member.status();
    let ap = &s["aps"][0];
    (
        endpoint(&ap["endpoint"]),
        ap["state"]["state"] == "registered",
    )
}

/// Counters of a status, by name, as `name value` pairs.
fn counters(status: &Value, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n} {}", read::counter(status, n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A public member 1 (care-of `198.18.0.20:4790`) and a public dual-stack
/// shim "s" (IPv6 home address, no `--local`: it starts on IPv4, the AP's
/// first endpoint), both given the AP's endpoints of both families. While
/// a 50 MB download runs route-optimized on IPv4, the member moves to its
/// IPv6 care-of: it re-registers at the AP's IPv6 endpoint, its row for the
/// client has no binding and names the family, the transfer goes on
/// through the AP. Then the shim's host loses its IPv4 address: the shim
/// moves to the AP's IPv6 endpoint from its IPv6 address (`moves` >= 1,
/// same client address), and route optimization comes back on IPv6 (the
/// shim's binding has the member's IPv6 care-of, the member's row is bound
/// again). The download finishes with the payload's SHA-256; the longest
/// pause after each move is printed.
#[test]
fn member_and_shim_change_family_mid_transfer() {
    let Some(_guard) = heavy_test() else { return };
    // The AP listens on the dual-stack `[::]:4790`: reachable in both
    // families.
    let config = LabConfig {
        ap_listen_v6: true,
        ..LabConfig::full()
    };
    let mut lab = lab("natfam", config);
    let (ap4, ap6) = (lab.ap_endpoint(), lab.ap_endpoint_v6());
    let both = DaemonOptions {
        access_point: Some(format!("{ap4},{ap6}")),
        ..DaemonOptions::default()
    };
    lab.add_member(1, Site::Public, &both)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let shim_options = DaemonOptions {
        no_local: true,
        ..both.clone()
    };
    lab.add_shim("s", Site::Public, Family::V6, &shim_options)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (shim, member) = (lab.client("s"), lab.member(1));
    let member_v4 = member.endpoint(Family::V4, TUNNEL_PORT);
    let member_v6 = member.endpoint(Family::V6, TUNNEL_PORT);
    let shim_v6 = shim.v6.expect("a public host has an IPv6 address");

    // 1. Both start on IPv4: the member at the AP's first endpoint, the
    // shim from the route to it; the shim's client address is from the
    // AP's IPv6 pool.
    let status = shim.status();
    assert_eq!(
        endpoint(&status["access_point"]),
        Some(ap4),
        "{}",
        lab.dump()
    );
    assert_eq!(
        endpoint(&status["local"]).map(|l| l.ip()),
        Some(IpAddr::V4(shim.v4)),
        "the shim without --local does not start from its IPv4 address\n{}",
        lab.dump()
    );
    let client: Ipv6Addr = status["client_address"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("the shim has no client address\n{}", lab.dump()));
    assert!(
        client.to_string().starts_with("fd00:4841:cccc:"),
        "the shim's client address {client} is not from the AP's IPv6 pool\n{}",
        lab.dump()
    );
    assert_eq!(member_ap(member), (Some(ap4), true), "{}", lab.dump());
    assert_eq!(
        endpoint(&member.status()["care_of"]),
        Some(member_v4),
        "{}",
        lab.dump()
    );

    // 2. The download, route-optimized on IPv4.
    let service = lab.service(Family::V6);
    let started = Instant::now();
    let t = Transfers::start(&[&shim.host], service, BULK, RATE).expect("the transfer starts");
    t.wait_progress(RATE / 2, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.dump()));
    lab.wait(
        "route optimization on IPv4 (shim binding with member 1 at its IPv4 care-of, \
             the member's row bound, the transfer direct)",
        RO_TIMEOUT,
        || {
            shim_care_of(shim, 1) == Some(member_v4)
                && member_row(member, client).is_some_and(|r| r["bound"] == true)
                && shim_path(shim) == "direct"
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(t.running(), 1, "the transfer ended before the moves");
    println!(
        "IPv4: route-optimized and the transfer direct {} ms after it started; shim client \
         address {client}, bindings {}; member rows {:?}",
        started.elapsed().as_millis(),
        shim.status()["bindings"],
        member_rows(member)
    );

    // 3. The member moves to IPv6: it re-registers at the AP's IPv6
    // endpoint; the shim is still on IPv4, so no direct path (the member's
    // row says why) and the transfer goes on through the AP.
    let member_moved = Instant::now();
    member
        .host
        .control(Request::Move { care_of: member_v6 })
        .unwrap_or_else(|e| panic!("member move to {member_v6}: {e}\n{}", lab.dump()));
    let took = lab
        .wait(
            "the member registered from its IPv6 care-of at the AP's IPv6 endpoint",
            MOVE_TIMEOUT,
            || {
                member_ap(member) == (Some(ap6), true)
                    && endpoint(&member.status()["care_of"]) == Some(member_v6)
                    && ap_care_of(&lab, 1) == Some(member_v6)
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let unbound = lab
        .wait(
            "the member's row for the client: no binding, the reason names the family",
            RO_TIMEOUT,
            || {
                member_row(member, client).is_some_and(|r| {
                    r["bound"] == false && r["ro"].as_str().is_some_and(|ro| ro.contains("family"))
                })
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (via_ap_in, ap_packets, got) = (
        read::counter(&shim.status(), "via_ap_in"),
        ap_shim_packets(&lab),
        t.progress()[0],
    );
    lab.wait(
        "the transfer to go on through the AP (shim via_ap_in, AP shim packets, bytes)",
        MOVE_TIMEOUT,
        || {
            read::counter(&shim.status(), "via_ap_in") >= via_ap_in + SOME_PACKETS
                && ap_shim_packets(&lab) >= ap_packets + SOME_PACKETS
                && t.progress()[0] >= got + RATE
                && shim_path(shim) == "access-point"
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(t.running(), 1, "the transfer ended before the shim moved");
    println!(
        "member moved to {member_v6}: registered at {ap6} after {} ms, its row unbound after {} ms: {:?}; \
         the transfer through the AP ({})",
        took.as_millis(),
        (took + unbound).as_millis(),
        member_row(member, client),
        counters(&shim.status(), &["via_ap_in", "via_ap_out"])
    );

    // 4. The shim's host loses its IPv4 address: the shim moves to the
    // AP's IPv6 endpoint, and route optimization comes back on IPv6.
    let shim_moved = Instant::now();
    shim.host
        .ns
        .ip(&format!("-4 addr del {}/24 dev {INET_IF}", shim.v4))
        .unwrap_or_else(|e| panic!("deleting the shim's IPv4 address: {e}\n{}", lab.dump()));
    let took = lab
        .wait(
            "the shim to move to the AP's IPv6 endpoint from its IPv6 address (moves >= 1)",
            MOVE_TIMEOUT,
            || {
                let s = shim.status();
                endpoint(&s["access_point"]) == Some(ap6)
                    && endpoint(&s["local"]).is_some_and(|l| l.ip() == IpAddr::V6(shim_v6))
                    && read::counter(&s, "moves") >= 1
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let shim_local = endpoint(&shim.status()["local"]);
    let back = lab
        .wait(
            "route optimization on IPv6 (shim binding at the member's IPv6 care-of, \
             the member's row bound with the shim's IPv6 endpoint, the transfer direct)",
            RO_TIMEOUT,
            || {
                shim_care_of(shim, 1) == Some(member_v6)
                    && member_row(member, client)
                        .is_some_and(|r| r["bound"] == true && endpoint(&r["shim"]) == shim_local)
                    && shim_path(shim) == "direct"
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        t.running(),
        1,
        "the transfer ended before route optimization was back"
    );
    let status = shim.status();
    assert_eq!(
        status["client_address"]
            .as_str()
            .and_then(|c| c.parse().ok()),
        Some(client),
        "the shim's client address changed with the move\n{}",
        lab.dump()
    );
    println!(
        "shim moved to {shim_local:?} -> {ap6} after {} ms, route-optimized again {} ms later: \
         bindings {}; member rows {:?}",
        took.as_millis(),
        back.as_millis(),
        status["bindings"],
        member_rows(member)
    );

    // 5. The download finishes intact.
    let results = t.join();
    let done = Instant::now();
    let summary = transfer::summary(&results);
    let (shim_status, member_status, ap_status) = (shim.status(), member.status(), lab.ap.status());
    let get = results[0]
        .result
        .as_ref()
        .unwrap_or_else(|e| panic!("the transfer broke: {summary}\n{e:#}\n{}", lab.dump()));
    println!(
        "50 MB across both moves: {summary}\n\
         longest pause: after the member's move {} ms, after the shim's move {} ms\n\
         shim: {}\nmember: {}\nAP: {}",
        get.longest_pause_between(member_moved, shim_moved)
            .as_millis(),
        get.longest_pause_between(shim_moved, done).as_millis(),
        counters(
            &shim_status,
            &[
                "moves",
                "fallbacks",
                "roams",
                "via_ap_in",
                "via_ap_out",
                "direct_in",
                "direct_out",
                "bus_accepted"
            ]
        ),
        counters(
            &member_status,
            &[
                "via_ap_in",
                "via_ap_out",
                "direct_in",
                "direct_out",
                "roams"
            ]
        ),
        counters(&ap_status, &["shim_in", "shim_out", "shim_roams"]),
    );
    // How each side learnt of the other's move: the shim dropped its IPv4
    // binding when the member's answers came through the AP (fallback); the
    // AP followed the shim to IPv6 (roam) and its Shim Notice moved the
    // member's correspondent there (roam, not a new client).
    let n = |status: &Value, name: &str| read::counter(status, name);
    assert_eq!(n(&shim_status, "moves"), 1, "{}", lab.dump());
    assert!(n(&shim_status, "fallbacks") >= 1, "{}", lab.dump());
    assert!(n(&ap_status, "shim_roams") >= 1, "{}", lab.dump());
    assert!(n(&member_status, "roams") >= 1, "{}", lab.dump());
    assert!(results[0].kept(), "{summary}\n{}", lab.dump());
    assert_eq!(get.server, "member1", "{summary}");
    assert_eq!(get.bytes, BULK, "{summary}");
}
