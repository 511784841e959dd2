//! The several-AP step's views of the routing and of the access points:
//! the router's multipath route learnt by BGP, and `homeaddr-ctl aps`
//! comparing the two access points' Maglev tables.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use homeaddr_netns_tests::cluster::bird::{AP_AS_BASE, HOLD_TIME, KEEPALIVE, ROUTER_AS};
use homeaddr_netns_tests::cluster::{Cluster, ap_addr};
use homeaddr_netns_tests::scenario;
use homeaddr_netns_tests::service::{HOME_ADDRESS, bin};

use super::super::verified;
use crate::output::say;

/// Prints a route as `ip -6 route` shows it, indented (its nexthop lines
/// a little more).
pub(crate) fn print_route(route: &str) {
    for line in route.lines().filter(|l| !l.trim().is_empty()) {
        let more = if line.starts_with(char::is_whitespace) {
            "  "
        } else {
            ""
        };
        println!("      {more}{}", line.trim());
    }
}

/// Shows the router's route to the home address and its BGP sessions;
/// whether the route is the multipath one over both APs, from BIRD.
pub(crate) fn show_route(c: &Cluster) -> anyhow::Result<bool> {
    let bird = c.router.bird.as_ref().context("the router runs BIRD")?;
    say(&format!(
        "BIRD on each AP host announces {HOME_ADDRESS}/128 (the route homeaddr-ap installs into its TUN) by eBGP to BIRD on"
    ));
    say(&format!(
        "the router (AS {ROUTER_AS}; AP n is AS {AP_AS_BASE}+n; hold time {} s, keepalive {} s). The router's BGP sessions:",
        HOLD_TIME.as_secs(),
        KEEPALIVE.as_secs()
    ));
    let mut established = true;
    for a in 1..=c.aps.len() {
        let name = format!("ap{a}");
        let state = bird.protocol(&name).unwrap_or_else(|e| format!("{e:#}"));
        established &= bird.established(&name);
        println!(
            "      {name}  neighbor {} AS {}  {state}",
            ap_addr(a),
            AP_AS_BASE + a as u32
        );
    }
    let route = c.router.route();
    let mut hops = c.router.nexthops()?;
    hops.sort();
    let both = hops == [ap_addr(1), ap_addr(2)];
    let from_bird = route.contains("proto bird");
    say(
        "the router merged the two equal routes into one multipath route (ip -6 route; the kernel hashes on L4):",
    );
    print_route(&route);
    say(&format!(
        "two nexthops, learnt by BGP: {}",
        verified(both && from_bird)
    ));
    Ok(established && both && from_bird)
}

/// Waits until both APs show the same table digest and have settled (for
/// `settle`, 2 s, after its first member registered an AP holds back
/// segments of flows it does not know yet), then shows what `homeaddr-ctl
/// aps` says; the digest when they agree.
pub(crate) fn show_agreement(c: &Cluster) -> anyhow::Result<Option<String>> {
    let digests = || c.table_digests();
    let settled = || {
        c.aps
            .iter()
            .all(|ap| ap.host.status()["settling"].as_bool() == Some(false))
    };
    let same = scenario::wait_for(
        "both access points to show the same table digest, settled",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || {
            let d = digests();
            !d[0].is_empty() && d.iter().all(|x| *x == d[0]) && settled()
        },
    );
    if let Err(e) = same
        && e.downcast_ref::<scenario::Interrupted>().is_some()
    {
        return Err(e);
    }
    // The operator's command, run in the directory of the control sockets
    // so that its table shows their short names.
    let dir = c.topo.dir();
    let sockets: Vec<String> = c
        .aps
        .iter()
        .map(|ap| {
            ap.host
                .control
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        })
        .collect();
    let mut ctl = Command::new(bin("homeaddr-ctl")?);
    ctl.current_dir(dir);
    for s in &sockets {
        ctl.args(["--control", s]);
    }
    let out = ctl.arg("aps").output().context("running homeaddr-ctl")?;
    let text = String::from_utf8_lossy(&out.stdout);
    say(
        "each access point computes its Maglev table from the member set alone; homeaddr-ctl compares them:",
    );
    println!(
        "      $ homeaddr-ctl {}aps",
        sockets
            .iter()
            .map(|s| format!("--control {s} "))
            .collect::<String>()
    );
    for line in text.lines() {
        println!("      {line}");
    }
    let d = digests();
    let agree = out.status.success()
        && text.contains("tables agree")
        && !d[0].is_empty()
        && d.iter().all(|x| *x == d[0]);
    if !agree {
        say(&format!(
            "the tables DISAGREE (exit {:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(agree.then(|| d[0].clone()))
}
