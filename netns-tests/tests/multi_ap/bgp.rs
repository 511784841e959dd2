//! Two APs announcing the home address by eBGP (BIRD 2) to BIRD on the
//! router, which installs one multipath route (hold time 3 s, keepalive
//! 1 s).

use std::process::Command;
use std::time::{Duration, Instant};

use homeaddr_netns_tests::cluster::bird::{HOLD_TIME, KEEPALIVE, UPLINK};
use homeaddr_netns_tests::cluster::{Cluster, ClusterConfig, ap_addr, transfer};
use homeaddr_netns_tests::service::bin;

use crate::common::heavy_test;
use crate::support::*;

/// Waits until the router's route is exactly `hops`; how long it took.
fn await_route(c: &Cluster, hops: &[usize], timeout: Duration) -> (Instant, Duration) {
    let want: Vec<_> = hops.iter().map(|&a| ap_addr(a)).collect();
    c.router
        .wait_nexthops(&format!("the route over APs {hops:?}"), timeout, |h| {
            let mut h = h.to_vec();
            h.sort();
            h == want
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.dump()))
}

/// AP 1's daemon dies: the route it installed into its TUN goes with the
/// TUN, its BIRD withdraws the announcement at once and the router
/// hashes every client to AP 2. The only member registers with AP 2 only,
/// so this runs with today's single-AP daemons: after the withdrawal every
/// client's new connection succeeds (before it, those hashed to AP 1 found
/// no member). AP 1 restarted: its route is back.
#[test]
fn bgp_withdraws_the_route_of_a_dead_ap_daemon() {
    let Some(_guard) = heavy_test() else { return };
    let mut c = start(
        "bgpwithd",
        &ClusterConfig::new(2, 1, LEGACY_CLIENTS)
            .with_bird()
            .member_at(1, &[2]),
    );
    await_route(&c, &[1, 2], Duration::from_secs(5));
    // Before: the router hashes about half the new connections to AP 1,
    // which has no member (so the withdrawal is what makes them work).
    let mut failed = 0;
    for _ in 0..2 {
        let tries = transfer::first_connections(
            &c.legacy(),
            c.service_endpoint(),
            Instant::now(),
            Duration::from_millis(250),
            Duration::ZERO,
        )
        .expect("probe threads start");
        failed += tries.iter().filter(|f| f.after.is_none()).count();
    }
    println!("before: {failed} of 24 new connections found no member (hashed to AP 1)");
    assert!(failed > 0, "no connection was hashed to AP 1\n{}", c.dump());
    let killed = c.kill_ap(1);
    let (withdrawn, took) = await_route(&c, &[2], Duration::from_secs(5));
    println!(
        "AP 1's daemon killed: its route withdrawn at the router after {} ms",
        ms(took)
    );
    assert!(
        withdrawn - killed < Duration::from_secs(1),
        "withdrawal took {} ms",
        ms(withdrawn - killed)
    );
    let slowest = assert_new_connections(&c, withdrawn, "after the withdrawal");
    println!(
        "every client's new connection within {} ms of the withdrawal",
        ms(slowest)
    );
    let restarted = c.restart_ap(1).expect("AP 1 starts again");
    let (back, _) = await_route(&c, &[1, 2], Duration::from_secs(10));
    println!(
        "AP 1 restarted: its route back at the router {} ms after it was up",
        ms(back - restarted)
    );
}

/// An AP host whose BIRD falls silent (SIGSTOP: no FIN, no keepalives, as
/// when the host hangs or loses its link) is dropped by the router after
/// the hold time; resumed, it comes back; killed, the kernel closes its
/// TCP session and the router drops it at once. Runs today (no member
/// needed).
#[test]
fn bgp_drops_a_silent_ap_host_after_the_hold_time() {
    let Some(_guard) = heavy_test() else { return };
    let c = start("bgphold", &ClusterConfig::new(2, 0, 0).with_bird());
    await_route(&c, &[1, 2], Duration::from_secs(5));
    let bird = c.ap(1).bird();
    bird.daemon.signal(libc::SIGSTOP);
    let (_, took) = await_route(&c, &[2], HOLD_TIME + Duration::from_secs(5));
    println!(
        "AP 1's BIRD silent: withdrawn after {} ms (hold time {} s, keepalive {} s)",
        ms(took),
        HOLD_TIME.as_secs(),
        KEEPALIVE.as_secs()
    );
    assert!(
        took + KEEPALIVE + Duration::from_millis(200) >= HOLD_TIME,
        "withdrawn before the hold time could run out: {} ms",
        ms(took)
    );
    assert!(
        took <= HOLD_TIME + Duration::from_secs(1),
        "withdrawn only after {} ms (hold time {} s)",
        ms(took),
        HOLD_TIME.as_secs()
    );
    bird.daemon.signal(libc::SIGCONT);
    let (_, back) = await_route(&c, &[1, 2], Duration::from_secs(15));
    println!("AP 1's BIRD resumed: route back after {} ms", ms(back));
    bird.daemon.kill();
    let (_, took) = await_route(&c, &[2], Duration::from_secs(5));
    println!("AP 1's BIRD killed: withdrawn after {} ms", ms(took));
    assert!(took < Duration::from_secs(1), "{} ms", ms(took));
}

/// The BIRD variant of the AP death with traffic: 12 legacy clients and a
/// shim client on long transfers, members registered with both APs, AP
/// 1's daemon dies: BIRD withdraws its route (time printed), the traffic
/// goes on through AP 2 and no flow is lost. Needs the multi-AP daemons.
#[test]
fn bgp_ap_killed_flows_move_to_the_other_ap() {
    let Some(_guard) = heavy_test() else { return };
    let c = start(
        "bgpflows",
        &ClusterConfig::new(2, 2, LEGACY_CLIENTS)
            .with_shim()
            .with_bird(),
    );
    bind_shim(&c);
    let t = start_transfers(&c);
    assert_all_running(&c, &t);
    let killed = c.kill_ap(1);
    let (withdrawn, took) = await_route(&c, &[2], Duration::from_secs(5));
    println!(
        "AP 1 killed: route withdrawn after {} ms (hold time {} s not needed)",
        ms(took),
        HOLD_TIME.as_secs()
    );
    assert!(withdrawn - killed <= HOLD_TIME);
    let at_ap2 = legacy_in(&c, 2);
    let slowest = assert_new_connections(&c, withdrawn, "after the withdrawal");
    println!(
        "new connections within {} ms of the withdrawal",
        ms(slowest)
    );
    assert_all_running(&c, &t);
    assert_no_flow_lost(&c, t, "AP 1 killed, BIRD withdrew it");
    let grown = legacy_in(&c, 2) - at_ap2;
    println!("AP 2 tunnelled {grown} more client packets after the withdrawal");
    assert!(grown > 0, "no traffic on AP 2\n{}", c.dump());
}

/// Runs `scripts/ap-health-hook --once` for AP `a`: its exit code and log.
fn hook(c: &Cluster, a: usize) -> (i32, String) {
    let ap = c.ap(a);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/ap-health-hook");
    let out = Command::new(script)
        .arg("--control")
        .arg(&ap.host.control)
        .arg("--bird-socket")
        .arg(&ap.bird().socket)
        .args(["--protocol", UPLINK, "--once"])
        .env(
            "HOMEADDR_CTL",
            bin("homeaddr-ctl").expect("homeaddr-ctl is built"),
        )
        .output()
        .expect("the hook runs");
    let log = String::from_utf8_lossy(&out.stderr).trim().to_string();
    println!("hook on AP {a}: exit {:?}: {log}", out.status.code());
    (out.status.code().unwrap_or(-1), log)
}

/// `scripts/ap-health-hook --once` on AP 1, whose AP has no active member:
/// it disables `uplink` and the router drops AP 1 at once; on AP 2 (one
/// active member) it leaves the announcement alone. A member registers
/// with AP 1: the hook enables `uplink` again and the route is back. Runs
/// today.
#[test]
fn health_hook_withdraws_an_ap_without_active_members() {
    let Some(_guard) = heavy_test() else { return };
    let mut c = start(
        "bgphook",
        &ClusterConfig::new(2, 1, 0)
            .with_bird()
            .member_at(1, &[2])
            .member_at(2, &[1]),
    );
    await_route(&c, &[1, 2], Duration::from_secs(5));
    let ran = Instant::now();
    assert_eq!(hook(&c, 1).0, 1, "AP 1 has no active member: unhealthy");
    let (seen, _) = await_route(&c, &[2], Duration::from_secs(5));
    println!(
        "AP 1 withdrawn {} ms after the hook started",
        ms(seen - ran)
    );
    assert_eq!(hook(&c, 2).0, 0, "AP 2 has an active member: healthy");
    assert_eq!(hook(&c, 1).0, 1, "still unhealthy, already withdrawn");
    assert!(!c.ap(1).bird().established(UPLINK));
    c.add_member(2).expect("member 2 registers with AP 1");
    let ran = Instant::now();
    let (code, log) = hook(&c, 1);
    assert_eq!(code, 0, "AP 1 has an active member now: {log}");
    assert!(log.contains("enabling"), "{log}");
    let (seen, _) = await_route(&c, &[1, 2], Duration::from_secs(10));
    println!(
        "AP 1 announced again {} ms after the hook started",
        ms(seen - ran)
    );
}
