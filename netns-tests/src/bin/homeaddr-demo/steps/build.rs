//! Step 1: the sites, the latency map and the members registering.

use std::time::Duration;

use homeaddr_control::MemberState;
use homeaddr_netns_tests::scenario;
use homeaddr_netns_tests::service::{HOME_ADDRESS, SERVICE_PORT, Service};

use super::{header, print_members};
use crate::map::{LATENCY_MS, LEGACY, SHIM, print_latencies};
use crate::output::{say, secs};
use crate::report::Report;

pub(crate) fn step_build(svc: &mut Service, report: &mut Report) -> anyhow::Result<()> {
    header(
        1,
        "Building the sites: an access point, three members, two clients",
    )?;
    // Clients first: host addresses follow creation order, and a client's
    // address decides which member Maglev gives it.
    let legacy = svc.add_client(false, &[])?;
    let shim = svc.add_client(true, &[])?;
    assert_eq!(
        (
            svc.clients[legacy].name.as_str(),
            svc.clients[shim].name.as_str()
        ),
        (LEGACY, SHIM)
    );
    let took = scenario::start_members(svc, 1..=3)?;
    for (a, b, ms) in LATENCY_MS {
        svc.set_latency(a, b, Duration::from_millis(*ms))?;
    }
    say(&format!(
        "home address {HOME_ADDRESS}, port {SERVICE_PORT}: every member runs the same unmodified TCP server on it"
    ));
    say("one-way WAN latencies (emulated), ms:");
    print_latencies();
    say(&format!(
        "members up in {}, {}, {} (daemon start, authenticated registration with the access point, server start)",
        secs(took[0]),
        secs(took[1]),
        secs(took[2])
    ));
    say("the access point's member table (control command `members`):");
    let members = print_members(svc)?;
    let active = members
        .iter()
        .filter(|m| m.state == MemberState::Active)
        .count();
    report.check(
        "three members registered and active",
        active == 3,
        format!(
            "{active} of 3 active, registration {}-{}",
            secs(*took.iter().min().unwrap()),
            secs(*took.iter().max().unwrap())
        ),
    );
    Ok(())
}
