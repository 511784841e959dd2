//! Wire formats: the tunnel frame, the Mobility Header messages and options,
//! and views on the inner IPv6 packets the data plane carries.
//!
//! Layer: bottom of [`crate`]. Every format has a zero-copy view
//! (`Xxx<T: AsRef<[u8]>>` with `new_checked`, after which no accessor panics)
//! and a typed representation (`XxxRepr` / enums below) with `parse`, `emit`
//! and `buffer_len`. Any byte string parses to a value or a [`WireError`];
//! nothing here panics on input. The layouts are in docs/PROTOCOL.md.

pub mod endpoint;
pub mod frame;
pub mod inner;
pub mod mh;
pub mod option;

use std::net::{IpAddr, Ipv6Addr};

pub use endpoint::{ENDPOINT_LEN, emit_endpoint, parse_endpoint};
pub use frame::{FRAME_HEADER_LEN, FrameKind, TAG_LEN, TUNNEL_VERSION, TunnelFrame, TunnelHeader};
pub use inner::{FlowKey, Fragment, InnerInfo, TcpFlags, TcpInfo};
pub use mh::{MessageBody, MhType, MobilityHeader, MobilityMessage};
pub use option::{MobilityOption, ReportedFlow, ReportedState};

/// A member's stable identity: the RFC 5648 Binding ID (BID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(pub u16);

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "m{}", self.0)
    }
}

/// Errors of the wire layer. Every parse error says which field was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer ends before the field named here.
    #[error("truncated: buffer ends inside {0}")]
    Truncated(&'static str),
    /// The tunnel frame announces a version this build does not speak.
    #[error("unsupported tunnel version {0} (this build speaks version 2)")]
    UnsupportedVersion(u8),
    /// The tunnel frame kind is not data or control.
    #[error("unknown tunnel frame kind {0}")]
    UnknownFrameKind(u8),
    /// The Mobility Header's payload proto is not 59 (IPPROTO_NONE).
    #[error("mobility header payload proto {0}, expected 59")]
    BadPayloadProto(u8),
    /// The Mobility Header's length field disagrees with the buffer or the message type.
    #[error("mobility header length {0} is invalid for this message")]
    BadLength(usize),
    /// A Mobility Header type this implementation does not know.
    #[error("unknown mobility header type {0}")]
    UnknownMhType(u8),
    /// A mobility option's length is wrong for its type.
    #[error("mobility option type {kind} has invalid length {len}")]
    BadOptionLength {
        /// Option type.
        kind: u8,
        /// Length found on the wire.
        len: u8,
    },
    /// A field holds a value the format does not allow.
    #[error("invalid value in {0}")]
    InvalidValue(&'static str),
    /// The output buffer is too small for `emit`.
    #[error("output buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

/// Convenience: an IPv4 or IPv6 address as the 16 bytes the wire carries
/// (IPv4 as an IPv4-mapped IPv6 address).
pub fn ip_to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(v6) => v6,
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
    }
}
