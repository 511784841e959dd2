//! The driver loop: one sans-IO engine, one TUN device, one or more UDP
//! tunnel sockets.
//!
//! Three kinds of task share the engine behind a `tokio::sync::Mutex`,
//! locked once per batch (never per packet):
//!
//! - TUN -> UDP: read a batch from the TUN, ask the engine per packet,
//!   write the tunnel header in place and send the batch as GSO trains;
//! - UDP -> TUN, one per socket: read a GRO batch, ask the engine per
//!   datagram, copy inner packets into a TUN write batch, relay datagrams
//!   the engine forwards (the AP), and write the TUN batch;
//! - timers: sleep until the engine's `poll_timeout`, run it; woken early
//!   when a batch arms an earlier timer.
//!
//! After each batch the task calls the daemon's [`EventHook`] with the
//! engine still locked (once per batch, never per packet: the daemon drains
//! the engine's events there and acts on them before anything else runs),
//! then sends the engine's control transmits and writes the packets it
//! originates towards the TUN (TCP resets).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use homeaddr_io::{
    HEADROOM, TAILROOM, TunDevice, TunRecvBatch, TunSendBatch, UdpRecvBatch, UdpSendBatch,
    UdpTunnel,
};
use homeaddr_proto::engine::{DataAction, Engine, Transmit, TunPacket};
use homeaddr_proto::wire::{FRAME_HEADER_LEN, TAG_LEN};
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::busy::BusyPoll;

// The I/O layer's room around a TUN packet is exactly a frame's header and tag.
const _: () = assert!(HEADROOM == FRAME_HEADER_LEN && TAILROOM == TAG_LEN);

/// The engine, shared by the tasks of one daemon and its control socket.
pub type Shared<E> = Arc<Mutex<E>>;

/// Called after every batch, timer run and control command with the engine
/// still locked: the daemon drains the engine's events there. Whatever it
/// changes in the engine is sent with the batch's own transmits.
pub type EventHook<E> = Arc<dyn Fn(&mut E) + Send + Sync>;

/// The engine and what runs after each of its batches.
struct Core<E> {
    engine: Shared<E>,
    hook: EventHook<E>,
    busy: Arc<BusyPoll>,
}

impl<E> Clone for Core<E> {
    fn clone(&self) -> Self {
        Self {
            engine: self.engine.clone(),
            hook: self.hook.clone(),
            busy: self.busy.clone(),
        }
    }
}

impl<E: Engine> Core<E> {
    /// End of a batch: events, then what the engine queued.
    fn finish(&self, e: &mut E) -> (Vec<Transmit>, Vec<Vec<u8>>) {
        (self.hook)(e);
        drain(e)
    }
}

/// Send sockets can be swapped at run time (a member that moves).
#[derive(Debug)]
pub struct SendSocket {
    current: watch::Sender<Arc<UdpTunnel>>,
}

impl SendSocket {
    /// Start with one socket.
    pub fn new(socket: Arc<UdpTunnel>) -> Arc<Self> {
        Arc::new(Self {
            current: watch::Sender::new(socket),
        })
    }

    /// The socket to send from now.
    pub fn get(&self) -> Arc<UdpTunnel> {
        self.current.borrow().clone()
    }

    /// Send from `socket` from now on.
    pub fn replace(&self, socket: Arc<UdpTunnel>) {
        self.current.send_replace(socket);
    }
}

/// The running data plane of a daemon.
#[derive(Debug)]
pub struct Driver<E> {
    core: Core<E>,
    tun: Arc<TunDevice>,
    send: Arc<SendSocket>,
    wake: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
    /// The task receiving on the socket in use.
    receiving: usize,
    /// Receive tasks of earlier sockets, stopped at these times.
    retiring: Vec<(Instant, usize)>,
    failures_tx: mpsc::UnboundedSender<String>,
    failures: mpsc::UnboundedReceiver<String>,
}

impl<E: Engine + Send + 'static> Driver<E> {
    /// Start the TUN, UDP and timer tasks; `hook` runs after every batch.
    /// `busy_poll` is the busy-poll window after traffic (zero: off; see
    /// [`crate::busy`]).
    pub fn start(
        engine: Shared<E>,
        hook: EventHook<E>,
        tun: Arc<TunDevice>,
        udp: Arc<UdpTunnel>,
        busy_poll: std::time::Duration,
    ) -> Self {
        let send = SendSocket::new(udp.clone());
        let wake = Arc::new(Notify::new());
        let (failures_tx, failures) = mpsc::unbounded_channel();
        let mut driver = Self {
            core: Core {
                engine,
                hook,
                busy: BusyPoll::new(busy_poll),
            },
            tun,
            send,
            wake,
            tasks: Vec::new(),
            receiving: 0,
            retiring: Vec::new(),
            failures_tx,
            failures,
        };
        let t = tun_to_udp(
            driver.core.clone(),
            driver.tun.clone(),
            driver.send.clone(),
            driver.wake.clone(),
        );
        driver.spawn("TUN -> UDP", t);
        driver.receiving = driver.add_receive_socket(udp);
        let t = timers(
            driver.core.clone(),
            driver.tun.clone(),
            driver.send.clone(),
            driver.wake.clone(),
        );
        driver.spawn("timers", t);
        if !busy_poll.is_zero() {
            let spin = driver.core.busy.clone().spin();
            driver.spawn("busy poll", async move {
                spin.await;
                Ok(())
            });
        }
        driver
    }

    fn spawn(
        &mut self,
        what: &'static str,
        task: impl Future<Output = std::io::Result<()>> + Send + 'static,
    ) -> usize {
        let tx = self.failures_tx.clone();
        self.tasks.push(tokio::spawn(async move {
            let outcome = match task.await {
                Ok(()) => format!("{what} loop ended"),
                Err(e) => format!("{what} loop failed: {e}"),
            };
            let _ = tx.send(outcome);
        }));
        self.tasks.len() - 1
    }

    /// Also receive on `udp` (a second address during a move). Returns a
    /// handle for [`Driver::stop_task`].
    pub fn add_receive_socket(&mut self, udp: Arc<UdpTunnel>) -> usize {
        let t = udp_to_tun(
            self.core.clone(),
            self.tun.clone(),
            udp,
            self.send.clone(),
            self.wake.clone(),
        );
        self.spawn("UDP -> TUN", t)
    }

    /// Stop the task `index` (from `add_receive_socket`).
    pub fn stop_task(&mut self, index: usize) {
        if let Some(t) = self.tasks.get(index) {
            t.abort();
        }
    }

    /// Move to the socket `udp` (a member's new care-of, a shim whose
    /// host's address changed), make before break: receive on it too,
    /// apply `change` and send from it as [`Driver::move_send_socket`]
    /// does, and stop receiving on the previous socket `grace` later
    /// (at the [`Driver::stop_retired`] after that).
    pub async fn move_to_socket(
        &mut self,
        udp: Arc<UdpTunnel>,
        grace: std::time::Duration,
        change: impl FnOnce(&mut E),
    ) {
        let task = self.add_receive_socket(udp.clone());
        self.move_send_socket(udp, change).await;
        self.retiring.push((
            Instant::now() + grace,
            std::mem::replace(&mut self.receiving, task),
        ));
    }

    /// Stop receiving on the sockets whose grace after a move ended by `now`.
    pub fn stop_retired(&mut self, now: Instant) {
        let (due, keep): (Vec<_>, Vec<_>) = self.retiring.iter().partition(|(at, _)| *at <= now);
        self.retiring = keep;
        for (_, t) in due {
            self.stop_task(t);
        }
    }

    /// Send from `udp` from now on.
    pub fn set_send_socket(&self, udp: Arc<UdpTunnel>) {
        self.send.replace(udp);
    }

    /// Apply `change` to the engine and send from `udp` from now on, such
    /// that what `change` queues (a member's re-registration from a new
    /// care-of endpoint) leaves from `udp` before any data does: the engine
    /// stays locked until it is sent, so no data batch is processed in
    /// between. A receiver that accepts data from an endpoint only once it
    /// knows the endpoint (the AP) then never sees data overtake it.
    pub async fn move_send_socket(&self, udp: Arc<UdpTunnel>, change: impl FnOnce(&mut E)) {
        let mut e = self.core.engine.lock().await;
        change(&mut e);
        let (transmits, tun_packets) = self.core.finish(&mut e);
        emit(&udp, &self.tun, transmits, tun_packets).await;
        self.send.replace(udp);
        drop(e);
        self.wake.notify_one();
    }

    /// The socket data and control leave from.
    pub fn send_socket(&self) -> Arc<UdpTunnel> {
        self.send.get()
    }

    /// The send socket as it is swapped, for readers that outlive a move
    /// (the metrics collector).
    pub fn send_sockets(&self) -> Arc<SendSocket> {
        self.send.clone()
    }

    /// The engine.
    pub fn engine(&self) -> &Shared<E> {
        &self.core.engine
    }

    /// The busy-poll state (window and counters).
    pub fn busy_poll(&self) -> &Arc<BusyPoll> {
        &self.core.busy
    }

    /// The TUN device.
    pub fn tun(&self) -> &Arc<TunDevice> {
        &self.tun
    }

    /// Counters of the TUN device and of the socket data leaves from, for
    /// `status`: batching shows as packets per read and datagrams per syscall.
    pub fn io_status(&self) -> serde_json::Value {
        let t = self.tun.counters().snapshot();
        let u = self.send.get().counters().snapshot();
        let (windows, hits) = self.core.busy.counts();
        serde_json::json!({
            "busy_poll": {
                "window_us": self.core.busy.window().as_micros(),
                "windows": windows, "hits": hits,
            },
            "tun": {
                "rx_packets": t.rx_packets, "rx_bytes": t.rx_bytes, "rx_reads": t.rx_reads, "rx_errors": t.rx_errors,
                "tx_packets": t.tx_packets, "tx_bytes": t.tx_bytes, "tx_errors": t.tx_errors, "tx_dropped": t.tx_dropped,
            },
            "udp": {
                "rx_datagrams": u.rx_datagrams, "rx_bytes": u.rx_bytes, "rx_syscalls": u.rx_syscalls, "rx_errors": u.rx_errors,
                "tx_datagrams": u.tx_datagrams, "tx_bytes": u.tx_bytes, "tx_syscalls": u.tx_syscalls,
                "tx_errors": u.tx_errors, "tx_dropped": u.tx_dropped,
            },
        })
    }

    /// Send what an out-of-band engine call (a control command) queued,
    /// and let the timer task see new deadlines.
    pub async fn kick(&self) {
        let (transmits, tun_packets) = {
            let mut e = self.core.engine.lock().await;
            self.core.finish(&mut e)
        };
        emit(&self.send.get(), &self.tun, transmits, tun_packets).await;
        self.wake.notify_one();
    }

    /// Stop every task.
    pub fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Wait until a data-plane task ends (only on an I/O failure) and say why.
    pub async fn failed(&mut self) -> String {
        self.failures
            .recv()
            .await
            .unwrap_or_else(|| "data plane stopped".into())
    }
}

impl<E> std::fmt::Debug for Core<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Core")
    }
}

impl<E> Drop for Driver<E> {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn drain<E: Engine>(e: &mut E) -> (Vec<Transmit>, Vec<Vec<u8>>) {
    let mut transmits = Vec::new();
    while let Some(t) = e.poll_transmit() {
        transmits.push(t);
    }
    let mut tun = Vec::new();
    while let Some(p) = e.poll_tun() {
        tun.push(p);
    }
    (transmits, tun)
}

async fn emit(
    udp: &UdpTunnel,
    tun: &TunDevice,
    transmits: Vec<Transmit>,
    tun_packets: Vec<Vec<u8>>,
) {
    for t in transmits {
        if let Err(e) = udp.send_to(t.to, &t.payload).await {
            debug!(to = %t.to, error = %e, "control message not sent");
        }
    }
    if !tun_packets.is_empty() {
        let mut batch = TunSendBatch::with_capacity(tun_packets.len());
        for p in &tun_packets {
            let _ = batch.push(p);
        }
        if let Err(e) = tun.send_batch(&mut batch).await {
            warn!(error = %e, "could not write engine packets to the TUN");
        }
    }
}

async fn tun_to_udp<E: Engine>(
    core: Core<E>,
    tun: Arc<TunDevice>,
    send: Arc<SendSocket>,
    wake: Arc<Notify>,
) -> std::io::Result<()> {
    let mut batch = TunRecvBatch::new(tun.mtu());
    // Packets the engine hands back to the kernel (direct server return).
    let mut back = TunSendBatch::new();
    loop {
        tun.recv_batch(&mut batch).await?;
        let (transmits, tun_packets) = {
            let mut e = core.engine.lock().await;
            let now = Instant::now();
            core.busy.traffic(now);
            let before = e.poll_timeout();
            for p in batch.iter_mut() {
                // The batch's frames always have header and tag room.
                let Some(pkt) = TunPacket::new(&mut *p.frame) else {
                    continue;
                };
                match e.handle_tun(now, pkt) {
                    // The engine filled header and tag around the packet.
                    DataAction::Send { to } => *p.destination = Some(to),
                    // At most one TUN batch worth per read: the read batch is
                    // no larger than the write batch.
                    DataAction::ToTun => {
                        let _ = back.push(p.packet());
                    }
                    DataAction::Consumed | DataAction::Drop(_) => {}
                }
            }
            let out = core.finish(&mut e);
            if e.poll_timeout() != before {
                wake.notify_one();
            }
            out
        };
        let udp = send.get();
        udp.send_batch(&mut batch).await?;
        if !back.is_empty() {
            tun.send_batch(&mut back).await?;
        }
        if !transmits.is_empty() || !tun_packets.is_empty() {
            emit(&udp, &tun, transmits, tun_packets).await;
        }
    }
}

async fn udp_to_tun<E: Engine>(
    core: Core<E>,
    tun: Arc<TunDevice>,
    udp: Arc<UdpTunnel>,
    send: Arc<SendSocket>,
    wake: Arc<Notify>,
) -> std::io::Result<()> {
    let mut rx = UdpRecvBatch::new(HEADROOM + usize::from(tun.mtu()) + TAILROOM);
    let mut to_tun = TunSendBatch::new();
    let mut forward = UdpSendBatch::new();
    loop {
        udp.recv_batch(&mut rx).await?;
        let mut guard = Some(core.engine.lock().await);
        let mut before = guard.as_ref().and_then(|e| e.poll_timeout());
        let mut now = Instant::now();
        // Only frames the engine accepted as data (authenticated, see
        // `handle_udp`) keep the daemon polling: garbage, or a stream of
        // cookie requests, costs an attacker a datagram per wake-up as it
        // always did, never a window of spinning per datagram.
        let mut data = false;
        for d in rx.iter_mut() {
            if guard.is_none() {
                let e = core.engine.lock().await;
                before = e.poll_timeout();
                now = Instant::now();
                guard = Some(e);
            }
            let Some(e) = guard.as_mut() else { continue };
            match e.handle_udp(now, d.from, d.data) {
                DataAction::ToTun => {
                    data = true;
                    if to_tun.is_full() {
                        flush_engine(&core, &mut guard, &wake, before, &send, &tun).await;
                        tun.send_batch(&mut to_tun).await?;
                    }
                    // The engine only says ToTun for a frame of at least
                    // header + IPv6 header + tag.
                    let end = d.data.len().saturating_sub(TAILROOM);
                    if let Some(inner) = d.data.get(HEADROOM..end) {
                        let _ = to_tun.push(inner);
                    }
                }
                // A relay: the engine rewrote the frame in place.
                DataAction::Send { to } => {
                    data = true;
                    if forward.push(to, d.data).is_err() {
                        flush_engine(&core, &mut guard, &wake, before, &send, &tun).await;
                        send.get().send_batch(&mut forward).await?;
                        let _ = forward.push(to, d.data);
                    }
                }
                DataAction::Consumed | DataAction::Drop(_) => {}
            }
        }
        flush_engine(&core, &mut guard, &wake, before, &send, &tun).await;
        if data {
            core.busy.traffic(now);
        }
        if !to_tun.is_empty() {
            tun.send_batch(&mut to_tun).await?;
        }
        if !forward.is_empty() {
            send.get().send_batch(&mut forward).await?;
        }
    }
}

/// Release the engine after sending what it queued.
async fn flush_engine<E: Engine>(
    core: &Core<E>,
    guard: &mut Option<tokio::sync::MutexGuard<'_, E>>,
    wake: &Notify,
    before: Option<Instant>,
    send: &SendSocket,
    tun: &TunDevice,
) {
    let Some(mut e) = guard.take() else { return };
    let (transmits, tun_packets) = core.finish(&mut e);
    if e.poll_timeout() != before {
        wake.notify_one();
    }
    drop(e);
    if !transmits.is_empty() || !tun_packets.is_empty() {
        emit(&send.get(), tun, transmits, tun_packets).await;
    }
}

async fn timers<E: Engine>(
    core: Core<E>,
    tun: Arc<TunDevice>,
    send: Arc<SendSocket>,
    wake: Arc<Notify>,
) -> std::io::Result<()> {
    loop {
        let deadline = core.engine.lock().await.poll_timeout();
        match deadline {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = wake.notified() => continue,
                }
            }
            None => {
                wake.notified().await;
                continue;
            }
        }
        let (transmits, tun_packets) = {
            let mut e = core.engine.lock().await;
            e.handle_timeout(Instant::now());
            core.finish(&mut e)
        };
        emit(&send.get(), &tun, transmits, tun_packets).await;
    }
}

/// The address the kernel would send from to reach `peer` (for a shim or
/// member that was not told its own address).
pub fn source_address_for(peer: SocketAddr) -> std::io::Result<std::net::IpAddr> {
    let bind: SocketAddr = if peer.is_ipv6() {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let s = std::net::UdpSocket::bind(bind)?;
    s.connect(peer)?;
    Ok(s.local_addr()?.ip())
}
