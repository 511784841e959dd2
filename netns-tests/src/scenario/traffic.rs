//! Traffic that records its own timeline: a download that notes when each
//! read arrived (for the stall of a member move) and one TCP connection
//! whose round trips are labelled with the shim's path (for route
//! optimization inside one flow).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::{Move, OP_TIMEOUT, check_interrupted, move_member, read, wait_for};
use crate::service::{Host, Service};
use crate::testapp;

// ---------------------------------------------------------------------------
// A download with a timeline.

/// A download whose every read was timed.
#[derive(Debug, Clone)]
pub struct TracedGet {
    /// The server's name.
    pub server: String,
    /// Bytes received.
    pub bytes: u64,
    /// All bytes arrived and they are the server's payload stream.
    pub sha_ok: bool,
    /// From the start to the last byte.
    pub elapsed: Duration,
    /// (time since the start, bytes so far) after every read.
    pub reads: Vec<(Duration, u64)>,
}

impl TracedGet {
    /// The longest gap between two reads that ends inside (or, with
    /// `inside` false, outside) `[from, to]`, and when it started.
    pub fn longest_gap(&self, from: Duration, to: Duration, inside: bool) -> (Duration, Duration) {
        self.reads
            .windows(2)
            .filter(|w| (w[1].0 >= from && w[1].0 <= to) == inside)
            .map(|w| (w[1].0 - w[0].0, w[0].0))
            .max()
            .unwrap_or_default()
    }
}

/// Downloads `bytes` from `server`, storing the bytes received so far in
/// `progress` after every read; times are counted from `start`.
pub fn traced_get(
    server: SocketAddr,
    bytes: u64,
    start: Instant,
    progress: &AtomicU64,
) -> anyhow::Result<TracedGet> {
    let mut stream = TcpStream::connect_timeout(&server, OP_TIMEOUT)
        .with_context(|| format!("connecting to {server}"))?;
    stream.set_read_timeout(Some(OP_TIMEOUT))?;
    stream.write_all(format!("WHO\nGET {bytes}\n").as_bytes())?;
    let name = read_name_unbuffered(&mut stream)?;
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
    Ok(TracedGet {
        server: name,
        bytes: received,
        sha_ok: testapp::is_intact_download(hasher, received, bytes),
        elapsed: start.elapsed(),
        reads,
    })
}

/// The server's name line, byte by byte, so that no payload is buffered
/// before the reads are timed.
pub(crate) fn read_name_unbuffered(stream: &mut TcpStream) -> anyhow::Result<String> {
    let mut name = Vec::new();
    let mut b = [0u8; 1];
    loop {
        stream
            .read_exact(&mut b)
            .context("reading the server name")?;
        if b[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&name).into_owned());
        }
        name.push(b[0]);
    }
}

// ---------------------------------------------------------------------------
// A member move in the middle of a download.

/// A download by a shim client during which its member moved.
#[derive(Debug, Clone)]
pub struct MidTransferMove {
    /// The download, timed.
    pub get: TracedGet,
    /// The move; `None` when the download ended before it was due.
    pub moved: Option<MovedAt>,
}

/// When in the download the member moved.
#[derive(Debug, Clone)]
pub struct MovedAt {
    /// Since the download started.
    pub at: Duration,
    /// Bytes received by then.
    pub at_bytes: u64,
    /// The move.
    pub mv: Move,
}

impl MidTransferMove {
    /// The longest pause in the data that ended within `window` after the
    /// move, and how long after the move it started; zero without a move.
    pub fn stall(&self, window: Duration) -> (Duration, Duration) {
        let Some(m) = &self.moved else {
            return Default::default();
        };
        let (gap, started) = self.get.longest_gap(m.at, m.at + window, true);
        (gap, started.saturating_sub(m.at))
    }

    /// The longest pause at any other time (what the path does anyway).
    pub fn other_gap(&self, window: Duration) -> Duration {
        self.moved.as_ref().map_or(Duration::ZERO, |m| {
            self.get.longest_gap(m.at, m.at + window, false).0
        })
    }
}

/// Shim client `shim` downloads `bytes` from the service; once
/// `move_after` bytes arrived, member `id` moves (see [`move_member`]).
pub fn move_mid_download(
    svc: &mut Service,
    id: u16,
    shim: usize,
    bytes: u64,
    move_after: u64,
) -> anyhow::Result<MidTransferMove> {
    let endpoint = svc.service_endpoint();
    let progress = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let download = {
        let progress = Arc::clone(&progress);
        svc.clients[shim].ns.spawn_thread("download", move || {
            traced_get(endpoint, bytes, start, &progress)
        })?
    };
    let waited = wait_for(
        "the download to reach the move",
        Duration::from_secs(20),
        Duration::from_millis(1),
        || progress.load(Ordering::Relaxed) >= move_after || download.is_finished(),
    );
    let moved = match waited {
        Ok(_) if !download.is_finished() => {
            let at = start.elapsed();
            let at_bytes = progress.load(Ordering::Relaxed);
            move_member(svc, id, shim).map(|mv| Some(MovedAt { at, at_bytes, mv }))
        }
        Ok(_) => Ok(None),
        Err(e) => Err(e),
    };
    // Whatever happened, let the download end (its socket operations time
    // out) before reporting.
    let get = download
        .join()
        .map_err(|_| anyhow::anyhow!("the download thread panicked"))?;
    let moved = moved?;
    let get = get.context("the download during the move")?;
    Ok(MidTransferMove { get, moved })
}

// ---------------------------------------------------------------------------
// One connection, each round trip labelled with the shim's path.

/// One timed round trip of a [`TracedSession`].
#[derive(Debug, Clone)]
pub struct RoundTrip {
    /// "TCP handshake", "WHO -> member1", "echo 3".
    pub what: String,
    /// When it was sent, after the first packet (the SYN).
    pub sent: Duration,
    /// Its round-trip time.
    pub rtt: Duration,
    /// The shim's path for the flow right after the request left (the
    /// shim's flow table records the path of the flow's last outgoing
    /// packet: the request itself).
    pub path: String,
    /// The shim received data directly from the member during the round
    /// trip (the answer, if the flow has no other traffic).
    pub answer_direct: bool,
}

impl RoundTrip {
    /// The request went through the AP and the answer came directly: the
    /// binding was completed in between, and the RTT is neither path's.
    pub fn mixed(&self) -> bool {
        self.path == "access-point" && self.answer_direct
    }
}

/// The round trips of one connection through a shim.
#[derive(Debug, Clone)]
pub struct TracedSession {
    /// The server's name.
    pub server: String,
    /// The handshake, the WHO and the echoes, in order.
    pub trips: Vec<RoundTrip>,
    /// When the shim first held a binding, after the SYN.
    pub bound_at: Option<Duration>,
}

impl TracedSession {
    /// The index of the first round trip on the direct path.
    pub fn first_direct(&self) -> Option<usize> {
        self.trips.iter().position(|t| t.path == "direct")
    }

    /// The RTTs (microseconds) of the round trips that took `path` both
    /// ways ("access-point" or "direct").
    pub fn rtts_on(&self, path: &str) -> Vec<u64> {
        self.trips
            .iter()
            .filter(|t| t.path == path && !t.mixed())
            .map(|t| t.rtt.as_micros() as u64)
            .collect()
    }

    /// Every round trip from the first direct one on was direct too.
    pub fn direct_from_then_on(&self) -> bool {
        self.first_direct()
            .is_some_and(|i| self.trips[i..].iter().all(|t| t.path == "direct"))
    }
}

/// One TCP connection to the service from shim client `shim`: the
/// handshake, a WHO and `probes` echo round trips `interval` apart, each
/// timed and labelled with the shim's path; a side thread notes when the
/// shim first holds a binding.
pub fn traced_session(
    svc: &Service,
    shim: usize,
    probes: usize,
    interval: Duration,
) -> anyhow::Result<TracedSession> {
    let server = svc.service_endpoint();
    let host = &svc.clients[shim];
    host.ns
        .enter(|| traced_session_inside(host, server, probes, interval))?
}

fn traced_session_inside(
    host: &Host,
    server: SocketAddr,
    probes: usize,
    interval: Duration,
) -> anyhow::Result<TracedSession> {
    let done = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if read::shim_bound(host) {
                    return Some(start.elapsed());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        });
        let result = round_trips(host, server, probes, interval, start);
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

/// The connection of [`traced_session`] with what labels its round trips.
struct Probed<'a> {
    host: &'a Host,
    port: u16,
    start: Instant,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Probed<'_> {
    /// Sends `request` and reads one line: the answer and the round trip.
    fn trip(&mut self, request: &str, what: String) -> anyhow::Result<(String, RoundTrip)> {
        let direct_in = || read::counter(&self.host.status(), "direct_in");
        let direct_before = direct_in();
        let sent = self.start.elapsed();
        self.writer.write_all(request.as_bytes())?;
        let path = read::shim_path(self.host, self.port);
        let answer = read_line(&mut self.reader, request.trim_end())?;
        let rtt = self.start.elapsed() - sent;
        let answer_direct = direct_in() > direct_before;
        Ok((
            answer,
            RoundTrip {
                what,
                sent,
                rtt,
                path,
                answer_direct,
            },
        ))
    }
}

/// The connection of [`traced_session`]: the server's name and the trips.
fn round_trips(
    host: &Host,
    server: SocketAddr,
    probes: usize,
    interval: Duration,
    start: Instant,
) -> anyhow::Result<(String, Vec<RoundTrip>)> {
    let stream = TcpStream::connect_timeout(&server, OP_TIMEOUT)
        .with_context(|| format!("connecting to {server}"))?;
    let handshake = start.elapsed();
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(OP_TIMEOUT))?;
    let port = stream.local_addr()?.port();
    let mut conn = Probed {
        host,
        port,
        start,
        writer: stream.try_clone()?,
        reader: BufReader::new(stream),
    };
    // The last packet of the handshake (the ACK) took the SYN's path.
    let mut trips = vec![RoundTrip {
        what: "TCP handshake".into(),
        sent: Duration::ZERO,
        rtt: handshake,
        path: read::shim_path(host, port),
        answer_direct: read::counter(&host.status(), "direct_in") > 0,
    }];
    let (name, who) = conn.trip("WHO\n", String::new())?;
    trips.push(RoundTrip {
        what: format!("WHO -> {name}"),
        ..who
    });
    conn.writer.write_all(b"ECHO\n")?;
    let mut next = Instant::now();
    for i in 0..probes {
        check_interrupted()?;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next = Instant::now() + interval;
        let (echo, t) = conn.trip(&format!("probe {i}\n"), format!("echo {}", i + 1))?;
        if echo != format!("probe {i}") {
            bail!("echo {echo:?} does not match probe {i}");
        }
        trips.push(t);
    }
    Ok((name, trips))
}

fn read_line(reader: &mut impl BufRead, what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .with_context(|| format!("reading the answer to {what}"))?;
    if n == 0 {
        bail!("connection closed while waiting for the answer to {what}");
    }
    Ok(line.trim_end().to_string())
}
