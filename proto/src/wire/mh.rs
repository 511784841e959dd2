//! Mobility Header messages (RFC 6275 sec. 6.1; docs/PROTOCOL.md section 2).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Payload Proto |  Header Len   |   MH Type     |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Checksum            |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               |
//! .                        Message Data                           .
//! ```
//!
//! The message is `(Header Len + 1) * 8` bytes: the type's fixed fields,
//! then mobility options ([`super::option`]) up to the end. The checksum is
//! sent as 0 and not verified (deviation D3: the UDP checksum and the MACs
//! cover the message).
//!
//! Two levels: [`MobilityHeader`] is a zero-copy view, [`MobilityMessage`]
//! the typed message ([`MessageBody`] + options).

use core::ops::Range;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::endpoint::{ENDPOINT_LEN, emit_endpoint, parse_endpoint};
use super::option::{
    AUTHENTICATION_DATA_LEN, AUTHENTICATION_DATA_OFFSET, BINDING_AUTHORIZATION_AUTH_OFFSET,
    BINDING_AUTHORIZATION_LEN, CARE_OF_TICKET_LEN, COOKIE_LEN, MobilityOption, NONCE_LEN,
    OptionIter, ReportedFlow, SHIM_INSTANCE_LEN, emit_padding, kind,
};
use super::{MemberId, WireError};

/// Payload Proto of every Mobility Header: IPPROTO_NONE (RFC 6275 6.1.1).
pub const MH_PAYLOAD_PROTO: u8 = 59;
/// Bytes before the Message Data: Payload Proto, Header Len, MH Type,
/// Reserved, Checksum.
pub const MH_FIXED_LEN: usize = 6;
/// The longest message Header Len can describe: (255 + 1) * 8.
pub const MH_MAX_LEN: usize = 2048;
/// Length of an X25519 public key (Shim Hello, Shim Welcome).
pub const PUBLIC_KEY_LEN: usize = 32;
/// Most Flow options in one Flow Report: 8 + 48 x 24 = 1160 bytes of
/// message, so the sealed datagram stays under 1280 bytes.
pub const FLOWS_PER_REPORT: usize = 48;

/// Byte offsets of the common header fields.
mod field {
    use core::ops::Range;

    pub const PAYLOAD_PROTO: usize = 0;
    pub const HEADER_LEN: usize = 1;
    pub const MH_TYPE: usize = 2;
    pub const RESERVED: usize = 3;
    pub const CHECKSUM: Range<usize> = 4..6;
    /// Start of the Message Data.
    pub const DATA: usize = 6;
}

/// Byte offsets of each type's fixed fields, relative to the start of the
/// Mobility Header.
mod body {
    use core::ops::Range;

    /// HoTI / CoTI (RFC 6275 6.1.3, 6.1.4): Reserved 2, cookie 8.
    pub const INIT_COOKIE: Range<usize> = 8..16;
    /// HoT / CoT (RFC 6275 6.1.5, 6.1.6): nonce index.
    pub const TEST_NONCE_INDEX: Range<usize> = 6..8;
    /// HoT / CoT: init cookie.
    pub const TEST_COOKIE: Range<usize> = 8..16;
    /// HoT / CoT: keygen token.
    pub const TEST_TOKEN: Range<usize> = 16..24;
    /// BU (RFC 6275 6.1.7): sequence number.
    pub const BU_SEQUENCE: Range<usize> = 6..8;
    /// BU: flags (A, H, ...).
    pub const BU_FLAGS: Range<usize> = 8..10;
    /// BU: lifetime, 4-second units.
    pub const BU_LIFETIME: Range<usize> = 10..12;
    /// BA (RFC 6275 6.1.8): status.
    pub const BA_STATUS: usize = 6;
    /// BA: flags (all ignored).
    pub const BA_FLAGS: usize = 7;
    /// BA: sequence number.
    pub const BA_SEQUENCE: Range<usize> = 8..10;
    /// BA: lifetime.
    pub const BA_LIFETIME: Range<usize> = 10..12;
    /// BE (RFC 6275 6.1.9): status.
    pub const BE_STATUS: usize = 6;
    /// BE: home address.
    pub const BE_HOME: Range<usize> = 8..24;
    /// BRI (RFC 5846 6.1): B.R. Type.
    pub const BR_TYPE: usize = 6;
    /// BRI: revocation trigger.
    pub const BR_TRIGGER: usize = 7;
    /// BRI: sequence number.
    pub const BR_SEQUENCE: Range<usize> = 8..10;
    /// BRI: flags P, I, G, V and reserved (all sent as 0, ignored).
    pub const BR_FLAGS: Range<usize> = 10..12;
    /// Shim Notice: client address.
    pub const SN_CLIENT: Range<usize> = 8..24;
    /// Shim Notice: shim endpoint (address 16, port 2).
    pub const SN_SHIM: Range<usize> = 24..42;
    /// Shim Hello: Reserved 2, shim instance.
    pub const SH_INSTANCE: Range<usize> = 8..16;
    /// Shim Hello: the shim's receive index (Is).
    pub const SH_INDEX: Range<usize> = 16..20;
    /// Shim Hello: the shim's nonce (Ns).
    pub const SH_NONCE: Range<usize> = 20..36;
    /// Shim Hello: cookie (zero if none).
    pub const SH_COOKIE: Range<usize> = 36..52;
    /// Shim Hello: the shim's X25519 public key.
    pub const SH_PUBLIC: Range<usize> = 52..84;
    /// Shim Cookie: Reserved 2, nonce (echo of Ns; zero = handshake again).
    pub const SC_NONCE: Range<usize> = 8..24;
    /// Shim Cookie: cookie.
    pub const SC_COOKIE: Range<usize> = 24..40;
    /// Shim Welcome: Reserved 2, nonce (echo of Ns).
    pub const SW_NONCE: Range<usize> = 8..24;
    /// Shim Welcome: the AP's receive index (Ia).
    pub const SW_INDEX: Range<usize> = 24..28;
    /// Shim Welcome: the AP's nonce (Na).
    pub const SW_AP_NONCE: Range<usize> = 28..44;
    /// Shim Welcome: the AP's X25519 public key.
    pub const SW_PUBLIC: Range<usize> = 44..76;
    /// Flow Report: flags (F); a reserved byte follows.
    pub const FR_FLAGS: usize = 6;
}

/// Binding Update flag `A`: acknowledgement requested (RFC 6275 6.1.7).
pub const BU_FLAG_ACK: u16 = 0x8000;
/// Binding Update flag `H`: home registration (RFC 6275 6.1.7).
pub const BU_FLAG_HOME: u16 = 0x4000;
/// Flow Report flag `F`: a full report, the member's complete list of open
/// flows.
pub const FLOW_REPORT_FULL: u8 = 0x80;
/// B.R. Type of a Binding Revocation Indication (RFC 5846 6.1.1); the
/// acknowledgement (2) is not used by homeaddr.
pub const BR_TYPE_INDICATION: u8 = 1;

/// Binding Acknowledgement status values (RFC 6275 6.1.8, RFC 4285 sec. 9,
/// homeaddr). Values below 128 accept the binding.
pub mod ba_status {
    /// Binding Update accepted.
    pub const ACCEPTED: u8 = 0;
    /// Reason unspecified.
    pub const REASON_UNSPECIFIED: u8 = 128;
    /// Administratively prohibited.
    pub const ADMINISTRATIVELY_PROHIBITED: u8 = 129;
    /// Not home agent for this mobile node (unknown HoA).
    pub const NOT_HOME_AGENT: u8 = 133;
    /// Sequence number out of window.
    pub const SEQUENCE_OUT_OF_WINDOW: u8 = 135;
    /// Expired home nonce index.
    pub const EXPIRED_HOME_NONCE_INDEX: u8 = 136;
    /// Expired care-of nonce index.
    pub const EXPIRED_CARE_OF_NONCE_INDEX: u8 = 137;
    /// Expired nonces.
    pub const EXPIRED_NONCES: u8 = 138;
    /// MIPV6-AUTH-FAIL (RFC 4285 sec. 9): the authentication option did not
    /// verify.
    pub const AUTHENTICATION_FAILED: u8 = 146;
    /// homeaddr: the member id is registered by another member instance.
    pub const MEMBER_ID_IN_USE: u8 = 200;
    /// homeaddr (v2): no valid cookie for this endpoint; the BA is signed
    /// and carries a fresh Cookie option, send the BU again with it.
    pub const RETRY_WITH_COOKIE: u8 = 202;
}

/// Binding Error status values (RFC 6275 6.1.9).
pub mod be_status {
    /// Data or a BA from an endpoint with no binding.
    pub const UNKNOWN_BINDING: u8 = 1;
    /// Unrecognized MH Type value.
    pub const UNRECOGNIZED_MH_TYPE: u8 = 2;
}

/// Revocation Trigger values of a BRI (RFC 5846 6.1.1, 8).
pub mod revocation_trigger {
    /// Unspecified (RFC 5846).
    pub const UNSPECIFIED: u8 = 0;
    /// Administrative Reason (RFC 5846): the operator removed the member.
    pub const ADMINISTRATIVE: u8 = 1;
    /// homeaddr (v2): another instance of the member took over its id.
    /// A per-MN trigger value that IANA leaves unassigned (8-127).
    pub const MEMBER_RESTARTED: u8 = 126;
    /// homeaddr: the member failed its liveness checks. A per-MN trigger
    /// value that IANA leaves unassigned (8-127).
    pub const LIVENESS_FAILURE: u8 = 127;
}

/// Mobility Header types homeaddr speaks.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MhType {
    /// Binding Refresh Request (RFC 6275 6.1.2).
    BindingRefreshRequest = 0,
    /// Home Test Init (RFC 6275 6.1.3).
    HomeTestInit = 1,
    /// Care-of Test Init (RFC 6275 6.1.4).
    CareOfTestInit = 2,
    /// Home Test (RFC 6275 6.1.5).
    HomeTest = 3,
    /// Care-of Test (RFC 6275 6.1.6).
    CareOfTest = 4,
    /// Binding Update (RFC 6275 6.1.7).
    BindingUpdate = 5,
    /// Binding Acknowledgement (RFC 6275 6.1.8).
    BindingAck = 6,
    /// Binding Error (RFC 6275 6.1.9).
    BindingError = 7,
    /// Binding Revocation, indication only (RFC 5846 6.1).
    BindingRevocation = 16,
    /// Shim Notice (homeaddr, deviation D5).
    ShimNotice = 200,
    /// Shim Hello (homeaddr, docs/PROTOCOL.md sections 2, 3).
    ShimHello = 201,
    /// Shim Cookie (homeaddr, docs/PROTOCOL.md sections 2, 3).
    ShimCookie = 202,
    /// Shim Welcome (homeaddr, docs/PROTOCOL.md sections 2, 3).
    ShimWelcome = 203,
    /// Flow Report (homeaddr, member -> AP, sealed; docs/PROTOCOL.md
    /// "Several access points").
    FlowReport = 204,
    /// Punch (homeaddr, shim -> member care-of endpoint, unsealed; opens a
    /// NAT's filter for the member's care-of test, docs/PROTOCOL.md 5.3).
    Punch = 205,
}

impl MhType {
    /// The type for a wire value, if this build knows it.
    pub fn from_u8(value: u8) -> Option<MhType> {
        Some(match value {
            0 => MhType::BindingRefreshRequest,
            1 => MhType::HomeTestInit,
            2 => MhType::CareOfTestInit,
            3 => MhType::HomeTest,
            4 => MhType::CareOfTest,
            5 => MhType::BindingUpdate,
            6 => MhType::BindingAck,
            7 => MhType::BindingError,
            16 => MhType::BindingRevocation,
            200 => MhType::ShimNotice,
            201 => MhType::ShimHello,
            202 => MhType::ShimCookie,
            203 => MhType::ShimWelcome,
            204 => MhType::FlowReport,
            205 => MhType::Punch,
            _ => return None,
        })
    }

    /// Length of the type's fixed fields after the checksum.
    pub const fn fixed_len(self) -> usize {
        match self {
            MhType::BindingRefreshRequest | MhType::FlowReport | MhType::Punch => 2,
            MhType::HomeTestInit | MhType::CareOfTestInit => 10,
            MhType::HomeTest | MhType::CareOfTest => 18,
            MhType::BindingUpdate | MhType::BindingAck | MhType::BindingRevocation => 6,
            MhType::BindingError => 18,
            MhType::ShimNotice => 2 + 16 + ENDPOINT_LEN,
            MhType::ShimHello => {
                2 + SHIM_INSTANCE_LEN + 4 + NONCE_LEN + COOKIE_LEN + PUBLIC_KEY_LEN
            }
            MhType::ShimCookie => 2 + NONCE_LEN + COOKIE_LEN,
            MhType::ShimWelcome => 2 + NONCE_LEN + 4 + NONCE_LEN + PUBLIC_KEY_LEN,
        }
    }

    /// Offset of the first option: the end of the fixed fields.
    pub const fn options_offset(self) -> usize {
        MH_FIXED_LEN + self.fixed_len()
    }
}

impl TryFrom<u8> for MhType {
    type Error = WireError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        MhType::from_u8(value).ok_or(WireError::UnknownMhType(value))
    }
}

/// Zero-copy view of a Mobility Header message.
///
/// Only [`MobilityHeader::new_checked`] builds one, so no accessor panics:
/// the payload proto is 59, the message fits the buffer, the type is known
/// and the message is long enough for the type's fixed fields. Bytes of the
/// buffer after the message are not part of it.
#[derive(Debug, Clone)]
pub struct MobilityHeader<T: AsRef<[u8]>> {
    buffer: T,
    mh_type: MhType,
    len: usize,
}

impl<T: AsRef<[u8]>> MobilityHeader<T> {
    /// Checks `buffer` and wraps it. Errors: [`WireError::Truncated`] under
    /// 8 bytes, [`WireError::BadPayloadProto`], [`WireError::BadLength`] if
    /// Header Len runs past the buffer or is too short for the type,
    /// [`WireError::UnknownMhType`] (answer it with a BE, status 2).
    pub fn new_checked(buffer: T) -> Result<MobilityHeader<T>, WireError> {
        let b = buffer.as_ref();
        if b.len() < 8 {
            return Err(WireError::Truncated("mobility header"));
        }
        if b[field::PAYLOAD_PROTO] != MH_PAYLOAD_PROTO {
            return Err(WireError::BadPayloadProto(b[field::PAYLOAD_PROTO]));
        }
        let len = (usize::from(b[field::HEADER_LEN]) + 1) * 8;
        if len > b.len() {
            return Err(WireError::BadLength(len));
        }
        let mh_type = MhType::try_from(b[field::MH_TYPE])?;
        if len < mh_type.options_offset() {
            return Err(WireError::BadLength(len));
        }
        Ok(MobilityHeader {
            buffer,
            mh_type,
            len,
        })
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The MH Type.
    pub fn mh_type(&self) -> MhType {
        self.mh_type
    }

    /// Length of the message in bytes, `(Header Len + 1) * 8`.
    pub fn header_len(&self) -> usize {
        self.len
    }

    /// The Checksum field (not verified; deviation D3).
    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The whole message, without any bytes the buffer has after it.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.len]
    }

    /// Message Data: the fixed fields and the options.
    pub fn message_data(&self) -> &[u8] {
        &self.as_bytes()[field::DATA..]
    }

    /// The raw bytes of the options area.
    pub fn options_bytes(&self) -> &[u8] {
        &self.as_bytes()[self.mh_type.options_offset()..]
    }

    /// The options, padding skipped; offsets relative to the start of the MH.
    pub fn options(&self) -> OptionIter<'_> {
        OptionIter::with_base(self.options_bytes(), self.mh_type.options_offset())
    }

    /// The byte range, relative to the start of the MH, of the authenticator
    /// of the last option, if that option is Binding Authorization Data (its
    /// 12-byte Authenticator, RFC 6275 6.2.7) or Mobility Message
    /// Authentication (its 16-byte Authentication Data, RFC 4285 sec. 5).
    /// `None` if the options do not parse. MACs are computed over the
    /// message with this range excluded.
    pub fn authenticator_range(&self) -> Option<Range<usize>> {
        let mut last = None;
        for raw in self.options() {
            last = Some(raw.ok()?);
        }
        let last = last?;
        let (start, len) = match (last.kind, last.value.len()) {
            (kind::BINDING_AUTHORIZATION, BINDING_AUTHORIZATION_LEN) => {
                (BINDING_AUTHORIZATION_AUTH_OFFSET, BINDING_AUTHORIZATION_LEN)
            }
            (kind::AUTHENTICATION, _) if last.to_option().is_ok() => {
                (AUTHENTICATION_DATA_OFFSET, AUTHENTICATION_DATA_LEN)
            }
            _ => return None,
        };
        let start = last.offset + start;
        Some(start..start + len)
    }
}

/// The fixed fields of each message type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageBody {
    /// Binding Refresh Request (RFC 6275 6.1.2). AP -> member: liveness probe.
    BindingRefreshRequest,
    /// Home Test Init (RFC 6275 6.1.3).
    HomeTestInit {
        /// Home Init Cookie.
        cookie: [u8; 8],
    },
    /// Care-of Test Init (RFC 6275 6.1.4).
    CareOfTestInit {
        /// Care-of Init Cookie.
        cookie: [u8; 8],
    },
    /// Home Test (RFC 6275 6.1.5).
    HomeTest {
        /// Home Nonce Index.
        nonce_index: u16,
        /// Home Init Cookie, echoed.
        cookie: [u8; 8],
        /// Home Keygen Token.
        token: [u8; 8],
    },
    /// Care-of Test (RFC 6275 6.1.6).
    CareOfTest {
        /// Care-of Nonce Index.
        nonce_index: u16,
        /// Care-of Init Cookie, echoed.
        cookie: [u8; 8],
        /// Care-of Keygen Token.
        token: [u8; 8],
    },
    /// Binding Update (RFC 6275 6.1.7). Flags other than `A` and `H` are
    /// sent as 0 and ignored.
    BindingUpdate {
        /// Sequence number.
        sequence: u16,
        /// `A`: acknowledgement requested.
        ack: bool,
        /// `H`: home registration (member -> AP).
        home: bool,
        /// Lifetime, 4-second units.
        lifetime: u16,
    },
    /// Binding Acknowledgement (RFC 6275 6.1.8). Flags are sent as 0 and
    /// ignored.
    BindingAck {
        /// Status ([`ba_status`]).
        status: u8,
        /// Sequence number of the acknowledged BU.
        sequence: u16,
        /// Granted lifetime, 4-second units.
        lifetime: u16,
    },
    /// Binding Error (RFC 6275 6.1.9).
    BindingError {
        /// Status ([`be_status`]).
        status: u8,
        /// Home address the error is about.
        home_address: Ipv6Addr,
    },
    /// Binding Revocation Indication (RFC 5846 6.1.1), B.R. Type 1. Flags
    /// P, I, G, V are sent as 0 and ignored.
    BindingRevocation {
        /// Revocation Trigger ([`revocation_trigger`]).
        trigger: u8,
        /// Sequence number.
        sequence: u16,
    },
    /// Shim Notice (homeaddr): client `client` is served through a shim at
    /// tunnel endpoint `shim`. The endpoint uses the 18-byte encoding of
    /// [`super::endpoint`]: an IPv4-mapped address comes back as
    /// [`SocketAddr::V4`], flow info and scope id are not carried.
    ShimNotice {
        /// The client's address (the inner source).
        client: Ipv6Addr,
        /// The shim's tunnel endpoint.
        shim: SocketAddr,
    },
    /// Shim Hello (homeaddr, shim -> AP, unsealed): opens a shim - AP
    /// session; the second Hello echoes the AP's cookie.
    ShimHello {
        /// The shim process's instance.
        instance: [u8; SHIM_INSTANCE_LEN],
        /// The shim's receive session index (Is).
        index: u32,
        /// The shim's nonce (Ns).
        nonce: [u8; NONCE_LEN],
        /// The AP's cookie, all zero if the shim has none.
        cookie: [u8; COOKIE_LEN],
        /// The shim's ephemeral X25519 public key.
        public: [u8; PUBLIC_KEY_LEN],
    },
    /// Shim Cookie (homeaddr, AP -> shim, unsealed): the stateless answer
    /// to a Hello without a valid cookie.
    ShimCookie {
        /// Echo of the Hello's nonce (Ns); all zero = "I have no session
        /// for you: handshake again".
        nonce: [u8; NONCE_LEN],
        /// The cookie to put in the next Hello.
        cookie: [u8; COOKIE_LEN],
    },
    /// Shim Welcome (homeaddr, AP -> shim, unsealed): the AP accepted the
    /// Hello; the session keys follow from these fields.
    ShimWelcome {
        /// Echo of the Hello's nonce (Ns).
        nonce: [u8; NONCE_LEN],
        /// The AP's receive session index (Ia).
        index: u32,
        /// The AP's nonce (Na).
        ap_nonce: [u8; NONCE_LEN],
        /// The AP's ephemeral X25519 public key.
        public: [u8; PUBLIC_KEY_LEN],
    },
    /// Flow Report (homeaddr, member -> AP, always sealed): the legacy
    /// flows the member serves, one Flow option each (at most
    /// [`FLOWS_PER_REPORT`]). The other flag bits and the reserved byte are
    /// sent as 0 and ignored.
    FlowReport {
        /// `F`: the member's complete list of open flows.
        full: bool,
    },
    /// Punch (homeaddr, shim -> member, unsealed): no fixed fields (two
    /// reserved bytes); the receiver drops it. It exists to make the
    /// shim's NAT let the member's care-of test in.
    Punch,
}

impl MessageBody {
    /// The MH Type this body is sent with.
    pub fn mh_type(&self) -> MhType {
        match self {
            MessageBody::BindingRefreshRequest => MhType::BindingRefreshRequest,
            MessageBody::HomeTestInit { .. } => MhType::HomeTestInit,
            MessageBody::CareOfTestInit { .. } => MhType::CareOfTestInit,
            MessageBody::HomeTest { .. } => MhType::HomeTest,
            MessageBody::CareOfTest { .. } => MhType::CareOfTest,
            MessageBody::BindingUpdate { .. } => MhType::BindingUpdate,
            MessageBody::BindingAck { .. } => MhType::BindingAck,
            MessageBody::BindingError { .. } => MhType::BindingError,
            MessageBody::BindingRevocation { .. } => MhType::BindingRevocation,
            MessageBody::ShimNotice { .. } => MhType::ShimNotice,
            MessageBody::ShimHello { .. } => MhType::ShimHello,
            MessageBody::ShimCookie { .. } => MhType::ShimCookie,
            MessageBody::ShimWelcome { .. } => MhType::ShimWelcome,
            MessageBody::FlowReport { .. } => MhType::FlowReport,
            MessageBody::Punch => MhType::Punch,
        }
    }

    /// Reads the fixed fields from a checked message.
    fn parse<T: AsRef<[u8]>>(mh: &MobilityHeader<T>) -> Result<MessageBody, WireError> {
        let b = mh.as_bytes();
        let u16_at = |r: Range<usize>| u16::from_be_bytes([b[r.start], b[r.start + 1]]);
        let u32_at = |r: Range<usize>| {
            u32::from_be_bytes([b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3]])
        };
        let bytes8 = |r: Range<usize>| array::<8>(&b[r]);
        let bytes16 = |r: Range<usize>| array::<16>(&b[r]);
        let bytes32 = |r: Range<usize>| array::<32>(&b[r]);
        let ipv6 = |r: Range<usize>| Ipv6Addr::from(bytes16(r));
        Ok(match mh.mh_type() {
            MhType::BindingRefreshRequest => MessageBody::BindingRefreshRequest,
            MhType::HomeTestInit => MessageBody::HomeTestInit {
                cookie: bytes8(body::INIT_COOKIE),
            },
            MhType::CareOfTestInit => MessageBody::CareOfTestInit {
                cookie: bytes8(body::INIT_COOKIE),
            },
            MhType::HomeTest => MessageBody::HomeTest {
                nonce_index: u16_at(body::TEST_NONCE_INDEX),
                cookie: bytes8(body::TEST_COOKIE),
                token: bytes8(body::TEST_TOKEN),
            },
            MhType::CareOfTest => MessageBody::CareOfTest {
                nonce_index: u16_at(body::TEST_NONCE_INDEX),
                cookie: bytes8(body::TEST_COOKIE),
                token: bytes8(body::TEST_TOKEN),
            },
            MhType::BindingUpdate => {
                let flags = u16_at(body::BU_FLAGS);
                MessageBody::BindingUpdate {
                    sequence: u16_at(body::BU_SEQUENCE),
                    ack: flags & BU_FLAG_ACK != 0,
                    home: flags & BU_FLAG_HOME != 0,
                    lifetime: u16_at(body::BU_LIFETIME),
                }
            }
            MhType::BindingAck => MessageBody::BindingAck {
                status: b[body::BA_STATUS],
                sequence: u16_at(body::BA_SEQUENCE),
                lifetime: u16_at(body::BA_LIFETIME),
            },
            MhType::BindingError => MessageBody::BindingError {
                status: b[body::BE_STATUS],
                home_address: ipv6(body::BE_HOME),
            },
            MhType::BindingRevocation => {
                if b[body::BR_TYPE] != BR_TYPE_INDICATION {
                    return Err(WireError::InvalidValue(
                        "binding revocation type (only 1, indication, is supported)",
                    ));
                }
                MessageBody::BindingRevocation {
                    trigger: b[body::BR_TRIGGER],
                    sequence: u16_at(body::BR_SEQUENCE),
                }
            }
            MhType::ShimNotice => {
                let mut shim = [0u8; ENDPOINT_LEN];
                shim.copy_from_slice(&b[body::SN_SHIM]);
                MessageBody::ShimNotice {
                    client: ipv6(body::SN_CLIENT),
                    shim: parse_endpoint(&shim),
                }
            }
            MhType::ShimHello => MessageBody::ShimHello {
                instance: bytes8(body::SH_INSTANCE),
                index: u32_at(body::SH_INDEX),
                nonce: bytes16(body::SH_NONCE),
                cookie: bytes16(body::SH_COOKIE),
                public: bytes32(body::SH_PUBLIC),
            },
            MhType::ShimCookie => MessageBody::ShimCookie {
                nonce: bytes16(body::SC_NONCE),
                cookie: bytes16(body::SC_COOKIE),
            },
            MhType::ShimWelcome => MessageBody::ShimWelcome {
                nonce: bytes16(body::SW_NONCE),
                index: u32_at(body::SW_INDEX),
                ap_nonce: bytes16(body::SW_AP_NONCE),
                public: bytes32(body::SW_PUBLIC),
            },
            MhType::FlowReport => MessageBody::FlowReport {
                full: b[body::FR_FLAGS] & FLOW_REPORT_FULL != 0,
            },
            MhType::Punch => MessageBody::Punch,
        })
    }

    /// Writes the fixed fields into `mh`, a buffer that starts at the MH and
    /// holds at least `options_offset()` bytes. Reserved bytes become 0.
    fn emit(&self, mh: &mut [u8]) {
        let fixed = &mut mh[field::DATA..self.mh_type().options_offset()];
        fixed.fill(0);
        let mut put = |r: Range<usize>, v: &[u8]| mh[r].copy_from_slice(v);
        match self {
            MessageBody::BindingRefreshRequest => {}
            MessageBody::HomeTestInit { cookie } | MessageBody::CareOfTestInit { cookie } => {
                put(body::INIT_COOKIE, cookie);
            }
            MessageBody::HomeTest {
                nonce_index,
                cookie,
                token,
            }
            | MessageBody::CareOfTest {
                nonce_index,
                cookie,
                token,
            } => {
                put(body::TEST_NONCE_INDEX, &nonce_index.to_be_bytes());
                put(body::TEST_COOKIE, cookie);
                put(body::TEST_TOKEN, token);
            }
            MessageBody::BindingUpdate {
                sequence,
                ack,
                home,
                lifetime,
            } => {
                let flags =
                    if *ack { BU_FLAG_ACK } else { 0 } | if *home { BU_FLAG_HOME } else { 0 };
                put(body::BU_SEQUENCE, &sequence.to_be_bytes());
                put(body::BU_FLAGS, &flags.to_be_bytes());
                put(body::BU_LIFETIME, &lifetime.to_be_bytes());
            }
            MessageBody::BindingAck {
                status,
                sequence,
                lifetime,
            } => {
                put(body::BA_STATUS..body::BA_FLAGS + 1, &[*status, 0]);
                put(body::BA_SEQUENCE, &sequence.to_be_bytes());
                put(body::BA_LIFETIME, &lifetime.to_be_bytes());
            }
            MessageBody::BindingError {
                status,
                home_address,
            } => {
                put(body::BE_STATUS..body::BE_STATUS + 1, &[*status]);
                put(body::BE_HOME, &home_address.octets());
            }
            MessageBody::BindingRevocation { trigger, sequence } => {
                put(
                    body::BR_TYPE..body::BR_TRIGGER + 1,
                    &[BR_TYPE_INDICATION, *trigger],
                );
                put(body::BR_SEQUENCE, &sequence.to_be_bytes());
                put(body::BR_FLAGS, &[0, 0]);
            }
            MessageBody::ShimNotice { client, shim } => {
                put(body::SN_CLIENT, &client.octets());
                put(body::SN_SHIM, &emit_endpoint(*shim));
            }
            MessageBody::ShimHello {
                instance,
                index,
                nonce,
                cookie,
                public,
            } => {
                put(body::SH_INSTANCE, instance);
                put(body::SH_INDEX, &index.to_be_bytes());
                put(body::SH_NONCE, nonce);
                put(body::SH_COOKIE, cookie);
                put(body::SH_PUBLIC, public);
            }
            MessageBody::ShimCookie { nonce, cookie } => {
                put(body::SC_NONCE, nonce);
                put(body::SC_COOKIE, cookie);
            }
            MessageBody::ShimWelcome {
                nonce,
                index,
                ap_nonce,
                public,
            } => {
                put(body::SW_NONCE, nonce);
                put(body::SW_INDEX, &index.to_be_bytes());
                put(body::SW_AP_NONCE, ap_nonce);
                put(body::SW_PUBLIC, public);
            }
            MessageBody::FlowReport { full } => {
                let flags = if *full { FLOW_REPORT_FULL } else { 0 };
                put(body::FR_FLAGS..body::FR_FLAGS + 1, &[flags]);
            }
            MessageBody::Punch => {}
        }
    }
}

/// The `N` bytes of `b`, which the caller made exactly `N` long.
fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(b);
    out
}

/// A typed Mobility Header message: the fixed fields and the options, in
/// order, padding excluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MobilityMessage {
    /// Type and fixed fields.
    pub body: MessageBody,
    /// Options in wire order. Authenticating options (Binding Authorization
    /// Data, Mobility Message Authentication) must come last.
    pub options: Vec<MobilityOption>,
}

impl MobilityMessage {
    /// A message without options.
    pub fn new(body: MessageBody) -> Self {
        MobilityMessage {
            body,
            options: Vec::new(),
        }
    }

    /// Appends an option (builder style).
    pub fn with(mut self, opt: MobilityOption) -> Self {
        self.options.push(opt);
        self
    }

    /// The MH Type.
    pub fn mh_type(&self) -> MhType {
        self.body.mh_type()
    }

    /// Parses the message at the start of `mh`; bytes after the length the
    /// header announces are ignored. Errors as
    /// [`MobilityHeader::new_checked`], plus option errors and
    /// [`WireError::InvalidValue`] for a BRI whose B.R. Type is not 1.
    pub fn parse(mh: &[u8]) -> Result<Self, WireError> {
        let view = MobilityHeader::new_checked(mh)?;
        let body = MessageBody::parse(&view)?;
        let options = view
            .options()
            .map(|raw| raw.and_then(|raw| raw.to_option()))
            .collect::<Result<_, _>>()?;
        Ok(MobilityMessage { body, options })
    }

    /// Length without padding.
    fn unpadded_len(&self) -> usize {
        self.mh_type().options_offset()
            + self
                .options
                .iter()
                .map(MobilityOption::buffer_len)
                .sum::<usize>()
    }

    /// Length on the wire: always a multiple of 8 (RFC 6275 6.1.1).
    pub fn buffer_len(&self) -> usize {
        self.unpadded_len().next_multiple_of(8)
    }

    /// The byte range of the authenticator of the last option in the emitted
    /// message, as [`MobilityHeader::authenticator_range`] will find it.
    pub fn authenticator_range(&self) -> Option<Range<usize>> {
        let last = self.options.last()?;
        let start = self.buffer_len() - last.buffer_len();
        match last {
            MobilityOption::BindingAuthorization(_) => {
                let start = start + BINDING_AUTHORIZATION_AUTH_OFFSET;
                Some(start..start + BINDING_AUTHORIZATION_LEN)
            }
            MobilityOption::Authentication { .. } => {
                let start = start + AUTHENTICATION_DATA_OFFSET;
                Some(start..start + AUTHENTICATION_DATA_LEN)
            }
            _ => None,
        }
    }

    /// Writes the message at the start of `buf` and returns its length
    /// ([`MobilityMessage::buffer_len`]). Padding (PadN or Pad1) goes before
    /// the last option, so that an authenticating last option ends the
    /// message (deviation D4). Checksum and reserved fields are 0.
    ///
    /// Errors: [`WireError::BufferTooSmall`]; [`WireError::BadLength`] for a
    /// message over 2048 bytes; [`WireError::InvalidValue`] for an
    /// [`MobilityOption::Unknown`] that [`MobilityOption::emit`] refuses.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        if len > MH_MAX_LEN {
            return Err(WireError::BadLength(len));
        }
        let have = buf.len();
        let out = buf
            .get_mut(..len)
            .ok_or(WireError::BufferTooSmall { need: len, have })?;
        out[field::PAYLOAD_PROTO] = MH_PAYLOAD_PROTO;
        out[field::HEADER_LEN] = (len / 8 - 1) as u8;
        out[field::MH_TYPE] = self.mh_type() as u8;
        out[field::RESERVED] = 0;
        out[field::CHECKSUM].fill(0);
        self.body.emit(out);

        let pad = len - self.unpadded_len();
        let mut pos = self.mh_type().options_offset();
        let (init, last) = match self.options.split_last() {
            Some((last, init)) => (init, Some(last)),
            None => (&[][..], None),
        };
        for opt in init {
            pos += opt.emit(&mut out[pos..])?;
        }
        emit_padding(&mut out[pos..pos + pad]);
        pos += pad;
        if let Some(last) = last {
            pos += last.emit(&mut out[pos..])?;
        }
        debug_assert_eq!(pos, len);
        Ok(len)
    }

    /// The message as bytes.
    ///
    /// # Panics
    ///
    /// If [`MobilityMessage::emit`] fails: a message over 2048 bytes, or an
    /// [`MobilityOption::Unknown`] with a known type or over 255 bytes. A
    /// message that was parsed, or that carries a few typed options, never
    /// fails.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        if let Err(err) = self.emit(&mut buf) {
            panic!("cannot emit {:?}: {err}", self.mh_type());
        }
        buf
    }

    fn find<R>(&self, f: impl FnMut(&MobilityOption) -> Option<R>) -> Option<R> {
        self.options.iter().find_map(f)
    }

    /// The first Binding Identifier option: member id and care-of address.
    pub fn binding_id(&self) -> Option<(MemberId, Option<IpAddr>)> {
        self.find(|o| match o {
            MobilityOption::BindingId { id, care_of, .. } => Some((*id, *care_of)),
            _ => None,
        })
    }

    /// The first Home Address option.
    pub fn home_address(&self) -> Option<Ipv6Addr> {
        self.find(|o| match o {
            MobilityOption::HomeAddress(a) => Some(*a),
            _ => None,
        })
    }

    /// The first Nonce Indices option: (home, care-of).
    pub fn nonce_indices(&self) -> Option<(u16, u16)> {
        self.find(|o| match o {
            MobilityOption::NonceIndices { home, care_of } => Some((*home, *care_of)),
            _ => None,
        })
    }

    /// The first Member State option: (weight, draining, instance).
    pub fn member_state(&self) -> Option<(u16, bool, u64)> {
        self.find(|o| match o {
            MobilityOption::MemberState {
                weight,
                draining,
                instance,
            } => Some((*weight, *draining, *instance)),
            _ => None,
        })
    }

    /// The first Correspondent option.
    pub fn correspondent(&self) -> Option<Ipv6Addr> {
        self.find(|o| match o {
            MobilityOption::Correspondent(a) => Some(*a),
            _ => None,
        })
    }

    /// The first Session option: (index, nonce).
    pub fn session(&self) -> Option<(u32, [u8; NONCE_LEN])> {
        self.find(|o| match o {
            MobilityOption::Session { index, nonce } => Some((*index, *nonce)),
            _ => None,
        })
    }

    /// The first Cookie option.
    pub fn cookie(&self) -> Option<[u8; COOKIE_LEN]> {
        self.find(|o| match o {
            MobilityOption::Cookie(c) => Some(*c),
            _ => None,
        })
    }

    /// The first Care-of Ticket option: (home nonce index, ticket).
    pub fn care_of_ticket(&self) -> Option<(u16, [u8; CARE_OF_TICKET_LEN])> {
        self.find(|o| match o {
            MobilityOption::CareOfTicket {
                nonce_index,
                ticket,
            } => Some((*nonce_index, *ticket)),
            _ => None,
        })
    }

    /// The first Endpoint option.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.find(|o| match o {
            MobilityOption::Endpoint(e) => Some(*e),
            _ => None,
        })
    }

    /// The first Client Address option.
    pub fn client_address(&self) -> Option<Ipv6Addr> {
        self.find(|o| match o {
            MobilityOption::ClientAddress(a) => Some(*a),
            _ => None,
        })
    }

    /// The first Shim Instance option.
    pub fn shim_instance(&self) -> Option<[u8; SHIM_INSTANCE_LEN]> {
        self.find(|o| match o {
            MobilityOption::ShimInstance(i) => Some(*i),
            _ => None,
        })
    }

    /// The first Binding Refresh Advice option: interval in 4-second units.
    pub fn refresh_advice(&self) -> Option<u16> {
        self.find(|o| match o {
            MobilityOption::BindingRefreshAdvice { interval } => Some(*interval),
            _ => None,
        })
    }

    /// The first Binding Authorization Data option.
    pub fn binding_authorization(&self) -> Option<[u8; 12]> {
        self.find(|o| match o {
            MobilityOption::BindingAuthorization(a) => Some(*a),
            _ => None,
        })
    }

    /// The Flow options, in order (a Flow Report's flows).
    pub fn flows(&self) -> impl Iterator<Item = ReportedFlow> {
        self.options.iter().filter_map(|o| match o {
            MobilityOption::Flow(flow) => Some(*flow),
            _ => None,
        })
    }

    /// The first Mobility Message Authentication option: (subtype, SPI,
    /// authentication data).
    pub fn authentication(&self) -> Option<(u8, u32, [u8; 16])> {
        self.find(|o| match o {
            MobilityOption::Authentication { subtype, spi, data } => Some((*subtype, *spi, *data)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::option::tests::option_strategy;
    use crate::wire::option::{ReportedFlow, ReportedState};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, SocketAddrV4, SocketAddrV6};

    fn hoa() -> Ipv6Addr {
        "2001:db8::1".parse().unwrap()
    }

    #[test]
    fn brr_fixture() {
        let bytes = [59, 0, 0, 0, 0, 0, 0, 0];
        let msg = MobilityMessage::new(MessageBody::BindingRefreshRequest);
        assert_eq!(msg.to_bytes(), bytes);
        assert_eq!(MobilityMessage::parse(&bytes), Ok(msg));
    }

    #[test]
    fn bu_fixture_with_padding_before_the_last_option() {
        let msg = MobilityMessage::new(MessageBody::BindingUpdate {
            sequence: 0x0102,
            ack: true,
            home: true,
            lifetime: 75,
        })
        .with(MobilityOption::BindingId {
            id: MemberId(5),
            status: 0,
            flags: 0,
            care_of: None,
        })
        .with(MobilityOption::Authentication {
            subtype: 1,
            spi: 7,
            data: [0xee; 16],
        });
        #[rustfmt::skip]
        let mut bytes = vec![
            59, 5, 5, 0, 0, 0,          // proto, len (48 bytes), type BU, reserved, checksum
            0x01, 0x02, 0xc0, 0, 0, 75, // sequence, flags A|H, lifetime
            35, 4, 0, 5, 0, 0,          // Binding ID, member 5
            1, 5, 0, 0, 0, 0, 0,        // PadN of 7 bytes, before the last option
            9, 21, 1, 0, 0, 0, 7,       // Authentication: subtype 1, SPI 7
        ];
        bytes.extend_from_slice(&[0xee; 16]);
        assert_eq!(bytes.len(), 48);
        assert_eq!(msg.buffer_len(), 48);
        assert_eq!(msg.to_bytes(), bytes);
        assert_eq!(MobilityMessage::parse(&bytes), Ok(msg.clone()));
        assert_eq!(msg.authenticator_range(), Some(32..48));
        let view = MobilityHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(view.authenticator_range(), Some(32..48));
        assert_eq!(view.mh_type(), MhType::BindingUpdate);
        assert_eq!(view.header_len(), 48);
        assert_eq!(view.checksum(), 0);
        assert_eq!(view.message_data().len(), 42);
        assert_eq!(msg.binding_id(), Some((MemberId(5), None)));
        assert_eq!(msg.authentication(), Some((1, 7, [0xee; 16])));
        assert_eq!(msg.home_address(), None);
    }

    #[test]
    fn bu_with_binding_authorization_is_8n_plus_2_aligned() {
        // RFC 6275 6.2.7: implicit alignment 8n+2 for the authorization data.
        let msg = MobilityMessage::new(MessageBody::BindingUpdate {
            sequence: 1,
            ack: false,
            home: false,
            lifetime: 10,
        })
        .with(MobilityOption::NonceIndices {
            home: 1,
            care_of: 2,
        })
        .with(MobilityOption::BindingAuthorization([0x11; 12]));
        let bytes = msg.to_bytes();
        let range = msg.authenticator_range().unwrap();
        assert_eq!((range.start - 2) % 8, 2);
        assert_eq!(range.end, bytes.len());
        assert_eq!(&bytes[range.clone()], &[0x11; 12]);
        assert_eq!(
            MobilityHeader::new_checked(&bytes[..])
                .unwrap()
                .authenticator_range(),
            Some(range)
        );
        assert_eq!(MobilityMessage::parse(&bytes), Ok(msg));
    }

    #[test]
    fn hot_fixture() {
        #[rustfmt::skip]
        let bytes = [
            59, 2, 3, 0, 0, 0,
            0x00, 0x09,
            1, 2, 3, 4, 5, 6, 7, 8,
            9, 10, 11, 12, 13, 14, 15, 16,
        ];
        let msg = MobilityMessage::new(MessageBody::HomeTest {
            nonce_index: 9,
            cookie: [1, 2, 3, 4, 5, 6, 7, 8],
            token: [9, 10, 11, 12, 13, 14, 15, 16],
        });
        assert_eq!(msg.to_bytes(), bytes);
        assert_eq!(MobilityMessage::parse(&bytes), Ok(msg));
    }

    #[test]
    fn ba_be_bri_fixtures() {
        let ba = MobilityMessage::new(MessageBody::BindingAck {
            status: ba_status::AUTHENTICATION_FAILED,
            sequence: 3,
            lifetime: 0,
        });
        assert_eq!(
            ba.to_bytes(),
            [59, 1, 6, 0, 0, 0, 146, 0, 0, 3, 0, 0, 1, 2, 0, 0]
        );

        let be = MobilityMessage::new(MessageBody::BindingError {
            status: be_status::UNKNOWN_BINDING,
            home_address: hoa(),
        });
        let mut bytes = vec![59, 2, 7, 0, 0, 0, 1, 0];
        bytes.extend_from_slice(&hoa().octets());
        assert_eq!(be.to_bytes(), bytes);
        assert_eq!(MobilityMessage::parse(&bytes), Ok(be));

        let bri = MobilityMessage::new(MessageBody::BindingRevocation {
            trigger: revocation_trigger::LIVENESS_FAILURE,
            sequence: 0x0a0b,
        })
        .with(MobilityOption::BindingId {
            id: MemberId(4),
            status: 0,
            flags: 0,
            care_of: None,
        });
        // 18 bytes of content: padded with a PadN of 6 before the last option.
        #[rustfmt::skip]
        let bytes = [
            59, 2, 16, 0, 0, 0,
            1, 127, 0x0a, 0x0b, 0, 0,  // B.R. Type 1, trigger, sequence, flags
            1, 4, 0, 0, 0, 0,          // PadN
            35, 4, 0, 4, 0, 0,         // Binding ID, member 4
        ];
        assert_eq!(bri.to_bytes(), bytes);
        assert_eq!(MobilityMessage::parse(&bytes), Ok(bri.clone()));
        // Padding after the options parses too (what another peer may send).
        #[rustfmt::skip]
        let trailing = [
            59, 2, 16, 0, 0, 0,
            1, 127, 0x0a, 0x0b, 0, 0,
            35, 4, 0, 4, 0, 0,
            1, 4, 0, 0, 0, 0,
        ];
        assert_eq!(MobilityMessage::parse(&trailing), Ok(bri));
    }

    #[test]
    fn shim_notice_fixture() {
        let client: Ipv6Addr = "2001:db8:c::5".parse().unwrap();
        let shim: SocketAddr = "198.19.7.2:40000".parse().unwrap();
        let msg = MobilityMessage::new(MessageBody::ShimNotice { client, shim })
            .with(MobilityOption::HomeAddress(hoa()));
        let bytes = msg.to_bytes();
        // 6 + 36 fixed + 18 option = 60 -> 64.
        assert_eq!(bytes.len(), 64);
        assert_eq!(bytes[2], 200);
        assert_eq!(&bytes[8..24], &client.octets());
        assert_eq!(&bytes[24..42], &emit_endpoint(shim));
        assert_eq!(MobilityMessage::parse(&bytes), Ok(msg.clone()));
        assert_eq!(msg.home_address(), Some(hoa()));
    }

    #[test]
    fn shim_hello_fixture() {
        let msg = MobilityMessage::new(MessageBody::ShimHello {
            instance: [1, 2, 3, 4, 5, 6, 7, 8],
            index: 0x0a0b_0c0d,
            nonce: [0x11; 16],
            cookie: [0x22; 16],
            public: [0x33; 32],
        });
        // 6 + 78 fixed = 84 -> 88, the PadN of 4 at the end.
        let mut bytes = vec![59, 10, 201, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        bytes.extend_from_slice(&[0x0a, 0x0b, 0x0c, 0x0d]);
        bytes.extend_from_slice(&[0x11; 16]);
        bytes.extend_from_slice(&[0x22; 16]);
        bytes.extend_from_slice(&[0x33; 32]);
        bytes.extend_from_slice(&[1, 2, 0, 0]);
        assert_eq!(bytes.len(), 88);
        assert_eq!(MhType::ShimHello.options_offset(), 84);
        assert_eq!(msg.buffer_len(), 88);
        assert_eq!(msg.to_bytes(), bytes);
        assert_eq!(MobilityMessage::parse(&bytes), Ok(msg.clone()));
        let view = MobilityHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(view.mh_type(), MhType::ShimHello);
        assert_eq!(view.options().count(), 0);
        // Reserved bytes are ignored on parse and sent as 0.
        let mut reserved = bytes.clone();
        reserved[6..8].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(MobilityMessage::parse(&reserved), Ok(msg.clone()));
        // Too short for the type: 80 bytes announced, or the buffer ends
        // before the 88 announced.
        let mut short = bytes[..80].to_vec();
        short[1] = 9;
        assert_eq!(
            MobilityMessage::parse(&short),
            Err(WireError::BadLength(80))
        );
        assert_eq!(
            MobilityMessage::parse(&bytes[..87]),
            Err(WireError::BadLength(88))
        );
        assert_eq!(
            msg.emit(&mut [0u8; 87]),
            Err(WireError::BufferTooSmall { need: 88, have: 87 })
        );
    }

    #[test]
    fn shim_cookie_fixture() {
        let msg = MobilityMessage::new(MessageBody::ShimCookie {
            nonce: [0x44; 16],
            cookie: [0x55; 16],
        });
        // 6 + 34 fixed = 40: no padding.
        let mut bytes = vec![59, 4, 202, 0, 0, 0, 0, 0];
        bytes.extend_from_slice(&[0x44; 16]);
        bytes.extend_from_slice(&[0x55; 16]);
        assert_eq!(msg.buffer_len(), 40);
        assert_eq!(msg.to_bytes(), bytes);
        assert_eq!(MobilityMessage::parse(&bytes), Ok(msg));
        // The "handshake again" cookie: nonce all zero.
        let again = MobilityMessage::new(MessageBody::ShimCookie {
            nonce: [0; 16],
            cookie: [0x55; 16],
        });
        assert_eq!(&again.to_bytes()[8..24], &[0; 16]);
        // Too short: 32 bytes announced.
        let mut short = bytes[..32].to_vec();
        short[1] = 3;
        assert_eq!(
            MobilityMessage::parse(&short),
            Err(WireError::BadLength(32))
        );
        assert_eq!(
            MobilityMessage::parse(&bytes[..39]),
            Err(WireError::BadLength(40))
        );
    }

    #[test]
    fn shim_welcome_fixture() {
        let msg = MobilityMessage::new(MessageBody::ShimWelcome {
            nonce: [0x66; 16],
            index: 0x0102_0304,
            ap_nonce: [0x77; 16],
            public: [0x88; 32],
        });
        // 6 + 70 fixed = 76 -> 80, the PadN of 4 at the end.
        let mut bytes = vec![59, 9, 203, 0, 0, 0, 0, 0];
        bytes.extend_from_slice(&[0x66; 16]);
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        bytes.extend_from_slice(&[0x77; 16]);
        bytes.extend_from_slice(&[0x88; 32]);
        bytes.extend_from_slice(&[1, 2, 0, 0]);
        assert_eq!(bytes.len(), 80);
        assert_eq!(msg.buffer_len(), 80);
        assert_eq!(msg.to_bytes(), bytes);
        assert_eq!(MobilityMessage::parse(&bytes), Ok(msg));
        // Too short: 72 bytes announced.
        let mut short = bytes[..72].to_vec();
        short[1] = 8;
        assert_eq!(
            MobilityMessage::parse(&short),
            Err(WireError::BadLength(72))
        );
        assert_eq!(
            MobilityMessage::parse(&bytes[..79]),
            Err(WireError::BadLength(80))
        );
    }

    #[test]
    fn flow_report_fixture() {
        let client: Ipv6Addr = "fd00:4841::9".parse().unwrap();
        let flow = ReportedFlow {
            proto: 6,
            state: ReportedState::Opening,
            client,
            client_port: 0x1234,
            home_port: 80,
        };
        let msg = MobilityMessage::new(MessageBody::FlowReport { full: true })
            .with(MobilityOption::Flow(flow))
            .with(MobilityOption::Flow(ReportedFlow {
                proto: 17,
                state: ReportedState::Closing,
                ..flow
            }));
        // 8 bytes of header and flags, then two 24-byte Flow options: no padding.
        let mut bytes = vec![59, 6, 204, 0, 0, 0, 0x80, 0];
        for (proto, state) in [(6, 0), (17, 2)] {
            bytes.extend_from_slice(&[207, 22, proto, state, 0x12, 0x34, 0, 80]);
            bytes.extend_from_slice(&client.octets());
        }
        assert_eq!(bytes.len(), 56);
        assert_eq!(msg.buffer_len(), 56);
        assert_eq!(msg.to_bytes(), bytes);
        assert_eq!(MobilityMessage::parse(&bytes), Ok(msg.clone()));
        assert_eq!(msg.authenticator_range(), None);
        let flows: Vec<_> = msg.flows().collect();
        assert_eq!(flows.len(), 2);
        assert_eq!(flows[0], flow);
        assert_eq!(flows[1].state, ReportedState::Closing);
        // Flag bits other than F and the reserved byte are ignored.
        let mut odd = bytes.clone();
        odd[6] = 0x7f;
        odd[7] = 0xff;
        let parsed = MobilityMessage::parse(&odd).unwrap();
        assert_eq!(parsed.body, MessageBody::FlowReport { full: false });
        assert_eq!(parsed.flows().count(), 2);
        // A partial report, no flows.
        let empty = MobilityMessage::new(MessageBody::FlowReport { full: false });
        assert_eq!(empty.to_bytes(), [59, 0, 204, 0, 0, 0, 0, 0]);
        assert_eq!(empty.flows().count(), 0);
    }

    #[test]
    fn punch_is_eight_bytes() {
        let punch = MobilityMessage::new(MessageBody::Punch);
        assert_eq!(punch.to_bytes(), [59, 0, 205, 0, 0, 0, 0, 0]);
        assert_eq!(MobilityMessage::parse(&punch.to_bytes()), Ok(punch));
        // Shorter than its two reserved bytes: invalid.
        assert!(MobilityMessage::parse(&[59, 0, 205, 0, 0, 0]).is_err());
    }

    #[test]
    fn a_full_flow_report_fits_a_1280_byte_datagram() {
        let flow = ReportedFlow {
            proto: 6,
            state: ReportedState::Open,
            client: "fd00:4841::1".parse().unwrap(),
            client_port: 1,
            home_port: 2,
        };
        let msg = (0..FLOWS_PER_REPORT).fold(
            MobilityMessage::new(MessageBody::FlowReport { full: true }),
            |m, _| m.with(MobilityOption::Flow(flow)),
        );
        assert_eq!(msg.buffer_len(), 8 + FLOWS_PER_REPORT * 24);
        // Outer IPv6 (40) + UDP (8) + the sealed frame's 16-byte header and
        // 16-byte tag.
        assert!(
            msg.buffer_len() + 40 + 8 + 32 <= 1280,
            "{}",
            msg.buffer_len()
        );
        assert_eq!(MobilityMessage::parse(&msg.to_bytes()), Ok(msg));
    }

    #[test]
    fn retry_with_cookie_ba_keeps_the_authentication_last() {
        let msg = MobilityMessage::new(MessageBody::BindingAck {
            status: ba_status::RETRY_WITH_COOKIE,
            sequence: 9,
            lifetime: 0,
        })
        .with(MobilityOption::BindingId {
            id: MemberId(5),
            status: 0,
            flags: 0,
            care_of: None,
        })
        .with(MobilityOption::Cookie([0xcc; 16]))
        .with(MobilityOption::Authentication {
            subtype: 1,
            spi: 7,
            data: [0xee; 16],
        });
        #[rustfmt::skip]
        let mut bytes = vec![
            59, 7, 6, 0, 0, 0,          // proto, len (64 bytes), type BA, reserved, checksum
            202, 0, 0, 9, 0, 0,         // status 202, flags, sequence, lifetime
            35, 4, 0, 5, 0, 0,          // Binding ID, member 5
            204, 16,                    // Cookie
        ];
        bytes.extend_from_slice(&[0xcc; 16]);
        bytes.extend_from_slice(&[1, 3, 0, 0, 0]); // PadN of 5, before the last option
        bytes.extend_from_slice(&[9, 21, 1, 0, 0, 0, 7]);
        bytes.extend_from_slice(&[0xee; 16]);
        assert_eq!(bytes.len(), 64);
        assert_eq!(msg.to_bytes(), bytes);
        assert_eq!(MobilityMessage::parse(&bytes), Ok(msg.clone()));
        assert_eq!(msg.authenticator_range(), Some(48..64));
        let view = MobilityHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(view.authenticator_range(), Some(48..64));
        assert_eq!(msg.cookie(), Some([0xcc; 16]));
        assert_eq!(msg.session(), None);
    }

    #[test]
    fn new_options_before_an_authenticating_last_option() {
        let bu = MobilityMessage::new(MessageBody::BindingUpdate {
            sequence: 1,
            ack: true,
            home: true,
            lifetime: 75,
        })
        .with(MobilityOption::BindingId {
            id: MemberId(5),
            status: 0,
            flags: 0,
            care_of: None,
        })
        .with(MobilityOption::HomeAddress(hoa()))
        .with(MobilityOption::Session {
            index: 0x1234_5678,
            nonce: [3; 16],
        })
        .with(MobilityOption::Cookie([4; 16]))
        .with(MobilityOption::Authentication {
            subtype: 1,
            spi: 7,
            data: [0xee; 16],
        });
        let ro_bu = MobilityMessage::new(MessageBody::BindingUpdate {
            sequence: 2,
            ack: true,
            home: false,
            lifetime: 10,
        })
        .with(MobilityOption::NonceIndices {
            home: 1,
            care_of: 2,
        })
        .with(MobilityOption::Session {
            index: 9,
            nonce: [5; 16],
        })
        .with(MobilityOption::BindingAuthorization([0x11; 12]));
        let coti = MobilityMessage::new(MessageBody::CareOfTestInit { cookie: [6; 8] })
            .with(MobilityOption::BindingId {
                id: MemberId(5),
                status: 0,
                flags: 0,
                care_of: None,
            })
            .with(MobilityOption::CareOfTicket {
                nonce_index: 3,
                ticket: [7; 8],
            })
            .with(MobilityOption::BindingAuthorization([0x22; 12]));
        let notice = MobilityMessage::new(MessageBody::ShimNotice {
            client: hoa(),
            shim: "198.19.7.2:40000".parse().unwrap(),
        })
        .with(MobilityOption::ShimInstance([8; 8]))
        .with(MobilityOption::Authentication {
            subtype: 1,
            spi: 1,
            data: [0xdd; 16],
        });
        for msg in [bu, ro_bu, coti, notice] {
            let bytes = msg.to_bytes();
            let range = msg.authenticator_range().unwrap();
            assert_eq!(range.end, bytes.len(), "{:?}", msg.mh_type());
            let view = MobilityHeader::new_checked(&bytes[..]).unwrap();
            assert_eq!(view.authenticator_range(), Some(range));
            assert_eq!(MobilityMessage::parse(&bytes), Ok(msg));
        }
    }

    #[test]
    fn option_accessors() {
        let msg = MobilityMessage::new(MessageBody::BindingRefreshRequest)
            .with(MobilityOption::Session {
                index: 1,
                nonce: [2; 16],
            })
            .with(MobilityOption::Cookie([3; 16]))
            .with(MobilityOption::CareOfTicket {
                nonce_index: 4,
                ticket: [5; 8],
            })
            .with(MobilityOption::ShimInstance([6; 8]));
        assert_eq!(msg.session(), Some((1, [2; 16])));
        assert_eq!(msg.cookie(), Some([3; 16]));
        assert_eq!(msg.care_of_ticket(), Some((4, [5; 8])));
        assert_eq!(msg.shim_instance(), Some([6; 8]));
        let bare = MobilityMessage::new(MessageBody::BindingRefreshRequest);
        assert_eq!(
            (
                bare.session(),
                bare.cookie(),
                bare.care_of_ticket(),
                bare.shim_instance()
            ),
            (None, None, None, None)
        );
    }

    #[test]
    fn mh_type_numbers_are_consistent() {
        let mut known = 0;
        for value in 0..=u8::MAX {
            if let Some(t) = MhType::from_u8(value) {
                known += 1;
                assert_eq!(t as u8, value);
                assert_eq!(MhType::try_from(value), Ok(t));
            } else {
                assert_eq!(
                    MhType::try_from(value),
                    Err(WireError::UnknownMhType(value))
                );
            }
        }
        assert_eq!(known, 15);
        assert_eq!(ba_status::RETRY_WITH_COOKIE, 202);
        assert_eq!(revocation_trigger::MEMBER_RESTARTED, 126);
    }

    #[test]
    fn trailing_bytes_after_the_message_are_ignored() {
        let mut bytes = MobilityMessage::new(MessageBody::BindingRefreshRequest).to_bytes();
        bytes.extend_from_slice(&[0xff; 5]);
        assert_eq!(
            MobilityMessage::parse(&bytes),
            Ok(MobilityMessage::new(MessageBody::BindingRefreshRequest))
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            MobilityMessage::parse(&[59, 0, 0, 0]),
            Err(WireError::Truncated("mobility header"))
        );
        assert_eq!(
            MobilityMessage::parse(&[6, 0, 0, 0, 0, 0, 0, 0]),
            Err(WireError::BadPayloadProto(6))
        );
        assert_eq!(
            MobilityMessage::parse(&[59, 1, 0, 0, 0, 0, 0, 0]),
            Err(WireError::BadLength(16))
        );
        assert_eq!(
            MobilityMessage::parse(&[59, 0, 8, 0, 0, 0, 0, 0]),
            Err(WireError::UnknownMhType(8))
        );
        // A BU needs 12 bytes, so at least 16 on the wire.
        assert_eq!(
            MobilityMessage::parse(&[59, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(WireError::BadLength(8))
        );
        // BRA (B.R. Type 2) is not spoken.
        assert!(matches!(
            MobilityMessage::parse(&[59, 1, 16, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(WireError::InvalidValue(_))
        ));
        // An option running past the end of the message.
        assert_eq!(
            MobilityMessage::parse(&[59, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 9]),
            Err(WireError::BadOptionLength { kind: 4, len: 9 })
        );
        let msg = MobilityMessage::new(MessageBody::BindingRefreshRequest);
        assert_eq!(
            msg.emit(&mut [0u8; 7]),
            Err(WireError::BufferTooSmall { need: 8, have: 7 })
        );
        let huge = (0..10).fold(msg, |m, _| {
            m.with(MobilityOption::Unknown {
                kind: 100,
                data: vec![0; 255],
            })
        });
        assert!(matches!(
            huge.emit(&mut vec![0u8; 4096]),
            Err(WireError::BadLength(_))
        ));
    }

    #[test]
    fn authenticator_range_needs_an_authenticating_last_option() {
        let msg = MobilityMessage::new(MessageBody::BindingRefreshRequest)
            .with(MobilityOption::BindingAuthorization([1; 12]))
            .with(MobilityOption::HomeAddress(hoa()));
        assert_eq!(msg.authenticator_range(), None);
        let bytes = msg.to_bytes();
        let view = MobilityHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(view.authenticator_range(), None);
    }

    fn endpoint() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<u32>(), any::<u16>())
                .prop_map(|(a, p)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), p))),
            (any::<u128>(), any::<u16>())
                .prop_filter("not IPv4-mapped", |(a, _)| Ipv6Addr::from(*a)
                    .to_ipv4_mapped()
                    .is_none())
                .prop_map(|(a, p)| SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(a), p, 0, 0))),
        ]
    }

    fn body_strategy() -> impl Strategy<Value = MessageBody> {
        let v6 = || any::<u128>().prop_map(Ipv6Addr::from);
        prop_oneof![
            Just(MessageBody::BindingRefreshRequest),
            any::<[u8; 8]>().prop_map(|cookie| MessageBody::HomeTestInit { cookie }),
            any::<[u8; 8]>().prop_map(|cookie| MessageBody::CareOfTestInit { cookie }),
            (any::<u16>(), any::<[u8; 8]>(), any::<[u8; 8]>()).prop_map(
                |(nonce_index, cookie, token)| MessageBody::HomeTest {
                    nonce_index,
                    cookie,
                    token
                }
            ),
            (any::<u16>(), any::<[u8; 8]>(), any::<[u8; 8]>()).prop_map(
                |(nonce_index, cookie, token)| MessageBody::CareOfTest {
                    nonce_index,
                    cookie,
                    token
                }
            ),
            (any::<u16>(), any::<bool>(), any::<bool>(), any::<u16>()).prop_map(
                |(sequence, ack, home, lifetime)| MessageBody::BindingUpdate {
                    sequence,
                    ack,
                    home,
                    lifetime
                }
            ),
            (any::<u8>(), any::<u16>(), any::<u16>()).prop_map(|(status, sequence, lifetime)| {
                MessageBody::BindingAck {
                    status,
                    sequence,
                    lifetime,
                }
            }),
            (any::<u8>(), v6()).prop_map(|(status, home_address)| MessageBody::BindingError {
                status,
                home_address
            }),
            (any::<u8>(), any::<u16>()).prop_map(|(trigger, sequence)| {
                MessageBody::BindingRevocation { trigger, sequence }
            }),
            (v6(), endpoint()).prop_map(|(client, shim)| MessageBody::ShimNotice { client, shim }),
            (
                any::<[u8; 8]>(),
                any::<u32>(),
                any::<[u8; 16]>(),
                any::<[u8; 16]>(),
                any::<[u8; 32]>()
            )
                .prop_map(|(instance, index, nonce, cookie, public)| {
                    MessageBody::ShimHello {
                        instance,
                        index,
                        nonce,
                        cookie,
                        public,
                    }
                }),
            (any::<[u8; 16]>(), any::<[u8; 16]>())
                .prop_map(|(nonce, cookie)| MessageBody::ShimCookie { nonce, cookie }),
            (
                any::<[u8; 16]>(),
                any::<u32>(),
                any::<[u8; 16]>(),
                any::<[u8; 32]>()
            )
                .prop_map(|(nonce, index, ap_nonce, public)| {
                    MessageBody::ShimWelcome {
                        nonce,
                        index,
                        ap_nonce,
                        public,
                    }
                }),
            any::<bool>().prop_map(|full| MessageBody::FlowReport { full }),
            Just(MessageBody::Punch),
        ]
    }

    fn message_strategy() -> impl Strategy<Value = MobilityMessage> {
        (
            body_strategy(),
            proptest::collection::vec(option_strategy(), 0..6),
        )
            .prop_map(|(body, options)| MobilityMessage { body, options })
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(view) = MobilityHeader::new_checked(&b[..]) {
                let _ = (view.checksum(), view.message_data(), view.authenticator_range());
                let _ = view.options().count();
            }
            if let Ok(msg) = MobilityMessage::parse(&b) {
                let again = MobilityMessage::parse(&msg.to_bytes());
                prop_assert_eq!(again, Ok(msg));
            }
        }

        #[test]
        fn plausible_headers_parse_without_panic(
            mh_type in prop_oneof![0u8..8, Just(16u8), 200u8..=205],
            header_len in 0u8..13,
            rest in proptest::collection::vec(any::<u8>(), 0..112),
        ) {
            let mut b = vec![59, header_len, mh_type, 0, 0, 0];
            b.extend_from_slice(&rest);
            if let Ok(msg) = MobilityMessage::parse(&b) {
                prop_assert_eq!(MobilityMessage::parse(&msg.to_bytes()), Ok(msg));
            }
        }

        #[test]
        fn message_round_trips(msg in message_strategy()) {
            let bytes = msg.to_bytes();
            prop_assert_eq!(bytes.len() % 8, 0);
            prop_assert_eq!(bytes.len(), msg.buffer_len());
            let view = MobilityHeader::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(view.authenticator_range(), msg.authenticator_range());
            prop_assert_eq!(MobilityMessage::parse(&bytes), Ok(msg));
        }
    }
}
