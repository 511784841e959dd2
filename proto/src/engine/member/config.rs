//! The member's configuration and its defaults.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::crypto::Protection;
use crate::engine::{ApEndpoints, HomeAddresses};
use crate::wire::MemberId;

pub use crate::engine::ap::DEFAULT_WEIGHT;
/// Registration lifetime asked for.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// Route optimization binding lifetime asked for.
pub const DEFAULT_BINDING_LIFETIME: Duration = Duration::from_secs(120);
/// First retransmission timeout (RFC 6275 INITIAL_BINDACK_TIMEOUT).
pub const DEFAULT_INITIAL_RETRANSMIT: Duration = Duration::from_secs(1);
/// Largest retransmission timeout (RFC 6275 MAX_BINDACK_TIMEOUT).
pub const DEFAULT_MAX_RETRANSMIT: Duration = Duration::from_secs(32);
/// The SPI of the registration key when none is configured.
pub const DEFAULT_SPI: u32 = 1;
/// A registered member that hears no sealed frame from an AP this long
/// registers with it again at once (two AP heartbeats and a margin: AP
/// restart recovery, and the switch of answers away from a dead AP before
/// a sender's 1.4 s retransmission; a spurious re-registration is one more
/// BU).
pub const DEFAULT_AP_SILENCE: Duration = Duration::from_millis(1200);
/// First retransmission timeout of a re-registration started by silence or
/// by an AP's zero-nonce hint: the AP is probably back already.
pub const SILENCE_RETRANSMIT: Duration = Duration::from_millis(250);
/// While the member re-registers with an AP it lost (silence or hint), its
/// BUs to that AP are at most this far apart, whatever the backoff: a
/// dead AP is probed once a second, so a restarted one (which learns no
/// member by itself) has its members back about a second after it starts.
pub const AP_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Shim clients the member keeps route-optimization state for, at most.
pub const DEFAULT_MAX_CORRESPONDENTS: usize = 65536;
/// Legacy flows the member tracks (and reports to its APs), at most.
pub const DEFAULT_MAX_FLOWS: usize = 1_000_000;

/// Member node configuration.
#[derive(Clone)]
pub struct MemberConfig {
    /// This member's id (Binding ID).
    pub id: MemberId,
    /// The shared primary home address: the IPv6 one, or the IPv4 one
    /// IPv4-mapped if the service has no IPv6 home address.
    pub home_address: Ipv6Addr,
    /// The shared IPv4 home address, if any.
    pub home_address_v4: Option<Ipv4Addr>,
    /// The access points, in order of preference (answers whose flow's AP
    /// is silent go to the first registered one), each at one endpoint or
    /// one per family (the care-of's family picks). Non-empty, no endpoint
    /// twice ([`MemberConfig::check`]).
    pub access_points: Vec<ApEndpoints>,
    /// This member's tunnel endpoint.
    pub care_of: SocketAddr,
    /// Mobility SPI of the registration key.
    pub spi: u32,
    /// Registration key shared with the AP.
    pub key: Vec<u8>,
    /// Weight asked for in Maglev.
    pub weight: u16,
    /// Random id of this process, so the AP can tell a restart from a clash.
    pub instance: u64,
    /// Registration lifetime asked for.
    pub lifetime: Duration,
    /// Route optimization binding lifetime asked for (at most 420 s at a shim).
    pub binding_lifetime: Duration,
    /// First retransmission timeout (RFC 6275 INITIAL_BINDACK_TIMEOUT).
    pub initial_retransmit: Duration,
    /// Largest retransmission timeout (RFC 6275 MAX_BINDACK_TIMEOUT).
    pub max_retransmit: Duration,
    /// Offer route optimization to shim clients.
    pub route_optimization: bool,
    /// Direct server return: answers to clients without a shim leave
    /// natively from this host with the HoA as source (LVS-TUN style)
    /// instead of back through the AP. The network must let this host send
    /// from the HoA.
    pub direct_return: bool,
    /// Silence of the AP (no sealed frame) after which a registered member
    /// sends a new BU at once.
    pub ap_silence: Duration,
    /// Shim clients with route-optimization state, at most (then the
    /// unproven, else the least recently active one is evicted).
    pub max_correspondents: usize,
    /// Legacy flows tracked and reported to the APs, at most (then new
    /// flows are served but neither tracked nor reported).
    pub max_flows: usize,
    /// How sealed frames are protected (and what received ones must be).
    pub protection: Protection,
    /// Behind a NAT, an empty sealed data frame goes on each direct binding
    /// session idle this long (zero: never).
    pub nat_keepalive: Duration,
    /// Seed of the engine's random generator.
    pub seed: [u8; 32],
}

impl std::fmt::Debug for MemberConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberConfig")
            .field("id", &self.id)
            .field("home_address", &self.home_address)
            .field("home_address_v4", &self.home_address_v4)
            .field("access_points", &self.access_points)
            .field("care_of", &self.care_of)
            .field("spi", &self.spi)
            .finish_non_exhaustive()
    }
}

impl MemberConfig {
    /// Defaults for the given identity and endpoints, with one access
    /// point (push more onto [`access_points`](Self::access_points)).
    pub fn new(
        id: MemberId,
        home_address: Ipv6Addr,
        access_point: SocketAddr,
        care_of: SocketAddr,
        key: Vec<u8>,
        seed: [u8; 32],
    ) -> Self {
        Self {
            id,
            home_address,
            home_address_v4: home_address.to_ipv4_mapped(),
            access_points: vec![access_point.into()],
            care_of,
            spi: DEFAULT_SPI,
            key,
            weight: DEFAULT_WEIGHT,
            instance: u64::from_be_bytes(seed[..8].try_into().unwrap_or([0; 8])),
            lifetime: DEFAULT_LIFETIME,
            binding_lifetime: DEFAULT_BINDING_LIFETIME,
            initial_retransmit: DEFAULT_INITIAL_RETRANSMIT,
            max_retransmit: DEFAULT_MAX_RETRANSMIT,
            route_optimization: true,
            direct_return: false,
            ap_silence: DEFAULT_AP_SILENCE,
            max_correspondents: DEFAULT_MAX_CORRESPONDENTS,
            max_flows: DEFAULT_MAX_FLOWS,
            protection: Protection::default(),
            nat_keepalive: crate::engine::DEFAULT_NAT_KEEPALIVE,
            seed,
        }
    }
}

/// What is wrong with a [`MemberConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemberConfigError {
    /// No access point.
    #[error("no access point: give at least one")]
    NoAccessPoint,
    /// The same access point twice.
    #[error("access point {0} is given twice: list each one once")]
    DuplicateAccessPoint(ApEndpoints),
}

impl MemberConfig {
    /// The home addresses: [`home_address`](Self::home_address) and
    /// [`home_address_v4`](Self::home_address_v4).
    pub fn homes(&self) -> HomeAddresses {
        HomeAddresses {
            primary: self.home_address,
            v4: self.home_address_v4,
        }
    }

    /// Sets both home addresses.
    pub fn with_homes(mut self, homes: HomeAddresses) -> Self {
        self.home_address = homes.primary;
        self.home_address_v4 = homes.v4;
        self
    }

    /// Checks what [`Member::new`](super::Member::new) cannot:
    /// [`check_access_points`]. A member built from a bad configuration
    /// registers with the distinct APs it has, or with none.
    pub fn check(&self) -> Result<(), MemberConfigError> {
        check_access_points(&self.access_points)
    }
}

/// At least one access point, no endpoint in two (an IPv4-mapped address
/// is the same as its IPv4 form).
pub fn check_access_points(aps: &[ApEndpoints]) -> Result<(), MemberConfigError> {
    if aps.is_empty() {
        return Err(MemberConfigError::NoAccessPoint);
    }
    for (i, ap) in aps.iter().enumerate() {
        if aps[..i].iter().any(|a| a.overlaps(ap)) {
            return Err(MemberConfigError::DuplicateAccessPoint(*ap));
        }
    }
    Ok(())
}
