//! An AP restart found fast: silence, and the zero-nonce hint.

use super::multi_ap::{ap_b, registered_with_both};
use super::*;

/// What a restarted AP sends for a sealed frame naming a session it does
/// not have: an unsealed Shim Cookie of nonce 0.
fn hint() -> Vec<u8> {
    let msg = MobilityMessage::new(MessageBody::ShimCookie {
        nonce: [0; 16],
        cookie: [0; 16],
    });
    unsigned(None, &msg)
}

#[test]
fn a_silence_re_registration_retransmits_from_250_ms() {
    let now = t0();
    let (mut m, _ap) = registered(now);
    let silent = now + DEFAULT_AP_SILENCE;
    run_until(&mut m, silent);
    let bu = registration_bu(&mut m);
    let mut t = silent;
    for wait in [250, 500, 1000, 2000] {
        run_until(&mut m, t + Duration::from_millis(wait - 1));
        assert!(transmits(&mut m).is_empty(), "not before {wait} ms");
        t += Duration::from_millis(wait);
        run_until(&mut m, t);
        assert_eq!(registration_bu(&mut m).seq, bu.seq, "retransmitted");
    }
}

#[test]
fn the_zero_nonce_hint_re_registers_at_once_and_is_rate_limited() {
    let now = t0();
    // Before any session with the AP: nothing (anyone can send it).
    let mut m = member();
    m.start(now);
    registration_bu(&mut m);
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut hint()),
        DataAction::Drop(DropReason::UnexpectedMessage)
    );
    assert!(transmits(&mut m).is_empty());

    let (mut m, _a, _b) = registered_with_both(now);
    let t1 = at(now, 100);
    assert_eq!(m.handle_udp(t1, ap_b(), &mut hint()), DataAction::Consumed);
    let t = transmits(&mut m);
    assert_eq!(t.len(), 1, "a BU to B alone: {t:?}");
    assert_eq!(t[0].to, ap_b());
    let bu = parse_bu(&t[0]);
    assert_eq!(m.counters().ap_hints, 1);
    // Again within 500 ms: ignored.
    for ms in [0, 499] {
        assert_eq!(
            m.handle_udp(at(t1, ms), ap_b(), &mut hint()),
            DataAction::Drop(DropReason::UnexpectedMessage)
        );
    }
    // The retransmission comes after 250 ms (the AP is likely back).
    run_until(&mut m, at(t1, 250));
    assert_eq!(parse_bu(&transmits(&mut m)[0]).seq, bu.seq);
    let t2 = at(t1, 500);
    assert_eq!(m.handle_udp(t2, ap_b(), &mut hint()), DataAction::Consumed);
    let again = transmits(&mut m);
    assert_eq!(again.len(), 1);
    assert_eq!(parse_bu(&again[0]).seq, bu.seq.wrapping_add(1), "a new BU");
    assert_eq!(m.counters().ap_hints, 2);
    // A Shim Cookie with a nonce is not a hint (the member sends no Hello).
    let msg = MobilityMessage::new(MessageBody::ShimCookie {
        nonce: [1; 16],
        cookie: [0; 16],
    });
    assert_eq!(
        m.handle_udp(at(t2, 600), ap_ep(), &mut unsigned(None, &msg)),
        DataAction::Drop(DropReason::UnexpectedMessage)
    );
    // From anywhere else: not an AP.
    assert_eq!(
        m.handle_udp(at(t2, 600), ep("[2001:db8:e::1]:4790"), &mut hint()),
        DataAction::Drop(DropReason::UnknownPeer)
    );
    assert!(transmits(&mut m).is_empty());
}

#[test]
fn a_new_session_after_a_hint_is_an_ap_restart() {
    let now = t0();
    let (mut m, _a, _b) = registered_with_both(now);
    m.handle_udp(now, ap_b(), &mut hint());
    let t = transmits(&mut m);
    let bu = parse_bu(&t[0]);
    // The new AP knows no cookie: 202, then BA 0 with a new session.
    let cookie = [MobilityOption::Cookie(COOKIE_1)];
    m.handle_udp(now, ap_b(), &mut ba_with(202, bu.seq, 0, &cookie));
    let t = transmits(&mut m);
    assert_eq!(t[0].to, ap_b());
    let bu = parse_bu(&t[0]);
    assert_eq!(bu.cookie, Some(COOKIE_1));
    let mut new = accept_from(&mut m, now, ap_b(), &bu, 0xb2, [0xb2; 16]);
    assert_eq!(events(&mut m), [MemberEvent::ApRestarted { ap: ap_b() }]);
    assert_eq!(
        m.handle_udp(now, ap_b(), &mut new.data(&ping())),
        DataAction::ToTun
    );
    // A hint answered by the same session: no restart.
    let later = at(now, 600);
    m.handle_udp(later, ap_b(), &mut hint());
    let bu = parse_bu(&transmits(&mut m)[0]);
    accept_from(&mut m, later, ap_b(), &bu, 0xb2, [0xb2; 16]);
    assert!(events(&mut m).is_empty());
}
