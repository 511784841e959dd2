//! Member registration: cookies, keys, sequence numbers, instances.

use super::*;

#[test]
fn registration_needs_a_cookie_round_trip_and_makes_a_session() {
    let (mut ap, now) = (ap(), t0());
    let mut m = TestMember::new(M1, m1_ep());
    let ba = m.send_bu(&mut ap, now);
    assert_eq!(ba_status_of(&ba), ba_status::RETRY_WITH_COOKIE);
    assert!(ba.cookie().is_some(), "202 carries a cookie");
    assert!(ba.authentication().is_some(), "202 is signed");
    assert!(ap.member(M1).is_none(), "202 creates nothing");
    assert!(events(&mut ap).is_empty());

    let ba = m.send_bu(&mut ap, now);
    assert_eq!(ba_status_of(&ba), ba_status::ACCEPTED);
    assert!(ba.session().is_some() && ba.cookie().is_some());
    // STUN-style: the BA 0 tells the member the endpoint its BU came from.
    assert_eq!(ba.endpoint(), Some(m1_ep()));
    assert_eq!(ap.member(M1).map(|e| e.care_of), Some(m1_ep()));
    assert_eq!(ap.counters().cookie_challenges, 1);

    // A refresh with the same Session keeps the session (same Ia, Na).
    let (ia, na) = ba.session().unwrap();
    let again = m.send_bu(&mut ap, at(now, 500));
    assert_eq!(again.session(), Some((ia, na)));
}

#[test]
fn the_heartbeat_brr_is_sealed_with_the_members_keys() {
    let (mut ap, now, mut m) = ap_with_member();
    run_until(&mut ap, now + DEFAULT_HEARTBEAT);
    let t = transmits(&mut ap);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].to, m1_ep());
    let mut frame = t[0].payload.clone();
    assert_ne!(
        frame[1] & crate::crypto::session::FLAG_ENCRYPTED,
        0,
        "E set"
    );
    let body = open(m.sessions(), &mut frame);
    let msg = MobilityMessage::parse(&body).unwrap();
    assert_eq!(msg.body, MessageBody::BindingRefreshRequest);
    assert_eq!(
        msg.authentication(),
        None,
        "sealed: no Authentication option"
    );
}

#[test]
fn a_replayed_bu_from_another_endpoint_gets_202_and_never_moves_the_member() {
    let (mut ap, now, mut m) = ap_with_member();
    // The attacker captured the member's last signed BU (cookie included).
    let captured = m.bu(KEY);
    let attacker = ep("[2001:db8:bad::1]:4790");
    let mut replay = captured.clone();
    assert_eq!(
        ap.handle_udp(at(now, 10), attacker, &mut replay),
        DataAction::Consumed
    );
    let t = transmits(&mut ap);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].to, attacker);
    let (_, ba) = unsealed(&t[0]);
    assert_eq!(ba_status_of(&ba), ba_status::RETRY_WITH_COOKIE);
    assert_eq!(ap.member(M1).map(|e| e.care_of), Some(m1_ep()));
    // With the fresh cookie it cannot re-sign: the MAC covers the cookie.
    assert!(events(&mut ap).is_empty());
}

#[test]
fn after_an_ap_restart_an_old_cookie_gets_202() {
    let (_, now, mut m) = ap_with_member();
    let mut restarted = ap_with(|c| c.seed = [8; 32]);
    let ba = m.send_bu(&mut restarted, at(now, 1000));
    assert_eq!(ba_status_of(&ba), ba_status::RETRY_WITH_COOKIE);
    assert!(restarted.member(M1).is_none());
    // The member retries at once with the new cookie and is back.
    m.register(&mut restarted, at(now, 1001));
    assert!(restarted.member(M1).is_some());
}

#[test]
fn a_key_registers_only_its_member_ids() {
    let (mut ap, now) = (
        ap_with(|c| c.keys[0].members = Some(vec![1..=1, 5..=9])),
        t0(),
    );
    let mut m2 = TestMember::new(M2, m2_ep());
    let ba = m2.send_bu(&mut ap, now);
    assert_eq!(
        ba_status_of(&ba),
        ba_status::ADMINISTRATIVELY_PROHIBITED,
        "signed 129"
    );
    assert!(ap.member(M2).is_none());
    let mut m7 = TestMember::new(MemberId(7), ep("[2001:db8:7::1]:4790"));
    m7.register(&mut ap, now);
    assert!(ap.member(MemberId(7)).is_some());
}

#[test]
fn wrong_key_is_refused_with_146_unsigned() {
    let (mut ap, now) = (ap(), t0());
    let mut m = TestMember::new(M1, m1_ep());
    let mut bu = m.bu(b"not-the-right-key");
    assert_eq!(ap.handle_udp(now, m1_ep(), &mut bu), DataAction::Consumed);
    let t = transmits(&mut ap);
    let (_, ba) = unsealed(&t[0]);
    assert_eq!(ba_status_of(&ba), ba_status::AUTHENTICATION_FAILED);
    assert_eq!(ba.authentication(), None);
    assert!(ap.member(M1).is_none());
}

#[test]
fn replayed_sequence_is_refused_with_135() {
    let (mut ap, now, mut m) = ap_with_member();
    m.seq -= 1;
    let ba = m.send_bu(&mut ap, at(now, 10));
    assert_eq!(ba_status_of(&ba), ba_status::SEQUENCE_OUT_OF_WINDOW);
    assert_eq!(ap.counters().drops.get(DropReason::Replay), 1);
}

#[test]
fn a_second_live_instance_of_an_id_is_refused_with_200() {
    let (mut ap, now, _m) = ap_with_member();
    let mut clash = TestMember::new(M1, m2_ep());
    clash.instance = 99;
    let ba = clash.send_bu(&mut ap, now);
    assert_eq!(ba_status_of(&ba), ba_status::RETRY_WITH_COOKIE);
    let ba = clash.send_bu(&mut ap, now);
    assert_eq!(ba_status_of(&ba), ba_status::MEMBER_ID_IN_USE);
    assert_eq!(ap.member(M1).map(|m| m.care_of), Some(m1_ep()));
}
