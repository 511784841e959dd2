//! An IPv4 home address beside the IPv6 one: legacy IPv4 clients through
//! the TUN to a member and back, IPv4 MSS clamping, IPv4 Flow Reports.

use std::net::Ipv4Addr;

use super::*;
use crate::engine::testutil::HOA4;

fn mapped(a: Ipv4Addr, port: u16) -> SocketAddrV6 {
    v6(a.to_ipv6_mapped(), port)
}

fn client4(n: u8) -> SocketAddrV6 {
    mapped(Ipv4Addr::new(198, 18, 1, n), 40000)
}

/// An AP with both home addresses and member 1 registered.
fn dual_ap_with_member() -> (AccessPoint, Instant, TestMember) {
    let mut ap = ap_with(|c| c.home_address_v4 = Some(HOA4));
    let now = t0();
    let mut m = TestMember::new(M1, m1_ep());
    m.register(&mut ap, now);
    events(&mut ap);
    (ap, now, m)
}

#[test]
fn a_legacy_ipv4_client_reaches_the_member_and_its_answer_the_tun() {
    let (mut ap, now, mut m) = dual_ap_with_member();
    let (c, h) = (client4(1), mapped(HOA4, 80));
    let syn = tcp(c, h, SYN, 1, 0);
    assert_eq!(syn[0] >> 4, 4, "an IPv4 packet");
    let mut frame = vec![0u8; HEADER_LEN];
    frame.extend_from_slice(&syn);
    frame.extend_from_slice(&[0; TAG_LEN]);
    assert_eq!(ap.handle_tun_frame(now, &mut frame), send_to(m1_ep()));
    let inner = open(m.sessions(), &mut frame);
    // MSS clamped to inner_mtu - 40 (IPv4 20 + TCP 20), checksum still valid.
    assert_eq!(
        u16::from_be_bytes([inner[42], inner[43]]),
        DEFAULT_INNER_MTU - 40
    );
    let info = inner::inspect(&inner).expect("parses");
    assert_eq!(info.flow.dst, HOA4.to_ipv6_mapped());
    {
        let ip = smoltcp::wire::Ipv4Packet::new_checked(&inner[..]).unwrap();
        assert!(ip.verify_checksum());
        let t = smoltcp::wire::TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(t.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
    }
    assert_eq!(ap.counters().mss_clamped, 1);
    // The answer from the IPv4 HoA: to the TUN, its SYN-ACK clamped too.
    let mut answer = sealed_data(m.sessions(), Some(M1), &tcp(h, c, SYN, 100, 2));
    assert_eq!(ap.handle_udp(now, m1_ep(), &mut answer), DataAction::ToTun);
    let out = &answer[HEADER_LEN..answer.len() - TAG_LEN];
    assert_eq!(
        u16::from_be_bytes([out[42], out[43]]),
        DEFAULT_INNER_MTU - 40
    );
    assert_eq!((ap.counters().legacy_in, ap.counters().legacy_out), (1, 1));
    // The same flow's next segment follows affinity.
    assert_eq!(
        from_tun(&mut ap, now, &tcp(c, h, ACK, 2, 101)),
        send_to(m1_ep())
    );
    // An answer from another IPv4 source: spoofed.
    let other = mapped(Ipv4Addr::new(198, 19, 0, 2), 80);
    let mut spoofed = sealed_data(m.sessions(), Some(M1), &tcp(other, c, ACK, 1, 1));
    assert_eq!(
        ap.handle_udp(now, m1_ep(), &mut spoofed),
        DataAction::Drop(DropReason::SpoofedSource)
    );
    // An IPv4 packet for another address: not ours.
    assert_eq!(
        from_tun(&mut ap, now, &tcp(c, other, SYN, 1, 0)),
        DataAction::Drop(DropReason::UnknownHomeAddress)
    );
    // IPv4 broadcast chatter is not tunnelled.
    let bcast = mapped(Ipv4Addr::BROADCAST, 80);
    assert_eq!(
        from_tun(&mut ap, now, &tcp(c, bcast, SYN, 1, 0)),
        DataAction::Drop(DropReason::NotTunnelled)
    );
    // The IPv6 home address still works beside it.
    assert_eq!(
        from_tun(
            &mut ap,
            now,
            &tcp(v6(client(1), 40000), v6(HOA, 80), SYN, 1, 0)
        ),
        send_to(m1_ep())
    );
}

#[test]
fn an_ap_without_an_ipv4_home_address_drops_ipv4_clients() {
    let (mut ap, now, _m) = ap_with_member();
    assert_eq!(
        from_tun(&mut ap, now, &tcp(client4(1), mapped(HOA4, 80), SYN, 1, 0)),
        DataAction::Drop(DropReason::UnknownHomeAddress)
    );
}

#[test]
fn an_ipv4_only_service_uses_the_mapped_address_as_primary() {
    let mut ap = ap_with(|c| {
        *c = ApConfig::new(HOA4.to_ipv6_mapped(), c.keys.clone());
        c.seed = [7; 32];
    });
    assert_eq!(ap.config().home_address_v4, Some(HOA4));
    assert!(ap.config().homes().is_home(HOA4.to_ipv6_mapped()));
    assert_eq!(ap.config().homes().ipv6(), None);
    let now = t0();
    // The IPv4 home address is ours (no member yet), the IPv6 one is not.
    assert_eq!(
        from_tun(
            &mut ap,
            now,
            &tcp(v6(client(1), 40000), v6(HOA, 80), SYN, 1, 0)
        ),
        DataAction::Drop(DropReason::UnknownHomeAddress)
    );
    assert_eq!(
        from_tun(&mut ap, now, &tcp(client4(1), mapped(HOA4, 80), SYN, 1, 0)),
        DataAction::Drop(DropReason::NoMember)
    );
}

#[test]
fn a_flow_report_of_an_ipv4_client_pins_the_ipv4_home_address_flow() {
    let (mut ap, now, mut m) = dual_ap_with_member();
    let c = client4(7);
    let mut report = m.flow_report(true, &[reported(c)]);
    assert_eq!(
        ap.handle_udp(now, m1_ep(), &mut report),
        DataAction::Consumed
    );
    assert_eq!(ap.counters().flows_reported, 1);
    let key = reported(c).key(HOA4.to_ipv6_mapped());
    assert_eq!(ap.affinity().get(&key).map(|e| e.member), Some(M1));
    // An AP with no IPv4 home address ignores such a flow.
    let (mut ap, now, mut m) = ap_with_member();
    let mut report = m.flow_report(true, &[reported(c)]);
    assert_eq!(
        ap.handle_udp(now, m1_ep(), &mut report),
        DataAction::Consumed
    );
    assert_eq!(ap.counters().flows_reported, 0);
}

#[test]
fn a_member_on_an_ipv4_underlay_registers_and_serves_both_families() {
    let mut ap = ap_with(|c| c.home_address_v4 = Some(HOA4));
    let now = t0();
    let care_of = ep("198.18.0.2:4790");
    let mut m = TestMember::new(M1, care_of);
    m.register(&mut ap, now);
    assert_eq!(ap.member(M1).map(|e| e.care_of), Some(care_of));
    // IPv6 and IPv4 clients both go to the member's IPv4 endpoint.
    for (c, h) in [
        (v6(client(1), 40000), v6(HOA, 80)),
        (client4(1), mapped(HOA4, 80)),
    ] {
        assert_eq!(
            from_tun(&mut ap, now, &tcp(c, h, SYN, 1, 0)),
            send_to(care_of)
        );
        let mut answer = sealed_data(m.sessions(), Some(M1), &tcp(h, c, ACK, 1, 2));
        assert_eq!(ap.handle_udp(now, care_of, &mut answer), DataAction::ToTun);
    }
}
