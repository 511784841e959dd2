//! The three role engines as sans-IO state machines.
//!
//! Every engine implements [`Engine`]: the shell (or the simulator) hands it
//! UDP datagrams and TUN packets with the current time and gets back a
//! [`DataAction`] for that packet; control messages the engine wants to send
//! come out of [`Engine::poll_transmit`], packets it originates towards the
//! local TUN (TCP resets) out of [`Engine::poll_tun`], and its one timer out
//! of [`Engine::poll_timeout`]. No engine reads the clock or the OS.

pub mod ap;
mod endpoints;
mod fragments;
pub mod member;
pub mod sealed;
pub mod shim;
#[cfg(test)]
mod testutil;
mod timer;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

pub use endpoints::{ApEndpoints, family_name, is_ipv4, reaches};
pub use timer::TimerQueue;

/// NAT keepalive: a side behind a NAT sends an empty sealed data frame on
/// each direct binding session that sent nothing this long (docs/PROTOCOL.md
/// 7.3), under the 30 s a Linux conntrack entry for UDP lives unanswered.
pub const DEFAULT_NAT_KEEPALIVE: Duration = Duration::from_secs(25);

use crate::crypto::{self, Kbm};
use crate::wire::{
    FRAME_HEADER_LEN, MemberId, MobilityHeader, MobilityMessage, MobilityOption, TAG_LEN,
    TunnelHeader,
};

/// A packet read from the TUN, in the middle of the room the shell left for
/// its frame: `frame = header (16) | packet | tag (16)`, one contiguous
/// buffer, so that the engine seals it in place (the integrity-only AEAD
/// authenticates header and packet as one piece) and the shell sends
/// `frame` as one datagram without a copy.
#[derive(Debug)]
pub struct TunPacket<'a> {
    frame: &'a mut [u8],
}

impl<'a> TunPacket<'a> {
    /// Wraps `frame`: `FRAME_HEADER_LEN` bytes of room, the packet, and
    /// `TAG_LEN` bytes of room. `None` if `frame` is too short for that.
    pub fn new(frame: &'a mut [u8]) -> Option<TunPacket<'a>> {
        (frame.len() >= FRAME_HEADER_LEN + TAG_LEN).then_some(TunPacket { frame })
    }

    /// The IP packet.
    pub fn packet(&self) -> &[u8] {
        let len = self.frame.len();
        &self.frame[FRAME_HEADER_LEN..len - TAG_LEN]
    }

    /// The IP packet, to edit in place (MSS clamping); not resizable.
    pub fn packet_mut(&mut self) -> &mut [u8] {
        let len = self.frame.len();
        &mut self.frame[FRAME_HEADER_LEN..len - TAG_LEN]
    }

    /// The whole frame: header room, packet, tag room.
    pub fn frame_mut(&mut self) -> &mut [u8] {
        self.frame
    }

    /// The header room.
    pub fn header_mut(&mut self) -> &mut [u8] {
        &mut self.frame[..FRAME_HEADER_LEN]
    }

    /// The tag room.
    pub fn tag_mut(&mut self) -> &mut [u8] {
        let len = self.frame.len();
        &mut self.frame[len - TAG_LEN..]
    }
}

/// What the shell does with the packet it just handed to an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataAction {
    /// TUN: header, packet and tag were filled: send `header | packet |
    /// tag` to `to`. UDP: the whole frame was rewritten in place (a relay):
    /// send it to `to`.
    Send {
        /// Destination tunnel endpoint.
        to: SocketAddr,
    },
    /// UDP: write `frame[FRAME_HEADER_LEN..len - TAG_LEN]` to the TUN.
    /// TUN: write the packet back to the TUN for the kernel to route
    /// natively (a member's direct server return).
    ToTun,
    /// A control message was consumed; replies, if any, are in `poll_transmit`.
    Consumed,
    /// Drop the packet; the engine has counted it.
    Drop(DropReason),
}

/// The shortest data frame: header, an IPv4 header, tag (an IPv6 packet
/// needs 40 bytes, an IPv4 one 20).
pub const MIN_DATA_FRAME: usize = FRAME_HEADER_LEN + crate::wire::inner::IPV4_HEADER_LEN + TAG_LEN;

/// A control datagram an engine wants sent: a whole UDP payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination endpoint.
    pub to: SocketAddr,
    /// UDP payload (tunnel header + Mobility Header message).
    pub payload: Vec<u8>,
}

/// Why a packet was dropped. Every drop is counted by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// The frame, Mobility Header or inner packet did not parse.
    Malformed,
    /// The tunnel version is not 2.
    BadVersion,
    /// The UDP source is not a peer this engine has a relation with.
    UnknownPeer,
    /// The inner source address is not one the tunnel peer may use.
    SpoofedSource,
    /// The inner destination is not the home address (or a served client).
    UnknownHomeAddress,
    /// No live member can serve the client.
    NoMember,
    /// A control message failed authentication.
    AuthFailed,
    /// A control message is a replay or out of sequence.
    Replay,
    /// A control message that this role does not accept, or not now.
    UnexpectedMessage,
    /// A table is full.
    Overflow,
    /// Link-local or multicast traffic the kernel sends on the TUN
    /// (router solicitations, MLD): never tunnelled.
    NotTunnelled,
    /// An unsealed frame of a kind or message that must be sealed.
    Unauthenticated,
    /// A shim has no session with the AP yet.
    NoSession,
    /// AP, just started: a TCP segment (no SYN) of a flow it does not
    /// know, held back until the flow's member has reported it
    /// (docs/PROTOCOL.md section 10; TCP retransmits it).
    Settling,
}

impl DropReason {
    /// All reasons, for exporting counters.
    pub const ALL: [DropReason; 14] = [
        DropReason::Malformed,
        DropReason::BadVersion,
        DropReason::UnknownPeer,
        DropReason::SpoofedSource,
        DropReason::UnknownHomeAddress,
        DropReason::NoMember,
        DropReason::AuthFailed,
        DropReason::Replay,
        DropReason::UnexpectedMessage,
        DropReason::Overflow,
        DropReason::NotTunnelled,
        DropReason::Unauthenticated,
        DropReason::NoSession,
        DropReason::Settling,
    ];

    /// Stable snake_case name for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadVersion => "bad_version",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::UnknownHomeAddress => "unknown_home_address",
            DropReason::NoMember => "no_member",
            DropReason::AuthFailed => "auth_failed",
            DropReason::Replay => "replay",
            DropReason::UnexpectedMessage => "unexpected_message",
            DropReason::Overflow => "overflow",
            DropReason::NotTunnelled => "not_tunnelled",
            DropReason::Unauthenticated => "unauthenticated",
            DropReason::NoSession => "no_session",
            DropReason::Settling => "settling",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Drop counters by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::ALL.len()]);

impl DropCounters {
    /// Count one drop; returns the action for convenience.
    pub fn drop(&mut self, reason: DropReason) -> DataAction {
        self.0[reason.index()] += 1;
        DataAction::Drop(reason)
    }

    /// Drops counted for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// Total drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// (reason, count) for every reason.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.get(*r)))
    }
}

/// The sans-IO interface every role engine offers its driver.
pub trait Engine {
    /// A UDP datagram arrived from `from`. `frame` starts at the tunnel
    /// header; the engine may rewrite it in place (MSS clamping, a relay's
    /// new header).
    fn handle_udp(&mut self, now: Instant, from: SocketAddr, frame: &mut [u8]) -> DataAction;
    /// An IP packet (IPv6 or IPv4) was read from the local TUN device, with room for
    /// its frame header and tag.
    fn handle_tun(&mut self, now: Instant, pkt: TunPacket<'_>) -> DataAction;
    /// The next control datagram to send.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// The next packet the engine originates towards the local TUN.
    fn poll_tun(&mut self) -> Option<Vec<u8>>;
    /// When `handle_timeout` should next be called.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Run the timers that are due at `now`.
    fn handle_timeout(&mut self, now: Instant);
}

/// A binding update as it arrived, at the AP (registration) or a shim.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReceivedBu<'a> {
    /// UDP source, canonical: the member's care-of endpoint.
    pub from: SocketAddr,
    /// The Mobility Header, for the authenticator.
    pub mh: &'a [u8],
    /// The parsed message.
    pub msg: &'a MobilityMessage,
    /// Sequence number.
    pub seq: u16,
    /// The A flag: the sender wants a BA.
    pub ack: bool,
    /// Lifetime in 4-second units (0: delete the binding).
    pub lifetime: u16,
}

/// Kernel chatter on a TUN device (link-local or unspecified source,
/// multicast or broadcast destination; for IPv4-mapped addresses the IPv4
/// meaning) that no engine tunnels.
pub(crate) fn is_local_chatter(src: Ipv6Addr, dst: Ipv6Addr) -> bool {
    match (src.to_ipv4_mapped(), dst.to_ipv4_mapped()) {
        (Some(s), Some(d)) => {
            d.is_multicast() || d.is_broadcast() || s.is_link_local() || s.is_unspecified()
        }
        _ => dst.is_multicast() || src.is_unicast_link_local() || src.is_unspecified(),
    }
}

/// The home addresses of a service: an IPv6 one, an IPv4 one, or both
/// (docs/PROTOCOL.md section 1). The *primary* is the IPv6 one if there is
/// one, else the IPv4 one IPv4-mapped; MACs and the Home Address option
/// use the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HomeAddresses {
    /// The primary home address.
    pub primary: Ipv6Addr,
    /// The IPv4 home address, if any.
    pub v4: Option<Ipv4Addr>,
}

/// Why a list of home addresses is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HomeAddressError {
    /// None given.
    #[error("no home address: give one IPv6 and/or one IPv4 home address")]
    None,
    /// Two of one family.
    #[error("two {0} home addresses ({1} and {2}): give at most one per family")]
    TwoOfOneFamily(&'static str, IpAddr, IpAddr),
    /// Not a unicast address.
    #[error("home address {0} is not a unicast address")]
    NotUnicast(IpAddr),
}

impl HomeAddresses {
    /// An IPv6 home address only.
    pub fn v6(primary: Ipv6Addr) -> Self {
        HomeAddresses { primary, v4: None }
    }

    /// Home addresses from a list: at most one per family, at least one.
    /// An IPv4-mapped IPv6 address counts as IPv4.
    pub fn from_list(list: &[IpAddr]) -> Result<Self, HomeAddressError> {
        let (mut v6, mut v4): (Option<Ipv6Addr>, Option<Ipv4Addr>) = (None, None);
        for a in list {
            let a = a.to_canonical();
            if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
                return Err(HomeAddressError::NotUnicast(a));
            }
            match a {
                IpAddr::V4(x) => {
                    if x.is_broadcast() {
                        return Err(HomeAddressError::NotUnicast(a));
                    }
                    if let Some(old) = v4.replace(x) {
                        return Err(HomeAddressError::TwoOfOneFamily("IPv4", old.into(), a));
                    }
                }
                IpAddr::V6(x) => {
                    if let Some(old) = v6.replace(x) {
                        return Err(HomeAddressError::TwoOfOneFamily("IPv6", old.into(), a));
                    }
                }
            }
        }
        match (v6, v4) {
            (Some(primary), v4) => Ok(HomeAddresses { primary, v4 }),
            (None, Some(x)) => Ok(HomeAddresses {
                primary: x.to_ipv6_mapped(),
                v4: Some(x),
            }),
            (None, None) => Err(HomeAddressError::None),
        }
    }

    /// Is `a` one of the home addresses (IPv4 as IPv4-mapped)?
    pub fn is_home(&self, a: Ipv6Addr) -> bool {
        a == self.primary || self.v4.is_some_and(|v4| a == v4.to_ipv6_mapped())
    }

    /// The IPv6 home address, if any.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.primary
            .to_ipv4_mapped()
            .is_none()
            .then_some(self.primary)
    }

    /// The home address of `peer`'s family (IPv4-mapped for an
    /// IPv4-mapped `peer`), if the service has one.
    pub fn for_peer(&self, peer: Ipv6Addr) -> Option<Ipv6Addr> {
        if peer.to_ipv4_mapped().is_some() {
            self.v4.map(|v4| v4.to_ipv6_mapped())
        } else {
            self.ipv6()
        }
    }

    /// Every home address, the primary first (IPv4 unmapped).
    pub fn all(&self) -> Vec<IpAddr> {
        let mut out = vec![IpAddr::V6(self.primary).to_canonical()];
        if let Some(v4) = self.v4
            && self.primary != v4.to_ipv6_mapped()
        {
            out.push(IpAddr::V4(v4));
        }
        out
    }
}

/// Parse the tunnel header of a received datagram, counting a bad one.
pub(crate) fn parse_header(
    frame: &[u8],
    drops: &mut DropCounters,
) -> Result<TunnelHeader, DataAction> {
    TunnelHeader::parse(frame).map_err(|e| match e {
        crate::wire::WireError::UnsupportedVersion(_) => drops.drop(DropReason::BadVersion),
        _ => drops.drop(DropReason::Malformed),
    })
}

/// Registration lifetimes and refresh intervals travel in 4-second units.
pub(crate) fn to_units(d: Duration) -> u16 {
    (d.as_secs().div_ceil(4)).min(u16::MAX as u64) as u16
}

/// The inverse of [`to_units`].
pub(crate) fn from_units(units: u16) -> Duration {
    Duration::from_secs(units as u64 * 4)
}

/// RFC 1982 serial-number comparison on 16 bits, as RFC 6275 sec. 9.5.1
/// requires for binding sequence numbers: is `a` newer than `b`?
pub fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// A Binding ID option naming `id` alone (no care-of address).
pub(crate) fn binding_id(id: MemberId) -> MobilityOption {
    MobilityOption::BindingId {
        id,
        status: 0,
        flags: 0,
        care_of: None,
    }
}

/// Emit a control frame: tunnel header + Mobility Header message.
pub(crate) fn control_frame(member: Option<MemberId>, msg: &MobilityMessage) -> Vec<u8> {
    let mut buf = vec![0u8; FRAME_HEADER_LEN + msg.buffer_len()];
    // Both emits write into a buffer sized by buffer_len(): they cannot fail.
    let _ = TunnelHeader::control(member).emit(&mut buf[..FRAME_HEADER_LEN]);
    let _ = msg.emit(&mut buf[FRAME_HEADER_LEN..]);
    buf
}

fn auth_range(mh: &[u8]) -> Option<std::ops::Range<usize>> {
    MobilityHeader::new_checked(mh).ok()?.authenticator_range()
}

/// Fill in the member <-> AP authenticator of a control frame whose last
/// option is a Mobility Message Authentication option.
pub(crate) fn sign_registration(frame: &mut [u8], key: &[u8], hoa: Ipv6Addr) {
    let mh = &mut frame[FRAME_HEADER_LEN..];
    if let Some(r) = auth_range(mh) {
        let mac = crypto::registration_authenticator(key, hoa, mh, r.clone());
        mh[r].copy_from_slice(&mac);
    }
}

/// Check the member <-> AP authenticator of a Mobility Header.
pub(crate) fn verify_registration(mh: &[u8], key: &[u8], hoa: Ipv6Addr) -> bool {
    match auth_range(mh) {
        Some(r) if r.len() == crypto::REGISTRATION_AUTH_LEN => {
            let mac = crypto::registration_authenticator(key, hoa, mh, r.clone());
            crypto::constant_time_eq(&mac, &mh[r])
        }
        _ => false,
    }
}

/// Fill in the Binding Authorization Data of a control frame.
pub(crate) fn sign_binding(frame: &mut [u8], kbm: &Kbm) {
    let mh = &mut frame[FRAME_HEADER_LEN..];
    if let Some(r) = auth_range(mh) {
        let mac = crypto::binding_authenticator(kbm, mh, r.clone());
        mh[r].copy_from_slice(&mac);
    }
}

/// Check the Binding Authorization Data of a Mobility Header.
pub(crate) fn verify_binding(mh: &[u8], kbm: &Kbm) -> bool {
    match auth_range(mh) {
        Some(r) if r.len() == crypto::BINDING_AUTH_LEN => {
            let mac = crypto::binding_authenticator(kbm, mh, r.clone());
            crypto::constant_time_eq(&mac, &mh[r])
        }
        _ => false,
    }
}

/// Normalise an endpoint so that IPv4-mapped and plain IPv4 compare equal.
pub(crate) fn canonical(ep: SocketAddr) -> SocketAddr {
    match ep {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => ep,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_number_arithmetic() {
        assert!(seq_newer(1, 0));
        assert!(!seq_newer(0, 1));
        assert!(!seq_newer(5, 5));
        assert!(seq_newer(0, 0xffff));
        assert!(seq_newer(0x7fff, 0));
        assert!(!seq_newer(0x8000, 0));
    }

    #[test]
    fn home_addresses_from_a_list() {
        let v6: IpAddr = "fd00:4841:aaaa::1".parse().unwrap();
        let v4: IpAddr = "198.19.0.1".parse().unwrap();
        let v4b: IpAddr = "198.19.0.2".parse().unwrap();
        let mapped4 = Ipv4Addr::new(198, 19, 0, 1).to_ipv6_mapped();
        let both = HomeAddresses::from_list(&[v4, v6]).unwrap();
        assert_eq!(
            both.primary,
            "fd00:4841:aaaa::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(both.v4, Some(Ipv4Addr::new(198, 19, 0, 1)));
        assert!(both.is_home(both.primary) && both.is_home(mapped4));
        assert!(!both.is_home(Ipv4Addr::new(198, 19, 0, 2).to_ipv6_mapped()));
        assert_eq!(
            both.for_peer(Ipv4Addr::new(198, 18, 0, 5).to_ipv6_mapped()),
            Some(mapped4)
        );
        assert_eq!(both.for_peer(Ipv6Addr::LOCALHOST), Some(both.primary));
        assert_eq!(both.all(), vec![v6, v4]);
        let only4 = HomeAddresses::from_list(&[v4]).unwrap();
        assert_eq!(only4.primary, mapped4);
        assert_eq!(only4.ipv6(), None);
        assert_eq!(only4.for_peer(Ipv6Addr::LOCALHOST), None);
        assert_eq!(only4.all(), vec![v4]);
        // A mapped address counts as IPv4.
        assert_eq!(
            HomeAddresses::from_list(&[IpAddr::V6(mapped4)]).unwrap(),
            only4
        );
        let only6 = HomeAddresses::from_list(&[v6]).unwrap();
        assert_eq!((only6.v4, only6.ipv6()), (None, Some(only6.primary)));
        assert!(!only6.is_home(mapped4));
        assert_eq!(HomeAddresses::from_list(&[]), Err(HomeAddressError::None));
        assert_eq!(
            HomeAddresses::from_list(&[v4, v4b]),
            Err(HomeAddressError::TwoOfOneFamily("IPv4", v4, v4b))
        );
        assert!(matches!(
            HomeAddresses::from_list(&[v6, v6]),
            Err(HomeAddressError::TwoOfOneFamily("IPv6", ..))
        ));
        for bad in [
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "ff02::1",
            "::1",
        ] {
            assert!(matches!(
                HomeAddresses::from_list(&[bad.parse().unwrap()]),
                Err(HomeAddressError::NotUnicast(_))
            ));
        }
    }

    #[test]
    fn ipv4_local_chatter() {
        let m = |s: &str| s.parse::<Ipv4Addr>().unwrap().to_ipv6_mapped();
        assert!(is_local_chatter(m("169.254.1.1"), m("198.19.0.1")));
        assert!(is_local_chatter(m("198.18.0.1"), m("224.0.0.251")));
        assert!(is_local_chatter(m("198.18.0.1"), m("255.255.255.255")));
        assert!(is_local_chatter(m("0.0.0.0"), m("198.19.0.1")));
        assert!(!is_local_chatter(m("198.18.0.1"), m("198.19.0.1")));
    }

    #[test]
    fn lifetime_units_round_up() {
        assert_eq!(to_units(Duration::from_secs(1)), 1);
        assert_eq!(to_units(Duration::from_secs(8)), 2);
        assert_eq!(from_units(3), Duration::from_secs(12));
    }

    #[test]
    fn drop_counters_count_by_reason() {
        let mut c = DropCounters::default();
        assert_eq!(
            c.drop(DropReason::Replay),
            DataAction::Drop(DropReason::Replay)
        );
        c.drop(DropReason::Replay);
        c.drop(DropReason::Overflow);
        assert_eq!(c.get(DropReason::Replay), 2);
        assert_eq!(c.total(), 3);
        assert_eq!(c.iter().count(), DropReason::ALL.len());
    }
}
