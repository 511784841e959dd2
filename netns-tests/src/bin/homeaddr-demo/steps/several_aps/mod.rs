//! Step 7: several access points. In a set of namespaces of its own (the
//! multi-AP harness, `cluster`): two access points behind a router, each
//! announcing the home address by eBGP from BIRD 2, the router's BIRD
//! installing one multipath route over both (ECMP, L4 hash); three members
//! registered with both access points; eight legacy clients and the shim
//! client on long paced downloads. AP 1's daemon is killed (SIGKILL)
//! mid-transfer: BIRD withdraws its route, new connections are served at
//! once, and every transfer finishes with its SHA-256 checked. The
//! [`Cluster`] owns its namespaces and daemons: they go at the end of the
//! step, and also on an error, a panic or Ctrl-C (RAII).

mod carriers;
mod routing;

use std::time::{Duration, Instant};

use anyhow::Context;
use homeaddr_netns_tests::cluster::bird::HOLD_TIME;
use homeaddr_netns_tests::cluster::transfer::{
    self, FirstConnection, PACED_READ, Transfers, is_reset,
};
use homeaddr_netns_tests::cluster::{Cluster, ClusterConfig, ap_addr};
use homeaddr_netns_tests::scenario::{self, Interrupted, check_interrupted, read};

use super::header;
use crate::output::{mib, ms, say, secs};
use crate::report::Report;

/// The check names (the summary lists them as NOT RUN if the step stops).
pub(crate) const NO_FLOW_LOST: &str = "several APs: AP death loses no flow";
pub(crate) const WITHDRAWN: &str = "several APs: route withdrawn and new connections served";

/// Legacy clients: with eight, the router's hash leaves AP 1 without a
/// transfer once in 256 runs (the table and the check then say so).
const LEGACY_CLIENTS: usize = 8;
const MEMBERS: u16 = 3;
/// Each transfer downloads this at this pace (8 s), so that all are in
/// flight when AP 1 dies a second in.
const TRANSFER_BYTES: u64 = 2 << 20;
const TRANSFER_RATE: u64 = 256 * 1024;
/// New connections must succeed within this of the withdrawal.
const NEW_CONNECTION_LIMIT: Duration = Duration::from_secs(1);
/// Each new-connection attempt gives up after this (then a fresh one, from
/// a fresh port).
const ATTEMPT: Duration = Duration::from_millis(250);
/// How long the probe keeps trying (past the limit: to report the time).
const PROBE_FOR: Duration = Duration::from_secs(5);
/// BIRD withdraws a dead daemon's route at once; a silent host's after
/// the hold time. Waiting longer than that is a failure.
const WITHDRAW_TIMEOUT: Duration = HOLD_TIME.saturating_add(Duration::from_secs(2));
/// The transfers' own end, with room for a stall.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn step_several_aps(report: &mut Report) -> anyhow::Result<()> {
    header(
        7,
        "Several access points: two behind a BGP router, one killed mid-transfer",
    )?;
    say(
        "new namespaces, on two LANs (no emulated WAN in this step): a router; on the server LAN two access point hosts and",
    );
    say(&format!(
        "{MEMBERS} members, each registered with both access points; on the client LAN {LEGACY_CLIENTS} legacy clients and a shim client"
    ));
    let started = Instant::now();
    let mut c = Cluster::start(
        "multiap",
        &ClusterConfig::new(2, MEMBERS, LEGACY_CLIENTS)
            .with_shim()
            .with_bird(),
    )
    .context("building the two-access-point cluster")?;
    say(&format!(
        "up in {}: both access points serve, both BGP sessions are established, every member is active at both",
        secs(started.elapsed())
    ));
    let result = story(&c, report);
    let interrupted = result
        .as_ref()
        .is_err_and(|e| e.downcast_ref::<Interrupted>().is_some());
    if !interrupted && !result.as_ref().is_ok_and(|ok| *ok) {
        c.topo.keep_logs();
        say(&format!(
            "this step's daemon and BIRD logs are kept in {}",
            c.topo.dir().display()
        ));
    }
    if !interrupted {
        say(
            "cleaning up this step: members leave, the daemons and BIRD stop, its namespaces are deleted",
        );
    }
    let t = Instant::now();
    drop(c);
    if !interrupted {
        say(&format!(
            "done in {} (a member's daemon waits up to 3 s for every access point, the dead AP 1 too, to acknowledge its",
            secs(t.elapsed())
        ));
        say("deregistration, then leaves anyway)");
    }
    result.map(drop)
}

/// The step once the cluster runs; whether both checks passed.
fn story(c: &Cluster, report: &mut Report) -> anyhow::Result<bool> {
    check_interrupted()?;
    let routed = routing::show_route(c)?;
    let agree = routing::show_agreement(c)?;
    check_interrupted()?;
    let run = transfers(c)?;
    let kill = kill_ap1(c, &run)?;
    say(&format!(
        "waiting for the {} transfers to finish...",
        run.carried.len() + 1
    ));
    scenario::wait_for(
        "every transfer to finish",
        FINISH_TIMEOUT,
        Duration::from_millis(20),
        || run.transfers.running() == 0,
    )?;
    let results = run.transfers.join();
    let ap2_rows = carriers::flow_rows(c, 2);
    let ap2_in = read::counter(&c.ap(2).host.status(), "legacy_in");
    say(&format!(
        "all ended {} after the kill; AP 2 tunnelled {} client packets to members after it. Who carried and served what:",
        secs(kill.at.elapsed()),
        ap2_in.saturating_sub(kill.ap2_in)
    ));
    carriers::print_table(&results, &run.carried, &ap2_rows, TRANSFER_BYTES);
    let moved = carriers::moved_to_ap2(&run.carried, &ap2_rows);
    let on_ap1 = carriers::count_on(&run.carried, 1);
    say(
        "(\"AP after\": AP 2 counted packets of the flow after the kill; the members had reported every flow to both APs,",
    );
    say(
        "so AP 2 sent each one to the member that serves it. The shim's transfer never crossed an access point.",
    );
    say(&format!(
        "\"longest stall\": the longest gap between two reads; the pace alone spaces them up to {} apart.)",
        ms(Duration::from_secs_f64(
            PACED_READ as f64 / TRANSFER_RATE as f64
        ))
    ));
    let kept = results.iter().filter(|r| r.kept()).count();
    let resets = results
        .iter()
        .filter(|r| r.result.as_ref().is_err_and(is_reset))
        .count();
    let stall = transfer::longest_stall(&results);
    let no_flow_lost = report.check(
        NO_FLOW_LOST,
        kept == results.len() && resets == 0 && run.shim_direct,
        format!(
            "{kept}/{} transfers intact (SHA-256), {resets} reset; {moved} of {on_ap1} moved from AP 1 to AP 2{}; longest stall {}",
            results.len(),
            if run.shim_direct {
                ", the shim's direct"
            } else {
                ", the shim's NOT direct"
            },
            ms(stall)
        ),
    );
    let slowest = kill.firsts.as_deref().and_then(transfer::slowest);
    let withdrawn = report.check(
        WITHDRAWN,
        routed
            && agree.is_some()
            && kill.withdrawn.is_some()
            && slowest.is_some_and(|s| s <= NEW_CONNECTION_LIMIT),
        format!(
            "{}; withdrawn {} after the kill; new connections {} after it",
            match &agree {
                Some(d) if routed => format!("2 BGP nexthops, tables agree ({d})"),
                Some(d) => format!("route WRONG, tables agree ({d})"),
                None if routed => "2 BGP nexthops, tables DISAGREE".into(),
                None => "route WRONG, tables DISAGREE".into(),
            },
            kill.withdrawn.map_or("NEVER".into(), ms),
            slowest.map_or("NOT all".into(), |s| format!("<= {}", ms(s)))
        ),
    );
    Ok(no_flow_lost && withdrawn)
}

/// The transfers in flight and what they were before the kill.
struct Running {
    transfers: Transfers,
    carried: Vec<carriers::Carried>,
    shim_direct: bool,
}

/// Binds the shim, starts a paced download on every client and waits
/// until each carries data; prints which AP carries which.
fn transfers(c: &Cluster) -> anyhow::Result<Running> {
    let shim = c.shim.as_ref().context("the cluster has a shim client")?;
    let who =
        scenario::who_at(shim, c.service_endpoint()).context("the shim's first connection")?;
    let member = scenario::member_of(&who).unwrap_or(0);
    let bound = scenario::await_binding(shim, member)?;
    say(&format!(
        "the shim client's first connection (through AP 1, its access point) reached {who}; the shim held a binding with it {} after",
        ms(bound)
    ));
    let clients = c.all_clients();
    let transfers = Transfers::start(
        &clients,
        c.service_endpoint(),
        TRANSFER_BYTES,
        TRANSFER_RATE,
    )?;
    transfers.wait_progress(TRANSFER_RATE / 2, Duration::from_secs(10))?;
    let flow = read::shim_service_flow(shim);
    let shim_direct = flow.as_ref().is_some_and(|f| f.path.name() == "direct");
    let carried = carriers::before(c);
    say(&format!(
        "{} paced downloads of {} at {} KiB/s ({} each), one per client, are in flight ({} running)",
        clients.len(),
        mib(TRANSFER_BYTES),
        TRANSFER_RATE / 1024,
        secs(Duration::from_secs(TRANSFER_BYTES / TRANSFER_RATE)),
        transfers.running()
    ));
    say(&format!(
        "the router's hash put {} legacy transfers on AP 1 and {} on AP 2 (the APs' affinity tables); the shim's goes {}",
        carriers::count_on(&carried, 1),
        carriers::count_on(&carried, 2),
        if shim_direct {
            format!("straight to {who}, past both access points")
        } else {
            format!("through an access point (NOT route-optimized: {flow:?})")
        }
    ));
    Ok(Running {
        transfers,
        carried,
        shim_direct,
    })
}

/// What the kill of AP 1 showed.
struct Kill {
    at: Instant,
    /// From the kill to the route without AP 1 at the router.
    withdrawn: Option<Duration>,
    /// Each legacy client's first new connection after the withdrawal.
    firsts: Option<Vec<FirstConnection>>,
    ap2_in: u64,
}

/// Kills AP 1's daemon, times the withdrawal, then new connections.
fn kill_ap1(c: &Cluster, run: &Running) -> anyhow::Result<Kill> {
    check_interrupted()?;
    let ap1_in = read::counter(&c.ap(1).host.status(), "legacy_in");
    let ap2_in = read::counter(&c.ap(2).host.status(), "legacy_in");
    let at = c.kill_ap(1);
    say(&format!(
        "AP 1's daemon is killed (SIGKILL) with {} transfers in flight ({ap1_in} client packets tunnelled by it so far)",
        run.transfers.running()
    ));
    let alone = [ap_addr(2)];
    let withdrawn = c
        .router
        .wait_nexthops("the route over AP 2 only", WITHDRAW_TIMEOUT, |h| h == alone)
        .map(|(when, _)| when);
    let Ok(when) = withdrawn else {
        say(&format!(
            "the router still routes to AP 1 {} after the kill: {}",
            secs(WITHDRAW_TIMEOUT),
            c.router.route()
        ));
        return Ok(Kill {
            at,
            withdrawn: None,
            firsts: None,
            ap2_in,
        });
    };
    let took = when - at;
    say(&format!(
        "{} later the router's route has AP 2 only: AP 1's TUN and the route into it died with the daemon, its BIRD",
        ms(took)
    ));
    say(&format!(
        "withdrew the announcement at once (no need to wait for the {} s hold time). The router's route now:",
        HOLD_TIME.as_secs()
    ));
    routing::print_route(&c.router.route());
    let firsts =
        transfer::first_connections(&c.legacy(), c.service_endpoint(), when, ATTEMPT, PROBE_FOR)?;
    say_firsts(&firsts, took);
    Ok(Kill {
        at,
        withdrawn: Some(took),
        firsts: Some(firsts),
        ap2_in,
    })
}

fn say_firsts(firsts: &[FirstConnection], withdrawn: Duration) {
    let times: Vec<Duration> = firsts.iter().filter_map(|f| f.after).collect();
    let tries: u32 = firsts.iter().map(|f| f.attempts).sum();
    let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) else {
        say("no legacy client's new connection succeeded");
        return;
    };
    let mut servers: Vec<&str> = firsts
        .iter()
        .filter(|f| f.after.is_some())
        .map(|f| f.server.as_str())
        .collect();
    servers.sort_unstable();
    servers.dedup();
    say(&format!(
        "then every legacy client opens a new connection: the first succeeded {} after the withdrawal ({} after the kill),",
        ms(*first),
        ms(*first + withdrawn)
    ));
    say(&format!(
        "the last {} after it; {} of {} clients served (by {}), {tries} attempts in all",
        ms(*last),
        times.len(),
        firsts.len(),
        servers.join(", ")
    ));
}
