//! The handshake with the AP: Hello, cookie, Welcome and the AP session.

use super::*;

#[test]
fn the_handshake_takes_a_cookie_round_trip_and_seals_both_ways() {
    let now = t0();
    let mut s = Shim::new(now, config());
    let first = one_hello(&mut s);
    assert_eq!(first.0, s.instance());
    assert_eq!(first.3, [0; 16], "no cookie yet");
    assert!(!s.has_ap_session());
    // A cookie for another nonce is not the AP's answer.
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut cookie_frame([7; 16], [0xc0; 16])),
        DataAction::Drop(DropReason::AuthFailed)
    );
    assert!(transmits(&mut s).is_empty());
    s.handle_udp(now, ap_ep(), &mut cookie_frame(first.2, [0xc0; 16]));
    let second = one_hello(&mut s);
    assert_eq!(
        (second.0, second.1, second.2, second.3, second.4),
        (first.0, first.1, first.2, [0xc0; 16], first.4),
        "the same Hello with the cookie"
    );
    let (mut w, session) = welcome(&second, AP_INDEX, 1);
    assert_eq!(s.handle_udp(now, ap_ep(), &mut w), DataAction::Consumed);
    assert!(s.has_ap_session());
    assert_eq!(
        events(&mut s),
        [ShimEvent::ApSession {
            index: first.1,
            renewed: false,
            client: CLIENT,
            observed: Some(local()),
        }]
    );
    assert!(transmits(&mut s).is_empty());
    // No retransmission after the Welcome; the AP's answer to a
    // retransmitted Hello (the same Welcome) changes nothing.
    run_until(&mut s, now + Duration::from_secs(60));
    assert!(transmits(&mut s).is_empty());
    let (mut again, _) = welcome(&second, AP_INDEX, 1);
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut again),
        DataAction::Drop(DropReason::UnexpectedMessage)
    );
    assert_eq!(
        s.ap.sessions.as_ref().map(|x| x.current().remote_index),
        Some(AP_INDEX)
    );

    let mut ap = TestAp {
        sessions: PeerSessions::new(session),
    };
    let syn = tcp(app(40000), server(), SYN, 1, 0);
    let (to, frame) = out(&mut s, now, &syn).expect("sent");
    assert_eq!(to, ap_ep());
    assert_ne!(frame[1] & FLAG_ENCRYPTED, 0, "encrypted by default");
    assert_ne!(&frame[HEADER_LEN..HEADER_LEN + syn.len()], &syn[..]);
    let (header, packet) = ap.open(now, &frame);
    assert_eq!((header.member, packet), (None, syn.clone()));
    let mut answer = ap.data(Some(M1), &tcp(server(), app(40000), SYN, 100, 2));
    assert_eq!(s.handle_udp(now, ap_ep(), &mut answer), DataAction::ToTun);
    let key = inner::inspect(&syn).expect("valid").flow;
    assert_eq!(s.flow(&key).and_then(|f| f.member), Some(M1));
    assert_eq!(s.counters().ap_sessions, 1);
}

#[test]
fn the_hello_is_retransmitted_with_backoff_until_a_welcome() {
    let now = t0();
    let mut s = Shim::new(now, config());
    let first = one_hello(&mut s);
    let mut at = now;
    for gap in [1, 2, 4, 8, 16, 32, 32] {
        let next = s.poll_timeout().expect("a timer");
        run_until(
            &mut s,
            at + Duration::from_secs(gap) - Duration::from_millis(1),
        );
        assert!(transmits(&mut s).is_empty(), "not before {gap} s");
        at += Duration::from_secs(gap);
        assert!(next <= at);
        run_until(&mut s, at);
        let again = one_hello(&mut s);
        assert_eq!((again.1, again.2), (first.1, first.2), "the same Hello");
    }
    let (mut w, _) = welcome(&first, AP_INDEX, 1);
    s.handle_udp(at, ap_ep(), &mut w);
    run_until(&mut s, at + Duration::from_secs(64));
    assert!(transmits(&mut s).is_empty());
    assert_eq!(s.counters().hellos_sent, 8);
}

#[test]
fn no_packet_leaves_before_the_session() {
    let now = t0();
    let mut s = Shim::new(now, config());
    let hello = one_hello(&mut s);
    let syn = tcp(app(40000), server(), SYN, 1, 0);
    assert_eq!(
        out(&mut s, now, &syn),
        Err(DataAction::Drop(DropReason::NoSession))
    );
    assert_eq!(
        tun(&mut s, now, &mut syn.clone()),
        DataAction::Drop(DropReason::NoSession)
    );
    assert_eq!(s.counters().drops.get(DropReason::NoSession), 2);
    assert!(transmits(&mut s).is_empty());
    assert_eq!(s.flows().count(), 0);
    let (mut w, session) = welcome(&hello, AP_INDEX, 1);
    s.handle_udp(now, ap_ep(), &mut w);
    // Sent once the session is up: header | packet | tag, sealed.
    let mut frame = [&[0u8; HEADER_LEN][..], &syn, &[0u8; TAG_LEN]].concat();
    let pkt = TunPacket::new(&mut frame).expect("room");
    assert_eq!(s.handle_tun(now, pkt), DataAction::Send { to: ap_ep() });
    let mut ap = PeerSessions::new(session);
    assert_eq!(open(&mut ap, now, &frame).1, syn);
}

#[test]
fn a_welcome_needs_our_nonce_from_the_ap_and_a_good_key() {
    let now = t0();
    let mut s = Shim::new(now, config());
    let hello = one_hello(&mut s);
    let (_, is, ns, cookie, public) = hello;
    // Wrong nonce: an off-path guess.
    let (mut w, _) = welcome(&(hello.0, is, [1; 16], cookie, public), AP_INDEX, 1);
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut w),
        DataAction::Drop(DropReason::AuthFailed)
    );
    // Right nonce, from somewhere else than the AP.
    let (mut w, _) = welcome(&hello, AP_INDEX, 1);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut w.clone()),
        DataAction::Drop(DropReason::UnexpectedMessage)
    );
    // Right nonce, low-order AP key (all zero).
    let mut low = unsealed_frame(
        None,
        &MobilityMessage::new(MessageBody::ShimWelcome {
            nonce: ns,
            index: AP_INDEX,
            ap_nonce: [3; 16],
            public: [0; 32],
        })
        .with(MobilityOption::ClientAddress(CLIENT)),
    );
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut low),
        DataAction::Drop(DropReason::AuthFailed)
    );
    assert!(!s.has_ap_session());
    assert!(events(&mut s).is_empty());
    // The pending handshake survived all of it.
    assert_eq!(s.handle_udp(now, ap_ep(), &mut w), DataAction::Consumed);
    assert!(s.has_ap_session());
}

#[test]
fn a_zero_nonce_cookie_starts_a_new_handshake_and_the_old_session_works_until_the_welcome() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let old_hello_index = s.ap.sessions.as_ref().expect("up").current().local_index;
    let later = now + Duration::from_secs(5);
    assert_eq!(
        s.handle_udp(later, ap_ep(), &mut cookie_frame([0; 16], [0; 16])),
        DataAction::Consumed
    );
    let fresh = one_hello(&mut s);
    assert_eq!(fresh.0, s.instance(), "same instance");
    assert_ne!(fresh.1, old_hello_index, "fresh Is");
    assert_eq!(fresh.3, [0; 16]);
    // Another one while the handshake is pending: nothing new.
    s.handle_udp(later, ap_ep(), &mut cookie_frame([0; 16], [0; 16]));
    assert!(transmits(&mut s).is_empty());
    // The old session still works both ways.
    let syn = tcp(app(40000), server(), SYN, 1, 0);
    let (_, frame) = out(&mut s, later, &syn).expect("sent");
    assert_eq!(ap.open(later, &frame).1, syn);
    let mut answer = ap.data(Some(M1), &tcp(server(), app(40000), SYN, 100, 2));
    assert_eq!(s.handle_udp(later, ap_ep(), &mut answer), DataAction::ToTun);
    // The new Welcome switches; the old session opens frames for its grace.
    let (mut w, new_session) = welcome(&fresh, AP_INDEX + 1, 2);
    assert_eq!(s.handle_udp(later, ap_ep(), &mut w), DataAction::Consumed);
    assert_eq!(
        events(&mut s),
        [ShimEvent::ApSession {
            index: fresh.1,
            renewed: true,
            client: CLIENT,
            observed: Some(local()),
        }]
    );
    let mut new_ap = TestAp {
        sessions: PeerSessions::new(new_session),
    };
    let ack = tcp(app(40000), server(), ACK, 2, 101);
    let (_, frame) = out(&mut s, later, &ack).expect("sent");
    assert_eq!(session_index_of(&frame), Some(AP_INDEX + 1), "new session");
    assert_eq!(new_ap.open(later, &frame).1, ack);
    let late = tcp(server(), app(40000), ACK, 101, 3);
    assert_eq!(
        s.handle_udp(later, ap_ep(), &mut ap.data(Some(M1), &late)),
        DataAction::ToTun,
        "old session in its grace"
    );
    // A zero cookie within a second of the last start: nothing.
    s.handle_udp(later, ap_ep(), &mut cookie_frame([0; 16], [0; 16]));
    assert!(transmits(&mut s).is_empty());
    let after = later + SESSION_GRACE;
    run_until(&mut s, after);
    assert_eq!(
        s.handle_udp(after, ap_ep(), &mut ap.data(Some(M1), &late)),
        DataAction::Drop(DropReason::UnknownPeer),
        "grace over"
    );
}

#[test]
fn the_hello_says_our_local_endpoint_and_home_address() {
    let mut s = Shim::new(t0(), config());
    let t = transmits(&mut s);
    let msg = unsealed_msg(&t[0].payload);
    assert_eq!(msg.endpoint(), Some(local()));
    assert_eq!(msg.home_address(), Some(HOA));
}

#[test]
fn behind_a_nat_the_welcome_gives_the_client_address_and_keepalives_come_faster() {
    let now = t0();
    let mut s = Shim::new(now, config());
    let first = one_hello(&mut s);
    s.handle_udp(now, ap_ep(), &mut cookie_frame(first.2, [0xc0; 16]));
    let second = one_hello(&mut s);
    assert!(!s.behind_nat());
    let c: Ipv6Addr = "fd00:4841:cccc::42".parse().unwrap();
    let public = ep("198.18.0.10:40000");
    let (mut w, session) = welcome_for(&second, AP_INDEX, 1, c, public);
    assert_eq!(s.handle_udp(now, ap_ep(), &mut w), DataAction::Consumed);
    assert_eq!(s.client_address(), Some(c));
    assert_eq!(s.observed(), Some(public));
    assert!(s.behind_nat());
    assert_eq!(
        events(&mut s),
        [ShimEvent::ApSession {
            index: first.1,
            renewed: false,
            client: c,
            observed: Some(public),
        }]
    );
    // The session's keys are bound to C: the AP opens what we seal.
    let mut ap = TestAp {
        sessions: PeerSessions::new(session),
    };
    let syn = tcp(v6(c, 40000), server(), SYN, 1, 0);
    let (to, frame) = out(&mut s, now, &syn).expect("sent");
    assert_eq!(to, ap_ep());
    assert_eq!(ap.open(now, &frame).1, syn);
    // With a flow, the keepalive comes every nat_keepalive (25 s).
    run_until(&mut s, now + DEFAULT_NAT_KEEPALIVE);
    assert_eq!(ap.messages(&mut s, now).len(), 1);
    run_until(&mut s, now + DEFAULT_NAT_KEEPALIVE * 2);
    assert_eq!(ap.messages(&mut s, now).len(), 1);
    assert_eq!(s.counters().keepalives, 2);
}

#[test]
fn a_welcome_without_client_address_draws_a_new_instance_and_hand_shakes_again() {
    let now = t0();
    let mut s = Shim::new(now, config());
    let old = s.instance();
    let first = one_hello(&mut s);
    s.handle_udp(now, ap_ep(), &mut cookie_frame(first.2, [0xc0; 16]));
    let second = one_hello(&mut s);
    let taken = unsealed_frame(
        None,
        &MobilityMessage::new(MessageBody::ShimWelcome {
            nonce: second.2,
            index: 0,
            ap_nonce: [0; 16],
            public: [0; 32],
        })
        .with(MobilityOption::Endpoint(ep("198.18.0.10:40000"))),
    );
    // Only the echo of our nonce counts.
    let mut forged = taken.clone();
    forged[HEADER_LEN + 8] ^= 1;
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut forged),
        DataAction::Drop(DropReason::AuthFailed)
    );
    assert_eq!(s.instance(), old);
    assert_eq!(
        s.handle_udp(at(now, 100), ap_ep(), &mut taken.clone()),
        DataAction::Consumed
    );
    assert_ne!(s.instance(), old, "a new instance");
    assert_eq!(s.counters().pool_collisions, 1);
    assert!(!s.has_ap_session());
    // At most one handshake a second: the new Hello 1 s after the last.
    run_until(&mut s, at(now, 999));
    assert!(transmits(&mut s).is_empty());
    run_until(&mut s, at(now, 1000));
    let again = one_hello(&mut s);
    assert_eq!(again.0, s.instance());
    assert_ne!(again.2, second.2, "a new nonce");
}
