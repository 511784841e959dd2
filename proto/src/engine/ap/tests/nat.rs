//! Shims behind NATs: client addresses from the pools, the IPv4 pool
//! collision rule, and roaming of shim records (docs/PROTOCOL.md 4.6).

use std::net::Ipv4Addr;

use super::*;

/// The /64 the test AP hands to translated shims with an IPv6 HoA.
fn pool6() -> Ipv6Addr {
    "fd00:4841:cccc::".parse().unwrap()
}

/// A NAT's public endpoint and the private endpoint behind it.
fn nat_public() -> SocketAddr {
    ep("198.18.0.10:40000")
}

fn private() -> SocketAddr {
    ep("100.64.1.2:5555")
}

fn behind_nat(seed: u64, instance: [u8; 8]) -> TestShim {
    let mut shim = TestShim::new(nat_public(), &mut Drbg::from_u64(seed));
    shim.local = Some(private());
    shim.instance = instance;
    shim
}

fn with_pools(c: &mut ApConfig) {
    c.shim_prefix_v6 = Some(pool6());
    c.shim_pool_v4 = Some("100.127.0.0/16".parse().unwrap());
}

/// An AP with pools and member 1 registered.
fn ap_with_pools_and_member() -> (AccessPoint, Instant, TestMember) {
    let (mut ap, now) = (ap_with(with_pools), t0());
    let mut m = TestMember::new(M1, m1_ep());
    m.register(&mut ap, now);
    events(&mut ap);
    (ap, now, m)
}

#[test]
fn a_translated_shim_gets_a_pool_address_and_its_traffic_goes_both_ways() {
    let (mut ap, now, mut m) = ap_with_pools_and_member();
    let mut shim = behind_nat(1, [0, 0, 0, 0, 0, 0, 0x12, 0x34]);
    assert!(shim.handshake(&mut ap, now));
    let c: Ipv6Addr = "fd00:4841:cccc::1234".parse().unwrap();
    assert_eq!(shim.given, Some(c), "prefix | instance");
    assert_eq!(shim.observed, Some(nat_public()));
    assert_eq!(
        ap.shim_clients()
            .map(|(k, s)| (*k, s.endpoint))
            .collect::<Vec<_>>(),
        vec![(c, nat_public())],
        "the record is keyed by C"
    );
    let h = v6(HOA, 80);
    // The NAT's public address as inner source is not the client's.
    let public = Ipv4Addr::new(198, 18, 0, 10).to_ipv6_mapped();
    let mut spoofed = sealed_data(shim.sessions(), None, &tcp(v6(public, 1), h, SYN, 1, 0));
    assert_eq!(
        ap.handle_udp(now, nat_public(), &mut spoofed),
        DataAction::Drop(DropReason::SpoofedSource)
    );
    let syn = tcp(v6(c, 40000), h, SYN, 1, 0);
    let mut f = sealed_data(shim.sessions(), None, &syn);
    assert_eq!(ap.handle_udp(now, nat_public(), &mut f), send_to(m1_ep()));
    assert_eq!(&open(m.sessions(), &mut f)[..40], &syn[..40]);
    let t = transmits(&mut ap);
    let mut notice = t[0].payload.clone();
    let msg = MobilityMessage::parse(&open(m.sessions(), &mut notice)).unwrap();
    assert_eq!(
        msg.body,
        MessageBody::ShimNotice {
            client: c,
            shim: nat_public()
        },
        "members learn C at the public endpoint"
    );
    let ack = tcp(h, v6(c, 40000), ACK, 100, 2);
    let mut answer = sealed_data(m.sessions(), Some(M1), &ack);
    assert_eq!(
        ap.handle_udp(now, m1_ep(), &mut answer),
        send_to(nat_public())
    );
    assert_eq!(open(shim.sessions(), &mut answer), ack);
}

#[test]
fn an_untranslated_shim_keeps_its_own_address_and_an_ipv4_one_needs_the_pool() {
    let (mut ap, now) = (ap_with(with_pools), t0());
    let mut direct = shim_at(1, 1);
    assert!(direct.handshake(&mut ap, now));
    assert_eq!(direct.given, Some(client(1)), "C = the source, as before");
    // On IPv4 without NAT, with an IPv6 HoA: the family differs.
    let v4 = ep("198.18.0.20:5555");
    let mut shim = TestShim::new(v4, &mut Drbg::from_u64(2));
    shim.instance = [0, 0, 0, 0, 0, 0, 0, 9];
    assert!(shim.handshake(&mut ap, now));
    assert_eq!(shim.given, Some("fd00:4841:cccc::9".parse().unwrap()));
}

#[test]
fn without_a_pool_a_translated_shim_gets_no_welcome_and_it_is_reported_once() {
    let (mut ap, now) = (ap(), t0());
    let mut shim = behind_nat(1, [1; 8]);
    assert!(!shim.handshake(&mut ap, now));
    let mut other = behind_nat(2, [2; 8]);
    other.ep = ep("198.18.0.11:40000");
    assert!(!other.handshake(&mut ap, now));
    assert_eq!(ap.shim_client_count(), 0);
    assert!(ap.index.is_empty(), "nothing allocated");
    assert_eq!(ap.counters().no_client_address, 2);
    assert_eq!(
        events(&mut ap),
        [ApEvent::NoClientAddress {
            ipv4: false,
            endpoint: nat_public()
        }]
    );
}

#[test]
fn an_ipv4_pool_address_held_by_another_instance_gets_a_welcome_without_one() {
    // An AP whose (only, primary) HoA is IPv4.
    let hoa4 = Ipv4Addr::new(198, 19, 0, 1).to_ipv6_mapped();
    let mut ap = ap_with(|c| {
        c.home_address = hoa4;
        with_pools(c);
    });
    let now = t0();
    let mut first = behind_nat(1, 1u64.to_be_bytes());
    first.home = Some(hoa4);
    assert!(first.handshake(&mut ap, now));
    let c = Ipv4Addr::new(100, 127, 0, 2).to_ipv6_mapped();
    assert_eq!(
        first.given,
        Some(c),
        "network + 1 + instance mod (size - 2)"
    );
    // Another instance with the same address, mod 65534, from elsewhere.
    let mut second = behind_nat(2, (1u64 + 65534).to_be_bytes());
    second.home = Some(hoa4);
    second.ep = ep("198.18.0.12:40000");
    assert!(!second.handshake(&mut ap, now), "no Client Address");
    assert_eq!(ap.counters().pool_collisions, 1);
    assert_eq!(ap.shim_client_count(), 1);
    assert_eq!(
        ap.shim_clients()
            .next()
            .map(|(_, s)| (s.endpoint, s.instance)),
        Some((nat_public(), first.instance)),
        "the holder keeps its record"
    );
    assert_eq!(
        ap.shim_clients().next().map(|(_, s)| s.home),
        Some(hoa4),
        "the record keeps the shim's HoA (for its HoTIs and Shim Notices)"
    );
    // A new instance gets another address.
    second.instance = 7u64.to_be_bytes();
    second.nonce = [0x77; 16];
    assert!(second.handshake(&mut ap, now));
    assert_eq!(
        second.given,
        Some(Ipv4Addr::new(100, 127, 0, 8).to_ipv6_mapped())
    );
    // The same instance again (a restarted NAT mapping): its own record.
    let mut again = behind_nat(3, 1u64.to_be_bytes());
    again.home = Some(hoa4);
    again.ep = ep("198.18.0.10:40001");
    assert!(again.handshake(&mut ap, now));
    assert_eq!(again.given, Some(c));
    // A HoA this AP does not serve: dropped after the cookie.
    let mut stranger = behind_nat(4, [4; 8]);
    stranger.home = Some(HOA);
    assert!(!stranger.handshake(&mut ap, now));
    assert_eq!(ap.counters().drops.get(DropReason::UnknownHomeAddress), 1);
}

#[test]
fn a_newer_sealed_frame_from_a_new_source_moves_the_record_and_a_replay_moves_nothing() {
    let (mut ap, now, mut m) = ap_with_pools_and_member();
    let mut shim = behind_nat(1, [0, 0, 0, 0, 0, 0, 0, 5]);
    assert!(shim.handshake(&mut ap, now));
    events(&mut ap);
    let c = shim.client();
    let h = v6(HOA, 80);
    let syn = tcp(v6(c, 40000), h, SYN, 1, 0);
    let mut f = sealed_data(shim.sessions(), None, &syn);
    assert_eq!(ap.handle_udp(now, nat_public(), &mut f), send_to(m1_ep()));
    transmits(&mut ap);
    // Two frames; the later one arrives first, from the NAT's new mapping.
    let ack = tcp(v6(c, 40000), h, ACK, 2, 1);
    let older = sealed_data(shim.sessions(), None, &ack);
    let newer = sealed_data(shim.sessions(), None, &ack);
    let rebound = ep("198.18.0.10:40999");
    let mut g = newer.clone();
    assert_eq!(
        ap.handle_udp(at(now, 10), rebound, &mut g),
        send_to(m1_ep())
    );
    assert_eq!(ap.counters().roams, 1);
    assert_eq!(
        events(&mut ap),
        [ApEvent::ShimRoamed {
            client: c,
            from: nat_public(),
            to: rebound
        }]
    );
    // The member hears of the new endpoint at once (the notice is due).
    let t = transmits(&mut ap);
    assert_eq!(t.len(), 1);
    let mut notice = t[0].payload.clone();
    let msg = MobilityMessage::parse(&open(m.sessions(), &mut notice)).unwrap();
    assert_eq!(
        msg.body,
        MessageBody::ShimNotice {
            client: c,
            shim: rebound
        }
    );
    // An attacker's copies from its own endpoint: the replay is refused,
    // the older (never seen) frame opens but is not the newest: no move.
    let attacker = ep("198.19.7.66:1234");
    let mut replay = newer.clone();
    assert_eq!(
        ap.handle_udp(at(now, 20), attacker, &mut replay),
        DataAction::Drop(DropReason::Replay)
    );
    let mut late = older.clone();
    assert_eq!(
        ap.handle_udp(at(now, 20), attacker, &mut late),
        send_to(m1_ep())
    );
    assert_eq!(ap.counters().roams, 1);
    assert_eq!(
        ap.shim_clients().next().map(|(_, s)| s.endpoint),
        Some(rebound)
    );
    // Answers follow the shim.
    let mut answer = sealed_data(m.sessions(), Some(M1), &tcp(h, v6(c, 40000), ACK, 1, 3));
    assert_eq!(
        ap.handle_udp(at(now, 30), m1_ep(), &mut answer),
        send_to(rebound)
    );
}
