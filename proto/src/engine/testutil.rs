//! Frames for the engines' unit tests, built with the `wire` emitters and
//! signed with the engines' own `crypto` calls: bytes in, bytes out, no
//! simulator.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use smoltcp::wire::{IpAddress, IpProtocol, Ipv6Packet, TcpPacket, TcpSeqNumber};

use super::ap::AUTH_SUBTYPE_MN_HA;
use super::{DataAction, Engine, Transmit, TunPacket, control_frame, sign_registration, to_units};
use crate::wire::inner::IPV6_HEADER_LEN;
use crate::wire::mh::MessageBody;
use crate::wire::{
    FRAME_HEADER_LEN, MemberId, MobilityMessage, MobilityOption, TAG_LEN, TunnelHeader,
};

/// The home address of every test.
pub const HOA: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
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
/// option of 1460 on a SYN.
pub fn tcp(src: SocketAddrV6, dst: SocketAddrV6, flags: Flags, seq: u32, ack: u32) -> Vec<u8> {
    let opts: &[u8] = if flags.syn { &[2, 4, 0x05, 0xb4] } else { &[] };
    let tcp_len = 20 + opts.len();
    let mut buf = vec![0u8; IPV6_HEADER_LEN + tcp_len];
    let mut ip = Ipv6Packet::new_unchecked(&mut buf[..]);
    ip.set_version(6);
    ip.set_payload_len(tcp_len as u16);
    ip.set_next_header(IpProtocol::Tcp);
    ip.set_hop_limit(64);
    ip.set_src_addr(*src.ip());
    ip.set_dst_addr(*dst.ip());
    let mut t = TcpPacket::new_unchecked(&mut buf[IPV6_HEADER_LEN..]);
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
    t.fill_checksum(&IpAddress::Ipv6(*src.ip()), &IpAddress::Ipv6(*dst.ip()));
    buf
}

/// A v6 socket address.
pub fn v6(ip: Ipv6Addr, port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(ip, port, 0, 0)
}

/// A data frame: tunnel header + inner packet + tag slot (interim
/// framing: unsealed, zero tag).
pub fn data_frame(member: Option<MemberId>, packet: &[u8]) -> Vec<u8> {
    let mut f = TunnelHeader::data(member).to_bytes().to_vec();
    f.extend_from_slice(packet);
    f.extend_from_slice(&[0; TAG_LEN]);
    f
}

/// What an engine did with a packet: the action and, when it sends, the
/// header it wrote.
pub type Framed = (DataAction, Option<TunnelHeader>);

/// Hand `packet` to `engine` as a TUN read (with header and tag room
/// filled with garbage); returns the action and, on `Send`, the header it
/// wrote. The tag of a sent frame must be the interim zero tag.
pub fn framed(engine: &mut impl Engine, now: Instant, packet: &mut [u8]) -> Framed {
    let mut frame = vec![0xee; FRAME_HEADER_LEN];
    frame.extend_from_slice(packet);
    frame.extend_from_slice(&[0xee; TAG_LEN]);
    let action = engine.handle_tun(now, TunPacket::new(&mut frame).expect("room"));
    let len = frame.len();
    packet.copy_from_slice(&frame[FRAME_HEADER_LEN..len - TAG_LEN]);
    match action {
        DataAction::Send { .. } => {
            assert_eq!(frame[len - TAG_LEN..], [0; TAG_LEN], "interim zero tag");
            (action, Some(TunnelHeader::parse(&frame).expect("header")))
        }
        _ => (action, None),
    }
}

/// [`framed`] without the header.
pub fn tun(engine: &mut impl Engine, now: Instant, packet: &mut [u8]) -> DataAction {
    framed(engine, now, packet).0
}

/// Hand a UDP frame to `engine`; on `Send` (a relay), the header it
/// rewrote in place (the tag slot must be the interim zero tag).
#[allow(dead_code)] // unsealed relays are gone: the AP re-seals (its own tests)
pub fn relay(engine: &mut impl Engine, now: Instant, from: SocketAddr, frame: &mut [u8]) -> Framed {
    let len = frame.len();
    if len >= TAG_LEN {
        frame[len - TAG_LEN..].fill(0xee);
    }
    let action = engine.handle_udp(now, from, frame);
    match action {
        DataAction::Send { .. } => {
            assert_eq!(frame[len - TAG_LEN..], [0; TAG_LEN], "interim zero tag");
            (action, Some(TunnelHeader::parse(frame).expect("header")))
        }
        _ => (action, None),
    }
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

/// The tunnel header and message of a control transmit.
pub fn parse(t: &Transmit) -> (TunnelHeader, MobilityMessage) {
    let header = TunnelHeader::parse(&t.payload).expect("tunnel header");
    let msg = MobilityMessage::parse(&t.payload[FRAME_HEADER_LEN..]).expect("mobility header");
    (header, msg)
}

/// The messages of all queued transmits, with their destinations.
#[allow(dead_code)] // v1 framing; the AP's tests build v2 frames
pub fn messages(engine: &mut impl Engine) -> Vec<(SocketAddr, MobilityMessage)> {
    transmits(engine)
        .iter()
        .map(|t| (t.to, parse(t).1))
        .collect()
}

/// A registration BU as a member sends it (lifetime in seconds; 0:
/// deregistration), signed with `key`.
#[allow(dead_code)] // v1 framing; the AP's tests build v2 frames
pub fn registration_bu(
    id: MemberId,
    care_of: SocketAddr,
    seq: u16,
    lifetime_s: u64,
    state: (u16, bool, u64),
    key: &[u8],
) -> Vec<u8> {
    let (weight, draining, instance) = state;
    let msg = MobilityMessage::new(MessageBody::BindingUpdate {
        sequence: seq,
        ack: true,
        home: true,
        lifetime: to_units(Duration::from_secs(lifetime_s)),
    })
    .with(MobilityOption::BindingId {
        id,
        status: 0,
        flags: 0,
        care_of: Some(care_of.ip()),
    })
    .with(MobilityOption::HomeAddress(HOA))
    .with(MobilityOption::MemberState {
        weight,
        draining,
        instance,
    });
    signed(id, msg, key)
}

/// Run every timer of `engine` that falls due up to `until`, in order, as
/// a driver would; returns the last instant reached.
pub fn run_until(engine: &mut impl Engine, until: Instant) {
    while let Some(at) = engine.poll_timeout().filter(|at| *at <= until) {
        engine.handle_timeout(at);
    }
}
