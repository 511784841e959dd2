//! Scenario steps the demo and the namespace tests both perform on a
//! [`Service`]: start a service, run a client's transfer or RTT series,
//! wait for a shim's route optimization, move or drain a member, read
//! counters. Each step returns a typed result; the demo prints it, the
//! tests assert on it.
//!
//! Every wait here polls a condition with a bound ([`wait_for`]); none
//! sleeps in place of one. The demo stops waits early on Ctrl-C through
//! [`interrupt`].

pub mod read;
pub mod traffic;

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use homeaddr_control::Request;

use crate::WaitTimeout;
use crate::service::{Host, Service, TUNNEL_PORT};
use crate::testapp::{self, GetReport, RttReport, TestAppError};

/// Timeout of each socket operation of a scenario's clients.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often scenario waits poll the daemons.
pub const POLL: Duration = Duration::from_millis(20);
/// How long a shim may take to bind, rebind or hear of a drain.
pub const BIND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the waits that time a binding, a rebinding or a drain poll
/// (finer than [`POLL`]: the time they return is a result).
const WATCH_POLL: Duration = Duration::from_millis(2);

// ---------------------------------------------------------------------------
// Waits that Ctrl-C can end.

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ends every running and future scenario wait with [`Interrupted`]. Only
/// an atomic store: safe to call from a signal handler.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// A wait ended by [`interrupt`].
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// `Err(Interrupted)` once [`interrupt`] was called.
pub fn check_interrupted() -> Result<(), Interrupted> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Polls `cond` every `poll` until it holds (returns the time it took);
/// fails with [`WaitTimeout`] after `timeout` or with [`Interrupted`].
pub fn wait_for(
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
        check_interrupted()?;
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(WaitTimeout {
                what: what.to_string(),
                after: elapsed,
            }
            .into());
        }
        std::thread::sleep(poll.min(timeout - elapsed));
    }
}

// ---------------------------------------------------------------------------
// Building.

/// A client of [`start_service`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// No shim: reaches the home address through the access point.
    Legacy,
    /// Runs `homeaddr-shim`.
    Shim,
}

/// An access point, members `1..=members` (started in order, each
/// registered) and then the clients, named `c0`, `c1`, ... in order.
pub fn start_service(tag: &str, members: u16, clients: &[Client]) -> anyhow::Result<Service> {
    let mut svc = Service::start(tag).context("starting the access point")?;
    start_members(&mut svc, 1..=members)?;
    for &kind in clients {
        svc.add_client(kind == Client::Shim, &[])
            .with_context(|| format!("starting a {kind:?} client"))?;
    }
    Ok(svc)
}

/// Starts the members one after the other; returns how long each took to
/// come up (daemon start, registration, server start).
pub fn start_members(
    svc: &mut Service,
    ids: impl IntoIterator<Item = u16>,
) -> anyhow::Result<Vec<Duration>> {
    let mut took = Vec::new();
    for id in ids {
        check_interrupted()?;
        let t = Instant::now();
        svc.add_member(id, &[])
            .with_context(|| format!("starting member {id}"))?;
        took.push(t.elapsed());
    }
    Ok(took)
}

/// "member2" (the server's WHO answer) -> 2.
pub fn member_of(server_name: &str) -> Option<u16> {
    server_name.strip_prefix("member")?.parse().ok()
}

/// The care-of endpoint string the daemons show for `addr`.
pub fn care_of(addr: Ipv6Addr) -> String {
    format!("[{addr}]:{TUNNEL_PORT}")
}

// ---------------------------------------------------------------------------
// One client's traffic.

/// Runs `f` inside the host's namespace.
fn in_host<R: Send>(
    host: &Host,
    f: impl FnOnce() -> Result<R, TestAppError> + Send,
) -> anyhow::Result<R> {
    host.ns
        .enter(f)
        .with_context(|| format!("entering the namespace of {}", host.name))?
        .with_context(|| format!("client {}", host.name))
}

/// The member's name that answers a fresh connection from `host`.
pub fn who(svc: &Service, host: &Host) -> anyhow::Result<String> {
    who_at(host, svc.service_endpoint())
}

/// The member's name that answers a fresh connection from `host` to
/// `server` (for hosts of other topologies than a [`Service`]).
pub fn who_at(host: &Host, server: std::net::SocketAddr) -> anyhow::Result<String> {
    in_host(host, || testapp::who(server, OP_TIMEOUT))
}

/// A download of `bytes` from the service by `host` (SHA-256 in the report).
pub fn download(svc: &Service, host: &Host, bytes: u64) -> anyhow::Result<GetReport> {
    let server = svc.service_endpoint();
    in_host(host, || testapp::get(server, bytes, OP_TIMEOUT))
}

/// Whether a download's bytes are the server's payload stream.
pub fn intact(get: &GetReport) -> bool {
    get.sha256 == testapp::expected_sha256(get.bytes)
}

/// `count` round trips on one connection from `host`, `interval` apart.
pub fn rtt_series(
    svc: &Service,
    host: &Host,
    count: usize,
    interval: Duration,
) -> anyhow::Result<RttReport> {
    let server = svc.service_endpoint();
    in_host(host, || testapp::rtt(server, count, interval, OP_TIMEOUT))
}

/// Open RTT sessions, one connection per client, running on threads.
#[derive(Debug)]
pub struct Sessions {
    /// The client index of each session, in order.
    pub clients: Vec<usize>,
    threads: Vec<JoinHandle<Result<RttReport, TestAppError>>>,
}

impl Sessions {
    /// Starts a session of `count` round trips `interval` apart from each
    /// of `clients`.
    pub fn start(
        svc: &Service,
        clients: &[usize],
        count: usize,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        let server = svc.service_endpoint();
        let threads = clients
            .iter()
            .map(|&c| {
                svc.clients[c].ns.spawn_thread("rtt", move || {
                    testapp::rtt(server, count, interval, OP_TIMEOUT)
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            clients: clients.to_vec(),
            threads,
        })
    }

    /// Whether every session ended.
    pub fn all_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Each session's result, in the order of `clients`.
    pub fn join(self) -> Vec<Result<RttReport, TestAppError>> {
        self.threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Route optimization, moves and drains.

/// Waits until the shim holds a binding with `member`; how long it took.
pub fn await_binding(shim: &Host, member: u16) -> anyhow::Result<Duration> {
    wait_for("a binding at the shim", BIND_TIMEOUT, WATCH_POLL, || {
        read::shim_binding(shim, member).is_some()
    })
}

/// When the access point and the shim showed a moved member's new care-of,
/// counted from the same start; `None` if not within [`BIND_TIMEOUT`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Rebind {
    /// The AP listed the new care-of.
    pub at_ap: Option<Duration>,
    /// The shim's binding showed it.
    pub at_shim: Option<Duration>,
}

impl Rebind {
    /// Both followed.
    pub fn complete(&self) -> bool {
        self.at_ap.is_some() && self.at_shim.is_some()
    }
}

/// A member's move to a new WAN address.
#[derive(Debug, Clone)]
pub struct Move {
    /// The old WAN address (still routed until retired).
    pub old: Ipv6Addr,
    /// The new one.
    pub new: Ipv6Addr,
    /// The new care-of endpoint ("[new]:4790").
    pub care_of: String,
    /// How long the `move` control command took.
    pub command: Duration,
    /// When the AP and the shim followed, after the command returned.
    pub rebind: Rebind,
}

/// Moves member `id` to a new address (make before break) and waits for
/// the AP and shim client `shim` to follow. Interrupted waits fail.
pub fn move_member(svc: &mut Service, id: u16, shim: usize) -> anyhow::Result<Move> {
    let t = Instant::now();
    let (old, new) = svc.move_member(id)?;
    let command = t.elapsed();
    let care_of = care_of(new);
    let rebind = await_rebind(svc, shim, id, &care_of)?;
    Ok(Move {
        old,
        new,
        care_of,
        command,
        rebind,
    })
}

/// Polls the AP and the shim until both list member `id` at `care_of`.
fn await_rebind(svc: &Service, shim: usize, id: u16, care_of: &str) -> anyhow::Result<Rebind> {
    let start = Instant::now();
    let mut rebind = Rebind::default();
    let waited = wait_for(
        "the AP and the shim to follow",
        BIND_TIMEOUT,
        WATCH_POLL,
        || {
            if rebind.at_ap.is_none() && read::ap_care_of(svc, id) == care_of {
                rebind.at_ap = Some(start.elapsed());
            }
            if rebind.at_shim.is_none()
                && read::shim_care_of(&svc.clients[shim], id).as_deref() == Some(care_of)
            {
                rebind.at_shim = Some(start.elapsed());
            }
            rebind.complete()
        },
    );
    unless_interrupted(waited)?;
    Ok(rebind)
}

/// Drains member `id` at the access point; with a shim client, waits until
/// the shim's binding shows the drain and returns how long that took
/// (`None`: it did not within [`BIND_TIMEOUT`]).
pub fn drain(svc: &Service, id: u16, shim: Option<usize>) -> anyhow::Result<Option<Duration>> {
    svc.ap
        .control(Request::Drain {
            member: Some(id),
            deadline_s: None,
        })
        .map_err(|e| anyhow::anyhow!("drain: {e}"))?;
    let Some(shim) = shim else { return Ok(None) };
    unless_interrupted(wait_for(
        "the shim to hear of the drain",
        BIND_TIMEOUT,
        WATCH_POLL,
        || read::shim_sees_drain(&svc.clients[shim], id),
    ))
}

/// A wait's time, `None` when it timed out; an interruption stays an error.
pub fn unless_interrupted(waited: anyhow::Result<Duration>) -> anyhow::Result<Option<Duration>> {
    match waited {
        Ok(took) => Ok(Some(took)),
        Err(e) if e.is::<Interrupted>() => Err(e),
        Err(_) => Ok(None),
    }
}

// ---------------------------------------------------------------------------
// Counters.

/// Packets dropped by some daemons, by "daemon: reason".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drops(pub BTreeMap<String, u64>);

impl Drops {
    /// The drop counters of each (label, host) now.
    pub fn of(hosts: &[(&str, &Host)]) -> Self {
        let mut all = BTreeMap::new();
        for (label, host) in hosts {
            for (reason, n) in read::drop_counts(&host.status()) {
                all.insert(format!("{label}: {reason}"), n);
            }
        }
        Self(all)
    }

    /// The counters that grew since `before`: their total and a summary,
    /// "0" or "3 (access point: malformed 3)".
    pub fn since(&self, before: &Drops) -> (u64, String) {
        let grown: Vec<(&String, u64)> = self
            .0
            .iter()
            .map(|(k, &n)| (k, n - before.0.get(k).copied().unwrap_or(0).min(n)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let total = grown.iter().map(|(_, n)| n).sum();
        if grown.is_empty() {
            return (0, "0".into());
        }
        let list: Vec<String> = grown.iter().map(|(k, n)| format!("{k} {n}")).collect();
        (total, format!("{total} ({})", list.join(", ")))
    }
}
