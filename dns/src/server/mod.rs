//! The I/O shell: listeners, health probes and the metrics endpoint.
//!
//! Layer: shell. Contract: [`start`] binds every listener (UDP and TCP on
//! each address, IPv4 and IPv6; UDP as several SO_REUSEPORT sockets so the
//! kernel spreads queries over cores), starts the health task and returns a
//! [`RunningServer`] that knows the bound addresses and stops everything on
//! [`RunningServer::shutdown`]. UDP is served by default by plain blocking
//! worker threads that move queries in batches (`recvmmsg`/`sendmmsg`) and
//! call the pure [`answer`](crate::answer::answer) function
//! (`UdpEngine::Fast`, see [`fast`]), or by hickory-server with
//! [`GeoDnsHandler`] (`UdpEngine::Hickory`). Both send the same messages. TCP
//! always goes through hickory.

mod fast;
mod mmsg;
mod tasks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::Server;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::task::JoinHandle as TaskHandle;
use tracing::{debug, info, warn};

pub use mmsg::MAX_BATCH;

use crate::answer::Snapshot;
use crate::config::Zone;
use crate::handler::GeoDnsHandler;
use crate::health::HealthSource;
use crate::metrics::Metrics;

/// Who serves UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UdpEngine {
    /// hickory-server's UDP loop with our RequestHandler (a task per query).
    Hickory,
    /// Our own blocking worker threads, one SO_REUSEPORT socket each, with
    /// batched I/O. The default: same answers, several times the rate.
    #[default]
    Fast,
}

/// Queries per `recvmmsg` of the fast engine by default (measured in
/// docs/DNS.md, "Benchmark").
pub const DEFAULT_UDP_BATCH: usize = 32;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Addresses to listen on (UDP and TCP each). Port 0 picks one port and
    /// uses it for all sockets of that address.
    pub listen: Vec<SocketAddr>,
    /// UDP sockets (and, with the fast engine, threads) per address.
    pub udp_sockets: usize,
    /// Who serves UDP.
    pub udp_engine: UdpEngine,
    /// Fast engine: most queries per `recvmmsg`/`sendmmsg` (1 =
    /// one datagram per system call; at most [`MAX_BATCH`]).
    pub udp_batch: usize,
    /// Idle timeout of TCP connections.
    pub tcp_timeout: Duration,
    /// Where to serve Prometheus metrics over HTTP, if anywhere.
    pub metrics: Option<SocketAddr>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            listen: vec![],
            udp_sockets: std::thread::available_parallelism().map_or(1, |n| n.get()),
            udp_engine: UdpEngine::default(),
            udp_batch: DEFAULT_UDP_BATCH,
            tcp_timeout: Duration::from_secs(10),
            metrics: None,
        }
    }
}

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A socket could not be set up.
    #[error(
        "cannot listen on {addr}: {source} (is the port free, and are you allowed to bind it?)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Nothing to listen on.
    #[error("no listen address given; pass --listen ADDR:PORT")]
    NoListen,
}

/// A started server.
pub struct RunningServer {
    /// Bound addresses (UDP and TCP share each).
    pub addrs: Vec<SocketAddr>,
    /// Bound metrics address.
    pub metrics_addr: Option<SocketAddr>,
    /// The snapshot the query path reads.
    pub state: Arc<ArcSwap<Snapshot>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    hickory: Server<GeoDnsHandler>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    tasks: Vec<TaskHandle<()>>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addrs", &self.addrs)
            .field("metrics_addr", &self.metrics_addr)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

fn udp_socket(addr: SocketAddr, blocking: bool) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    // Bursts of queries must not be dropped at the default buffer size.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    if blocking {
        // Wake up now and then to notice shutdown.
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
    } else {
        s.set_nonblocking(true)?;
    }
    Ok(s.into())
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Binds all listeners and starts serving `zone`. Must run inside a tokio
/// runtime (hickory's listeners are tasks on it).
pub async fn start(zone: Arc<Zone>, opts: &ServeOptions) -> Result<RunningServer, ServeError> {
    if opts.listen.is_empty() {
        return Err(ServeError::NoListen);
    }
    let state = Arc::new(ArcSwap::from_pointee(Snapshot::new(zone.clone())));
    let metrics = Arc::new(Metrics::new(
        zone.sites.iter().map(|s| s.name.clone()).collect(),
    ));
    for (i, s) in zone.sites.iter().enumerate() {
        if let HealthSource::Static(up) = s.health {
            metrics.set_static(i, up);
        }
    }
    let handler = GeoDnsHandler::new(state.clone(), metrics.clone());
    let mut hickory = Server::new(handler);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    let mut addrs = Vec::new();
    let fast = opts.udp_engine == UdpEngine::Fast;
    for &requested in &opts.listen {
        let bind_err = |source| ServeError::Bind {
            addr: requested,
            source,
        };
        let first = udp_socket(requested, fast).map_err(bind_err)?;
        let addr = first.local_addr().map_err(bind_err)?;
        let mut sockets = vec![first];
        for _ in 1..opts.udp_sockets.max(1) {
            sockets.push(udp_socket(addr, fast).map_err(bind_err)?);
        }
        for (k, s) in sockets.into_iter().enumerate() {
            if fast {
                let (state, metrics, stop) = (state.clone(), metrics.clone(), stop.clone());
                let batch = opts.udp_batch;
                let handle = std::thread::Builder::new()
                    .name(format!("dns-udp-{k}"))
                    .spawn(move || fast::serve(s, state, metrics, stop, batch))
                    .map_err(bind_err)?;
                workers.push(handle);
            } else {
                hickory.register_socket(tokio::net::UdpSocket::from_std(s).map_err(bind_err)?);
            }
        }
        let tcp = tcp_listener(addr).map_err(bind_err)?;
        hickory.register_listener(
            tokio::net::TcpListener::from_std(tcp).map_err(bind_err)?,
            opts.tcp_timeout,
            64,
        );
        info!(
            %addr,
            udp_sockets = opts.udp_sockets.max(1),
            engine = ?opts.udp_engine,
            batch = opts.udp_batch,
            "listening (udp+tcp)"
        );
        addrs.push(addr);
    }
    let mut tasks = vec![tokio::spawn(tasks::run_health(
        zone.clone(),
        state.clone(),
        metrics.clone(),
    ))];
    let mut metrics_addr = None;
    if let Some(m) = opts.metrics {
        let listener = tokio::net::TcpListener::bind(m)
            .await
            .map_err(|source| ServeError::Bind { addr: m, source })?;
        metrics_addr = listener.local_addr().ok();
        info!(addr = ?metrics_addr, "serving metrics");
        tasks.push(tokio::spawn(tasks::serve_metrics(
            listener,
            metrics.clone(),
        )));
    }
    Ok(RunningServer {
        addrs,
        metrics_addr,
        state,
        metrics,
        hickory,
        stop,
        workers,
        tasks,
    })
}

impl RunningServer {
    /// Stops listeners, workers and background tasks.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
        if let Err(e) = self.hickory.shutdown_gracefully().await {
            debug!(error = %e, "hickory shutdown");
        }
        for w in self.workers.drain(..) {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
    }

    /// Waits until the hickory listeners end (they end on shutdown only).
    pub async fn block_until_done(&mut self) {
        if let Err(e) = self.hickory.block_until_done().await {
            warn!(error = %e, "listener ended");
        }
    }
}
