//! Registration with the AP: BUs, cookies, BAs and the AP session.

use super::*;

fn ba(status: u8, seq: u16, lifetime: u16) -> Vec<u8> {
    ba_with(status, seq, lifetime, &[])
}

#[test]
fn registration_is_sent_at_start_retransmitted_and_refreshed_on_its_timer() {
    let (mut m, now) = (member(), t0());
    assert_eq!(m.state(), RegistrationState::Idle);
    m.start(now);
    let bu = registration_bu(&mut m);
    assert_eq!(bu.lifetime, 15, "60 s in 4-second units");
    assert_eq!(bu.cookie, None, "no cookie yet");
    assert_eq!(m.state(), RegistrationState::Registering);
    // No BA: the same BU again after the initial retransmission timeout.
    run_until(&mut m, now + DEFAULT_INITIAL_RETRANSMIT);
    let again = registration_bu(&mut m);
    assert_eq!((again.seq, again.session), (bu.seq, bu.session));

    let then = at(now, 1_100);
    let mut ap = accept(&mut m, then, &bu, 9, [9; 16]);
    assert_eq!(
        m.state(),
        RegistrationState::Registered {
            expires: then + DEFAULT_LIFETIME
        }
    );
    assert_eq!(
        events(&mut m),
        [MemberEvent::Registered {
            ap: ap_ep(),
            care_of: care_of(),
            lifetime: DEFAULT_LIFETIME
        }]
    );
    // The AP's heartbeats keep the member from the silence rule.
    let mut t = then;
    while t + Duration::from_secs(1) < then + DEFAULT_LIFETIME * 3 / 4 {
        t += Duration::from_secs(1);
        run_until(&mut m, t);
        m.handle_udp(t, ap_ep(), &mut ap.data(&ping()));
    }
    run_until(
        &mut m,
        then + DEFAULT_LIFETIME * 3 / 4 - Duration::from_millis(1),
    );
    assert!(
        transmits(&mut m).is_empty(),
        "nothing before the refresh point"
    );
    run_until(&mut m, then + DEFAULT_LIFETIME * 3 / 4);
    let refresh = registration_bu(&mut m);
    assert_eq!(refresh.seq, bu.seq.wrapping_add(1));
    assert_eq!(
        refresh.session, bu.session,
        "Session drawn once per process"
    );
    assert_eq!(refresh.cookie, Some(COOKIE_2), "the newest cookie");
}

#[test]
fn a_signed_202_makes_a_new_bu_with_the_cookie_at_once() {
    let (mut m, now) = (member(), t0());
    m.start(now);
    let bu = registration_bu(&mut m);
    // For another sequence number: a replay, ignored.
    let cookie = [MobilityOption::Cookie(COOKIE_1)];
    assert_eq!(
        m.handle_udp(
            now,
            ap_ep(),
            &mut ba_with(202, bu.seq.wrapping_add(5), 0, &cookie)
        ),
        DataAction::Drop(DropReason::Replay)
    );
    assert!(transmits(&mut m).is_empty());
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut ba_with(202, bu.seq, 0, &cookie)),
        DataAction::Consumed
    );
    let again = registration_bu(&mut m);
    assert_eq!(again.seq, bu.seq.wrapping_add(1), "a new sequence number");
    assert_eq!(again.cookie, Some(COOKIE_1));
    assert_eq!(again.session, bu.session);
    assert_eq!(m.state(), RegistrationState::Registering);
    // An unsigned 202 is nothing.
    let msg = MobilityMessage::new(MessageBody::BindingAck {
        status: 202,
        sequence: again.seq,
        lifetime: 0,
    })
    .with(bid(ID))
    .with(MobilityOption::Cookie(COOKIE_2));
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut unsigned(Some(ID), &msg)),
        DataAction::Drop(DropReason::AuthFailed)
    );
    assert!(transmits(&mut m).is_empty());
    accept(&mut m, now, &again, 3, [3; 16]);
    assert!(matches!(m.state(), RegistrationState::Registered { .. }));
}

#[test]
fn the_ba_session_opens_sealed_frames_from_the_ap_and_a_brr_triggers_a_bu() {
    let now = t0();
    let (mut m, mut ap) = registered(now);
    let brr = MobilityMessage::new(MessageBody::BindingRefreshRequest).with(bid(ID));
    // Unsealed (even signed, as v1 had it): dropped.
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut signed(ID, brr.clone(), KEY)),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    assert!(transmits(&mut m).is_empty());
    let mut frame = ap.seal(brr);
    // From any endpoint: the session authenticates it.
    assert_eq!(
        m.handle_udp(now, ep("[2001:db8:a::9]:1"), &mut frame.clone()),
        DataAction::Consumed
    );
    assert_eq!(registration_bu(&mut m).cookie, Some(COOKIE_2));
    // The same frame again is a replay.
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut frame),
        DataAction::Drop(DropReason::Replay)
    );
    // A forged frame under our index does not open.
    let mut forged = ap.seal(MobilityMessage::new(MessageBody::BindingRefreshRequest));
    let n = forged.len();
    forged[n - 1] ^= 1;
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut forged),
        DataAction::Drop(DropReason::AuthFailed)
    );
    assert_eq!(m.counters().drops.get(DropReason::Unauthenticated), 1);
}

#[test]
fn a_new_ap_session_replaces_the_old_one() {
    let now = t0();
    let (mut m, mut old) = registered(now);
    // The AP restarted: the refresh BU meets a new session.
    m.handle_udp(
        now,
        ap_ep(),
        &mut old.seal(MobilityMessage::new(MessageBody::BindingRefreshRequest)),
    );
    let bu = registration_bu(&mut m);
    let mut new = accept(&mut m, now, &bu, 0xb2, [0xb2; 16]);
    assert_ne!(new.theirs, old.theirs);
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut new.data(&inbound())),
        DataAction::ToTun
    );
    // Answers go sealed in the new session.
    let (action, out) = tun_out(&mut m, now, &mut answer());
    assert_eq!(action, DataAction::Send { to: ap_ep() });
    let (to, frame) = out.expect("sealed answer");
    assert_eq!(to, ap_ep());
    let mut f = frame.clone();
    let idx = session_index_of(&f).unwrap();
    assert_eq!(idx, 0xb2, "the AP's new index");
    new.sessions.open(now, idx, P, &mut f).unwrap();
    assert_eq!(&f[HEADER_LEN..f.len() - TAG_LEN], &answer()[..]);
}

#[test]
fn forged_unsigned_146_never_refuses() {
    let (mut m, now) = (member(), t0());
    m.start(now);
    let bu = registration_bu(&mut m);
    let refusal = |seq| {
        let msg = MobilityMessage::new(MessageBody::BindingAck {
            status: ba_status::AUTHENTICATION_FAILED,
            sequence: seq,
            lifetime: 0,
        })
        .with(bid(ID));
        unsigned(Some(ID), &msg)
    };
    // An off-path sender does not know the sequence number.
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut refusal(bu.seq.wrapping_add(9))),
        DataAction::Drop(DropReason::AuthFailed)
    );
    for _ in 0..1000 {
        assert_eq!(
            m.handle_udp(now, ap_ep(), &mut refusal(bu.seq)),
            DataAction::Consumed
        );
    }
    assert_eq!(m.state(), RegistrationState::Registering);
    assert_eq!(m.counters().auth_failures_reported, 1000);
    assert!(
        events(&mut m)
            .iter()
            .all(|e| *e == MemberEvent::AuthFailureReported { ap: ap_ep() })
    );
    // The member keeps retrying, once a second while it has not reached
    // the AP (AP_PROBE_INTERVAL caps the backoff).
    for n in 1..=3 {
        run_until(&mut m, now + AP_PROBE_INTERVAL * n);
        assert_eq!(registration_bu(&mut m).seq, bu.seq);
    }
}

#[test]
fn signed_refusals_stay_final() {
    let (mut m, now) = (member(), t0());
    m.start(now);
    let bu = registration_bu(&mut m);
    m.handle_udp(now, ap_ep(), &mut ba(129, bu.seq, 0));
    assert_eq!(m.state(), RegistrationState::Refused { status: 129 });
    assert_eq!(
        events(&mut m),
        [MemberEvent::RegistrationRefused {
            ap: ap_ep(),
            status: 129
        }]
    );
    run_until(&mut m, now + Duration::from_secs(600));
    assert!(transmits(&mut m).is_empty());
}

#[test]
fn a_ba_0_without_session_is_not_a_registration() {
    let (mut m, now) = (member(), t0());
    m.start(now);
    let bu = registration_bu(&mut m);
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut ba(0, bu.seq, 15)),
        DataAction::Drop(DropReason::Malformed)
    );
    assert_eq!(m.state(), RegistrationState::Registering);
}

#[test]
fn ap_silence_re_registers_at_once() {
    let now = t0();
    let (mut m, mut ap) = registered(now);
    // Sealed frames from the AP keep it quiet...
    let t1 = at(now, 1_000);
    run_until(&mut m, t1);
    m.handle_udp(t1, ap_ep(), &mut ap.data(&ping()));
    run_until(&mut m, t1 + DEFAULT_AP_SILENCE - Duration::from_millis(1));
    assert!(transmits(&mut m).is_empty());
    // ...one and a half seconds without one: a new BU at once.
    run_until(&mut m, t1 + DEFAULT_AP_SILENCE);
    let bu = registration_bu(&mut m);
    // The restarted AP asks for a cookie, then accepts with a new session.
    let t2 = t1 + DEFAULT_AP_SILENCE;
    m.handle_udp(
        t2,
        ap_ep(),
        &mut ba_with(202, bu.seq, 0, &[MobilityOption::Cookie(COOKIE_1)]),
    );
    let bu = registration_bu(&mut m);
    assert_eq!(bu.cookie, Some(COOKIE_1));
    let mut new = accept(&mut m, t2, &bu, 0x77, [0x77; 16]);
    assert_eq!(
        m.handle_udp(t2, ap_ep(), &mut new.data(&inbound())),
        DataAction::ToTun
    );
}

#[test]
fn unsealed_frames_from_the_ap_are_dropped() {
    let now = t0();
    let (mut m, _ap) = registered(now);
    let notice = MobilityMessage::new(MessageBody::ShimNotice {
        client: CLIENT,
        shim: shim_ep(),
    })
    .with(bid(ID))
    .with(MobilityOption::ShimInstance([1; 8]));
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut signed(ID, notice, KEY)),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    assert_eq!(m.correspondents().count(), 0, "no state");
    let brr = MobilityMessage::new(MessageBody::BindingRefreshRequest).with(bid(ID));
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut unsigned(Some(ID), &brr)),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    let mut data = crate::engine::testutil::data_frame(Some(ID), &inbound());
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut data),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    assert!(transmits(&mut m).is_empty(), "nothing answered");
    assert_eq!(m.counters().drops.get(DropReason::Unauthenticated), 3);
}

#[test]
fn the_observed_endpoint_of_a_ba_0_tells_whether_we_are_behind_a_nat() {
    let session = MobilityOption::Session {
        index: 9,
        nonce: [9; 16],
    };
    let now = t0();
    // The AP saw our own endpoint: no NAT; then a NAT's mapping.
    for (seen, nat) in [(care_of(), false), (ep("198.18.0.9:31000"), true)] {
        let mut m = member();
        m.start(now);
        let bu = registration_bu(&mut m);
        let opts = [session.clone(), MobilityOption::Endpoint(seen)];
        m.handle_udp(now, ap_ep(), &mut ba_with(0, bu.seq, 15, &opts));
        assert_eq!(m.access_points().next().unwrap().observed, Some(seen));
        assert_eq!(m.behind_nat(), nat);
        // A move forgets it until the next BA 0.
        m.set_care_of(now, ep("[2001:db8:2::1]:4790"));
        assert_eq!(m.access_points().next().unwrap().observed, None);
        assert!(!m.behind_nat());
    }
}
