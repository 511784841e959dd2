//! NAT traversal at the shim: the Punch to a member's care-of endpoint,
//! NAT keepalives sent and received.

use super::*;

#[test]
fn a_relayed_hoti_naming_the_care_of_endpoint_gets_a_punch_there() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let mapped = ep("198.18.0.9:31000");
    let hoti = MobilityMessage::new(MessageBody::HomeTestInit { cookie: [1; 8] })
        .with(bid(M1))
        .with(MobilityOption::HomeAddress(HOA))
        .with(MobilityOption::Correspondent(CLIENT))
        .with(MobilityOption::Endpoint(mapped));
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut ap.control(Some(M1), &hoti)),
        DataAction::Consumed
    );
    let t = transmits(&mut s);
    assert_eq!(t.len(), 2, "the HoT to the AP and one Punch: {t:?}");
    assert_eq!(t[0].to, ap_ep());
    assert_eq!(t[1].to, mapped);
    assert_eq!(unsealed_msg(&t[1].payload).body, MessageBody::Punch);
    assert_eq!(s.counters().punches, 1);
    // Without the option (an older AP): the HoT only.
    let plain = MobilityMessage::new(MessageBody::HomeTestInit { cookie: [1; 8] })
        .with(bid(M1))
        .with(MobilityOption::HomeAddress(HOA))
        .with(MobilityOption::Correspondent(CLIENT));
    s.handle_udp(now, ap_ep(), &mut ap.control(Some(M1), &plain));
    assert_eq!(transmits(&mut s).len(), 1);
    assert_eq!(s.counters().punches, 1);
}

#[test]
fn an_empty_sealed_frame_from_a_bound_member_is_a_keepalive() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let (_, mut member) = bound(&mut s, &mut ap, now, M1);
    let mut keepalive = seal(&mut member, Some(M1), &[]);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut keepalive),
        DataAction::Consumed
    );
    assert_eq!(s.counters().keepalives_in, 1);
    assert_eq!(s.counters().direct_in, 0);
    assert!(transmits(&mut s).is_empty() && s.poll_tun().is_none());
}

#[test]
fn behind_a_nat_an_idle_direct_session_gets_a_keepalive() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let (_, mut member) = bound(&mut s, &mut ap, now, M1);
    let every = crate::engine::DEFAULT_NAT_KEEPALIVE;
    // Not behind a NAT: nothing.
    run_until(&mut s, now + every * 2);
    assert!(transmits(&mut s).iter().all(|t| t.to != care_of(M1)));
    let then = now + every * 2;
    s.set_behind_nat(then, true);
    run_until(&mut s, then + every - Duration::from_millis(1));
    assert!(transmits(&mut s).iter().all(|t| t.to != care_of(M1)));
    run_until(&mut s, then + every);
    let t: Vec<_> = transmits(&mut s)
        .into_iter()
        .filter(|t| t.to == care_of(M1))
        .collect();
    assert_eq!(t.len(), 1, "one keepalive: {t:?}");
    let (header, body) = open(&mut member, then + every, &t[0].payload);
    assert_eq!(header.member, Some(M1));
    assert!(body.is_empty(), "an empty data frame");
    assert_eq!(s.counters().nat_keepalives, 1);
    // Turned off: no more.
    s.set_behind_nat(then + every, false);
    run_until(&mut s, then + every * 3);
    assert!(transmits(&mut s).iter().all(|t| t.to != care_of(M1)));
    assert_eq!(s.counters().nat_keepalives, 1);
}

#[test]
fn the_authenticator_covers_no_endpoint_but_the_care_of_token_binds_the_source() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    // The member's CoTI came from its (NAT-mapped) endpoint care_of(M1); it
    // signs without knowing that endpoint or the one it sees us at.
    let m = return_routability(&mut s, &mut ap, now, M1);
    // The same BU from any other source (of our family: one of the other
    // family is not even looked at, 6.5.2): the care-of token the shim
    // recomputes for that source gives another Kbm, so it fails.
    let elsewhere = ep("[fd00:66::66]:4790");
    assert_eq!(
        s.handle_udp(now, elsewhere, &mut m.bu(1, 120)),
        DataAction::Drop(DropReason::AuthFailed)
    );
    assert!(transmits(&mut s).is_empty(), "no answer");
    assert_eq!(s.bindings().count(), 0);
    // From the tested source it binds there.
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut m.bu(1, 120)),
        DataAction::Consumed
    );
    let ba = m.ba(&mut s);
    assert!(matches!(ba.body, MessageBody::BindingAck { status: 0, .. }));
    assert_eq!(
        s.bindings().map(|(_, b)| b.care_of).collect::<Vec<_>>(),
        vec![care_of(M1)]
    );
}
