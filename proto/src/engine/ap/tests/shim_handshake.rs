//! The shim handshake: Hello, cookie, Welcome and shim records.

use super::*;

#[test]
fn a_sealed_frame_naming_no_session_gets_a_zero_shim_cookie_once_a_second() {
    let (mut ap, now) = (ap(), t0());
    let stranger = ep("[2001:db8:5::1]:7000");
    let mut f = unsealed_data(None, &tcp(v6(client(1), 1), v6(HOA, 80), SYN, 1, 0));
    f[4..8].copy_from_slice(&77u32.to_be_bytes());
    for _ in 0..3 {
        let mut g = f.clone();
        assert_eq!(
            ap.handle_udp(now, stranger, &mut g),
            DataAction::Drop(DropReason::UnknownPeer)
        );
    }
    let t = transmits(&mut ap);
    assert_eq!(t.len(), 1, "once per second");
    assert!(matches!(
        unsealed(&t[0]).1.body,
        MessageBody::ShimCookie { nonce, .. } if nonce == [0; 16]
    ));
    let mut g = f.clone();
    ap.handle_udp(at(now, 1000), stranger, &mut g);
    assert_eq!(transmits(&mut ap).len(), 1);
}

#[test]
fn a_hello_without_cookie_gets_a_cookie_and_creates_nothing() {
    let (mut ap, now) = (ap(), t0());
    let shim = shim_at(1, 1);
    let (action, answer) = shim.send_hello(&mut ap, now, [0; 16]);
    assert_eq!(action, DataAction::Consumed);
    assert!(matches!(
        answer.map(|m| m.body),
        Some(MessageBody::ShimCookie { nonce, .. }) if nonce == shim.nonce
    ));
    // The answer is smaller than the Hello (no amplification).
    assert!(
        unsealed_frame(
            None,
            &MobilityMessage::new(MessageBody::ShimCookie {
                nonce: [0; 16],
                cookie: [0; 16]
            })
        )
        .len()
            < shim.hello([0; 16]).len()
    );
    // A forged cookie: the same.
    let (_, answer) = shim.send_hello(&mut ap, now, [9; 16]);
    assert!(matches!(
        answer.map(|m| m.body),
        Some(MessageBody::ShimCookie { .. })
    ));
    assert_eq!(ap.shim_client_count(), 0);
    assert!(events(&mut ap).is_empty());
}

#[test]
fn the_shim_handshake_makes_a_session_and_a_retransmitted_hello_the_same_welcome() {
    let (mut ap, now) = (ap(), t0());
    let mut shim = shim_at(1, 1);
    assert!(shim.handshake(&mut ap, now));
    assert_eq!(ap.shim_client_count(), 1);
    assert_eq!(ap.counters().shim_handshakes, 1);
    // The cookie from before: the Hello again (lost Welcome).
    let cookie = ap.cookies.as_ref().unwrap().make(
        crate::crypto::CookieKind::ShimHello,
        shim.ep,
        &shim.nonce,
    );
    let (_, first) = shim.send_hello(&mut ap, at(now, 1000), cookie);
    let (_, second) = shim.send_hello(&mut ap, at(now, 2000), cookie);
    assert_eq!(first, second);
    assert!(matches!(
        first.map(|m| m.body),
        Some(MessageBody::ShimWelcome { .. })
    ));
    assert_eq!(ap.counters().shim_handshakes, 1, "no new session");
    // Its sealed keepalive refreshes it, with no answer.
    let keepalive = MobilityMessage::new(MessageBody::BindingRefreshRequest);
    let mut f = sealed_control(shim.sessions(), Protection::Encrypt, None, &keepalive).unwrap();
    assert_eq!(
        ap.handle_udp(at(now, 5000), shim.ep, &mut f),
        DataAction::Consumed
    );
    assert!(transmits(&mut ap).is_empty());
    assert_eq!(
        ap.shim_clients().next().map(|(_, s)| s.last_seen),
        Some(at(now, 5000))
    );
}

#[test]
fn a_low_order_public_key_is_refused() {
    let (mut ap, now) = (ap(), t0());
    let mut shim = shim_at(1, 1);
    shim.dh.public = [0; 32];
    assert!(!shim.handshake(&mut ap, now));
    assert_eq!(ap.shim_client_count(), 0);
}

#[test]
fn a_new_shim_instance_replaces_the_record_and_the_next_notice_carries_it() {
    let (mut ap, now, mut m, mut shim) = ap_member_and_shim();
    let syn = tcp(v6(client(1), 40000), v6(HOA, 80), SYN, 1, 0);
    let mut f = sealed_data(shim.sessions(), None, &syn);
    ap.handle_udp(now, shim.ep, &mut f);
    transmits(&mut ap);
    let mut again = shim_at(1, 2);
    again.instance = [3; 8];
    assert!(again.handshake(&mut ap, at(now, 100)));
    assert_eq!(ap.shim_client_count(), 1);
    let mut f = sealed_data(again.sessions(), None, &syn);
    assert_eq!(
        ap.handle_udp(at(now, 200), again.ep, &mut f),
        send_to(m1_ep())
    );
    let t = transmits(&mut ap);
    assert_eq!(t.len(), 1);
    let mut notice = t[0].payload.clone();
    let msg = MobilityMessage::parse(&open(m.sessions(), &mut notice)).unwrap();
    assert_eq!(msg.shim_instance(), Some([3; 8]));
}
