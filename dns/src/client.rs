//! A minimal DNS client: one query over UDP, retried over TCP when the
//! reply is truncated (RFC 7766 sec. 5). Used by [`crate::discover`], the
//! loopback tests and the load generator.
//!
//! Layer: shell (tokio sockets). Contract: returns the raw reply whose ID
//! and question match the query; anything else is an error.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use crate::wire::flag;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Socket error.
    #[error("network error talking to {server}: {source}")]
    Io {
        /// The server.
        server: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// No reply within the time limit, after all tries.
    #[error("no reply from {0}; check that the server runs and the address is right")]
    Timeout(SocketAddr),
    /// The reply does not belong to the query.
    #[error("reply from {0} does not match the query")]
    Mismatch(SocketAddr),
}

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Per-try wait.
    pub timeout: Duration,
    /// Number of UDP tries.
    pub tries: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(1500),
            tries: 3,
        }
    }
}

fn matches(query: &[u8], reply: &[u8]) -> bool {
    if reply.len() < 12 || query.len() < 12 || reply[0..2] != query[0..2] || reply[2] & 0x80 == 0 {
        return false;
    }
    // Same question section (bytes after the header up to the question's
    // end), when the reply has one.
    let qd = u16::from_be_bytes([reply[4], reply[5]]);
    if qd == 0 {
        return true;
    }
    let mut end = 12;
    while let Some(&len) = query.get(end) {
        end += 1;
        if len == 0 {
            break;
        }
        end += len as usize;
    }
    end += 4;
    match (query.get(12..end), reply.get(12..end)) {
        (Some(q), Some(r)) => q.eq_ignore_ascii_case(r),
        _ => false,
    }
}

/// Sends `query` to `server` over UDP; on TC retries over TCP.
pub async fn exchange(
    server: SocketAddr,
    query: &[u8],
    retry: Retry,
) -> Result<Vec<u8>, ClientError> {
    let reply = exchange_udp(server, query, retry).await?;
    let tc = u16::from_be_bytes([reply[2], reply[3]]) & flag::TC != 0;
    if tc {
        return exchange_tcp(server, query, retry.timeout).await;
    }
    Ok(reply)
}

/// One UDP exchange with retries.
pub async fn exchange_udp(
    server: SocketAddr,
    query: &[u8],
    retry: Retry,
) -> Result<Vec<u8>, ClientError> {
    let io = |source| ClientError::Io { server, source };
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await.map_err(io)?;
    socket.connect(server).await.map_err(io)?;
    let mut buf = vec![0u8; 65535];
    for _ in 0..retry.tries.max(1) {
        socket.send(query).await.map_err(io)?;
        let deadline = tokio::time::Instant::now() + retry.timeout;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(io(e)),
                Ok(Ok(n)) => {
                    // Ignore stray datagrams (spoofing defence).
                    if matches(query, &buf[..n]) {
                        return Ok(buf[..n].to_vec());
                    }
                }
            }
        }
    }
    Err(ClientError::Timeout(server))
}

/// One TCP exchange (2-octet length framing, RFC 1035 sec. 4.2.2).
pub async fn exchange_tcp(
    server: SocketAddr,
    query: &[u8],
    wait: Duration,
) -> Result<Vec<u8>, ClientError> {
    let io = |source| ClientError::Io { server, source };
    let run = async {
        let mut stream = TcpStream::connect(server).await.map_err(io)?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await.map_err(io)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.map_err(io)?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply).await.map_err(io)?;
        if !matches(query, &reply) {
            return Err(ClientError::Mismatch(server));
        }
        Ok(reply)
    };
    timeout(wait, run)
        .await
        .map_err(|_| ClientError::Timeout(server))?
}
