//! Batched UDP for the fast engine: one `recvmmsg` takes every query
//! already queued on the socket (up to the batch size), one `sendmmsg`
//! sends all their replies.
//!
//! Layer: shell (the only `unsafe` of the crate, two system calls and a
//! socket address read). Contract: [`QueryBatch::recv`] blocks until at
//! least one datagram arrives or the socket's read timeout passes, then
//! takes what else is queued without waiting (`MSG_WAITFORONE`);
//! [`QueryBatch::answer_each`] hands each datagram with its source to the
//! caller, who writes the reply or declines; [`QueryBatch::send`] sends the
//! replies, each to the source of its query. A datagram longer than
//! [`QUERY_BUF`] is cut to it, as hickory's UDP stream does. Buffers are
//! allocated once; the pointers the kernel sees are rebuilt for each call,
//! so the batch never holds a pointer into itself between calls.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use tracing::debug;

/// Bytes kept of one query (hickory-net's `MAX_RECEIVE_BUFFER_SIZE`).
pub const QUERY_BUF: usize = 4096;

/// Most datagrams one system call moves.
pub const MAX_BATCH: usize = 1024;

/// Queries received in one call and their replies.
pub(crate) struct QueryBatch {
    /// `slots` query buffers of [`QUERY_BUF`] octets, back to back.
    rx: Vec<u8>,
    rx_len: Vec<usize>,
    names: Vec<libc::sockaddr_storage>,
    name_len: Vec<libc::socklen_t>,
    /// Reply per slot; `reply[i]` is sent when `answered[i]`.
    reply: Vec<Vec<u8>>,
    answered: Vec<bool>,
    received: usize,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl std::fmt::Debug for QueryBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryBatch")
            .field("slots", &self.rx_len.len())
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

/// An all-zero C struct of the kinds used here (integers and nullable
/// pointers only).
fn zeroed<T: Zeroable>() -> T {
    // SAFETY: `Zeroable` is implemented only for libc structs made of
    // integers, integer arrays and raw pointers, for which all-zero bytes
    // are a valid value.
    unsafe { std::mem::zeroed() }
}

trait Zeroable {}
impl Zeroable for libc::sockaddr_storage {}
impl Zeroable for libc::mmsghdr {}

impl QueryBatch {
    /// A batch of `slots` queries (1..=[`MAX_BATCH`]).
    pub(crate) fn new(slots: usize) -> Self {
        let slots = slots.clamp(1, MAX_BATCH);
        Self {
            rx: vec![0; slots * QUERY_BUF],
            rx_len: vec![0; slots],
            names: (0..slots).map(|_| zeroed()).collect(),
            name_len: vec![0; slots],
            reply: (0..slots).map(|_| Vec::with_capacity(1232)).collect(),
            answered: vec![false; slots],
            received: 0,
            iov: Vec::with_capacity(slots),
            hdrs: Vec::with_capacity(slots),
        }
    }

    fn slots(&self) -> usize {
        self.rx_len.len()
    }

    /// Receives up to a batch of queries. Blocks like `recv_from` for the
    /// first (honouring the socket's read timeout), not for the rest.
    pub(crate) fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let slots = self.slots();
        self.received = 0;
        self.iov.clear();
        let base = self.rx.as_mut_ptr();
        for i in 0..slots {
            self.iov.push(libc::iovec {
                // SAFETY: i * QUERY_BUF + QUERY_BUF <= rx.len(), so the
                // pointer stays inside the allocation.
                iov_base: unsafe { base.add(i * QUERY_BUF) }.cast(),
                iov_len: QUERY_BUF,
            });
        }
        self.hdrs.clear();
        for i in 0..slots {
            let mut h: libc::mmsghdr = zeroed();
            h.msg_hdr.msg_name = (&raw mut self.names[i]).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &raw mut self.iov[i];
            h.msg_hdr.msg_iovlen = 1;
            self.hdrs.push(h);
        }
        // SAFETY: every header points at a live iovec and sockaddr_storage
        // of this batch with the lengths set above, and every iovec at its
        // own QUERY_BUF-octet slice of `rx`; none of these vectors is
        // touched until the call returns. A null timeout means "no
        // timeout" (the socket's SO_RCVTIMEO still applies to the first
        // datagram).
        let rc = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                slots as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = rc as usize;
        for i in 0..n {
            self.rx_len[i] = (self.hdrs[i].msg_len as usize).min(QUERY_BUF);
            self.name_len[i] = self.hdrs[i].msg_hdr.msg_namelen;
            self.answered[i] = false;
        }
        self.received = n;
        Ok(n)
    }

    /// Calls `reply(source, query, out)` for each received datagram; a
    /// `true` return sends `out` back to `source`. Datagrams whose source
    /// is not an IP socket address are skipped.
    pub(crate) fn answer_each(
        &mut self,
        mut reply: impl FnMut(SocketAddr, &[u8], &mut Vec<u8>) -> bool,
    ) {
        for i in 0..self.received {
            let Some(src) = socket_addr(&self.names[i], self.name_len[i]) else {
                continue;
            };
            let query = &self.rx[i * QUERY_BUF..i * QUERY_BUF + self.rx_len[i]];
            self.answered[i] = reply(src, query, &mut self.reply[i]);
        }
    }

    /// Sends every reply [`Self::answer_each`] asked for. A reply the
    /// kernel refuses is logged at debug and skipped; the rest still go.
    /// Returns how many were sent.
    pub(crate) fn send(&mut self, socket: &UdpSocket) -> usize {
        self.iov.clear();
        for i in 0..self.received {
            if self.answered[i] {
                self.iov.push(libc::iovec {
                    // The kernel only reads through this pointer.
                    iov_base: self.reply[i].as_ptr().cast_mut().cast(),
                    iov_len: self.reply[i].len(),
                });
            }
        }
        self.hdrs.clear();
        let mut k = 0;
        for i in 0..self.received {
            if self.answered[i] {
                let mut h: libc::mmsghdr = zeroed();
                h.msg_hdr.msg_name = (&raw mut self.names[i]).cast();
                h.msg_hdr.msg_namelen = self.name_len[i];
                h.msg_hdr.msg_iov = &raw mut self.iov[k];
                h.msg_hdr.msg_iovlen = 1;
                self.hdrs.push(h);
                k += 1;
            }
        }
        let total = self.hdrs.len();
        let (mut at, mut sent) = (0, 0);
        while at < total {
            // SAFETY: headers `at..total` point at live iovecs (into the
            // reply vectors, which are not touched until the call returns)
            // and at the source addresses recvmmsg filled in, with the
            // lengths it reported.
            let rc = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.hdrs.as_mut_ptr().add(at),
                    (total - at) as libc::c_uint,
                    0,
                )
            };
            if rc > 0 {
                at += rc as usize;
                sent += rc as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The first remaining message failed: skip it, send the rest.
            debug!(error = %e, "udp send failed");
            at += 1;
        }
        sent
    }
}

/// The socket address recvmmsg wrote, for IPv4 and IPv6.
fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for one.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bound(addr: &str) -> UdpSocket {
        let s = UdpSocket::bind(addr).expect("bind loopback");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Receives batches until `want` datagrams came in (the kernel may
    /// split them over several calls); answers each with its query
    /// reversed.
    fn echo_reversed(server: &UdpSocket, batch: &mut QueryBatch, want: usize) -> Vec<SocketAddr> {
        let mut sources = Vec::new();
        while sources.len() < want {
            let n = batch.recv(server).expect("recvmmsg");
            assert!(n >= 1 && n <= batch.slots());
            batch.answer_each(|src, q, out| {
                sources.push(src);
                out.clear();
                out.extend(q.iter().rev());
                true
            });
            assert_eq!(batch.send(server), n);
        }
        sources
    }

    #[test]
    fn batches_queries_from_several_sources_and_replies_to_each() {
        for (server_addr, client_addr) in [("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:0", "[::1]:0")] {
            let server = bound(server_addr);
            let to = server.local_addr().unwrap();
            let clients = [bound(client_addr), bound(client_addr)];
            for (k, c) in clients.iter().enumerate() {
                for j in 0..3u8 {
                    c.send_to(&[k as u8, j, 0xaa], to).unwrap();
                }
            }
            let mut batch = QueryBatch::new(4);
            let sources = echo_reversed(&server, &mut batch, 6);
            for c in &clients {
                let me = c.local_addr().unwrap();
                assert_eq!(
                    sources.iter().filter(|s| **s == me).count(),
                    3,
                    "{sources:?}"
                );
            }
            for (k, c) in clients.iter().enumerate() {
                let mut buf = [0u8; 16];
                for j in 0..3u8 {
                    let (n, from) = c.recv_from(&mut buf).unwrap();
                    assert_eq!(from, to);
                    assert_eq!(&buf[..n], &[0xaa, j, k as u8]);
                }
            }
        }
    }

    #[test]
    fn declined_datagrams_get_no_reply_and_long_ones_are_cut() {
        let server = bound("127.0.0.1:0");
        let to = server.local_addr().unwrap();
        let client = bound("127.0.0.1:0");
        client.send_to(&[1; 5000], to).unwrap();
        client.send_to(&[2; 10], to).unwrap();
        let mut batch = QueryBatch::new(1);
        let mut lens = Vec::new();
        while lens.len() < 2 {
            assert_eq!(batch.recv(&server).unwrap(), 1);
            batch.answer_each(|_, q, out| {
                lens.push(q.len());
                out.clear();
                out.push(q[0]);
                q[0] == 2
            });
            batch.send(&server);
        }
        assert_eq!(lens, vec![QUERY_BUF, 10]);
        let mut buf = [0u8; 16];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[2], "only the accepted datagram is answered");
    }

    #[test]
    fn read_timeout_is_reported_as_would_block() {
        let server = bound("127.0.0.1:0");
        server
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let mut batch = QueryBatch::new(8);
        let e = batch.recv(&server).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{e}"
        );
        assert_eq!(batch.send(&server), 0);
    }
}
