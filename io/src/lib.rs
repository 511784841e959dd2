//! homeaddr-io: the I/O shell pieces the three daemons share, a TUN device
//! and a UDP tunnel socket, both read and written in batches.
//!
//! # Layer and contract
//!
//! Layer: **I/O shell**, below the binaries and beside the sans-IO engines of
//! `homeaddr-proto` (this crate does not depend on them). It moves bytes and
//! knows nothing of the protocol except that every tunnel datagram is
//! `header | packet | tag`: a [`HEADROOM`]-byte frame header (proto's
//! `FRAME_HEADER_LEN`), the inner packet and a [`TAILROOM`]-byte tag
//! (proto's `TAG_LEN`).
//!
//! Contract:
//! - No allocation and no task spawn per packet: every buffer is allocated
//!   once, in the batch types, and reused.
//! - Nothing is lost silently. What the layer cannot deliver is counted in
//!   [`TunCounters`] / [`UdpCounters`] and logged at most once a second;
//!   only errors that make a device or socket unusable are returned.
//! - Everything is async on tokio and takes `&self`, so a daemon runs two
//!   loops (TUN -> UDP, UDP -> TUN) as two tasks sharing `Arc`s, on a
//!   current-thread or small multi-thread runtime.
//! - Linux only: tun-rs offload and quinn-udp GSO/GRO are Linux features.
//!
//! # The two loops
//!
//! TUN -> UDP, zero copy:
//!
//! ```no_run
//! # use homeaddr_io::*;
//! # async fn f(tun: &TunDevice, udp: &UdpTunnel, peer: std::net::SocketAddr) -> std::io::Result<()> {
//! let mut batch = TunRecvBatch::new(tun.mtu());
//! loop {
//!     tun.recv_batch(&mut batch).await?;
//!     for mut p in batch.iter_mut() {
//!         // The engine looks at p.packet, fills header and tag and
//!         // decides; here: all to one peer.
//!         p.header_mut().copy_from_slice(&[0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
//!         p.tag_mut().fill(0);
//!         *p.destination = Some(peer);
//!     }
//!     udp.send_batch(&mut batch).await?; // GSO trains straight from the TUN buffer
//! }
//! # }
//! ```
//!
//! UDP -> TUN (one copy per packet into the TUN's buffers, see
//! [`TunSendBatch`] for why), or UDP -> UDP for forwarders:
//!
//! ```no_run
//! # use homeaddr_io::*;
//! # async fn f(tun: &TunDevice, udp: &UdpTunnel) -> std::io::Result<()> {
//! let mut rx = UdpRecvBatch::new(HEADROOM + usize::from(tun.mtu()) + TAILROOM);
//! let mut to_tun = TunSendBatch::new();
//! let mut forward = UdpSendBatch::new();
//! loop {
//!     udp.recv_batch(&mut rx).await?;
//!     for d in rx.iter_mut() {
//!         let end = d.data.len().saturating_sub(TAILROOM);
//!         let Some(inner) = d.data.get(HEADROOM..end) else { continue }; // engine: drop, count
//!         if to_tun.push(inner).is_err() {
//!             tun.send_batch(&mut to_tun).await?; // full: flush, then retry
//!             let _ = to_tun.push(inner);
//!         }
//!         // A forwarder would instead rewrite the frame in place (header
//!         // and tag) and forward.push(next_hop, d.data).
//!     }
//!     tun.send_batch(&mut to_tun).await?;
//!     udp.send_batch(&mut forward).await?;
//! }
//! # }
//! ```
//!
//! # Buffers
//!
//! - [`TunRecvBatch`]: [`TUN_BATCH`] slots of `HEADROOM + mtu + TAILROOM`
//!   bytes plus one 64 KiB buffer for the raw offload read. tun-rs splits
//!   each super-packet into the slots at offset `HEADROOM`; packets are then
//!   moved back to back, each with its header and tag room (a no-op for
//!   full-MTU segments), so consecutive packets to one peer are already a
//!   GSO train: header, packet, tag, header, packet, tag...
//! - [`UdpRecvBatch`]: [`RECV_MESSAGES`] buffers of
//!   [`MAX_GRO_SEGMENTS`]` x max_datagram` bytes, one `recvmmsg`; each GRO
//!   buffer is cut at its stride into datagrams.
//! - [`TunSendBatch`]: one 64 KiB-capacity buffer per packet with a zeroed
//!   virtio-net header in front, as tun-rs `send_multiple` needs for GRO.
//! - [`UdpSendBatch`]: datagrams copied back to back into one buffer.
//!
//! # Offload and the GSO cap
//!
//! [`TunDevice::create`] asks for TSO/USO offload and falls back to a plain
//! device (logged) if the kernel refuses. A TUN super-packet is up to 64 KiB;
//! with 32 bytes of header and tag per segment the train can exceed what one
//! UDP send carries, so trains are cut at
//! `min(max_gso_segments, (65535 - 48) / stride)` segments
//! ([`gso_segment_cap`]), e.g. 45 segments of 1452 bytes (16 + 1420 + 16)
//! at the default inner MTU. With offload the
//! TUN's `gso_max_size` is lowered to [`fit_gso_max_size`]`(mtu)` so that one
//! read still leaves in one send.
//!
//! # Errors and counters
//!
//! Packets lost inside the layer (unsplittable super-packets, refused
//! writes, failed sends) are counted in [`TunCounters`] / [`UdpCounters`];
//! `recv_batch` and `send_batch` return `Err` only when the device or socket
//! is unusable, so a daemon's loop can end on any `Err`. `recv_batch` is
//! cancel safe; `send_batch` is not (await it to the end).

mod counters;
mod error;
mod gso;
mod throttle;
mod tun;
mod udp;

pub use counters::{TunCounters, TunStats, UdpCounters, UdpStats};
pub use error::{PushError, TunError, UdpError};
pub use gso::{MAX_GSO_TRAIN_BYTES, gso_segment_cap};
pub use tun::{
    ADDRESS_READY_TIMEOUT, DEFAULT_TX_QUEUE_LEN, MAX_IP_PACKET, OutgoingPacket, TUN_BATCH,
    TunConfig, TunDevice, TunRecvBatch, TunSendBatch, fit_gso_max_size,
};
pub use udp::{
    DatagramBatch, MAX_DATAGRAM, MAX_GRO_SEGMENTS, RECV_MESSAGES, RecvDatagram,
    SOCKET_BUFFER_BYTES, SendOutcome, UdpRecvBatch, UdpSendBatch, UdpTunnel,
};

/// Bytes reserved before every packet read from a TUN for the frame
/// header; equal to `homeaddr_proto::wire::FRAME_HEADER_LEN`.
pub const HEADROOM: usize = 16;

/// Bytes reserved after every packet read from a TUN for the frame's tag;
/// equal to `homeaddr_proto::wire::TAG_LEN`.
pub const TAILROOM: usize = 16;

/// Keeps [`DatagramBatch`] implementable only here: the send path relies on
/// the layout invariants of the two batch types.
mod sealed {
    use crate::gso::OutDatagram;

    pub trait Sealed: Sync {
        /// The buffer the datagrams lie in.
        fn arena(&self) -> &[u8];
        /// Number of datagram slots (including dropped ones).
        fn datagram_count(&self) -> usize;
        /// Slot `index`: `None` if dropped.
        fn datagram(&self, index: usize) -> Option<OutDatagram>;
        /// Called after sending: the batch becomes empty.
        fn clear_sent(&mut self);
    }
}
