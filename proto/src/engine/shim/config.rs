//! The shim's configuration and its defaults.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::crypto::Protection;

/// A new nonce every this often (RFC 6275 sec. 5.2.7).
pub const DEFAULT_NONCE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a nonce is accepted (RFC 6275 MAX_NONCE_LIFETIME).
pub const DEFAULT_NONCE_LIFETIME: Duration = Duration::from_secs(240);
/// Longest binding lifetime granted (RFC 6275 MAX_RR_BINDING_LIFETIME).
pub const DEFAULT_MAX_BINDING_LIFETIME: Duration = Duration::from_secs(420);
/// Idle timeout of an open TCP flow.
pub const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(600);
/// Idle timeout of a closing TCP flow and of other flows.
pub const DEFAULT_OTHER_IDLE: Duration = Duration::from_secs(60);
/// Flow table size limit.
pub const DEFAULT_MAX_FLOWS: usize = 262_144;
/// A sealed keepalive to the AP this often while the shim has flows: a
/// third of the AP's `shim_idle` (300 s), so the AP keeps knowing it.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(100);
/// The keepalive interval instead of `keepalive` while the shim is behind
/// a NAT (the Welcome's observed endpoint is not `local`): below the UDP
/// timeouts of common NATs (30 s and more). One value for the AP link and
/// the direct sessions.
pub use crate::engine::DEFAULT_NAT_KEEPALIVE;

/// Client shim configuration.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    /// The access point's tunnel endpoint.
    pub access_point: SocketAddr,
    /// The home address whose traffic this shim carries (an IPv4 HoA as
    /// IPv4-mapped); sent in the Hello's Home Address option.
    pub home_address: Ipv6Addr,
    /// This shim's own tunnel endpoint, as members see it.
    pub local: SocketAddr,
    /// Accept binding updates (route optimization).
    pub route_optimization: bool,
    /// A new nonce every this often (RFC 6275 sec. 5.2.7).
    pub nonce_interval: Duration,
    /// A nonce is accepted this long (MAX_NONCE_LIFETIME, 240 s).
    pub nonce_lifetime: Duration,
    /// Longest binding lifetime granted (MAX_RR_BINDING_LIFETIME, 420 s).
    pub max_binding_lifetime: Duration,
    /// Idle timeout of a TCP flow.
    pub tcp_idle: Duration,
    /// Idle timeout of a TCP flow after FIN, and of non-TCP flows.
    pub other_idle: Duration,
    /// Flow table size limit.
    pub max_flows: usize,
    /// A sealed keepalive (BRR) to the AP this often while there are flows.
    pub keepalive: Duration,
    /// Behind a NAT: the AP keepalive interval instead of `keepalive` (0:
    /// `keepalive`), and an empty sealed data frame goes on each direct
    /// binding session idle this long (0: never).
    pub nat_keepalive: Duration,
    /// How sent frames are sealed, and whether unencrypted sealed frames
    /// are accepted (`Integrity`) or refused (`Encrypt`, the default).
    pub protection: Protection,
    /// Seed of the engine's random generator (Kcn, nonces, instance,
    /// session indices and nonces, X25519 secrets).
    pub seed: [u8; 32],
}

impl ShimConfig {
    /// Defaults for the given endpoints.
    pub fn new(
        access_point: SocketAddr,
        home_address: Ipv6Addr,
        local: SocketAddr,
        seed: [u8; 32],
    ) -> Self {
        Self {
            access_point,
            home_address,
            local,
            route_optimization: true,
            nonce_interval: DEFAULT_NONCE_INTERVAL,
            nonce_lifetime: DEFAULT_NONCE_LIFETIME,
            max_binding_lifetime: DEFAULT_MAX_BINDING_LIFETIME,
            tcp_idle: DEFAULT_TCP_IDLE,
            other_idle: DEFAULT_OTHER_IDLE,
            max_flows: DEFAULT_MAX_FLOWS,
            keepalive: DEFAULT_KEEPALIVE,
            nat_keepalive: DEFAULT_NAT_KEEPALIVE,
            protection: Protection::default(),
            seed,
        }
    }
}
