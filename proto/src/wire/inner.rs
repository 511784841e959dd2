//! Views on the inner IPv6 packets the data plane carries, and the few
//! packets the data plane writes itself (TCP RST, ICMPv6 Packet Too Big).
//!
//! Parsing goes through `smoltcp::wire` where smoltcp has the view; the
//! extension header walk is done here because it must tolerate what
//! smoltcp's reprs refuse (first fragments whose upper-layer length field
//! covers the whole datagram).

use std::net::{Ipv6Addr, SocketAddrV6};

use smoltcp::wire::{
    Icmpv6Message, Icmpv6Packet, IpAddress, IpProtocol, Ipv6Packet, TcpPacket, TcpSeqNumber,
};

use super::WireError;

/// Length of the fixed IPv6 header (RFC 8200 sec. 3).
pub const IPV6_HEADER_LEN: usize = 40;
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

/// The 5-tuple a packet belongs to. For ICMPv6 echo request/reply the echo
/// identifier is both ports; for non-first fragments and other protocols
/// the ports are 0.
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

/// The fragment header of a fragment (RFC 8200 sec. 4.5).
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

/// Source and destination of an inner packet, checking only that it is
/// IPv6 (version 6) and at least 40 bytes long: the check every receiver
/// does first (docs/PROTOCOL.md section 1).
pub fn addresses(packet: &[u8]) -> Result<(Ipv6Addr, Ipv6Addr), WireError> {
    if packet.len() < IPV6_HEADER_LEN {
        return Err(WireError::Truncated("inner ipv6 header"));
    }
    if packet[0] >> 4 != 6 {
        return Err(WireError::InvalidValue("inner ip version (not IPv6)"));
    }
    Ok((
        ipv6_at(packet, field::IPV6_SRC),
        ipv6_at(packet, field::IPV6_DST),
    ))
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
}

/// Walks the extension headers (RFC 8200 sec. 4): hop-by-hop (0), routing
/// (43), fragment (44), destination options (60), at most
/// [`MAX_EXTENSION_HEADERS`].
fn upper_layer(packet: &[u8]) -> Result<UpperLayer, WireError> {
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

/// The flow and TCP details of an inner IPv6 packet.
///
/// Checks version 6 and that the buffer holds the whole payload the header
/// announces (bytes after it are ignored); walks up to 8 extension headers
/// (hop-by-hop, routing, fragment, destination options). Ports: TCP and UDP
/// ports; ICMPv6 echo request/reply: the identifier as both ports (so a
/// reply's key is the request's, reversed); non-first fragments and all
/// other protocols: 0. Errors on truncated headers, so a packet that parses
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
        next_header::ICMPV6 => {
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
/// the packet changed. Anything else (not IPv6, not TCP, no SYN, no MSS
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

/// A complete IPv6 + TCP packet from `from` to `to` with only the RST flag,
/// sequence number `seq`, acknowledgement 0, window 0, hop limit 64 and a
/// correct checksum (RFC 9293 sec. 3.10.7.1: a RST answering a segment
/// with ACK carries that ACK as its sequence number and no ACK flag).
///
/// Used to reset a local application's connection whose member died, so
/// programs fail fast instead of hanging until their own timeouts.
pub fn tcp_reset(from: SocketAddrV6, to: SocketAddrV6, seq: u32) -> Vec<u8> {
    let mut buf = vec![0u8; IPV6_HEADER_LEN + field::TCP_HEADER_LEN];
    emit_ipv6_header(
        &mut buf,
        *from.ip(),
        *to.ip(),
        IpProtocol::Tcp,
        field::TCP_HEADER_LEN,
    );
    let mut tcp = TcpPacket::new_unchecked(&mut buf[IPV6_HEADER_LEN..]);
    tcp.set_src_port(from.port());
    tcp.set_dst_port(to.port());
    tcp.set_seq_number(TcpSeqNumber(seq as i32));
    tcp.set_ack_number(TcpSeqNumber(0));
    tcp.set_header_len(field::TCP_HEADER_LEN as u8);
    tcp.clear_flags();
    tcp.set_rst(true);
    tcp.set_window_len(0);
    tcp.set_urgent_at(0);
    tcp.fill_checksum(&IpAddress::Ipv6(*from.ip()), &IpAddress::Ipv6(*to.ip()));
    buf
}

/// An ICMPv6 Packet Too Big (type 2, code 0; RFC 4443 sec. 3.2) from `from`
/// to the source of `original`, reporting `mtu` and quoting as much of
/// `original` as fits in 1280 bytes, with a correct checksum.
///
/// Returns an empty `Vec` when no error may be sent: `original` is not an
/// IPv6 packet (see [`addresses`]), its source is unspecified or multicast,
/// or it is itself an ICMPv6 error message (RFC 4443 sec. 2.4 (e)).
pub fn packet_too_big(original: &[u8], mtu: u32, from: Ipv6Addr) -> Vec<u8> {
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
        tcp.fill_checksum(&IpAddress::Ipv6(client()), &IpAddress::Ipv6(hoa()));
        ipv6(next_header::TCP, &seg)
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
        let mut v4 = p.clone();
        v4[0] = 0x45;
        assert!(matches!(addresses(&v4), Err(WireError::InvalidValue(_))));
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
