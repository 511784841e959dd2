//! Restarts that cost seconds: one AP killed with -9 and started again,
//! one member killed with -9 and started again.

use std::time::Duration;

use homeaddr_netns_tests::cluster::ClusterConfig;
use homeaddr_netns_tests::cluster::transfer;

use crate::common::heavy_test;
use crate::support::*;

/// A restart must be served again within this.
const RESTART_LIMIT: Duration = Duration::from_secs(2);
/// Clients of the restart tests.
const CLIENTS: usize = 4;

/// From `since`, every client's first new connection; panics unless all
/// succeeded within [`RESTART_LIMIT`]; the slowest.
fn served_again(c: &homeaddr_netns_tests::cluster::Cluster, since: std::time::Instant) -> Duration {
    let firsts = transfer::first_connections(
        &c.legacy(),
        c.service_endpoint(),
        since,
        Duration::from_millis(250),
        RESTART_LIMIT + Duration::from_secs(8),
    )
    .expect("probe threads start");
    let slowest = transfer::slowest(&firsts);
    assert!(
        slowest.is_some_and(|s| s <= RESTART_LIMIT),
        "not every client was served within {RESTART_LIMIT:?} of the restart: {firsts:?}\n{}",
        c.dump()
    );
    slowest.unwrap_or_default()
}

/// One AP, two members: the AP is killed with -9 and started again. Its
/// members come back and new connections succeed within 2 s of it being
/// up (members notice the new AP instance; they do not wait for their
/// refresh). Needs the multi-AP member's fast restart detection.
#[test]
fn single_ap_restart_members_back_within_two_seconds() {
    let Some(_guard) = heavy_test() else { return };
    let mut c = start("aprestart", &ClusterConfig::new(1, 2, CLIENTS));
    let killed = c.kill_ap(1);
    let up = c.restart_ap(1).expect("the AP starts again");
    let back = c
        .wait_members_at(1, RESTART_LIMIT + Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!(
        "AP restarted ({} ms from kill to up): members back {} ms after it was up",
        ms(up - killed),
        ms(back)
    );
    assert!(back <= RESTART_LIMIT, "members back after {} ms", ms(back));
    let slowest = served_again(&c, up);
    println!(
        "every client's new connection within {} ms of the AP being up",
        ms(slowest)
    );
}

/// One AP, one member: the member's daemon is killed with -9 (its routes,
/// rule and TUN claims left behind) and started again; it takes them over,
/// registers again, and every client is served within 2 s of the start.
#[test]
fn member_restart_serves_within_two_seconds() {
    let Some(_guard) = heavy_test() else { return };
    let mut c = start("mrestart", &ClusterConfig::new(1, 1, CLIENTS));
    c.kill_member(1);
    let started = c.restart_member(1).expect("the member starts again");
    let slowest = served_again(&c, started);
    println!(
        "member restarted after kill -9: every client served within {} ms of its start",
        ms(slowest)
    );
}

/// One AP, two members, 12 legacy clients and a shim client on long
/// transfers: the AP is killed with -9 and started again, and member 3
/// joins as soon as it is up, so a third of the clients' Maglev slots
/// change owner. Every established flow keeps its member: the restarted
/// AP rebuilds its affinity table from the members' full Flow Reports,
/// and holds back segments of flows it does not know yet while it settles.
#[test]
fn single_ap_restart_keeps_established_flows_when_a_member_joins_at_once() {
    let Some(_guard) = heavy_test() else { return };
    let mut c = start(
        "aprestartflows",
        &ClusterConfig::new(1, 2, LEGACY_CLIENTS).with_shim(),
    );
    bind_shim(&c);
    let t = start_transfers(&c);
    let killed = c.kill_ap(1);
    let up = c.restart_ap(1).expect("the AP starts again");
    let joined = c
        .add_member(3)
        .unwrap_or_else(|e| panic!("member 3 joins: {e:#}"));
    let back = c
        .wait_members_at(1, RESTART_LIMIT + Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let status = c.ap(1).host.status();
    println!(
        "AP restarted ({} ms from kill to up); member 3 active {} ms after its start; \
         all members back {} ms after the AP was up; flows reported {}, moved {}, \
         segments held back while settling {}",
        ms(up - killed),
        ms(joined),
        ms(back),
        status["flows_reported"],
        status["flows_moved"],
        status["counters"]["drops"]["settling"],
    );
    assert_no_flow_lost(&c, t, "AP restarted, member 3 joined");
}
