//! Step 2: a legacy client reaches the home address through the access
//! point.

use std::time::Duration;

use anyhow::Context;
use homeaddr_netns_tests::scenario::{self, member_of};
use homeaddr_netns_tests::service::Service;

use super::{header, verified};
use crate::map::{LEGACY, one_way, site};
use crate::output::{ms, say, us_ms};
use crate::report::{Report, rtt_matches};

pub(crate) fn step_legacy(svc: &mut Service, report: &mut Report) -> anyhow::Result<u16> {
    header(
        2,
        "A legacy client (no shim) reaches the home address through the access point",
    )?;
    let host = &svc.clients[0];
    let rtt =
        scenario::rtt_series(svc, host, 10, Duration::ZERO).context("legacy client round trips")?;
    let member = member_of(&rtt.server).unwrap_or(0);
    let m = format!("m{member}");
    let expected = 2 * (one_way(LEGACY, "ap") + one_way("ap", &m));
    let median = Duration::from_micros(rtt.median_us);
    say(&format!(
        "served by {} ({}); the access point picked it by Maglev hashing on the client address",
        rtt.server,
        site(&m)
    ));
    say(&format!(
        "TCP round trip, median of 10 on one connection: {} (client -> access point -> member and back: 2 x ({} + {}) = {})",
        us_ms(rtt.median_us),
        one_way(LEGACY, "ap").as_millis(),
        one_way("ap", &m).as_millis(),
        ms(expected)
    ));
    let get = scenario::download(svc, host, 1 << 20).context("legacy client download")?;
    let sha_ok = scenario::intact(&get);
    say(&format!(
        "download of 1 MiB from {}: SHA-256 {}, {:.2} s",
        get.server,
        verified(sha_ok),
        get.seconds
    ));
    let ap = svc.ap.status();
    say(&format!(
        "access point counters: {} packets in from legacy clients, {} out",
        ap["counters"]["legacy_in"], ap["counters"]["legacy_out"]
    ));
    report.check(
        "legacy client served through the access point",
        member != 0 && rtt_matches(median, expected) && sha_ok && get.server == rtt.server,
        format!(
            "{}, RTT {} (path {}), 1 MiB SHA-256 ok={sha_ok}",
            rtt.server,
            us_ms(rtt.median_us),
            ms(expected)
        ),
    );
    Ok(member)
}
