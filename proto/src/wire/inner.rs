//! Views on the inner IPv6 and IPv4 packets the data plane carries, and
//! the few packets the data plane writes itself (TCP RST, ICMPv6 Packet Too
//! Big, ICMPv4 Fragmentation Needed).
//!
//! An IPv4 packet's addresses are IPv4-mapped (`::ffff:a.b.c.d`) in
//! [`FlowKey`] and [`addresses`]: the engines hold every address as an
//! `Ipv6Addr`.
//!
//! Parsing goes through `smoltcp::wire` where smoltcp has the view; the
//! extension header walk is done here because it must tolerate what
//! smoltcp's reprs refuse (first fragments whose upper-layer length field
//! covers the whole datagram).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

use smoltcp::wire::{
    Icmpv6Message, Icmpv6Packet, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
    TcpSeqNumber,
};

use super::WireError;

/// Length of the fixed IPv6 header (RFC 8200 sec. 3).
pub const IPV6_HEADER_LEN: usize = 40;
/// Length of an IPv4 header without options (RFC 791 sec. 3.1).
pub const IPV4_HEADER_LEN: usize = 20;
/// The most an ICMPv4 error may be (RFC 1812 sec. 4.3.2.3).
pub const IPV4_ICMP_ERROR_MAX: usize = 576;
/// The most extension headers [`inspect`] walks before giving up.
pub const MAX_EXTENSION_HEADERS: usize = 8;
/// The IPv6 minimum MTU (RFC 8200 sec. 5): an ICMPv6 error never exceeds it
/// (RFC 4443 sec. 2.4 (c)).
pub const IPV6_MIN_MTU: usize = 1280;
/// Hop limit of the packets built here.
pub const HOP_LIMIT: u8 = 64;

/// Next Header values this module acts on.
mod next_header {
    pub const HOP_BY_HOP: u8 = 0;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ICMPV4: u8 = 1;
    pub const ICMPV6: u8 = 58;
    pub const DEST_OPTS: u8 = 60;
}

/// Byte offsets inside headers this module reads by hand.
mod field {
    use core::ops::Range;

    /// IPv6 source address.
    pub const IPV6_SRC: Range<usize> = 8..24;
    /// IPv6 destination address.
    pub const IPV6_DST: Range<usize> = 24..40;
    /// IPv4 total length.
    pub const IPV4_TOTAL_LEN: Range<usize> = 2..4;
    /// IPv4 identification.
    pub const IPV4_IDENT: Range<usize> = 4..6;
    /// IPv4 flags (3 bits) and fragment offset (13 bits).
    pub const IPV4_FRAG: Range<usize> = 6..8;
    /// IPv4 protocol.
    pub const IPV4_PROTO: usize = 9;
    /// IPv4 source address.
    pub const IPV4_SRC: Range<usize> = 12..16;
    /// IPv4 destination address.
    pub const IPV4_DST: Range<usize> = 16..20;
    /// ICMPv4 destination unreachable header length (type, code,
    /// checksum, unused, next-hop MTU; RFC 1191 sec. 4).
    pub const ICMP4_UNREACH_LEN: usize = 8;
    /// Extension header: next header.
    pub const EXT_NEXT_HEADER: usize = 0;
    /// Extension header: length in 8-octet units, not counting the first 8.
    pub const EXT_LEN: usize = 1;
    /// Fragment header: offset (13 bits) and flags.
    pub const FRAG_OFFSET: Range<usize> = 2..4;
    /// Fragment header: identification.
    pub const FRAG_ID: Range<usize> = 4..8;
    /// Fragment header length.
    pub const FRAG_HEADER_LEN: usize = 8;
    /// UDP/TCP source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// UDP/TCP destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// UDP header length.
    pub const UDP_HEADER_LEN: usize = 8;
    /// ICMPv6 type.
    pub const ICMP_TYPE: usize = 0;
    /// ICMPv6 echo identifier.
    pub const ICMP_ECHO_IDENT: Range<usize> = 4..6;
    /// ICMPv6 echo header length.
    pub const ICMP_ECHO_LEN: usize = 8;
    /// ICMPv6 Packet Too Big header length (type, code, checksum, MTU).
    pub const ICMP_PTB_LEN: usize = 8;
    /// TCP header without options.
    pub const TCP_HEADER_LEN: usize = 20;
    /// TCP checksum, from the start of the TCP header.
    pub const TCP_CHECKSUM: usize = 16;
    /// TCP options, from the start of the TCP header.
    pub const TCP_OPTIONS: usize = 20;
}

/// TCP option kinds (RFC 9293 sec. 3.2).
mod tcp_option {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const MSS_LEN: usize = 4;
}

/// ICMPv6 types (RFC 4443 sec. 2.1).
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
/// ICMPv6 types below this are error messages (RFC 4443 sec. 2.1).
const ICMPV6_FIRST_INFORMATIONAL: u8 = 128;
/// ICMPv4 types (RFC 792).
const ICMPV4_ECHO_REPLY: u8 = 0;
const ICMPV4_DEST_UNREACHABLE: u8 = 3;
const ICMPV4_ECHO_REQUEST: u8 = 8;
/// ICMPv4 code "fragmentation needed and DF set" (RFC 792, RFC 1191).
const ICMPV4_FRAG_NEEDED: u8 = 4;
/// ICMPv4 error types: unreachable, source quench, redirect, time
/// exceeded, parameter problem (RFC 792, RFC 1122 sec. 3.2.2).
const ICMPV4_ERRORS: [u8; 5] = [3, 4, 5, 11, 12];
/// IPv4 flags: don't fragment, more fragments (RFC 791 sec. 3.1).
const IPV4_DF: u16 = 0x4000;
const IPV4_MF: u16 = 0x2000;
const IPV4_OFFSET_MASK: u16 = 0x1fff;

/// The 5-tuple a packet belongs to. For ICMPv6 and ICMPv4 echo
/// request/reply the echo identifier is both ports; for non-first fragments
/// and other protocols the ports are 0. IPv4 addresses are IPv4-mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Upper-layer protocol (after the extension headers).
    pub proto: u8,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl FlowKey {
    /// The key of the opposite direction.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }
}

/// The TCP flags the flow tables act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags {
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
}

/// What [`inspect`] learns about an inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerInfo {
    /// The flow.
    pub flow: FlowKey,
    /// TCP details, for TCP segments that are not non-first fragments.
    pub tcp: Option<TcpInfo>,
    /// The fragment header, if the packet is a fragment.
    pub fragment: Option<Fragment>,
}

/// The fragment header of a fragment (RFC 8200 sec. 4.5), or the
/// fragment fields of an IPv4 header (RFC 791 sec. 3.1: the identification
/// is 16 bits there; offset and M flag mean the same).
///
/// Only the first fragment (offset 0) holds the upper-layer header, so a
/// later fragment's [`FlowKey`] has no ports: it is the same for every
/// fragmented packet of a source. Where a later fragment goes must follow
/// its first fragment, found by the identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Identification, the same in every fragment of one original packet.
    pub id: u32,
    /// Offset in 8-octet units; 0 for the first fragment.
    pub offset: u16,
    /// More fragments follow (the M flag).
    pub more: bool,
}

impl Fragment {
    /// The first fragment of a packet that has more: later ones follow it.
    pub fn is_first(&self) -> bool {
        self.offset == 0 && self.more
    }

    /// A fragment after the first, without the upper-layer header.
    pub fn is_later(&self) -> bool {
        self.offset != 0
    }
}

/// TCP header details of an inner segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    /// Flags.
    pub flags: TcpFlags,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (meaningful when `flags.ack`).
    pub ack: u32,
    /// Payload bytes in this packet (of a first fragment: in this fragment).
    pub payload_len: u32,
}

fn be16(b: &[u8], r: core::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

fn ipv6_at(b: &[u8], r: core::ops::Range<usize>) -> Ipv6Addr {
    let mut out = [0u8; 16];
    out.copy_from_slice(&b[r]);
    Ipv6Addr::from(out)
}

fn ipv4_at(b: &[u8], r: core::ops::Range<usize>) -> Ipv4Addr {
    Ipv4Addr::new(b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3])
}

/// Whether a packet is IPv4 (version 4): the first check of every
/// family-dependent step. Says nothing about its length.
pub fn is_ipv4(packet: &[u8]) -> bool {
    packet.first().is_some_and(|b| b >> 4 == 4)
}

/// Source and destination of an inner packet, checking only that it is
/// IPv6 (version 6) and at least 40 bytes long or IPv4 (version 4) and at
/// least 20 bytes long: the check every receiver does first
/// (docs/PROTOCOL.md section 1). IPv4 addresses come back IPv4-mapped.
pub fn addresses(packet: &[u8]) -> Result<(Ipv6Addr, Ipv6Addr), WireError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            if packet.len() < IPV4_HEADER_LEN {
                return Err(WireError::Truncated("inner ipv4 header"));
            }
            Ok((
                ipv4_at(packet, field::IPV4_SRC).to_ipv6_mapped(),
                ipv4_at(packet, field::IPV4_DST).to_ipv6_mapped(),
            ))
        }
        Some(6) | None => {
            if packet.len() < IPV6_HEADER_LEN {
                return Err(WireError::Truncated("inner ipv6 header"));
            }
            Ok((
                ipv6_at(packet, field::IPV6_SRC),
                ipv6_at(packet, field::IPV6_DST),
            ))
        }
        Some(_) => Err(WireError::InvalidValue(
            "inner ip version (not IPv6 or IPv4)",
        )),
    }
}

/// The largest TCP MSS a SYN in `packet`'s family may announce for an
/// inner MTU of `mtu`: `mtu - 60` for IPv6, `mtu - 40` for IPv4 (fixed IP
/// header plus a TCP header without options).
pub fn mss_for_mtu(packet: &[u8], mtu: u16) -> u16 {
    let ip = if is_ipv4(packet) {
        IPV4_HEADER_LEN
    } else {
        IPV6_HEADER_LEN
    };
    mtu.saturating_sub((ip + field::TCP_HEADER_LEN) as u16)
}

/// Where the upper-layer header of a packet starts.
struct UpperLayer {
    /// Upper-layer protocol.
    proto: u8,
    /// Offset of the upper-layer header in the packet.
    offset: usize,
    /// End of the IPv6 payload (40 + Payload Length).
    end: usize,
    /// A fragment with a non-zero offset: no upper-layer header here.
    later_fragment: bool,
    /// The fragment header, if any.
    fragment: Option<Fragment>,
    /// An IPv4 packet.
    v4: bool,
}

/// Where the upper-layer header of an IPv4 packet starts: checks IHL >= 5
/// and a total length that covers the header and fits the buffer; reads
/// the fragment fields (offset != 0 or MF set: a fragment).
fn upper_layer_v4(packet: &[u8]) -> Result<UpperLayer, WireError> {
    if packet.len() < IPV4_HEADER_LEN {
        return Err(WireError::Truncated("inner ipv4 header"));
    }
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    if header_len < IPV4_HEADER_LEN {
        return Err(WireError::InvalidValue("inner ipv4 header length < 20"));
    }
    let end = usize::from(be16(packet, field::IPV4_TOTAL_LEN));
    if end < header_len {
        return Err(WireError::InvalidValue(
            "inner ipv4 total length shorter than its header",
        ));
    }
    if packet.len() < end {
        return Err(WireError::Truncated("inner ipv4 payload"));
    }
    let flags = be16(packet, field::IPV4_FRAG);
    let offset = flags & IPV4_OFFSET_MASK;
    let more = flags & IPV4_MF != 0;
    let fragment = (offset != 0 || more).then(|| Fragment {
        id: u32::from(be16(packet, field::IPV4_IDENT)),
        offset,
        more,
    });
    Ok(UpperLayer {
        proto: packet[field::IPV4_PROTO],
        offset: header_len,
        end,
        later_fragment: offset != 0,
        fragment,
        v4: true,
    })
}

/// Walks the extension headers (RFC 8200 sec. 4): hop-by-hop (0), routing
/// (43), fragment (44), destination options (60), at most
/// [`MAX_EXTENSION_HEADERS`].
fn upper_layer(packet: &[u8]) -> Result<UpperLayer, WireError> {
    if is_ipv4(packet) {
        return upper_layer_v4(packet);
    }
    let ip =
        Ipv6Packet::new_checked(packet).map_err(|_| WireError::Truncated("inner ipv6 payload"))?;
    if ip.version() != 6 {
        return Err(WireError::InvalidValue("inner ip version (not IPv6)"));
    }
    let end = IPV6_HEADER_LEN + usize::from(ip.payload_len());
    let mut proto = u8::from(ip.next_header());
    let mut offset = IPV6_HEADER_LEN;
    let mut walked = 0;
    let mut fragment = None;
    loop {
        let rest = &packet[offset..end];
        let is_extension = matches!(
            proto,
            next_header::HOP_BY_HOP
                | next_header::ROUTING
                | next_header::FRAGMENT
                | next_header::DEST_OPTS
        );
        if !is_extension {
            return Ok(UpperLayer {
                proto,
                offset,
                end,
                later_fragment: false,
                fragment,
                v4: false,
            });
        }
        if walked == MAX_EXTENSION_HEADERS {
            return Err(WireError::InvalidValue(
                "inner packet has more than 8 extension headers",
            ));
        }
        walked += 1;
        if proto == next_header::FRAGMENT {
            if rest.len() < field::FRAG_HEADER_LEN {
                return Err(WireError::Truncated("inner fragment header"));
            }
            proto = rest[field::EXT_NEXT_HEADER];
            offset += field::FRAG_HEADER_LEN;
            let offset_flags = be16(rest, field::FRAG_OFFSET);
            let id = &rest[field::FRAG_ID];
            let frag = Fragment {
                id: u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
                offset: offset_flags >> 3,
                more: offset_flags & 1 == 1,
            };
            fragment = Some(frag);
            if frag.is_later() {
                return Ok(UpperLayer {
                    proto,
                    offset,
                    end,
                    later_fragment: true,
                    fragment,
                    v4: false,
                });
            }
        } else {
            let len = match rest.get(field::EXT_LEN) {
                Some(&units) => (usize::from(units) + 1) * 8,
                None => return Err(WireError::Truncated("inner extension header")),
            };
            if rest.len() < len {
                return Err(WireError::Truncated("inner extension header"));
            }
            proto = rest[field::EXT_NEXT_HEADER];
            offset += len;
        }
    }
}

/// The flow and TCP details of an inner IPv6 or IPv4 packet.
///
/// IPv6: checks version 6 and that the buffer holds the whole payload the
/// header announces (bytes after it are ignored); walks up to 8 extension
/// headers (hop-by-hop, routing, fragment, destination options). IPv4:
/// checks IHL >= 5 and that the buffer holds the total length (bytes after
/// it are ignored); a fragment (offset or MF) gets a [`Fragment`] with the
/// 16-bit identification. Ports: TCP and UDP ports; ICMPv6 and ICMPv4 echo
/// request/reply: the identifier as both ports (so a reply's key is the
/// request's, reversed); non-first fragments and all other protocols: 0. Errors on truncated headers, so a packet that parses
/// here can be forwarded without further length checks.
pub fn inspect(packet: &[u8]) -> Result<InnerInfo, WireError> {
    let (src, dst) = addresses(packet)?;
    let upper = upper_layer(packet)?;
    let mut flow = FlowKey {
        src,
        dst,
        proto: upper.proto,
        src_port: 0,
        dst_port: 0,
    };
    if upper.later_fragment {
        return Ok(InnerInfo {
            flow,
            tcp: None,
            fragment: upper.fragment,
        });
    }
    let l4 = &packet[upper.offset..upper.end];
    let mut tcp = None;
    match upper.proto {
        next_header::TCP => {
            let segment =
                TcpPacket::new_checked(l4).map_err(|_| WireError::Truncated("inner tcp header"))?;
            flow.src_port = segment.src_port();
            flow.dst_port = segment.dst_port();
            tcp = Some(TcpInfo {
                flags: TcpFlags {
                    syn: segment.syn(),
                    ack: segment.ack(),
                    fin: segment.fin(),
                    rst: segment.rst(),
                },
                seq: segment.seq_number().0 as u32,
                ack: segment.ack_number().0 as u32,
                payload_len: segment.payload().len() as u32,
            });
        }
        next_header::UDP => {
            // Ports only: the UDP length of a first fragment covers the whole
            // datagram, which smoltcp's checked view would refuse.
            if l4.len() < field::UDP_HEADER_LEN {
                return Err(WireError::Truncated("inner udp header"));
            }
            flow.src_port = be16(l4, field::SRC_PORT);
            flow.dst_port = be16(l4, field::DST_PORT);
        }
        next_header::ICMPV4 if upper.v4 => {
            if let Some(&kind) = l4.get(field::ICMP_TYPE)
                && (kind == ICMPV4_ECHO_REQUEST || kind == ICMPV4_ECHO_REPLY)
            {
                if l4.len() < field::ICMP_ECHO_LEN {
                    return Err(WireError::Truncated("inner icmpv4 echo header"));
                }
                let ident = be16(l4, field::ICMP_ECHO_IDENT);
                flow.src_port = ident;
                flow.dst_port = ident;
            }
        }
        next_header::ICMPV6 if !upper.v4 => {
            if let Some(&kind) = l4.get(field::ICMP_TYPE)
                && (kind == ICMPV6_ECHO_REQUEST || kind == ICMPV6_ECHO_REPLY)
            {
                if l4.len() < field::ICMP_ECHO_LEN {
                    return Err(WireError::Truncated("inner icmpv6 echo header"));
                }
                let ident = be16(l4, field::ICMP_ECHO_IDENT);
                flow.src_port = ident;
                flow.dst_port = ident;
            }
        }
        _ => {}
    }
    Ok(InnerInfo {
        flow,
        tcp,
        fragment: upper.fragment,
    })
}

/// Adds `a` to the ones' complement sum `sum` (RFC 1071).
fn ones_add(sum: u16, a: u16) -> u16 {
    let (s, carry) = sum.overflowing_add(a);
    s + u16::from(carry)
}

/// The 16-bit word of the checksummed data at an even offset `at`, the
/// byte past the end counting as 0 (RFC 1071 pads odd lengths).
fn word_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b.get(at + 1).copied().unwrap_or(0)])
}

/// Lowers the TCP MSS option of a SYN (or SYN-ACK) segment to `max_mss` if
/// it is larger, and fixes the TCP checksum incrementally (RFC 1624 eqn. 3),
/// so a segment with a bad checksum keeps a bad checksum. Returns whether
/// the packet changed. IPv6 and IPv4 alike ([`mss_for_mtu`] gives the
/// bound per family). Anything else (not IP, not TCP, no SYN, no MSS
/// option, malformed options) is left alone.
///
/// Tunnel overhead makes the inner MTU smaller than the path MTU; clamping
/// the MSS keeps full-size TCP transfers from blackholing (docs/PROTOCOL.md
/// section 1).
pub fn clamp_tcp_mss(packet: &mut [u8], max_mss: u16) -> bool {
    let Ok(upper) = upper_layer(packet) else {
        return false;
    };
    if upper.proto != next_header::TCP || upper.later_fragment {
        return false;
    }
    let segment = &mut packet[upper.offset..upper.end];
    let header_len = match TcpPacket::new_checked(&segment[..]) {
        Ok(tcp) if tcp.syn() => usize::from(tcp.header_len()),
        _ => return false,
    };
    let mut at = field::TCP_OPTIONS;
    while at < header_len {
        let kind = segment[at];
        match kind {
            tcp_option::END => return false,
            tcp_option::NOP => at += 1,
            _ => {
                let Some(&len) = segment[..header_len].get(at + 1) else {
                    return false;
                };
                let len = usize::from(len);
                if len < 2 || at + len > header_len {
                    return false;
                }
                if kind == tcp_option::MSS {
                    if len != tcp_option::MSS_LEN {
                        return false;
                    }
                    let value = at + 2;
                    let mss = be16(segment, value..value + 2);
                    if mss <= max_mss {
                        return false;
                    }
                    // The value may sit at an odd offset: update every
                    // checksum word it touches.
                    let first = value & !1;
                    let last = (value + 1) & !1;
                    let old: [u16; 2] = [word_at(segment, first), word_at(segment, last)];
                    segment[value..value + 2].copy_from_slice(&max_mss.to_be_bytes());
                    let new: [u16; 2] = [word_at(segment, first), word_at(segment, last)];
                    let words = if first == last { 1 } else { 2 };
                    let checksum = be16(segment, field::TCP_CHECKSUM..field::TCP_CHECKSUM + 2);
                    // HC' = ~(~HC + ~m + m')
                    let mut sum = !checksum;
                    for i in 0..words {
                        sum = ones_add(sum, !old[i]);
                        sum = ones_add(sum, new[i]);
                    }
                    segment[field::TCP_CHECKSUM..field::TCP_CHECKSUM + 2]
                        .copy_from_slice(&(!sum).to_be_bytes());
                    return true;
                }
                at += len;
            }
        }
    }
    false
}

/// Writes an IPv6 header for `payload_len` bytes of `next` into `buf[..40]`.
fn emit_ipv6_header(
    buf: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: IpProtocol,
    payload_len: usize,
) {
    let mut ip = Ipv6Packet::new_unchecked(buf);
    ip.set_version(6);
    ip.set_traffic_class(0);
    ip.set_flow_label(0);
    // Callers keep payloads under the IPv6 minimum MTU.
    ip.set_payload_len(payload_len as u16);
    ip.set_next_header(next);
    ip.set_hop_limit(HOP_LIMIT);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
}

/// Writes an IPv4 header (no options, DF set, identification 0) for
/// `payload_len` bytes of `proto` into `buf[..20]`, with its checksum.
fn emit_ipv4_header(
    buf: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    payload_len: usize,
) {
    let mut ip = Ipv4Packet::new_unchecked(buf);
    ip.set_version(4);
    ip.set_header_len(IPV4_HEADER_LEN as u8);
    ip.set_dscp(0);
    ip.set_ecn(0);
    // Callers keep payloads under 576 bytes.
    ip.set_total_len((IPV4_HEADER_LEN + payload_len) as u16);
    ip.set_ident(0);
    ip.clear_flags();
    ip.set_dont_frag(true);
    ip.set_frag_offset(0);
    ip.set_hop_limit(HOP_LIMIT);
    ip.set_next_header(proto);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
}

/// The ones' complement checksum of `data` (RFC 1071).
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum = 0u16;
    for at in (0..data.len()).step_by(2) {
        sum = ones_add(sum, word_at(data, at));
    }
    !sum
}

/// A complete IP + TCP packet from `from` to `to` with only the RST flag,
/// sequence number `seq`, acknowledgement 0, window 0, hop limit 64 and a
/// correct checksum (RFC 9293 sec. 3.10.7.1: a RST answering a segment
/// with ACK carries that ACK as its sequence number and no ACK flag).
///
/// When both addresses are IPv4-mapped the packet is IPv4 (TTL 64, DF),
/// else IPv6 (hop limit 64).
///
/// Used to reset a local application's connection whose member died, so
/// programs fail fast instead of hanging until their own timeouts.
pub fn tcp_reset(from: SocketAddrV6, to: SocketAddrV6, seq: u32) -> Vec<u8> {
    let v4 = from.ip().to_ipv4_mapped().zip(to.ip().to_ipv4_mapped());
    let (ip_len, src, dst) = match v4 {
        Some((src, dst)) => (IPV4_HEADER_LEN, IpAddress::Ipv4(src), IpAddress::Ipv4(dst)),
        None => (
            IPV6_HEADER_LEN,
            IpAddress::Ipv6(*from.ip()),
            IpAddress::Ipv6(*to.ip()),
        ),
    };
    let mut buf = vec![0u8; ip_len + field::TCP_HEADER_LEN];
    match v4 {
        Some((s, d)) => emit_ipv4_header(&mut buf, s, d, IpProtocol::Tcp, field::TCP_HEADER_LEN),
        None => emit_ipv6_header(
            &mut buf,
            *from.ip(),
            *to.ip(),
            IpProtocol::Tcp,
            field::TCP_HEADER_LEN,
        ),
    }
    let mut tcp = TcpPacket::new_unchecked(&mut buf[ip_len..]);
    tcp.set_src_port(from.port());
    tcp.set_dst_port(to.port());
    tcp.set_seq_number(TcpSeqNumber(seq as i32));
    tcp.set_ack_number(TcpSeqNumber(0));
    tcp.set_header_len(field::TCP_HEADER_LEN as u8);
    tcp.clear_flags();
    tcp.set_rst(true);
    tcp.set_window_len(0);
    tcp.set_urgent_at(0);
    tcp.fill_checksum(&src, &dst);
    buf
}

/// An ICMPv6 Packet Too Big (type 2, code 0; RFC 4443 sec. 3.2) from `from`
/// to the source of `original`, reporting `mtu` and quoting as much of
/// `original` as fits in 1280 bytes, with a correct checksum.
///
/// Returns an empty `Vec` when no error may be sent: `original` is not an
/// IPv6 packet (see [`addresses`]), its source is unspecified or multicast,
/// or it is itself an ICMPv6 error message (RFC 4443 sec. 2.4 (e)). For an
/// IPv4 original see [`frag_needed`].
pub fn packet_too_big(original: &[u8], mtu: u32, from: Ipv6Addr) -> Vec<u8> {
    if is_ipv4(original) {
        return Vec::new();
    }
    let Ok((to, _)) = addresses(original) else {
        return Vec::new();
    };
    if to.is_unspecified() || to.is_multicast() {
        return Vec::new();
    }
    if let Ok(upper) = upper_layer(original)
        && upper.proto == next_header::ICMPV6
        && !upper.later_fragment
        && original
            .get(upper.offset)
            .is_some_and(|&kind| kind < ICMPV6_FIRST_INFORMATIONAL)
    {
        return Vec::new();
    }
    let quote_len = original
        .len()
        .min(IPV6_MIN_MTU - IPV6_HEADER_LEN - field::ICMP_PTB_LEN);
    let icmp_len = field::ICMP_PTB_LEN + quote_len;
    let mut buf = vec![0u8; IPV6_HEADER_LEN + icmp_len];
    emit_ipv6_header(&mut buf, from, to, IpProtocol::Icmpv6, icmp_len);
    let mut icmp = Icmpv6Packet::new_unchecked(&mut buf[IPV6_HEADER_LEN..]);
    icmp.set_msg_type(Icmpv6Message::PktTooBig);
    icmp.set_msg_code(0);
    icmp.set_pkt_too_big_mtu(mtu);
    icmp.payload_mut()[..quote_len].copy_from_slice(&original[..quote_len]);
    icmp.fill_checksum(&from, &to);
    buf
}

/// An ICMPv4 Destination Unreachable, "fragmentation needed and DF set"
/// (type 3, code 4; RFC 792, RFC 1191 sec. 4) from `from` to the source of
/// `original`, reporting the next-hop `mtu` and quoting as much of
/// `original` as fits in 576 bytes (RFC 1812 sec. 4.3.2.3), with correct
/// IPv4 header and ICMP checksums.
///
/// Returns an empty `Vec` when no such error may be sent (RFC 1122 sec.
/// 3.2.2, RFC 1191): `original` is not a well-formed IPv4 packet, it does
/// not have DF set (it may be fragmented instead), its source is
/// unspecified, broadcast, multicast or loopback, it is a later fragment,
/// or it is itself an ICMPv4 error message.
pub fn frag_needed(original: &[u8], mtu: u16, from: Ipv4Addr) -> Vec<u8> {
    if !is_ipv4(original) {
        return Vec::new();
    }
    let Ok(upper) = upper_layer_v4(original) else {
        return Vec::new();
    };
    let to = ipv4_at(original, field::IPV4_SRC);
    if to.is_unspecified() || to.is_broadcast() || to.is_multicast() || to.is_loopback() {
        return Vec::new();
    }
    if be16(original, field::IPV4_FRAG) & IPV4_DF == 0 || upper.later_fragment {
        return Vec::new();
    }
    if upper.proto == next_header::ICMPV4
        && original
            .get(upper.offset)
            .is_some_and(|kind| ICMPV4_ERRORS.contains(kind))
    {
        return Vec::new();
    }
    let quote_len = upper
        .end
        .min(IPV4_ICMP_ERROR_MAX - IPV4_HEADER_LEN - field::ICMP4_UNREACH_LEN);
    let icmp_len = field::ICMP4_UNREACH_LEN + quote_len;
    let mut buf = vec![0u8; IPV4_HEADER_LEN + icmp_len];
    emit_ipv4_header(&mut buf, from, to, IpProtocol::Icmp, icmp_len);
    let icmp = &mut buf[IPV4_HEADER_LEN..];
    icmp[0] = ICMPV4_DEST_UNREACHABLE;
    icmp[1] = ICMPV4_FRAG_NEEDED;
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[field::ICMP4_UNREACH_LEN..].copy_from_slice(&original[..quote_len]);
    let checksum = internet_checksum(icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use smoltcp::wire::{Icmpv6Repr, Ipv6Repr, TcpControl, TcpRepr};

    fn client() -> Ipv6Addr {
        "2001:db8:c::2".parse().unwrap()
    }

    fn hoa() -> Ipv6Addr {
        "2001:db8:a::1".parse().unwrap()
    }

    /// An IPv6 packet with the given next header and payload.
    fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; IPV6_HEADER_LEN];
        emit_ipv6_header(
            &mut p,
            client(),
            hoa(),
            IpProtocol::from(next),
            payload.len(),
        );
        p.extend_from_slice(payload);
        p
    }

    /// A TCP SYN from client:40000 to hoa:80 with the given options, with a
    /// correct checksum.
    fn tcp_syn(options: &[u8]) -> Vec<u8> {
        let seg = syn_segment(options, IpAddress::Ipv6(client()), IpAddress::Ipv6(hoa()));
        ipv6(next_header::TCP, &seg)
    }

    /// A TCP SYN segment 40000 -> 80 with `options`, its checksum over the
    /// pseudo-header of `src` and `dst`.
    fn syn_segment(options: &[u8], src: IpAddress, dst: IpAddress) -> Vec<u8> {
        let header_len = field::TCP_HEADER_LEN + options.len();
        let mut seg = vec![0u8; header_len];
        seg[field::TCP_OPTIONS..].copy_from_slice(options);
        let mut tcp = TcpPacket::new_unchecked(&mut seg[..]);
        tcp.set_src_port(40000);
        tcp.set_dst_port(80);
        tcp.set_seq_number(TcpSeqNumber(1000));
        tcp.set_header_len(header_len as u8);
        tcp.set_syn(true);
        tcp.set_window_len(65535);
        tcp.fill_checksum(&src, &dst);
        seg
    }

    fn tcp_checksum_ok(packet: &[u8]) -> bool {
        let ip = Ipv6Packet::new_checked(packet).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        tcp.verify_checksum(
            &IpAddress::Ipv6(ip.src_addr()),
            &IpAddress::Ipv6(ip.dst_addr()),
        )
    }

    #[test]
    fn addresses_fixture() {
        let p = ipv6(59, &[]);
        assert_eq!(addresses(&p), Ok((client(), hoa())));
        assert_eq!(
            addresses(&p[..39]),
            Err(WireError::Truncated("inner ipv6 header"))
        );
        let mut v5 = p.clone();
        v5[0] = 0x55;
        assert!(matches!(addresses(&v5), Err(WireError::InvalidValue(_))));
    }

    fn client4() -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 2)
    }

    fn hoa4() -> Ipv4Addr {
        Ipv4Addr::new(198, 19, 0, 1)
    }

    /// An IPv4 packet (DF set, valid header checksum) with the given
    /// protocol, flags/offset word, identification and payload.
    fn ipv4_frag(proto: u8, frag: u16, ident: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; IPV4_HEADER_LEN];
        emit_ipv4_header(
            &mut p,
            client4(),
            hoa4(),
            IpProtocol::from(proto),
            payload.len(),
        );
        p[4..6].copy_from_slice(&ident.to_be_bytes());
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
        p.extend_from_slice(payload);
        p
    }

    fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
        ipv4_frag(proto, IPV4_DF, 0, payload)
    }

    /// A TCP SYN from client4:40000 to hoa4:80 with the given options.
    fn tcp_syn4(options: &[u8]) -> Vec<u8> {
        let seg = syn_segment(options, IpAddress::Ipv4(client4()), IpAddress::Ipv4(hoa4()));
        ipv4(next_header::TCP, &seg)
    }

    fn tcp4_checksum_ok(packet: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(packet).unwrap();
        assert!(ip.verify_checksum());
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        tcp.verify_checksum(
            &IpAddress::Ipv4(ip.src_addr()),
            &IpAddress::Ipv4(ip.dst_addr()),
        )
    }

    #[test]
    fn ipv4_addresses_are_mapped() {
        let p = ipv4(59, &[]);
        assert!(is_ipv4(&p));
        assert_eq!(
            addresses(&p),
            Ok((client4().to_ipv6_mapped(), hoa4().to_ipv6_mapped()))
        );
        assert_eq!(
            addresses(&p[..19]),
            Err(WireError::Truncated("inner ipv4 header"))
        );
        assert_eq!(
            addresses(&[]),
            Err(WireError::Truncated("inner ipv6 header"))
        );
    }

    #[test]
    fn inspect_ipv4_tcp_udp_icmp() {
        let info = inspect(&tcp_syn4(&[2, 4, 0x05, 0xb4])).unwrap();
        assert_eq!(
            info.flow,
            FlowKey {
                src: client4().to_ipv6_mapped(),
                dst: hoa4().to_ipv6_mapped(),
                proto: 6,
                src_port: 40000,
                dst_port: 80,
            }
        );
        assert!(info.tcp.unwrap().flags.syn);
        assert_eq!(info.fragment, None);
        let udp = inspect(&ipv4(17, &[0x12, 0x34, 0, 53, 0, 8, 0, 0])).unwrap();
        assert_eq!(
            (udp.flow.proto, udp.flow.src_port, udp.flow.dst_port),
            (17, 0x1234, 53)
        );
        let echo = inspect(&ipv4(1, &[8, 0, 0, 0, 0x42, 0x42, 0, 1])).unwrap();
        assert_eq!((echo.flow.proto, echo.flow.src_port), (1, 0x4242));
        let reply = inspect(&ipv4(1, &[0, 0, 0, 0, 0x42, 0x42, 0, 1])).unwrap();
        assert_eq!(reply.flow.dst_port, 0x4242);
        let unreach = inspect(&ipv4(1, &[3, 1, 0, 0])).unwrap();
        assert_eq!(unreach.flow.src_port, 0);
        // Type 128 means nothing in ICMPv4; 8 nothing in ICMPv6.
        let v6_echo_in_v4 = inspect(&ipv4(58, &[128, 0, 0, 0, 0x42, 0x42, 0, 1])).unwrap();
        assert_eq!(v6_echo_in_v4.flow.src_port, 0);
    }

    #[test]
    fn inspect_ipv4_options_and_errors() {
        // IHL 6: 4 bytes of options before UDP.
        let mut p = ipv4(17, &[1, 1, 1, 0, 0x12, 0x34, 0, 53, 0, 8, 0, 0]);
        p[0] = 0x46;
        let info = inspect(&p).unwrap();
        assert_eq!((info.flow.src_port, info.flow.dst_port), (0x1234, 53));
        // IHL < 5.
        let mut bad = ipv4(17, &[0; 8]);
        bad[0] = 0x44;
        assert!(matches!(inspect(&bad), Err(WireError::InvalidValue(_))));
        // Total length past the buffer.
        let mut short = ipv4(17, &[0; 8]);
        short.truncate(24);
        assert_eq!(
            inspect(&short),
            Err(WireError::Truncated("inner ipv4 payload"))
        );
        // Total length shorter than the header.
        let mut tiny = ipv4(17, &[0; 8]);
        tiny[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert!(matches!(inspect(&tiny), Err(WireError::InvalidValue(_))));
        // Truncated TCP.
        assert_eq!(
            inspect(&ipv4(6, &[0; 10])),
            Err(WireError::Truncated("inner tcp header"))
        );
        // Trailing bytes past the total length are ignored.
        let mut padded = ipv4(17, &[0x12, 0x34, 0, 53, 0, 8, 0, 0]);
        padded.extend_from_slice(&[0xee; 6]);
        assert_eq!(inspect(&padded).unwrap().flow.dst_port, 53);
    }

    #[test]
    fn inspect_ipv4_fragments() {
        // First fragment: MF set, offset 0; ports read.
        let first = ipv4_frag(17, IPV4_MF, 0x0707, &[0x12, 0x34, 0, 53, 0x05, 0xdc, 0, 0]);
        let info = inspect(&first).unwrap();
        assert_eq!((info.flow.src_port, info.flow.dst_port), (0x1234, 53));
        let frag = info.fragment.unwrap();
        assert_eq!((frag.id, frag.offset, frag.more), (0x0707, 0, true));
        assert!(frag.is_first());
        // Later fragment: offset 185, last; ports 0, proto kept.
        let later = ipv4_frag(17, 185, 0x0707, &[0xaa; 16]);
        let info = inspect(&later).unwrap();
        assert_eq!(
            (info.flow.proto, info.flow.src_port, info.flow.dst_port),
            (17, 0, 0)
        );
        let frag = info.fragment.unwrap();
        assert_eq!((frag.id, frag.offset, frag.more), (0x0707, 185, false));
        assert!(frag.is_later());
        // DF alone is no fragment.
        assert_eq!(inspect(&ipv4(17, &[0; 8])).unwrap().fragment, None);
    }

    #[test]
    fn clamp_mss_ipv4() {
        let mut p = tcp_syn4(&[2, 4, 0x05, 0xb4, 1, 1, 4, 2]);
        assert!(tcp4_checksum_ok(&p));
        assert_eq!(mss_for_mtu(&p, 1420), 1380);
        assert!(clamp_tcp_mss(&mut p, 1380));
        assert_eq!(&p[40..44], &[2, 4, 0x05, 0x64]);
        assert!(tcp4_checksum_ok(&p));
        assert!(!clamp_tcp_mss(&mut p, 1380));
        assert_eq!(mss_for_mtu(&tcp_syn(&[]), 1420), 1360);
        // A later fragment is never clamped.
        let mut later = ipv4_frag(6, 3, 1, &[2, 4, 0x05, 0xb4]);
        assert!(!clamp_tcp_mss(&mut later, 536));
    }

    #[test]
    fn tcp_reset_ipv4() {
        let from = SocketAddrV6::new(hoa4().to_ipv6_mapped(), 80, 0, 0);
        let to = SocketAddrV6::new(client4().to_ipv6_mapped(), 40000, 0, 0);
        let p = tcp_reset(from, to, 0xdead_beef);
        assert_eq!(p.len(), 40);
        assert!(tcp4_checksum_ok(&p));
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (hoa4(), client4()));
        assert_eq!(ip.hop_limit(), 64);
        let info = inspect(&p).unwrap();
        assert!(info.tcp.unwrap().flags.rst);
        assert_eq!(info.tcp.unwrap().seq, 0xdead_beef);
        assert_eq!(info.flow.reversed().src, client4().to_ipv6_mapped());
        // One mapped and one not: IPv6.
        let mixed = SocketAddrV6::new(client(), 40000, 0, 0);
        assert_eq!(tcp_reset(from, mixed, 1).len(), 60);
    }

    #[test]
    fn frag_needed_fixture() {
        let big = ipv4(17, &vec![0x5a; 1452]);
        let from = Ipv4Addr::new(198, 18, 0, 254);
        let icmp = frag_needed(&big, 1400, from);
        assert_eq!(icmp.len(), 576);
        let ip = Ipv4Packet::new_checked(&icmp[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr()), (from, client4()));
        assert_eq!(u8::from(ip.next_header()), 1);
        let msg = smoltcp::wire::Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(msg.verify_checksum());
        assert_eq!(msg.msg_type(), smoltcp::wire::Icmpv4Message::DstUnreachable);
        assert_eq!(msg.msg_code(), 4);
        assert_eq!(&icmp[26..28], &1400u16.to_be_bytes());
        assert_eq!(&icmp[28..], &big[..548]);
        // A small original is quoted whole, trailing bytes not.
        let mut small = ipv4(17, &[0, 1, 0, 2, 0, 8, 0, 0]);
        let whole = small.len();
        small.extend_from_slice(&[0xee; 5]);
        assert_eq!(frag_needed(&small, 1280, from).len(), 28 + whole);
        // The IPv6 builder refuses IPv4 and the IPv4 one IPv6.
        assert!(packet_too_big(&big, 1280, hoa()).is_empty());
        assert!(frag_needed(&ipv6(17, &[0; 8]), 1280, from).is_empty());
    }

    #[test]
    fn frag_needed_refusals() {
        let from = Ipv4Addr::new(198, 18, 0, 254);
        // DF clear: fragment instead.
        assert!(frag_needed(&ipv4_frag(17, 0, 0, &[0; 8]), 1280, from).is_empty());
        // A later fragment.
        assert!(frag_needed(&ipv4_frag(17, IPV4_DF | 10, 0, &[0; 8]), 1280, from).is_empty());
        // An error about an error.
        let err = frag_needed(&ipv4(17, &[0; 8]), 1280, from);
        assert!(!err.is_empty());
        assert!(frag_needed(&err, 1280, from).is_empty());
        // An echo request is fine.
        assert!(!frag_needed(&ipv4(1, &[8, 0, 0, 0, 0, 1, 0, 1]), 1280, from).is_empty());
        // Bad sources.
        for src in [
            [0, 0, 0, 0],
            [255, 255, 255, 255],
            [224, 0, 0, 1],
            [127, 0, 0, 1],
        ] {
            let mut p = ipv4(17, &[0; 8]);
            p[12..16].copy_from_slice(&src);
            assert!(frag_needed(&p, 1280, from).is_empty());
        }
        // Truncated.
        assert!(frag_needed(&[0x45; 19], 1280, from).is_empty());
    }

    #[test]
    fn inspect_tcp() {
        let p = tcp_syn(&[2, 4, 0x05, 0xb4]);
        let info = inspect(&p).unwrap();
        assert_eq!(
            info.flow,
            FlowKey {
                src: client(),
                dst: hoa(),
                proto: 6,
                src_port: 40000,
                dst_port: 80,
            }
        );
        assert_eq!(
            info.tcp,
            Some(TcpInfo {
                flags: TcpFlags {
                    syn: true,
                    ..TcpFlags::default()
                },
                seq: 1000,
                ack: 0,
                payload_len: 0,
            })
        );
        assert_eq!(info.flow.reversed().reversed(), info.flow);
        assert_eq!(info.flow.reversed().src_port, 80);
    }

    #[test]
    fn inspect_udp_behind_extension_headers() {
        // Hop-by-hop (8 bytes) -> destination options (16 bytes) -> UDP.
        let mut payload = vec![60, 0, 1, 4, 0, 0, 0, 0];
        payload.extend_from_slice(&[17, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&[0x12, 0x34, 0, 53, 0, 8, 0, 0]);
        let info = inspect(&ipv6(next_header::HOP_BY_HOP, &payload)).unwrap();
        assert_eq!(
            (info.flow.proto, info.flow.src_port, info.flow.dst_port),
            (17, 0x1234, 53)
        );
        assert_eq!(info.tcp, None);
    }

    #[test]
    fn inspect_fragments() {
        // First fragment of a UDP datagram whose UDP length covers more
        // than this fragment: ports are still read.
        let mut first = vec![17, 0, 0, 1, 0, 0, 0, 7];
        first.extend_from_slice(&[0x12, 0x34, 0, 53, 0x05, 0xdc, 0, 0]);
        let info = inspect(&ipv6(next_header::FRAGMENT, &first)).unwrap();
        assert_eq!((info.flow.src_port, info.flow.dst_port), (0x1234, 53));
        let frag = info.fragment.unwrap();
        assert_eq!((frag.id, frag.offset, frag.more), (7, 0, true));
        assert!(frag.is_first() && !frag.is_later());
        // A later fragment (offset 185 * 8): ports 0, proto from the
        // fragment header.
        let mut later = vec![17, 0, 0x05, 0xc8, 0, 0, 0, 7];
        later.extend_from_slice(&[0xaa; 16]);
        let info = inspect(&ipv6(next_header::FRAGMENT, &later)).unwrap();
        assert_eq!(
            (info.flow.proto, info.flow.src_port, info.flow.dst_port),
            (17, 0, 0)
        );
        let frag = info.fragment.unwrap();
        assert_eq!((frag.id, frag.offset, frag.more), (7, 185, false));
        assert!(frag.is_later() && !frag.is_first());
        // Not a fragment.
        let udp = ipv6(next_header::UDP, &[0x12, 0x34, 0, 53, 0, 8, 0, 0]);
        assert_eq!(inspect(&udp).unwrap().fragment, None);
    }

    #[test]
    fn inspect_icmp_echo_and_others() {
        let echo = ipv6(next_header::ICMPV6, &[128, 0, 0, 0, 0x42, 0x42, 0, 1]);
        let info = inspect(&echo).unwrap();
        assert_eq!(
            (info.flow.proto, info.flow.src_port, info.flow.dst_port),
            (58, 0x4242, 0x4242)
        );
        let reply = ipv6(next_header::ICMPV6, &[129, 0, 0, 0, 0x42, 0x42, 0, 1]);
        assert_eq!(inspect(&reply).unwrap().flow.src_port, 0x4242);
        let ns = ipv6(next_header::ICMPV6, &[135, 0, 0, 0]);
        assert_eq!(inspect(&ns).unwrap().flow.src_port, 0);
        let none = ipv6(59, &[1, 2, 3]);
        assert_eq!(inspect(&none).unwrap().flow.proto, 59);
    }

    #[test]
    fn inspect_errors() {
        // Payload length larger than the buffer.
        let mut p = ipv6(59, &[0; 8]);
        p.truncate(44);
        assert!(inspect(&p).is_err());
        // Truncated TCP header.
        assert_eq!(
            inspect(&ipv6(next_header::TCP, &[0; 10])),
            Err(WireError::Truncated("inner tcp header"))
        );
        // Nine destination options headers.
        let mut chain = Vec::new();
        for _ in 0..9 {
            chain.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        }
        assert!(matches!(
            inspect(&ipv6(next_header::DEST_OPTS, &chain)),
            Err(WireError::InvalidValue(_))
        ));
        // Eight are fine.
        let eight = &chain[..8 * 8];
        let mut eight = eight.to_vec();
        eight[7 * 8] = 59;
        assert!(inspect(&ipv6(next_header::DEST_OPTS, &eight)).is_ok());
    }

    #[test]
    fn clamp_mss_fixture() {
        let mut p = tcp_syn(&[2, 4, 0x05, 0xb4, 1, 1, 4, 2]);
        assert!(tcp_checksum_ok(&p));
        assert!(clamp_tcp_mss(&mut p, 1388));
        assert_eq!(&p[60..64], &[2, 4, 0x05, 0x6c]);
        assert!(tcp_checksum_ok(&p));
        // Already small enough.
        assert!(!clamp_tcp_mss(&mut p, 1400));
        assert!(!clamp_tcp_mss(&mut p, 1388));
    }

    #[test]
    fn clamp_mss_at_odd_offset() {
        // NOP, MSS, NOP x3: the MSS value sits at an odd offset.
        let mut p = tcp_syn(&[1, 2, 4, 0x23, 0x28, 1, 1, 1]);
        assert!(clamp_tcp_mss(&mut p, 1220));
        assert_eq!(&p[61..65], &[2, 4, 0x04, 0xc4]);
        assert!(tcp_checksum_ok(&p));
    }

    #[test]
    fn clamp_mss_leaves_non_syn_alone() {
        let mut p = tcp_syn(&[2, 4, 0x05, 0xb4]);
        // Clear SYN, set ACK, fix the checksum.
        let ip_end = p.len();
        {
            let mut tcp = TcpPacket::new_unchecked(&mut p[IPV6_HEADER_LEN..ip_end]);
            tcp.set_syn(false);
            tcp.set_ack(true);
            tcp.fill_checksum(&IpAddress::Ipv6(client()), &IpAddress::Ipv6(hoa()));
        }
        let before = p.clone();
        assert!(!clamp_tcp_mss(&mut p, 1000));
        assert_eq!(p, before);
        // Malformed option length.
        let mut bad = tcp_syn(&[2, 9, 0x05, 0xb4]);
        assert!(!clamp_tcp_mss(&mut bad, 1000));
    }

    #[test]
    fn tcp_reset_fixture() {
        let from = SocketAddrV6::new(hoa(), 80, 0, 0);
        let to = SocketAddrV6::new(client(), 40000, 0, 0);
        let p = tcp_reset(from, to, 0xdead_beef);
        assert_eq!(p.len(), 60);
        assert!(tcp_checksum_ok(&p));
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        let ip_repr = Ipv6Repr::parse(&ip).unwrap();
        assert_eq!(ip_repr.hop_limit, 64);
        assert_eq!(ip_repr.src_addr, hoa());
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        let repr = TcpRepr::parse(
            &tcp,
            &IpAddress::Ipv6(hoa()),
            &IpAddress::Ipv6(client()),
            &smoltcp::phy::ChecksumCapabilities::default(),
        )
        .unwrap();
        assert_eq!(repr.control, TcpControl::Rst);
        assert_eq!(repr.seq_number, TcpSeqNumber(0xdead_beef_u32 as i32));
        assert_eq!(repr.ack_number, None);
        assert_eq!(repr.window_len, 0);
        assert_eq!((repr.src_port, repr.dst_port), (80, 40000));
        let info = inspect(&p).unwrap();
        assert!(info.tcp.unwrap().flags.rst);
    }

    #[test]
    fn packet_too_big_fixture() {
        let big = ipv6(next_header::UDP, &vec![0x5a; 1452]);
        let from: Ipv6Addr = "2001:db8:a::fe".parse().unwrap();
        let ptb = packet_too_big(&big, 1448, from);
        assert_eq!(ptb.len(), 1280);
        let ip = Ipv6Packet::new_checked(&ptb[..]).unwrap();
        assert_eq!(ip.src_addr(), from);
        assert_eq!(ip.dst_addr(), client());
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&from, &client()));
        let repr = Icmpv6Repr::parse(
            &from,
            &client(),
            &icmp,
            &smoltcp::phy::ChecksumCapabilities::default(),
        )
        .unwrap();
        match repr {
            Icmpv6Repr::PktTooBig { mtu, .. } => assert_eq!(mtu, 1448),
            other => panic!("not a packet too big: {other:?}"),
        }
        assert_eq!(&ptb[48..], &big[..1232]);

        // A small original is quoted whole.
        let small = ipv6(next_header::UDP, &[0, 1, 0, 2, 0, 8, 0, 0]);
        assert_eq!(packet_too_big(&small, 1280, from).len(), 48 + small.len());
    }

    #[test]
    fn packet_too_big_refusals() {
        let from: Ipv6Addr = "2001:db8:a::fe".parse().unwrap();
        assert!(packet_too_big(&[0x60; 20], 1280, from).is_empty());
        let ptb = packet_too_big(&ipv6(17, &[0; 8]), 1280, from);
        // Never an error about an error.
        assert!(packet_too_big(&ptb, 1280, from).is_empty());
        let mut multicast_src = ipv6(17, &[0; 8]);
        multicast_src[8] = 0xff;
        assert!(packet_too_big(&multicast_src, 1280, from).is_empty());
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = addresses(&b);
            let _ = inspect(&b);
            let mut m = b.clone();
            let _ = clamp_tcp_mss(&mut m, 536);
            let _ = packet_too_big(&b, 1280, Ipv6Addr::LOCALHOST);
            let _ = frag_needed(&b, 1280, Ipv4Addr::LOCALHOST);
            let _ = mss_for_mtu(&b, 1280);
        }

        #[test]
        fn plausible_ipv4_never_panics(
            proto in prop_oneof![Just(1u8), Just(6), Just(17), Just(58)],
            frag in any::<u16>(),
            ihl in 0u8..16,
            payload in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut p = ipv4_frag(proto, frag, 1, &payload);
            p[0] = 0x40 | ihl;
            let _ = inspect(&p);
            let _ = clamp_tcp_mss(&mut p, 536);
            let icmp = frag_needed(&p, 1280, Ipv4Addr::new(198, 18, 0, 1));
            if !icmp.is_empty() {
                let ip = Ipv4Packet::new_checked(&icmp[..]).unwrap();
                prop_assert!(ip.verify_checksum());
                let msg = smoltcp::wire::Icmpv4Packet::new_checked(ip.payload()).unwrap();
                prop_assert!(msg.verify_checksum());
                prop_assert!(icmp.len() <= 576);
            }
        }

        #[test]
        fn clamp_keeps_ipv4_checksum_valid(mss in any::<u16>(), max in any::<u16>(), nops in 0usize..3) {
            let mut opts = vec![1u8; nops];
            opts.extend_from_slice(&[2, 4]);
            opts.extend_from_slice(&mss.to_be_bytes());
            while opts.len() % 4 != 0 {
                opts.push(1);
            }
            let mut p = tcp_syn4(&opts);
            prop_assert_eq!(clamp_tcp_mss(&mut p, max), mss > max);
            prop_assert!(tcp4_checksum_ok(&p));
        }

        #[test]
        fn ipv4_reset_is_always_valid(a in any::<u32>(), b in any::<u32>(), pa in any::<u16>(), pb in any::<u16>(), seq in any::<u32>()) {
            let from = SocketAddrV6::new(Ipv4Addr::from(a).to_ipv6_mapped(), pa, 0, 0);
            let to = SocketAddrV6::new(Ipv4Addr::from(b).to_ipv6_mapped(), pb, 0, 0);
            let p = tcp_reset(from, to, seq);
            prop_assert!(tcp4_checksum_ok(&p));
            let info = inspect(&p).unwrap();
            prop_assert_eq!(info.flow.src, *from.ip());
            prop_assert_eq!(info.tcp.unwrap().seq, seq);
        }

        #[test]
        fn plausible_packets_never_panic(
            next in prop_oneof![Just(0u8), Just(6), Just(17), Just(43), Just(44), Just(58), Just(60)],
            payload in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut p = ipv6(next, &payload);
            let _ = inspect(&p);
            let _ = clamp_tcp_mss(&mut p, 536);
        }

        #[test]
        fn clamp_keeps_checksum_valid(
            mss in any::<u16>(),
            max in any::<u16>(),
            nops in 0usize..3,
        ) {
            let mut opts = vec![1u8; nops];
            opts.extend_from_slice(&[2, 4]);
            opts.extend_from_slice(&mss.to_be_bytes());
            while opts.len() % 4 != 0 {
                opts.push(1);
            }
            let mut p = tcp_syn(&opts);
            let changed = clamp_tcp_mss(&mut p, max);
            prop_assert_eq!(changed, mss > max);
            prop_assert!(tcp_checksum_ok(&p));
            let at = IPV6_HEADER_LEN + field::TCP_OPTIONS + nops + 2;
            prop_assert_eq!(be16(&p, at..at + 2), mss.min(max));
        }

        #[test]
        fn reset_is_always_valid(
            a in any::<u128>(), b in any::<u128>(),
            pa in any::<u16>(), pb in any::<u16>(), seq in any::<u32>(),
        ) {
            let from = SocketAddrV6::new(Ipv6Addr::from(a), pa, 0, 0);
            let to = SocketAddrV6::new(Ipv6Addr::from(b), pb, 0, 0);
            let p = tcp_reset(from, to, seq);
            prop_assert!(tcp_checksum_ok(&p));
            let info = inspect(&p).unwrap();
            prop_assert_eq!(info.tcp.unwrap().seq, seq);
            prop_assert_eq!(info.flow.src_port, pa);
        }
    }
}
