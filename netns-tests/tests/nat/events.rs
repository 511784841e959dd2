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

/// A public member 1 and shim "s" behind NAT 1 (`options`), bound.
fn bound_shim_behind_nat(tag: &str, config: LabConfig, options: NatOptions) -> Lab {
    let mut lab = lab(tag, config);
    let n = lab.add_nat(options).expect("NAT");
    lab.add_member(1, Site::Public, &DaemonOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    lab.add_shim("s", Site::Nat(n), Family::V6, &DaemonOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (shim, member) = (lab.client("s"), lab.member(1));
    assert_eq!(who(&lab, shim, lab.service(Family::V6)), "member1");
    await_ro(&lab, shim, member, 1);
    lab
}

/// The mapped ports of the shim's UDP flows at NAT 1.
fn shim_mapped_ports(lab: &Lab) -> BTreeSet<u16> {
    lab.nat(1)
        .mappings_from(lab.client("s").v4)
        .iter()
        .map(|m| m.mapped.port())
        .collect()
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

/// (e) The shim's NAT (`random` mappings) flushes its table in the middle
/// of a route-optimized paced download: the shim's next packets leave from
/// a new mapped port, the member and the AP move the shim's endpoint there
/// (roaming), and the download finishes intact. Prints the longest stall.
#[test]
fn nat_flush_mid_transfer_the_transfer_finishes() {
    let Some(_guard) = heavy_test() else { return };
    let lab = bound_shim_behind_nat(
        "natflush",
        LabConfig::pools(),
        NatOptions {
            random: true,
            udp_timeouts: None,
        },
    );
    let shim = lab.client("s");
    const BYTES: u64 = 12 << 20;
    const RATE: u64 = 1 << 20;
    let t = Transfers::start(&[&shim.host], lab.service(Family::V6), BYTES, RATE)
        .expect("transfer starts");
    t.wait_progress(2 * RATE, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.dump()));
    assert_eq!(t.running(), 1, "the transfer ended early");
    assert_eq!(shim_path(shim), "direct", "{}", lab.dump());
    let before = shim_mapped_ports(&lab);
    lab.nat(1).flush().expect("conntrack -F");
    let flushed = std::time::Instant::now();
    lab.wait(
        "the shim's flows to get new mapped ports",
        Duration::from_secs(10),
        || {
            let now = shim_mapped_ports(&lab);
            !now.is_empty() && now.is_disjoint(&before)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    println!(
        "NAT flushed: the shim's mapped ports {before:?} -> {:?} after {} ms",
        shim_mapped_ports(&lab),
        flushed.elapsed().as_millis()
    );
    let results = t.join();
    let summary = transfer::summary(&results);
    println!(
        "flush mid-transfer: {summary}; longest stall {} ms; {}",
        transfer::longest_stall(&results).as_millis(),
        roams(&lab)
    );
    assert!(results[0].kept(), "{summary}\n{}", lab.dump());
    assert_eq!(
        shim_path(shim),
        "direct",
        "still route-optimized\n{}",
        lab.dump()
    );
}

/// (f) The shim's NAT forgets idle UDP mappings after 5 s; member and shim
/// send a NAT keepalive every 2 s (`nat_keepalive_s = 2`). A connection
/// idle for 12 s still works, on the same mapped port (no new mapping, no
/// new binding update accepted by the shim), still direct.
#[test]
fn nat_timeout_shorter_than_idle_keepalive_holds_the_mapping() {
    let Some(_guard) = heavy_test() else { return };
    let config = LabConfig {
        nat_keepalive_s: Some(2),
        ..LabConfig::pools()
    };
    let lab = bound_shim_behind_nat(
        "natidle",
        config,
        NatOptions {
            random: true,
            udp_timeouts: Some((5, 5)),
        },
    );
    let (shim, member) = (lab.client("s"), lab.member(1));
    let ports = shim_mapped_ports(&lab);
    let bus = read::counter(&shim.status(), "bus_accepted");
    let server = lab.service(Family::V6);
    let idle = Duration::from_secs(12);
    let report = shim
        .host
        .ns
        .enter(|| testapp::rtt(server, 2, idle, OP_TIMEOUT))
        .expect("enter the shim's namespace")
        .unwrap_or_else(|e| panic!("after {idle:?} idle: {e}\n{}", lab.dump()));
    let (shim_status, member_status) = (shim.status(), member.status());
    println!(
        "12 s idle behind a NAT with 5 s UDP timeouts: round trips {:?} us; mapped ports {ports:?} -> {:?}; \
         keepalives: member {}, shim {}; shim bus_accepted {bus} -> {}; {}",
        report.rtt_us,
        shim_mapped_ports(&lab),
        read::counter(&member_status, "keepalives"),
        read::counter(&shim_status, "keepalives"),
        read::counter(&shim_status, "bus_accepted"),
        roams(&lab)
    );
    assert_eq!(report.rtt_us.len(), 2);
    assert_eq!(
        shim_mapped_ports(&lab),
        ports,
        "a mapping was lost\n{}",
        lab.dump()
    );
    assert_eq!(
        read::counter(&shim_status, "bus_accepted"),
        bus,
        "a new binding update: the binding was re-established\n{}",
        lab.dump()
    );
    assert!(
        read::counter(&member_status, "keepalives") + read::counter(&shim_status, "keepalives") > 0,
        "no keepalive counted\n{}",
        lab.dump()
    );
    assert_eq!(shim_path(shim), "direct", "{}", lab.dump());
}
