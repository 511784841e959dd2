//! Address and route changes on the host, as the kernel announces them
//! (rtnetlink multicast groups): a daemon that follows its host (the shim,
//! docs/PROTOCOL.md 6.5.2) looks again at once rather than at its next
//! one-second tick. The messages are not parsed: any of them is a reason
//! to look, and the look itself asks the kernel what it needs.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tracing::debug;

/// Start watching; the returned `Notify` is notified after each burst of
/// address, route or link messages. Must run inside the runtime.
pub fn watch() -> io::Result<Arc<Notify>> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_nl is plain old data; all zeroes is its "any" value.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    sa.nl_groups = (libc::RTMGRP_LINK
        | libc::RTMGRP_IPV4_IFADDR
        | libc::RTMGRP_IPV6_IFADDR
        | libc::RTMGRP_IPV4_ROUTE
        | libc::RTMGRP_IPV6_ROUTE) as u32;
    // SAFETY: `sa` is a valid sockaddr_nl and the length is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is an OwnedFd: open, and always the same descriptor
    // while the AsyncFd owns it.
    let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
    let changed = Arc::new(Notify::new());
    let tell = changed.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let Ok(mut ready) = fd.readable().await else {
                return;
            };
            // Drain what is there: one look per burst.
            loop {
                // SAFETY: `buf` is valid for its length; the fd is ours.
                let n = unsafe {
                    libc::recv(
                        fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n >= 0 {
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        ready.clear_ready();
                        break;
                    }
                    io::ErrorKind::Interrupted => continue,
                    // ENOBUFS: messages were lost, which is a change too.
                    _ if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                    _ => {
                        debug!(error = %e, "the netlink watch stopped; the once-a-second look stays");
                        return;
                    }
                }
            }
            tell.notify_one();
        }
    });
    Ok(changed)
}
