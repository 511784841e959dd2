//! What the multi-AP tests share: building a cluster, the long transfers
//! of every client, the "0 flows lost" check and the new-connection probe.

use std::time::{Duration, Instant};

use homeaddr_netns_tests::cluster::transfer::{self, FirstConnection, Transfers};
use homeaddr_netns_tests::cluster::{Cluster, ClusterConfig};
use homeaddr_netns_tests::scenario::{self, read};
use homeaddr_netns_tests::service::bin;

/// Legacy clients of the flow tests (the 12).
pub const LEGACY_CLIENTS: usize = 12;
/// Bytes each long transfer downloads...
pub const TRANSFER_BYTES: u64 = 3 * 1024 * 1024;
/// ... at this pace (bytes/s): 12 s per transfer, so every one is open
/// across the events of a test.
pub const TRANSFER_RATE: u64 = 256 * 1024;
/// New connections must succeed within this of a route change.
pub const NEW_CONNECTION_LIMIT: Duration = Duration::from_secs(1);
/// Each new-connection attempt of the probe gives up after this (a fresh
/// connection, from a fresh port, follows).
const ATTEMPT: Duration = Duration::from_millis(250);

/// Starts `config` as test `tag`; panics with the reason.
pub fn start(tag: &str, config: &ClusterConfig) -> Cluster {
    Cluster::start(tag, config).unwrap_or_else(|e| panic!("the cluster does not start: {e:#}"))
}

/// The shim client's first connection binds it to its member: waits for
/// the binding, so its transfer runs route-optimized (past every AP).
pub fn bind_shim(c: &Cluster) {
    let shim = c.shim.as_ref().expect("a shim client");
    let name = scenario::who_at(shim, c.service_endpoint())
        .unwrap_or_else(|e| panic!("the shim client cannot reach the service: {e:#}"));
    let id = scenario::member_of(&name).expect("a member answers");
    scenario::await_binding(shim, id)
        .unwrap_or_else(|e| panic!("route optimization: {e}\n{}", c.dump()));
}

/// A long paced transfer on every client (legacy and shim); returns once
/// each has data flowing (1 s of it).
pub fn start_transfers(c: &Cluster) -> Transfers {
    let clients = c.all_clients();
    let t = Transfers::start(
        &clients,
        c.service_endpoint(),
        TRANSFER_BYTES,
        TRANSFER_RATE,
    )
    .unwrap_or_else(|e| panic!("transfers start: {e:#}"));
    t.wait_progress(TRANSFER_RATE, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.dump()));
    assert_eq!(
        t.running(),
        clients.len(),
        "a transfer ended early (before the test did anything)"
    );
    if let Some(shim) = &c.shim {
        // The shim's transfer goes straight to its member, past every AP.
        let flow = read::shim_service_flow(shim);
        let path = flow.as_ref().map(|f| f.path.name());
        assert_eq!(
            path,
            Some("direct"),
            "the shim's transfer is not route-optimized: {flow:?}\n{}",
            c.dump()
        );
    }
    t
}

/// Every transfer still running (they must span the test's event).
pub fn assert_all_running(c: &Cluster, t: &Transfers) {
    assert_eq!(
        t.running(),
        c.all_clients().len(),
        "a transfer ended before the event: make them longer\n{}",
        c.dump()
    );
}

/// Waits for every transfer; panics unless each kept its flow (complete,
/// intact, no reset). Prints the summary.
pub fn assert_no_flow_lost(c: &Cluster, t: Transfers, what: &str) {
    let results = t.join();
    let summary = transfer::summary(&results);
    println!("{what}: {summary}");
    let lost = results.iter().filter(|r| !r.kept()).count();
    assert_eq!(
        lost,
        0,
        "{what}: {lost} flows lost\n{summary}\n{}",
        c.dump()
    );
}

/// From every legacy client, new connections from `since` on until one
/// succeeds; prints each client's time and panics unless all succeeded
/// within [`NEW_CONNECTION_LIMIT`]. Returns the slowest.
pub fn assert_new_connections(c: &Cluster, since: Instant, what: &str) -> Duration {
    let firsts = transfer::first_connections(
        &c.legacy(),
        c.service_endpoint(),
        since,
        ATTEMPT,
        NEW_CONNECTION_LIMIT + Duration::from_secs(4),
    )
    .expect("probe threads start");
    let slowest = transfer::slowest(&firsts);
    println!("{what}: {}", describe(&firsts));
    match slowest {
        Some(s) => assert!(
            s <= NEW_CONNECTION_LIMIT,
            "{what}: the slowest client's first new connection took {} ms (limit {} ms)\n{}",
            s.as_millis(),
            NEW_CONNECTION_LIMIT.as_millis(),
            c.dump()
        ),
        None => panic!(
            "{what}: a client had no new connection within {:?}: {}\n{}",
            NEW_CONNECTION_LIMIT + Duration::from_secs(4),
            describe(&firsts),
            c.dump()
        ),
    }
    slowest.unwrap_or_default()
}

fn describe(firsts: &[FirstConnection]) -> String {
    let slowest =
        transfer::slowest(firsts).map_or("never".to_string(), |s| format!("{} ms", s.as_millis()));
    let each: Vec<String> = firsts
        .iter()
        .map(|f| match f.after {
            Some(a) => format!(
                "{} {} ms ({}, {} tries)",
                f.client,
                a.as_millis(),
                f.server,
                f.attempts
            ),
            None => format!("{} FAILED ({} tries)", f.client, f.attempts),
        })
        .collect();
    format!(
        "new connections succeeded after at most {slowest}: {}",
        each.join(", ")
    )
}

/// AP `a`'s `legacy_in` counter (client packets it tunnelled to members).
pub fn legacy_in(c: &Cluster, a: usize) -> u64 {
    read::counter(&c.ap(a).host.status(), "legacy_in")
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Waits until every running AP shows the same Maglev table digest and
/// `homeaddr-ctl aps` says so; returns the digest.
pub fn assert_tables_agree(c: &Cluster) -> String {
    let digests = || c.table_digests();
    homeaddr_netns_tests::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        "every AP to show the same table digest",
        || {
            let d = digests();
            !d[0].is_empty() && d.iter().all(|x| *x == d[0])
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", digests(), c.dump()));
    let mut ctl = std::process::Command::new(bin("homeaddr-ctl").expect("homeaddr-ctl is built"));
    for ap in c.aps.iter().filter(|ap| ap.running()) {
        ctl.arg("--control").arg(&ap.host.control);
    }
    let out = ctl.arg("aps").output().expect("homeaddr-ctl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("tables agree"),
        "homeaddr-ctl aps: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    digests().remove(0)
}
