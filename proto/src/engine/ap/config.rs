//! The access point's configuration, its defaults and its errors.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::time::Duration;

use super::MemberPolicy;
use crate::affinity::AffinityConfig;
use crate::crypto::Protection;
use crate::engine::HomeAddresses;
use crate::maglev::DEFAULT_TABLE_SIZE;
use crate::wire::MemberId;

/// The Maglev weight of a member whose BU carries no Member State option.
pub const DEFAULT_WEIGHT: u16 = 100;
/// Interval of the BRR heartbeat to every member.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);
/// A member not heard from for this long is down.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(3);
/// Longest registration lifetime granted.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(600);
/// A shim client not heard from for this long is forgotten.
pub const DEFAULT_SHIM_IDLE: Duration = Duration::from_secs(300);
/// Least time between two Shim Notices for one client and member.
pub const DEFAULT_NOTICE_INTERVAL: Duration = Duration::from_secs(1);
/// Inner MTU of the tunnels on a 1500-byte path (80 bytes of tunnel:
/// IPv6 40, UDP 8, frame header 16, tag 16).
pub const DEFAULT_INNER_MTU: u16 = 1420;
/// How often a Binding Revocation Indication is sent.
pub const DEFAULT_REVOCATION_REPEATS: u8 = 3;
/// Gap between repeated revocations.
pub const DEFAULT_REVOCATION_INTERVAL: Duration = Duration::from_millis(500);

/// How long after its first member registration an AP holds back TCP
/// segments (no SYN) of flows it does not know (docs/PROTOCOL.md section
/// 10.2): a member with traffic comes back at once (the restart hint), an
/// idle one within its `ap_silence` (1.2 s) of the AP's death plus a
/// round trip or two; holding back costs a flow nothing once its owner
/// has reported it.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);

/// Most shim records the AP keeps (docs/PROTOCOL.md 7.6).
pub const DEFAULT_MAX_SHIM_CLIENTS: usize = 65536;
/// Most shim records per /64 (IPv6) or /32 (IPv4-mapped) prefix.
pub const DEFAULT_MAX_SHIMS_PER_PREFIX: usize = 64;
/// Most shim handshakes (Hellos with a valid cookie) per second.
pub const DEFAULT_MAX_HANDSHAKES_PER_SECOND: u32 = 2000;

/// An IPv4 prefix (network address and length), e.g. `100.127.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Prefix {
    /// The network address (host bits zero).
    pub network: Ipv4Addr,
    /// Prefix length, 0..=30 for a shim pool (network and broadcast are
    /// never handed out).
    pub len: u8,
}

impl Ipv4Prefix {
    /// Number of addresses in the prefix.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len.min(32)))
    }

    /// The pool address of a shim instance (docs/PROTOCOL.md 4.6):
    /// network + 1 + (instance mod (size - 2)), so neither the network nor
    /// the broadcast address. `None` for a prefix longer than /30.
    pub fn pool_address(&self, instance: [u8; 8]) -> Option<Ipv4Addr> {
        let hosts = self.size().checked_sub(2).filter(|h| *h > 0)?;
        let offset = 1 + u64::from_be_bytes(instance) % hosts;
        // offset < 2^32: the prefix has at most 2^32 addresses.
        Some(Ipv4Addr::from(
            u32::from(self.network).wrapping_add(offset as u32),
        ))
    }
}

impl std::str::FromStr for Ipv4Prefix {
    type Err = String;

    /// `a.b.c.d/len` with host bits zero and len <= 30.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected an IPv4 prefix like 100.127.0.0/16"))?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 30)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0..=30"))?;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        if u32::from(network) & !mask != 0 {
            return Err(format!("{s:?}: host bits set (use the network address)"));
        }
        Ok(Ipv4Prefix { network, len })
    }
}

impl std::fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

/// Parses an IPv6 /64 shim prefix (`fd00:4841:cccc::/64`; the `/64` may
/// be left out) into its network address.
pub fn parse_shim_prefix_v6(s: &str) -> Result<Ipv6Addr, String> {
    let (addr, len) = s.split_once('/').unwrap_or((s, "64"));
    if len != "64" {
        return Err(format!("{s:?}: the shim prefix must be a /64"));
    }
    let a: Ipv6Addr = addr
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not an IPv6 address"))?;
    if a.octets()[8..] != [0; 8] {
        return Err(format!(
            "{s:?}: host bits set (use the /64's network address)"
        ));
    }
    Ok(a)
}

/// A registration key, named by its Security Parameter Index.
#[derive(Clone, PartialEq, Eq)]
pub struct MemberKey {
    /// Mobility SPI (RFC 4285) the member puts in its authentication option.
    pub spi: u32,
    /// Shared secret.
    pub key: Vec<u8>,
    /// The member ids this key may register; `None`: any.
    pub members: Option<Vec<RangeInclusive<u16>>>,
}

impl MemberKey {
    /// A key that may register any member id.
    pub fn new(spi: u32, key: Vec<u8>) -> MemberKey {
        MemberKey {
            spi,
            key,
            members: None,
        }
    }

    /// May this key register `id`?
    pub fn may_register(&self, id: MemberId) -> bool {
        self.members
            .as_ref()
            .is_none_or(|ranges| ranges.iter().any(|r| r.contains(&id.0)))
    }
}

impl std::fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberKey")
            .field("spi", &self.spi)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

/// Access point configuration.
#[derive(Debug, Clone)]
pub struct ApConfig {
    /// The primary home address this AP owns: the IPv6 one, or the IPv4
    /// one IPv4-mapped if the service has no IPv6 home address.
    pub home_address: Ipv6Addr,
    /// The IPv4 home address this AP also owns, if any.
    pub home_address_v4: Option<Ipv4Addr>,
    /// Accepted registration keys.
    pub keys: Vec<MemberKey>,
    /// Interval of the BRR heartbeat to every member.
    pub heartbeat: Duration,
    /// A member not heard from for this long is down.
    pub dead_after: Duration,
    /// Longest registration lifetime granted.
    pub max_lifetime: Duration,
    /// Maglev lookup table size (prime).
    pub maglev_table_size: usize,
    /// Affinity table limits and idle timeouts.
    pub affinity: AffinityConfig,
    /// A shim client not heard from for this long is forgotten.
    pub shim_idle: Duration,
    /// Least time between two Shim Notices for one client and member
    /// before the member has started return routability.
    pub notice_interval: Duration,
    /// Inner MTU of the tunnels; TCP SYNs are clamped to `inner_mtu - 60`
    /// (IPv6) or `inner_mtu - 40` (IPv4).
    pub inner_mtu: u16,
    /// How often a Binding Revocation Indication is sent (it is not acknowledged).
    pub revocation_repeats: u8,
    /// Gap between repeated revocations.
    pub revocation_interval: Duration,
    /// Per-member weights and drains (the configuration file's), applied
    /// when a member registers; replace them with
    /// [`AccessPoint::set_member_policies`].
    pub member_policies: Vec<MemberPolicy>,
    /// How frames are sealed, and what sealed frames are accepted.
    pub protection: Protection,
    /// Most shim records kept.
    pub max_shim_clients: usize,
    /// Most shim records per /64 (or IPv4 /32).
    pub max_shims_per_prefix: usize,
    /// Most shim handshakes per second.
    pub max_handshakes_per_second: u32,
    /// The /64 (its network address) that client addresses of shims with
    /// an IPv6 HoA behind a NAT (or on IPv4) come from: prefix | instance
    /// (docs/PROTOCOL.md 4.6). `None`: such shims get no Welcome.
    pub shim_prefix_v6: Option<Ipv6Addr>,
    /// The IPv4 prefix that client addresses of shims with an IPv4 HoA
    /// behind a NAT (or on IPv6) come from. `None`: such shims get no
    /// Welcome.
    pub shim_pool_v4: Option<Ipv4Prefix>,
    /// After the first member registration (and before any), TCP segments
    /// without SYN of flows the affinity table does not know are dropped
    /// for this long, until their members' Flow Reports have pinned them.
    /// Zero: never.
    pub settle: Duration,
    /// Seed of the engine's random bit generator (cookie secrets, session
    /// indices, nonces, X25519 secrets). The daemon draws it from the OS.
    pub seed: [u8; 32],
}

impl ApConfig {
    /// Defaults for a home address and one key.
    pub fn new(home_address: Ipv6Addr, keys: Vec<MemberKey>) -> Self {
        Self {
            home_address,
            home_address_v4: home_address.to_ipv4_mapped(),
            keys,
            heartbeat: DEFAULT_HEARTBEAT,
            dead_after: DEFAULT_DEAD_AFTER,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            maglev_table_size: DEFAULT_TABLE_SIZE,
            affinity: AffinityConfig::default(),
            shim_idle: DEFAULT_SHIM_IDLE,
            notice_interval: DEFAULT_NOTICE_INTERVAL,
            inner_mtu: DEFAULT_INNER_MTU,
            revocation_repeats: DEFAULT_REVOCATION_REPEATS,
            revocation_interval: DEFAULT_REVOCATION_INTERVAL,
            member_policies: Vec::new(),
            protection: Protection::default(),
            max_shim_clients: DEFAULT_MAX_SHIM_CLIENTS,
            max_shims_per_prefix: DEFAULT_MAX_SHIMS_PER_PREFIX,
            max_handshakes_per_second: DEFAULT_MAX_HANDSHAKES_PER_SECOND,
            shim_prefix_v6: None,
            shim_pool_v4: None,
            settle: DEFAULT_SETTLE,
            seed: [0; 32],
        }
    }

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

    /// The key with this SPI.
    pub(super) fn key(&self, spi: u32) -> Option<&[u8]> {
        self.member_key(spi).map(|k| k.key.as_slice())
    }

    /// The key entry with this SPI.
    pub(super) fn member_key(&self, spi: u32) -> Option<&MemberKey> {
        self.keys.iter().find(|k| k.spi == spi)
    }
}

/// Errors of operator commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApError {
    /// No member with that id is registered.
    #[error("unknown member {0}: list members to see the registered ids")]
    UnknownMember(MemberId),
    /// The configuration cannot be used.
    #[error("invalid access point configuration: {0}")]
    Config(String),
}
