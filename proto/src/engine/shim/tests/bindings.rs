//! Return routability and route-optimization bindings with members.

use super::*;

#[test]
fn a_care_of_test_is_answered_only_with_a_good_ticket() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let (_, _, ticket) = home_test(&mut s, &mut ap, now, M1);
    let mut bad = ticket;
    bad.1[0] ^= 1;
    let unknown_index = (ticket.0.wrapping_add(100), ticket.1);
    for (what, mut frame) in [
        ("no ticket", coti(Some(M1), None)),
        ("no binding id", coti(None, Some(ticket))),
        ("a bad ticket", coti(Some(M1), Some(bad))),
        ("another member's ticket", coti(Some(M2), Some(ticket))),
        (
            "an unknown nonce index",
            coti(Some(M1), Some(unknown_index)),
        ),
    ] {
        assert_eq!(
            s.handle_udp(now, care_of(M1), &mut frame),
            DataAction::Drop(DropReason::AuthFailed),
            "{what}"
        );
        assert!(transmits(&mut s).is_empty(), "no answer to {what}");
    }
    assert_eq!(s.counters().drops.get(DropReason::AuthFailed), 5);
    care_of_test(&mut s, now, M1, ticket);
    // The ticket lives as long as its nonce.
    let later = now + DEFAULT_NONCE_LIFETIME + DEFAULT_NONCE_INTERVAL;
    run_until(&mut s, later);
    assert_eq!(
        s.handle_udp(later, care_of(M1), &mut coti(Some(M1), Some(ticket))),
        DataAction::Drop(DropReason::AuthFailed)
    );
}

#[test]
fn a_verified_bu_gets_a_signed_ba_with_the_shims_session() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let m = return_routability(&mut s, &mut ap, now, M1);
    // Without a Session option: refused, no answer.
    let mut old = m.bu_with(7, 120, &m.kbm, None);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut old),
        DataAction::Drop(DropReason::Malformed)
    );
    assert!(transmits(&mut s).is_empty());
    events(&mut s);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut m.bu(7, 120)),
        DataAction::Consumed
    );
    let ba = m.ba(&mut s);
    assert_eq!(
        ba.body,
        MessageBody::BindingAck {
            status: ba_status::ACCEPTED,
            sequence: 7,
            lifetime: 30
        }
    );
    let kinds: Vec<_> = ba.options.iter().map(std::mem::discriminant).collect();
    assert_eq!(
        kinds,
        [
            std::mem::discriminant(&MobilityOption::Session {
                index: 0,
                nonce: [0; 16]
            }),
            std::mem::discriminant(&MobilityOption::BindingAuthorization([0; 12])),
        ],
        "Session, then the Binding Authorization Data"
    );
    let (is, _) = ba.session().expect("session");
    assert_ne!(is, 0);
    assert_eq!(
        events(&mut s),
        [ShimEvent::BindingUpdated {
            member: M1,
            care_of: care_of(M1),
            moved_from: None
        }]
    );
    let b = s.bindings().find(|(id, _)| **id == M1).map(|(_, b)| *b);
    assert!(b.is_some_and(|b| b.expires == now + Duration::from_secs(120) && !b.draining));
    // The same sequence number again is a replay, answered with the last one.
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut m.bu(7, 120)),
        DataAction::Drop(DropReason::Replay)
    );
    let ba = m.ba(&mut s);
    assert!(matches!(
        ba.body,
        MessageBody::BindingAck {
            status: ba_status::SEQUENCE_OUT_OF_WINDOW,
            sequence: 7,
            ..
        }
    ));
    assert_eq!(ba.session(), None);
    // A refresh with the same Kbm and Session keeps the session.
    s.handle_udp(now, care_of(M1), &mut m.bu(8, 120));
    assert_eq!(m.ba(&mut s).session().map(|x| x.0), Some(is));
}

#[test]
fn a_forged_bu_is_rejected() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let m = return_routability(&mut s, &mut ap, now, M1);
    let forged_kbm: Kbm = [0x5a; 32];
    let mut bu = m.bu_with(1, 120, &forged_kbm, Some((m.im, m.nm)));
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut bu),
        DataAction::Drop(DropReason::AuthFailed)
    );
    assert!(transmits(&mut s).is_empty(), "no answer to a forgery");
    assert_eq!(s.bindings().count(), 0);
    assert!(matches!(
        events(&mut s)[..],
        [ShimEvent::BindingRejected {
            reason: DropReason::AuthFailed,
            ..
        }]
    ));
}

#[test]
fn a_bu_on_expired_nonces_is_refused_with_138() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let m = return_routability(&mut s, &mut ap, now, M1);
    let later = now + DEFAULT_NONCE_LIFETIME + DEFAULT_NONCE_INTERVAL;
    run_until(&mut s, later);
    transmits(&mut s);
    assert_eq!(
        s.handle_udp(later, care_of(M1), &mut m.bu(1, 120)),
        DataAction::Drop(DropReason::Replay)
    );
    let t = transmits(&mut s);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].to, care_of(M1));
    assert!(matches!(
        unsealed_msg(&t[0].payload).body,
        MessageBody::BindingAck {
            status: ba_status::EXPIRED_NONCES,
            ..
        }
    ));
    assert_eq!(s.bindings().count(), 0);
}

#[test]
fn binding_errors_and_unknown_messages_get_no_answer_and_change_nothing() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    bound(&mut s, &mut ap, now, M1);
    let be = MobilityMessage::new(MessageBody::BindingError {
        status: 1,
        home_address: HOA,
    });
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut unsealed_frame(Some(M1), &be)),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    assert_eq!(s.bindings().count(), 1, "the binding stays");
    // An unknown MH type (250): no BE 2 any more.
    let mut unknown = unsealed_frame(None, &be);
    unknown[HEADER_LEN + 2] = 250;
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut unknown),
        DataAction::Drop(DropReason::UnexpectedMessage)
    );
    // Sealed data to an index we never gave out: dropped, no answer.
    let mut stray = seal(&mut ap.sessions, None, &tcp(server(), app(1), ACK, 1, 1));
    stray[4..8].copy_from_slice(&7u32.to_be_bytes());
    assert_eq!(
        s.handle_udp(now, care_of(M2), &mut stray),
        DataAction::Drop(DropReason::UnknownPeer)
    );
    assert!(transmits(&mut s).is_empty());
    assert_eq!(s.counters().binding_errors, 0);
}
