//! Data: direct through the binding session or through the AP.

use super::*;

#[test]
fn the_ro_ba_session_carries_sealed_direct_data_both_ways() {
    let now = t0();
    let (mut m, mut ap, mut shim) = bound(now);
    assert!(matches!(
        events(&mut m).last(),
        Some(MemberEvent::RouteOptimized { client: CLIENT, .. })
    ));
    // Answers go sealed to the shim.
    let (_, out) = tun_out(&mut m, now, &mut answer());
    let (to, frame) = out.expect("sealed answer");
    assert_eq!(to, shim_ep());
    assert_eq!(open_frame(&mut shim.sessions, &frame), answer());
    assert_eq!(m.counters().direct_out, 1);
    // Sealed data from the shim opens and goes to the TUN.
    let mut f = sealed_frame(&mut shim.sessions, &inbound());
    assert_eq!(m.handle_udp(now, shim_ep(), &mut f), DataAction::ToTun);
    assert_eq!(
        &f[HEADER_LEN..f.len() - TAG_LEN],
        &inbound()[..],
        "opened in place"
    );
    assert_eq!(m.counters().direct_in, 1);
    // Its inner source must be the client.
    let other = tcp(v6(client_ep(9).0, 40000), v6(HOA, 80), ACK, 1, 1);
    assert_eq!(
        m.handle_udp(
            now,
            shim_ep(),
            &mut sealed_frame(&mut shim.sessions, &other)
        ),
        DataAction::Drop(DropReason::SpoofedSource)
    );
    // Unsealed data from the shim: dropped, and no Binding Error.
    let mut plain = crate::engine::testutil::data_frame(Some(ID), &inbound());
    assert_eq!(
        m.handle_udp(now, shim_ep(), &mut plain),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    // A sealed frame naming an index we do not have: no answer either.
    let mut stranger = ap.data(&inbound());
    stranger[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    assert_eq!(
        m.handle_udp(now, ep("[2001:db8:d::1]:9"), &mut stranger),
        DataAction::Drop(DropReason::UnknownPeer)
    );
    assert!(transmits(&mut m).is_empty(), "no Binding Error sent");
}

#[test]
fn a_move_holds_answers_until_the_new_binding_then_sends_them_direct() {
    let now = t0();
    let (mut m, _ap, mut shim) = bound(now);
    events(&mut m);
    let new = ep("[2001:db8:1::2]:4790");
    m.set_care_of(now, new);
    let sent = transmits(&mut m);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].to, ap_ep());
    let bu = unsealed_msg(&sent[0]);
    assert!(matches!(
        bu.body,
        MessageBody::BindingUpdate { home: true, .. }
    ));
    assert_eq!(bu.cookie(), None, "the cookie was for the old endpoint");
    // Only a care-of test (the home token and its ticket are reused).
    assert_eq!(sent[1].to, shim_ep());
    let msg = unsealed_msg(&sent[1]);
    assert_eq!(msg.care_of_ticket(), Some((5, TICKET)));
    let MessageBody::CareOfTestInit { cookie } = msg.body else {
        panic!("expected a CoTI: {msg:?}")
    };
    assert_eq!(
        tun_out(&mut m, now, &mut answer()),
        (DataAction::Consumed, None),
        "held"
    );
    // The AP answers the BU from the new endpoint with a cookie: at once again.
    let seq = match bu.body {
        MessageBody::BindingUpdate { sequence, .. } => sequence,
        _ => unreachable!(),
    };
    m.handle_udp(
        now,
        ap_ep(),
        &mut ba_with(202, seq, 0, &[MobilityOption::Cookie(COOKIE_1)]),
    );
    assert_eq!(registration_bu(&mut m).cookie, Some(COOKIE_1));
    let later = at(now, 30);
    let new_token = [0x33; 8];
    m.handle_udp(later, shim_ep(), &mut care_of_test(cookie, new_token));
    let (seq, session) = binding_update(&mut m, new_token);
    let (mut frame, mut new_shim) = shim_ba(seq, session, new_token, 0x7c);
    m.handle_udp(later, shim_ep(), &mut frame);
    let released = transmits(&mut m);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].to, shim_ep());
    assert_eq!(
        open_frame(&mut new_shim.sessions, &released[0].payload),
        answer(),
        "the held answer, sealed in the new session"
    );
    // The old session still opens frames in flight during its grace.
    let mut late = sealed_frame(&mut shim.sessions, &inbound());
    assert_eq!(m.handle_udp(later, shim_ep(), &mut late), DataAction::ToTun);
    let mut too_late = sealed_frame(&mut shim.sessions, &inbound());
    assert_eq!(
        m.handle_udp(
            later + crate::engine::sealed::SESSION_GRACE,
            shim_ep(),
            &mut too_late
        ),
        DataAction::Drop(DropReason::AuthFailed)
    );
}

#[test]
fn answers_held_past_the_hold_time_go_through_the_ap() {
    let now = t0();
    let (mut m, mut ap, _shim) = bound(now);
    m.set_care_of(now, ep("[2001:db8:1::2]:4790"));
    transmits(&mut m);
    assert_eq!(tun_out(&mut m, now, &mut answer()).0, DataAction::Consumed);
    run_until(&mut m, now + MOVE_HOLD - Duration::from_millis(1));
    assert!(transmits(&mut m).is_empty());
    run_until(&mut m, now + MOVE_HOLD);
    let released = transmits(&mut m);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].to, ap_ep());
    assert_eq!(ap.open(&released[0]), answer(), "sealed in the AP session");
}

#[test]
fn an_encrypting_member_refuses_integrity_only_frames() {
    let now = t0();
    let (mut m, mut ap) = registered(now);
    let mut f = vec![0u8; HEADER_LEN + inbound().len() + TAG_LEN];
    f[HEADER_LEN..HEADER_LEN + inbound().len()].copy_from_slice(&inbound());
    seal_data(&mut ap.sessions, Protection::Integrity, Some(ID), &mut f).unwrap();
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut f.clone()),
        DataAction::Drop(DropReason::AuthFailed)
    );
    // A member configured for integrity takes both.
    let mut config = config();
    config.protection = Protection::Integrity;
    let (mut m, mut ap) = registered_with(config, now);
    let mut f = vec![0u8; HEADER_LEN + inbound().len() + TAG_LEN];
    f[HEADER_LEN..HEADER_LEN + inbound().len()].copy_from_slice(&inbound());
    seal_data(&mut ap.sessions, Protection::Integrity, Some(ID), &mut f).unwrap();
    assert_eq!(m.handle_udp(now, ap_ep(), &mut f), DataAction::ToTun);
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut ap.data(&inbound())),
        DataAction::ToTun
    );
    // And seals its own frames without E.
    let (_, out) = tun_out(&mut m, now, &mut answer());
    let (_, frame) = out.unwrap();
    assert_eq!(frame[1] & crate::crypto::session::FLAG_ENCRYPTED, 0);
    let mut g = frame.clone();
    let idx = session_index_of(&g).unwrap();
    ap.sessions
        .open(now, idx, Protection::Integrity, &mut g)
        .unwrap();
}

#[test]
fn answers_before_the_ap_session_are_dropped_no_session() {
    let (mut m, now) = (member(), t0());
    m.start(now);
    assert_eq!(
        tun_out(&mut m, now, &mut answer()),
        (DataAction::Drop(DropReason::NoSession), None)
    );
}

#[test]
fn the_ipv4_home_address_is_served_beside_the_ipv6_one() {
    use crate::engine::testutil::{HOA4, SYN};
    let now = t0();
    let mut cfg = config();
    cfg.home_address_v4 = Some(HOA4);
    let (mut m, mut ap) = registered_with(cfg, now);
    let client4 = v6(
        std::net::Ipv4Addr::new(198, 18, 1, 1).to_ipv6_mapped(),
        40000,
    );
    let hoa4 = v6(HOA4.to_ipv6_mapped(), 80);
    // A legacy IPv4 client's packet through the AP: to the TUN.
    let syn = tcp(client4, hoa4, SYN, 1, 0);
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut ap.data(&syn)),
        DataAction::ToTun
    );
    // The IPv4 answer goes back through the AP it came from.
    let mut answer = tcp(hoa4, client4, SYN, 100, 2);
    let (action, out) = tun_out(&mut m, now, &mut answer);
    assert_eq!(action, DataAction::Send { to: ap_ep() });
    let (_, frame) = out.expect("sealed");
    assert_eq!(open_frame(&mut ap.sessions, &frame), answer);
    // A packet for another IPv4 address is not ours; an answer from one
    // is spoofed.
    let other = v6(std::net::Ipv4Addr::new(198, 19, 0, 9).to_ipv6_mapped(), 80);
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut ap.data(&tcp(client4, other, SYN, 1, 0))),
        DataAction::Drop(DropReason::UnknownHomeAddress)
    );
    assert_eq!(
        tun_out(&mut m, now, &mut tcp(other, client4, ACK, 1, 1)).0,
        DataAction::Drop(DropReason::SpoofedSource)
    );
    // The IPv6 home address still is.
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut ap.data(&inbound())),
        DataAction::ToTun
    );
    // A member without the IPv4 home address drops it.
    let (mut plain, mut ap) = registered(now);
    assert_eq!(
        plain.handle_udp(now, ap_ep(), &mut ap.data(&syn)),
        DataAction::Drop(DropReason::UnknownHomeAddress)
    );
}

/// The daemon's routes into the TUN with direct server return.
fn route_events(m: &mut Member) -> Vec<(bool, Ipv6Addr)> {
    events(m)
        .into_iter()
        .filter_map(|e| match e {
            MemberEvent::ShimClientAdded { client } => Some((true, client)),
            MemberEvent::ShimClientRemoved { client } => Some((false, client)),
            _ => None,
        })
        .collect()
}

#[test]
fn direct_return_reports_each_shim_client_as_it_comes_and_goes() {
    let now = t0();
    let mut config = self::config();
    config.direct_return = true;
    config.max_correspondents = 1;
    let (mut m, mut ap) = registered_with(config, now);
    // A Shim Notice makes CLIENT a correspondent: route its answers in.
    notice(&mut m, &mut ap, now, 1);
    assert_eq!(route_events(&mut m), [(true, CLIENT)]);
    // The same shim again: nothing changes.
    m.handle_udp(
        now,
        ap_ep(),
        &mut shim_notice(&mut ap, CLIENT, shim_ep(), 1),
    );
    assert_eq!(route_events(&mut m), []);
    // Its answers still come to the engine and go through the AP, sealed;
    // a legacy client's go back to the kernel (the straggler path).
    let (action, out) = tun_out(&mut m, now, &mut answer());
    assert_eq!(action, DataAction::Send { to: ap_ep() });
    assert!(out.is_some());
    let (legacy, _) = client_ep(7);
    let mut other = tcp(v6(HOA, 80), v6(legacy, 40000), ACK, 1, 1);
    assert_eq!(tun_out(&mut m, now, &mut other).0, DataAction::ToTun);
    assert_eq!(m.counters().direct_return, 1);
    // A full table evicts CLIENT for another: one route goes, one comes.
    let (c2, s2) = client_ep(2);
    m.handle_udp(now, ap_ep(), &mut shim_notice(&mut ap, c2, s2, 2));
    assert_eq!(route_events(&mut m), [(false, CLIENT), (true, c2)]);
    // Leaving forgets every correspondent.
    m.leave(now);
    assert_eq!(route_events(&mut m), [(false, c2)]);
}

#[test]
fn without_direct_return_no_route_events() {
    let now = t0();
    let (mut m, mut ap) = registered(now);
    notice(&mut m, &mut ap, now, 1);
    m.leave(now);
    assert_eq!(route_events(&mut m), []);
}
