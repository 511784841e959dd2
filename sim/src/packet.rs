//! The inner packets the simulated applications send and read, built and
//! parsed with `smoltcp::wire` (checksums included).

use std::net::{Ipv6Addr, SocketAddrV6};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv6ExtHeader, Ipv6ExtHeaderRepr, Ipv6FragmentHeader, Ipv6FragmentRepr,
    Ipv6Packet, Ipv6Repr, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket,
};

pub use smoltcp::wire::TcpControl;

/// Hop limit of every packet the applications send.
const HOP_LIMIT: u8 = 64;
/// The window every segment advertises (the applications never fill it).
const WINDOW: u16 = 65535;
/// Length of an IPv6 Fragment header.
const FRAGMENT_HEADER_LEN: usize = 8;
/// The destination port of [`udp_fragments`].
pub const FRAGMENTED_DST_PORT: u16 = 8080;

/// An IPv6 packet from `src` to `dst` whose `payload_len` bytes `fill` writes.
fn ipv6_packet(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: IpProtocol,
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let repr = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header,
        payload_len,
        hop_limit: HOP_LIMIT,
    };
    let mut p = vec![0u8; repr.buffer_len() + payload_len];
    let mut ip = Ipv6Packet::new_unchecked(&mut p[..]);
    repr.emit(&mut ip);
    fill(ip.payload_mut());
    p
}

/// Build an IPv6 + TCP segment with a correct checksum. `ack` sets the ACK
/// flag; `control` is the one other flag (SYN, FIN, RST or PSH).
pub fn tcp_segment(
    src: SocketAddrV6,
    dst: SocketAddrV6,
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    payload: &[u8],
) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: WINDOW,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let (src_ip, dst_ip) = (*src.ip(), *dst.ip());
    ipv6_packet(src_ip, dst_ip, IpProtocol::Tcp, repr.buffer_len(), |buf| {
        repr.emit(
            &mut TcpPacket::new_unchecked(buf),
            &IpAddress::Ipv6(src_ip),
            &IpAddress::Ipv6(dst_ip),
            &ChecksumCapabilities::default(),
        );
    })
}

/// What the applications read of a TCP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub src: SocketAddrV6,
    pub dst: SocketAddrV6,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub seq: u32,
    pub payload: Vec<u8>,
}

/// The TCP segment in an IPv6 packet, or None for anything else (a
/// fragment, UDP, a truncated packet). Checksums are not verified: the
/// engines rewrite what they forward and the applications trust them.
pub(crate) fn parse_segment(p: &[u8]) -> Option<Segment> {
    let ip = Ipv6Packet::new_checked(p).ok()?;
    if ip.version() != 6 || ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    Some(Segment {
        src: SocketAddrV6::new(ip.src_addr(), tcp.src_port(), 0, 0),
        dst: SocketAddrV6::new(ip.dst_addr(), tcp.dst_port(), 0, 0),
        syn: tcp.syn(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        seq: tcp.seq_number().0 as u32,
        payload: tcp.payload().to_vec(),
    })
}

/// The two fragments of one 1508-byte UDP datagram from `src:src_port` to
/// `dst:8080`, identification `ident`. The first (offset 0) holds the UDP
/// header, whose length covers the whole datagram as in a real first
/// fragment (checksum left 0), and 1000 bytes of 0xab; the last (offset
/// 1008) 500 bytes of 0xcd.
pub fn udp_fragments(src: Ipv6Addr, dst: Ipv6Addr, src_port: u16, ident: u32) -> [Vec<u8>; 2] {
    const FIRST_DATA: usize = 1000;
    const LAST_DATA: usize = 500;
    const UDP_HEADER: usize = 8;
    let fragment = |offset: usize, more_frags: bool, len: usize, fill: &dyn Fn(&mut [u8])| {
        ipv6_packet(
            src,
            dst,
            IpProtocol::Ipv6Frag,
            FRAGMENT_HEADER_LEN + len,
            |buf| {
                let (header, data) = buf.split_at_mut(FRAGMENT_HEADER_LEN);
                let mut ext = Ipv6ExtHeader::new_unchecked(&mut header[..]);
                Ipv6ExtHeaderRepr {
                    next_header: IpProtocol::Udp,
                    length: 0,
                    data: &[],
                }
                .emit(&mut ext);
                Ipv6FragmentRepr {
                    frag_offset: (offset / 8) as u16,
                    more_frags,
                    ident,
                }
                .emit(&mut Ipv6FragmentHeader::new_unchecked(ext.payload_mut()));
                fill(data);
            },
        )
    };
    let first = fragment(0, true, UDP_HEADER + FIRST_DATA, &|data| {
        let (header, rest) = data.split_at_mut(UDP_HEADER);
        let mut udp = UdpPacket::new_unchecked(header);
        udp.set_src_port(src_port);
        udp.set_dst_port(FRAGMENTED_DST_PORT);
        udp.set_len((UDP_HEADER + FIRST_DATA + LAST_DATA) as u16);
        udp.set_checksum(0);
        rest.fill(0xab);
    });
    let last = fragment(UDP_HEADER + FIRST_DATA, false, LAST_DATA, &|data| {
        data.fill(0xcd)
    });
    [first, last]
}

#[cfg(test)]
mod tests {
    use super::*;
    use homeaddr_proto::wire::inner;

    fn client() -> SocketAddrV6 {
        SocketAddrV6::new("2001:db8::1".parse().unwrap(), 10000, 0, 0)
    }

    fn service() -> SocketAddrV6 {
        SocketAddrV6::new("2001:db8:ffff::1".parse().unwrap(), 80, 0, 0)
    }

    fn hex(p: &[u8]) -> String {
        p.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Fixtures from the simulator's earlier hand-written builder: smoltcp
    /// emits the same bytes, checksums included.
    #[test]
    fn tcp_segment_fixtures() {
        let syn = tcp_segment(client(), service(), TcpControl::Syn, 0, None, &[]);
        assert_eq!(
            hex(&syn),
            "600000000014064020010db800000000000000000000000120010db8ffff00000000000000000001\
             2710005000000000000000005002ffff2d0f0000"
        );
        let request = tcp_segment(
            client(),
            service(),
            TcpControl::Psh,
            7,
            Some(3),
            &7u32.to_be_bytes(),
        );
        assert_eq!(
            hex(&request),
            "600000000018064020010db800000000000000000000000120010db8ffff00000000000000000001\
             2710005000000007000000035018ffff2ce4000000000007"
        );
        let rst = tcp_segment(service(), client(), TcpControl::Rst, 0, None, &[]);
        assert_eq!(
            hex(&rst),
            "600000000014064020010db8ffff0000000000000000000120010db8000000000000000000000001\
             0050271000000000000000005004ffff2d0d0000"
        );
        // Odd payload length: the checksum pads the last byte.
        let answer = tcp_segment(
            service(),
            client(),
            TcpControl::Psh,
            7,
            Some(0),
            &[0, 0, 0, 7, 0, 1, 9],
        );
        assert_eq!(
            hex(&answer),
            "60000000001b064020010db8ffff0000000000000000000120010db8000000000000000000000001\
             0050271000000007000000005018ffff23e3000000000007000109"
        );
    }

    #[test]
    fn tcp_segment_round_trips_through_the_parsers() {
        let p = tcp_segment(client(), service(), TcpControl::Syn, 7, None, b"hi");
        let info = inner::inspect(&p).unwrap();
        assert_eq!(info.flow.src_port, 10000);
        assert!(info.tcp.unwrap().flags.syn);
        let s = parse_segment(&p).unwrap();
        assert_eq!(
            (s.src, s.dst, s.seq, s.syn, s.rst, s.payload.as_slice()),
            (client(), service(), 7, true, false, &b"hi"[..])
        );
        assert_eq!(parse_segment(&p[..59]), None, "truncated");
    }

    #[test]
    fn udp_fragments_fixture() {
        let [first, last] = udp_fragments(*client().ip(), *service().ip(), 5000, 3);
        assert_eq!((first.len(), last.len()), (40 + 8 + 1008, 40 + 8 + 500));
        // IPv6 header: payload 1016 bytes, next header Fragment (44), hop limit 64.
        assert_eq!(hex(&first[..8]), "6000000003f82c40");
        // Fragment header: next UDP (17), offset 0, M set, ident 3; UDP
        // header: 5000 -> 8080, length 1508, checksum 0.
        assert_eq!(hex(&first[40..56]), "110000010000000313881f9005e40000");
        assert!(first[56..].iter().all(|&b| b == 0xab));
        // Last: offset 1008 (126 units of 8), M clear, same ident.
        assert_eq!(hex(&last[40..48]), "110003f000000003");
        assert!(last[48..].iter().all(|&b| b == 0xcd));
        assert_eq!(parse_segment(&first), None, "a fragment is not a segment");
        assert_eq!(
            inner::addresses(&first),
            Ok((*client().ip(), *service().ip()))
        );
    }
}
