//! Data through the AP and direct, protection levels, keepalives.

use super::*;

#[test]
fn unsealed_data_from_the_ap_endpoint_never_reaches_the_tun() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let packet = tcp(server(), app(40000), SYN, 100, 2);
    let mut unsealed = vec![0u8; HEADER_LEN];
    unsealed[..4].copy_from_slice(&TunnelHeader::data(Some(M1)).to_bytes()[..4]);
    unsealed.extend_from_slice(&packet);
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut unsealed),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    let sealed = ap.data(Some(M1), &packet);
    let mut tampered = sealed.clone();
    tampered[HEADER_LEN + 3] ^= 1;
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut tampered),
        DataAction::Drop(DropReason::AuthFailed)
    );
    let mut unknown = sealed.clone();
    unknown[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut unknown),
        DataAction::Drop(DropReason::UnknownPeer)
    );
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut sealed.clone()),
        DataAction::ToTun
    );
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut sealed.clone()),
        DataAction::Drop(DropReason::Replay)
    );
    assert_eq!(s.counters().via_ap_in, 1);
    assert_eq!(s.counters().drops.get(DropReason::Unauthenticated), 1);
}

#[test]
fn an_encrypting_shim_refuses_integrity_frames_an_integrity_shim_sends_them() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let packet = tcp(server(), app(40000), SYN, 100, 2);
    let mut f = vec![0u8; HEADER_LEN];
    f.extend_from_slice(&packet);
    f.extend_from_slice(&[0; TAG_LEN]);
    seal_data(&mut ap.sessions, Protection::Integrity, Some(M1), &mut f).expect("sealed");
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut f),
        DataAction::Drop(DropReason::AuthFailed)
    );
    let mut cfg = config();
    cfg.protection = Protection::Integrity;
    let (mut s, mut ap) = up(now, cfg);
    let syn = tcp(app(40000), server(), SYN, 1, 0);
    let (_, frame) = out(&mut s, now, &syn).expect("sent");
    assert_eq!(frame[1] & FLAG_ENCRYPTED, 0);
    assert_eq!(
        &frame[HEADER_LEN..HEADER_LEN + syn.len()],
        &syn[..],
        "clear"
    );
    let mut g = frame.clone();
    let index = session_index_of(&g).expect("index");
    ap.sessions
        .open(now, index, Protection::Integrity, &mut g)
        .expect("authenticated");
    // An integrity receiver accepts encrypted frames too.
    let mut enc = ap.data(Some(M1), &packet);
    assert_eq!(s.handle_udp(now, ap_ep(), &mut enc), DataAction::ToTun);
}

#[test]
fn direct_data_is_sealed_in_the_binding_session_both_ways() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let syn = tcp(app(40000), server(), SYN, 1, 0);
    out(&mut s, now, &syn).expect("via the AP");
    let mut answer = ap.data(Some(M1), &tcp(server(), app(40000), SYN, 100, 2));
    assert_eq!(s.handle_udp(now, ap_ep(), &mut answer), DataAction::ToTun);
    let key = inner::inspect(&syn).expect("valid").flow;
    // Still through the AP (tagged, so the AP keeps it on M1) until bound.
    let ack = tcp(app(40000), server(), ACK, 2, 101);
    let (to, frame) = out(&mut s, now, &ack).expect("sent");
    assert_eq!(to, ap_ep());
    assert_eq!(ap.open(now, &frame).0.member, Some(M1));
    let (m, mut member) = bound(&mut s, &mut ap, now, M1);
    let (to, frame) = out(&mut s, now, &ack).expect("sent");
    assert_eq!(to, care_of(M1), "direct");
    let (header, packet) = open(&mut member, now, &frame);
    assert_eq!((header.member, packet), (Some(M1), ack.clone()));
    assert_eq!(
        events(&mut s),
        [ShimEvent::FlowDirect {
            flow: key,
            member: M1
        }]
    );
    // The member's sealed data, from any endpoint (the seal proves it;
    // the binding follows the newest frame: roaming).
    let data = tcp(server(), app(40000), ACK, 101, 3);
    let sealed = seal(&mut member, Some(M1), &data);
    assert_eq!(
        s.handle_udp(now, care_of(M2), &mut sealed.clone()),
        DataAction::ToTun
    );
    assert_eq!(s.counters().direct_in, 1);
    // Unsealed from its care-of endpoint: never delivered, no answer.
    let mut unsealed = vec![0u8; HEADER_LEN];
    unsealed[..4].copy_from_slice(&TunnelHeader::data(Some(M1)).to_bytes()[..4]);
    unsealed.extend_from_slice(&data);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut unsealed),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    // Sealed but naming another member, or with a foreign inner source.
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut seal(&mut member, Some(M2), &data)),
        DataAction::Drop(DropReason::UnknownPeer)
    );
    let spoofed = tcp(v6(CLIENT, 80), app(40000), ACK, 101, 3);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut seal(&mut member, Some(M1), &spoofed)),
        DataAction::Drop(DropReason::SpoofedSource)
    );
    assert!(transmits(&mut s).is_empty(), "no binding errors");
    // A new Session in the next BU: a new session; the old one in its grace.
    let mut m2 = m;
    m2.im += 100;
    m2.nm = [0x77; 16];
    s.handle_udp(now, care_of(M1), &mut m2.bu(2, 120));
    let mut renewed = m2.session(&m2.ba(&mut s));
    let (_, frame) = out(&mut s, now, &ack).expect("sent");
    assert_eq!(open(&mut renewed, now, &frame).1, ack);
    let old = seal(&mut member, Some(M1), &data);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut old.clone()),
        DataAction::ToTun
    );
    let after = now + SESSION_GRACE;
    run_until(&mut s, after);
    let old = seal(&mut member, Some(M1), &data);
    assert_eq!(
        s.handle_udp(after, care_of(M1), &mut old.clone()),
        DataAction::Drop(DropReason::UnknownPeer)
    );
    // Once the binding lapses its session opens nothing and flows go
    // through the AP.
    let expired = now + Duration::from_secs(121);
    run_until(&mut s, expired);
    let (to, _) = out(&mut s, expired, &ack).expect("sent");
    assert_eq!(to, ap_ep());
    assert_eq!(
        s.handle_udp(
            expired,
            care_of(M1),
            &mut seal(&mut renewed, Some(M1), &data)
        ),
        DataAction::Drop(DropReason::UnknownPeer)
    );
}

#[test]
fn a_sealed_keepalive_goes_to_the_ap_while_there_are_flows() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let keepalive = DEFAULT_KEEPALIVE;
    run_until(&mut s, now + keepalive);
    assert!(ap.messages(&mut s, now).is_empty(), "no flows: silent");
    out(
        &mut s,
        now + keepalive,
        &tcp(app(40000), server(), SYN, 1, 0),
    )
    .expect("sent");
    run_until(&mut s, now + keepalive * 2);
    let msgs = ap.messages(&mut s, now);
    assert_eq!(
        msgs.iter().map(|m| m.body.clone()).collect::<Vec<_>>(),
        [MessageBody::BindingRefreshRequest]
    );
    assert_eq!(s.counters().keepalives, 1);
}

#[test]
fn a_shim_for_an_ipv4_home_address_carries_ipv4_packets() {
    use crate::engine::testutil::HOA4;
    let now = t0();
    let hoa4 = HOA4.to_ipv6_mapped();
    let (mut s, mut ap) = up(now, ShimConfig::new(ap_ep(), hoa4, local(), [9; 32]));
    let app4 = v6(
        std::net::Ipv4Addr::new(198, 18, 1, 1).to_ipv6_mapped(),
        40000,
    );
    let server4 = v6(hoa4, 80);
    // An application's IPv4 SYN to the IPv4 HoA: sealed to the AP.
    let syn = tcp(app4, server4, SYN, 1, 0);
    assert_eq!(syn[0] >> 4, 4);
    let (to, frame) = out(&mut s, now, &syn).expect("sent");
    assert_eq!(to, ap_ep());
    assert_eq!(ap.open(now, &frame).1, syn);
    // A packet to the IPv6 address is not for this shim's HoA.
    assert_eq!(
        out(&mut s, now, &tcp(app(40000), server(), SYN, 1, 0)).err(),
        Some(DataAction::Drop(DropReason::UnknownHomeAddress))
    );
    // The answer from the IPv4 HoA reaches the TUN; one from the IPv6 HoA
    // is spoofed here.
    let answer = tcp(server4, app4, SYN, 100, 2);
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut ap.data(Some(M1), &answer)),
        DataAction::ToTun
    );
    let v6_answer = tcp(server(), app(40000), SYN, 100, 2);
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut ap.data(Some(M1), &v6_answer)),
        DataAction::Drop(DropReason::SpoofedSource)
    );
}

#[test]
fn the_binding_follows_a_newer_sealed_frame_and_a_replay_moves_nothing() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let (_, mut member) = bound(&mut s, &mut ap, now, M1);
    let data = tcp(server(), app(40000), ACK, 101, 2);
    let older = seal(&mut member, Some(M1), &data);
    let newer = seal(&mut member, Some(M1), &data);
    // The member's NAT gave it a new public port.
    let rebound = ep("[2001:db8:1::1]:31000");
    assert_eq!(
        s.handle_udp(now, rebound, &mut newer.clone()),
        DataAction::ToTun
    );
    assert_eq!(s.counters().roams, 1);
    assert_eq!(s.bindings().next().map(|(_, b)| b.care_of), Some(rebound));
    assert_eq!(
        events(&mut s),
        [ShimEvent::BindingUpdated {
            member: M1,
            care_of: rebound,
            moved_from: Some(care_of(M1)),
        }]
    );
    // An attacker's copies from its own endpoint move nothing: the replay
    // is refused, the older frame opens but is not the newest.
    let attacker = ep("[2001:db8:bad::1]:666");
    assert_eq!(
        s.handle_udp(now, attacker, &mut newer.clone()),
        DataAction::Drop(DropReason::Replay)
    );
    assert_eq!(
        s.handle_udp(now, attacker, &mut older.clone()),
        DataAction::ToTun
    );
    assert_eq!(s.counters().roams, 1);
    assert_eq!(s.bindings().next().map(|(_, b)| b.care_of), Some(rebound));
    // What we send direct goes to the new endpoint.
    let syn = tcp(app(40001), server(), SYN, 1, 0);
    let (to, _) = out(&mut s, now, &syn).expect("sent");
    assert_eq!(to, rebound);
}
