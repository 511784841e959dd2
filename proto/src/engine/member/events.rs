//! What the member reports: events for its operator, and counters.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::engine::DropCounters;

/// Something the member wants its operator to know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberEvent {
    /// An AP accepted the registration.
    Registered {
        /// The AP (its configured endpoint).
        ap: SocketAddr,
        /// Care-of endpoint registered.
        care_of: SocketAddr,
        /// Lifetime granted.
        lifetime: Duration,
    },
    /// An AP refused the registration; the member will not retry with
    /// it (the others go on: [`Member::state`](super::Member::state) is
    /// Refused once every AP refused).
    RegistrationRefused {
        /// The AP.
        ap: SocketAddr,
        /// BA status.
        status: u8,
    },
    /// An AP reported an authentication failure (unsigned, so never
    /// believed: the member keeps retrying).
    AuthFailureReported {
        /// The AP.
        ap: SocketAddr,
    },
    /// The registration with an AP lapsed without a refresh.
    RegistrationLost {
        /// The AP.
        ap: SocketAddr,
    },
    /// An AP restarted: its silence or its zero-nonce hint made the member
    /// register again, and the AP answered with a new session.
    ApRestarted {
        /// The AP.
        ap: SocketAddr,
    },
    /// Deregistration from every AP finished.
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
    /// With direct server return: `client` runs a shim (an AP's sealed
    /// Shim Notice made it a correspondent), so answers to it must come
    /// back to the engine to be sealed: the daemon routes them into the
    /// TUN before it writes any packet of this batch there.
    ShimClientAdded {
        /// Client.
        client: Ipv6Addr,
    },
    /// With direct server return: `client` is no longer a correspondent;
    /// its route into the TUN goes, and answers to it leave natively.
    ShimClientRemoved {
        /// Client.
        client: Ipv6Addr,
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
    /// Answers to legacy clients that reached the engine with direct
    /// server return on and went back to the kernel to leave natively.
    /// The kernel routes legacy answers past the member daemon, so only
    /// stragglers land here (an answer to a correspondent just forgotten).
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
    /// Zero-nonce hints from an AP acted on (a BU at once).
    pub ap_hints: u64,
    /// Flow Report messages sent (to all APs).
    pub flow_reports: u64,
    /// Flow options sent in them.
    pub flows_reported: u64,
    /// Punches from shims (dropped: they only open the shim's NAT).
    pub punches: u64,
    /// Empty sealed data frames (NAT keepalives) received and dropped.
    pub keepalives: u64,
    /// NAT keepalives sent on idle direct binding sessions.
    pub nat_keepalives: u64,
    /// Correspondents whose shim endpoint moved (a newer sealed frame
    /// from a new source, or a Shim Notice of the same instance).
    pub roams: u64,
    /// Limit hits by limit.
    pub limit_hits: LimitHits,
}

/// How often each limit of the member was hit (docs/PROTOCOL.md 7.6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitHits {
    /// A Shim Notice found the correspondent table full
    /// (`max_correspondents`).
    pub correspondents: u64,
    /// A new legacy flow found the flow table full (`max_flows`): served,
    /// not tracked nor reported.
    pub flows: u64,
}

impl LimitHits {
    /// (limit name, hits) for every limit, for exporting counters.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("correspondents", self.correspondents),
            ("flows", self.flows),
        ]
        .into_iter()
    }
}
