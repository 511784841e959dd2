//! User-space WAN emulator: joins namespaces through TUN devices with a
//! latency matrix, seeded loss, jitter (reordering), optional rate limits and
//! bounded queues. The kernel here has no netem, so this is how tests get
//! wide-area delays between "sites".
//!
//! For every attached host the emulator creates a TUN device (default
//! `wan0`, MTU 1500, long transmit queue) *inside the host's namespace* (a
//! dedicated thread `setns(2)`s into it, creates the device, and switches
//! back; the file descriptor stays bound to that namespace), gives it the
//! host's WAN address and routes the WAN prefixes ([`WanConfig::routes`],
//! default [`DEFAULT_WAN_ROUTE`]) into it. One reader thread per host reads
//! what the host sends into its TUN and hands it to the scheduling core
//! ([`core::WanCore`]), which finds the destination host by longest-prefix
//! match on the destination address (the host's address plus any extra
//! prefixes it owns, e.g. a home-address prefix routed to the access point)
//! and schedules it after the link's one-way delay; one delivery thread
//! writes due packets into the destination host's TUN, where the host's
//! kernel receives (or forwards) them.
//!
//! ```text
//!   ns "client"                emulator (threads)                 ns "ap"
//!   app -> wan0 (TUN) ==fd==> reader -> core(heap) -> delivery ==fd==> wan0 -> app
//! ```
//!
//! Drop the [`Wan`] before the [`crate::Topology`] (declare it after): the
//! TUN file descriptors keep the namespaces alive until they are closed.

pub mod config;
pub mod core;

use std::io;
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::Ipv6Net;
use tun_rs::{DeviceBuilder, SyncDevice};

pub use self::core::{
    CoreError, DropReason, HostId, LinkCounters, LinkParams, LinkReport, Verdict, WanCore,
    WanCounters,
};
use crate::nsenter;

/// The WAN prefix routed into every host's TUN by default: the whole test
/// ULA range, so any test address not on a more specific LAN route crosses
/// the emulated WAN.
pub const DEFAULT_WAN_ROUTE: &str = "fd00:4841::/32";

/// Subnet of [`crate::ula`] used for WAN addresses by convention:
/// `ula(WAN_SUBNET, n)` is the WAN address of host `n`.
pub const WAN_SUBNET: u16 = 0xffff;

/// Settings of one emulator instance.
#[derive(Debug, Clone)]
pub struct WanConfig {
    /// Seed of every link's loss and jitter draws.
    pub seed: u64,
    /// Name of the TUN device created in each host namespace.
    pub tun_name: String,
    /// MTU of those TUN devices (the WAN path MTU).
    pub mtu: u16,
    /// Transmit queue length of those TUN devices (packets the host may
    /// have queued before the emulator reads them).
    pub tx_queue_len: u32,
    /// Prefixes routed into the TUN in every host.
    pub routes: Vec<Ipv6Net>,
    /// Parameters of every link not configured explicitly.
    pub default_link: LinkParams,
    /// SCHED_FIFO priority (1-99) of the emulator threads, so that delivery
    /// stays on time while the tests load both cores; `None` keeps normal
    /// scheduling. Falls back to normal scheduling where not permitted
    /// (see [`Wan::realtime`]). The kernel's RT throttling (95 % by
    /// default) keeps even a flooded emulator from starving the machine.
    pub realtime_priority: Option<u8>,
}

impl Default for WanConfig {
    fn default() -> Self {
        WanConfig {
            seed: 1,
            tun_name: "wan0".into(),
            mtu: 1500,
            tx_queue_len: 10_000,
            routes: vec![DEFAULT_WAN_ROUTE.parse().expect("valid constant")],
            default_link: LinkParams::default(),
            realtime_priority: Some(10),
        }
    }
}

/// A host to attach: a namespace and its WAN address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Name used in the latency matrix and counters (e.g. "ap", "m1").
    pub name: String,
    /// Namespace name (under `/run/netns`) or a path to a namespace file
    /// (e.g. `/proc/<pid>/ns/net`).
    pub netns: String,
    /// The host's WAN address, configured on its TUN.
    pub addr: Ipv6Addr,
    /// Prefix length of `addr` on the TUN (128 or 64 typically).
    pub prefix_len: u8,
    /// Further prefixes whose packets the emulator delivers to this host
    /// (e.g. a home-address prefix the host routes onwards).
    pub prefixes: Vec<Ipv6Net>,
}

impl HostSpec {
    /// Host `name` in namespace `netns` with WAN address `addr/128`.
    pub fn new(name: &str, netns: &str, addr: Ipv6Addr) -> Self {
        HostSpec {
            name: name.into(),
            netns: netns.into(),
            addr,
            prefix_len: 128,
            prefixes: Vec::new(),
        }
    }

    /// Also delivers packets for `prefix` to this host.
    pub fn with_prefix(mut self, prefix: Ipv6Net) -> Self {
        self.prefixes.push(prefix);
        self
    }

    fn netns_path(&self) -> PathBuf {
        if self.netns.contains('/') {
            PathBuf::from(&self.netns)
        } else {
            nsenter::netns_path(&self.netns)
        }
    }
}

/// Errors of the emulator shell.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WanError {
    /// A system call, TUN or `ip` operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Rejected by the core (unknown/duplicate host, bad parameters).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A configuration file or argument is invalid.
    #[error("invalid WAN configuration: {0}")]
    Config(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> WanError {
    let what = what.into();
    move |source| WanError::Io { what, source }
}

/// How long a reader waits in poll(2) before re-checking for shutdown.
const READER_POLL_MS: i32 = 100;
/// Packets a reader takes from its TUN per lock of the core.
const READ_BATCH: usize = 64;
/// Packets the delivery thread takes from the core per lock.
const DELIVERY_BATCH: usize = 64;

struct Shared {
    core: Mutex<WanCore>,
    /// Signalled when a packet becomes the earliest due or on shutdown.
    wakeup: Condvar,
    stop: AtomicBool,
    devices: RwLock<Vec<Arc<SyncDevice>>>,
    write_errors: AtomicU64,
    /// Cleared when a thread could not get real-time scheduling.
    realtime: AtomicBool,
    config: WanConfig,
}

fn lock(m: &Mutex<WanCore>) -> MutexGuard<'_, WanCore> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running WAN emulator; stops its threads and removes its TUN devices on
/// drop. See the [module docs](self).
pub struct Wan {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Wan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wan")
            .field("config", &self.shared.config)
            .field("hosts", &lock(&self.shared.core).host_names())
            .finish()
    }
}

impl Wan {
    /// Starts an emulator with no hosts (its delivery thread runs from now).
    pub fn start(config: WanConfig) -> Result<Wan, WanError> {
        if config.tun_name.is_empty() || config.tun_name.len() > 15 {
            return Err(WanError::Config(format!(
                "tun_name {:?} must be 1 to 15 bytes",
                config.tun_name
            )));
        }
        if config.mtu < 1280 {
            return Err(WanError::Config(format!(
                "mtu {} is below the IPv6 minimum of 1280",
                config.mtu
            )));
        }
        let core = WanCore::new(config.seed, config.default_link)?;
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            wakeup: Condvar::new(),
            stop: AtomicBool::new(false),
            devices: RwLock::new(Vec::new()),
            write_errors: AtomicU64::new(0),
            realtime: AtomicBool::new(config.realtime_priority.is_some()),
            config,
        });
        let delivery = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("wan-delivery".into())
                .spawn(move || delivery_loop(&shared))
                .map_err(io_err("spawning the WAN delivery thread"))?
        };
        Ok(Wan {
            shared,
            threads: Mutex::new(vec![delivery]),
        })
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &WanConfig {
        &self.shared.config
    }

    /// Attaches a host: creates the TUN in its namespace, configures the
    /// address and routes, and starts reading from it.
    pub fn attach(&self, host: &HostSpec) -> Result<HostId, WanError> {
        if lock(&self.shared.core).host_id(&host.name).is_some() {
            return Err(CoreError::DuplicateHost(host.name.clone()).into());
        }
        let config = &self.shared.config;
        let path = host.netns_path();
        let what = format!(
            "creating TUN {} in namespace {}",
            config.tun_name, host.netns
        );
        let device = nsenter::with_netns(&path, || -> io::Result<SyncDevice> {
            let device = DeviceBuilder::new()
                .name(&config.tun_name)
                .mtu(config.mtu)
                .tx_queue_len(config.tx_queue_len)
                .build_sync()?;
            // Configured from inside the namespace, so this also works for
            // namespaces given by path. `nodad`: usable at once.
            let mut lines = vec![
                format!(
                    "addr add {}/{} dev {} nodad",
                    host.addr, host.prefix_len, config.tun_name
                ),
                format!("link set dev {} up", config.tun_name),
            ];
            for route in &config.routes {
                lines.push(format!("route replace {route} dev {}", config.tun_name));
            }
            ip_batch_here(&lines)?;
            nsenter::wait_local_route(None, host.addr, Duration::from_secs(5))?;
            Ok(device)
        })
        .and_then(|r| r)
        .map_err(io_err(what))?;
        device
            .set_nonblocking(true)
            .map_err(io_err("making the TUN non-blocking"))?;
        let device = Arc::new(device);
        // Devices are indexed by HostId: add both under the core lock.
        let id = {
            let mut core = lock(&self.shared.core);
            let id = core.add_host(&host.name)?;
            core.add_route(
                &host.name,
                Ipv6Net::new(host.addr, 128).expect("128 is valid"),
            )?;
            for prefix in &host.prefixes {
                core.add_route(&host.name, *prefix)?;
            }
            let mut devices = self
                .shared
                .devices
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            debug_assert_eq!(devices.len(), id);
            devices.push(Arc::clone(&device));
            id
        };
        let shared = Arc::clone(&self.shared);
        let reader = std::thread::Builder::new()
            .name(format!("wan-rx-{}", host.name))
            .spawn(move || reader_loop(&shared, id, &device))
            .map_err(io_err("spawning a WAN reader thread"))?;
        self.threads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(reader);
        Ok(id)
    }

    /// Sets the direction `from -> to`.
    pub fn set_link(&self, from: &str, to: &str, params: LinkParams) -> Result<(), WanError> {
        Ok(lock(&self.shared.core).set_link(from, to, params)?)
    }

    /// Sets both directions between `a` and `b` to `params`.
    pub fn set_link_both(&self, a: &str, b: &str, params: LinkParams) -> Result<(), WanError> {
        let mut core = lock(&self.shared.core);
        core.set_link(a, b, params)?;
        core.set_link(b, a, params)?;
        Ok(())
    }

    /// Sets the one-way latency of both directions between `a` and `b`,
    /// keeping their other parameters.
    pub fn set_latency(&self, a: &str, b: &str, one_way: Duration) -> Result<(), WanError> {
        let mut core = lock(&self.shared.core);
        for (from, to) in [(a, b), (b, a)] {
            let params = LinkParams {
                latency: one_way,
                ..core.link_params(from, to)?
            };
            core.set_link(from, to, params)?;
        }
        Ok(())
    }

    /// Sets the loss probability of the direction `from -> to`, keeping its
    /// other parameters (1.0 cuts the direction off).
    pub fn set_loss(&self, from: &str, to: &str, loss: f64) -> Result<(), WanError> {
        let mut core = lock(&self.shared.core);
        let params = LinkParams {
            loss,
            ..core.link_params(from, to)?
        };
        Ok(core.set_link(from, to, params)?)
    }

    /// The parameters of the direction `from -> to`.
    pub fn link_params(&self, from: &str, to: &str) -> Result<LinkParams, WanError> {
        Ok(lock(&self.shared.core).link_params(from, to)?)
    }

    /// Also delivers packets for `prefix` to `host` (e.g. after a member
    /// moved to a new care-of address); replaces an existing route for it.
    /// The host's own kernel needs the address or a route for it too.
    pub fn add_prefix(&self, host: &str, prefix: Ipv6Net) -> Result<(), WanError> {
        Ok(lock(&self.shared.core).add_route(host, prefix)?)
    }

    /// Stops delivering packets for `prefix`; returns whether it was routed.
    pub fn remove_prefix(&self, prefix: Ipv6Net) -> bool {
        lock(&self.shared.core).remove_route(prefix)
    }

    /// Names of the attached hosts.
    pub fn hosts(&self) -> Vec<String> {
        lock(&self.shared.core).host_names().to_vec()
    }

    /// The counters of the direction `from -> to`.
    pub fn link_counters(&self, from: &str, to: &str) -> Result<LinkCounters, WanError> {
        Ok(lock(&self.shared.core).link_counters(from, to)?)
    }

    /// All counters.
    pub fn counters(&self) -> WanCounters {
        let mut counters = lock(&self.shared.core).counters();
        counters.write_errors = self.shared.write_errors.load(Ordering::Relaxed);
        counters
    }

    /// Whether every emulator thread runs with the configured real-time
    /// priority (false when none is configured or it was refused).
    pub fn realtime(&self) -> bool {
        self.shared.realtime.load(Ordering::Relaxed)
    }

    /// Packets currently in flight on all links.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared.core).in_flight()
    }

    /// Stops the threads and removes the TUN devices (same as drop).
    pub fn stop(self) {}
}

impl Drop for Wan {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _core = lock(&self.shared.core);
            self.shared.wakeup.notify_all();
        }
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for t in threads {
            let _ = t.join();
        }
        // Closing the last fd of each TUN removes the device.
        self.shared
            .devices
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }
}

/// Runs `ip -batch -` in the calling thread's network namespace.
fn ip_batch_here(lines: &[String]) -> io::Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let input = lines.join("\n") + "\n";
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())?;
    // `ip -batch` on a handful of lines finishes in milliseconds; the pipe
    // closes when it exits, so this wait is bounded by ip itself.
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "`ip -batch` {lines:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Gives the calling thread the configured real-time priority, if any.
fn set_realtime(shared: &Shared) {
    let Some(priority) = shared.config.realtime_priority else {
        return;
    };
    let param = libc::sched_param {
        sched_priority: i32::from(priority.clamp(1, 99)),
    };
    // SAFETY: changes only the calling thread's scheduling policy.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if rc != 0 {
        shared.realtime.store(false, Ordering::Relaxed);
    }
}

fn reader_loop(shared: &Shared, host: HostId, device: &SyncDevice) {
    set_realtime(shared);
    let fd = device.as_raw_fd();
    let mut buf = vec![0u8; 65_536];
    let mut batch: Vec<(Instant, Vec<u8>)> = Vec::with_capacity(READ_BATCH);
    while !shared.stop.load(Ordering::Relaxed) {
        match device.recv(&mut buf) {
            Ok(n) => {
                batch.push((Instant::now(), buf[..n].to_vec()));
                if batch.len() < READ_BATCH {
                    continue;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if batch.is_empty() {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd; the fd outlives this loop.
                    unsafe {
                        libc::poll(&mut pfd, 1, READER_POLL_MS);
                    }
                    continue;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("homeaddr-wan: reading TUN of host {host}: {e}; reader stops");
                return;
            }
        }
        let mut core = lock(&shared.core);
        let earliest = core.poll_timeout();
        let mut wake = false;
        for (at, packet) in batch.drain(..) {
            if let Verdict::Queued { due, .. } = core.handle_packet(at, host, packet) {
                wake |= earliest.is_none_or(|e| due < e);
            }
        }
        drop(core);
        if wake {
            shared.wakeup.notify_one();
        }
    }
}

fn delivery_loop(shared: &Shared) {
    set_realtime(shared);
    // Timed waits otherwise overshoot by the default 50 us timer slack.
    // SAFETY: prctl with integer arguments affecting only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    let mut batch: Vec<(HostId, Vec<u8>)> = Vec::with_capacity(DELIVERY_BATCH);
    loop {
        {
            let mut core = lock(&shared.core);
            loop {
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                while batch.len() < DELIVERY_BATCH {
                    match core.poll_due(now) {
                        Some(item) => batch.push(item),
                        None => break,
                    }
                }
                if !batch.is_empty() {
                    break;
                }
                let wait = core
                    .poll_timeout()
                    .map_or(Duration::from_millis(100), |due| {
                        due.saturating_duration_since(now)
                    });
                core = shared
                    .wakeup
                    .wait_timeout(core, wait)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
            }
        }
        let devices = shared
            .devices
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (to, packet) in batch.drain(..) {
            let ok = devices.get(to).is_some_and(|d| d.send(&packet).is_ok());
            if !ok {
                shared.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
