//! Step 5: a drain: new connections go elsewhere while the open one
//! finishes on the drained member.

use std::time::{Duration, Instant};

use anyhow::Context;
use homeaddr_netns_tests::scenario::{self, BIND_TIMEOUT, Sessions, member_of, read};
use homeaddr_netns_tests::service::Service;

use super::{header, print_members, shim, shim_count};
use crate::output::{ms, say, us_ms};
use crate::report::Report;

/// An open connection on `member` from the shim: 40 echo round trips over
/// 2 s, started and seen in the shim's flow table.
pub(crate) fn open_session(svc: &Service, member: u16) -> anyhow::Result<Sessions> {
    let known = read::shim_flow_ports(shim(svc));
    let session = Sessions::start(svc, &[1], 40, Duration::from_millis(50))?;
    let started = scenario::wait_for(
        "the open connection",
        Duration::from_secs(5),
        Duration::from_millis(5),
        || read::shim_new_flow_on(shim(svc), &known, member, 3) || session.all_finished(),
    );
    if let Err(e) = started {
        let _ = session.join();
        return Err(e);
    }
    Ok(session)
}

/// The member a new connection from client `index` reaches, and its name.
pub(crate) fn new_connection(
    svc: &Service,
    index: usize,
    what: &str,
) -> anyhow::Result<(u16, String)> {
    let who = scenario::who(svc, &svc.clients[index])
        .with_context(|| format!("a new connection from the {what}"))?;
    Ok((member_of(&who).unwrap_or(0), who))
}

pub(crate) fn step_drain(
    svc: &mut Service,
    report: &mut Report,
    member: u16,
    legacy_member: u16,
) -> anyhow::Result<()> {
    header(
        5,
        &format!("Draining member {member}: new connections go elsewhere, the open one finishes"),
    )?;
    let session = open_session(svc, member)?;
    say(&format!(
        "an open connection runs 40 echo round trips on member{member} over 2 s"
    ));
    let told = scenario::drain(svc, member, Some(1))?;
    say(&format!(
        "the operator drains member {member} at the access point (control: drain {{\"member\": {member}}})"
    ));
    match told {
        Some(d) => say(&format!(
            "{} later the member's binding update tells the shim it is draining: no new flows start there",
            ms(d)
        )),
        None => say(&format!(
            "the shim was not told: timed out after {BIND_TIMEOUT:?}"
        )),
    }
    let before = shim_count(svc, "via_ap_out");
    let asked = Instant::now();
    let (new_member, shim_who) = new_connection(svc, 1, "shim client")?;
    let via_ap = shim_count(svc, "via_ap_out") - before;
    say(&format!(
        "a new connection from the shim client goes through the access point ({via_ap} packets) and is served by {shim_who}"
    ));
    if scenario::await_binding(shim(svc), new_member).is_ok() {
        say(&format!(
            "the shim now also holds a binding with {shim_who} (within {} of that connection's first packet)",
            ms(asked.elapsed())
        ));
    }
    let (legacy_now, legacy_who) = new_connection(svc, 0, "legacy client")?;
    say(&format!(
        "a new connection from the legacy client is served by {legacy_who}{}",
        if legacy_now == legacy_member && legacy_member != member {
            format!(" as before (it was on member {legacy_member}, which is not drained)")
        } else {
            format!(" (before the drain: member{legacy_member})")
        }
    ));
    say("the access point's member table now:");
    let members = print_members(svc)?;
    let (state, weight) = members
        .iter()
        .find(|m| m.id == member)
        .map(|m| (m.state.name().to_string(), u64::from(m.weight)))
        .unwrap_or_default();
    let (open_ok, open_numbers) = open_session_finished(session, member);
    report.check(
        "drain: new connections go elsewhere",
        told.is_some()
            && state == "draining"
            && weight == 0
            && ![0, member].contains(&new_member)
            && ![0, member].contains(&legacy_now)
            && (legacy_member == member || legacy_now == legacy_member),
        format!(
            "member {member} {state} (weight {weight}){}; new: shim -> {shim_who}, legacy -> {legacy_who}",
            if told.is_some() { "" } else { ", shim not told" }
        ),
    );
    report.check("drain: the open connection finishes", open_ok, open_numbers);
    Ok(())
}

/// Whether the open connection on the drained member ran to its end there,
/// and the numbers of its check.
pub(crate) fn open_session_finished(session: Sessions, member: u16) -> (bool, String) {
    let open = session.join().pop().expect("one session");
    let (ok, numbers) = match &open {
        Ok(r) => {
            say(&format!(
                "the open connection finished: {} of 40 round trips answered by {} (median {}, max {})",
                r.rtt_us.len(),
                r.server,
                us_ms(r.median_us),
                us_ms(r.max_us)
            ));
            (
                r.rtt_us.len() == 40 && r.server == format!("member{member}"),
                format!(
                    "{}/40 round trips on {}, max RTT {}",
                    r.rtt_us.len(),
                    r.server,
                    us_ms(r.max_us)
                ),
            )
        }
        Err(e) => {
            say(&format!("the open connection FAILED: {e}"));
            (false, e.to_string())
        }
    };
    (ok, numbers)
}
