//! `homeaddr-demo`: the whole service on one machine, with real traffic,
//! told as a story with numbers (the README's main job; run it through
//! `scripts/demo`).
//!
//! It builds, in throw-away network namespaces joined by the user-space WAN
//! emulator, one access point, three members in different regions, a legacy
//! client and a shim client, and then shows:
//!
//! 1. the members registering (the access point's member table);
//! 2. the legacy client reaching the home address through the access point;
//! 3. the shim client's route optimization on ONE open TCP connection (the
//!    round-trip time before and after, and when the direct path started),
//!    then a download over the direct path with its SHA-256 checked;
//! 4. a member moving to a new address in the middle of a download;
//! 5. a drain: new connections go to another member while the open one
//!    finishes on the drained member;
//! 6. the geo-DNS: homeaddr-dns serves the service name for two sites (a
//!    second access point in New York), a resolver asks with ECS for a
//!    client in each region and each gets its nearest site; then the New
//!    York site loses power and the next answer sends its client to
//!    Frankfurt (the time from the power cut to the first changed answer);
//! 7. several access points, in namespaces of their own (the multi-AP
//!    harness, no WAN emulator): two APs announce the home address by BGP
//!    (BIRD 2) to a router that routes it over both (ECMP); three members
//!    registered with both, eight legacy clients and the shim client on
//!    long paced downloads. It shows the router's multipath route and the
//!    APs' agreeing tables (`homeaddr-ctl aps`), then kills AP 1 with
//!    SIGKILL mid-transfer: when BIRD withdrew its route, when new
//!    connections succeeded, and every transfer finishing with its SHA-256
//!    checked, in a table of which AP carried it before and after, which
//!    member served it and its longest stall;
//! 8. today's Internet, in the NAT lab (kernel forwarding, nftables
//!    masquerade): an IPv4 home address beside the IPv6 one, member 2
//!    behind a NAT, and behind another NAT two IPv4-only clients: the
//!    legacy one is served through the access point, the shim's first
//!    connection too, then it is route-optimized through the NATs and a
//!    download goes direct with its SHA-256 checked;
//! 9. a summary of every check. The exit status is 0 only if all passed.
//!
//! Needs root (namespaces, TUN). Daemon logs go to files in the topology's
//! log directory, printed at the start and kept when anything fails.
//! Everything is torn down at the end, after a failure or panic (RAII) and
//! on Ctrl-C / SIGTERM (the signal sets a flag checked between steps and in
//! every wait; a second Ctrl-C kills at once, and the next run removes what
//! that left behind).

mod map;
mod output;
mod report;
mod signals;
mod steps;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use homeaddr_control::Request;
use homeaddr_netns_tests::scenario::Interrupted;
use homeaddr_netns_tests::service::Service;

use crate::output::secs;
use crate::report::Report;
use crate::signals::install_signal_handlers;
use crate::steps::{
    build, drain, geo_dns, legacy, member_move, nat, route_optimization, several_aps,
};

const STEPS: [&str; 11] = [
    "three members registered and active",
    "legacy client served through the access point",
    "route optimization on an open connection",
    "member move mid-transfer",
    "drain: new connections go elsewhere",
    "drain: the open connection finishes",
    geo_dns::NEAREST,
    geo_dns::FAILOVER,
    several_aps::NO_FLOW_LOST,
    several_aps::WITHDRAWN,
    nat::NAT_CLIENT,
];

fn steps(svc: &mut Service, report: &mut Report) -> anyhow::Result<()> {
    build::step_build(svc, report)?;
    let legacy_member = legacy::step_legacy(svc, report)?;
    let member = route_optimization::step_route_optimization(svc, report)?;
    member_move::step_move(svc, report, member)?;
    drain::step_drain(svc, report, member, legacy_member)?;
    geo_dns::step_geo_dns(svc, report)?;
    several_aps::step_several_aps(report)?;
    nat::step_nat(report)?;
    Ok(())
}

/// Members deregister while the access point and the WAN are still up (the
/// harness stops daemons one by one after the WAN is gone, where each
/// member would wait for an acknowledgement that cannot come).
fn leave(svc: &Service) {
    for host in svc.members.values() {
        let _ = host.control(Request::Leave);
    }
    for host in svc.members.values() {
        if let Some(d) = &host.daemon {
            d.wait_timeout(Duration::from_secs(4));
        }
    }
}

fn run(report: &mut Report, started: Instant) -> anyhow::Result<()> {
    let mut svc = match Service::start("demo") {
        Ok(svc) => svc,
        Err(e) => {
            let e = e.context("starting the access point");
            println!("\n    [FAILED] {e:#}");
            report.not_run = STEPS.to_vec();
            println!("\nSummary ({} in all)", secs(started.elapsed()));
            report.print();
            return Err(e);
        }
    };
    let logs = svc.topo.dir().to_path_buf();
    println!("daemon logs: {} (kept if anything fails)", logs.display());
    let result = steps(&mut svc, report);
    let failed = result.is_err() || !report.all_ok();
    if failed {
        svc.topo.keep_logs();
    }
    if let Err(e) = &result
        && e.downcast_ref::<Interrupted>().is_none()
    {
        println!("\n    [FAILED] {e:#}");
    }
    report.not_run = STEPS
        .iter()
        .copied()
        .filter(|s| !report.checks.iter().any(|c| c.what == *s))
        .collect();
    println!();
    println!("Cleaning up: members leave the service, daemons stop, namespaces are deleted");
    let t = Instant::now();
    leave(&svc);
    drop(svc);
    println!("    done in {}", secs(t.elapsed()));
    println!();
    println!("Summary ({} in all)", secs(started.elapsed()));
    report.print();
    if failed {
        println!();
        println!("daemon logs kept in {}", logs.display());
    }
    result
}

fn main() -> ExitCode {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "homeaddr-demo needs root (network namespaces, TUN devices): run scripts/demo, or sudo"
        );
        return ExitCode::from(2);
    }
    if std::env::var_os("HOMEADDR_TEST_LOG").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("HOMEADDR_TEST_LOG", "info") };
    }
    install_signal_handlers();
    let started = Instant::now();
    println!("homeaddr demo: one stable IPv6 home address for three servers in different regions");
    println!(
        "(network namespaces on this machine, joined by a user-space WAN emulator with real delays)"
    );
    let mut report = Report::default();
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut report, started)));
    match outcome {
        Ok(Ok(())) if report.all_ok() => {
            println!();
            println!("All {} checks passed.", report.checks.len());
            ExitCode::SUCCESS
        }
        Ok(Ok(())) => {
            println!();
            println!(
                "{} of {} checks FAILED.",
                report.checks.iter().filter(|c| !c.ok).count(),
                report.checks.len()
            );
            ExitCode::FAILURE
        }
        Ok(Err(e)) if e.downcast_ref::<Interrupted>().is_some() => {
            println!();
            println!("Interrupted; everything was cleaned up.");
            ExitCode::from(130)
        }
        Ok(Err(_)) => {
            println!();
            println!("The demo FAILED (see above).");
            ExitCode::FAILURE
        }
        Err(_) => {
            println!();
            println!(
                "The demo FAILED: it panicked (see above); the namespaces were removed while unwinding."
            );
            report.print();
            ExitCode::FAILURE
        }
    }
}
