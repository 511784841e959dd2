//! Step 3: the shim client's route optimization on one open connection,
//! then a download over the direct path.

use std::time::Duration;

use anyhow::Context;
use homeaddr_netns_tests::scenario::traffic::{self, TracedSession};
use homeaddr_netns_tests::scenario::{self, check_interrupted, member_of};
use homeaddr_netns_tests::service::Service;

use super::{header, median_or_dash, shim, shim_count, verified};
use crate::map::{NEAR_MEMBER, SHIM, one_way};
use crate::output::{mbit, mib, ms, say, table, us_ms};
use crate::report::{Report, low_median, rtt_matches};

pub(crate) const DOWNLOAD_BYTES: u64 = 16 << 20;

/// The session's round trips as a table: the first ones one by one up to
/// two after the switch to the direct path, the rest summed up.
pub(crate) fn print_session(session: &TracedSession) {
    let mut rows = vec![vec![
        "round trip".to_string(),
        ">sent at".into(),
        ">RTT".into(),
        "path of the request (the shim's flow table)".into(),
    ]];
    let shown = session
        .first_direct()
        .map_or(5, |i| i + 3)
        .min(session.trips.len());
    for t in &session.trips[..shown] {
        rows.push(vec![
            t.what.clone(),
            ms(t.sent),
            ms(t.rtt),
            match t.path.as_str() {
                "direct" => format!("direct to {}", session.server),
                "access-point" if t.mixed() => {
                    "via the access point (the answer came directly)".into()
                }
                "access-point" => "via the access point".into(),
                other => other.to_string(),
            },
        ]);
    }
    let rest = &session.trips[shown..];
    if !rest.is_empty() {
        let direct_rest = rest.iter().filter(|t| t.path == "direct").count();
        let rtts: Vec<u64> = rest.iter().map(|t| t.rtt.as_micros() as u64).collect();
        rows.push(vec![
            format!("... {} more", rest.len()),
            String::new(),
            format!(
                "{}-{}",
                us_ms(*rtts.iter().min().unwrap()),
                us_ms(*rtts.iter().max().unwrap())
            ),
            format!("{direct_rest} of them direct"),
        ]);
    }
    table(6, &rows);
}

/// When the shim bound and when the first round trip went direct.
pub(crate) fn say_binding(session: &TracedSession, direct_at: Option<Duration>) {
    match (session.bound_at, direct_at) {
        (Some(bound), Some(direct)) => {
            say(&format!(
                "the shim accepted {}'s binding update {} after the connection's first packet (return routability",
                session.server,
                ms(bound),
            ));
            say(&format!(
                "ran meanwhile; nothing waited for it); the first round trip on the direct path started at {}",
                ms(direct)
            ));
        }
        (bound, _) => say(&format!(
            "NO route optimization: {}; no round trip took the direct path",
            bound.map_or(
                "the shim never accepted a binding update".into(),
                |b| format!("the shim accepted a binding update at {}", ms(b))
            )
        )),
    }
}

pub(crate) fn step_route_optimization(
    svc: &mut Service,
    report: &mut Report,
) -> anyhow::Result<u16> {
    header(
        3,
        "The shim client: route optimization on an open connection",
    )?;
    say("one TCP connection to the home address: handshake, WHO, then 20 echo round trips");
    let session = traffic::traced_session(svc, 1, 20, Duration::from_millis(20))
        .context("shim client session")?;
    let member = member_of(&session.server).unwrap_or(0);
    let m = format!("m{member}");
    print_session(&session);
    let (via, direct) = (session.rtts_on("access-point"), session.rtts_on("direct"));
    let expected_via = 2 * (one_way(SHIM, "ap") + one_way("ap", &m));
    let expected_direct = 2 * one_way(SHIM, &m);
    if member != NEAR_MEMBER {
        say(&format!(
            "note: Maglev gave this client member {member}, not member {NEAR_MEMBER} as this map assumes (hashing changed?)"
        ));
    }
    let direct_at = session.first_direct().map(|i| session.trips[i].sent);
    say_binding(&session, direct_at);
    let (via_med, direct_med) = (median_or_dash(&via), median_or_dash(&direct));
    say(&format!(
        "RTT {via_med} via the access point -> {direct_med} direct (the emulated WAN paths: {} and {})",
        ms(expected_via),
        ms(expected_direct)
    ));
    let on_path = |samples: &[u64], expected| {
        !samples.is_empty() && rtt_matches(Duration::from_micros(low_median(samples)), expected)
    };
    report.check(
        "route optimization on an open connection",
        member != 0
            && session.direct_from_then_on()
            && on_path(&via, expected_via)
            && on_path(&direct, expected_direct),
        format!(
            "{via_med} -> {direct_med} ({}), direct after {}",
            session.server,
            direct_at.map_or("never".into(), ms)
        ),
    );
    check_interrupted()?;
    direct_download(svc, report, &session.server)?;
    Ok(member)
}

/// A new connection of the bound shim: a download, all of it direct.
pub(crate) fn direct_download(
    svc: &Service,
    report: &mut Report,
    server: &str,
) -> anyhow::Result<()> {
    say(&format!(
        "a new connection: download of {} from the home address",
        mib(DOWNLOAD_BYTES)
    ));
    let (via_ap_before, direct_before) =
        (shim_count(svc, "via_ap_out"), shim_count(svc, "direct_out"));
    let get = scenario::download(svc, shim(svc), DOWNLOAD_BYTES).context("shim client download")?;
    let via_ap = shim_count(svc, "via_ap_out") - via_ap_before;
    let direct_pk = shim_count(svc, "direct_out") - direct_before;
    let sha_ok = scenario::intact(&get);
    let rate = mbit(get.bytes, Duration::from_secs_f64(get.seconds));
    say(&format!(
        "served by {}; SHA-256 {}; {:.2} s, {rate}",
        get.server,
        verified(sha_ok),
        get.seconds,
    ));
    say(&format!(
        "packets the shim sent: {direct_pk} direct, {via_ap} via the access point{}",
        if via_ap == 0 && direct_pk > 0 {
            " (a new flow starts at the bound member)"
        } else {
            ""
        }
    ));
    report.check(
        "download over the direct path, SHA-256",
        sha_ok && get.server == server && via_ap == 0 && direct_pk > 0,
        format!(
            "{} in {:.2} s ({rate}), {via_ap} packets via the AP",
            mib(get.bytes),
            get.seconds,
        ),
    );
    Ok(())
}
