//! Mobility options (RFC 6275 sec. 6.2; docs/PROTOCOL.md section 3).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+- - - - - - - - -
//! |  Option Type  | Option Length |   Option Data...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+- - - - - - - - -
//! ```
//!
//! Option Length excludes the Type and Length bytes. Pad1 (a single zero
//! byte) and PadN are skipped on parse; options of unknown type are kept as
//! [`MobilityOption::Unknown`] (RFC 6275 sec. 6.2.1 says to skip them, and
//! keeping them makes parse -> emit -> parse stable). A known option with a
//! wrong length is an error: RFC 6275 sec. 9.2 / 11 discard such messages.
//!
//! Two levels: [`OptionIter`] walks the raw options of a buffer without
//! copying ([`RawOption`]), [`MobilityOption`] is the typed option with
//! [`MobilityOption::parse`], [`MobilityOption::emit`] and
//! [`MobilityOption::buffer_len`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::endpoint::{ENDPOINT_LEN, emit_endpoint, parse_endpoint};
use super::inner::FlowKey;
use super::{MemberId, WireError};

/// Option Type numbers.
pub mod kind {
    /// Pad1: one zero byte, no length field (RFC 6275 6.2.2).
    pub const PAD1: u8 = 0;
    /// PadN (RFC 6275 6.2.3).
    pub const PADN: u8 = 1;
    /// Binding Refresh Advice (RFC 6275 6.2.4).
    pub const BINDING_REFRESH_ADVICE: u8 = 2;
    /// Alternate Care-of Address (RFC 6275 6.2.5).
    pub const ALTERNATE_CARE_OF: u8 = 3;
    /// Nonce Indices (RFC 6275 6.2.6).
    pub const NONCE_INDICES: u8 = 4;
    /// Binding Authorization Data (RFC 6275 6.2.7).
    pub const BINDING_AUTHORIZATION: u8 = 5;
    /// Mobility Message Authentication (RFC 4285 sec. 5, AUTH-OPTION-TYPE).
    pub const AUTHENTICATION: u8 = 9;
    /// Binding Identifier (RFC 5648 6.1).
    pub const BINDING_ID: u8 = 35;
    /// Home Address (homeaddr, docs/PROTOCOL.md D5).
    pub const HOME_ADDRESS: u8 = 200;
    /// Member State (homeaddr, docs/PROTOCOL.md D5).
    pub const MEMBER_STATE: u8 = 201;
    /// Correspondent (homeaddr, docs/PROTOCOL.md D5).
    pub const CORRESPONDENT: u8 = 202;
    /// Session (homeaddr, docs/PROTOCOL.md sections 2, 3).
    pub const SESSION: u8 = 203;
    /// Cookie (homeaddr, docs/PROTOCOL.md sections 2, 3).
    pub const COOKIE: u8 = 204;
    /// Care-of Ticket (homeaddr, docs/PROTOCOL.md sections 2, 3).
    pub const CARE_OF_TICKET: u8 = 205;
    /// Shim Instance (homeaddr, docs/PROTOCOL.md sections 2, 3).
    pub const SHIM_INSTANCE: u8 = 206;
    /// Flow (homeaddr, docs/PROTOCOL.md "Several access points").
    pub const FLOW: u8 = 207;
    /// Endpoint (homeaddr, docs/PROTOCOL.md section 3): an 18-byte endpoint.
    pub const ENDPOINT: u8 = 208;
    /// Client Address (homeaddr, docs/PROTOCOL.md 4.6): in a Shim Welcome.
    pub const CLIENT_ADDRESS: u8 = 209;

    /// Whether this build gives `kind` a meaning (padding included).
    pub const fn is_known(kind: u8) -> bool {
        matches!(
            kind,
            PAD1 | PADN
                | BINDING_REFRESH_ADVICE
                | ALTERNATE_CARE_OF
                | NONCE_INDICES
                | BINDING_AUTHORIZATION
                | AUTHENTICATION
                | BINDING_ID
                | HOME_ADDRESS
                | MEMBER_STATE
                | CORRESPONDENT
                | SESSION
                | COOKIE
                | CARE_OF_TICKET
                | SHIM_INSTANCE
                | FLOW
                | ENDPOINT
                | CLIENT_ADDRESS
        )
    }
}

/// Length of the Authenticator of the Binding Authorization Data option
/// (the first 96 bits of an HMAC).
pub const BINDING_AUTHORIZATION_LEN: usize = 12;
/// Length of the Authentication Data of the Mobility Message
/// Authentication option (the first 128 bits of an HMAC-SHA256).
pub const AUTHENTICATION_DATA_LEN: usize = 16;
/// Authentication option subtype 1: MN-HA (RFC 4285 sec. 5.1); homeaddr's
/// member <-> AP key.
pub const AUTH_SUBTYPE_MN_HA: u8 = 1;
/// Binding Identifier flag `H`: simultaneous home and foreign binding
/// (RFC 5648 6.1).
pub const BID_FLAG_H: u8 = 0x80;
/// Binding Identifier flag `O`: bulk registration overwrite (RFC 5648 6.1).
pub const BID_FLAG_O: u8 = 0x40;
/// Member State flag `D`: the member is draining.
pub const MEMBER_STATE_DRAINING: u16 = 0x8000;
/// Length of a session nonce (Nm, Na, Ns), in the Session option and the
/// shim handshake messages.
pub const NONCE_LEN: usize = 16;
/// Length of a stateless cookie (Cookie option, Shim Hello, Shim Cookie).
pub const COOKIE_LEN: usize = 16;
/// Length of a Care-of Ticket (the first 64 bits of an HMAC-SHA256).
pub const CARE_OF_TICKET_LEN: usize = 8;
/// Length of a shim instance.
pub const SHIM_INSTANCE_LEN: usize = 8;
/// Length of the Option Data of a Flow option.
pub const FLOW_LEN: usize = 22;

/// Length of the Type and Length bytes.
pub const OPTION_HEADER_LEN: usize = 2;

/// Value layouts (offsets relative to the start of the option value).
mod field {
    use core::ops::Range;

    /// Nonce Indices: home nonce index.
    pub const NI_HOME: Range<usize> = 0..2;
    /// Nonce Indices: care-of nonce index.
    pub const NI_CARE_OF: Range<usize> = 2..4;
    /// Authentication: subtype.
    pub const AUTH_SUBTYPE: usize = 0;
    /// Authentication: Mobility SPI.
    pub const AUTH_SPI: Range<usize> = 1..5;
    /// Authentication: Authentication Data.
    pub const AUTH_DATA: Range<usize> = 5..21;
    /// Binding Identifier: BID.
    pub const BID_ID: Range<usize> = 0..2;
    /// Binding Identifier: status.
    pub const BID_STATUS: usize = 2;
    /// Binding Identifier: flags.
    pub const BID_FLAGS: usize = 3;
    /// Binding Identifier: first byte of the optional care-of address.
    pub const BID_CARE_OF: usize = 4;
    /// Member State: weight.
    pub const MS_WEIGHT: Range<usize> = 0..2;
    /// Member State: flags.
    pub const MS_FLAGS: Range<usize> = 2..4;
    /// Member State: instance.
    pub const MS_INSTANCE: Range<usize> = 4..12;
    /// Session: receiver index.
    pub const SESSION_INDEX: Range<usize> = 0..4;
    /// Session: nonce.
    pub const SESSION_NONCE: Range<usize> = 4..20;
    /// Care-of Ticket: home nonce index.
    pub const COT_NONCE_INDEX: Range<usize> = 0..2;
    /// Care-of Ticket: ticket.
    pub const COT_TICKET: Range<usize> = 2..10;
    /// Flow: upper-layer protocol.
    pub const FLOW_PROTO: usize = 0;
    /// Flow: state ([`super::ReportedState`]).
    pub const FLOW_STATE: usize = 1;
    /// Flow: the client's port.
    pub const FLOW_CLIENT_PORT: Range<usize> = 2..4;
    /// Flow: the home address's port.
    pub const FLOW_HOME_PORT: Range<usize> = 4..6;
    /// Flow: the client's address.
    pub const FLOW_CLIENT: Range<usize> = 6..22;
}

/// Offset of the authenticator bytes inside the Binding Authorization Data
/// option, counted from its Type byte.
pub(crate) const BINDING_AUTHORIZATION_AUTH_OFFSET: usize = OPTION_HEADER_LEN;
/// Offset of the Authentication Data inside the Mobility Message
/// Authentication option, counted from its Type byte.
pub(crate) const AUTHENTICATION_DATA_OFFSET: usize = OPTION_HEADER_LEN + field::AUTH_DATA.start;

/// Where a reported flow is in its life, as the member sees it (the
/// `state` byte of a Flow option). Maps to and from
/// [`crate::affinity::FlowState`].
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportedState {
    /// TCP: a SYN was seen, the handshake has not completed.
    Opening = 0,
    /// Established TCP, or any non-TCP flow.
    Open = 1,
    /// TCP: a FIN was seen in one direction or both.
    Closing = 2,
}

impl ReportedState {
    /// The state for a wire value, if it is one.
    pub fn from_u8(value: u8) -> Option<ReportedState> {
        Some(match value {
            0 => ReportedState::Opening,
            1 => ReportedState::Open,
            2 => ReportedState::Closing,
            _ => return None,
        })
    }
}

/// One legacy flow a member serves, as a Flow option carries it: the flow
/// client -> home address, the home address implied (the reporting
/// member's). IPv4 clients would be IPv4-mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedFlow {
    /// Upper-layer protocol (6 TCP, 17 UDP, ...).
    pub proto: u8,
    /// The flow's state at the member.
    pub state: ReportedState,
    /// The client's address (the source of the flow's packets to the HoA).
    pub client: Ipv6Addr,
    /// The client's port.
    pub client_port: u16,
    /// The home address's port.
    pub home_port: u16,
}

impl ReportedFlow {
    /// The flow's key in the client -> `home` direction, as the access
    /// point's affinity table keys it.
    pub fn key(&self, home: Ipv6Addr) -> FlowKey {
        FlowKey {
            src: self.client,
            dst: home,
            proto: self.proto,
            src_port: self.client_port,
            dst_port: self.home_port,
        }
    }

    /// The report of flow `key` (client -> home address); the home address
    /// is left out.
    pub fn from_key(key: &FlowKey, state: ReportedState) -> Self {
        ReportedFlow {
            proto: key.proto,
            state,
            client: key.src,
            client_port: key.src_port,
            home_port: key.dst_port,
        }
    }
}

/// A typed mobility option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MobilityOption {
    /// Binding Refresh Advice (RFC 6275 6.2.4): refresh interval in 4-second
    /// units.
    BindingRefreshAdvice {
        /// Refresh interval, 4-second units.
        interval: u16,
    },
    /// Alternate Care-of Address (RFC 6275 6.2.5).
    AlternateCareOf(Ipv6Addr),
    /// Nonce Indices (RFC 6275 6.2.6).
    NonceIndices {
        /// Home nonce index.
        home: u16,
        /// Care-of nonce index.
        care_of: u16,
    },
    /// Binding Authorization Data (RFC 6275 6.2.7): first 96 bits of
    /// HMAC-SHA256(Kbm, ...). Must be the last option.
    BindingAuthorization([u8; BINDING_AUTHORIZATION_LEN]),
    /// Mobility Message Authentication (RFC 4285 sec. 5) with a fixed
    /// 16-byte Authentication Data. Must be the last option.
    Authentication {
        /// 1 = MN-HA ([`AUTH_SUBTYPE_MN_HA`]).
        subtype: u8,
        /// Mobility SPI: names the shared key.
        spi: u32,
        /// First 128 bits of the HMAC-SHA256.
        data: [u8; AUTHENTICATION_DATA_LEN],
    },
    /// Binding Identifier (RFC 5648 6.1): the member id, with an optional
    /// IPv4 (4 bytes) or IPv6 (16 bytes) care-of address. A 16-byte address
    /// is always kept as [`IpAddr::V6`], IPv4-mapped or not.
    BindingId {
        /// Binding ID (homeaddr's member id).
        id: MemberId,
        /// Status (as in a BA; 0 in a BU).
        status: u8,
        /// Raw flags byte ([`BID_FLAG_H`], [`BID_FLAG_O`]).
        flags: u8,
        /// Care-of address, if present.
        care_of: Option<IpAddr>,
    },
    /// Home Address (homeaddr): the HoA a message is about.
    HomeAddress(Ipv6Addr),
    /// Member State (homeaddr): what a member tells the AP about itself.
    MemberState {
        /// Relative weight for Maglev.
        weight: u16,
        /// `D` flag: take no new clients.
        draining: bool,
        /// Instance number: changes when the member process restarts.
        instance: u64,
    },
    /// Correspondent (homeaddr): the client address a message is about.
    Correspondent(Ipv6Addr),
    /// Session (homeaddr): the sender's receive index and nonce for the
    /// session a registration or route-optimization handshake sets up.
    Session {
        /// The sender's receive session index (never 0 on a sent option).
        index: u32,
        /// The sender's nonce (Nm, Na or Ns).
        nonce: [u8; NONCE_LEN],
    },
    /// Cookie (homeaddr): a stateless cookie of the AP, given in a BA or
    /// echoed in a registration BU.
    Cookie([u8; COOKIE_LEN]),
    /// Care-of Ticket (homeaddr): lets a member send a CoTI to a shim.
    CareOfTicket {
        /// The home nonce index the ticket was made for.
        nonce_index: u16,
        /// First 64 bits of HMAC-SHA256(Kcn, ...).
        ticket: [u8; CARE_OF_TICKET_LEN],
    },
    /// Shim Instance (homeaddr): the shim process the AP has a session
    /// with (in a Shim Notice).
    ShimInstance([u8; SHIM_INSTANCE_LEN]),
    /// Flow (homeaddr): one legacy flow the sending member serves (in a
    /// Flow Report).
    Flow(ReportedFlow),
    /// Endpoint (homeaddr): an IP address and UDP port in the 18-byte
    /// endpoint encoding (an IPv4-mapped address parses as IPv4).
    Endpoint(SocketAddr),
    /// Client Address (homeaddr): the inner source address a shim must
    /// use (in a Shim Welcome; IPv4 as IPv4-mapped).
    ClientAddress(Ipv6Addr),
    /// An option of a type this build does not know, kept verbatim.
    Unknown {
        /// Option Type; never a known type or padding.
        kind: u8,
        /// Option Data, at most 255 bytes.
        data: Vec<u8>,
    },
}

/// The Option Data of an option of type `kind`, for the length checks
/// every type makes.
struct OptionData<'a> {
    kind: u8,
    value: &'a [u8],
}

impl<'a> OptionData<'a> {
    fn bad_len(&self) -> WireError {
        WireError::BadOptionLength {
            kind: self.kind,
            // A value longer than 255 bytes cannot come from the wire.
            len: u8::try_from(self.value.len()).unwrap_or(u8::MAX),
        }
    }

    /// The value, if it is `len` bytes long.
    fn exactly(&self, len: usize) -> Result<&'a [u8], WireError> {
        if self.value.len() == len {
            Ok(self.value)
        } else {
            Err(self.bad_len())
        }
    }

    /// The value, if it is `N` bytes long.
    fn array<const N: usize>(&self) -> Result<[u8; N], WireError> {
        self.value.try_into().map_err(|_| self.bad_len())
    }

    /// The value as an IPv6 address, if it is 16 bytes long.
    fn ipv6(&self) -> Result<Ipv6Addr, WireError> {
        self.array::<16>().map(Ipv6Addr::from)
    }
}

/// An Authentication option's `value` of the right length.
fn authentication(value: &[u8]) -> MobilityOption {
    let mut spi = [0u8; 4];
    spi.copy_from_slice(&value[field::AUTH_SPI]);
    let mut data = [0u8; AUTHENTICATION_DATA_LEN];
    data.copy_from_slice(&value[field::AUTH_DATA]);
    MobilityOption::Authentication {
        subtype: value[field::AUTH_SUBTYPE],
        spi: u32::from_be_bytes(spi),
        data,
    }
}

/// A Binding Identifier: no care-of address, an IPv4 or an IPv6 one.
fn binding_id(data: &OptionData<'_>) -> Result<MobilityOption, WireError> {
    let value = data.value;
    let care_of = match value.len().checked_sub(field::BID_CARE_OF) {
        Some(0) => None,
        Some(4) => {
            let mut v4 = [0u8; 4];
            v4.copy_from_slice(&value[field::BID_CARE_OF..]);
            Some(IpAddr::V4(Ipv4Addr::from(v4)))
        }
        Some(16) => Some(IpAddr::V6(ipv6_at(value, field::BID_CARE_OF))),
        _ => return Err(data.bad_len()),
    };
    Ok(MobilityOption::BindingId {
        id: MemberId(be16(value, field::BID_ID)),
        status: value[field::BID_STATUS],
        flags: value[field::BID_FLAGS],
        care_of,
    })
}

/// A Session option's `value` of the right length.
fn session(value: &[u8]) -> MobilityOption {
    let mut index = [0u8; 4];
    index.copy_from_slice(&value[field::SESSION_INDEX]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&value[field::SESSION_NONCE]);
    MobilityOption::Session {
        index: u32::from_be_bytes(index),
        nonce,
    }
}

/// A Care-of Ticket option's `value` of the right length.
fn care_of_ticket(value: &[u8]) -> MobilityOption {
    let mut ticket = [0u8; CARE_OF_TICKET_LEN];
    ticket.copy_from_slice(&value[field::COT_TICKET]);
    MobilityOption::CareOfTicket {
        nonce_index: be16(value, field::COT_NONCE_INDEX),
        ticket,
    }
}

/// A Flow option's `value` of the right length; an unknown state is an
/// error.
fn flow(value: &[u8]) -> Result<MobilityOption, WireError> {
    let state = ReportedState::from_u8(value[field::FLOW_STATE])
        .ok_or(WireError::InvalidValue("flow option state (0, 1 or 2)"))?;
    Ok(MobilityOption::Flow(ReportedFlow {
        proto: value[field::FLOW_PROTO],
        state,
        client: ipv6_at(value, field::FLOW_CLIENT.start),
        client_port: be16(value, field::FLOW_CLIENT_PORT),
        home_port: be16(value, field::FLOW_HOME_PORT),
    }))
}

/// A Member State option's `value` of the right length.
fn member_state(value: &[u8]) -> MobilityOption {
    let mut instance = [0u8; 8];
    instance.copy_from_slice(&value[field::MS_INSTANCE]);
    MobilityOption::MemberState {
        weight: be16(value, field::MS_WEIGHT),
        draining: be16(value, field::MS_FLAGS) & MEMBER_STATE_DRAINING != 0,
        instance: u64::from_be_bytes(instance),
    }
}

fn be16(b: &[u8], r: core::ops::Range<usize>) -> u16 {
    let mut out = [0u8; 2];
    out.copy_from_slice(&b[r]);
    u16::from_be_bytes(out)
}

fn ipv6_at(b: &[u8], start: usize) -> Ipv6Addr {
    let mut out = [0u8; 16];
    out.copy_from_slice(&b[start..start + 16]);
    Ipv6Addr::from(out)
}

impl MobilityOption {
    /// The Option Type this option is sent with.
    pub fn kind(&self) -> u8 {
        match self {
            MobilityOption::BindingRefreshAdvice { .. } => kind::BINDING_REFRESH_ADVICE,
            MobilityOption::AlternateCareOf(_) => kind::ALTERNATE_CARE_OF,
            MobilityOption::NonceIndices { .. } => kind::NONCE_INDICES,
            MobilityOption::BindingAuthorization(_) => kind::BINDING_AUTHORIZATION,
            MobilityOption::Authentication { .. } => kind::AUTHENTICATION,
            MobilityOption::BindingId { .. } => kind::BINDING_ID,
            MobilityOption::HomeAddress(_) => kind::HOME_ADDRESS,
            MobilityOption::MemberState { .. } => kind::MEMBER_STATE,
            MobilityOption::Correspondent(_) => kind::CORRESPONDENT,
            MobilityOption::Session { .. } => kind::SESSION,
            MobilityOption::Cookie(_) => kind::COOKIE,
            MobilityOption::CareOfTicket { .. } => kind::CARE_OF_TICKET,
            MobilityOption::ShimInstance(_) => kind::SHIM_INSTANCE,
            MobilityOption::Flow(_) => kind::FLOW,
            MobilityOption::Endpoint(_) => kind::ENDPOINT,
            MobilityOption::ClientAddress(_) => kind::CLIENT_ADDRESS,
            MobilityOption::Unknown { kind, .. } => *kind,
        }
    }

    /// Length of the Option Data (the value of the Length byte).
    pub fn value_len(&self) -> usize {
        match self {
            MobilityOption::BindingRefreshAdvice { .. } => 2,
            MobilityOption::AlternateCareOf(_) => 16,
            MobilityOption::NonceIndices { .. } => 4,
            MobilityOption::BindingAuthorization(_) => BINDING_AUTHORIZATION_LEN,
            MobilityOption::Authentication { .. } => field::AUTH_DATA.end,
            MobilityOption::BindingId { care_of, .. } => {
                field::BID_CARE_OF
                    + match care_of {
                        None => 0,
                        Some(IpAddr::V4(_)) => 4,
                        Some(IpAddr::V6(_)) => 16,
                    }
            }
            MobilityOption::HomeAddress(_) => 16,
            MobilityOption::MemberState { .. } => field::MS_INSTANCE.end,
            MobilityOption::Correspondent(_) => 16,
            MobilityOption::Session { .. } => field::SESSION_NONCE.end,
            MobilityOption::Cookie(_) => COOKIE_LEN,
            MobilityOption::CareOfTicket { .. } => field::COT_TICKET.end,
            MobilityOption::ShimInstance(_) => SHIM_INSTANCE_LEN,
            MobilityOption::Flow(_) => FLOW_LEN,
            MobilityOption::Endpoint(_) => ENDPOINT_LEN,
            MobilityOption::ClientAddress(_) => 16,
            MobilityOption::Unknown { data, .. } => data.len(),
        }
    }

    /// Length of the option on the wire, Type and Length bytes included.
    pub fn buffer_len(&self) -> usize {
        OPTION_HEADER_LEN + self.value_len()
    }

    /// Parses the Option Data `value` of an option of type `kind`.
    /// Padding types are refused: [`OptionIter`] skips them before this.
    pub fn parse(kind: u8, value: &[u8]) -> Result<MobilityOption, WireError> {
        let data = OptionData { kind, value };
        Ok(match kind {
            kind::PAD1 | kind::PADN => return Err(WireError::InvalidValue("padding option")),
            kind::BINDING_REFRESH_ADVICE => MobilityOption::BindingRefreshAdvice {
                interval: be16(data.exactly(2)?, 0..2),
            },
            kind::ALTERNATE_CARE_OF => MobilityOption::AlternateCareOf(data.ipv6()?),
            kind::NONCE_INDICES => {
                let value = data.exactly(4)?;
                MobilityOption::NonceIndices {
                    home: be16(value, field::NI_HOME),
                    care_of: be16(value, field::NI_CARE_OF),
                }
            }
            kind::BINDING_AUTHORIZATION => MobilityOption::BindingAuthorization(data.array()?),
            kind::AUTHENTICATION => authentication(data.exactly(field::AUTH_DATA.end)?),
            kind::BINDING_ID => binding_id(&data)?,
            kind::HOME_ADDRESS => MobilityOption::HomeAddress(data.ipv6()?),
            kind::MEMBER_STATE => member_state(data.exactly(field::MS_INSTANCE.end)?),
            kind::CORRESPONDENT => MobilityOption::Correspondent(data.ipv6()?),
            kind::SESSION => session(data.exactly(field::SESSION_NONCE.end)?),
            kind::COOKIE => MobilityOption::Cookie(data.array()?),
            kind::CARE_OF_TICKET => care_of_ticket(data.exactly(field::COT_TICKET.end)?),
            kind::SHIM_INSTANCE => MobilityOption::ShimInstance(data.array()?),
            kind::FLOW => flow(data.exactly(FLOW_LEN)?)?,
            kind::ENDPOINT => MobilityOption::Endpoint(parse_endpoint(&data.array()?)),
            kind::CLIENT_ADDRESS => MobilityOption::ClientAddress(data.ipv6()?),
            _ => {
                if value.len() > usize::from(u8::MAX) {
                    return Err(data.bad_len());
                }
                MobilityOption::Unknown {
                    kind,
                    data: value.to_vec(),
                }
            }
        })
    }

    /// Writes the option (Type, Length, Option Data) at the start of `buf`
    /// and returns its length. Fails on a too-small buffer and on an
    /// [`MobilityOption::Unknown`] that could not be parsed back as itself
    /// (a known or padding type, or more than 255 bytes of data).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        if let MobilityOption::Unknown { kind, data } = self {
            if kind::is_known(*kind) {
                return Err(WireError::InvalidValue(
                    "unknown mobility option with a known option type",
                ));
            }
            if data.len() > usize::from(u8::MAX) {
                return Err(WireError::InvalidValue(
                    "unknown mobility option longer than 255 bytes",
                ));
            }
        }
        let have = buf.len();
        let out = buf
            .get_mut(..len)
            .ok_or(WireError::BufferTooSmall { need: len, have })?;
        out[0] = self.kind();
        // value_len() <= 255 for every known option and was checked above
        // for Unknown.
        out[1] = self.value_len() as u8;
        let value = &mut out[OPTION_HEADER_LEN..];
        match self {
            MobilityOption::BindingRefreshAdvice { interval } => {
                value.copy_from_slice(&interval.to_be_bytes());
            }
            MobilityOption::AlternateCareOf(addr)
            | MobilityOption::HomeAddress(addr)
            | MobilityOption::Correspondent(addr)
            | MobilityOption::ClientAddress(addr) => value.copy_from_slice(&addr.octets()),
            MobilityOption::Endpoint(ep) => value.copy_from_slice(&emit_endpoint(*ep)),
            MobilityOption::NonceIndices { home, care_of } => {
                value[field::NI_HOME].copy_from_slice(&home.to_be_bytes());
                value[field::NI_CARE_OF].copy_from_slice(&care_of.to_be_bytes());
            }
            MobilityOption::BindingAuthorization(auth) => value.copy_from_slice(auth),
            MobilityOption::Session { index, nonce } => {
                value[field::SESSION_INDEX].copy_from_slice(&index.to_be_bytes());
                value[field::SESSION_NONCE].copy_from_slice(nonce);
            }
            MobilityOption::Cookie(cookie) => value.copy_from_slice(cookie),
            MobilityOption::CareOfTicket {
                nonce_index,
                ticket,
            } => {
                value[field::COT_NONCE_INDEX].copy_from_slice(&nonce_index.to_be_bytes());
                value[field::COT_TICKET].copy_from_slice(ticket);
            }
            MobilityOption::ShimInstance(instance) => value.copy_from_slice(instance),
            MobilityOption::Flow(flow) => {
                value[field::FLOW_PROTO] = flow.proto;
                value[field::FLOW_STATE] = flow.state as u8;
                value[field::FLOW_CLIENT_PORT].copy_from_slice(&flow.client_port.to_be_bytes());
                value[field::FLOW_HOME_PORT].copy_from_slice(&flow.home_port.to_be_bytes());
                value[field::FLOW_CLIENT].copy_from_slice(&flow.client.octets());
            }
            MobilityOption::Authentication { subtype, spi, data } => {
                value[field::AUTH_SUBTYPE] = *subtype;
                value[field::AUTH_SPI].copy_from_slice(&spi.to_be_bytes());
                value[field::AUTH_DATA].copy_from_slice(data);
            }
            MobilityOption::BindingId {
                id,
                status,
                flags,
                care_of,
            } => {
                value[field::BID_ID].copy_from_slice(&id.0.to_be_bytes());
                value[field::BID_STATUS] = *status;
                value[field::BID_FLAGS] = *flags;
                match care_of {
                    None => {}
                    Some(IpAddr::V4(v4)) => {
                        value[field::BID_CARE_OF..].copy_from_slice(&v4.octets())
                    }
                    Some(IpAddr::V6(v6)) => {
                        value[field::BID_CARE_OF..].copy_from_slice(&v6.octets())
                    }
                }
            }
            MobilityOption::MemberState {
                weight,
                draining,
                instance,
            } => {
                let flags = if *draining { MEMBER_STATE_DRAINING } else { 0 };
                value[field::MS_WEIGHT].copy_from_slice(&weight.to_be_bytes());
                value[field::MS_FLAGS].copy_from_slice(&flags.to_be_bytes());
                value[field::MS_INSTANCE].copy_from_slice(&instance.to_be_bytes());
            }
            MobilityOption::Unknown { data, .. } => value.copy_from_slice(data),
        }
        Ok(len)
    }
}

/// One option as it sits in the buffer, padding already skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawOption<'a> {
    /// Option Type.
    pub kind: u8,
    /// Offset of the Type byte, relative to the base given to
    /// [`OptionIter::with_base`] (the start of the Mobility Header when the
    /// iterator comes from [`crate::wire::MobilityHeader::options`]).
    pub offset: usize,
    /// Option Data.
    pub value: &'a [u8],
}

impl RawOption<'_> {
    /// The typed option.
    pub fn to_option(&self) -> Result<MobilityOption, WireError> {
        MobilityOption::parse(self.kind, self.value)
    }

    /// Length on the wire, Type and Length bytes included.
    pub fn buffer_len(&self) -> usize {
        OPTION_HEADER_LEN + self.value.len()
    }
}

/// Iterator over the options in a buffer, skipping Pad1 and PadN.
///
/// Yields `Err` once for an option whose Length runs past the end of the
/// buffer, then stops.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
    failed: bool,
}

impl<'a> OptionIter<'a> {
    /// Iterates over `data`, which holds only options.
    pub fn new(data: &'a [u8]) -> Self {
        Self::with_base(data, 0)
    }

    /// Like [`OptionIter::new`], with offsets reported relative to a point
    /// `base` bytes before `data`.
    pub fn with_base(data: &'a [u8], base: usize) -> Self {
        OptionIter {
            data,
            pos: 0,
            base,
            failed: false,
        }
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<RawOption<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            let rest = self.data.get(self.pos..).unwrap_or_default();
            let (&kind, after_kind) = rest.split_first()?;
            if kind == kind::PAD1 {
                self.pos += 1;
                continue;
            }
            let Some((&len, after_len)) = after_kind.split_first() else {
                self.failed = true;
                return Some(Err(WireError::Truncated("mobility option length")));
            };
            let Some(value) = after_len.get(..usize::from(len)) else {
                self.failed = true;
                return Some(Err(WireError::BadOptionLength { kind, len }));
            };
            let offset = self.base + self.pos;
            self.pos += OPTION_HEADER_LEN + value.len();
            if kind == kind::PADN {
                continue;
            }
            return Some(Ok(RawOption {
                kind,
                offset,
                value,
            }));
        }
        None
    }
}

/// Parses every option in `data` (padding skipped).
pub fn parse_options(data: &[u8]) -> Result<Vec<MobilityOption>, WireError> {
    OptionIter::new(data)
        .map(|raw| raw.and_then(|raw| raw.to_option()))
        .collect()
}

/// Fills `buf` with padding: Pad1 for a single byte, otherwise PadN options
/// of zero bytes (RFC 6275 6.2.2, 6.2.3).
pub fn emit_padding(buf: &mut [u8]) {
    let mut rest = buf;
    while !rest.is_empty() {
        if rest.len() == 1 {
            rest[0] = kind::PAD1;
            return;
        }
        // One PadN holds at most 255 data bytes; a single byte left over
        // becomes a Pad1 on the next turn.
        let take = rest.len().min(OPTION_HEADER_LEN + usize::from(u8::MAX));
        let (pad, tail) = rest.split_at_mut(take);
        pad[0] = kind::PADN;
        pad[1] = (take - OPTION_HEADER_LEN) as u8;
        pad[OPTION_HEADER_LEN..].fill(0);
        rest = tail;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(opt: &MobilityOption, bytes: &[u8]) {
        let mut buf = vec![0u8; opt.buffer_len()];
        assert_eq!(opt.emit(&mut buf), Ok(bytes.len()));
        assert_eq!(buf, bytes);
        assert_eq!(parse_options(bytes), Ok(vec![opt.clone()]));
    }

    #[test]
    fn fixtures() {
        round_trip(
            &MobilityOption::BindingRefreshAdvice { interval: 0x0102 },
            &[2, 2, 1, 2],
        );
        round_trip(
            &MobilityOption::NonceIndices {
                home: 7,
                care_of: 0x1234,
            },
            &[4, 4, 0, 7, 0x12, 0x34],
        );
        round_trip(
            &MobilityOption::BindingAuthorization([0xaa; 12]),
            &[
                5, 12, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
            ],
        );
        let mut auth = vec![9, 21, 1, 0, 0, 1, 0];
        auth.extend_from_slice(&[0x55; 16]);
        round_trip(
            &MobilityOption::Authentication {
                subtype: AUTH_SUBTYPE_MN_HA,
                spi: 256,
                data: [0x55; 16],
            },
            &auth,
        );
        round_trip(
            &MobilityOption::BindingId {
                id: MemberId(3),
                status: 0,
                flags: BID_FLAG_H,
                care_of: None,
            },
            &[35, 4, 0, 3, 0, 0x80],
        );
        round_trip(
            &MobilityOption::BindingId {
                id: MemberId(0x0203),
                status: 128,
                flags: 0,
                care_of: Some("198.18.7.1".parse().unwrap()),
            },
            &[35, 8, 2, 3, 128, 0, 198, 18, 7, 1],
        );
        let mut bid6 = vec![35, 20, 0, 1, 0, 0];
        bid6.extend_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
        round_trip(
            &MobilityOption::BindingId {
                id: MemberId(1),
                status: 0,
                flags: 0,
                care_of: Some("2001:db8::9".parse().unwrap()),
            },
            &bid6,
        );
        let mut hoa = vec![200, 16];
        hoa.extend_from_slice(&"2001:db8:1::1".parse::<Ipv6Addr>().unwrap().octets());
        round_trip(
            &MobilityOption::HomeAddress("2001:db8:1::1".parse().unwrap()),
            &hoa,
        );
        round_trip(
            &MobilityOption::MemberState {
                weight: 100,
                draining: true,
                instance: 0x0102_0304_0506_0708,
            },
            &[201, 12, 0, 100, 0x80, 0, 1, 2, 3, 4, 5, 6, 7, 8],
        );
        let mut session = vec![203, 20, 0x01, 0x02, 0x03, 0x04];
        session.extend_from_slice(&[0x5a; 16]);
        round_trip(
            &MobilityOption::Session {
                index: 0x0102_0304,
                nonce: [0x5a; 16],
            },
            &session,
        );
        let mut cookie = vec![204, 16];
        cookie.extend(1..=16u8);
        let mut cookie_value = [0u8; 16];
        cookie_value.copy_from_slice(&cookie[2..]);
        round_trip(&MobilityOption::Cookie(cookie_value), &cookie);
        round_trip(
            &MobilityOption::CareOfTicket {
                nonce_index: 0x0a0b,
                ticket: [1, 2, 3, 4, 5, 6, 7, 8],
            },
            &[205, 10, 0x0a, 0x0b, 1, 2, 3, 4, 5, 6, 7, 8],
        );
        round_trip(
            &MobilityOption::ShimInstance([8, 7, 6, 5, 4, 3, 2, 1]),
            &[206, 8, 8, 7, 6, 5, 4, 3, 2, 1],
        );
        let mut flow = vec![207, 22, 6, 1, 0x9c, 0x40, 0x01, 0xbb];
        flow.extend_from_slice(&"fd00:4841::7".parse::<Ipv6Addr>().unwrap().octets());
        round_trip(
            &MobilityOption::Flow(ReportedFlow {
                proto: 6,
                state: ReportedState::Open,
                client: "fd00:4841::7".parse().unwrap(),
                client_port: 40_000,
                home_port: 443,
            }),
            &flow,
        );
        let mut endpoint = vec![208, 18];
        endpoint.extend_from_slice(&Ipv4Addr::new(198, 18, 0, 7).to_ipv6_mapped().octets());
        endpoint.extend_from_slice(&[0x12, 0xb6]);
        round_trip(
            &MobilityOption::Endpoint("198.18.0.7:4790".parse().unwrap()),
            &endpoint,
        );
        let mut client = vec![209, 16];
        client.extend_from_slice(&"fd00:4841:cccc::1".parse::<Ipv6Addr>().unwrap().octets());
        round_trip(
            &MobilityOption::ClientAddress("fd00:4841:cccc::1".parse().unwrap()),
            &client,
        );
        round_trip(
            &MobilityOption::Unknown {
                kind: 42,
                data: vec![1, 2, 3],
            },
            &[42, 3, 1, 2, 3],
        );
    }

    #[test]
    fn padding_is_skipped_and_offsets_are_reported() {
        let bytes = [0, 1, 2, 0, 0, 4, 4, 0, 1, 0, 2, 0];
        let raws: Vec<_> = OptionIter::with_base(&bytes, 10).collect();
        assert_eq!(
            raws,
            vec![Ok(RawOption {
                kind: 4,
                offset: 15,
                value: &[0, 1, 0, 2],
            })]
        );
    }

    #[test]
    fn errors() {
        // Length runs past the end.
        assert_eq!(
            parse_options(&[4, 4, 0, 1]),
            Err(WireError::BadOptionLength { kind: 4, len: 4 })
        );
        // No length byte.
        assert_eq!(
            parse_options(&[4]),
            Err(WireError::Truncated("mobility option length"))
        );
        // Known option, wrong length.
        assert_eq!(
            parse_options(&[4, 2, 0, 1]),
            Err(WireError::BadOptionLength { kind: 4, len: 2 })
        );
        assert_eq!(
            parse_options(&[35, 6, 0, 1, 0, 0, 1, 2]),
            Err(WireError::BadOptionLength { kind: 35, len: 6 })
        );
        // The v2 options have fixed lengths: one byte short or long is an error.
        for (kind, len) in [
            (kind::SESSION, 20u8),
            (kind::COOKIE, 16),
            (kind::CARE_OF_TICKET, 10),
            (kind::SHIM_INSTANCE, 8),
            (kind::FLOW, 22),
            (kind::ENDPOINT, 18),
        ] {
            for bad in [0, len - 1, len + 1] {
                let mut bytes = vec![kind, bad];
                bytes.resize(OPTION_HEADER_LEN + usize::from(bad), 0);
                assert_eq!(
                    parse_options(&bytes),
                    Err(WireError::BadOptionLength { kind, len: bad }),
                    "type {kind} length {bad}"
                );
            }
            // The value runs past the end of the buffer.
            let mut short = vec![kind, len];
            short.resize(OPTION_HEADER_LEN + usize::from(len) - 1, 0);
            assert_eq!(
                parse_options(&short),
                Err(WireError::BadOptionLength { kind, len })
            );
        }
        // Unknown with a known type cannot be emitted.
        let bogus = MobilityOption::Unknown {
            kind: kind::NONCE_INDICES,
            data: vec![0; 4],
        };
        assert!(bogus.emit(&mut [0u8; 6]).is_err());
        let bogus = MobilityOption::Unknown {
            kind: kind::SESSION,
            data: vec![0; 20],
        };
        assert!(bogus.emit(&mut [0u8; 22]).is_err());
        assert_eq!(
            MobilityOption::Cookie([0; 16]).emit(&mut [0u8; 17]),
            Err(WireError::BufferTooSmall { need: 18, have: 17 })
        );
        assert_eq!(
            MobilityOption::NonceIndices {
                home: 0,
                care_of: 0
            }
            .emit(&mut [0u8; 5]),
            Err(WireError::BufferTooSmall { need: 6, have: 5 })
        );
    }

    #[test]
    fn flow_state_values_and_keys() {
        for value in 0..=u8::MAX {
            match ReportedState::from_u8(value) {
                Some(state) => assert_eq!(state as u8, value),
                None => assert!(value > 2, "{value}"),
            }
        }
        let mut bytes = vec![kind::FLOW, 22, 17, 3];
        bytes.resize(OPTION_HEADER_LEN + FLOW_LEN, 0);
        assert_eq!(
            parse_options(&bytes),
            Err(WireError::InvalidValue("flow option state (0, 1 or 2)"))
        );
        let home: Ipv6Addr = "fd00:4841:1::1".parse().unwrap();
        let key = FlowKey {
            src: "fd00:4841:2::9".parse().unwrap(),
            dst: home,
            proto: 6,
            src_port: 50_000,
            dst_port: 22,
        };
        let flow = ReportedFlow::from_key(&key, ReportedState::Closing);
        assert_eq!(
            (flow.client, flow.client_port, flow.home_port),
            (key.src, 50_000, 22)
        );
        assert_eq!(flow.key(home), key);
    }

    #[test]
    fn padding_shapes() {
        for len in 0..600 {
            let mut buf = vec![0xffu8; len];
            emit_padding(&mut buf);
            assert_eq!(parse_options(&buf), Ok(vec![]), "padding of {len}");
        }
        let mut three = [0xff; 3];
        emit_padding(&mut three);
        assert_eq!(three, [1, 1, 0]);
        let mut one = [0xff; 1];
        emit_padding(&mut one);
        assert_eq!(one, [0]);
    }

    /// Any reported flow.
    pub(crate) fn flow_strategy() -> impl Strategy<Value = ReportedFlow> {
        let state = prop_oneof![
            Just(ReportedState::Opening),
            Just(ReportedState::Open),
            Just(ReportedState::Closing),
        ];
        (
            any::<u8>(),
            state,
            any::<u128>(),
            any::<u16>(),
            any::<u16>(),
        )
            .prop_map(
                |(proto, state, client, client_port, home_port)| ReportedFlow {
                    proto,
                    state,
                    client: Ipv6Addr::from(client),
                    client_port,
                    home_port,
                },
            )
    }

    /// Any option this build can emit and parse back.
    pub(crate) fn option_strategy() -> impl Strategy<Value = MobilityOption> {
        let v6 = || any::<u128>().prop_map(Ipv6Addr::from);
        let care_of = proptest::option::of(prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]);
        prop_oneof![
            any::<u16>().prop_map(|interval| MobilityOption::BindingRefreshAdvice { interval }),
            v6().prop_map(MobilityOption::AlternateCareOf),
            (any::<u16>(), any::<u16>())
                .prop_map(|(home, care_of)| MobilityOption::NonceIndices { home, care_of }),
            any::<[u8; 12]>().prop_map(MobilityOption::BindingAuthorization),
            (any::<u8>(), any::<u32>(), any::<[u8; 16]>()).prop_map(|(subtype, spi, data)| {
                MobilityOption::Authentication { subtype, spi, data }
            }),
            (any::<u16>(), any::<u8>(), any::<u8>(), care_of).prop_map(
                |(id, status, flags, care_of)| MobilityOption::BindingId {
                    id: MemberId(id),
                    status,
                    flags,
                    care_of,
                }
            ),
            v6().prop_map(MobilityOption::HomeAddress),
            (any::<u16>(), any::<bool>(), any::<u64>()).prop_map(|(weight, draining, instance)| {
                MobilityOption::MemberState {
                    weight,
                    draining,
                    instance,
                }
            }),
            v6().prop_map(MobilityOption::Correspondent),
            (any::<u32>(), any::<[u8; 16]>())
                .prop_map(|(index, nonce)| MobilityOption::Session { index, nonce }),
            any::<[u8; 16]>().prop_map(MobilityOption::Cookie),
            (any::<u16>(), any::<[u8; 8]>()).prop_map(|(nonce_index, ticket)| {
                MobilityOption::CareOfTicket {
                    nonce_index,
                    ticket,
                }
            }),
            any::<[u8; 8]>().prop_map(MobilityOption::ShimInstance),
            flow_strategy().prop_map(MobilityOption::Flow),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, port)| {
                let ip = Ipv6Addr::from(a);
                let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
                MobilityOption::Endpoint(SocketAddr::new(ip, port))
            }),
            v6().prop_map(MobilityOption::ClientAddress),
            (
                any::<u8>().prop_filter("unknown type", |k| !kind::is_known(*k)),
                proptest::collection::vec(any::<u8>(), 0..40),
            )
                .prop_map(|(kind, data)| MobilityOption::Unknown { kind, data }),
        ]
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(opts) = parse_options(&b) {
                // Whatever parsed re-emits and parses to the same options.
                let mut out = Vec::new();
                for opt in &opts {
                    let mut buf = vec![0u8; opt.buffer_len()];
                    prop_assert_eq!(opt.emit(&mut buf), Ok(buf.len()));
                    out.extend_from_slice(&buf);
                }
                prop_assert_eq!(parse_options(&out), Ok(opts));
            }
        }

        #[test]
        fn option_round_trips(opt in option_strategy()) {
            let mut buf = vec![0u8; opt.buffer_len()];
            prop_assert_eq!(opt.emit(&mut buf), Ok(buf.len()));
            prop_assert_eq!(parse_options(&buf), Ok(vec![opt]));
        }
    }
}
