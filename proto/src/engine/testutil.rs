//! Frames for the engines' unit tests, built with the `wire` emitters and
//! signed with the engines' own `crypto` calls: bytes in, bytes out, no
//! simulator.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, TcpSeqNumber};

use super::ap::AUTH_SUBTYPE_MN_HA;
use super::{DataAction, Engine, Transmit, TunPacket, control_frame, sign_registration};
use crate::wire::inner::{IPV4_HEADER_LEN, IPV6_HEADER_LEN};
use crate::wire::{
    FRAME_HEADER_LEN, MemberId, MobilityMessage, MobilityOption, TAG_LEN, TunnelHeader,
};

/// The home address of every test.
pub const HOA: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
/// The IPv4 home address of the tests that have one.
pub const HOA4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 19, 0, 1);
/// The registration key (SPI 1).
pub const KEY: &[u8] = b"0123456789abcdef";
/// Its SPI.
pub const SPI: u32 = 1;

/// An endpoint from text.
pub fn ep(s: &str) -> SocketAddr {
    s.parse().expect("test endpoint")
}

/// The virtual clock's origin.
pub fn t0() -> Instant {
    Instant::now()
}

/// `t` plus `ms` milliseconds.
pub fn at(t: Instant, ms: u64) -> Instant {
    t + Duration::from_millis(ms)
}

/// TCP flags of a test segment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
}

/// A SYN.
pub const SYN: Flags = Flags {
    syn: true,
    ack: false,
    fin: false,
};
/// A plain ACK.
pub const ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: false,
};

/// An IPv6 + TCP segment without data, with a correct checksum and an MSS
/// option of 1460 on a SYN; IPv4 + TCP when both addresses are
/// IPv4-mapped.
pub fn tcp(src: SocketAddrV6, dst: SocketAddrV6, flags: Flags, seq: u32, ack: u32) -> Vec<u8> {
    let opts: &[u8] = if flags.syn { &[2, 4, 0x05, 0xb4] } else { &[] };
    let tcp_len = 20 + opts.len();
    let v4 = src.ip().to_ipv4_mapped().zip(dst.ip().to_ipv4_mapped());
    let ip_len = if v4.is_some() {
        IPV4_HEADER_LEN
    } else {
        IPV6_HEADER_LEN
    };
    let mut buf = vec![0u8; ip_len + tcp_len];
    let (src_ip, dst_ip) = match v4 {
        Some((s, d)) => {
            let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
            ip.set_version(4);
            ip.set_header_len(20);
            ip.set_total_len((ip_len + tcp_len) as u16);
            ip.set_dont_frag(true);
            ip.set_hop_limit(64);
            ip.set_next_header(IpProtocol::Tcp);
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
            ip.fill_checksum();
            (IpAddress::Ipv4(s), IpAddress::Ipv4(d))
        }
        None => {
            let mut ip = Ipv6Packet::new_unchecked(&mut buf[..]);
            ip.set_version(6);
            ip.set_payload_len(tcp_len as u16);
            ip.set_next_header(IpProtocol::Tcp);
            ip.set_hop_limit(64);
            ip.set_src_addr(*src.ip());
            ip.set_dst_addr(*dst.ip());
            (IpAddress::Ipv6(*src.ip()), IpAddress::Ipv6(*dst.ip()))
        }
    };
    let mut t = TcpPacket::new_unchecked(&mut buf[ip_len..]);
    t.set_src_port(src.port());
    t.set_dst_port(dst.port());
    t.set_seq_number(TcpSeqNumber(seq as i32));
    t.set_ack_number(TcpSeqNumber(ack as i32));
    t.set_header_len(tcp_len as u8);
    t.clear_flags();
    t.set_syn(flags.syn);
    t.set_ack(flags.ack);
    t.set_fin(flags.fin);
    t.set_window_len(65535);
    t.options_mut().copy_from_slice(opts);
    t.fill_checksum(&src_ip, &dst_ip);
    buf
}

/// A v6 socket address.
pub fn v6(ip: Ipv6Addr, port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(ip, port, 0, 0)
}

/// An unsealed data frame (Session 0) with a zero tag slot: what an
/// off-path sender can make, and every engine drops (`unauthenticated`).
pub fn data_frame(member: Option<MemberId>, packet: &[u8]) -> Vec<u8> {
    let mut f = TunnelHeader::data(member).to_bytes().to_vec();
    f.extend_from_slice(packet);
    f.extend_from_slice(&[0; TAG_LEN]);
    f
}

/// Hand `packet` to `engine` as a TUN read (header and tag room around
/// it); the action, with the packet as the engine left it copied back.
pub fn tun(engine: &mut impl Engine, now: Instant, packet: &mut [u8]) -> DataAction {
    let mut frame = vec![0xee; FRAME_HEADER_LEN];
    frame.extend_from_slice(packet);
    frame.extend_from_slice(&[0xee; TAG_LEN]);
    let action = engine.handle_tun(now, TunPacket::new(&mut frame).expect("room"));
    let len = frame.len();
    packet.copy_from_slice(&frame[FRAME_HEADER_LEN..len - TAG_LEN]);
    action
}

/// A control frame signed with the member <-> AP key, as a member or the
/// AP sends it.
pub fn signed(member: MemberId, msg: MobilityMessage, key: &[u8]) -> Vec<u8> {
    let msg = msg.with(MobilityOption::Authentication {
        subtype: AUTH_SUBTYPE_MN_HA,
        spi: SPI,
        data: [0; 16],
    });
    let mut frame = control_frame(Some(member), &msg);
    sign_registration(&mut frame, key, HOA);
    frame
}

/// A control frame without authentication.
pub fn unsigned(member: Option<MemberId>, msg: &MobilityMessage) -> Vec<u8> {
    control_frame(member, msg)
}

pub(crate) use super::binding_id as bid;

/// Everything the engine queued for UDP.
pub fn transmits(engine: &mut impl Engine) -> Vec<Transmit> {
    std::iter::from_fn(|| engine.poll_transmit()).collect()
}

/// Run every timer of `engine` that falls due up to `until`, in order, as
/// a driver would; returns the last instant reached.
pub fn run_until(engine: &mut impl Engine, until: Instant) {
    while let Some(at) = engine.poll_timeout().filter(|at| *at <= until) {
        engine.handle_timeout(at);
    }
}
