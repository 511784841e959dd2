//! DNS wire format: a zero-copy query parser and a response writer.
//!
//! Layer: wire (sans-IO, no allocation on the query path). Contract: after
//! [`Query::parse`] succeeds, every field is validated; no accessor can panic.
//! Parsing never trusts a count or a length from the packet: names follow
//! compression pointers only strictly backwards (so loops are impossible),
//! labels are at most 63 octets and names at most 255 octets (RFC 1035
//! sec. 3.1), and every read is bounds-checked.
//!
//! Only what an authoritative server needs is parsed: the header, exactly one
//! question, and the OPT pseudo-record (RFC 6891) with its EDNS Client Subnet
//! option (RFC 7871). Other records in the query are skipped over.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length of the fixed DNS header (RFC 1035 sec. 4.1.1).
pub const HEADER_LEN: usize = 12;
/// Maximum length of an uncompressed name on the wire (RFC 1035 sec. 3.1).
pub const MAX_NAME_LEN: usize = 255;
/// Maximum length of one label.
pub const MAX_LABEL_LEN: usize = 63;
/// Message size limit for UDP without EDNS (RFC 1035 sec. 4.2.1).
pub const CLASSIC_UDP_LIMIT: usize = 512;

mod field {
    pub const ID: usize = 0;
    pub const FLAGS: usize = 2;
    pub const QDCOUNT: usize = 4;
    pub const ANCOUNT: usize = 6;
    pub const NSCOUNT: usize = 8;
    pub const ARCOUNT: usize = 10;
}

/// Header flag bits (RFC 1035 sec. 4.1.1, RFC 4035 sec. 3.2).
pub mod flag {
    /// Query (0) or response (1).
    pub const QR: u16 = 0x8000;
    /// Authoritative answer.
    pub const AA: u16 = 0x0400;
    /// Truncated.
    pub const TC: u16 = 0x0200;
    /// Recursion desired.
    pub const RD: u16 = 0x0100;
    /// Checking disabled.
    pub const CD: u16 = 0x0010;
    /// Shift of the 4-bit OPCODE.
    pub const OPCODE_SHIFT: u16 = 11;
}

/// Record types this server knows by number.
pub mod rtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Name server.
    pub const NS: u16 = 2;
    /// Start of authority.
    pub const SOA: u16 = 6;
    /// Text.
    pub const TXT: u16 = 16;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// EDNS pseudo-record.
    pub const OPT: u16 = 41;
    /// Incremental zone transfer.
    pub const IXFR: u16 = 251;
    /// Full zone transfer.
    pub const AXFR: u16 = 252;
    /// Any type (RFC 8482 answers it minimally).
    pub const ANY: u16 = 255;
}

/// Classes.
pub mod class {
    /// Internet.
    pub const IN: u16 = 1;
    /// Any class.
    pub const ANY: u16 = 255;
}

/// Response codes, including the EDNS extended ones (12 bits).
pub mod rcode {
    /// No error.
    pub const NOERROR: u16 = 0;
    /// Format error.
    pub const FORMERR: u16 = 1;
    /// Server failure.
    pub const SERVFAIL: u16 = 2;
    /// Name does not exist.
    pub const NXDOMAIN: u16 = 3;
    /// Not implemented.
    pub const NOTIMP: u16 = 4;
    /// Refused.
    pub const REFUSED: u16 = 5;
    /// Bad EDNS version (RFC 6891 sec. 6.1.3), needs the OPT extended rcode.
    pub const BADVERS: u16 = 16;
}

/// EDNS option code of Client Subnet (RFC 7871 sec. 6).
pub const OPTION_CLIENT_SUBNET: u16 = 8;
/// Address family numbers used by ECS (IANA address family numbers).
pub const FAMILY_IPV4: u16 = 1;
/// See [`FAMILY_IPV4`].
pub const FAMILY_IPV6: u16 = 2;

/// Why a query could not be parsed. Each maps to a DNS response (or to
/// silence), see [`ParseError::rcode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The message ends before a field it announces.
    #[error("message truncated")]
    Truncated,
    /// A label is longer than 63 octets or uses a reserved label type.
    #[error("bad label")]
    BadLabel,
    /// The name exceeds 255 octets.
    #[error("name too long")]
    NameTooLong,
    /// A compression pointer points forward or to itself (a loop).
    #[error("compression pointer does not point backwards")]
    BadPointer,
    /// QDCOUNT is not exactly one.
    #[error("query must carry exactly one question")]
    QuestionCount,
    /// More than one OPT record, an OPT outside the additional section, or an
    /// OPT whose owner is not the root.
    #[error("malformed or repeated OPT record")]
    BadOpt,
    /// An EDNS option runs past the end of the OPT record.
    #[error("malformed EDNS option")]
    BadOption,
    /// ECS with a family other than 1 (IPv4) or 2 (IPv6).
    #[error("unknown ECS address family {0}")]
    EcsFamily(u16),
    /// ECS source prefix longer than the address.
    #[error("ECS source prefix too long")]
    EcsPrefix,
    /// ECS ADDRESS uses too few or too many octets for its source prefix.
    #[error("ECS address length does not match source prefix")]
    EcsAddressLength,
    /// ECS ADDRESS has bits set beyond the source prefix.
    #[error("ECS address has bits set beyond the source prefix")]
    EcsStrayBits,
    /// More than one ECS option.
    #[error("repeated ECS option")]
    EcsRepeated,
}

/// A query that failed to parse, with what is known for the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// No reply: shorter than a header, or not a query (QR set), so
    /// answering would enable reflection.
    Drop,
    /// Reply FORMERR (boxed: the error path may allocate, the query path
    /// does not carry the weight).
    Malformed(Box<Malformed>),
}

/// What is known of a query that gets FORMERR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// The header of the query.
    pub header: Header,
    /// The question, when it parsed.
    pub question: Option<Question>,
    /// Whether the query carried an OPT record (then the reply does too).
    pub edns: Option<Edns>,
    /// What was wrong.
    pub error: WireError,
}

/// The parts of the header a reply needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Transaction id.
    pub id: u16,
    /// Raw flags word.
    pub flags: u16,
}

impl Header {
    /// The 4-bit OPCODE.
    pub fn opcode(&self) -> u8 {
        ((self.flags >> flag::OPCODE_SHIFT) & 0xf) as u8
    }
}

/// A domain name in wire form, uncompressed, with its original case.
#[derive(Clone, PartialEq, Eq)]
pub struct Name {
    buf: [u8; MAX_NAME_LEN],
    len: u8,
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Name({})", self.to_dotted())
    }
}

impl Name {
    /// The root name.
    pub fn root() -> Self {
        Self {
            buf: [0; MAX_NAME_LEN],
            len: 1,
        }
    }

    /// Builds a name from dotted text (`a.b.c.` or `a.b.c`).
    pub fn from_dotted(text: &str) -> Result<Self, WireError> {
        let mut name = Self {
            buf: [0; MAX_NAME_LEN],
            len: 0,
        };
        let mut pos = 0usize;
        let trimmed = text.strip_suffix('.').unwrap_or(text);
        if !trimmed.is_empty() {
            for label in trimmed.split('.') {
                let bytes = label.as_bytes();
                if bytes.is_empty() || bytes.len() > MAX_LABEL_LEN {
                    return Err(WireError::BadLabel);
                }
                if pos + 1 + bytes.len() + 1 > MAX_NAME_LEN {
                    return Err(WireError::NameTooLong);
                }
                name.buf[pos] = bytes.len() as u8;
                name.buf[pos + 1..pos + 1 + bytes.len()].copy_from_slice(bytes);
                pos += 1 + bytes.len();
            }
        }
        name.buf[pos] = 0;
        name.len = (pos + 1) as u8;
        Ok(name)
    }

    /// Wire bytes, ending with the root label.
    pub fn as_wire(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// Wire bytes folded to ASCII lower case (DNS names compare
    /// case-insensitively, RFC 4343).
    pub fn to_lower(&self) -> Self {
        let mut out = self.clone();
        // Length octets are < 64, so lowering them is a no-op.
        out.buf[..self.len as usize].make_ascii_lowercase();
        out
    }

    /// Number of labels, not counting the root.
    pub fn label_count(&self) -> usize {
        self.label_offsets().count()
    }

    /// Offsets of each label's length octet, from the leftmost label.
    pub fn label_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        let mut pos = 0usize;
        std::iter::from_fn(move || {
            let len = *self.buf.get(pos)? as usize;
            if len == 0 || pos >= self.len as usize {
                return None;
            }
            let here = pos;
            pos += 1 + len;
            Some(here)
        })
    }

    /// The name with the leftmost `skip` labels removed, as wire bytes.
    pub fn suffix_wire(&self, skip: usize) -> &[u8] {
        match self.label_offsets().nth(skip) {
            Some(offset) => &self.as_wire()[offset..],
            None => &self.as_wire()[self.len as usize - 1..],
        }
    }

    /// Whether this name is `origin` or below it. Compares wire bytes on
    /// label boundaries (`badexample.com.` is not within `example.com.`), so
    /// both names must have the same case.
    pub fn is_within(&self, origin: &Name) -> bool {
        let (n, o) = (self.as_wire(), origin.as_wire());
        if n.len() < o.len() || !n.ends_with(o) {
            return false;
        }
        // The suffix must start at a label boundary.
        let start = n.len() - o.len();
        start == 0 || self.label_offsets().any(|off| off == start)
    }

    /// Dotted text form, with a trailing dot; bytes outside printable ASCII
    /// are escaped as `\DDD`.
    pub fn to_dotted(&self) -> String {
        let mut out = String::new();
        for offset in self.label_offsets() {
            let len = self.buf[offset] as usize;
            for &b in &self.buf[offset + 1..offset + 1 + len] {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("\\{b:03}"));
                }
            }
            out.push('.');
        }
        if out.is_empty() {
            out.push('.');
        }
        out
    }
}

/// The question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// QNAME with its original case (echoed back for 0x20 resolvers).
    pub name: Name,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
}

/// EDNS Client Subnet option (RFC 7871 sec. 6), validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    /// FAMILY: 1 (IPv4) or 2 (IPv6).
    pub family: u16,
    /// SOURCE PREFIX-LENGTH.
    pub source_prefix: u8,
    /// SCOPE PREFIX-LENGTH (0 in queries; set by the server in replies).
    pub scope_prefix: u8,
    /// ADDRESS, zero beyond the source prefix.
    pub address: IpAddr,
}

impl ClientSubnet {
    /// Parses and validates the OPTION-DATA of an ECS option.
    ///
    /// RFC 7871 sec. 6: "A server receiving an ECS option that uses either
    /// too few or too many ADDRESS octets, or that has non-zero ADDRESS bits
    /// set beyond SOURCE PREFIX-LENGTH, SHOULD return FORMERR". Sec. 7.2.1:
    /// "A query with a wrongly formatted option (e.g., an unknown FAMILY)
    /// MUST be rejected and a FORMERR response MUST be returned".
    pub fn parse(data: &[u8]) -> Result<Self, WireError> {
        if data.len() < 4 {
            return Err(WireError::BadOption);
        }
        let family = u16::from_be_bytes([data[0], data[1]]);
        let source_prefix = data[2];
        let scope_prefix = data[3];
        let addr = &data[4..];
        let width = match family {
            FAMILY_IPV4 => 32,
            FAMILY_IPV6 => 128,
            other => return Err(WireError::EcsFamily(other)),
        };
        if source_prefix > width {
            return Err(WireError::EcsPrefix);
        }
        let needed = usize::from(source_prefix).div_ceil(8);
        if addr.len() != needed {
            return Err(WireError::EcsAddressLength);
        }
        if let Some(&last) = addr.last() {
            let used_bits = source_prefix % 8;
            if used_bits != 0 && last & (0xffu8 >> used_bits) != 0 {
                return Err(WireError::EcsStrayBits);
            }
        }
        let address = if family == FAMILY_IPV4 {
            let mut octets = [0u8; 4];
            octets[..needed].copy_from_slice(addr);
            IpAddr::V4(Ipv4Addr::from(octets))
        } else {
            let mut octets = [0u8; 16];
            octets[..needed].copy_from_slice(addr);
            IpAddr::V6(Ipv6Addr::from(octets))
        };
        Ok(Self {
            family,
            source_prefix,
            scope_prefix,
            address,
        })
    }

    /// Builds an option for a query (scope 0), masking the address.
    pub fn for_query(address: IpAddr, source_prefix: u8) -> Self {
        let (family, width) = match address {
            IpAddr::V4(_) => (FAMILY_IPV4, 32),
            IpAddr::V6(_) => (FAMILY_IPV6, 128),
        };
        let source_prefix = source_prefix.min(width);
        Self {
            family,
            source_prefix,
            scope_prefix: 0,
            address: mask(address, source_prefix),
        }
    }

    /// Length of OPTION-DATA.
    pub fn data_len(&self) -> usize {
        4 + usize::from(self.source_prefix).div_ceil(8)
    }

    /// Appends the whole option (code, length, data).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&OPTION_CLIENT_SUBNET.to_be_bytes());
        out.extend_from_slice(&(self.data_len() as u16).to_be_bytes());
        out.extend_from_slice(&self.family.to_be_bytes());
        out.push(self.source_prefix);
        out.push(self.scope_prefix);
        let needed = usize::from(self.source_prefix).div_ceil(8);
        match self.address {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..needed.min(4)]),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..needed.min(16)]),
        }
    }
}

/// Zeroes the bits of `addr` beyond `prefix`.
pub fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// The OPT pseudo-record of a query (RFC 6891 sec. 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size (values below 512 count as 512).
    pub udp_payload: u16,
    /// EDNS version.
    pub version: u8,
    /// DNSSEC OK bit (RFC 3225: copied into the reply).
    pub dnssec_ok: bool,
    /// The Client Subnet option, if any.
    pub client_subnet: Option<ClientSubnet>,
}

/// A parsed, validated query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Header fields.
    pub header: Header,
    /// The single question.
    pub question: Question,
    /// The OPT record, if present.
    pub edns: Option<Edns>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, WireError> {
        let b = *self.buf.get(self.pos).ok_or(WireError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let hi = self.u8()?;
        let lo = self.u8()?;
        Ok(u16::from_be_bytes([hi, lo]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok((u32::from(self.u16()?) << 16) | u32::from(self.u16()?))
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    /// Reads a possibly compressed name starting at the cursor. Each pointer
    /// must point strictly before the label sequence it interrupts, so every
    /// jump moves backwards and a loop cannot exist.
    fn name(&mut self) -> Result<Name, WireError> {
        let mut name = Name {
            buf: [0; MAX_NAME_LEN],
            len: 0,
        };
        let mut out = 0usize;
        let mut pos = self.pos;
        // Lower bound that a pointer must stay below: start of the current
        // run of labels.
        let mut run_start = pos;
        let mut resume: Option<usize> = None;
        loop {
            let len = *self.buf.get(pos).ok_or(WireError::Truncated)?;
            match len & 0xc0 {
                0x00 => {
                    let len = usize::from(len);
                    if len == 0 {
                        if out + 1 > MAX_NAME_LEN {
                            return Err(WireError::NameTooLong);
                        }
                        name.buf[out] = 0;
                        name.len = (out + 1) as u8;
                        self.pos = resume.unwrap_or(pos + 1);
                        return Ok(name);
                    }
                    let label = self
                        .buf
                        .get(pos + 1..pos + 1 + len)
                        .ok_or(WireError::Truncated)?;
                    // Room for this label plus the final root octet.
                    if out + 1 + len + 1 > MAX_NAME_LEN {
                        return Err(WireError::NameTooLong);
                    }
                    name.buf[out] = len as u8;
                    name.buf[out + 1..out + 1 + len].copy_from_slice(label);
                    out += 1 + len;
                    pos += 1 + len;
                }
                0xc0 => {
                    let lo = *self.buf.get(pos + 1).ok_or(WireError::Truncated)?;
                    let target = (usize::from(len & 0x3f) << 8) | usize::from(lo);
                    if target >= run_start {
                        return Err(WireError::BadPointer);
                    }
                    if resume.is_none() {
                        resume = Some(pos + 2);
                    }
                    pos = target;
                    run_start = target;
                }
                // 0x40 (extended label types, RFC 6891 sec. 5) and 0x80 are
                // not in use.
                _ => return Err(WireError::BadLabel),
            }
        }
    }

    /// Skips one resource record, returning (type, class, ttl, rdata, owner
    /// is root).
    fn question(&mut self) -> Result<Question, WireError> {
        let name = self.name()?;
        let qtype = self.u16()?;
        let qclass = self.u16()?;
        Ok(Question {
            name,
            qtype,
            qclass,
        })
    }

    /// The additional section: its OPT, if any (RFC 6891 sec. 6.1.1: at most
    /// one). On error, also the OPT as far as the reply needs it: the reply
    /// to a query with a (bad) OPT still carries an OPT (sec. 7).
    fn additional(&mut self, arcount: u16) -> Result<Option<Edns>, (Option<Edns>, WireError)> {
        let mut edns: Option<Edns> = None;
        let mut opt_error: Option<WireError> = None;
        for _ in 0..arcount {
            let rec = match self.record() {
                Ok(rec) => rec,
                Err(e) => return Err((edns, e)),
            };
            if rec.rtype != rtype::OPT {
                continue;
            }
            if edns.is_some() || opt_error.is_some() {
                return Err((edns, WireError::BadOpt));
            }
            match parse_opt(&rec) {
                Ok(e) => edns = Some(e),
                Err(e) => {
                    edns = Some(Edns {
                        udp_payload: rec.rclass,
                        version: 0,
                        dnssec_ok: rec.ttl & 0x8000 != 0,
                        client_subnet: None,
                    });
                    opt_error = Some(e);
                }
            }
        }
        match opt_error {
            Some(e) => Err((edns, e)),
            None => Ok(edns),
        }
    }

    fn record(&mut self) -> Result<RawRecord<'a>, WireError> {
        let owner = self.name()?;
        let rtype = self.u16()?;
        let rclass = self.u16()?;
        let ttl = self.u32()?;
        let rdlen = usize::from(self.u16()?);
        let rdata = self.bytes(rdlen)?;
        Ok(RawRecord {
            owner_is_root: owner.len == 1,
            rtype,
            rclass,
            ttl,
            rdata,
        })
    }
}

struct RawRecord<'a> {
    owner_is_root: bool,
    rtype: u16,
    rclass: u16,
    ttl: u32,
    rdata: &'a [u8],
}

fn parse_opt(rec: &RawRecord<'_>) -> Result<Edns, WireError> {
    if !rec.owner_is_root {
        return Err(WireError::BadOpt);
    }
    let mut edns = Edns {
        udp_payload: rec.rclass,
        version: ((rec.ttl >> 16) & 0xff) as u8,
        dnssec_ok: rec.ttl & 0x8000 != 0,
        client_subnet: None,
    };
    let mut r = Reader {
        buf: rec.rdata,
        pos: 0,
    };
    while r.pos < rec.rdata.len() {
        let code = r.u16().map_err(|_| WireError::BadOption)?;
        let len = usize::from(r.u16().map_err(|_| WireError::BadOption)?);
        let data = r.bytes(len).map_err(|_| WireError::BadOption)?;
        if code == OPTION_CLIENT_SUBNET {
            if edns.client_subnet.is_some() {
                return Err(WireError::EcsRepeated);
            }
            edns.client_subnet = Some(ClientSubnet::parse(data)?);
        }
        // RFC 6891 sec. 6.1.2: unknown options MUST be ignored.
    }
    Ok(edns)
}

impl Query {
    /// Parses a query message.
    pub fn parse(msg: &[u8]) -> Result<Self, ParseError> {
        if msg.len() < HEADER_LEN {
            return Err(ParseError::Drop);
        }
        let be = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
        let header = Header {
            id: be(field::ID),
            flags: be(field::FLAGS),
        };
        if header.flags & flag::QR != 0 {
            return Err(ParseError::Drop);
        }
        let qdcount = be(field::QDCOUNT);
        let ancount = be(field::ANCOUNT);
        let nscount = be(field::NSCOUNT);
        let arcount = be(field::ARCOUNT);
        let malformed = |question: Option<Question>, edns: Option<Edns>, error| {
            ParseError::Malformed(Box::new(Malformed {
                header,
                question,
                edns,
                error,
            }))
        };
        if qdcount != 1 {
            return Err(malformed(None, None, WireError::QuestionCount));
        }
        let mut r = Reader {
            buf: msg,
            pos: HEADER_LEN,
        };
        let question = r.question().map_err(|e| malformed(None, None, e))?;
        for _ in 0..u32::from(ancount) + u32::from(nscount) {
            let rec = r
                .record()
                .map_err(|e| malformed(Some(question.clone()), None, e))?;
            if rec.rtype == rtype::OPT {
                return Err(malformed(Some(question), None, WireError::BadOpt));
            }
        }
        let edns = r
            .additional(arcount)
            .map_err(|(edns, e)| malformed(Some(question.clone()), edns, e))?;
        // Trailing garbage after the counted records is tolerated, as most
        // servers do.
        Ok(Query {
            header,
            question,
            edns,
        })
    }
}

/// Appends a record header: owner (already-encoded bytes), type, class, TTL
/// and RDLENGTH.
pub fn put_rr_header(
    out: &mut Vec<u8>,
    owner: &[u8],
    rtype: u16,
    rclass: u16,
    ttl: u32,
    rdlen: usize,
) {
    out.extend_from_slice(owner);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&rclass.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdlen as u16).to_be_bytes());
}

/// A compression pointer to `offset` (RFC 1035 sec. 4.1.4).
pub const fn pointer(offset: usize) -> [u8; 2] {
    debug_assert!(offset < 0x4000);
    [0xc0 | ((offset >> 8) as u8 & 0x3f), (offset & 0xff) as u8]
}

/// Appends an OPT record (RFC 6891 sec. 6.1.2). `rcode_high` is the upper 8
/// bits of the 12-bit RCODE.
pub fn put_opt(
    out: &mut Vec<u8>,
    udp_payload: u16,
    rcode_high: u8,
    dnssec_ok: bool,
    ecs: Option<&ClientSubnet>,
) {
    let rdlen = ecs.map_or(0, |e| 4 + e.data_len());
    let ttl = (u32::from(rcode_high) << 24) | if dnssec_ok { 0x8000 } else { 0 };
    put_rr_header(out, &[0], rtype::OPT, udp_payload, ttl, rdlen);
    if let Some(e) = ecs {
        e.emit(out);
    }
}

/// Builds a query message (used by our own client, the tests and the load
/// generator).
pub fn build_query(
    id: u16,
    name: &Name,
    qtype: u16,
    edns: Option<(u16, Option<ClientSubnet>)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&u16::from(edns.is_some()).to_be_bytes());
    out.extend_from_slice(name.as_wire());
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&class::IN.to_be_bytes());
    if let Some((payload, ecs)) = edns {
        put_opt(&mut out, payload, 0, false, ecs.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_bytes(name: &str, qtype: u16, ecs: Option<&[u8]>) -> Vec<u8> {
        let mut q = build_query(0x1234, &Name::from_dotted(name).unwrap(), qtype, None);
        if let Some(data) = ecs {
            q[11] = 1;
            put_rr_header(&mut q, &[0], rtype::OPT, 1232, 0, 4 + data.len());
            q.extend_from_slice(&OPTION_CLIENT_SUBNET.to_be_bytes());
            q.extend_from_slice(&(data.len() as u16).to_be_bytes());
            q.extend_from_slice(data);
        }
        q
    }

    fn malformed_error(r: Result<Query, ParseError>) -> WireError {
        match r {
            Err(ParseError::Malformed(m)) => m.error,
            other => panic!("expected FORMERR, got {other:?}"),
        }
    }

    #[test]
    fn parses_plain_query_fixture() {
        // dig svc.example.com AAAA +noedns, id 0x1234, RD set.
        let fixture: &[u8] = &[
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, b's', b'v', b'c', 7, b'e', b'x',
            b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0, 28, 0, 1,
        ];
        let q = Query::parse(fixture).unwrap();
        assert_eq!(q.header.id, 0x1234);
        assert_eq!(q.header.flags & flag::RD, flag::RD);
        assert_eq!(q.question.name.to_dotted(), "svc.example.com.");
        assert_eq!(q.question.qtype, rtype::AAAA);
        assert_eq!(q.question.qclass, class::IN);
        assert_eq!(q.edns, None);
    }

    #[test]
    fn build_then_parse_round_trips_ecs() {
        let ecs = ClientSubnet::for_query("198.51.100.77".parse().unwrap(), 24);
        let q = build_query(
            7,
            &Name::from_dotted("a.b.").unwrap(),
            rtype::A,
            Some((4096, Some(ecs))),
        );
        let parsed = Query::parse(&q).unwrap();
        let e = parsed.edns.unwrap();
        assert_eq!(e.udp_payload, 4096);
        let cs = e.client_subnet.unwrap();
        assert_eq!(cs.address, "198.51.100.0".parse::<IpAddr>().unwrap());
        assert_eq!(cs.source_prefix, 24);
        let mut emitted = Vec::new();
        cs.emit(&mut emitted);
        assert_eq!(emitted, [0, 8, 0, 7, 0, 1, 24, 0, 198, 51, 100]);
    }

    #[test]
    fn ecs_validation_follows_rfc7871() {
        // Unknown family.
        assert_eq!(
            ClientSubnet::parse(&[0, 3, 0, 0]),
            Err(WireError::EcsFamily(3))
        );
        // Bits beyond the source prefix: /23 but last octet has bit 24 set.
        assert_eq!(
            ClientSubnet::parse(&[0, 1, 23, 0, 198, 51, 101]),
            Err(WireError::EcsStrayBits)
        );
        // Too many octets.
        assert_eq!(
            ClientSubnet::parse(&[0, 1, 16, 0, 198, 51, 0]),
            Err(WireError::EcsAddressLength)
        );
        // Too few octets.
        assert_eq!(
            ClientSubnet::parse(&[0, 1, 24, 0, 198, 51]),
            Err(WireError::EcsAddressLength)
        );
        // Prefix beyond the family width.
        assert_eq!(
            ClientSubnet::parse(&[0, 1, 33, 0, 1, 2, 3, 4, 5]),
            Err(WireError::EcsPrefix)
        );
        // Source 0, no address: valid.
        let z = ClientSubnet::parse(&[0, 2, 0, 0]).unwrap();
        assert_eq!(z.source_prefix, 0);
        assert_eq!(z.address, "::".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn malformed_ecs_in_query_is_formerr_with_edns() {
        let q = query_bytes("x.", rtype::A, Some(&[0, 9, 0, 0]));
        match Query::parse(&q) {
            Err(ParseError::Malformed(m)) => {
                assert_eq!(m.error, WireError::EcsFamily(9));
                assert!(m.edns.is_some());
                assert!(m.question.is_some());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn compression_loops_are_rejected() {
        // Question name is a pointer to itself.
        let mut q = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(malformed_error(Query::parse(&q)), WireError::BadPointer);
        // A forward pointer.
        let mut q = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&[1, b'a', 0xc0, 20, 0, 1, 0, 1, 0]);
        assert_eq!(malformed_error(Query::parse(&q)), WireError::BadPointer);
    }

    #[test]
    fn backward_pointer_is_followed() {
        // Question "a.b." then an additional record (non-OPT) whose owner
        // points back at "b." inside the question.
        let mut q = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        q.extend_from_slice(&[1, b'a', 1, b'b', 0, 0, 1, 0, 1]);
        q.extend_from_slice(&[0xc0, 14, 0, 16, 0, 1, 0, 0, 0, 0, 0, 1, 0]);
        let parsed = Query::parse(&q).unwrap();
        assert_eq!(parsed.question.name.to_dotted(), "a.b.");
    }

    #[test]
    fn huge_names_and_labels_are_rejected() {
        let mut q = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..5 {
            q.push(63);
            q.extend_from_slice(&[b'x'; 63]);
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(malformed_error(Query::parse(&q)), WireError::NameTooLong);
        let mut q = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.push(0x40);
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(malformed_error(Query::parse(&q)), WireError::BadLabel);
        assert!(Name::from_dotted(&"a".repeat(64)).is_err());
    }

    #[test]
    fn responses_and_runts_are_dropped() {
        assert_eq!(Query::parse(&[0; 11]), Err(ParseError::Drop));
        let mut q = query_bytes("x.", rtype::A, None);
        q[2] |= 0x80;
        assert_eq!(Query::parse(&q), Err(ParseError::Drop));
    }

    #[test]
    fn two_opt_records_are_formerr() {
        let mut q = query_bytes("x.", rtype::A, None);
        q[11] = 2;
        put_opt(&mut q, 1232, 0, false, None);
        put_opt(&mut q, 1232, 0, false, None);
        assert_eq!(malformed_error(Query::parse(&q)), WireError::BadOpt);
    }

    #[test]
    fn name_suffix_and_case() {
        let n = Name::from_dotted("WWW.Example.COM.").unwrap();
        assert_eq!(n.label_count(), 3);
        assert_eq!(n.to_lower().to_dotted(), "www.example.com.");
        assert_eq!(
            n.suffix_wire(1),
            Name::from_dotted("Example.COM").unwrap().as_wire()
        );
        assert_eq!(n.suffix_wire(3), &[0]);
        assert_eq!(Name::root().to_dotted(), ".");
    }

    #[test]
    fn mask_zeroes_host_bits() {
        assert_eq!(
            mask("10.1.2.3".parse().unwrap(), 8),
            "10.0.0.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            mask("2001:db8::1".parse().unwrap(), 0),
            "::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            mask("2001:db8::1".parse().unwrap(), 128),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn within_respects_label_boundaries() {
        let o = Name::from_dotted("example.com.").unwrap();
        assert!(Name::from_dotted("a.example.com.").unwrap().is_within(&o));
        assert!(o.is_within(&o));
        assert!(!Name::from_dotted("badexample.com.").unwrap().is_within(&o));
        assert!(!Name::from_dotted("com.").unwrap().is_within(&o));
    }
}
