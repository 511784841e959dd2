//! Step 4: a member moves to a new address in the middle of a download.

use std::time::Duration;

use anyhow::Context;
use homeaddr_netns_tests::scenario::traffic::{self, MovedAt};
use homeaddr_netns_tests::scenario::{self, BIND_TIMEOUT, Drops, Move, read};
use homeaddr_netns_tests::service::Service;
use homeaddr_netns_tests::wan::LinkParams;

use super::{header, shim, shim_count, verified};
use crate::map::{SHIM, one_way};
use crate::output::{mib, ms, say};
use crate::report::Report;

pub(crate) const MOVE_DOWNLOAD_BYTES: u64 = 24 << 20;
/// The member -> shim client link is limited to this during the move, so
/// that the transfer takes a few seconds and a stall is visible.
pub(crate) const MOVE_RATE_BPS: u64 = 80_000_000;

/// How long after the move a pause in the data counts as caused by it.
pub(crate) const MOVE_WINDOW: Duration = Duration::from_millis(500);

/// Packets dropped by the access point, member `member` and the shim.
pub(crate) fn drops(svc: &Service, member: u16) -> Drops {
    Drops::of(&[
        ("access point", &svc.ap),
        ("member", &svc.members[&member]),
        ("shim", shim(svc)),
    ])
}

pub(crate) fn step_move(svc: &mut Service, report: &mut Report, member: u16) -> anyhow::Result<()> {
    header(
        4,
        &format!("Member {member} moves to a new address in the middle of a download"),
    )?;
    let m = format!("m{member}");
    let normal = svc.wan.link_params(&m, SHIM)?;
    svc.wan.set_link(
        &m,
        SHIM,
        LinkParams {
            rate_bps: Some(MOVE_RATE_BPS),
            // About 20 packets propagate (3 ms at 80 Mbit/s); room for about
            // as many queued (4 ms), so that a queue cannot hide a pause.
            queue_limit: 40,
            ..normal
        },
    )?;
    say(&format!(
        "download of {} (the {m} -> client link is limited to {} Mbit/s so that it takes a few seconds)",
        mib(MOVE_DOWNLOAD_BYTES),
        MOVE_RATE_BPS / 1_000_000
    ));
    let via_ap_before = read::counter(&svc.members[&member].status(), "via_ap_out");
    let drops_before = drops(svc, member);
    let result =
        traffic::move_mid_download(svc, member, 1, MOVE_DOWNLOAD_BYTES, MOVE_DOWNLOAD_BYTES / 3);
    svc.wan.set_link(&m, SHIM, normal)?;
    let result = result?;
    let via_ap_sent = read::counter(&svc.members[&member].status(), "via_ap_out") - via_ap_before;
    let (_, dropped) = drops(svc, member).since(&drops_before);
    let Some(moved) = &result.moved else {
        report.check(
            "member move mid-transfer",
            false,
            "the download ended before the move could happen",
        );
        return Ok(());
    };
    say_move(moved);
    let get = &result.get;
    let (stall, stall_start) = result.stall(MOVE_WINDOW);
    say(&format!(
        "the transfer finished at {}: {} from {}, SHA-256 {}",
        ms(get.elapsed),
        mib(get.bytes),
        get.server,
        verified(get.sha_ok)
    ));
    say(&format!(
        "longest pause in the data within {} of the move: {}, starting {} after it (at other times: at most {})",
        ms(MOVE_WINDOW),
        ms(stall),
        ms(stall_start),
        ms(result.other_gap(MOVE_WINDOW)),
    ));
    say_held(&m, via_ap_sent, moved.mv.rebind.at_shim.is_some());
    say(&format!(
        "packets dropped by the access point, the member and the shim meanwhile: {dropped}"
    ));
    let transfer_ok =
        get.sha_ok && get.server == format!("member{member}") && stall < Duration::from_secs(1);
    let numbers = format!(
        "{} SHA-256 ok={}, stall {}",
        mib(get.bytes),
        get.sha_ok,
        ms(stall)
    );
    after_the_move(svc, report, member, &moved.mv, (transfer_ok, numbers))
}

/// When the member moved and when the shim followed.
pub(crate) fn say_move(moved: &MovedAt) {
    let mv = &moved.mv;
    say(&format!(
        "at {} ({} received) the member gets address {} and moves its care-of endpoint there",
        ms(moved.at),
        mib(moved.at_bytes),
        mv.new,
    ));
    say(&format!(
        "(control: move {{\"care_of\": \"{}\"}}, {}; the old address keeps receiving: make before break)",
        mv.care_of,
        ms(mv.command)
    ));
    match mv.rebind.at_shim {
        Some(t) => say(&format!(
            "the shim accepted the member's new binding update {} after the move command returned",
            ms(t)
        )),
        None => say(&format!(
            "the shim's binding did not follow: timed out after {BIND_TIMEOUT:?}"
        )),
    }
}

/// Whether the member held its answers to the shim during the move.
pub(crate) fn say_held(m: &str, via_ap_sent: u64, rebound: bool) {
    let long_way = format!(
        "{} one way instead of {}",
        ms(one_way(m, "ap") + one_way("ap", SHIM)),
        ms(one_way(m, SHIM))
    );
    if via_ap_sent == 0 && rebound {
        say(&format!(
            "the member held its answers until the new binding was in place: none took the long way through the access point ({long_way})"
        ));
    } else {
        say(&format!(
            "{} the member sent {via_ap_sent} packets the long way, through the access point ({long_way})",
            if rebound {
                "until its new binding was in place"
            } else {
                "during the download"
            }
        ));
    }
}

/// The old address retired: the member is reachable at the new one only.
/// Reports the transfer's check (`transfer`) and then the bindings'.
pub(crate) fn after_the_move(
    svc: &Service,
    report: &mut Report,
    member: u16,
    mv: &Move,
    transfer: (bool, String),
) -> anyhow::Result<()> {
    svc.retire_address(mv.old);
    let before = shim_count(svc, "via_ap_out");
    let who = scenario::who(svc, shim(svc))
        .context("a new connection after the old address was retired")?;
    let via_ap = shim_count(svc, "via_ap_out") - before;
    let ap_care_of = read::ap_care_of(svc, member);
    let shim_care_of =
        read::shim_care_of(shim(svc), member).unwrap_or_else(|| "(no binding)".into());
    say(&format!(
        "old address {} retired; a new connection is served by {who} ({via_ap} packets via the access point); the access point lists its care-of as {ap_care_of}",
        mv.old
    ));
    report.check("member move mid-transfer", transfer.0, transfer.1);
    let new_ep = &mv.care_of;
    let followed = ap_care_of == *new_ep && shim_care_of == *new_ep;
    report.check(
        "bindings follow the move",
        mv.rebind.at_shim.is_some() && followed && who == format!("member{member}") && via_ap == 0,
        if followed {
            format!("AP and shim at {new_ep}, old address retired")
        } else {
            format!("AP at {ap_care_of}, shim at {shim_care_of}, moved to {new_ep}")
        },
    );
    Ok(())
}
