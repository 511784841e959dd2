//! Running code inside a network namespace from a multi-threaded process.
//!
//! `setns(2)` with `CLONE_NEWNET` changes the namespace of the *calling
//! thread* only, so the work runs on a dedicated thread that enters the
//! namespace, runs the closure and switches back before it ends. Sockets and
//! TUN devices created there stay bound to that namespace for their lifetime,
//! whichever thread uses them afterwards.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Directory where `ip netns add` mounts named namespaces.
pub(crate) const NETNS_RUN_DIR: &str = "/run/netns";

/// Runs `f` on a scoped thread that has entered the network namespace at
/// `netns_path` (e.g. `/run/netns/NAME`) and returns its result.
///
/// A panic in `f` is propagated to the caller.
pub(crate) fn with_netns<F, R>(netns_path: &Path, f: F) -> io::Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let target = File::open(netns_path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot open network namespace {}: {e}",
                netns_path.display()
            ),
        )
    })?;
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("netns-enter".into())
            .spawn_scoped(scope, move || -> io::Result<R> {
                let _guard = enter(&target)?;
                Ok(f())
            })?;
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Moves the calling thread into the namespace behind `target`; the returned
/// guard moves it back to the original namespace when dropped.
pub(crate) fn enter(target: &File) -> io::Result<RestoreNetns> {
    let original = File::open("/proc/thread-self/ns/net")?;
    // SAFETY: setns on valid, open namespace file descriptors; only the
    // calling thread's network namespace changes.
    let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("setns(CLONE_NEWNET) failed: {err} (needs root / CAP_SYS_ADMIN)"),
        ));
    }
    Ok(RestoreNetns { original })
}

/// Switches the thread back to its original network namespace on drop.
#[derive(Debug)]
pub(crate) struct RestoreNetns {
    original: File,
}

impl Drop for RestoreNetns {
    fn drop(&mut self) {
        // SAFETY: as in `enter`; failure leaves a thread that is about to end
        // in the target namespace, which is harmless.
        unsafe {
            libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET);
        }
    }
}

/// Path of the mount point of the named namespace `name`.
pub(crate) fn netns_path(name: &str) -> std::path::PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Waits until `addr` has its local route (`ip -6 route show table local`),
/// in namespace `netns` or, with `None`, in the calling thread's namespace.
///
/// `ip addr add ... nodad` returns before the address is usable: the kernel
/// inserts the local route from its DAD work queue, and a packet arriving in
/// between is answered with ICMPv6 "no route" (ENETUNREACH at the sender).
pub(crate) fn wait_local_route(
    netns: Option<&str>,
    addr: std::net::Ipv6Addr,
    timeout: std::time::Duration,
) -> io::Result<()> {
    let start = std::time::Instant::now();
    let addr = addr.to_string();
    loop {
        let mut cmd = std::process::Command::new("ip");
        if let Some(ns) = netns {
            cmd.args(["-n", ns]);
        }
        let out = cmd
            .args(["-6", "route", "show", "table", "local", addr.as_str()])
            .stdin(std::process::Stdio::null())
            .output()?;
        if out.status.success() && !out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("address {addr} got no local route within {timeout:?}"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
