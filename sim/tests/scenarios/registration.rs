//! Member registration: refresh, retransmission, refusals, replays,
//! id clashes and the operator's remove.

use homeaddr_proto::engine::DropReason;
use homeaddr_proto::engine::ap::ApEvent;
use homeaddr_proto::engine::member::RegistrationState;
use homeaddr_proto::wire::mh::MessageBody;
use homeaddr_proto::wire::{MemberId, MobilityMessage, TunnelHeader};
use homeaddr_sim::{LoggedEvent, Sim};

use crate::common::*;

#[test]
fn member_registers_refreshes_and_deregisters() {
    let mut sim = Sim::new(1);
    let m = sim.add_member(1);
    let took = sim
        .run_until_cond(secs(5), |s| {
            active(s, 1) && matches!(s.member(m).state(), RegistrationState::Registered { .. })
        })
        .expect("member registers");
    // BU, BA 202 (cookie), BU with the cookie, BA 0 over a 1 ms link, in
    // 1 ms steps: two round trips.
    assert!(took <= ms(5), "registration over a 1 ms link took {took:?}");

    // The AP's BRR heartbeat makes the member refresh every 500 ms.
    let before = sim.member(m).counters().registration_bus;
    sim.run_for(secs(10));
    let refreshes = sim.member(m).counters().registration_bus - before;
    assert!(
        (19..=21).contains(&refreshes),
        "{refreshes} refreshes in 10 s"
    );
    assert!(active(&sim, 1));
    assert!(matches!(
        sim.member(m).state(),
        RegistrationState::Registered { .. }
    ));

    sim.with_member(m, |m, now| m.leave(now));
    sim.run_until_cond(secs(5), |s| {
        s.ap().member(MemberId(1)).is_none() && s.member(m).state() == RegistrationState::Left
    })
    .expect("AP forgets the member and acknowledges");
}

#[test]
fn lost_binding_update_is_retransmitted() {
    let mut sim = Sim::new(2);
    sim.net.loss = 1.0;
    let m = sim.add_member(1);
    sim.run_for(ms(1500));
    assert!(!active(&sim, 1));
    sim.net.loss = 0.0;
    sim.run_until_cond(secs(5), |s| active(s, 1))
        .expect("registers after retransmission");
    assert!(sim.member(m).counters().retransmissions >= 1);
}

#[test]
fn wrong_key_is_refused_and_logged() {
    let mut sim = Sim::new(3);
    let m = sim.add_member_with(7, |c| c.key = b"not the key".to_vec());
    sim.start_member(m);
    // The AP's unsigned BA 146 is never final (anyone could forge it): the
    // member counts it and keeps retrying with its backoff.
    sim.run_until_cond(secs(30), |s| {
        s.member(m).counters().auth_failures_reported >= 3
    })
    .expect("member hears the refusals");
    assert_eq!(sim.member(m).state(), RegistrationState::Registering);
    assert!(sim.ap().member(MemberId(7)).is_none());
    let tried: Vec<_> = sim
        .events(|(_, e)| match e {
            LoggedEvent::Ap(ApEvent::RegistrationRefused { from, id, status }) => {
                Some((*from, *id, *status))
            }
            _ => None,
        })
        .collect();
    assert!(tried.len() >= 3);
    assert!(
        tried
            .iter()
            .all(|(from, id, st)| *from == sim.nodes[m].endpoint()
                && *id == Some(MemberId(7))
                && *st == 146)
    );
    assert!(sim.ap().counters().drops.get(DropReason::AuthFailed) >= 3);
}

#[test]
fn replayed_registration_cannot_move_a_member_back() {
    let mut sim = Sim::new(4);
    let m = sim.add_member(1);
    all_active(&mut sim, &[1]);
    let old_ep = sim.nodes[m].endpoint();
    let ap_ep = sim.nodes[Sim::AP].endpoint();
    // The newest BU from the old endpoint: it carries a cookie the AP gave
    // for (old endpoint, member 1), still valid (60-120 s).
    let old_bu = sim
        .net
        .captured_between(old_ep, ap_ep)
        .last()
        .expect("BUs captured")
        .payload
        .clone();
    let new_ep = sim.move_member(m, false);
    sim.run_until_cond(secs(5), |s| {
        s.ap()
            .member(MemberId(1))
            .is_some_and(|e| e.care_of == new_ep)
    })
    .expect("AP follows the move");
    let replays = sim.ap().counters().drops.get(DropReason::Replay);
    let challenges = sim.ap().counters().cookie_challenges;
    let attacker = sim.add_attacker();
    // From the old endpoint (spoofed): the cookie matches, the sequence
    // number is old.
    sim.send_udp(attacker, old_ep, ap_ep, old_bu.clone());
    sim.run_for(ms(50));
    assert_eq!(
        sim.ap().counters().drops.get(DropReason::Replay),
        replays + 1
    );
    // From the attacker's own endpoint: the cookie does not match, BA 202
    // to the attacker (who cannot re-sign), no state.
    let own = sim.nodes[attacker].endpoint();
    sim.send_udp(attacker, own, ap_ep, old_bu);
    sim.run_for(ms(50));
    assert_eq!(sim.ap().counters().cookie_challenges, challenges + 1);
    assert_eq!(
        sim.ap().counters().drops.get(DropReason::Replay),
        replays + 1
    );
    assert_eq!(
        sim.ap().member(MemberId(1)).map(|e| e.care_of),
        Some(new_ep)
    );
    assert!(active(&sim, 1));
}

#[test]
fn member_id_clash_is_refused() {
    let mut sim = Sim::new(5);
    sim.add_member(3);
    all_active(&mut sim, &[3]);
    let imposter = sim.add_member(3);
    sim.run_until_cond(secs(20), |s| {
        matches!(
            s.member(imposter).state(),
            RegistrationState::Refused { .. }
        )
    })
    .expect("second instance refused");
    assert_eq!(
        sim.member(imposter).state(),
        RegistrationState::Refused { status: 200 }
    );
    assert!(active(&sim, 3));
}

#[test]
fn operator_remove_stops_the_member_and_forged_refusals_do_not() {
    let mut sim = Sim::new(16);
    let m1 = sim.add_member(1);
    let m2 = sim.add_member(2);
    all_active(&mut sim, &[1, 2]);
    // Off-path forged refusals (unsigned 146, guessed sequence numbers)
    // from the AP's address: the member stays registered.
    let attacker = sim.add_attacker();
    let ap_ep = sim.nodes[Sim::AP].endpoint();
    let m1_ep = sim.nodes[m1].endpoint();
    for seq in 0..50u16 {
        let ba = MobilityMessage::new(MessageBody::BindingAck {
            status: 146,
            sequence: seq * 1311,
            lifetime: 0,
        });
        let mut payload = TunnelHeader::control(Some(MemberId(1))).to_bytes().to_vec();
        payload.extend_from_slice(&ba.to_bytes());
        sim.send_udp(attacker, ap_ep, m1_ep, payload);
        sim.run_for(ms(100));
    }
    assert!(matches!(
        sim.member(m1).state(),
        RegistrationState::Registered { .. }
    ));
    // The operator removes member 2: it learns at once and stops.
    sim.with_ap(|ap, now| ap.remove(now, MemberId(2)).unwrap());
    sim.run_until_cond(secs(5), |s| {
        matches!(s.member(m2).state(), RegistrationState::Refused { .. })
    })
    .expect("removed member is refused");
    assert_eq!(
        sim.member(m2).state(),
        RegistrationState::Refused { status: 129 }
    );
    sim.run_for(secs(10));
    assert!(
        sim.ap().member(MemberId(2)).is_none(),
        "removed member came back"
    );
    assert!(active(&sim, 1));
}
