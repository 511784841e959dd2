//! What a NAT does to a running flow: its mappings flushed, its UDP
//! timeout running out while the flow is idle.

use std::collections::BTreeSet;
use std::time::Duration;

use homeaddr_netns_tests::cluster::transfer::{self, Transfers};
use homeaddr_netns_tests::natlab::daemons::DaemonOptions;
use homeaddr_netns_tests::natlab::{Family, Lab, LabConfig, NatOptions, Site};
use homeaddr_netns_tests::scenario::read;
use homeaddr_netns_tests::testapp;

use crate::common::heavy_test;
use crate::support::*;

/// A public member 1 and shim "s" behind NAT 1 (`options`), its first
/// connection made; with `bind`, route-optimized, else the shim runs with
/// `--no-route-optimization` (everything through the AP).
fn shim_behind_nat(tag: &str, config: LabConfig, options: NatOptions, bind: bool) -> Lab {
    let mut lab = lab(tag, config);
    let n = lab.add_nat(options).expect("NAT");
    lab.add_member(1, Site::Public, &DaemonOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    let shim_options = DaemonOptions {
        flags: if bind {
            Vec::new()
        } else {
            vec!["--no-route-optimization".into()]
        },
        ..DaemonOptions::default()
    };
    lab.add_shim("s", Site::Nat(n), Family::V6, &shim_options)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (shim, member) = (lab.client("s"), lab.member(1));
    assert_eq!(who(&lab, shim, lab.service(Family::V6)), "member1");
    if bind {
        await_ro(&lab, shim, member, 1);
    }
    lab
}

/// The `roams` counters of the AP, the member and the shim.
fn roams(lab: &Lab) -> String {
    format!(
        "roams: AP {}, member {}, shim {}",
        read::counter(&lab.ap.status(), "roams"),
        read::counter(&lab.member(1).status(), "roams"),
        read::counter(&lab.client("s").status(), "roams")
    )
}

/// A paced download by the shim, the NAT's table flushed once it runs:
/// the shim's next packets leave from new mappings (new ports with
/// `random`), the AP and (when bound) the member move the shim's endpoint
/// there (roaming), and the download finishes intact on the path it had.
/// Prints the longest stall.
fn flush_mid_transfer(lab: &Lab, path: &str) {
    let shim = lab.client("s");
    const BYTES: u64 = 12 << 20;
    const RATE: u64 = 1 << 20;
    let t = Transfers::start(&[&shim.host], lab.service(Family::V6), BYTES, RATE)
        .expect("transfer starts");
    t.wait_progress(2 * RATE, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.dump()));
    assert_eq!(t.running(), 1, "the transfer ended early");
    assert_eq!(shim_path(shim), path, "{}", lab.dump());
    let before = lab.nat(1).mappings_from(shim.v4);
    lab.nat(1).flush().expect("conntrack -F");
    let flushed = std::time::Instant::now();
    let random = lab.nat(1).options.random;
    lab.wait(
        "the shim's flows to get new mappings",
        Duration::from_secs(10),
        || {
            let now = lab.nat(1).mappings_from(shim.v4);
            // Without `random` the kernel keeps the port: a new entry with
            // the same mapping.
            !now.is_empty()
                && (!random
                    || now
                        .iter()
                        .all(|m| before.iter().all(|b| b.mapped != m.mapped)))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    println!(
        "NAT flushed: the shim's mappings {:?} -> {:?} after {} ms",
        before
            .iter()
            .map(|m| (m.remote, m.mapped))
            .collect::<Vec<_>>(),
        lab.nat(1)
            .mappings_from(shim.v4)
            .iter()
            .map(|m| (m.remote, m.mapped))
            .collect::<Vec<_>>(),
        flushed.elapsed().as_millis()
    );
    let results = t.join();
    let summary = transfer::summary(&results);
    println!(
        "flush mid-transfer ({path}): {summary}; longest stall {} ms; {}",
        transfer::longest_stall(&results).as_millis(),
        roams(lab)
    );
    assert!(results[0].kept(), "{summary}\n{}", lab.dump());
    assert_eq!(shim_path(shim), path, "the path changed\n{}", lab.dump());
}

/// (e) The shim's NAT has `random` mappings, so the flush gives the shim
/// new ports; the shim goes through the AP only (no route optimization):
/// the AP roams the shim record to the new mapping.
#[test]
fn nat_flush_mid_transfer_random_ports_via_the_ap() {
    let Some(_guard) = heavy_test() else { return };
    let options = NatOptions {
        random: true,
        udp_timeouts: None,
        ..NatOptions::default()
    };
    let lab = shim_behind_nat("natflush", LabConfig::pools(), options, false);
    flush_mid_transfer(&lab, "access-point");
}

/// (e) `random` mappings and route optimization: the shim's NAT maps its
/// flow to the member to another port than the one the AP saw; the member
/// learns it from the shim's Punch (PROTOCOL 5.3). The flush gives both
/// new ports mid-transfer: the AP and the member roam, and the direct
/// download finishes intact.
#[test]
fn nat_flush_mid_transfer_random_ports_route_optimized() {
    let Some(_guard) = heavy_test() else { return };
    let options = NatOptions {
        random: true,
        udp_timeouts: None,
        ..NatOptions::default()
    };
    let lab = shim_behind_nat("natflushrr", LabConfig::pools(), options, true);
    flush_mid_transfer(&lab, "direct");
}

/// (e) A port-preserving NAT, the shim route-optimized: the flush drops
/// every mapping mid-transfer (they come back on the same ports), the
/// direct download finishes intact.
#[test]
fn nat_flush_mid_transfer_route_optimized() {
    let Some(_guard) = heavy_test() else { return };
    let lab = shim_behind_nat(
        "natflushro",
        LabConfig::pools(),
        NatOptions::default(),
        true,
    );
    flush_mid_transfer(&lab, "direct");
}

/// (f) The shim's NAT forgets idle UDP mappings after 5 s; member and shim
/// send a NAT keepalive every 2 s (`nat_keepalive_s = 2`). A connection
/// idle for 12 s still works, still direct, no new binding update accepted
/// by the shim, and the shim's mappings towards the AP and the member are
/// there the whole time (polled every 100 ms: a port-preserving NAT would
/// give a lost mapping back on the same port, so presence is what shows
/// the keepalive held it).
#[test]
fn nat_timeout_shorter_than_idle_keepalive_holds_the_mapping() {
    let Some(_guard) = heavy_test() else { return };
    let config = LabConfig {
        nat_keepalive_s: Some(2),
        ..LabConfig::pools()
    };
    let options = NatOptions {
        random: false,
        udp_timeouts: Some((5, 5)),
        ..NatOptions::default()
    };
    let lab = shim_behind_nat("natidle", config, options, true);
    let (shim, member) = (lab.client("s"), lab.member(1));
    let remotes = |lab: &Lab| -> BTreeSet<std::net::SocketAddrV4> {
        lab.nat(1)
            .mappings_from(shim.v4)
            .iter()
            .map(|m| m.remote)
            .collect()
    };
    let held = remotes(&lab);
    assert!(
        held.len() >= 2,
        "mappings to the AP and the member: {held:?}"
    );
    let bus = read::counter(&shim.status(), "bus_accepted");
    let server = lab.service(Family::V6);
    let idle = Duration::from_secs(12);
    let rtt = shim
        .host
        .ns
        .spawn_thread("rtt", move || testapp::rtt(server, 2, idle, OP_TIMEOUT))
        .expect("rtt thread");
    let mut lost = Vec::new();
    while !rtt.is_finished() {
        let now = remotes(&lab);
        if !held.is_subset(&now) {
            lost.push(format!("{now:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = rtt
        .join()
        .expect("rtt thread")
        .unwrap_or_else(|e| panic!("after {idle:?} idle: {e}\n{}", lab.dump()));
    let (shim_status, member_status) = (shim.status(), member.status());
    println!(
        "12 s idle behind a NAT with 5 s UDP timeouts, keepalive 2 s: round trips {:?} us; \
         mappings {held:?} lost {} times; keepalives received: member {}, shim {}; sent: member {}; \
         shim bus_accepted {bus} -> {}",
        report.rtt_us,
        lost.len(),
        read::counter(&member_status, "keepalives"),
        read::counter(&shim_status, "keepalives"),
        read::counter(&member_status, "nat_keepalives"),
        read::counter(&shim_status, "bus_accepted"),
    );
    assert_eq!(report.rtt_us.len(), 2);
    assert!(
        lost.is_empty(),
        "a mapping was lost: {lost:?}\n{}",
        lab.dump()
    );
    assert_eq!(
        read::counter(&shim_status, "bus_accepted"),
        bus,
        "a new binding update: the binding was re-established\n{}",
        lab.dump()
    );
    assert!(
        read::counter(&member_status, "keepalives") > 0,
        "the member received no NAT keepalive from the shim\n{}",
        lab.dump()
    );
    assert_eq!(shim_path(shim), "direct", "{}", lab.dump());
}
