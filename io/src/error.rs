//! Errors of the I/O layer: one small enum per operation.

use std::io;
use std::net::SocketAddr;

/// Creating a [`TunDevice`](crate::TunDevice) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunError {
    /// The kernel refused the device or its configuration.
    #[error(
        "cannot create TUN device {name:?}: {source} \
         (needs root or CAP_NET_ADMIN, /dev/net/tun, a name of at most 15 bytes \
         that no other interface uses, and IPv6 enabled for addresses)"
    )]
    Create {
        /// The requested interface name.
        name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

/// Setting up a [`UdpTunnel`](crate::UdpTunnel) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UdpError {
    /// `bind` failed.
    #[error(
        "cannot bind the UDP tunnel socket to {addr}: {source} \
         (is the port taken, or the address not configured on this host?)"
    )]
    Bind {
        /// The requested local address.
        addr: SocketAddr,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The socket could not be prepared for batched I/O.
    #[error("cannot set up UDP socket {addr} for batched I/O: {source}")]
    Setup {
        /// The socket's local address (unspecified if unknown).
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// A packet or datagram could not be added to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The batch holds as many items or bytes as it can: send it, then push
    /// again.
    #[error("the batch is full: send it, then push again")]
    Full,
    /// The item is larger than any batch of this kind can carry.
    #[error("{len} bytes exceed the {max}-byte limit of this batch")]
    TooLarge {
        /// Length that was pushed.
        len: usize,
        /// Largest length accepted.
        max: usize,
    },
}
