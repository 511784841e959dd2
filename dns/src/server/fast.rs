//! The fast UDP engine: one blocking thread per `SO_REUSEPORT` socket,
//! batches of queries in and replies out ([`super::mmsg`]), each answered
//! by the pure [`answer`] function.
//!
//! Layer: shell. Contract: every datagram is answered exactly as
//! hickory's UDP path would answer it through our handler (the same
//! message; only name compression differs;
//! `tests/engines.rs` checks it over real sockets), counted in [`Metrics`]
//! once, and never logged per query. Like hickory's server, it does not
//! answer sources it could not reply to (port 0, unspecified or broadcast
//! addresses); those count as dropped. The thread ends within the socket's
//! read timeout after `stop` is set.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use tracing::{debug, error};

use super::mmsg::QueryBatch;
use crate::answer::{Snapshot, Transport, answer};
use crate::metrics::Metrics;

/// Whether a reply to `src` can be sent at all (hickory-server's
/// `sanitize_src_address`).
pub(crate) fn can_reply_to(src: SocketAddr) -> bool {
    src.port() != 0
        && match src.ip() {
            IpAddr::V4(a) => !a.is_unspecified() && !a.is_broadcast(),
            IpAddr::V6(a) => !a.is_unspecified(),
        }
}

/// Serves `socket` until `stop`, `batch` queries per system call.
pub(crate) fn serve(
    socket: UdpSocket,
    state: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    batch: usize,
) {
    let mut cache = arc_swap::Cache::new(state);
    let mut queries = QueryBatch::new(batch);
    while !stop.load(Ordering::Relaxed) {
        match queries.recv(&socket) {
            Ok(_) => {}
            Err(e) if is_idle(&e) => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOTSOCK)) => {
                error!(error = %e, "udp socket gone; this worker stops");
                return;
            }
            Err(e) => {
                debug!(error = %e, "udp receive failed");
                continue;
            }
        }
        let snap = cache.load();
        queries.answer_each(|src, query, out| {
            if !can_reply_to(src) {
                metrics.record(Transport::Udp, None);
                return false;
            }
            let outcome = answer(snap, query, src.ip(), Transport::Udp, out);
            metrics.record(Transport::Udp, outcome.as_ref());
            outcome.is_some()
        });
        queries.send(&socket);
    }
}

/// Nothing arrived within the read timeout (or a signal interrupted the
/// wait): look at `stop` and wait again.
fn is_idle(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_that_cannot_be_answered() {
        for (src, ok) in [
            ("192.0.2.1:53", true),
            ("[2001:db8::1]:5353", true),
            ("192.0.2.1:0", false),
            ("0.0.0.0:53", false),
            ("255.255.255.255:53", false),
            ("[::]:53", false),
        ] {
            assert_eq!(can_reply_to(src.parse().unwrap()), ok, "{src}");
        }
    }
}
