//! Everything but the handshakes sealed: unsealed frames, grace, protection levels.

use super::*;

#[test]
fn unsealed_frames_that_must_be_sealed_are_dropped_unauthenticated() {
    let (mut ap, now, _m) = ap_with_member();
    // Data from a spoofed legacy client's address, unsealed: nothing made.
    let spoofed = SocketAddr::new(client(1).into(), 4000);
    let mut data = unsealed_data(None, &tcp(v6(client(1), 4000), v6(HOA, 80), SYN, 1, 0));
    assert_eq!(
        ap.handle_udp(now, spoofed, &mut data),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    // The member's own address does not help either.
    let mut data = unsealed_data(Some(M1), &tcp(v6(HOA, 80), v6(client(1), 4000), ACK, 1, 1));
    assert_eq!(
        ap.handle_udp(now, m1_ep(), &mut data),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    for body in [
        MessageBody::BindingRefreshRequest,
        MessageBody::HomeTestInit { cookie: [7; 8] },
    ] {
        let mut f = unsealed_frame(None, &MobilityMessage::new(body).with(bid(M1)));
        assert_eq!(
            ap.handle_udp(now, spoofed, &mut f),
            DataAction::Drop(DropReason::Unauthenticated)
        );
    }
    assert_eq!(ap.shim_client_count(), 0);
    assert!(transmits(&mut ap).is_empty(), "no answer");
    assert!(events(&mut ap).is_empty());
}

#[test]
fn a_replaced_session_opens_during_its_grace_then_its_index_is_forgotten() {
    let (mut ap, now, mut m) = ap_with_member();
    let old_frame = sealed_data(
        m.sessions(),
        Some(M1),
        &tcp(v6(HOA, 80), v6(client(1), 1), ACK, 1, 1),
    );
    // A new Session (the member drew new values): a new AP session.
    m.nonce = [99; 16];
    m.index += 1;
    m.register(&mut ap, at(now, 100));
    assert_eq!(ap.index.len(), 2, "current and previous");
    let mut f = old_frame.clone();
    assert_eq!(
        ap.handle_udp(at(now, 200), m1_ep(), &mut f),
        DataAction::ToTun
    );
    run_until(&mut ap, at(now, 100) + crate::engine::sealed::SESSION_GRACE);
    assert_eq!(ap.index.len(), 1, "the previous index is gone");
}

#[test]
fn integrity_protection_sends_clear_payloads_and_accepts_both() {
    let (mut ap, now) = (ap_with(|c| c.protection = Protection::Integrity), t0());
    let mut m = TestMember::new(M1, m1_ep());
    m.register(&mut ap, now);
    let (c, h) = (v6(client(1), 40000), v6(HOA, 80));
    let syn = tcp(c, h, SYN, 1, 0);
    let mut frame = vec![0u8; HEADER_LEN];
    frame.extend_from_slice(&syn);
    frame.extend_from_slice(&[0; TAG_LEN]);
    assert_eq!(ap.handle_tun_frame(now, &mut frame), send_to(m1_ep()));
    assert_eq!(
        frame[1] & crate::crypto::session::FLAG_ENCRYPTED,
        0,
        "E clear"
    );
    assert_eq!(
        &frame[HEADER_LEN..HEADER_LEN + 40],
        &syn[..40],
        "clear payload"
    );
    let index = u32::from_be_bytes(frame[4..8].try_into().unwrap());
    m.sessions()
        .open(now, index, Protection::Integrity, &mut frame)
        .expect("authenticated");
    // An encrypted answer is accepted too.
    let mut answer = sealed_data(m.sessions(), Some(M1), &tcp(h, c, ACK, 1, 2));
    assert_eq!(ap.handle_udp(now, m1_ep(), &mut answer), DataAction::ToTun);
}

#[test]
fn an_encrypt_ap_refuses_frames_without_e() {
    let (mut ap, now, mut m) = ap_with_member();
    let (c, h) = (v6(client(1), 40000), v6(HOA, 80));
    let mut f = vec![0u8; HEADER_LEN];
    f.extend_from_slice(&tcp(h, c, ACK, 1, 2));
    f.extend_from_slice(&[0; TAG_LEN]);
    seal_data(m.sessions(), Protection::Integrity, Some(M1), &mut f).unwrap();
    assert_eq!(
        ap.handle_udp(now, m1_ep(), &mut f),
        DataAction::Drop(DropReason::AuthFailed)
    );
}
