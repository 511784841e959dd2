//! Two APs behind a static kernel multipath route.

use std::collections::BTreeMap;
use std::time::Duration;

use homeaddr_netns_tests::cluster::{ClusterConfig, ap_addr};
use homeaddr_netns_tests::scenario;

use crate::common::heavy_test;
use crate::support::*;

/// The harness itself: the router's L4 hash spreads new connections over
/// both APs. Each member registers with one AP only (member 1 with AP 1,
/// member 2 with AP 2), so the member that answers names the AP the
/// router chose. Runs with the single-AP daemons of today.
#[test]
fn ecmp_spreads_connections_over_every_ap() {
    let Some(_guard) = heavy_test() else { return };
    let config = ClusterConfig::new(2, 2, LEGACY_CLIENTS)
        .member_at(1, &[1])
        .member_at(2, &[2]);
    let c = start("ecmpspread", &config);
    assert_eq!(c.router.nexthops().unwrap(), vec![ap_addr(1), ap_addr(2)]);
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for host in c.legacy() {
        for _ in 0..4 {
            let name = scenario::who_at(host, c.service_endpoint())
                .unwrap_or_else(|e| panic!("{}: {e:#}\n{}", host.name, c.dump()));
            *served.entry(name).or_default() += 1;
        }
    }
    println!(
        "48 new connections over 2 APs: {served:?}; legacy_in AP1 {} AP2 {}",
        legacy_in(&c, 1),
        legacy_in(&c, 2)
    );
    assert_eq!(
        served.len(),
        2,
        "every connection took one AP: {served:?}\n{}",
        c.dump()
    );
    assert!(legacy_in(&c, 1) > 0 && legacy_in(&c, 2) > 0);
}

/// The transfers themselves, with one AP and nothing happening: 12
/// legacy clients and a route-optimized shim client, every transfer
/// intact (what the tests below hold an AP's death to). Runs today.
#[test]
fn baseline_transfers_through_one_ap_all_kept() {
    let Some(_guard) = heavy_test() else { return };
    let c = start(
        "baseline",
        &ClusterConfig::new(1, 2, LEGACY_CLIENTS).with_shim(),
    );
    bind_shim(&c);
    let t = start_transfers(&c);
    assert_no_flow_lost(&c, t, "one AP, no event");
}

/// Two APs, two members registered with both, 12 legacy clients and a
/// shim client on long transfers: AP 1 (the shim's AP) dies and the
/// router drops its nexthop. Every transfer finishes intact; new
/// connections succeed within 1 s of the route change. Needs the
/// multi-AP daemons.
#[test]
fn ecmp_ap_killed_no_flow_lost() {
    let Some(_guard) = heavy_test() else { return };
    let c = start(
        "ecmpkill",
        &ClusterConfig::new(2, 2, LEGACY_CLIENTS).with_shim(),
    );
    bind_shim(&c);
    let t = start_transfers(&c);
    let flows_at_ap1 = c.ap(1).host.status()["flows"].as_u64().unwrap_or(0);
    assert_all_running(&c, &t);
    let killed = c.kill_ap(1);
    let changed = c.router.remove_nexthop(ap_addr(1)).expect("route change");
    println!(
        "AP 1 killed ({flows_at_ap1} flows in its affinity table, its own and reported ones); route changed {} ms later",
        ms(changed - killed)
    );
    let slowest = assert_new_connections(&c, changed, "after AP 1 died");
    println!(
        "new connections within {} ms of the route change",
        ms(slowest)
    );
    assert_no_flow_lost(&c, t, "AP 1 killed");
}

/// As above, then AP 1 starts again, its members come back and the router
/// adds its nexthop back: the flows the router re-hashes to it keep their
/// members (AP 1 learnt them from the members' full flow reports). Needs
/// the multi-AP daemons.
#[test]
fn ecmp_ap_added_back_no_flow_lost() {
    let Some(_guard) = heavy_test() else { return };
    let mut c = start(
        "ecmpback",
        &ClusterConfig::new(2, 2, LEGACY_CLIENTS).with_shim(),
    );
    bind_shim(&c);
    let t = start_transfers(&c);
    c.kill_ap(1);
    let changed = c.router.remove_nexthop(ap_addr(1)).expect("route change");
    let restarted = c.restart_ap(1).expect("AP 1 starts again");
    let back = c
        .wait_members_at(1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!(
        "AP 1 restarted {} ms after the route change; its members were back {} ms after it was up",
        ms(restarted - changed),
        ms(back)
    );
    assert_all_running(&c, &t);
    let added = c.router.add_nexthop(ap_addr(1)).expect("route change");
    let slowest = assert_new_connections(&c, added, "after AP 1 came back");
    println!(
        "new connections within {} ms of the AP's return",
        ms(slowest)
    );
    assert_no_flow_lost(&c, t, "AP 1 added back");
}

/// While the transfers run, member 3 joins (both APs rebuild their Maglev
/// table the same way), then AP 1 dies: flows re-hashed to AP 2 keep
/// their members although the member set changed while they were open.
/// Needs the multi-AP daemons.
#[test]
fn ecmp_member_joins_then_ap_dies_no_flow_lost() {
    let Some(_guard) = heavy_test() else { return };
    let mut c = start(
        "ecmpjoin",
        &ClusterConfig::new(2, 2, LEGACY_CLIENTS).with_shim(),
    );
    bind_shim(&c);
    let t = start_transfers(&c);
    let joined = c
        .add_member(3)
        .unwrap_or_else(|e| panic!("member 3 joins: {e:#}"));
    println!(
        "member 3 active at both APs {} ms after its start",
        ms(joined)
    );
    let digest = assert_tables_agree(&c);
    println!("both APs' tables agree after the join (digest {digest})");
    assert_all_running(&c, &t);
    let killed = c.kill_ap(1);
    let changed = c.router.remove_nexthop(ap_addr(1)).expect("route change");
    println!(
        "AP 1 killed; route changed {} ms later",
        ms(changed - killed)
    );
    let slowest = assert_new_connections(&c, changed, "after the join and AP 1's death");
    println!(
        "new connections within {} ms of the route change",
        ms(slowest)
    );
    assert_no_flow_lost(&c, t, "member joined, then AP 1 killed");
}
