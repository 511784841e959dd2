//! The steps of the demo, one file each, and what they share.

pub(crate) mod build;
pub(crate) mod drain;
pub(crate) mod geo_dns;
pub(crate) mod legacy;
pub(crate) mod member_move;
pub(crate) mod nat;
pub(crate) mod route_optimization;
pub(crate) mod several_aps;

use homeaddr_control::MemberRow;
use homeaddr_netns_tests::scenario::{check_interrupted, read};
use homeaddr_netns_tests::service::{Host, Service};

use crate::map::city;
use crate::output::{table, us_ms};
use crate::report::low_median;

pub(crate) fn print_members(svc: &Service) -> anyhow::Result<Vec<MemberRow>> {
    let members = read::ap_members(svc)?;
    let mut rows = vec![vec![
        ">member".to_string(),
        "site".into(),
        "care-of address".into(),
        "state".into(),
        ">weight".into(),
        ">flows".into(),
    ]];
    for m in &members {
        let id = m.id;
        rows.push(vec![
            id.to_string(),
            city(&format!("m{id}")).to_string(),
            m.care_of.to_string(),
            m.state.name().to_string(),
            m.weight.to_string(),
            m.flows.to_string(),
        ]);
    }
    table(6, &rows);
    Ok(members)
}

/// The number after the slash in a step's header: the steps, then the
/// summary.
const LAST_STEP: usize = 9;

pub(crate) fn header(n: usize, title: &str) -> anyhow::Result<()> {
    check_interrupted()?;
    println!();
    println!("[{n}/{LAST_STEP}] {title}");
    Ok(())
}

pub(crate) fn verified(ok: bool) -> &'static str {
    if ok { "verified" } else { "WRONG" }
}

/// The median of some round trips in ms, "-" when there are none.
pub(crate) fn median_or_dash(samples: &[u64]) -> String {
    if samples.is_empty() {
        "-".into()
    } else {
        us_ms(low_median(samples))
    }
}

pub(crate) fn shim(svc: &Service) -> &Host {
    &svc.clients[1]
}

/// The shim's counter `name` now.
pub(crate) fn shim_count(svc: &Service, name: &str) -> u64 {
    read::counter(&shim(svc).status(), name)
}
