//! The TUN side: a tun-rs device with TSO/GRO offload when the kernel
//! accepts it, read and written in batches.

use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use tracing::{debug, info, warn};
use tun_rs::{AsyncDevice, DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

use crate::counters::{TunCounters, add};
use crate::error::{PushError, TunError};
use crate::gso::OutDatagram;
use crate::gso::gso_segment_cap;
use crate::sealed::Sealed;
use crate::throttle::LogThrottle;
use crate::udp::DatagramBatch;
use crate::{HEADROOM, TAILROOM};

/// Packets per TUN batch: tun-rs's `IDEAL_BATCH_SIZE` (128). One offload
/// read is split into at most this many packets; a super-packet with more
/// segments (an MSS below ~512 bytes) is lost and counted in `rx_errors`.
pub const TUN_BATCH: usize = IDEAL_BATCH_SIZE;

/// Largest IP packet a TUN hands over or accepts (with offload, a
/// super-packet).
pub const MAX_IP_PACKET: usize = 65_535;

/// Default transmit queue length: one packet per syscall loses packets in
/// the kernel's default 500-packet queue (DATAPATH-NOTES fact 7).
pub const DEFAULT_TX_QUEUE_LEN: u32 = 5000;

/// A `gso_max_size` for a TUN of `mtu` under which one offload read splits
/// into at most [`gso_segment_cap`]`(64, HEADROOM + mtu + TAILROOM)`
/// packets, so it
/// leaves in one UDP GSO send (DATAPATH-NOTES: +5-10 % throughput).
///
/// A super-packet of `L` bytes with `h` header bytes splits into
/// `ceil((L - h) / (mtu - h))` packets; `cap * (mtu - 72) + 72` keeps that at
/// `cap` for TCP headers of 60 to 72 bytes (IPv6 + TCP, with or without
/// timestamps). Smaller MSSs (clamping) give more, smaller segments: then a
/// read may take two sends, which is only slower.
pub fn fit_gso_max_size(mtu: u16) -> u32 {
    const HEADERS: usize = 72;
    let mtu = usize::from(mtu);
    let cap = gso_segment_cap(64, HEADROOM + mtu + TAILROOM);
    let size = (cap * mtu.saturating_sub(HEADERS) + HEADERS).clamp(mtu, MAX_IP_PACKET + 1);
    u32::try_from(size).unwrap_or(u32::MAX)
}

/// `ip link set dev NAME gso_max_size SIZE` over rtnetlink.
fn set_gso_max_size(name: &str, size: u32) -> io::Result<()> {
    // include/uapi/linux/rtnetlink.h, netlink.h, if_link.h.
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const NLMSG_ERROR: u16 = 2;
    const IFLA_GSO_MAX_SIZE: u16 = 41;

    let c_name = std::ffi::CString::new(name)?;
    // SAFETY: `c_name` is a valid NUL-terminated string for the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    // nlmsghdr (16) + ifinfomsg (16) + rtattr (4) + u32, host byte order.
    let mut req = [0u8; 40];
    req[0..4].copy_from_slice(&40u32.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNSPEC as u8;
    req[20..24].copy_from_slice(&index.to_ne_bytes());
    req[32..34].copy_from_slice(&8u16.to_ne_bytes());
    req[34..36].copy_from_slice(&IFLA_GSO_MAX_SIZE.to_ne_bytes());
    req[36..40].copy_from_slice(&size.to_ne_bytes());

    let sock = socket2::Socket::new(
        socket2::Domain::from(libc::AF_NETLINK),
        socket2::Type::RAW,
        Some(socket2::Protocol::from(libc::NETLINK_ROUTE)),
    )?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    sock.send(&req)?;
    let mut reply = [0u8; 256];
    let n = io::Read::read(&mut &sock, &mut reply)?;
    // The ack is an NLMSG_ERROR whose error field (after the 16-byte
    // header) is 0 or a negative errno.
    if n < 20 || u16::from_ne_bytes([reply[4], reply[5]]) != NLMSG_ERROR {
        return Err(io::Error::other("unexpected rtnetlink reply"));
    }
    match i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]) {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(-errno)),
    }
}

/// Stops the kernel from sending packets of its own into the TUN of `name`
/// (still down), so that an engine reads only traffic: a TUN is a
/// point-to-point link to the engine, with no routers or neighbours.
///
/// - `addr_gen_mode = 1`: no link-local address, hence no router
///   solicitations (sent from one) at up.
/// - `forwarding = 0` on this interface only (host behaviour; forwarding
///   through it follows `all.forwarding`): it leaves the all-routers
///   groups, which a router joins and reports in MLD at up. Under MLDv1
///   leaving a group never reported sends nothing (MLDv2 would queue a
///   leave report for the up), so `force_mld_version` is 1 for the change.
///
/// Best effort: a sysctl that cannot be set only leaves the noise (counted
/// by the engines as `not_tunnelled` drops). Writing `all.forwarding`
/// again later re-enables forwarding here (the kernel copies it to every
/// interface), and with it the MLD reports.
fn quiet_ipv6(name: &str) {
    let conf = format!("/proc/sys/net/ipv6/conf/{name}");
    let set = |key: &str, value: &str| {
        std::fs::write(format!("{conf}/{key}"), value).inspect_err(|e| {
            warn!(tun = %name, key, value, error = %e, "cannot set an IPv6 sysctl of the TUN: \
                  the kernel may send MLD reports or router solicitations into it (counted as not_tunnelled drops)")
        })
    };
    if !std::path::Path::new(&conf).exists() {
        // IPv6 is off on the device (an MTU below 1280): nothing to quiet.
        return;
    }
    let _ = set("addr_gen_mode", "1");
    let read = |key: &str| std::fs::read_to_string(format!("{conf}/{key}")).ok();
    if read("forwarding").is_some_and(|v| v.trim() != "0") {
        let mld = read("force_mld_version").unwrap_or_else(|| "0".into());
        if set("force_mld_version", "1").is_ok() {
            let _ = set("forwarding", "0");
            let _ = set("force_mld_version", mld.trim());
        }
    }
}

/// Longest time [`TunDevice::create`] waits for its IPv6 addresses to leave
/// the tentative state.
pub const ADDRESS_READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Waits until a UDP socket can bind to every address (tentative addresses
/// refuse with `EADDRNOTAVAIL`).
fn wait_until_usable(name: &str, addresses: &[(Ipv6Addr, u8)]) {
    let deadline = std::time::Instant::now() + ADDRESS_READY_TIMEOUT;
    for &(address, _) in addresses {
        loop {
            match std::net::UdpSocket::bind((address, 0)) {
                Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {
                    if std::time::Instant::now() >= deadline {
                        warn!(
                            tun = %name, %address,
                            "address still tentative after {ADDRESS_READY_TIMEOUT:?}; \
                             binding to it may fail for a while"
                        );
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                // Bound (dropped at once), or an error that waiting won't fix.
                _ => break,
            }
        }
    }
}

/// How to create a [`TunDevice`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunConfig {
    /// Interface name (at most 15 bytes); empty lets the kernel pick `tunN`.
    pub name: String,
    /// MTU of the inner packets: the path MTU minus the tunnel overhead.
    pub mtu: u16,
    /// Transmit queue length, see [`DEFAULT_TX_QUEUE_LEN`].
    pub tx_queue_len: u32,
    /// IPv6 addresses with prefix length to put on the interface.
    pub ipv6_addresses: Vec<(Ipv6Addr, u8)>,
    /// Ask for TSO/GRO offload (virtio-net header on every read and write).
    /// If the kernel refuses it the device falls back to one packet per
    /// read, with a log line; [`TunDevice::offload`] tells which one runs.
    pub offload: bool,
    /// Largest super-packet the kernel hands to the TUN with offload
    /// (`ip link set DEV gso_max_size N`). `None`: [`fit_gso_max_size`]`(mtu)`,
    /// so that one TUN read leaves in one UDP GSO send.
    pub gso_max_size: Option<u32>,
}

impl TunConfig {
    /// A device named `name` with `mtu`, offload on, the default queue
    /// length and no address.
    pub fn new(name: impl Into<String>, mtu: u16) -> TunConfig {
        TunConfig {
            name: name.into(),
            mtu,
            tx_queue_len: DEFAULT_TX_QUEUE_LEN,
            ipv6_addresses: Vec::new(),
            offload: true,
            gso_max_size: None,
        }
    }

    /// Adds an IPv6 address (TUN devices do no duplicate address detection).
    pub fn with_ipv6(mut self, address: Ipv6Addr, prefix_len: u8) -> TunConfig {
        self.ipv6_addresses.push((address, prefix_len));
        self
    }

    /// Sets whether to ask for offload.
    pub fn with_offload(mut self, offload: bool) -> TunConfig {
        self.offload = offload;
        self
    }

    /// Sets the offload super-packet limit (see [`TunConfig::gso_max_size`]).
    pub fn with_gso_max_size(mut self, gso_max_size: u32) -> TunConfig {
        self.gso_max_size = Some(gso_max_size);
        self
    }

    /// Sets the transmit queue length.
    pub fn with_tx_queue_len(mut self, tx_queue_len: u32) -> TunConfig {
        self.tx_queue_len = tx_queue_len;
        self
    }

    fn builder(&self, offload: bool) -> DeviceBuilder {
        // Down until `quiet_ipv6` has run: the kernel's MLD and router
        // solicitations start when the link comes up.
        let mut builder = DeviceBuilder::new().mtu(self.mtu).enable(false).with(|b| {
            b.offload(offload).tx_queue_len(self.tx_queue_len);
        });
        if !self.name.is_empty() {
            builder = builder.name(self.name.clone());
        }
        for &(address, prefix_len) in &self.ipv6_addresses {
            builder = builder.ipv6(address, prefix_len);
        }
        builder
    }
}

/// A layer-3 TUN device (IP packets, no link header), up and configured.
///
/// All methods take `&self`: one task may read while another writes. The
/// device disappears when the value is dropped.
pub struct TunDevice {
    dev: AsyncDevice,
    name: String,
    mtu: u16,
    offload: bool,
    counters: TunCounters,
    errors: LogThrottle,
}

impl std::fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunDevice")
            .field("name", &self.name)
            .field("mtu", &self.mtu)
            .field("offload", &self.offload)
            .finish_non_exhaustive()
    }
}

impl TunDevice {
    /// Creates the device, sets MTU, queue length and addresses, keeps the
    /// kernel from sending its own IPv6 control packets into it (no
    /// link-local address, no router role: see `quiet_ipv6`) and brings it
    /// up. With `config.offload` it first asks for TSO/USO offload and, if
    /// the kernel refuses, logs why and creates a plain device.
    ///
    /// Returns once the addresses can be bound to: the kernel marks new IPv6
    /// addresses tentative until its address work has run (no duplicate
    /// address detection on a TUN, but still asynchronous), which can take a
    /// few milliseconds; `create` blocks the thread for that long, at most
    /// [`ADDRESS_READY_TIMEOUT`], then logs a warning and returns anyway.
    ///
    /// Must be called inside a tokio runtime. The device lives in the network
    /// namespace of the calling thread.
    pub fn create(config: &TunConfig) -> Result<TunDevice, TunError> {
        let create_err = |source| TunError::Create {
            name: config.name.clone(),
            source,
        };
        let (dev, offload) = if config.offload {
            match config.builder(true).build_async() {
                Ok(dev) => (dev, true),
                Err(e) => {
                    warn!(
                        name = %config.name, error = %e,
                        "the kernel refused TUN offload; falling back to one packet per read \
                         (expect several times less throughput)"
                    );
                    (
                        config.builder(false).build_async().map_err(create_err)?,
                        false,
                    )
                }
            }
        } else {
            (
                config.builder(false).build_async().map_err(create_err)?,
                false,
            )
        };
        let name = dev.name().map_err(create_err)?;
        quiet_ipv6(&name);
        dev.enabled(true).map_err(create_err)?;
        let mut gso_max_size = None;
        if offload {
            let size = config
                .gso_max_size
                .unwrap_or_else(|| fit_gso_max_size(config.mtu));
            match set_gso_max_size(&name, size) {
                Ok(()) => gso_max_size = Some(size),
                Err(e) => warn!(
                    tun = %name, size, error = %e,
                    "cannot set gso_max_size; TUN reads may take two UDP sends"
                ),
            }
        }
        wait_until_usable(&name, &config.ipv6_addresses);
        info!(
            %name, mtu = config.mtu, offload, udp_offload = dev.udp_gso(), ?gso_max_size,
            tx_queue_len = config.tx_queue_len, "TUN device up"
        );
        Ok(TunDevice {
            dev,
            name,
            mtu: config.mtu,
            offload,
            counters: TunCounters::default(),
            errors: LogThrottle::new(Duration::from_secs(1)),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MTU the device was created with.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// True if the device runs with TSO/GRO offload (virtio-net headers,
    /// super-packets split on read and coalesced on write).
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Live counters.
    pub fn counters(&self) -> &TunCounters {
        &self.counters
    }

    /// Waits for packets and reads a batch into `batch`: with offload, one
    /// read split into its segments (equal-sized but the last); without, one
    /// blocking read followed by non-blocking reads while packets are queued.
    /// Returns the number of packets (at least 1).
    ///
    /// Every packet is preceded in the batch by [`HEADROOM`] bytes for the
    /// tunnel header and followed by [`TAILROOM`] bytes for its tag, and
    /// these datagrams lie back to back, so that the batch can go
    /// to [`UdpTunnel::send_batch`](crate::UdpTunnel::send_batch) without a
    /// copy. Every packet starts with no destination (dropped if sent).
    ///
    /// Super-packets tun-rs cannot split are counted in `rx_errors` and
    /// skipped. Errors only if the device is unusable; also if `batch` was
    /// made for a smaller MTU than the device's.
    ///
    /// Cancel safe (usable in `select!`): a read happens only inside a poll
    /// that then returns it.
    pub async fn recv_batch(&self, batch: &mut TunRecvBatch) -> io::Result<usize> {
        if batch.mtu < usize::from(self.mtu) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "TunRecvBatch holds {}-byte packets but TUN {} has MTU {}: \
                     make it with TunRecvBatch::new(device.mtu())",
                    batch.mtu, self.name, self.mtu
                ),
            ));
        }
        batch.clear();
        if self.offload {
            loop {
                match self.recv_offload(batch).await {
                    Ok(n) if n > 0 => break,
                    Ok(_) => {}
                    // tun-rs reports unsplittable super-packets as errors
                    // without an OS error code; the device is fine.
                    Err(e) if e.raw_os_error().is_none() => {
                        add(&self.counters.rx_errors, 1);
                        if self.errors.allow() {
                            warn!(tun = %self.name, error = %e, "TUN read lost (counted in rx_errors)");
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        } else {
            self.recv_plain(batch).await?;
        }
        add(&self.counters.rx_packets, batch.count as u64);
        add(&self.counters.rx_bytes, batch.packet_bytes() as u64);
        Ok(batch.count)
    }

    async fn recv_offload(&self, batch: &mut TunRecvBatch) -> io::Result<usize> {
        let slot = HEADROOM + batch.mtu + TAILROOM;
        let n = {
            let TunRecvBatch {
                arena,
                original,
                sizes,
                ..
            } = &mut *batch;
            let mut slots = arena.chunks_exact_mut(slot);
            let mut bufs: [&mut [u8]; TUN_BATCH] =
                std::array::from_fn(|_| slots.next().unwrap_or(&mut []));
            self.dev
                .recv_multiple(original, &mut bufs, sizes, HEADROOM)
                .await?
        };
        add(&self.counters.rx_reads, 1);
        batch.pack_slots(n.min(TUN_BATCH));
        Ok(batch.count)
    }

    async fn recv_plain(&self, batch: &mut TunRecvBatch) -> io::Result<()> {
        let mtu = batch.mtu;
        let first = self
            .dev
            .recv(&mut batch.arena[HEADROOM..HEADROOM + mtu])
            .await?;
        batch.append_packet(first);
        add(&self.counters.rx_reads, 1);
        while batch.count < TUN_BATCH {
            let at = batch.used + HEADROOM;
            match self.dev.try_recv(&mut batch.arena[at..at + mtu]) {
                Ok(n) => {
                    batch.append_packet(n);
                    add(&self.counters.rx_reads, 1);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Hand over what was read; the error shows again next time.
                Err(e) => {
                    debug!(tun = %self.name, error = %e, "TUN read error after a partial batch");
                    break;
                }
            }
        }
        Ok(())
    }

    /// Writes every packet of `batch` to the device. With offload, tun-rs
    /// first coalesces TCP (and, where the kernel allows, UDP) packets of one
    /// flow into super-packets (GRO), so a batch costs a few writes. The
    /// batch is empty afterwards.
    ///
    /// A failed write does not stop the batch; failures are counted in
    /// `tx_errors` (and `tx_dropped` when the whole batch was refused) and
    /// logged at most once a second. Errors only if the device is unusable.
    ///
    /// Not cancel safe: dropping the future may leave part of the batch
    /// unwritten (and the batch emptied).
    pub async fn send_batch(&self, batch: &mut TunSendBatch) -> io::Result<()> {
        let n = batch.count;
        if n == 0 {
            return Ok(());
        }
        let bytes = batch.packet_bytes();
        batch.count = 0;
        let result = self
            .dev
            .send_multiple(&mut batch.gro, &mut batch.bufs[..n], VIRTIO_NET_HDR_LEN)
            .await;
        match result {
            Ok(_) => {
                add(&self.counters.tx_packets, n as u64);
                add(&self.counters.tx_bytes, bytes as u64);
                Ok(())
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::EBADFD)) => Err(e),
            Err(e) => {
                add(&self.counters.tx_errors, 1);
                // Without an OS error code tun-rs refused the batch before
                // writing anything (a packet it could not coalesce).
                if e.raw_os_error().is_none() {
                    add(&self.counters.tx_dropped, n as u64);
                }
                if self.errors.allow() {
                    warn!(
                        tun = %self.name, error = %e, packets = n,
                        "TUN write failed (counted in tx_errors)"
                    );
                }
                Ok(())
            }
        }
    }
}

/// Packets read from a TUN, each preceded by [`HEADROOM`] bytes for its
/// tunnel header and followed by [`TAILROOM`] bytes for its tag, back to
/// back in one buffer (`header | packet | tag | header | packet | tag`...):
/// a batch of outgoing datagrams once the caller has written each header
/// and tag and chosen each destination.
///
/// Zero copy: with offload, tun-rs splits a super-packet into fixed slots of
/// `HEADROOM + mtu + TAILROOM` bytes; full-MTU segments (bulk TCP) then already lie
/// back to back and form GSO trains in place. Shorter segments are moved
/// down once (`memmove` inside the buffer).
#[derive(Debug)]
pub struct TunRecvBatch {
    arena: Box<[u8]>,
    original: Box<[u8]>,
    sizes: [usize; TUN_BATCH],
    offsets: [usize; TUN_BATCH],
    lens: [usize; TUN_BATCH],
    destinations: [Option<SocketAddr>; TUN_BATCH],
    mtu: usize,
    count: usize,
    used: usize,
}

/// One packet of a [`TunRecvBatch`], for the engine to route.
#[derive(Debug)]
#[non_exhaustive]
pub struct OutgoingPacket<'a> {
    /// The whole datagram: [`HEADROOM`] bytes for the tunnel header, the IP
    /// packet as read from the TUN (may be edited in place, e.g. MSS
    /// clamping, not resized), [`TAILROOM`] bytes for the tag. Contiguous,
    /// so the engine can seal it in place.
    pub frame: &'a mut [u8],
    /// Where to send it; `None` (the initial value) drops it.
    pub destination: &'a mut Option<SocketAddr>,
}

impl OutgoingPacket<'_> {
    /// The IP packet.
    pub fn packet(&self) -> &[u8] {
        &self.frame[HEADROOM..self.frame.len() - TAILROOM]
    }

    /// The IP packet, to edit in place.
    pub fn packet_mut(&mut self) -> &mut [u8] {
        let len = self.frame.len();
        &mut self.frame[HEADROOM..len - TAILROOM]
    }

    /// The header room.
    pub fn header_mut(&mut self) -> &mut [u8] {
        &mut self.frame[..HEADROOM]
    }

    /// The tag room.
    pub fn tag_mut(&mut self) -> &mut [u8] {
        let len = self.frame.len();
        &mut self.frame[len - TAILROOM..]
    }
}

impl TunRecvBatch {
    /// A batch for packets up to `mtu` bytes ([`TunDevice::mtu`]), with room
    /// for [`TUN_BATCH`] packets and one offload super-packet.
    pub fn new(mtu: u16) -> TunRecvBatch {
        let mtu = usize::from(mtu);
        TunRecvBatch {
            arena: vec![0; TUN_BATCH * (HEADROOM + mtu + TAILROOM)].into_boxed_slice(),
            original: vec![0; VIRTIO_NET_HDR_LEN + MAX_IP_PACKET].into_boxed_slice(),
            sizes: [0; TUN_BATCH],
            offsets: [0; TUN_BATCH],
            lens: [0; TUN_BATCH],
            destinations: [None; TUN_BATCH],
            mtu,
            count: 0,
            used: 0,
        }
    }

    /// Packets in the batch.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the batch holds no packet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.count = 0;
        self.used = 0;
    }

    /// Packet `index` (without headroom).
    ///
    /// # Panics
    /// If `index >= self.len()`.
    pub fn packet(&self, index: usize) -> &[u8] {
        assert!(index < self.count, "packet {index} of {}", self.count);
        let start = self.offsets[index] + HEADROOM;
        &self.arena[start..start + self.lens[index]]
    }

    /// Sets where packet `index` goes (`None`: dropped).
    ///
    /// # Panics
    /// If `index >= self.len()`.
    pub fn set_destination(&mut self, index: usize, to: Option<SocketAddr>) {
        assert!(index < self.count, "packet {index} of {}", self.count);
        self.destinations[index] = to;
    }

    /// Every packet with its header and tag room and its destination, in
    /// read order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = OutgoingPacket<'_>> + '_ {
        let mut rest: &mut [u8] = &mut self.arena[..self.used];
        let mut at = 0;
        self.offsets[..self.count]
            .iter()
            .zip(&self.lens[..self.count])
            .zip(&mut self.destinations[..self.count])
            .map(move |((&offset, &len), destination)| {
                // Packets are packed in order, so each starts at or after the
                // end of the previous one.
                let tail = std::mem::take(&mut rest);
                let (_, tail) = tail.split_at_mut(offset - at);
                let (datagram, tail) = tail.split_at_mut(HEADROOM + len + TAILROOM);
                rest = tail;
                at = offset + HEADROOM + len + TAILROOM;
                OutgoingPacket {
                    frame: datagram,
                    destination,
                }
            })
    }

    fn packet_bytes(&self) -> usize {
        self.lens[..self.count].iter().sum()
    }

    /// Records a packet of `len` bytes read at `used + HEADROOM`.
    fn append_packet(&mut self, len: usize) {
        self.offsets[self.count] = self.used;
        self.lens[self.count] = len;
        self.destinations[self.count] = None;
        self.count += 1;
        self.used += HEADROOM + len + TAILROOM;
    }

    /// After tun-rs wrote `n` packets into fixed slots of
    /// `HEADROOM + mtu + TAILROOM` bytes (`sizes[i]` long each), moves them
    /// back to back.
    fn pack_slots(&mut self, n: usize) {
        let slot = HEADROOM + self.mtu + TAILROOM;
        self.clear();
        for i in 0..n {
            let len = self.sizes[i].min(self.mtu);
            let from = i * slot + HEADROOM;
            let to = self.used + HEADROOM;
            if from != to {
                self.arena.copy_within(from..from + len, to);
            }
            self.append_packet(len);
        }
    }
}

impl Sealed for TunRecvBatch {
    fn arena(&self) -> &[u8] {
        &self.arena[..self.used]
    }
    fn datagram_count(&self) -> usize {
        self.count
    }
    fn datagram(&self, index: usize) -> Option<OutDatagram> {
        if index >= self.count {
            return None;
        }
        self.destinations[index].map(|to| OutDatagram {
            to,
            offset: self.offsets[index],
            len: HEADROOM + self.lens[index] + TAILROOM,
        })
    }
    fn clear_sent(&mut self) {
        self.clear();
    }
}

impl DatagramBatch for TunRecvBatch {}

/// Packets to write to a TUN, copied in by the caller.
///
/// Each packet gets its own buffer that starts with a zeroed virtio-net
/// header and has room to grow to 64 KiB, because tun-rs coalesces a flow
/// by appending to that flow's first buffer (DATAPATH-NOTES fact 4).
///
/// Why a copy: received datagrams lie back to back in a GRO buffer with only
/// their 16-byte tag and 16-byte tunnel header between them, while tun-rs needs a separate,
/// growable buffer per packet with 10 free bytes in front. Receiving without
/// UDP GRO to avoid the copy would cost far more than a 1.5 KB `memcpy`.
pub struct TunSendBatch {
    bufs: Vec<Vec<u8>>,
    count: usize,
    gro: GROTable,
}

impl Default for TunSendBatch {
    fn default() -> Self {
        TunSendBatch::new()
    }
}

impl std::fmt::Debug for TunSendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunSendBatch")
            .field("packets", &self.count)
            .field("capacity", &self.bufs.len())
            .finish_non_exhaustive()
    }
}

impl TunSendBatch {
    /// Room for [`TUN_BATCH`] packets.
    pub fn new() -> TunSendBatch {
        TunSendBatch::with_capacity(TUN_BATCH)
    }

    /// Room for `packets` packets. Memory is reserved (64 KiB each), not
    /// touched until used.
    pub fn with_capacity(packets: usize) -> TunSendBatch {
        let buf_capacity = 2 * VIRTIO_NET_HDR_LEN + MAX_IP_PACKET;
        TunSendBatch {
            bufs: (0..packets.max(1))
                .map(|_| Vec::with_capacity(buf_capacity))
                .collect(),
            count: 0,
            gro: GROTable::new(),
        }
    }

    /// Copies one IP packet into the batch.
    pub fn push(&mut self, packet: &[u8]) -> Result<(), PushError> {
        let buf = self.next_buf(packet.len())?;
        buf.extend_from_slice(packet);
        self.count += 1;
        Ok(())
    }

    /// Lets `write` build a packet in place, in up to `max_len` bytes
    /// (e.g. an ICMPv6 Packet Too Big). `write` returns the length written,
    /// or `None` to add nothing. Returns whether a packet was added.
    pub fn push_with(
        &mut self,
        max_len: usize,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Result<bool, PushError> {
        let buf = self.next_buf(max_len)?;
        buf.resize(VIRTIO_NET_HDR_LEN + max_len, 0);
        match write(&mut buf[VIRTIO_NET_HDR_LEN..]) {
            Some(len) => {
                debug_assert!(len <= max_len, "push_with: wrote {len} > {max_len} bytes");
                buf.truncate(VIRTIO_NET_HDR_LEN + len.min(max_len));
                self.count += 1;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Packets in the batch.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the batch holds no packet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// True if the next push would fail with [`PushError::Full`].
    pub fn is_full(&self) -> bool {
        self.count == self.bufs.len()
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// The next free buffer, holding a zeroed virtio-net header.
    fn next_buf(&mut self, len: usize) -> Result<&mut Vec<u8>, PushError> {
        if len > MAX_IP_PACKET {
            return Err(PushError::TooLarge {
                len,
                max: MAX_IP_PACKET,
            });
        }
        let buf = self.bufs.get_mut(self.count).ok_or(PushError::Full)?;
        buf.clear();
        buf.resize(VIRTIO_NET_HDR_LEN, 0);
        Ok(buf)
    }

    fn packet_bytes(&self) -> usize {
        self.bufs[..self.count]
            .iter()
            .map(|b| b.len() - VIRTIO_NET_HDR_LEN)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 7, 1], port))
    }

    /// Simulates tun-rs splitting a super-packet into slots.
    fn fill_slots(batch: &mut TunRecvBatch, sizes: &[usize]) {
        let slot = HEADROOM + batch.mtu + TAILROOM;
        for (i, &len) in sizes.iter().enumerate() {
            batch.sizes[i] = len;
            let start = i * slot + HEADROOM;
            batch.arena[start..start + len].fill(i as u8 + 1);
        }
        batch.pack_slots(sizes.len());
    }

    #[test]
    fn one_tun_read_fits_one_gso_send() {
        // 45 datagrams of 16 + 1420 + 16 bytes fit one send.
        assert_eq!(fit_gso_max_size(1420), 60_732);
        for mtu in [1280u16, 1400, 1420, 1448, 1500, 4000, 8900, 9000] {
            let size = fit_gso_max_size(mtu) as usize;
            let cap = gso_segment_cap(64, HEADROOM + usize::from(mtu) + TAILROOM);
            for headers in [60, 72] {
                let mss = usize::from(mtu) - headers;
                let segments = (size - headers).div_ceil(mss);
                assert!(segments <= cap, "mtu {mtu}: {segments} > {cap}");
            }
            assert!(size <= MAX_IP_PACKET + 1);
        }
    }

    #[test]
    fn full_mtu_segments_stay_in_place() {
        let mut b = TunRecvBatch::new(1000);
        fill_slots(&mut b, &[1000, 1000, 1000, 300]);
        assert_eq!(b.len(), 4);
        assert_eq!(&b.offsets[..4], &[0, 1032, 2064, 3096]);
        assert_eq!(b.packet(3), &[4u8; 300][..]);
        assert_eq!(b.packet_bytes(), 3300);
    }

    #[test]
    fn shorter_segments_are_packed_back_to_back() {
        let mut b = TunRecvBatch::new(1000);
        fill_slots(&mut b, &[600, 600, 200]);
        assert_eq!(&b.offsets[..3], &[0, 632, 1264]);
        assert_eq!(b.packet(0), &[1u8; 600][..]);
        assert_eq!(b.packet(1), &[2u8; 600][..]);
        assert_eq!(b.packet(2), &[3u8; 200][..]);
        assert_eq!(b.used, 1496);
    }

    #[test]
    fn routed_packets_become_datagrams_with_their_header() {
        let mut b = TunRecvBatch::new(1000);
        fill_slots(&mut b, &[600, 600, 600]);
        for (i, mut p) in b.iter_mut().enumerate() {
            assert_eq!(p.packet().len(), 600);
            p.header_mut()
                .copy_from_slice(&[0x20, 0, 0, i as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            p.tag_mut().fill(0xa0 + i as u8);
            if i != 1 {
                *p.destination = Some(addr(9));
            }
        }
        assert_eq!(b.datagram_count(), 3);
        let d0 = b.datagram(0).unwrap();
        assert_eq!((d0.offset, d0.len), (0, 632));
        assert_eq!(b.datagram(1), None);
        let d2 = b.datagram(2).unwrap();
        // header | packet | tag, contiguous.
        let dg = &b.arena()[d2.offset..d2.offset + d2.len];
        assert_eq!(&dg[..4], &[0x20, 0, 0, 2]);
        assert_eq!(&dg[4..16], &[0; 12]);
        assert_eq!(&dg[16..616], &[3u8; 600][..]);
        assert_eq!(&dg[616..], &[0xa2; TAILROOM]);
        // The tag of packet 0 ends right where packet 1's header begins.
        assert_eq!(b.arena()[d0.len - 1], 0xa0);
        assert_eq!(b.arena()[d0.len], 0x20);
        // Two single-datagram trains: the dropped packet splits them.
        let trains: Vec<_> = crate::gso::Trains::new((0..3).map(|i| b.datagram(i)), 64).collect();
        assert_eq!(trains.len(), 2);
        b.clear_sent();
        assert!(b.is_empty());
    }

    #[test]
    fn full_mtu_batch_is_one_gso_train() {
        let mut b = TunRecvBatch::new(1420);
        fill_slots(&mut b, &[1420; 40]);
        for p in b.iter_mut() {
            *p.destination = Some(addr(1));
        }
        let trains: Vec<_> =
            crate::gso::Trains::new((0..b.len()).map(|i| b.datagram(i)), 64).collect();
        assert_eq!(trains.len(), 1);
        assert_eq!(trains[0].segments, 40);
        assert_eq!(trains[0].stride, 1452);
    }

    #[test]
    fn plain_reads_append_back_to_back() {
        let mut b = TunRecvBatch::new(1500);
        b.append_packet(100);
        b.append_packet(60);
        assert_eq!(&b.offsets[..2], &[0, 132]);
        assert_eq!(b.used, 224);
        b.set_destination(1, Some(addr(2)));
        assert_eq!(b.datagram(1).unwrap().len, 92);
    }

    #[test]
    fn send_batch_buffers_carry_a_zeroed_virtio_header() {
        let mut b = TunSendBatch::with_capacity(2);
        b.push(&[6; 100]).unwrap();
        // Dirty the header as tun-rs coalescing would; the next push resets it.
        b.bufs[0][0] = 0xff;
        b.clear();
        b.push(&[6; 100]).unwrap();
        assert_eq!(b.bufs[0].len(), VIRTIO_NET_HDR_LEN + 100);
        assert!(b.bufs[0][..VIRTIO_NET_HDR_LEN].iter().all(|&x| x == 0));
        assert!(b.bufs[0].capacity() >= 2 * VIRTIO_NET_HDR_LEN + MAX_IP_PACKET);
        let added = b
            .push_with(1280, |buf| {
                buf[..4].copy_from_slice(&[0x60, 0, 0, 0]);
                Some(48)
            })
            .unwrap();
        assert!(added);
        assert_eq!(b.bufs[1].len(), VIRTIO_NET_HDR_LEN + 48);
        assert!(b.is_full());
        assert_eq!(b.push(&[0; 10]), Err(PushError::Full));
        assert_eq!(b.packet_bytes(), 148);
        assert_eq!(
            b.push(&vec![0; MAX_IP_PACKET + 1]),
            Err(PushError::TooLarge {
                len: MAX_IP_PACKET + 1,
                max: MAX_IP_PACKET
            })
        );
    }
}
