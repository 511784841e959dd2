//! Return routability and binding a client's shim.

use super::*;

#[test]
fn the_coti_goes_only_after_the_hot_with_its_ticket() {
    let now = t0();
    let (mut m, mut ap) = registered(now);
    let home_cookie = notice(&mut m, &mut ap, now, 1);
    assert_eq!(
        events(&mut m),
        [MemberEvent::ReturnRoutabilityStarted { client: CLIENT }]
    );
    // A HoT without a ticket gives nothing to show the shim.
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut ap.seal(home_test_msg(home_cookie, None))),
        DataAction::Drop(DropReason::Malformed)
    );
    // An unsealed HoT (v1 style) is dropped.
    assert_eq!(
        m.handle_udp(
            now,
            ap_ep(),
            &mut signed(ID, home_test_msg(home_cookie, Some(TICKET)), KEY)
        ),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    assert!(transmits(&mut m).is_empty(), "still no CoTI");
    // The HoTI is retransmitted while the HoT is missing.
    run_until(&mut m, now + DEFAULT_INITIAL_RETRANSMIT);
    assert_eq!(hoti(&mut m, &mut ap), home_cookie);
    let care_of_cookie = home_test(&mut m, &mut ap, now, home_cookie);
    // A care-of test with the wrong cookie is not ours.
    assert_eq!(
        m.handle_udp(now, shim_ep(), &mut care_of_test([0; 8], CARE_OF_TOKEN)),
        DataAction::Drop(DropReason::AuthFailed)
    );
    m.handle_udp(
        now,
        shim_ep(),
        &mut care_of_test(care_of_cookie, CARE_OF_TOKEN),
    );
    binding_update(&mut m, CARE_OF_TOKEN);
}

#[test]
fn an_unsealed_binding_error_is_ignored() {
    let now = t0();
    let (mut m, _ap, _shim) = bound(now);
    events(&mut m);
    let be = MobilityMessage::new(MessageBody::BindingError {
        status: crate::wire::mh::be_status::UNKNOWN_BINDING,
        home_address: HOA,
    });
    assert_eq!(
        m.handle_udp(now, shim_ep(), &mut unsigned(None, &be)),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    let c = m.correspondents().next().expect("still there");
    assert!(c.binding.is_some(), "binding kept");
    assert!(events(&mut m).is_empty());
    assert!(transmits(&mut m).is_empty());
}

#[test]
fn a_new_shim_instance_resets_return_routability() {
    let now = t0();
    let (mut m, mut ap, mut old_shim) = bound(now);
    events(&mut m);
    // The same instance again: nothing to do.
    m.handle_udp(
        now,
        ap_ep(),
        &mut shim_notice(&mut ap, CLIENT, shim_ep(), 1),
    );
    assert!(transmits(&mut m).is_empty());
    // A new shim process: state dropped, RR again from the HoTI.
    m.handle_udp(
        now,
        ap_ep(),
        &mut shim_notice(&mut ap, CLIENT, shim_ep(), 2),
    );
    let cookie = hoti(&mut m, &mut ap);
    let c = m.correspondents().next().unwrap();
    assert!(c.binding.is_none());
    assert!(matches!(c.rr, RoState::Testing { .. }));
    // The old session is gone: its frames name no session any more.
    assert_eq!(
        m.handle_udp(
            now,
            shim_ep(),
            &mut sealed_frame(&mut old_shim.sessions, &inbound())
        ),
        DataAction::Drop(DropReason::UnknownPeer)
    );
    // Answers go through the AP meanwhile.
    let (_, out) = tun_out(&mut m, now, &mut answer());
    assert_eq!(out.expect("sealed").0, ap_ep());
    // And the new run binds with a new session.
    let care_of_cookie = home_test(&mut m, &mut ap, now, cookie);
    m.handle_udp(
        now,
        shim_ep(),
        &mut care_of_test(care_of_cookie, CARE_OF_TOKEN),
    );
    let (seq, session) = binding_update(&mut m, CARE_OF_TOKEN);
    let (mut frame, mut shim) = shim_ba(seq, session, CARE_OF_TOKEN, 0x6b);
    assert_eq!(
        m.handle_udp(now, shim_ep(), &mut frame),
        DataAction::Consumed
    );
    let (_, out) = tun_out(&mut m, now, &mut answer());
    let (to, frame) = out.unwrap();
    assert_eq!(to, shim_ep());
    assert_eq!(open_frame(&mut shim.sessions, &frame), answer());
}

#[test]
fn a_refresh_reuses_the_home_token_and_its_ticket() {
    let now = t0();
    let (mut m, _ap, _shim) = bound(now);
    // The shim's BA gave 120 s: the refresh runs at 80 %, the home token
    // (96 s old) is still fresh, so only the care-of test goes, with the
    // ticket.
    let refresh = now + Duration::from_secs(96);
    run_until(&mut m, refresh - Duration::from_millis(1));
    assert!(
        transmits(&mut m).iter().all(|t| t.to == ap_ep()),
        "nothing to the shim before the refresh point"
    );
    run_until(&mut m, refresh);
    let (to_ap, to_shim): (Vec<_>, Vec<_>) =
        transmits(&mut m).into_iter().partition(|t| t.to == ap_ep());
    for t in &to_ap {
        // Registration BUs only (the silence rule): no HoTI.
        assert!(matches!(
            unsealed_msg(t).body,
            MessageBody::BindingUpdate { home: true, .. }
        ));
    }
    assert_eq!(to_shim.len(), 1, "{to_shim:?}");
    let msg = unsealed_msg(&to_shim[0]);
    assert!(matches!(msg.body, MessageBody::CareOfTestInit { .. }));
    assert_eq!(msg.care_of_ticket(), Some((5, TICKET)));
}
