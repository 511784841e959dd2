//! Shim and member behind two different NATs.

use homeaddr_netns_tests::natlab::daemons::DaemonOptions;
use homeaddr_netns_tests::natlab::{Family, Lab, LabConfig, NatOptions, Site};
use serde_json::Value;

use crate::common::heavy_test;
use crate::support::*;

/// Member 1 behind NAT 1, shim "s" behind NAT 2, both NATs with `options`;
/// the first connection made (through the AP).
fn both_behind_nats(tag: &str, options: NatOptions) -> Lab {
    let mut lab = lab(tag, LabConfig::pools());
    let n1 = lab.add_nat(options).expect("NAT 1");
    let n2 = lab.add_nat(options).expect("NAT 2");
    lab.add_member(1, Site::Nat(n1), &DaemonOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    lab.add_shim("s", Site::Nat(n2), Family::V6, &DaemonOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        who(&lab, lab.client("s"), lab.service(Family::V6)),
        "member1"
    );
    lab
}

/// What the member's status says about its correspondent (the `ro`
/// reason, else the route-optimization state).
fn member_reason(lab: &Lab) -> String {
    member_rows(lab.member(1))
        .iter()
        .map(|r| match &r["ro"] {
            Value::String(s) => s.clone(),
            _ => r["route_optimization"].to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// (d) Port-preserving NATs (Linux masquerade without `random` keeps the
/// inside port when it can): the shim's Punch, sent when it answers the
/// relayed home test, is meant to open its NAT for the member's care-of
/// test. Either route optimization follows (the download goes direct), or
/// the flow stays on the AP path and the member's status says why; the
/// test prints which, with both NATs' conntrack tables, and checks the
/// download either way.
///
/// Seen with the merged issue-11 branches: the Punch reaches the member's
/// NAT before the member's care-of test leaves it, so the kernel has an
/// inbound entry for (NAT1:4790, shim's mapped endpoint) and maps the
/// care-of test to another port, which the shim's NAT then drops: the
/// fallback.
#[test]
fn both_behind_nats_route_optimize_or_fall_back_saying_why() {
    let Some(_guard) = heavy_test() else { return };
    let lab = both_behind_nats("natboth", NatOptions::default());
    let (shim, member) = (lab.client("s"), lab.member(1));
    let took = lab
        .wait(
            "route optimization or the member's reason",
            RO_TIMEOUT * 2,
            || {
                let reason = member_reason(&lab).to_lowercase();
                (shim_bindings(shim).contains(&1) && member_bound(member))
                    || reason.contains("unanswered")
                    || reason.contains("nat")
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let bound = shim_bindings(shim).contains(&1) && member_bound(member);
    println!(
        "both behind port-preserving NATs: after {} ms: {}; member punches {}; status: {}\n\
         nat1 (member):\n{}nat2 (shim):\n{}",
        took.as_millis(),
        if bound {
            "ROUTE OPTIMIZED through the punch"
        } else {
            "FALLBACK to the AP path"
        },
        member.status()["counters"]["punches"],
        member_reason(&lab),
        lab.nat(1).dump(),
        lab.nat(2).dump()
    );
    let get = get_intact(&lab, shim, lab.service(Family::V6), 8 << 20);
    println!(
        "8 MB: {:.1} Mbit/s, path {}",
        get.mbit_per_s(),
        shim_path(shim)
    );
    let want = if bound { "direct" } else { "access-point" };
    assert_eq!(shim_path(shim), want, "{}", lab.dump());
}

/// (d) NATs with `random` mappings: the shim's NAT maps its flow towards
/// the member to another port than the one the AP saw, so the member's
/// care-of test never gets through. The flow stays on the AP path, intact,
/// and the member's status says why route optimization failed.
#[test]
fn both_behind_random_nats_fall_back_to_the_ap_saying_why() {
    let Some(_guard) = heavy_test() else { return };
    let lab = both_behind_nats(
        "natbothr",
        NatOptions {
            random: true,
            udp_timeouts: None,
            ..NatOptions::default()
        },
    );
    let (shim, member) = (lab.client("s"), lab.member(1));
    let took = lab
        .wait(
            "the member to say why it has no binding",
            RO_TIMEOUT * 2,
            || {
                let reason = member_reason(&lab).to_lowercase();
                reason.contains("unanswered") || reason.contains("nat")
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!(
        "both behind random NATs: after {} ms the member says: {}; shim bindings {:?}",
        took.as_millis(),
        member_reason(&lab),
        shim_bindings(shim)
    );
    assert!(!member_bound(member), "{}", lab.dump());
    let get = get_intact(&lab, shim, lab.service(Family::V6), 4 << 20);
    println!(
        "4 MB on the fallback: {:.1} Mbit/s, path {}",
        get.mbit_per_s(),
        shim_path(shim)
    );
    assert_eq!(shim_path(shim), "access-point", "{}", lab.dump());
}
