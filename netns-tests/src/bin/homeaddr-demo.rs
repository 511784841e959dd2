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
//! 6. a summary of every check. The exit status is 0 only if all passed.
//!
//! Needs root (namespaces, TUN). Daemon logs go to files in the topology's
//! log directory, printed at the start and kept when anything fails.
//! Everything is torn down at the end, after a failure or panic (RAII) and
//! on Ctrl-C / SIGTERM (the signal sets a flag checked between steps and in
//! every wait; a second Ctrl-C kills at once, and the next run removes what
//! that left behind).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use homeaddr_control::{MemberRow, MemberState, Request};
use homeaddr_netns_tests::scenario::traffic::{self, MovedAt, TracedSession};
use homeaddr_netns_tests::scenario::{
    self, BIND_TIMEOUT, Drops, Interrupted, Move, Sessions, check_interrupted, member_of, read,
};
use homeaddr_netns_tests::service::{HOME_ADDRESS, Host, SERVICE_PORT, Service};
use homeaddr_netns_tests::wan::LinkParams;

// ---------------------------------------------------------------------------
// The map.

/// The legacy client's WAN name (clients are created first, so `c0`/`c1`).
const LEGACY: &str = "c0";
/// The shim client's WAN name.
const SHIM: &str = "c1";

/// Where every host is: (WAN name, role, city).
const SITES: &[(&str, &str, &str)] = &[
    ("ap", "access point", "Frankfurt"),
    ("m1", "member 1", "Madrid"),
    ("m2", "member 2", "Amsterdam"),
    ("m3", "member 3", "Warsaw"),
    (LEGACY, "legacy client", "Lisbon"),
    (SHIM, "shim client", "Lisbon"),
];

/// One-way WAN latencies in ms, both directions (every pair is listed).
const LATENCY_MS: &[(&str, &str, u64)] = &[
    ("ap", "m1", 10),
    ("ap", "m2", 5),
    ("ap", "m3", 20),
    ("ap", LEGACY, 40),
    ("ap", SHIM, 40),
    ("m1", "m2", 12),
    ("m1", "m3", 25),
    ("m2", "m3", 18),
    ("m1", LEGACY, 3),
    ("m1", SHIM, 3),
    ("m2", LEGACY, 38),
    ("m2", SHIM, 38),
    ("m3", LEGACY, 60),
    ("m3", SHIM, 60),
    (LEGACY, SHIM, 1),
];

/// The member the access point's Maglev table gives the shim client. It
/// depends only on the member ids and the client's address (hosts are
/// numbered in creation order), and the map puts this member next to it.
/// The demo checks it and still tells the truth if hashing ever changes.
const NEAR_MEMBER: u16 = 1;

fn one_way(a: &str, b: &str) -> Duration {
    LATENCY_MS
        .iter()
        .find(|(x, y, _)| (*x == a && *y == b) || (*x == b && *y == a))
        .map(|(_, _, ms)| Duration::from_millis(*ms))
        .unwrap_or(Duration::ZERO)
}

/// "member 1, Madrid".
fn site(host: &str) -> String {
    SITES
        .iter()
        .find(|(h, _, _)| *h == host)
        .map_or("?".into(), |(_, role, city)| format!("{role}, {city}"))
}

/// "Madrid".
fn city(host: &str) -> &'static str {
    SITES
        .iter()
        .find(|(h, _, _)| *h == host)
        .map_or("?", |(_, _, city)| city)
}

// ---------------------------------------------------------------------------
// Sizes and limits.

const DOWNLOAD_BYTES: u64 = 16 << 20;
const MOVE_DOWNLOAD_BYTES: u64 = 24 << 20;
/// The member -> shim client link is limited to this during the move, so
/// that the transfer takes a few seconds and a stall is visible.
const MOVE_RATE_BPS: u64 = 80_000_000;

// ---------------------------------------------------------------------------
// Ctrl-C.

extern "C" fn on_signal(_sig: libc::c_int) {
    scenario::interrupt();
    let msg = b"\n*** interrupted: stopping after this step and cleaning up (Ctrl-C again to kill at once) ***\n";
    // SAFETY: write(2) is async-signal-safe; the buffer is valid.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
    }
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a plain handler; SA_RESETHAND makes
        // the second signal take the default action (terminate).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

// ---------------------------------------------------------------------------
// Output helpers.

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v < 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn us_ms(us: u64) -> String {
    ms(Duration::from_micros(us))
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

fn mbit(bytes: u64, d: Duration) -> String {
    format!(
        "{:.0} Mbit/s",
        bytes as f64 * 8.0 / d.as_secs_f64().max(1e-9) / 1e6
    )
}

/// Prints rows as an aligned table, indented; the first row is the header.
/// Columns whose header starts with '>' are right-aligned.
fn table(indent: usize, rows: &[Vec<String>]) {
    let Some(header) = rows.first() else { return };
    let cols = header.len();
    let right: Vec<bool> = header.iter().map(|h| h.starts_with('>')).collect();
    let cell = |r: usize, c: usize| -> &str {
        let s = rows[r].get(c).map_or("", String::as_str);
        if r == 0 { s.trim_start_matches('>') } else { s }
    };
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            (0..rows.len())
                .map(|r| cell(r, c).chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in 0..rows.len() {
        let mut line = " ".repeat(indent);
        for c in 0..cols {
            let s = cell(r, c);
            let pad = width[c] - s.chars().count();
            if right[c] {
                line.push_str(&" ".repeat(pad));
                line.push_str(s);
            } else {
                line.push_str(s);
                if c + 1 < cols {
                    line.push_str(&" ".repeat(pad));
                }
            }
            if c + 1 < cols {
                line.push_str("  ");
            }
        }
        println!("{}", line.trim_end());
    }
}

fn say(text: &str) {
    println!("    {text}");
}

// ---------------------------------------------------------------------------
// Checks.

struct Check {
    what: String,
    ok: bool,
    numbers: String,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
    not_run: Vec<&'static str>,
}

impl Report {
    fn check(&mut self, what: &str, ok: bool, numbers: impl Into<String>) -> bool {
        let numbers = numbers.into();
        println!(
            "    [{}] {what}{}",
            if ok { "ok" } else { "FAILED" },
            if numbers.is_empty() {
                String::new()
            } else {
                format!(": {numbers}")
            }
        );
        self.checks.push(Check {
            what: what.to_string(),
            ok,
            numbers,
        });
        ok
    }

    fn all_ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    fn print(&self) {
        let mut rows = vec![vec!["check".to_string(), "result".into(), "numbers".into()]];
        for c in &self.checks {
            rows.push(vec![
                c.what.clone(),
                if c.ok { "PASS" } else { "FAIL" }.into(),
                c.numbers.clone(),
            ]);
        }
        for s in &self.not_run {
            rows.push(vec![s.to_string(), "NOT RUN".into(), String::new()]);
        }
        table(2, &rows);
    }
}

/// The median, the lower one for an even count (there are often just two
/// round trips through the access point: the handshake, which carries the
/// flow's one-off setup, and the WHO); 0 when empty.
fn low_median(samples: &[u64]) -> u64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0)
}

/// Whether a measured round trip matches the emulated path: not faster than
/// the WAN allows, and not much slower (processing, scheduling).
fn rtt_matches(measured: Duration, expected: Duration) -> bool {
    measured + Duration::from_micros(500) >= expected
        && measured <= expected + expected / 4 + Duration::from_millis(10)
}

// ---------------------------------------------------------------------------
// Status helpers.

fn print_members(svc: &Service) -> anyhow::Result<Vec<MemberRow>> {
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
// ---------------------------------------------------------------------------
// The steps.

/// How long after the move a pause in the data counts as caused by it.
const MOVE_WINDOW: Duration = Duration::from_millis(500);

fn header(n: usize, title: &str) -> anyhow::Result<()> {
    check_interrupted()?;
    println!();
    println!("[{n}/6] {title}");
    Ok(())
}

fn verified(ok: bool) -> &'static str {
    if ok { "verified" } else { "WRONG" }
}

/// The median of some round trips in ms, "-" when there are none.
fn median_or_dash(samples: &[u64]) -> String {
    if samples.is_empty() {
        "-".into()
    } else {
        us_ms(low_median(samples))
    }
}

fn shim(svc: &Service) -> &Host {
    &svc.clients[1]
}

/// The shim's counter `name` now.
fn shim_count(svc: &Service, name: &str) -> u64 {
    read::counter(&shim(svc).status(), name)
}

/// The one-way latency table of the map.
fn print_latencies() {
    let cols = ["ap", "m1", "m2", "m3"];
    let mut rows = vec![
        std::iter::once(String::new())
            .chain(cols.iter().map(|c| format!(">{c}")))
            .collect::<Vec<_>>(),
    ];
    for host in [LEGACY, SHIM, "m1", "m2", "m3"] {
        let mut row = vec![format!("{host:<2}  {}", site(host))];
        for c in cols {
            row.push(
                if c == host || (host.starts_with('m') && c.starts_with('m') && c >= host) {
                    String::new()
                } else {
                    one_way(host, c).as_millis().to_string()
                },
            );
        }
        rows.push(row);
    }
    table(6, &rows);
}

fn step_build(svc: &mut Service, report: &mut Report) -> anyhow::Result<()> {
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

fn step_legacy(svc: &mut Service, report: &mut Report) -> anyhow::Result<u16> {
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

/// The session's round trips as a table: the first ones one by one up to
/// two after the switch to the direct path, the rest summed up.
fn print_session(session: &TracedSession) {
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
fn say_binding(session: &TracedSession, direct_at: Option<Duration>) {
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

fn step_route_optimization(svc: &mut Service, report: &mut Report) -> anyhow::Result<u16> {
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
fn direct_download(svc: &Service, report: &mut Report, server: &str) -> anyhow::Result<()> {
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

/// Packets dropped by the access point, member `member` and the shim.
fn drops(svc: &Service, member: u16) -> Drops {
    Drops::of(&[
        ("access point", &svc.ap),
        ("member", &svc.members[&member]),
        ("shim", shim(svc)),
    ])
}

fn step_move(svc: &mut Service, report: &mut Report, member: u16) -> anyhow::Result<()> {
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
fn say_move(moved: &MovedAt) {
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
fn say_held(m: &str, via_ap_sent: u64, rebound: bool) {
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
fn after_the_move(
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

/// An open connection on `member` from the shim: 40 echo round trips over
/// 2 s, started and seen in the shim's flow table.
fn open_session(svc: &Service, member: u16) -> anyhow::Result<Sessions> {
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
fn new_connection(svc: &Service, index: usize, what: &str) -> anyhow::Result<(u16, String)> {
    let who = scenario::who(svc, &svc.clients[index])
        .with_context(|| format!("a new connection from the {what}"))?;
    Ok((member_of(&who).unwrap_or(0), who))
}

fn step_drain(
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
fn open_session_finished(session: Sessions, member: u16) -> (bool, String) {
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

// ---------------------------------------------------------------------------

const STEPS: [&str; 6] = [
    "three members registered and active",
    "legacy client served through the access point",
    "route optimization on an open connection",
    "member move mid-transfer",
    "drain: new connections go elsewhere",
    "drain: the open connection finishes",
];

fn steps(svc: &mut Service, report: &mut Report) -> anyhow::Result<()> {
    step_build(svc, report)?;
    let legacy_member = step_legacy(svc, report)?;
    let member = step_route_optimization(svc, report)?;
    step_move(svc, report, member)?;
    step_drain(svc, report, member, legacy_member)?;
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
