//! What the member reports: events for its operator, and counters.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::engine::DropCounters;

/// Something the member wants its operator to know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberEvent {
    /// The AP accepted the registration.
    Registered {
        /// Care-of endpoint registered.
        care_of: SocketAddr,
        /// Lifetime granted.
        lifetime: Duration,
    },
    /// The AP refused the registration; the member will not retry.
    RegistrationRefused {
        /// BA status.
        status: u8,
    },
    /// The AP reported an authentication failure (unsigned, so never
    /// believed: the member keeps retrying).
    AuthFailureReported,
    /// The registration lapsed without a refresh.
    RegistrationLost,
    /// Deregistration finished.
    Left,
    /// Return routability started with a shim.
    ReturnRoutabilityStarted {
        /// Client.
        client: Ipv6Addr,
    },
    /// The shim acknowledged our binding: direct path in use.
    RouteOptimized {
        /// Client.
        client: Ipv6Addr,
        /// Its shim.
        shim: SocketAddr,
        /// From starting return routability to the BA.
        elapsed: Duration,
    },
    /// The shim rejected or lost our binding.
    BindingRejected {
        /// Client.
        client: Ipv6Addr,
        /// BA or BE status.
        status: u8,
    },
}

/// Member counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberCounters {
    /// Drops by reason.
    pub drops: DropCounters,
    /// Packets received through the AP.
    pub via_ap_in: u64,
    /// Packets received directly from shims.
    pub direct_in: u64,
    /// Packets sent through the AP.
    pub via_ap_out: u64,
    /// Packets sent directly to shims.
    pub direct_out: u64,
    /// Packets to legacy clients returned natively (direct server return).
    pub direct_return: u64,
    /// Registration BUs sent, retransmissions included.
    pub registration_bus: u64,
    /// Registration retransmissions.
    pub retransmissions: u64,
    /// Return routability runs that ended in a binding.
    pub rr_successes: u64,
    /// Return routability runs that gave up or were rejected.
    pub rr_failures: u64,
    /// Unsigned BAs 146 for our outstanding BU (never final: counted only).
    pub auth_failures_reported: u64,
    /// Limit hits by limit.
    pub limit_hits: LimitHits,
}

/// How often each limit of the member was hit (docs/PROTOCOL.md 7.6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitHits {
    /// A Shim Notice found the correspondent table full
    /// (`max_correspondents`).
    pub correspondents: u64,
}

impl LimitHits {
    /// (limit name, hits) for every limit, for exporting counters.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [("correspondents", self.correspondents)].into_iter()
    }
}
