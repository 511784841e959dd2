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

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use homeaddr_control::Request;
use homeaddr_netns_tests::service::{HOME_ADDRESS, SERVICE_PORT, Service, control_call};
use homeaddr_netns_tests::testapp;
use homeaddr_netns_tests::wan::LinkParams;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

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

/// "member2" (the server's WHO answer) -> 2.
fn member_of(server_name: &str) -> Option<u16> {
    server_name.strip_prefix("member")?.parse().ok()
}

// ---------------------------------------------------------------------------
// Sizes and limits.

const DOWNLOAD_BYTES: u64 = 16 << 20;
const MOVE_DOWNLOAD_BYTES: u64 = 24 << 20;
/// The member -> shim client link is limited to this during the move, so
/// that the transfer takes a few seconds and a stall is visible.
const MOVE_RATE_BPS: u64 = 80_000_000;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Ctrl-C.

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
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

#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

fn check_stop() -> anyhow::Result<()> {
    if STOP.load(Ordering::SeqCst) {
        Err(Interrupted.into())
    } else {
        Ok(())
    }
}

/// Polls `cond` every `poll` until it holds (returns the time it took),
/// `timeout` passes, or the demo is interrupted.
fn wait_for(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        check_stop()?;
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(poll);
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

fn ap_members(svc: &Service) -> anyhow::Result<Vec<Value>> {
    let v = control_call(&svc.ap.control, &Request::Members)
        .map_err(|e| anyhow!("access point `members`: {e}"))?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

fn print_members(svc: &Service) -> anyhow::Result<Vec<Value>> {
    let members = ap_members(svc)?;
    let mut rows = vec![vec![
        ">member".to_string(),
        "site".into(),
        "care-of address".into(),
        "state".into(),
        ">weight".into(),
        ">flows".into(),
    ]];
    for m in &members {
        let id = m["id"].as_u64().unwrap_or(0);
        rows.push(vec![
            id.to_string(),
            city(&format!("m{id}")).to_string(),
            m["care_of"].as_str().unwrap_or("?").to_string(),
            m["state"].as_str().unwrap_or("?").to_string(),
            m["weight"].to_string(),
            m["flows"].to_string(),
        ]);
    }
    table(6, &rows);
    Ok(members)
}

fn shim_status(path: &Path) -> Value {
    control_call(path, &Request::Status).unwrap_or(Value::Null)
}

fn shim_binding(status: &Value, member: u16) -> Option<Value> {
    status["bindings"]
        .as_array()?
        .iter()
        .find(|b| b["member"] == json!(member))
        .cloned()
}

fn shim_counter(status: &Value, name: &str) -> u64 {
    status["counters"][name].as_u64().unwrap_or(0)
}

/// Packets each daemon dropped, by "daemon: reason" (all reasons but the
/// kernel's own link-local chatter on a TUN, which is never tunnelled).
fn drops(svc: &Service, member: u16) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for (who, status) in [
        ("access point", svc.ap.status()),
        ("member", svc.members[&member].status()),
        ("shim", svc.clients[1].status()),
    ] {
        if let Some(d) = status["counters"]["drops"].as_object() {
            for (reason, n) in d {
                if reason != "not_tunnelled" {
                    all.insert(format!("{who}: {reason}"), n.as_u64().unwrap_or(0));
                }
            }
        }
    }
    all
}

/// "0", or the total with the reasons that grew.
fn drops_since(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> (u64, String) {
    let grown: Vec<(String, u64)> = after
        .iter()
        .map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0).min(*n)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let total = grown.iter().map(|(_, n)| n).sum();
    if grown.is_empty() {
        (0, "0".into())
    } else {
        let list: Vec<String> = grown.iter().map(|(k, n)| format!("{k} {n}")).collect();
        (total, format!("{total} ({})", list.join(", ")))
    }
}

/// The path of the shim's flow for a local TCP port: "direct",
/// "access-point" or "unknown".
fn shim_path(control: &Path, port: u16) -> String {
    let status = shim_status(control);
    status["flows"]
        .as_array()
        .and_then(|flows| {
            flows
                .iter()
                .find(|f| f["src_port"] == json!(port) && f["proto"] == json!(6))
        })
        .and_then(|f| f["path"].as_str())
        .unwrap_or("unknown")
        .to_string()
}

// ---------------------------------------------------------------------------
// Traffic the demo needs beyond testapp's one-shot clients.

struct RoundTrip {
    what: String,
    /// When it was sent, after the first packet (the SYN).
    sent: Duration,
    rtt: Duration,
    /// The shim's path for the flow right after the request left (the
    /// path of the flow's last outgoing packet: the request itself).
    path: String,
}

struct TracedSession {
    server: String,
    trips: Vec<RoundTrip>,
    /// When the shim first held a binding, after the SYN.
    bound_at: Option<Duration>,
}

fn read_line(reader: &mut impl BufRead, what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .with_context(|| format!("reading {what}"))?;
    if n == 0 {
        bail!("connection closed while waiting for {what}");
    }
    Ok(line.trim_end().to_string())
}

/// One TCP connection to the service from inside the shim client: the
/// handshake, a WHO and `probes` echo round trips, each timed, each labelled
/// with the path the shim reports for the flow just after the request left
/// (the shim's flow table records the path of the flow's last outgoing
/// packet). A side thread watches for the shim's first binding.
fn traced_session(
    server: SocketAddr,
    probes: usize,
    interval: Duration,
    control: &Path,
) -> anyhow::Result<TracedSession> {
    let done = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let status = shim_status(control);
                if status["bindings"].as_array().is_some_and(|b| !b.is_empty()) {
                    return Some(start.elapsed());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        });
        let result = (|| -> anyhow::Result<(String, Vec<RoundTrip>)> {
            let mut trips = Vec::new();
            let stream = TcpStream::connect_timeout(&server, IO_TIMEOUT)
                .with_context(|| format!("connecting to {server}"))?;
            let handshake = start.elapsed();
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            let port = stream.local_addr()?.port();
            let mut writer = stream.try_clone()?;
            let mut reader = BufReader::new(stream);
            // The last packet of the handshake (the ACK) took the SYN's path.
            trips.push(RoundTrip {
                what: "TCP handshake".into(),
                sent: Duration::ZERO,
                rtt: handshake,
                path: shim_path(control, port),
            });
            let sent = start.elapsed();
            writer.write_all(b"WHO\n")?;
            let path = shim_path(control, port);
            let name = read_line(&mut reader, "the server's name")?;
            trips.push(RoundTrip {
                what: format!("WHO -> {name}"),
                sent,
                rtt: start.elapsed() - sent,
                path,
            });
            writer.write_all(b"ECHO\n")?;
            let mut next = Instant::now();
            for i in 0..probes {
                check_stop()?;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                next = Instant::now() + interval;
                let sent_at = Instant::now();
                writer.write_all(format!("probe {i}\n").as_bytes())?;
                let path = shim_path(control, port);
                let echo = read_line(&mut reader, &format!("the echo of probe {i}"))?;
                let rtt = sent_at.elapsed();
                if echo != format!("probe {i}") {
                    bail!("echo {echo:?} does not match probe {i}");
                }
                trips.push(RoundTrip {
                    what: format!("echo {}", i + 1),
                    sent: sent_at - start,
                    rtt,
                    path,
                });
            }
            Ok((name, trips))
        })();
        done.store(true, Ordering::Relaxed);
        let bound_at = watcher.join().unwrap_or(None);
        let (server, trips) = result?;
        Ok(TracedSession {
            server,
            trips,
            bound_at,
        })
    })
}

/// A download whose progress the main thread can follow, recording when
/// each chunk arrived.
struct TracedGet {
    server: String,
    bytes: u64,
    sha_ok: bool,
    elapsed: Duration,
    /// (time since start, bytes so far) after every read.
    reads: Vec<(Duration, u64)>,
}

fn traced_get(
    server: SocketAddr,
    bytes: u64,
    start: Instant,
    progress: &AtomicU64,
) -> anyhow::Result<TracedGet> {
    let mut stream = TcpStream::connect_timeout(&server, IO_TIMEOUT)
        .with_context(|| format!("connecting to {server}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(format!("WHO\nGET {bytes}\n").as_bytes())?;
    // The name line, byte by byte, so no payload is buffered before timing.
    let mut name = Vec::new();
    let mut b = [0u8; 1];
    loop {
        stream
            .read_exact(&mut b)
            .context("reading the server name")?;
        if b[0] == b'\n' {
            break;
        }
        name.push(b[0]);
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut received = 0u64;
    let mut reads = Vec::with_capacity(1 << 16);
    loop {
        let n = stream.read(&mut buf).with_context(|| {
            format!("downloading from {server} after {received} of {bytes} bytes")
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        received += n as u64;
        progress.store(received, Ordering::Relaxed);
        reads.push((start.elapsed(), received));
    }
    let sha: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(TracedGet {
        server: String::from_utf8_lossy(&name).into_owned(),
        bytes: received,
        sha_ok: received == bytes && sha == testapp::expected_sha256(bytes),
        elapsed: start.elapsed(),
        reads,
    })
}

/// The longest gap between two reads that ends inside (or, with `inside`
/// false, outside) `[from, to]`, with the time it started.
fn longest_gap(
    reads: &[(Duration, u64)],
    from: Duration,
    to: Duration,
    inside: bool,
) -> (Duration, Duration) {
    reads
        .windows(2)
        .filter(|w| (w[1].0 >= from && w[1].0 <= to) == inside)
        .map(|w| (w[1].0 - w[0].0, w[0].0))
        .max()
        .unwrap_or_default()
}

/// How long after the move a pause in the data counts as caused by it.
const MOVE_WINDOW: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------
// The steps.

fn header(n: usize, title: &str) -> anyhow::Result<()> {
    check_stop()?;
    println!();
    println!("[{n}/6] {title}");
    Ok(())
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
    let mut took = Vec::new();
    for id in 1..=3u16 {
        check_stop()?;
        let t = Instant::now();
        svc.add_member(id, &[])
            .with_context(|| format!("starting member {id}"))?;
        took.push(t.elapsed());
    }
    for (a, b, ms) in LATENCY_MS {
        svc.set_latency(a, b, Duration::from_millis(*ms))?;
    }
    say(&format!(
        "home address {HOME_ADDRESS}, port {SERVICE_PORT}: every member runs the same unmodified TCP server on it"
    ));
    say("one-way WAN latencies (emulated), ms:");
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
        .filter(|m| m["state"] == json!("active"))
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
    let endpoint = svc.service_endpoint();
    let host = &svc.clients[0];
    let rtt = host
        .ns
        .enter(|| testapp::rtt(endpoint, 10, Duration::ZERO, IO_TIMEOUT))?
        .context("legacy client round trips")?;
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
    let get = host
        .ns
        .enter(|| testapp::get(endpoint, 1 << 20, IO_TIMEOUT))?
        .context("legacy client download")?;
    let sha_ok = get.sha256 == testapp::expected_sha256(1 << 20);
    say(&format!(
        "download of 1 MiB from {}: SHA-256 {}, {:.2} s",
        get.server,
        if sha_ok { "verified" } else { "WRONG" },
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

fn step_route_optimization(svc: &mut Service, report: &mut Report) -> anyhow::Result<u16> {
    header(
        3,
        "The shim client: route optimization on an open connection",
    )?;
    let endpoint = svc.service_endpoint();
    let host = &svc.clients[1];
    let control = host.control.clone();
    say("one TCP connection to the home address: handshake, WHO, then 20 echo round trips");
    let session = host
        .ns
        .enter(|| traced_session(endpoint, 20, Duration::from_millis(20), &control))?
        .context("shim client session")?;
    let member = member_of(&session.server).unwrap_or(0);
    let m = format!("m{member}");
    let mut rows = vec![vec![
        "round trip".to_string(),
        ">sent at".into(),
        ">RTT".into(),
        "path of the request (the shim's flow table)".into(),
    ]];
    let first_direct = session.trips.iter().position(|t| t.path == "direct");
    let shown = first_direct.map_or(5, |i| i + 3).min(session.trips.len());
    for t in &session.trips[..shown] {
        rows.push(vec![
            t.what.clone(),
            ms(t.sent),
            ms(t.rtt),
            match t.path.as_str() {
                "direct" => format!("direct to {}", session.server),
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
    let via: Vec<u64> = session
        .trips
        .iter()
        .filter(|t| t.path == "access-point")
        .map(|t| t.rtt.as_micros() as u64)
        .collect();
    let direct: Vec<u64> = session
        .trips
        .iter()
        .filter(|t| t.path == "direct")
        .map(|t| t.rtt.as_micros() as u64)
        .collect();
    let (via_med, direct_med) = (low_median(&via), low_median(&direct));
    let expected_via = 2 * (one_way(SHIM, "ap") + one_way("ap", &m));
    let expected_direct = 2 * one_way(SHIM, &m);
    if member != NEAR_MEMBER {
        say(&format!(
            "note: Maglev gave this client member {member}, not member {NEAR_MEMBER} as this map assumes (hashing changed?)"
        ));
    }
    let direct_at = first_direct.map(|i| session.trips[i].sent);
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
    say(&format!(
        "RTT {} via the access point -> {} direct (the emulated WAN paths: {} and {})",
        if via.is_empty() {
            "-".into()
        } else {
            us_ms(via_med)
        },
        if direct.is_empty() {
            "-".into()
        } else {
            us_ms(direct_med)
        },
        ms(expected_via),
        ms(expected_direct)
    ));
    let all_after_direct =
        first_direct.is_some_and(|i| session.trips[i..].iter().all(|t| t.path == "direct"));
    report.check(
        "route optimization on an open connection",
        member != 0
            && !via.is_empty()
            && !direct.is_empty()
            && all_after_direct
            && rtt_matches(Duration::from_micros(via_med), expected_via)
            && rtt_matches(Duration::from_micros(direct_med), expected_direct),
        format!(
            "{} -> {} ({}), direct after {}",
            if via.is_empty() {
                "-".into()
            } else {
                us_ms(via_med)
            },
            if direct.is_empty() {
                "-".into()
            } else {
                us_ms(direct_med)
            },
            session.server,
            direct_at.map_or("never".into(), ms)
        ),
    );

    check_stop()?;
    say(&format!(
        "a new connection: download of {} from the home address",
        mib(DOWNLOAD_BYTES)
    ));
    let before = shim_status(&control);
    let get = host
        .ns
        .enter(|| testapp::get(endpoint, DOWNLOAD_BYTES, IO_TIMEOUT))?
        .context("shim client download")?;
    let after = shim_status(&control);
    let via_ap = shim_counter(&after, "via_ap_out") - shim_counter(&before, "via_ap_out");
    let direct_pk = shim_counter(&after, "direct_out") - shim_counter(&before, "direct_out");
    let sha_ok = get.sha256 == testapp::expected_sha256(DOWNLOAD_BYTES);
    say(&format!(
        "served by {}; SHA-256 {}; {:.2} s, {}",
        get.server,
        if sha_ok { "verified" } else { "WRONG" },
        get.seconds,
        mbit(get.bytes, Duration::from_secs_f64(get.seconds))
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
        sha_ok && get.server == session.server && via_ap == 0 && direct_pk > 0,
        format!(
            "{} in {:.2} s ({}), {via_ap} packets via the AP",
            mib(get.bytes),
            get.seconds,
            mbit(get.bytes, Duration::from_secs_f64(get.seconds))
        ),
    );
    Ok(member)
}

fn step_move(svc: &mut Service, report: &mut Report, member: u16) -> anyhow::Result<()> {
    header(
        4,
        &format!("Member {member} moves to a new address in the middle of a download"),
    )?;
    let endpoint = svc.service_endpoint();
    let m = format!("m{member}");
    let control = svc.clients[1].control.clone();
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
    let member_before = svc.members[&member].status();
    let drops_before = drops(svc, member);
    let progress = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let download = {
        let progress = Arc::clone(&progress);
        svc.clients[1].ns.spawn_thread("download", move || {
            traced_get(endpoint, MOVE_DOWNLOAD_BYTES, start, &progress)
        })?
    };
    let third = MOVE_DOWNLOAD_BYTES / 3;
    let waited = wait_for(
        "a third of the download",
        Duration::from_secs(20),
        Duration::from_millis(1),
        || progress.load(Ordering::Relaxed) >= third || download.is_finished(),
    );
    let moved = match waited {
        Ok(_) if !download.is_finished() => {
            let at = start.elapsed();
            let at_bytes = progress.load(Ordering::Relaxed);
            let (old, new) = svc.move_member(member)?;
            let command = start.elapsed() - at;
            say(&format!(
                "at {} ({} received) the member gets address {new} and moves its care-of endpoint there",
                ms(at),
                mib(at_bytes),
            ));
            say(&format!(
                "(control: move {{\"care_of\": \"[{new}]:4790\"}}, {}; the old address keeps receiving: make before break)",
                ms(command)
            ));
            let new_ep = format!("[{new}]:4790");
            let rebound = wait_for(
                "the shim's binding to follow",
                Duration::from_secs(5),
                Duration::from_millis(1),
                || {
                    shim_binding(&shim_status(&control), member)
                        .is_some_and(|b| b["care_of"] == json!(new_ep))
                },
            );
            match &rebound {
                Ok(t) => say(&format!(
                    "the shim accepted the member's new binding update {} after the move command returned",
                    ms(*t)
                )),
                Err(e) => say(&format!("the shim's binding did not follow: {e}")),
            }
            Some((at, old, new, rebound.is_ok()))
        }
        Ok(_) => None,
        Err(e) => {
            // Interrupted, or the download stalled before a third: let it
            // end (its socket operations time out) before reporting.
            let _ = download.join();
            return Err(e);
        }
    };
    let result = download
        .join()
        .map_err(|_| anyhow!("the download thread panicked"))?;
    svc.wan.set_link(&m, SHIM, normal)?;
    let member_after = svc.members[&member].status();
    let (_, dropped) = drops_since(&drops_before, &drops(svc, member));
    let get = result.context("download during the move")?;
    let Some((at, old, new, rebound)) = moved else {
        report.check(
            "member move mid-transfer",
            false,
            "the download ended before the move could happen",
        );
        return Ok(());
    };
    let (stall, stall_start) = longest_gap(&get.reads, at, at + MOVE_WINDOW, true);
    let (other_gap, _) = longest_gap(&get.reads, at, at + MOVE_WINDOW, false);
    say(&format!(
        "the transfer finished at {}: {} from {}, SHA-256 {}",
        ms(get.elapsed),
        mib(get.bytes),
        get.server,
        if get.sha_ok { "verified" } else { "WRONG" }
    ));
    say(&format!(
        "longest pause in the data within {} of the move: {}, starting {} after it (at other times: at most {})",
        ms(MOVE_WINDOW),
        ms(stall),
        ms(stall_start.saturating_sub(at)),
        ms(other_gap),
    ));
    let via_ap_sent =
        shim_counter(&member_after, "via_ap_out") - shim_counter(&member_before, "via_ap_out");
    let long_way = format!(
        "{} one way instead of {}",
        ms(one_way(&m, "ap") + one_way("ap", SHIM)),
        ms(one_way(&m, SHIM))
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
    say(&format!(
        "packets dropped by the access point, the member and the shim meanwhile: {dropped}"
    ));
    // The old address goes away; the member must be reachable at the new one only.
    svc.retire_address(old);
    let before = shim_status(&control);
    let who = svc.clients[1]
        .ns
        .enter(|| testapp::who(endpoint, IO_TIMEOUT))?
        .context("a new connection after the old address was retired")?;
    let after = shim_status(&control);
    let via_ap = shim_counter(&after, "via_ap_out") - shim_counter(&before, "via_ap_out");
    let ap_care_of = svc
        .ap_member(member)
        .map(|m| m.care_of.to_string())
        .unwrap_or_default();
    let new_ep = format!("[{new}]:4790");
    let shim_care_of = shim_binding(&shim_status(&control), member)
        .and_then(|b| b["care_of"].as_str().map(str::to_string))
        .unwrap_or_else(|| "(no binding)".into());
    say(&format!(
        "old address {old} retired; a new connection is served by {who} ({via_ap} packets via the access point); the access point lists its care-of as {ap_care_of}"
    ));
    report.check(
        "member move mid-transfer",
        get.sha_ok && get.server == format!("member{member}") && stall < Duration::from_secs(1),
        format!(
            "{} SHA-256 ok={}, stall {}",
            mib(get.bytes),
            get.sha_ok,
            ms(stall)
        ),
    );
    report.check(
        "bindings follow the move",
        rebound
            && ap_care_of == new_ep
            && shim_care_of == new_ep
            && who == format!("member{member}")
            && via_ap == 0,
        if ap_care_of == new_ep && shim_care_of == new_ep {
            format!("AP and shim at {new_ep}, old address retired")
        } else {
            format!("AP at {ap_care_of}, shim at {shim_care_of}, moved to {new_ep}")
        },
    );
    Ok(())
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
    let endpoint = svc.service_endpoint();
    let control = svc.clients[1].control.clone();
    // The open connection: 40 echo round trips over 2 s.
    let known: Vec<u64> = shim_status(&control)["flows"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["src_port"].as_u64()).collect())
        .unwrap_or_default();
    let session = svc.clients[1].ns.spawn_thread("open-session", move || {
        testapp::rtt(endpoint, 40, Duration::from_millis(50), IO_TIMEOUT)
    })?;
    let started = wait_for(
        "the open connection",
        Duration::from_secs(5),
        Duration::from_millis(5),
        || {
            shim_status(&control)["flows"]
                .as_array()
                .is_some_and(|flows| {
                    flows.iter().any(|f| {
                        !f["src_port"].as_u64().is_some_and(|p| known.contains(&p))
                            && f["member"] == json!(member)
                            && f["packets_in"].as_u64().unwrap_or(0) >= 3
                    })
                })
                || session.is_finished()
        },
    );
    if let Err(e) = started {
        let _ = session.join();
        return Err(e);
    }
    say(&format!(
        "an open connection runs 40 echo round trips on {} over 2 s",
        format_args!("member{member}")
    ));
    svc.ap
        .control(Request::Drain {
            member: Some(member),
            deadline_s: None,
        })
        .map_err(|e| anyhow!("drain: {e}"))?;
    say(&format!(
        "the operator drains member {member} at the access point (control: drain {{\"member\": {member}}})"
    ));
    let told = wait_for(
        "the shim to hear of the drain",
        Duration::from_secs(5),
        Duration::from_millis(2),
        || {
            shim_binding(&shim_status(&control), member)
                .is_some_and(|b| b["draining"] == json!(true))
        },
    );
    match &told {
        Ok(d) => say(&format!(
            "{} later the member's binding update tells the shim it is draining: no new flows start there",
            ms(*d)
        )),
        Err(e) => say(&format!("the shim was not told: {e}")),
    }
    let before = shim_status(&control);
    let asked = Instant::now();
    let shim_who = svc.clients[1]
        .ns
        .enter(|| testapp::who(endpoint, IO_TIMEOUT))?
        .context("a new connection from the shim client")?;
    let new_member = member_of(&shim_who).unwrap_or(0);
    let via_ap =
        shim_counter(&shim_status(&control), "via_ap_out") - shim_counter(&before, "via_ap_out");
    say(&format!(
        "a new connection from the shim client goes through the access point ({via_ap} packets) and is served by {shim_who}"
    ));
    let rebound = wait_for(
        "a binding with the new member",
        Duration::from_secs(5),
        Duration::from_millis(2),
        || shim_binding(&shim_status(&control), new_member).is_some(),
    );
    if rebound.is_ok() {
        say(&format!(
            "the shim now also holds a binding with {shim_who} (within {} of that connection's first packet)",
            ms(asked.elapsed())
        ));
    }
    let legacy_who = svc.clients[0]
        .ns
        .enter(|| testapp::who(endpoint, IO_TIMEOUT))?
        .context("a new connection from the legacy client")?;
    let legacy_now = member_of(&legacy_who).unwrap_or(0);
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
    let state = members
        .iter()
        .find(|m| m["id"] == json!(member))
        .map(|m| {
            (
                m["state"].as_str().unwrap_or("?").to_string(),
                m["weight"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .unwrap_or_default();
    let open = session
        .join()
        .map_err(|_| anyhow!("the open session thread panicked"))?;
    let (open_ok, open_numbers) = match &open {
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
    report.check(
        "drain: new connections go elsewhere",
        told.is_ok()
            && state.0 == "draining"
            && state.1 == 0
            && new_member != 0
            && new_member != member
            && legacy_now != 0
            && legacy_now != member
            && (legacy_member == member || legacy_now == legacy_member),
        format!(
            "member {member} {} (weight {}){}; new: shim -> {shim_who}, legacy -> {legacy_who}",
            state.0,
            state.1,
            if told.is_ok() { "" } else { ", shim not told" }
        ),
    );
    report.check("drain: the open connection finishes", open_ok, open_numbers);
    Ok(())
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
