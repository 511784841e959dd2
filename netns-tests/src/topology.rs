//! Throw-away network topologies built from Linux network namespaces.
//!
//! A [`Topology`] owns every namespace it creates ([`Netns`] handles) and every
//! process it starts inside them ([`Daemon`]s). Dropping it, also while a test
//! unwinds from a panic, kills those processes and deletes the namespaces
//! (veth pairs and bridges inside them go with them). As a last resort an
//! `atexit` hook removes whatever is still registered when the test process
//! exits, and namespaces left behind by a test process that was killed are
//! removed by the next [`Topology::new`].
//!
//! Names: a namespace is called `ha-<tag>-<pid>-<n>-<role>` (tag and role
//! shortened to 8 characters of `[a-z0-9]`), so tests running in parallel
//! threads or processes never collide. Interface names are chosen by the
//! caller and are local to each namespace (veth ends are created directly in
//! their target namespaces), so they never touch or clash with the host's.
//!
//! Addresses: use [`ula`] (inside [`ULA_PREFIX`]); since every test has its
//! own namespaces, tests may reuse the same addresses.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::Ipv6Addr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::Ipv6Net;

use crate::nsenter;

/// The ULA prefix all test topologies take their addresses from
/// (`fd00:4841::/32`, "HA" in hex). Only ever configured inside namespaces.
pub const ULA_PREFIX: &str = "fd00:4841::/32";

/// Time limit for one configuration command (`ip ...`, `sysctl ...`).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Daemon`] teardown waits after SIGTERM before SIGKILL.
pub const DAEMON_STOP_GRACE: Duration = Duration::from_secs(2);

/// Address `fd00:4841:<subnet>::<host>` inside [`ULA_PREFIX`].
///
/// By convention subnet `0xffff` is the WAN (see [`crate::wan`]) and small
/// subnets are LANs or home-address prefixes.
pub fn ula(subnet: u16, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x4841, subnet, 0, 0, 0, 0, host)
}

/// Errors of topology construction and of commands run in namespaces.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("`{command}` failed ({status}); stderr: {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// A command did not finish in time and was killed.
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    CommandTimeout {
        /// The command line.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// A name given by the caller cannot be used.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A daemon exited while the test waited for it.
    #[error(
        "daemon {label:?} exited ({status}) while waiting for {what}; stderr tail:\n{stderr_tail}"
    )]
    DaemonExited {
        /// The daemon's label.
        label: String,
        /// Its exit status.
        status: String,
        /// What the test waited for.
        what: String,
        /// The last lines of its stderr.
        stderr_tail: String,
    },
    /// A bounded wait ran out.
    #[error(transparent)]
    Timeout(#[from] WaitTimeout),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> TopologyError {
    let what = what.into();
    move |source| TopologyError::Io { what, source }
}

/// A bounded wait that ran out.
#[derive(Debug, Clone, thiserror::Error)]
#[error("timed out after {after:?} waiting for {what}")]
pub struct WaitTimeout {
    /// What was waited for.
    pub what: String,
    /// How long was waited.
    pub after: Duration,
}

/// Polls `cond` every `poll_interval` until it returns true or `timeout`
/// passes; returns how long it took.
///
/// Use this instead of a sleep that stands in for a condition.
pub fn wait_until(
    timeout: Duration,
    poll_interval: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration, WaitTimeout> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(WaitTimeout {
                what: what.to_string(),
                after: elapsed,
            });
        }
        std::thread::sleep(poll_interval.min(timeout - elapsed));
    }
}

/// Whether a namespace test may run: true when root and `ip netns` works.
///
/// When not root it prints a loud SKIPPED notice and returns false, unless the
/// environment has `CI=true` (or `CI=1`): then it panics, because a namespace
/// test skipped in CI would be a silent hole. As root it panics when
/// `ip netns` is unusable (no `ip`, no namespace support).
pub fn require_root(test_name: &str) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        if ci {
            panic!(
                "namespace test `{test_name}` needs root (euid is {euid}) and CI=true: \
                 run the namespace tests as root in CI (e.g. `sudo -E cargo test -p homeaddr-netns-tests`)"
            );
        }
        // Written to the stderr handle, not with eprintln!, so that the
        // notice also shows when the test harness captures output.
        let _ = writeln!(
            io::stderr(),
            "\n\
             ************************************************************\n\
             * SKIPPED: namespace test `{test_name}`\n\
             * It needs root (euid is {euid}) to create network namespaces,\n\
             * veth pairs and TUN devices. It did NOT run and proves nothing.\n\
             * Run as root: sudo -E cargo test -p homeaddr-netns-tests\n\
             * (With CI=true this is a failure instead of a skip.)\n\
             ************************************************************\n"
        );
        return false;
    }
    static USABLE: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = USABLE.get_or_init(probe_ip_netns) {
        panic!(
            "namespace test `{test_name}`: running as root but `ip netns` is unusable: {why}\n\
             Install iproute2 and make sure the kernel has network namespaces."
        );
    }
    true
}

fn probe_ip_netns() -> Result<(), String> {
    let name = format!("ha-probe-{}-0-x", std::process::id());
    run_host_command("ip", ["netns", "add", name.as_str()], COMMAND_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let result = run_host_command(
        "ip",
        ["-n", name.as_str(), "link", "set", "lo", "up"],
        COMMAND_TIMEOUT,
    )
    .map(drop)
    .map_err(|e| e.to_string());
    let _ = run_host_command("ip", ["netns", "del", name.as_str()], COMMAND_TIMEOUT);
    result
}

// ---------------------------------------------------------------------------
// Process-wide registry for the exit hook and stale cleanup.

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

#[derive(Default)]
struct LiveState {
    namespaces: Vec<String>,
    /// Process group ids of daemons not yet reaped.
    daemon_pgids: Vec<i32>,
}

fn live() -> MutexGuard<'static, LiveState> {
    static LIVE: OnceLock<Mutex<LiveState>> = OnceLock::new();
    let mutex = LIVE.get_or_init(Default::default);
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn register_exit_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        extern "C" fn cleanup_at_exit() {
            let state = std::mem::take(&mut *live());
            for pgid in state.daemon_pgids {
                // SAFETY: kill on a process group we spawned and never reaped.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
            for name in state.namespaces {
                delete_netns(&name);
            }
        }
        // SAFETY: registering a plain extern "C" fn without arguments.
        unsafe {
            libc::atexit(cleanup_at_exit);
        }
    });
}

/// Removes `ha-*` namespaces whose creating process no longer exists.
fn cleanup_stale_namespaces() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(listing) = run_host_command("ip", ["netns", "list"], COMMAND_TIMEOUT) else {
            return;
        };
        let me = std::process::id();
        for line in listing.lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            let fields: Vec<&str> = name.split('-').collect();
            if fields.len() < 4 || fields[0] != "ha" {
                continue;
            }
            let Ok(pid) = fields[2].parse::<u32>() else {
                continue;
            };
            if pid != me && !process_alive(pid) {
                delete_netns(name);
            }
        }
    });
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Kills every process left in namespace `name`, then deletes the namespace.
fn delete_netns(name: &str) {
    let me = std::process::id();
    if let Ok(pids) = run_host_command("ip", ["netns", "pids", name], COMMAND_TIMEOUT) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if pid > 1 && pid as u32 != me {
                // SAFETY: kill of a process that lives in our own test namespace.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
    let _ = run_host_command("ip", ["netns", "del", name], COMMAND_TIMEOUT);
}

// ---------------------------------------------------------------------------
// Commands.

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion within `timeout`, feeding it `stdin`.
fn output_with_timeout(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, TopologyError> {
    let command = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(io_err(format!("cannot start `{command}`")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .map_err(io_err(format!("cannot write stdin of `{command}`")))?;
    }
    let mut stdout_pipe = child.stdout.take();
    let mut stderr_pipe = child.stderr.take();
    let stdout_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(pipe) = stdout_pipe.as_mut() {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(pipe) = stderr_pipe.as_mut() {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    });
    let deadline = Instant::now() + timeout;
    let mut poll = Duration::from_micros(500);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TopologyError::CommandTimeout { command, timeout });
            }
            Ok(None) => {
                std::thread::sleep(poll);
                poll = (poll * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(io_err(format!("waiting for `{command}`"))(e)),
        }
    };
    let stdout = stdout_reader.join().unwrap_or_default();
    let stderr = stderr_reader.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn checked(command: String, output: Output) -> Result<String, TopologyError> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(TopologyError::CommandFailed {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Runs a command in the namespace of the test process (only used for
/// `ip netns ...` and `ip link add ... netns ...`, which never touch host
/// interfaces).
fn run_host_command<I, S>(
    program: &str,
    args: I,
    timeout: Duration,
) -> Result<String, TopologyError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    let command = describe(&cmd);
    checked(command, output_with_timeout(cmd, None, timeout)?)
}

fn short_label(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(8)
        .collect()
}

fn check_ifname(name: &str) -> Result<(), TopologyError> {
    let invalid = |reason| {
        Err(TopologyError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 15 {
        return invalid("interface names must be 1 to 15 bytes (IFNAMSIZ)");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return invalid("use only [A-Za-z0-9._-] in interface names");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Topology.

struct Shared {
    dir: PathBuf,
    namespaces: Mutex<Vec<String>>,
    daemons: Mutex<Vec<Weak<DaemonInner>>>,
}

/// An RAII set of network namespaces, links and processes for one test.
///
/// See the [module docs](self). Create namespaces with
/// [`Topology::add_netns`], connect them with [`Topology::veth`] or
/// [`Topology::lan`], configure them through the returned [`Netns`] handles.
pub struct Topology {
    tag: String,
    shared: Arc<Shared>,
    keep_dir: bool,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("tag", &self.tag)
            .field("dir", &self.shared.dir)
            .field("namespaces", &*lock(&self.shared.namespaces))
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Topology {
    /// Starts an empty topology for the test `tag` (shortened to 8
    /// characters of `[a-z0-9]` in names) with a fresh log directory.
    ///
    /// The log directory is `$HOMEADDR_NETNS_LOGS` or `$TMPDIR/homeaddr-netns`,
    /// plus `<tag>-<pid>-<n>`. It is removed on drop unless the test panicked
    /// or `HOMEADDR_KEEP_LOGS` is set.
    pub fn new(tag: &str) -> Result<Topology, TopologyError> {
        let tag = short_label(tag);
        if tag.is_empty() {
            return Err(TopologyError::InvalidName {
                name: tag,
                reason: "the test tag needs at least one ASCII letter or digit",
            });
        }
        register_exit_hook();
        cleanup_stale_namespaces();
        let base = std::env::var_os("HOMEADDR_NETNS_LOGS")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("homeaddr-netns"));
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("{tag}-{}-{id}", std::process::id()));
        fs::create_dir_all(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        Ok(Topology {
            tag,
            shared: Arc::new(Shared {
                dir,
                namespaces: Mutex::new(Vec::new()),
                daemons: Mutex::new(Vec::new()),
            }),
            keep_dir: std::env::var_os("HOMEADDR_KEEP_LOGS").is_some(),
        })
    }

    /// The shortened test tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The per-test directory holding daemon logs (and anything a test
    /// wants to put there, e.g. config files).
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Keeps the log directory after drop even when the test passed.
    pub fn keep_logs(&mut self) {
        self.keep_dir = true;
    }

    /// Names of the namespaces created so far.
    pub fn namespace_names(&self) -> Vec<String> {
        lock(&self.shared.namespaces).clone()
    }

    /// Creates a namespace for `role` (e.g. "ap", "m1", "client"): loopback
    /// up, IPv6 duplicate address detection off, forwarding off.
    pub fn add_netns(&self, role: &str) -> Result<Netns, TopologyError> {
        let role = short_label(role);
        if role.is_empty() {
            return Err(TopologyError::InvalidName {
                name: role,
                reason: "a role needs at least one ASCII letter or digit",
            });
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("ha-{}-{}-{id}-{role}", self.tag, std::process::id());
        // Register before creating so that even a failure half-way is cleaned.
        live().namespaces.push(name.clone());
        lock(&self.shared.namespaces).push(name.clone());
        run_host_command("ip", ["netns", "add", name.as_str()], COMMAND_TIMEOUT)?;
        let ns = Netns {
            inner: Arc::new(NetnsInner {
                name,
                role,
                shared: Arc::clone(&self.shared),
            }),
        };
        ns.ip("link set lo up")?;
        ns.enter(|| -> io::Result<()> {
            for (key, value) in [
                ("net/ipv6/conf/all/accept_dad", "0"),
                ("net/ipv6/conf/default/accept_dad", "0"),
                ("net/ipv6/conf/all/forwarding", "0"),
            ] {
                fs::write(Path::new("/proc/sys").join(key), value)?;
            }
            Ok(())
        })?
        .map_err(io_err(format!("sysctl defaults in {}", ns.name())))?;
        Ok(ns)
    }

    /// Connects `a` and `b` with a veth pair named `a_if` in `a` and `b_if`
    /// in `b` (names local to each namespace, at most 15 bytes), both up,
    /// MTU 1500 (change with [`Netns::set_mtu`]).
    pub fn veth(&self, a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<(), TopologyError> {
        check_ifname(a_if)?;
        check_ifname(b_if)?;
        // Both ends are created directly in their namespaces: no name is ever
        // visible (or able to clash) in the host namespace.
        run_host_command(
            "ip",
            [
                "link",
                "add",
                "name",
                a_if,
                "netns",
                a.name(),
                "type",
                "veth",
                "peer",
                "name",
                b_if,
                "netns",
                b.name(),
            ],
            COMMAND_TIMEOUT,
        )?;
        a.link_up(a_if)?;
        b.link_up(b_if)?;
        Ok(())
    }

    /// Creates bridge `br` inside `ns` (STP off, forward delay 0, multicast
    /// snooping off so that neighbour discovery is always flooded), up.
    pub fn bridge(&self, ns: &Netns, br: &str) -> Result<(), TopologyError> {
        check_ifname(br)?;
        ns.ip(&format!(
            "link add name {br} type bridge stp_state 0 forward_delay 0 mcast_snooping 0"
        ))?;
        ns.link_up(br)
    }

    /// A shared LAN: creates a switch namespace `role` with bridge `br0` and
    /// connects each `(namespace, interface name)` of `members` to it. The
    /// member interfaces come up without addresses; returns the switch.
    pub fn lan(&self, role: &str, members: &[(&Netns, &str)]) -> Result<Netns, TopologyError> {
        let switch = self.add_netns(role)?;
        self.bridge(&switch, "br0")?;
        for (member, ifname) in members {
            self.join_lan(&switch, member, ifname)?;
        }
        Ok(switch)
    }

    /// Connects `member` (interface `ifname`, up, no address) to the LAN of
    /// `switch` (made by [`Topology::lan`]) on the switch's next free port
    /// `p<n>`, also after the LAN was built (a host that joins later).
    /// Returns the port's name.
    pub fn join_lan(
        &self,
        switch: &Netns,
        member: &Netns,
        ifname: &str,
    ) -> Result<String, TopologyError> {
        let links = switch.ip("-o link show")?;
        let taken: Vec<&str> = links
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|name| name.trim().split('@').next().unwrap_or_default())
            .collect();
        let port = (0..)
            .map(|i| format!("p{i}"))
            .find(|p| !taken.contains(&p.as_str()))
            .expect("a free port name");
        self.veth(member, ifname, switch, &port)?;
        switch.ip(&format!("link set dev {port} master br0"))?;
        Ok(port)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let daemons: Vec<_> = std::mem::take(&mut *lock(&self.shared.daemons));
        let alive: Vec<Arc<DaemonInner>> = daemons.iter().filter_map(Weak::upgrade).collect();
        for daemon in &alive {
            daemon.signal_group(libc::SIGTERM);
        }
        for daemon in &alive {
            daemon.stop(DAEMON_STOP_GRACE);
        }
        let names = std::mem::take(&mut *lock(&self.shared.namespaces));
        for name in &names {
            delete_netns(name);
        }
        live().namespaces.retain(|n| !names.contains(n));
        let panicking = std::thread::panicking();
        if panicking || self.keep_dir {
            eprintln!(
                "homeaddr-netns-tests: logs of topology `{}` kept in {}",
                self.tag,
                self.shared.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.shared.dir);
        }
    }
}

// ---------------------------------------------------------------------------
// Netns.

struct NetnsInner {
    name: String,
    role: String,
    shared: Arc<Shared>,
}

/// A handle to one namespace of a [`Topology`]; cheap to clone.
///
/// The namespace lives as long as the topology, not as long as the handle.
#[derive(Clone)]
pub struct Netns {
    inner: Arc<NetnsInner>,
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netns")
            .field("name", &self.inner.name)
            .field("role", &self.inner.role)
            .finish()
    }
}

impl Netns {
    /// The namespace name (as in `ip netns list`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The role given at creation (shortened).
    pub fn role(&self) -> &str {
        &self.inner.role
    }

    /// The namespace's mount point, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        nsenter::netns_path(self.name())
    }

    /// The log directory of the topology.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// A command that runs `program` inside the namespace
    /// (`ip netns exec <name> <program>`); add arguments, environment, etc.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.name()]).arg(program);
        cmd
    }

    /// Runs `program args` inside the namespace within `timeout` and returns
    /// its output whatever its exit status.
    pub fn output<I, S>(
        &self,
        program: impl AsRef<OsStr>,
        args: I,
        timeout: Duration,
    ) -> Result<Output, TopologyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        output_with_timeout(cmd, None, timeout)
    }

    /// Runs `program args` inside the namespace (limit [`COMMAND_TIMEOUT`])
    /// and returns its stdout; a non-zero exit is an error carrying stderr.
    pub fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<String, TopologyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        let command = describe(&cmd);
        checked(command, output_with_timeout(cmd, None, COMMAND_TIMEOUT)?)
    }

    /// Runs `ip -n <name> <args>` (arguments split on whitespace), e.g.
    /// `ns.ip("-6 route add fd00:4841::/32 via fd00:4841:1::1")`.
    pub fn ip(&self, args: &str) -> Result<String, TopologyError> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", self.name()]).args(args.split_whitespace());
        let command = describe(&cmd);
        checked(command, output_with_timeout(cmd, None, COMMAND_TIMEOUT)?)
    }

    /// Runs several `ip` commands in one process (`ip -n <name> -batch -`);
    /// each line is what would follow `ip`, without global options such as
    /// `-6` (the family follows from the addresses).
    pub fn ip_batch(&self, lines: &[&str]) -> Result<String, TopologyError> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", self.name(), "-batch", "-"]);
        let command = format!("{} <<< {:?}", describe(&cmd), lines);
        let input = lines.join("\n") + "\n";
        checked(
            command,
            output_with_timeout(cmd, Some(input.as_bytes()), COMMAND_TIMEOUT)?,
        )
    }

    /// Sets interface `iface` up.
    pub fn link_up(&self, iface: &str) -> Result<(), TopologyError> {
        self.ip(&format!("link set dev {iface} up")).map(drop)
    }

    /// Sets the MTU of `iface`.
    pub fn set_mtu(&self, iface: &str, mtu: u32) -> Result<(), TopologyError> {
        self.ip(&format!("link set dev {iface} mtu {mtu}"))
            .map(drop)
    }

    /// Adds `addr/prefix_len` to `iface` (`nodad`) and returns once the
    /// kernel accepts packets for it (see [`Netns::wait_addr_ready`]).
    pub fn add_addr(
        &self,
        iface: &str,
        addr: Ipv6Addr,
        prefix_len: u8,
    ) -> Result<(), TopologyError> {
        self.ip(&format!(
            "-6 addr add {addr}/{prefix_len} dev {iface} nodad"
        ))?;
        self.wait_addr_ready(addr)
    }

    /// Waits (up to 5 s) until `addr` has its local route. Even with `nodad`
    /// the kernel installs it asynchronously after `ip addr add` returns; a
    /// packet arriving before is answered with ICMPv6 "no route", which the
    /// sender sees as ENETUNREACH. Call this after adding addresses by other
    /// means (a daemon configuring its TUN) before sending to them.
    pub fn wait_addr_ready(&self, addr: Ipv6Addr) -> Result<(), TopologyError> {
        nsenter::wait_local_route(Some(self.name()), addr, Duration::from_secs(5))
            .map_err(io_err(format!("waiting for {addr} in {}", self.name())))
    }

    /// Adds an IPv6 route to `dest` via gateway `via` and/or out of `dev`.
    pub fn add_route(
        &self,
        dest: Ipv6Net,
        via: Option<Ipv6Addr>,
        dev: Option<&str>,
    ) -> Result<(), TopologyError> {
        let mut line = format!("-6 route add {dest}");
        if let Some(via) = via {
            line.push_str(&format!(" via {via}"));
        }
        if let Some(dev) = dev {
            line.push_str(&format!(" dev {dev}"));
        }
        self.ip(&line).map(drop)
    }

    /// Turns IPv6 forwarding on or off for all interfaces of the namespace.
    pub fn set_forwarding(&self, on: bool) -> Result<(), TopologyError> {
        self.sysctl("net.ipv6.conf.all.forwarding", if on { "1" } else { "0" })
    }

    /// Writes a sysctl of this namespace (`key` dotted or slashed, e.g.
    /// `net.ipv6.conf.all.forwarding`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), TopologyError> {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        self.enter(|| fs::write(&path, value))?
            .map_err(io_err(format!("sysctl {key}={value} in {}", self.name())))
    }

    /// Runs `f` on a thread inside this namespace and returns its result.
    ///
    /// Sockets (and TUN devices) created in `f` stay in this namespace and
    /// may be used from any thread afterwards, so this is how a test binds
    /// in-process servers and clients in a namespace.
    pub fn enter<F, R>(&self, f: F) -> Result<R, TopologyError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        nsenter::with_netns(&self.path(), f)
            .map_err(io_err(format!("entering namespace {}", self.name())))
    }

    /// Starts a named thread that runs `f` inside this namespace.
    pub fn spawn_thread<F, R>(&self, name: &str, f: F) -> Result<JoinHandle<R>, TopologyError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = self.path();
        let target = File::open(&path).map_err(io_err(format!("opening {}", path.display())))?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(format!("{}-{name}", self.role()))
            .spawn(move || {
                let guard = nsenter::enter(&target);
                let entered = guard.as_ref().map(drop).map_err(|e| e.to_string());
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                // The caller gets the error from spawn_thread; this thread
                // must not run f in the wrong namespace.
                assert!(
                    ok,
                    "could not enter the namespace; spawn_thread returned the error"
                );
                f()
            })
            .map_err(io_err("spawning a namespace thread"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => Err(TopologyError::Io {
                what: format!("entering namespace {}", self.name()),
                source: io::Error::other(e),
            }),
            Err(_) => Err(TopologyError::Io {
                what: format!("entering namespace {}", self.name()),
                source: io::Error::other("namespace thread died"),
            }),
        }
    }

    /// Process ids of every process in this namespace.
    pub fn pids(&self) -> Result<Vec<u32>, TopologyError> {
        let out = run_host_command("ip", ["netns", "pids", self.name()], COMMAND_TIMEOUT)?;
        Ok(out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// Starts `program args` inside the namespace as a long-running process
    /// whose stdout and stderr go to `<dir>/<role>.<label>.stdout|stderr`.
    ///
    /// The returned [`Daemon`] stops it (SIGTERM, then SIGKILL) on drop; the
    /// topology does the same for daemons still running when it is dropped.
    pub fn spawn<I, S>(
        &self,
        label: &str,
        program: impl AsRef<OsStr>,
        args: I,
    ) -> Result<Daemon, TopologyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        self.spawn_command(label, cmd)
    }

    /// Like [`Netns::spawn`] for a prepared command (from [`Netns::command`],
    /// with environment variables etc.). Its stdio is replaced.
    pub fn spawn_command(&self, label: &str, mut cmd: Command) -> Result<Daemon, TopologyError> {
        let dir = &self.inner.shared.dir;
        let stem = {
            let base = format!("{}.{}", self.role(), label);
            let mut stem = base.clone();
            let mut k = 1;
            while dir.join(format!("{stem}.stdout")).exists() {
                k += 1;
                stem = format!("{base}.{k}");
            }
            stem
        };
        let stdout_path = dir.join(format!("{stem}.stdout"));
        let stderr_path = dir.join(format!("{stem}.stderr"));
        let stdout = File::create(&stdout_path)
            .map_err(io_err(format!("creating {}", stdout_path.display())))?;
        let stderr = File::create(&stderr_path)
            .map_err(io_err(format!("creating {}", stderr_path.display())))?;
        let command = describe(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        // Register under the lock so the exit hook cannot miss the child.
        let mut live_state = live();
        let child = cmd
            .spawn()
            .map_err(io_err(format!("cannot start `{command}`")))?;
        let pid = child.id();
        live_state.daemon_pgids.push(pid as i32);
        drop(live_state);
        let inner = Arc::new(DaemonInner {
            label: label.to_string(),
            netns: self.name().to_string(),
            command,
            pid,
            child: Mutex::new(Some(child)),
            status: Mutex::new(None),
            stdout_path,
            stderr_path,
        });
        lock(&self.inner.shared.daemons).push(Arc::downgrade(&inner));
        Ok(Daemon { inner })
    }
}

// ---------------------------------------------------------------------------
// Daemon.

struct DaemonInner {
    label: String,
    netns: String,
    command: String,
    pid: u32,
    child: Mutex<Option<Child>>,
    status: Mutex<Option<ExitStatus>>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl DaemonInner {
    fn signal_group(&self, sig: i32) {
        if lock(&self.child).is_some() {
            // SAFETY: the child is not reaped yet, so its process group id
            // (== pid, process_group(0)) cannot have been reused.
            unsafe {
                libc::kill(-(self.pid as i32), sig);
            }
        }
    }

    fn try_reap(&self) -> Option<ExitStatus> {
        let mut child = lock(&self.child);
        if let Some(c) = child.as_mut()
            && exited_unreaped(self.pid)
        {
            // Helpers the daemon started in its group go too; the unreaped
            // leader keeps the group id from being reused until try_wait.
            // SAFETY: as in signal_group.
            unsafe {
                libc::kill(-(self.pid as i32), libc::SIGKILL);
            }
            if let Ok(Some(status)) = c.try_wait() {
                *child = None;
                *lock(&self.status) = Some(status);
                live().daemon_pgids.retain(|&p| p != self.pid as i32);
            }
        }
        *lock(&self.status)
    }

    fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut poll = Duration::from_micros(500);
        loop {
            if let Some(status) = self.try_reap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(poll);
            poll = (poll * 2).min(Duration::from_millis(20));
        }
    }

    fn stop(&self, grace: Duration) -> Option<ExitStatus> {
        self.signal_group(libc::SIGTERM);
        if let Some(status) = self.wait_timeout(grace) {
            return Some(status);
        }
        self.signal_group(libc::SIGKILL);
        self.wait_timeout(Duration::from_secs(5))
    }
}

/// A long-running process inside a namespace, started by [`Netns::spawn`].
///
/// Dropping it stops the process (SIGTERM, up to [`DAEMON_STOP_GRACE`], then
/// SIGKILL) and reaps it. The process runs in its own process group, which
/// receives the signals, so helpers it forks go with it.
pub struct Daemon {
    inner: Arc<DaemonInner>,
}

impl fmt::Debug for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Daemon")
            .field("label", &self.inner.label)
            .field("netns", &self.inner.netns)
            .field("pid", &self.inner.pid)
            .field("command", &self.inner.command)
            .finish()
    }
}

impl Daemon {
    /// The label given at spawn.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// Where its stdout goes.
    pub fn stdout_path(&self) -> &Path {
        &self.inner.stdout_path
    }

    /// Where its stderr goes.
    pub fn stderr_path(&self) -> &Path {
        &self.inner.stderr_path
    }

    /// Everything it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.inner.stdout_path)
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.inner.stderr_path)
    }

    /// Whether it is still running (reaps it if it exited).
    pub fn is_running(&self) -> bool {
        self.inner.try_reap().is_none()
    }

    /// Its exit status, once it has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.inner.try_reap()
    }

    /// Sends `sig` (e.g. `libc::SIGSTOP`, `libc::SIGHUP`) to its process group.
    pub fn signal(&self, sig: i32) {
        self.inner.signal_group(sig);
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        self.inner.wait_timeout(timeout)
    }

    /// Kills it at once (SIGKILL, the "member dies" case) and reaps it.
    pub fn kill(&self) -> Option<ExitStatus> {
        self.inner.signal_group(libc::SIGKILL);
        self.inner.wait_timeout(Duration::from_secs(5))
    }

    /// Stops it gracefully: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&self, grace: Duration) -> Option<ExitStatus> {
        self.inner.stop(grace)
    }

    /// Waits until its stdout or stderr contains `needle` (e.g. a "ready"
    /// line); fails early, with its stderr, if it exits first.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> Result<(), TopologyError> {
        let what = format!(
            "{:?} in the output of daemon {:?}",
            needle, self.inner.label
        );
        let start = Instant::now();
        loop {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.exit_status() {
                // It may have written the needle just before exiting.
                if self.stdout().contains(needle) || self.stderr().contains(needle) {
                    return Ok(());
                }
                return Err(TopologyError::DaemonExited {
                    label: self.inner.label.clone(),
                    status: describe_status(status),
                    what,
                    stderr_tail: tail(&self.stderr(), 20),
                });
            }
            if start.elapsed() >= timeout {
                return Err(WaitTimeout {
                    what,
                    after: start.elapsed(),
                }
                .into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.inner.stop(DAEMON_STOP_GRACE);
    }
}

/// Whether our child `pid` has exited, without reaping it (WNOWAIT).
fn exited_unreaped(pid: u32) -> bool {
    // SAFETY: waitid on our own child with a zeroed siginfo to fill in.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        rc == 0 && info.si_pid() != 0
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// The last `lines` lines of `text`, or, if it holds a Rust panic, the
/// panic message and what follows (a backtrace tail alone says nothing).
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all
        .iter()
        .rposition(|l| l.contains("panicked at"))
        .unwrap_or(all.len().saturating_sub(lines));
    all[start..all.len().min(start + lines)].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short_and_safe() {
        assert_eq!(short_label("Route-Opt_Handoff!"), "routeopt");
        assert_eq!(short_label("m1"), "m1");
        assert_eq!(short_label("--"), "");
    }

    #[test]
    fn interface_names_respect_ifnamsiz() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("a-very-long-name").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("bad name").is_err());
    }

    #[test]
    fn ula_is_inside_the_prefix() {
        let net: Ipv6Net = ULA_PREFIX.parse().unwrap();
        assert!(net.contains(&ula(0xffff, 1)));
        assert_eq!(ula(1, 2).to_string(), "fd00:4841:1::2");
    }

    #[test]
    fn wait_until_succeeds_and_times_out() {
        let mut n = 0;
        let took = wait_until(
            Duration::from_secs(1),
            Duration::from_millis(1),
            "n == 3",
            || {
                n += 1;
                n == 3
            },
        );
        assert!(took.is_ok());
        let err = wait_until(
            Duration::from_millis(20),
            Duration::from_millis(5),
            "never",
            || false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("never"), "{err}");
        assert!(err.after >= Duration::from_millis(20));
    }

    #[test]
    fn commands_time_out() {
        let mut cmd = Command::new("sleep");
        cmd.arg("5");
        let err = output_with_timeout(cmd, None, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, TopologyError::CommandTimeout { .. }), "{err}");
    }
}
