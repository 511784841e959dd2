//! The test application: a deterministic TCP/UDP server and its clients.
//!
//! Protocol (TCP, one request line at a time, `\n`-terminated):
//!
//! | request      | answer |
//! |---|---|
//! | `WHO`        | the server's configured name and `\n`; the connection stays open |
//! | `GET <n>`    | exactly `n` bytes of [`PayloadStream`] data, then the server closes |
//! | `ECHO`       | from then on every line is echoed back until the client closes |
//! | `PUT <n>`    | the client sends exactly `n` bytes; the server answers the lower-case hex SHA-256 of them and `\n`, then closes |
//!
//! Anything else is answered with `ERR ...` and the connection is closed.
//! The same port also echoes UDP datagrams. The payload is the same for
//! every `GET`, so a test knows the SHA-256 of a correct download without
//! the server: [`expected_sha256`].
//!
//! The clients ([`get`], [`put`], [`rtt`], [`who`], [`udp_echo`]) put a timeout on
//! every socket operation and return JSON-serialisable reports; the
//! `homeaddr-testapp` binary is a thin command-line wrapper around them.
//! In-process use inside a namespace: `ns.enter(|| testapp::get(...))`.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use socket2::{Domain, Protocol, Socket, Type};

use crate::wan::core::SplitMix64;

/// Default timeout of each client socket operation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A server connection with no request for this long is closed.
pub const SERVER_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest request line the server accepts.
const MAX_LINE: usize = 4096;

/// Seed of the payload stream ("homeaddr").
const PAYLOAD_SEED: u64 = 0x686f_6d65_6164_6472;

/// The deterministic byte stream `GET` serves: SplitMix64 words from a fixed
/// seed, little-endian.
#[derive(Debug, Clone)]
pub struct PayloadStream {
    rng: SplitMix64,
    word: [u8; 8],
    used: usize,
}

impl Default for PayloadStream {
    fn default() -> Self {
        PayloadStream {
            rng: SplitMix64::new(PAYLOAD_SEED),
            word: [0; 8],
            used: 8,
        }
    }
}

impl PayloadStream {
    /// The stream from its start.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fills `out` with the next bytes of the stream.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut i = 0;
        while i < out.len() && self.used < 8 {
            out[i] = self.word[self.used];
            self.used += 1;
            i += 1;
        }
        let mut chunks = out[i..].chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            self.word = self.rng.next_u64().to_le_bytes();
            let n = rest.len();
            rest.copy_from_slice(&self.word[..n]);
            self.used = n;
        }
    }
}

/// Lower-case hex SHA-256 of the first `bytes` bytes of the payload stream:
/// what a correct `GET <bytes>` download hashes to.
pub fn expected_sha256(bytes: u64) -> String {
    let mut stream = PayloadStream::new();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        stream.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    hex(&hasher.finalize())
}

/// Whether a `GET <bytes>` download that fed `hasher` with `received`
/// bytes got all of them, intact.
pub fn is_intact_download(hasher: Sha256, received: u64, bytes: u64) -> bool {
    received == bytes && hex(&hasher.finalize()) == expected_sha256(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Errors of the test clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestAppError {
    /// A socket operation failed or timed out.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, including the peer and timeout.
        what: String,
        /// The underlying error (`TimedOut`/`WouldBlock` for timeouts).
        #[source]
        source: io::Error,
    },
    /// The server answered something unexpected.
    #[error("protocol error from {peer}: {detail}")]
    Protocol {
        /// The server address.
        peer: SocketAddr,
        /// What was wrong.
        detail: String,
    },
}

impl TestAppError {
    /// Whether this is a timeout of a socket operation.
    pub fn is_timeout(&self) -> bool {
        matches!(self, TestAppError::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock))
    }
}

fn io_ctx(what: String) -> impl FnOnce(io::Error) -> TestAppError {
    move |source| TestAppError::Io { what, source }
}

// ---------------------------------------------------------------------------
// Server.

/// A running test server (TCP and UDP on the same port); stops on drop.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    name: String,
    stop: Arc<AtomicBool>,
    /// Clones of the open connections, to shut them down on drop.
    connections: Arc<Mutex<HashMap<u64, TcpStream>>>,
    threads: Vec<JoinHandle<()>>,
}

/// Socket buffer size for UDP echo sockets: bursts of probes must not be
/// dropped by a briefly descheduled echo thread on a loaded 2-core machine.
const UDP_BUFFER: usize = 4 << 20;

/// Raises the UDP buffers; the FORCE variants (root) pass the read-only
/// `net.core.rmem_max` of a namespace, the plain ones are the fallback.
fn raise_buffers(socket: &Socket) {
    let size = UDP_BUFFER as libc::c_int;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        // SAFETY: setsockopt with a valid int option value on an open socket.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                force,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            // SAFETY: as above.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    plain,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

fn bind_socket(bind: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(bind), ty, Some(protocol))?;
    socket.set_reuse_address(true)?;
    // Lets a member's server bind the home address before the daemon has
    // configured it.
    match bind {
        SocketAddr::V6(_) => socket.set_freebind_v6(true)?,
        SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
    }
    socket.bind(&bind.into())?;
    Ok(socket)
}

impl Server {
    /// Binds `bind` (TCP and UDP; port 0 picks a free TCP port and uses it
    /// for UDP too) and starts serving as `name` on background threads.
    pub fn start(bind: SocketAddr, name: &str) -> io::Result<Server> {
        let tcp = bind_socket(bind, Type::STREAM, Protocol::TCP)?;
        tcp.listen(128)?;
        let listener: TcpListener = tcp.into();
        let local_addr = listener.local_addr()?;
        let udp = bind_socket(local_addr, Type::DGRAM, Protocol::UDP)?;
        raise_buffers(&udp);
        let udp: UdpSocket = udp.into();
        udp.set_read_timeout(Some(Duration::from_millis(100)))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(HashMap::new()));
        let name = name.to_string();
        let accept = {
            let (stop, connections, name) =
                (Arc::clone(&stop), Arc::clone(&connections), name.clone());
            std::thread::Builder::new()
                .name("testapp-accept".into())
                .spawn(move || accept_loop(&listener, &name, &stop, &connections))?
        };
        let echo = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("testapp-udp".into())
                .spawn(move || udp_echo_loop(&udp, &stop))?
        };
        Ok(Server {
            local_addr,
            name,
            stop,
            connections,
            threads: vec![accept, echo],
        })
    }

    /// The bound address (with the chosen port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The name `WHO` answers.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Serves until the process is killed.
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for conn in self
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .drain()
        {
            let _ = conn.1.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    name: &str,
    stop: &AtomicBool,
    connections: &Arc<Mutex<HashMap<u64, TcpStream>>>,
) {
    let mut next_id = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _peer)) => {
                let _ = stream.set_nonblocking(false);
                let id = next_id;
                next_id += 1;
                if let Ok(clone) = stream.try_clone() {
                    connections
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .insert(id, clone);
                }
                let name = name.to_string();
                let connections = Arc::clone(connections);
                let _ = std::thread::Builder::new()
                    .name("testapp-conn".into())
                    .spawn(move || {
                        let _ = serve_connection(&stream, &name);
                        // The registry holds a clone of the fd, so dropping
                        // `stream` alone would not close the connection.
                        let _ = stream.shutdown(Shutdown::Both);
                        connections
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .remove(&id);
                    });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_readable(listener.as_raw_fd(), 100);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("homeaddr-testapp: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn wait_readable(fd: i32, timeout_ms: i32) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe {
        libc::poll(&mut pfd, 1, timeout_ms);
    }
}

/// Reads one `\n`-terminated line (without the newline); `None` at EOF.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "line too long or not terminated",
        ));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

fn serve_connection(stream: &TcpStream, name: &str) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(SERVER_IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream;
    let mut reader = BufReader::new(stream);
    while let Some(line) = read_line(&mut reader)? {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("WHO"), None, _) => writer.write_all(format!("{name}\n").as_bytes())?,
            (Some("GET"), Some(n), None) => {
                let Ok(n) = n.parse::<u64>() else {
                    writer.write_all(b"ERR GET needs a byte count\n")?;
                    return Ok(());
                };
                let mut stream = PayloadStream::new();
                let mut buf = vec![0u8; 64 * 1024];
                let mut left = n;
                while left > 0 {
                    let k = left.min(buf.len() as u64) as usize;
                    stream.fill(&mut buf[..k]);
                    writer.write_all(&buf[..k])?;
                    left -= k as u64;
                }
                writer.flush()?;
                return writer.shutdown(Shutdown::Write);
            }
            (Some("PUT"), Some(n), None) => {
                let Ok(n) = n.parse::<u64>() else {
                    writer.write_all(b"ERR PUT needs a byte count\n")?;
                    return Ok(());
                };
                let mut hasher = Sha256::new();
                let mut left = n;
                while left > 0 {
                    let chunk = reader.fill_buf()?;
                    if chunk.is_empty() {
                        writer.write_all(
                            format!("ERR closed after {} of {n} bytes\n", n - left).as_bytes(),
                        )?;
                        return Ok(());
                    }
                    let k = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    hasher.update(&chunk[..k]);
                    reader.consume(k);
                    left -= k as u64;
                }
                writer.write_all(format!("{}\n", hex(&hasher.finalize())).as_bytes())?;
                writer.flush()?;
                return writer.shutdown(Shutdown::Write);
            }
            (Some("ECHO"), None, _) => {
                while let Some(line) = read_line(&mut reader)? {
                    writer.write_all(format!("{line}\n").as_bytes())?;
                }
                return Ok(());
            }
            _ => {
                writer.write_all(
                    b"ERR unknown request; use WHO, GET <bytes>, PUT <bytes> or ECHO\n",
                )?;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Echoes datagrams back. An IPv6 socket answers from the address each
/// datagram was sent to (`IPV6_PKTINFO`), not from whatever source the
/// kernel would pick for the peer: a server bound to `[::]` on a host with
/// several addresses (a member: its WAN address and the home address) must
/// answer from the home address, or the client's connected socket drops
/// the answer and the answer skips the tunnel.
fn udp_echo_loop(socket: &UdpSocket, stop: &AtomicBool) {
    let pktinfo = socket.local_addr().is_ok_and(|a| a.is_ipv6()) && enable_pktinfo(socket).is_ok();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let received = if pktinfo {
            recv_with_destination(socket, &mut buf)
        } else {
            socket.recv_from(&mut buf).map(|(n, peer)| (n, peer, None))
        };
        match received {
            Ok((n, peer, Some(destination))) => {
                let _ = send_from(socket, &buf[..n], peer, destination);
            }
            Ok((n, peer, None)) => {
                let _ = socket.send_to(&buf[..n], peer);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                eprintln!("homeaddr-testapp: UDP echo: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn enable_pktinfo(socket: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid int option value on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Room for one `in6_pktinfo` control message, aligned for `cmsghdr`.
type ControlBuffer = [u64; 8];

/// One datagram, its sender, and the local address it was sent to.
fn recv_with_destination(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<libc::in6_pktinfo>)> {
    // SAFETY: all-zero is a valid sockaddr_in6 and msghdr.
    let mut peer: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut control: ControlBuffer = [0; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut peer as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of::<ControlBuffer>();
    // SAFETY: msg points at live buffers of the given sizes for the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut destination = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled in,
    // within msg_controllen; the payload is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::IPPROTO_IPV6 && (*cmsg).cmsg_type == libc::IPV6_PKTINFO {
                destination = Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>(),
                ));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let peer = SocketAddr::V6(std::net::SocketAddrV6::new(
        std::net::Ipv6Addr::from(peer.sin6_addr.s6_addr),
        u16::from_be(peer.sin6_port),
        peer.sin6_flowinfo,
        peer.sin6_scope_id,
    ));
    Ok((n as usize, peer, destination))
}

/// Sends `data` to `peer` from the local address in `from`.
fn send_from(
    socket: &UdpSocket,
    data: &[u8],
    peer: SocketAddr,
    from: libc::in6_pktinfo,
) -> io::Result<()> {
    let SocketAddr::V6(peer) = peer else {
        return socket.send_to(data, peer).map(drop);
    };
    // SAFETY: all-zero is a valid sockaddr_in6 and msghdr.
    let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    to.sin6_port = peer.port().to_be();
    to.sin6_addr.s6_addr = peer.ip().octets();
    to.sin6_flowinfo = peer.flowinfo();
    to.sin6_scope_id = peer.scope_id();
    let mut control: ControlBuffer = [0; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut to as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic; the control buffer
    // is large enough for one in6_pktinfo message (checked by the assert),
    // and sendmsg only reads the buffers msg points at.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<libc::in6_pktinfo>() as u32) as usize;
        assert!(space <= std::mem::size_of::<ControlBuffer>());
        msg.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
        (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in6_pktinfo>() as u32) as usize;
        // Interface 0: let routing pick it; only the source address is fixed.
        let info = libc::in6_pktinfo {
            ipi6_addr: from.ipi6_addr,
            ipi6_ifindex: 0,
        };
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>(), info);
        if libc::sendmsg(socket.as_raw_fd(), &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Clients.

/// SCHED_FIFO priority of [`realtime`]: below the WAN emulator's threads
/// (10 by default), so that the emulator still delivers on time.
pub const PROBE_PRIORITY: i32 = 5;

/// Runs `f` with the calling thread at real-time priority
/// ([`PROBE_PRIORITY`]) and restores its policy after; threads and
/// processes that `f` starts inherit the priority and keep it.
///
/// For light probes that measure the emulated path (RTT series, echo
/// servers): on a loaded machine a normal thread waits for a core for
/// milliseconds after each wake-up, and that wait would be measured as
/// latency. Not for bulk transfers: they would starve the machine.
pub fn realtime<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: reads and sets only the calling thread's scheduling policy,
    // with valid pointers to locals.
    let (policy, param) = unsafe {
        let mut policy = 0;
        let mut param: libc::sched_param = std::mem::zeroed();
        libc::pthread_getschedparam(libc::pthread_self(), &mut policy, &mut param);
        let rt = libc::sched_param {
            sched_priority: PROBE_PRIORITY,
        };
        libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &rt);
        (policy, param)
    };
    let result = f();
    // SAFETY: as above.
    unsafe { libc::pthread_setschedparam(libc::pthread_self(), policy, &param) };
    result
}

fn connect(server: SocketAddr, timeout: Duration) -> Result<TcpStream, TestAppError> {
    let stream = TcpStream::connect_timeout(&server, timeout).map_err(io_ctx(format!(
        "connecting to {server} (timeout {timeout:?})"
    )))?;
    let setup = || -> io::Result<()> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))
    };
    setup().map_err(io_ctx(format!("configuring the connection to {server}")))?;
    Ok(stream)
}

fn expect_line(
    reader: &mut impl BufRead,
    server: SocketAddr,
    timeout: Duration,
    what: &str,
) -> Result<String, TestAppError> {
    match read_line(reader) {
        Ok(Some(line)) if line.starts_with("ERR") => Err(TestAppError::Protocol {
            peer: server,
            detail: line,
        }),
        Ok(Some(line)) => Ok(line),
        Ok(None) => Err(TestAppError::Protocol {
            peer: server,
            detail: format!("connection closed while waiting for {what}"),
        }),
        Err(e) => Err(io_ctx(format!(
            "reading {what} from {server} (timeout {timeout:?})"
        ))(e)),
    }
}

/// Result of [`get`], printed as JSON by `homeaddr-testapp get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetReport {
    /// Bytes received.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of them (compare with [`expected_sha256`]).
    pub sha256: String,
    /// Seconds from the start of the connect to the last byte.
    pub seconds: f64,
    /// The server's name (its `WHO` answer on the same connection).
    pub server: String,
    /// The address connected to.
    pub peer: SocketAddr,
}

impl GetReport {
    /// Goodput in Mbit/s.
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.seconds.max(1e-9) / 1e6
    }
}

/// Downloads `bytes` bytes from the server at `server` (after asking its
/// name on the same connection); every read and write times out after
/// `timeout`. The download must be exactly `bytes` long.
pub fn get(server: SocketAddr, bytes: u64, timeout: Duration) -> Result<GetReport, TestAppError> {
    let start = Instant::now();
    let mut stream = connect(server, timeout)?;
    stream
        .write_all(format!("WHO\nGET {bytes}\n").as_bytes())
        .map_err(io_ctx(format!("sending the request to {server}")))?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let name = expect_line(&mut reader, server, timeout, "the server name")?;
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    loop {
        let chunk = reader.fill_buf().map_err(io_ctx(format!(
            "downloading from {server} after {received} of {bytes} bytes (timeout {timeout:?})"
        )))?;
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        hasher.update(chunk);
        reader.consume(n);
        received += n as u64;
        if received > bytes {
            return Err(TestAppError::Protocol {
                peer: server,
                detail: format!("sent more than the {bytes} bytes asked for"),
            });
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if received != bytes {
        return Err(TestAppError::Protocol {
            peer: server,
            detail: format!("closed after {received} of {bytes} bytes"),
        });
    }
    Ok(GetReport {
        bytes: received,
        sha256: hex(&hasher.finalize()),
        seconds,
        server: name,
        peer: server,
    })
}

/// Result of [`put`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutReport {
    /// Bytes sent.
    pub bytes: u64,
    /// The server's lower-case hex SHA-256 of what it received (compare
    /// with [`expected_sha256`]).
    pub sha256: String,
    /// Seconds from the start of the connect to the server's answer.
    pub seconds: f64,
    /// The server's name (its `WHO` answer on the same connection).
    pub server: String,
    /// The address connected to.
    pub peer: SocketAddr,
}

impl PutReport {
    /// Goodput in Mbit/s.
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.seconds.max(1e-9) / 1e6
    }
}

/// Uploads the first `bytes` bytes of the payload stream to the server at
/// `server` (after asking its name on the same connection) and returns the
/// SHA-256 the server computed over what it received; every read and write
/// times out after `timeout`.
pub fn put(server: SocketAddr, bytes: u64, timeout: Duration) -> Result<PutReport, TestAppError> {
    let start = Instant::now();
    let mut stream = connect(server, timeout)?;
    stream
        .write_all(format!("WHO\nPUT {bytes}\n").as_bytes())
        .map_err(io_ctx(format!("sending the request to {server}")))?;
    let mut payload = PayloadStream::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < bytes {
        let k = (bytes - sent).min(buf.len() as u64) as usize;
        payload.fill(&mut buf[..k]);
        stream.write_all(&buf[..k]).map_err(io_ctx(format!(
            "uploading to {server} after {sent} of {bytes} bytes (timeout {timeout:?})"
        )))?;
        sent += k as u64;
    }
    let mut reader = BufReader::new(stream);
    let name = expect_line(&mut reader, server, timeout, "the server name")?;
    let sha256 = expect_line(&mut reader, server, timeout, "the server's SHA-256")?;
    Ok(PutReport {
        bytes,
        sha256,
        seconds: start.elapsed().as_secs_f64(),
        server: name,
        peer: server,
    })
}

/// Asks the server at `server` for its name.
pub fn who(server: SocketAddr, timeout: Duration) -> Result<String, TestAppError> {
    let mut stream = connect(server, timeout)?;
    stream
        .write_all(b"WHO\n")
        .map_err(io_ctx(format!("sending WHO to {server}")))?;
    let mut reader = BufReader::new(stream);
    expect_line(&mut reader, server, timeout, "the server name")
}

/// Result of [`rtt`], printed as JSON by `homeaddr-testapp rtt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RttReport {
    /// The server's name.
    pub server: String,
    /// The address connected to.
    pub peer: SocketAddr,
    /// Each round trip in microseconds, in order, all on one connection.
    pub rtt_us: Vec<u64>,
    /// Smallest sample.
    pub min_us: u64,
    /// Median sample.
    pub median_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

/// Median of `samples` (the upper one for even counts); 0 when empty.
pub fn median(samples: &[u64]) -> u64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// Measures `count` round trips on ONE TCP connection (`ECHO` mode), one
/// every `interval`; each round trip may take up to `timeout`.
pub fn rtt(
    server: SocketAddr,
    count: usize,
    interval: Duration,
    timeout: Duration,
) -> Result<RttReport, TestAppError> {
    let mut stream = connect(server, timeout)?;
    let mut writer = stream
        .try_clone()
        .map_err(io_ctx("cloning the socket".into()))?;
    stream
        .write_all(b"WHO\nECHO\n")
        .map_err(io_ctx(format!("sending the request to {server}")))?;
    let mut reader = BufReader::new(stream);
    let name = expect_line(&mut reader, server, timeout, "the server name")?;
    let mut samples = Vec::with_capacity(count);
    let mut next = Instant::now();
    for i in 0..count {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next = Instant::now() + interval;
        let probe = format!("rtt {i}");
        let sent = Instant::now();
        writer
            .write_all(format!("{probe}\n").as_bytes())
            .map_err(io_ctx(format!("sending probe {i} to {server}")))?;
        let echoed = expect_line(&mut reader, server, timeout, &format!("echo of probe {i}"))?;
        let took = sent.elapsed();
        if echoed != probe {
            return Err(TestAppError::Protocol {
                peer: server,
                detail: format!("echo {echoed:?} does not match probe {probe:?}"),
            });
        }
        samples.push(took.as_micros() as u64);
    }
    Ok(RttReport {
        server: name,
        peer: server,
        min_us: samples.iter().copied().min().unwrap_or(0),
        median_us: median(&samples),
        max_us: samples.iter().copied().max().unwrap_or(0),
        rtt_us: samples,
    })
}

/// Result of [`udp_echo`], printed as JSON by `homeaddr-testapp udp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UdpEchoReport {
    /// Datagrams sent.
    pub sent: usize,
    /// Distinct datagrams echoed back.
    pub received: usize,
    /// Round trip of each datagram in microseconds; `None` if lost.
    pub rtt_us: Vec<Option<u64>>,
    /// Median of the received round trips.
    pub median_us: u64,
}

impl UdpEchoReport {
    /// Fraction of datagrams not echoed.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            (self.sent - self.received) as f64 / self.sent as f64
        }
    }
}

const UDP_MAGIC: &[u8; 4] = b"HAue";

/// Sends `count` datagrams of `size` bytes (at least 16) to the UDP echo at
/// `server`, one every `interval`, and waits up to `timeout` after the last
/// one for echoes.
pub fn udp_echo(
    server: SocketAddr,
    count: usize,
    interval: Duration,
    size: usize,
    timeout: Duration,
) -> Result<UdpEchoReport, TestAppError> {
    let size = size.max(16);
    let bind: SocketAddr = match server {
        SocketAddr::V6(_) => "[::]:0".parse().expect("valid"),
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("valid"),
    };
    let socket = UdpSocket::bind(bind).map_err(io_ctx("binding a UDP socket".into()))?;
    raise_buffers(&Socket::from(
        socket
            .try_clone()
            .map_err(io_ctx("cloning the UDP socket".into()))?,
    ));
    socket
        .connect(server)
        .map_err(io_ctx(format!("connecting UDP to {server}")))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(io_ctx("setting the UDP read timeout".into()))?;
    // Tells this run's echoes from late ones of an earlier run on the same port.
    let session: u32 = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; count]));
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let socket = socket
            .try_clone()
            .map_err(io_ctx("cloning the UDP socket".into()))?;
        let (sent_at, done) = (Arc::clone(&sent_at), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut rtts: Vec<Option<u64>> = vec![None; count];
            let mut buf = vec![0u8; 65_536];
            let mut deadline: Option<Instant> = None;
            loop {
                if deadline.is_none() && done.load(Ordering::SeqCst) {
                    deadline = Some(Instant::now() + timeout);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) || rtts.iter().all(Option::is_some)
                {
                    return rtts;
                }
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                let now = Instant::now();
                if n < 16 || &buf[..4] != UDP_MAGIC || buf[4..8] != session.to_be_bytes() {
                    continue;
                }
                let seq = u64::from_be_bytes(buf[8..16].try_into().expect("8 bytes")) as usize;
                let sent = sent_at
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .get(seq)
                    .copied()
                    .flatten();
                if let (Some(sent), Some(slot)) = (sent, rtts.get_mut(seq)) {
                    slot.get_or_insert((now - sent).as_micros() as u64);
                }
            }
        })
    };
    let mut datagram = vec![0u8; size];
    datagram[..4].copy_from_slice(UDP_MAGIC);
    datagram[4..8].copy_from_slice(&session.to_be_bytes());
    let mut next = Instant::now();
    let mut send_result = Ok(());
    for seq in 0..count {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += interval;
        datagram[8..16].copy_from_slice(&(seq as u64).to_be_bytes());
        sent_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())[seq] = Some(Instant::now());
        if let Err(e) = send_datagram(&socket, &datagram) {
            send_result = Err(io_ctx(format!("sending datagram {seq} to {server}"))(e));
            break;
        }
    }
    done.store(true, Ordering::SeqCst);
    let rtts = receiver
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    send_result?;
    let received: Vec<u64> = rtts.iter().filter_map(|r| *r).collect();
    Ok(UdpEchoReport {
        sent: count,
        received: received.len(),
        median_us: median(&received),
        rtt_us: rtts,
    })
}

/// How many times one datagram is offered again after the socket reported
/// an ICMP error: each report stands for one ICMPv6 message that came back,
/// and a path has few hops whose MTU can shrink.
const ICMP_RETRIES: usize = 4;

/// Sends one datagram on a connected UDP socket. The kernel reports an
/// ICMP error that came back for an earlier datagram on the *next* send,
/// and that send does not leave: ECONNREFUSED (port unreachable: the
/// earlier datagram is lost), or EMSGSIZE after a Packet Too Big (the path
/// MTU shrank; sent again, the datagram leaves fragmented for the new
/// MTU). The error is not this datagram's, so it is sent again. A datagram
/// still refused after [`ICMP_RETRIES`] reports counts as lost
/// (ECONNREFUSED) or is an error (EMSGSIZE: the socket cannot carry it).
fn send_datagram(socket: &UdpSocket, datagram: &[u8]) -> io::Result<()> {
    let mut reports = 0;
    loop {
        match socket.send(datagram) {
            Ok(_) => return Ok(()),
            Err(e) if reports < ICMP_RETRIES && is_icmp_report(&e) => reports += 1,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Whether a send error is the report of an ICMP error for an earlier datagram.
fn is_icmp_report(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionRefused || e.raw_os_error() == Some(libc::EMSGSIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_stream_is_independent_of_chunking() {
        let mut whole = vec![0u8; 1000];
        PayloadStream::new().fill(&mut whole);
        let mut pieces = vec![0u8; 1000];
        let mut stream = PayloadStream::new();
        let mut at = 0;
        for len in [1, 7, 8, 3, 100, 13, 868] {
            stream.fill(&mut pieces[at..at + len]);
            at += len;
        }
        assert_eq!(at, 1000);
        assert_eq!(whole, pieces);
        // Fixed seed: the start of the stream never changes.
        assert_eq!(
            hex(&whole[..8]),
            hex(&SplitMix64::new(PAYLOAD_SEED).next_u64().to_le_bytes())
        );
    }

    /// An ICMP error pending on a connected socket fails the next plain
    /// send; `send_datagram` takes it as the report it is and sends again.
    #[test]
    fn a_pending_icmp_error_does_not_fail_the_next_datagram() {
        let closed = UdpSocket::bind("[::1]:0").unwrap();
        let port = closed.local_addr().unwrap();
        drop(closed);
        let socket = UdpSocket::bind("[::1]:0").unwrap();
        socket.connect(port).unwrap();
        let pending = |socket: &UdpSocket| {
            socket.send(b"probe").unwrap();
            let mut pfd = libc::pollfd {
                fd: socket.as_raw_fd(),
                events: 0,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the call.
            let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
            assert!(
                n == 1 && pfd.revents & libc::POLLERR != 0,
                "no ICMP error came back"
            );
        };
        pending(&socket);
        assert_eq!(
            socket.send(b"plain").unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
        pending(&socket);
        send_datagram(&socket, b"again").unwrap();
    }

    #[test]
    fn expected_sha256_of_empty_is_the_empty_hash() {
        assert_eq!(
            expected_sha256(0),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(expected_sha256(1), expected_sha256(2));
    }

    #[test]
    fn loopback_get_rtt_who_udp() {
        let server = Server::start("127.0.0.1:0".parse().unwrap(), "m1").unwrap();
        let addr = server.local_addr();
        let t = Duration::from_secs(5);
        let report = get(addr, 1_234_567, t).unwrap();
        assert_eq!(report.sha256, expected_sha256(1_234_567));
        assert_eq!(report.server, "m1");
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<GetReport>(&json).unwrap(), report);
        assert_eq!(who(addr, t).unwrap(), "m1");
        let up = put(addr, 2_345_678, t).unwrap();
        assert_eq!(
            (up.sha256.as_str(), up.server.as_str()),
            (expected_sha256(2_345_678).as_str(), "m1")
        );
        let r = rtt(addr, 5, Duration::from_millis(1), t).unwrap();
        assert_eq!((r.rtt_us.len(), r.server.as_str()), (5, "m1"));
        let u = udp_echo(
            addr,
            20,
            Duration::from_micros(100),
            64,
            Duration::from_millis(500),
        )
        .unwrap();
        assert_eq!((u.sent, u.received), (20, 20));
    }

    #[test]
    fn udp_echo_answers_from_the_address_it_was_sent_to() {
        // Bound to [::], reached at ::1: the answer must come from ::1 for
        // the client's connected socket to accept it (also with a large,
        // locally fragmented datagram).
        let Ok(server) = Server::start("[::]:0".parse().unwrap(), "any") else {
            return; // no IPv6 on this machine
        };
        let addr: SocketAddr = format!("[::1]:{}", server.local_addr().port())
            .parse()
            .unwrap();
        for size in [64, 3000] {
            let u = udp_echo(
                addr,
                10,
                Duration::from_micros(100),
                size,
                Duration::from_millis(500),
            )
            .unwrap();
            assert_eq!((u.sent, u.received), (10, 10), "size {size}");
        }
    }

    #[test]
    fn bad_requests_get_an_error_and_short_downloads_fail() {
        let server = Server::start("127.0.0.1:0".parse().unwrap(), "x").unwrap();
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"HELLO\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("ERR"), "{answer}");
        // A refused connection is an Io error naming the peer.
        drop(server);
        let err = get("127.0.0.1:1".parse().unwrap(), 10, Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
