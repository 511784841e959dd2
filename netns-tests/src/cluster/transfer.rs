//! Long transfers that stay in flight across a route change, and the
//! probe that times new connections after one.
//!
//! A [`paced_get`] is a `GET` of the test app read at a fixed rate through a
//! small receive buffer: the server can only send what the window allows,
//! so the flow carries data the whole time (a plain download over veth
//! would be over, or parked in the client's buffer, before an AP dies). It
//! counts as kept when every byte arrived and the SHA-256 is the payload's;
//! a connection reset (what a wrong member's kernel answers) or a stall
//! past the socket timeout loses it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use sha2::{Digest, Sha256};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::scenario::traffic::read_name_unbuffered;
use crate::service::Host;
use crate::testapp;

/// Receive buffer of a paced download: a few windows per second at the
/// paces the tests use, so data keeps crossing the router.
const PACED_RCVBUF: usize = 32 * 1024;
/// A paced download reads at most this much at a time: at `rate` bytes/s
/// its reads are up to `PACED_READ / rate` apart with no stall at all (the
/// floor of [`PacedGet::longest_stall`]).
pub const PACED_READ: usize = 8 * 1024;
/// Each socket operation of a paced download times out after this.
pub const TRANSFER_OP_TIMEOUT: Duration = Duration::from_secs(10);
/// A paced download notes every gap between two reads at least this long
/// ([`PacedGet::pauses`]): longer than the pacing's own gaps at the rates
/// the tests use (256 KiB/s and up), so what is noted is the path pausing.
pub const PAUSE_NOTED: Duration = Duration::from_millis(50);

/// A gap between two reads of a paced download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    /// When the read that ended it returned.
    pub ended: Instant,
    /// How long it was.
    pub length: Duration,
}

/// A finished paced download.
#[derive(Debug, Clone)]
pub struct PacedGet {
    /// The member's name that served it (its `WHO` answer).
    pub server: String,
    /// Bytes received.
    pub bytes: u64,
    /// Every byte arrived and they are the payload stream.
    pub intact: bool,
    /// From connect to the last byte.
    pub elapsed: Duration,
    /// The longest time between two reads.
    pub longest_stall: Duration,
    /// Every gap between two reads of at least [`PAUSE_NOTED`], in order.
    pub pauses: Vec<Pause>,
}

impl PacedGet {
    /// The longest pause that overlaps `[from, to]` (zero when none of at
    /// least [`PAUSE_NOTED`] does): what an event at `from` cost the flow
    /// until the next one at `to`.
    pub fn longest_pause_between(&self, from: Instant, to: Instant) -> Duration {
        self.pauses
            .iter()
            .filter(|p| p.ended >= from && p.ended - p.length <= to)
            .map(|p| p.length)
            .max()
            .unwrap_or_default()
    }
}

/// Downloads `bytes` from `server` at about `rate` bytes per second,
/// storing the bytes received so far in `progress`.
pub fn paced_get(
    server: SocketAddr,
    bytes: u64,
    rate: u64,
    progress: &AtomicU64,
) -> anyhow::Result<PacedGet> {
    let start = Instant::now();
    let socket = Socket::new(
        Domain::for_address(server),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_recv_buffer_size(PACED_RCVBUF)?;
    socket
        .connect_timeout(&SockAddr::from(server), TRANSFER_OP_TIMEOUT)
        .with_context(|| format!("connecting to {server}"))?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TRANSFER_OP_TIMEOUT))?;
    stream.set_write_timeout(Some(TRANSFER_OP_TIMEOUT))?;
    stream.write_all(format!("WHO\nGET {bytes}\n").as_bytes())?;
    let name = read_name_unbuffered(&mut stream)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; PACED_READ];
    let mut received = 0u64;
    let mut last_read = Instant::now();
    let mut longest_stall = Duration::ZERO;
    let mut pauses = Vec::new();
    loop {
        let n = stream.read(&mut buf).with_context(|| {
            format!(
                "reading from {server} ({name}) after {received} of {bytes} bytes, {:.1} s in",
                start.elapsed().as_secs_f64()
            )
        })?;
        let now = Instant::now();
        let gap = now - last_read;
        longest_stall = longest_stall.max(gap);
        if gap >= PAUSE_NOTED {
            pauses.push(Pause {
                ended: now,
                length: gap,
            });
        }
        last_read = now;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        received += n as u64;
        progress.store(received, Ordering::Relaxed);
        let due = Duration::from_secs_f64(received as f64 / rate as f64);
        if let Some(ahead) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
    Ok(PacedGet {
        server: name,
        bytes: received,
        intact: testapp::is_intact_download(hasher, received, bytes),
        elapsed: start.elapsed(),
        longest_stall,
        pauses,
    })
}

/// Whether `e` is (caused by) a socket timeout: the flow stalled for
/// [`TRANSFER_OP_TIMEOUT`].
pub fn is_stall(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            )
        })
    })
}

/// Whether `e` is (caused by) a connection reset.
pub fn is_reset(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::ConnectionReset)
    })
}

/// Paced downloads running on threads, one per client host.
#[derive(Debug)]
pub struct Transfers {
    /// Bytes each downloads.
    pub bytes: u64,
    runs: Vec<Run>,
}

#[derive(Debug)]
struct Run {
    client: String,
    progress: Arc<AtomicU64>,
    thread: JoinHandle<anyhow::Result<PacedGet>>,
}

/// How one transfer ended.
#[derive(Debug)]
pub struct TransferResult {
    /// The client's host name.
    pub client: String,
    /// The download, or why it broke.
    pub result: anyhow::Result<PacedGet>,
}

impl TransferResult {
    /// Kept: complete and intact.
    pub fn kept(&self) -> bool {
        self.result.as_ref().is_ok_and(|g| g.intact)
    }
}

impl Transfers {
    /// Starts a paced download of `bytes` at `rate` bytes/s from `server`
    /// on each of `clients`.
    pub fn start(
        clients: &[&Host],
        server: SocketAddr,
        bytes: u64,
        rate: u64,
    ) -> anyhow::Result<Self> {
        let mut runs = Vec::new();
        for host in clients {
            let progress = Arc::new(AtomicU64::new(0));
            let p = Arc::clone(&progress);
            let thread = host
                .ns
                .spawn_thread("paced-get", move || paced_get(server, bytes, rate, &p))?;
            runs.push(Run {
                client: host.name.clone(),
                progress,
                thread,
            });
        }
        Ok(Self { bytes, runs })
    }

    /// Waits until every transfer received at least `at_least` bytes (or
    /// ended: a transfer that broke early is reported by [`Self::join`]).
    pub fn wait_progress(&self, at_least: u64, timeout: Duration) -> anyhow::Result<Duration> {
        Ok(crate::wait_until(
            timeout,
            Duration::from_millis(10),
            &format!("every transfer to pass {at_least} bytes"),
            || {
                self.runs.iter().all(|r| {
                    r.progress.load(Ordering::Relaxed) >= at_least || r.thread.is_finished()
                })
            },
        )?)
    }

    /// The bytes each has received so far, in the order of the clients.
    pub fn progress(&self) -> Vec<u64> {
        self.runs
            .iter()
            .map(|r| r.progress.load(Ordering::Relaxed))
            .collect()
    }

    /// How many are still running.
    pub fn running(&self) -> usize {
        self.runs.iter().filter(|r| !r.thread.is_finished()).count()
    }

    /// Waits for every transfer; each one's result.
    pub fn join(self) -> Vec<TransferResult> {
        self.runs
            .into_iter()
            .map(|r| TransferResult {
                client: r.client,
                result: r
                    .thread
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            })
            .collect()
    }
}

/// The longest stall of any transfer of `results` that finished.
pub fn longest_stall(results: &[TransferResult]) -> Duration {
    results
        .iter()
        .filter_map(|r| r.result.as_ref().ok())
        .map(|g| g.longest_stall)
        .max()
        .unwrap_or_default()
}

/// A summary of `results`: `kept/total`, then every lost one with why.
pub fn summary(results: &[TransferResult]) -> String {
    let kept = results.iter().filter(|r| r.kept()).count();
    let stall = longest_stall(results);
    let mut s = format!(
        "{kept}/{} transfers kept, longest stall of any {} ms",
        results.len(),
        stall.as_millis()
    );
    for r in results {
        match &r.result {
            Ok(g) if g.intact => s.push_str(&format!(
                "\n  {}: {} bytes from {} in {:.1} s, longest stall {} ms",
                r.client,
                g.bytes,
                g.server,
                g.elapsed.as_secs_f64(),
                g.longest_stall.as_millis()
            )),
            Ok(g) => s.push_str(&format!(
                "\n  {}: LOST: {} bytes from {}, content wrong",
                r.client, g.bytes, g.server
            )),
            Err(e) => {
                let why = if is_reset(e) {
                    " (reset)"
                } else if is_stall(e) {
                    " (stalled past the socket timeout)"
                } else {
                    ""
                };
                s.push_str(&format!("\n  {}: LOST{why}: {e:#}", r.client));
            }
        }
    }
    s
}

/// When a client's first new connection after an event succeeded.
#[derive(Debug, Clone)]
pub struct FirstConnection {
    /// The client's host name.
    pub client: String,
    /// Since the event; `None`: none succeeded within the limit.
    pub after: Option<Duration>,
    /// The member that answered.
    pub server: String,
    /// Attempts made (each a fresh connection, so a fresh source port).
    pub attempts: u32,
}

/// From each of `clients` at once: new connections to `server` (connect
/// and `WHO`, each attempt bounded by `attempt`) until one succeeds or
/// `limit` after `since` passes.
pub fn first_connections(
    clients: &[&Host],
    server: SocketAddr,
    since: Instant,
    attempt: Duration,
    limit: Duration,
) -> anyhow::Result<Vec<FirstConnection>> {
    let threads = clients
        .iter()
        .map(|host| {
            let client = host.name.clone();
            host.ns.spawn_thread("first-conn", move || {
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    if let Ok(name) = testapp::who(server, attempt) {
                        return FirstConnection {
                            client,
                            after: Some(since.elapsed()),
                            server: name,
                            attempts,
                        };
                    }
                    if since.elapsed() >= limit {
                        return FirstConnection {
                            client,
                            after: None,
                            server: String::new(),
                            attempts,
                        };
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(threads
        .into_iter()
        .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        .collect())
}

/// The slowest of `firsts`, `None` if one never succeeded.
pub fn slowest(firsts: &[FirstConnection]) -> Option<Duration> {
    firsts
        .iter()
        .map(|f| f.after)
        .try_fold(Duration::ZERO, |m, a| a.map(|a| m.max(a)))
}
