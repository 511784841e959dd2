//! Batched UDP for the tunnel: `recvmmsg` with GRO in, GSO trains out, on
//! quinn-udp's [`UdpSocketState`] over a non-blocking tokio socket.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use quinn_udp::{BATCH_SIZE, RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::counters::{UdpCounters, add};
use crate::error::{PushError, UdpError};
use crate::gso::{OutDatagram, Trains};
use crate::sealed::Sealed;
use crate::throttle::LogThrottle;

/// Socket buffer size requested for both directions (the kernel doubles it).
///
/// The default 208 KiB receive buffer is what makes user-space tunnels drop
/// under load (DATAPATH-NOTES fact 8).
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// Most datagrams the kernel coalesces into one GRO buffer
/// (`UDP_GRO_CNT_MAX` in net/ipv4/udp_offload.c).
pub const MAX_GRO_SEGMENTS: usize = 64;

/// Messages per `recvmmsg` (quinn-udp's `BATCH_SIZE`).
pub const RECV_MESSAGES: usize = BATCH_SIZE;

/// Largest UDP payload a datagram can have (IPv6 jumbograms aside).
pub const MAX_DATAGRAM: usize = 65_527;

/// A batch of outgoing datagrams that [`UdpTunnel::send_batch`] can send.
///
/// Implemented by [`UdpSendBatch`] (datagrams copied in) and
/// [`TunRecvBatch`](crate::TunRecvBatch) (packets read from a TUN, sent
/// in place with their tunnel header). Sealed.
pub trait DatagramBatch: Sealed {}

/// What one [`UdpTunnel::send_batch`] did. The same numbers are added to
/// [`UdpTunnel::counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOutcome {
    /// Datagrams the kernel accepted.
    pub sent: usize,
    /// `sendmsg` calls that succeeded.
    pub syscalls: usize,
    /// Datagrams lost to send errors (counted, logged at most once a second).
    pub dropped: usize,
}

/// A UDP tunnel endpoint: one socket with large buffers, GRO on receive and
/// GSO on send.
///
/// All methods take `&self`: one task may receive while another sends (share
/// it in an `Arc`).
#[derive(Debug)]
pub struct UdpTunnel {
    socket: UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    counters: UdpCounters,
    send_errors: LogThrottle,
}

impl UdpTunnel {
    /// Binds a socket to `addr` (IPv6 or IPv4) and prepares it for batching:
    /// 8 MiB buffers ([`SOCKET_BUFFER_BYTES`]), GRO, non-blocking.
    ///
    /// Must be called inside a tokio runtime. An IPv6 wildcard socket is
    /// dual-stack where the system allows it; IPv4 peers then appear as
    /// plain IPv4 addresses in received datagrams and may be sent to as such.
    pub fn bind(addr: SocketAddr) -> Result<UdpTunnel, UdpError> {
        let bind_err = |source| UdpError::Bind { addr, source };
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .map_err(bind_err)?;
        socket.bind(&addr.into()).map_err(bind_err)?;
        UdpTunnel::from_std(socket.into())
    }

    /// Takes over an already bound socket (for instance one created in
    /// another network namespace or passed in by a supervisor) and prepares
    /// it like [`UdpTunnel::bind`]. Must be called inside a tokio runtime.
    pub fn from_std(socket: std::net::UdpSocket) -> Result<UdpTunnel, UdpError> {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let local = socket.local_addr().map_err(|source| UdpError::Setup {
            addr: unspecified,
            source,
        })?;
        let setup_err = |source| UdpError::Setup {
            addr: local,
            source,
        };
        raise_socket_buffers(socket.as_raw_fd(), local);
        // Switches the socket to non-blocking (DATAPATH-NOTES fact 2) and
        // turns GRO on.
        let state = UdpSocketState::new((&socket).into()).map_err(setup_err)?;
        let socket = UdpSocket::from_std(socket).map_err(setup_err)?;
        debug!(
            %local,
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            "UDP tunnel socket ready"
        );
        Ok(UdpTunnel {
            socket,
            state,
            local,
            counters: UdpCounters::default(),
            send_errors: LogThrottle::new(Duration::from_secs(1)),
        })
    }

    /// The bound local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Segments per GSO send the kernel accepts (1 = no GSO). May drop to 1
    /// at run time if a route's device refuses segmentation.
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Datagrams per GRO buffer (1 = no GRO).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// The socket's receive and send buffer sizes, as the kernel reports
    /// them (twice the requested value).
    pub fn buffer_sizes(&self) -> io::Result<(usize, usize)> {
        let sock = socket2::SockRef::from(&self.socket);
        Ok((sock.recv_buffer_size()?, sock.send_buffer_size()?))
    }

    /// Live counters.
    pub fn counters(&self) -> &UdpCounters {
        &self.counters
    }

    /// Waits for datagrams and fills `batch` with as many as one `recvmmsg`
    /// returns (up to [`RECV_MESSAGES`] messages, each a GRO train of up to
    /// [`MAX_GRO_SEGMENTS`] datagrams). Returns the number of datagrams;
    /// iterate them with [`UdpRecvBatch::iter_mut`].
    ///
    /// Transient errors (an ICMP error reported on the socket) are counted
    /// in `rx_errors` and skipped; any other error is returned.
    /// Cancel safe: no datagram is lost if the future is dropped.
    pub async fn recv_batch(&self, batch: &mut UdpRecvBatch) -> io::Result<usize> {
        batch.clear();
        loop {
            let result = {
                let UdpRecvBatch {
                    buf, buf_len, meta, ..
                } = &mut *batch;
                let mut chunks = buf.chunks_exact_mut(*buf_len);
                let mut iovs: [IoSliceMut<'_>; RECV_MESSAGES] =
                    std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or(&mut [])));
                self.socket
                    .async_io(Interest::READABLE, || {
                        self.state
                            .recv((&self.socket).into(), &mut iovs, &mut meta[..])
                    })
                    .await
            };
            match result {
                Ok(messages) => {
                    batch.finish(messages);
                    add(&self.counters.rx_syscalls, 1);
                    add(&self.counters.rx_datagrams, batch.datagrams as u64);
                    add(&self.counters.rx_bytes, batch.bytes as u64);
                    return Ok(batch.datagrams);
                }
                Err(e) if is_transient_recv_error(&e) => {
                    add(&self.counters.rx_errors, 1);
                    debug!(local = %self.local, error = %e, "UDP receive error skipped");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends every datagram of `batch`, grouping consecutive datagrams to
    /// the same destination with equal length into GSO trains of at most
    /// [`gso_segment_cap`](crate::gso_segment_cap) segments. Waits for the
    /// socket to become writable when the kernel's buffer is full. A train
    /// the kernel refuses as a whole (`EMSGSIZE`, `EIO`, `EINVAL`) is resent
    /// datagram by datagram; datagrams that still fail are counted
    /// (`tx_errors`, `tx_dropped`) and reported in the outcome, never
    /// silently lost. The batch is empty afterwards.
    ///
    /// Errors only if the socket itself is unusable (`EBADF`, `ENOTSOCK`).
    ///
    /// Not cancel safe: dropping the future may leave part of the batch
    /// unsent (and the batch full); await it to the end.
    pub async fn send_batch<B: DatagramBatch>(&self, batch: &mut B) -> io::Result<SendOutcome> {
        let mut outcome = SendOutcome::default();
        let result = self.send_trains(&*batch, &mut outcome).await;
        batch.clear_sent();
        result.map(|()| outcome)
    }

    /// Sends one datagram (a control message): waits while the socket's
    /// buffer is full, returns the kernel's error otherwise (also counted).
    pub async fn send_to(&self, to: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        match self.send_train(to, datagram, None).await {
            Ok(()) => {
                self.count_sent(1, datagram.len(), 1);
                Ok(())
            }
            Err(e) => {
                add(&self.counters.tx_errors, 1);
                add(&self.counters.tx_dropped, 1);
                Err(e)
            }
        }
    }

    async fn send_trains<B: Sealed>(&self, batch: &B, out: &mut SendOutcome) -> io::Result<()> {
        let arena = batch.arena();
        let items = (0..batch.datagram_count()).map(|i| batch.datagram(i));
        for train in Trains::new(items, self.state.max_gso_segments()) {
            let bytes = &arena[train.start..train.end];
            let err = match self.send_train(train.to, bytes, train.segment_size()).await {
                Ok(()) => {
                    self.record_sent(out, train.segments, bytes.len());
                    continue;
                }
                Err(e) => e,
            };
            self.record_error(train.to, train.segments, &err);
            if is_fatal_send_error(&err) {
                self.record_dropped(out, train.segments);
                return Err(err);
            }
            if train.segments == 1 || !is_gso_refusal(&err) {
                self.record_dropped(out, train.segments);
                continue;
            }
            // The route refused this train as a whole: send its datagrams
            // one by one (quinn-udp has already turned GSO off for EIO and
            // EINVAL, so the next batch is planned without it).
            for datagram in bytes.chunks(train.stride) {
                match self.send_train(train.to, datagram, None).await {
                    Ok(()) => self.record_sent(out, 1, datagram.len()),
                    Err(e) => {
                        self.record_error(train.to, 1, &e);
                        self.record_dropped(out, 1);
                        if is_fatal_send_error(&e) {
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn send_train(
        &self,
        to: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let transmit = Transmit {
            destination: self.wire_destination(to),
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        self.socket
            .async_io(Interest::WRITABLE, || {
                self.state.try_send((&self.socket).into(), &transmit)
            })
            .await
    }

    /// An IPv6 socket reaches IPv4 peers through v4-mapped addresses.
    fn wire_destination(&self, to: SocketAddr) -> SocketAddr {
        match (self.local, to) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
                SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0).into()
            }
            _ => to,
        }
    }

    fn count_sent(&self, datagrams: usize, bytes: usize, syscalls: usize) {
        add(&self.counters.tx_datagrams, datagrams as u64);
        add(&self.counters.tx_bytes, bytes as u64);
        add(&self.counters.tx_syscalls, syscalls as u64);
    }

    fn record_sent(&self, out: &mut SendOutcome, datagrams: usize, bytes: usize) {
        self.count_sent(datagrams, bytes, 1);
        out.sent += datagrams;
        out.syscalls += 1;
    }

    fn record_dropped(&self, out: &mut SendOutcome, datagrams: usize) {
        add(&self.counters.tx_dropped, datagrams as u64);
        out.dropped += datagrams;
    }

    fn record_error(&self, to: SocketAddr, datagrams: usize, err: &io::Error) {
        add(&self.counters.tx_errors, 1);
        if self.send_errors.allow() {
            warn!(
                local = %self.local, %to, datagrams, error = %err,
                "UDP send failed (further errors this second are only counted in tx_errors)"
            );
        }
    }
}

/// A reusable receive buffer for [`UdpTunnel::recv_batch`]: one GRO-sized
/// buffer per `recvmmsg` message, allocated once.
#[derive(Debug)]
pub struct UdpRecvBatch {
    buf: Box<[u8]>,
    buf_len: usize,
    meta: [RecvMeta; RECV_MESSAGES],
    messages: usize,
    datagrams: usize,
    bytes: usize,
}

/// One received datagram.
#[derive(Debug)]
#[non_exhaustive]
pub struct RecvDatagram<'a> {
    /// The sender (IPv4 peers of a dual-stack socket appear as IPv4).
    pub from: SocketAddr,
    /// The local address it was sent to, when the kernel reports it.
    pub local_ip: Option<IpAddr>,
    /// The whole UDP payload, tunnel header included. Mutable so that a
    /// forwarder can rewrite the header in place.
    pub data: &'a mut [u8],
}

impl UdpRecvBatch {
    /// A batch whose buffers hold [`MAX_GRO_SEGMENTS`] datagrams of up to
    /// `max_datagram` bytes each (DATAPATH-NOTES fact 3), and never less than
    /// one maximum-size datagram, so nothing is truncated. For the tunnel,
    /// `max_datagram` is the tunnel header plus the largest inner MTU of any
    /// peer. Memory is reserved, not touched: about 3 MiB for 1500-byte
    /// datagrams.
    pub fn new(max_datagram: usize) -> UdpRecvBatch {
        let buf_len = (MAX_GRO_SEGMENTS * max_datagram.max(1)).max(MAX_DATAGRAM);
        UdpRecvBatch {
            buf: vec![0; buf_len * RECV_MESSAGES].into_boxed_slice(),
            buf_len,
            meta: [RecvMeta::default(); RECV_MESSAGES],
            messages: 0,
            datagrams: 0,
            bytes: 0,
        }
    }

    /// Datagrams in the batch (after splitting GRO trains).
    pub fn len(&self) -> usize {
        self.datagrams
    }

    /// True if the batch holds no datagram.
    pub fn is_empty(&self) -> bool {
        self.datagrams == 0
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.messages = 0;
        self.datagrams = 0;
        self.bytes = 0;
    }

    /// The datagrams, in arrival order, GRO trains split by their stride.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = RecvDatagram<'_>> + '_ {
        let buf_len = self.buf_len;
        self.buf
            .chunks_exact_mut(buf_len)
            .zip(&self.meta[..self.messages])
            .flat_map(|(buf, meta)| {
                let (len, stride) = message_geometry(meta, buf.len());
                let (from, local_ip) = (meta.addr, meta.dst_ip);
                buf[..len].chunks_mut(stride).map(move |data| RecvDatagram {
                    from,
                    local_ip,
                    data,
                })
            })
    }

    /// Records what `recvmmsg` returned: canonical addresses, totals.
    fn finish(&mut self, messages: usize) {
        self.messages = messages.min(RECV_MESSAGES);
        self.datagrams = 0;
        self.bytes = 0;
        for meta in &mut self.meta[..self.messages] {
            meta.addr = canonical(meta.addr);
            meta.dst_ip = meta.dst_ip.map(|ip| ip.to_canonical());
            let (len, stride) = message_geometry(meta, self.buf_len);
            self.datagrams += len.div_ceil(stride);
            self.bytes += len;
        }
    }
}

/// Bytes and stride of one received message, safe to slice with: `len`
/// within the buffer, `stride` non-zero.
fn message_geometry(meta: &RecvMeta, buf_len: usize) -> (usize, usize) {
    let len = meta.len.min(buf_len);
    let stride = if meta.stride == 0 || meta.stride > len {
        len.max(1)
    } else {
        meta.stride
    };
    (len, stride)
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Datagrams copied into one contiguous buffer, ready for
/// [`UdpTunnel::send_batch`]. Used for forwarded datagrams and control
/// messages; consecutive pushes to one destination with equal length leave
/// as one GSO train.
#[derive(Debug)]
pub struct UdpSendBatch {
    buf: Box<[u8]>,
    used: usize,
    items: Vec<OutDatagram>,
    max_items: usize,
}

impl Default for UdpSendBatch {
    fn default() -> Self {
        UdpSendBatch::new()
    }
}

impl UdpSendBatch {
    /// Room for 256 datagrams and 512 KiB.
    pub fn new() -> UdpSendBatch {
        UdpSendBatch::with_capacity(256, 512 << 10)
    }

    /// Room for `datagrams` datagrams totalling `bytes` bytes.
    pub fn with_capacity(datagrams: usize, bytes: usize) -> UdpSendBatch {
        UdpSendBatch {
            buf: vec![0; bytes].into_boxed_slice(),
            used: 0,
            items: Vec::with_capacity(datagrams),
            max_items: datagrams,
        }
    }

    /// Copies one datagram (tunnel header included) into the batch.
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) -> Result<(), PushError> {
        let end = self.reserve(datagram.len())?;
        self.buf[self.used..end].copy_from_slice(datagram);
        self.commit(to, datagram.len());
        Ok(())
    }

    /// Lets `write` build a datagram in place, in up to `max_len` bytes of
    /// the batch: `write` returns the destination and the length it wrote,
    /// or `None` for nothing to send (then nothing is added). Fits
    /// `poll_transmit(now, buf)`-style engines. Returns whether a datagram
    /// was added.
    pub fn push_with(
        &mut self,
        max_len: usize,
        write: impl FnOnce(&mut [u8]) -> Option<(SocketAddr, usize)>,
    ) -> Result<bool, PushError> {
        let end = self.reserve(max_len)?;
        match write(&mut self.buf[self.used..end]) {
            Some((to, len)) => {
                debug_assert!(len <= max_len, "push_with: wrote {len} > {max_len} bytes");
                self.commit(to, len.min(max_len));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Datagrams in the batch.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if the batch holds no datagram.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.items.clear();
        self.used = 0;
    }

    fn reserve(&self, len: usize) -> Result<usize, PushError> {
        let max = self.buf.len().min(MAX_DATAGRAM);
        if len > max {
            return Err(PushError::TooLarge { len, max });
        }
        if self.items.len() == self.max_items || self.buf.len() - self.used < len {
            return Err(PushError::Full);
        }
        Ok(self.used + len)
    }

    fn commit(&mut self, to: SocketAddr, len: usize) {
        self.items.push(OutDatagram {
            to,
            offset: self.used,
            len,
        });
        self.used += len;
    }
}

impl Sealed for UdpSendBatch {
    fn arena(&self) -> &[u8] {
        &self.buf[..self.used]
    }
    fn datagram_count(&self) -> usize {
        self.items.len()
    }
    fn datagram(&self, index: usize) -> Option<OutDatagram> {
        self.items.get(index).copied()
    }
    fn clear_sent(&mut self) {
        self.clear();
    }
}

impl DatagramBatch for UdpSendBatch {}

/// Raises both socket buffers to [`SOCKET_BUFFER_BYTES`]: the `FORCE`
/// variants ignore `net.core.[rw]mem_max` (read-only inside namespaces here)
/// but need `CAP_NET_ADMIN`; without it the plain options get what the
/// system limit allows.
fn raise_socket_buffers(fd: RawFd, local: SocketAddr) {
    let options = [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, "receive"),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, "send"),
    ];
    for (forced, plain, which) in options {
        if let Err(e) = set_int_option(fd, forced, SOCKET_BUFFER_BYTES) {
            debug!(
                %local, error = %e,
                "cannot force the UDP {which} buffer (not root?); asking within net.core limits"
            );
            if let Err(e) = set_int_option(fd, plain, SOCKET_BUFFER_BYTES) {
                warn!(%local, error = %e, "cannot raise the UDP {which} buffer; expect drops under load");
            }
        }
    }
}

fn set_int_option(fd: RawFd, name: libc::c_int, value: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is an open socket owned by the caller for the duration of
    // the call; the option value is a properly sized and aligned c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Errors that say something about one peer, not about the socket: ICMP
/// errors the kernel reports on the next call.
fn is_transient_recv_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::ECONNRESET
                | libc::ENETUNREACH
                | libc::EHOSTUNREACH
                | libc::ENETDOWN
                | libc::EHOSTDOWN
        )
    )
}

/// The socket itself is gone; nothing more can be sent.
fn is_fatal_send_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOTSOCK))
}

/// The kernel refused the train as a train; its datagrams may pass alone.
fn is_gso_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMSGSIZE | libc::EIO | libc::EINVAL)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 7, 1], port))
    }

    #[test]
    fn send_batch_packs_datagrams_back_to_back() {
        let mut b = UdpSendBatch::with_capacity(4, 100);
        b.push(addr(1), &[1; 30]).unwrap();
        b.push(addr(1), &[2; 30]).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(
            b.datagram(1),
            Some(OutDatagram {
                to: addr(1),
                offset: 30,
                len: 30
            })
        );
        assert_eq!(&b.arena()[30..60], &[2; 30]);
        let trains: Vec<_> =
            Trains::new((0..b.datagram_count()).map(|i| b.datagram(i)), 64).collect();
        assert_eq!(trains.len(), 1);
        assert_eq!(trains[0].segments, 2);
    }

    #[test]
    fn send_batch_reports_full_and_too_large() {
        let mut b = UdpSendBatch::with_capacity(2, 100);
        assert_eq!(
            b.push(addr(1), &[0; 101]),
            Err(PushError::TooLarge { len: 101, max: 100 })
        );
        b.push(addr(1), &[0; 60]).unwrap();
        assert_eq!(b.push(addr(1), &[0; 41]), Err(PushError::Full));
        b.push(addr(1), &[0; 40]).unwrap();
        assert_eq!(b.push(addr(1), &[]), Err(PushError::Full));
        b.clear();
        assert!(b.is_empty());
        b.push(addr(1), &[0; 100]).unwrap();
    }

    #[test]
    fn push_with_builds_in_place_or_adds_nothing() {
        let mut b = UdpSendBatch::with_capacity(4, 100);
        let added = b
            .push_with(50, |buf| {
                buf[..3].copy_from_slice(b"abc");
                Some((addr(7), 3))
            })
            .unwrap();
        assert!(added);
        assert_eq!(b.push_with(50, |_| None), Ok(false));
        assert_eq!(b.len(), 1);
        assert_eq!(b.arena(), b"abc");
    }

    #[test]
    fn recv_batch_splits_gro_trains_by_stride() {
        let mut b = UdpRecvBatch::new(1000);
        let buf_len = b.buf_len;
        // Message 0: a GRO train of 3 datagrams (100, 100, 40 bytes).
        for (i, byte) in b.buf[..240].iter_mut().enumerate() {
            *byte = (i / 100) as u8;
        }
        b.meta[0].addr = "[::ffff:198.18.7.9]:4790".parse().unwrap();
        b.meta[0].len = 240;
        b.meta[0].stride = 100;
        // Message 1: one datagram.
        b.buf[buf_len..buf_len + 5].copy_from_slice(b"hello");
        b.meta[1].addr = "[2001:db8::1]:9".parse().unwrap();
        b.meta[1].len = 5;
        b.meta[1].stride = 5;
        b.finish(2);
        assert_eq!(b.len(), 4);
        let got: Vec<(SocketAddr, Vec<u8>)> =
            b.iter_mut().map(|d| (d.from, d.data.to_vec())).collect();
        assert_eq!(got.len(), 4);
        // IPv4-mapped senders come out as IPv4.
        assert_eq!(got[0].0, "198.18.7.9:4790".parse::<SocketAddr>().unwrap());
        assert_eq!(got[0].1, vec![0; 100]);
        assert_eq!(got[1].1, vec![1; 100]);
        assert_eq!(got[2].1, vec![2; 40]);
        assert_eq!(got[3].1, b"hello");
        b.clear();
        assert_eq!(b.iter_mut().count(), 0);
    }

    #[test]
    fn recv_buffers_hold_a_full_gro_train() {
        let b = UdpRecvBatch::new(1452);
        assert!(b.buf_len >= MAX_GRO_SEGMENTS * 1452);
        let small = UdpRecvBatch::new(100);
        assert!(small.buf_len >= MAX_DATAGRAM);
    }

    #[test]
    fn geometry_never_panics_on_odd_metadata() {
        let mut meta = RecvMeta::default();
        meta.len = 10;
        meta.stride = 0;
        assert_eq!(message_geometry(&meta, 100), (10, 10));
        meta.len = 0;
        assert_eq!(message_geometry(&meta, 100), (0, 1));
        meta.len = 500;
        meta.stride = 100;
        assert_eq!(message_geometry(&meta, 300), (300, 100));
    }

    #[tokio::test]
    async fn gso_batch_round_trips_over_loopback() {
        let a = UdpTunnel::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = UdpTunnel::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = b.local_addr();
        let mut out = UdpSendBatch::with_capacity(200, 200 * 1500);
        let mut expected = Vec::new();
        // 64 full-size datagrams (GSO trains), then mixed sizes.
        for i in 0..64u32 {
            let mut d = vec![0u8; 1452];
            d[..4].copy_from_slice(&i.to_be_bytes());
            expected.push(d);
        }
        for i in 64..100u32 {
            let mut d = vec![0xAB; 40 + (i as usize * 7) % 1400];
            d[..4].copy_from_slice(&i.to_be_bytes());
            expected.push(d);
        }
        for d in &expected {
            out.push(to, d).unwrap();
        }
        let outcome = a.send_batch(&mut out).await.unwrap();
        assert!(out.is_empty());
        assert_eq!(outcome.sent, 100);
        assert_eq!(outcome.dropped, 0);
        if a.max_gso_segments() > 1 {
            assert!(outcome.syscalls < 100, "GSO did not batch: {outcome:?}");
        }

        let mut rx = UdpRecvBatch::new(1452);
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let n = tokio::time::timeout(Duration::from_secs(5), b.recv_batch(&mut rx))
                .await
                .expect("datagrams did not arrive")
                .unwrap();
            assert!(n > 0);
            for d in rx.iter_mut() {
                assert_eq!(d.from, a.local_addr());
                got.push(d.data.to_vec());
            }
        }
        assert_eq!(got, expected);
        let (tx, rx_stats) = (a.counters().snapshot(), b.counters().snapshot());
        assert_eq!(tx.tx_datagrams, 100);
        assert_eq!(tx.tx_dropped, 0);
        assert_eq!(rx_stats.rx_datagrams, 100);
    }

    #[tokio::test]
    async fn send_to_reaches_an_ipv4_peer_from_a_dual_stack_socket() {
        let v6 = match UdpTunnel::bind("[::]:0".parse().unwrap()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipping: no IPv6 here ({e})");
                return;
            }
        };
        let v4 = UdpTunnel::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = SocketAddr::from(([127, 0, 0, 1], v4.local_addr().port()));
        v6.send_to(to, b"ctl").await.unwrap();
        let mut rx = UdpRecvBatch::new(100);
        tokio::time::timeout(Duration::from_secs(5), v4.recv_batch(&mut rx))
            .await
            .expect("datagram did not arrive")
            .unwrap();
        let d = rx.iter_mut().next().unwrap();
        assert_eq!(d.data, b"ctl");
        assert_eq!(d.from.port(), v6.local_addr().port());
        // Replies to the dual-stack socket come back as plain IPv4.
        v4.send_to(
            SocketAddr::from(([127, 0, 0, 1], v6.local_addr().port())),
            b"re",
        )
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), v6.recv_batch(&mut rx))
            .await
            .expect("reply did not arrive")
            .unwrap();
        let d = rx.iter_mut().next().unwrap();
        assert!(d.from.is_ipv4(), "{}", d.from);
    }
}
