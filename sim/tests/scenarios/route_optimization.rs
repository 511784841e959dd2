//! Route optimization: the handoff to the direct path, under loss, after
//! a shim or member restart and after a binding lapses.

use std::collections::BTreeSet;

use homeaddr_proto::engine::DropReason;
use homeaddr_proto::engine::member::{MemberEvent, RegistrationState};
use homeaddr_proto::wire::MemberId;
use homeaddr_sim::{LoggedEvent, SessionState, Sim};

use crate::common::*;

#[test]
fn shim_flow_moves_to_the_direct_path_without_loss_or_duplicates() {
    let mut h = handoff_topology(7, 0.0);
    let start = h.sim.now;
    h.session = h.sim.start_session(h.client, 200, ms(10));
    run_sessions(&mut h.sim, &[(h.client, h.session)], secs(30));
    let s = h.sim.session(h.client, h.session).clone();
    assert_eq!(s.state, SessionState::Done);
    assert_eq!(s.records.len(), 200);
    assert_eq!(s.duplicate_answers, 0, "duplicated inner packets");
    assert_eq!(s.retransmissions, 0, "lost inner packets");
    assert_eq!(h.sim.member_app(h.member).duplicate_requests, 0);
    assert_eq!(s.members(), BTreeSet::from([MemberId(1)]));
    let (first, last) = s.first_last_rtt().expect("answers");
    assert!(
        first >= ms(63) && first <= ms(66),
        "RTT through the AP {first:?}, expected ~64 ms"
    );
    assert!(
        last >= ms(4) && last <= ms(5),
        "RTT after route optimization {last:?}, expected ~4 ms"
    );
    let direct_at = first_direct(&h.sim, h.client).expect("flow went direct");
    let rr = h
        .sim
        .events(|(_, e)| match e {
            LoggedEvent::Member(_, MemberEvent::RouteOptimized { elapsed, .. }) => Some(*elapsed),
            _ => None,
        })
        .next()
        .expect("member saw the BA");
    assert!(h.sim.shim(h.client).counters().direct_out > 150);
    assert!(h.sim.member(h.member).counters().direct_out > 150);
    println!(
        "handoff: first packet -> direct path {:?} (return routability + BU/BA {:?}); RTT {:?} -> {:?}",
        direct_at - start,
        rr,
        first,
        last
    );
}

#[test]
fn shim_flow_converges_under_one_percent_loss() {
    for seed in 0..5 {
        let mut h = handoff_topology(100 + seed, 0.01);
        h.sim.net.jitter = ms(1);
        h.session = h.sim.start_session(h.client, 300, ms(10));
        run_sessions(&mut h.sim, &[(h.client, h.session)], secs(60));
        let s = h.sim.session(h.client, h.session);
        assert_eq!(s.state, SessionState::Done, "seed {seed}");
        assert_eq!(s.members(), BTreeSet::from([MemberId(1)]));
        assert!(
            first_direct(&h.sim, h.client).is_some(),
            "seed {seed}: never went direct"
        );
        // Converged: the last requests take the direct path (the median of
        // the last 21, so one lost and retransmitted request does not count).
        let mut tail: Vec<_> = s.records.iter().rev().take(21).map(|r| r.rtt).collect();
        tail.sort();
        let median = tail[tail.len() / 2];
        assert!(median < ms(10), "seed {seed}: last RTTs {tail:?}");
    }
}

#[test]
fn restarted_shim_gets_a_fresh_binding() {
    let mut h = handoff_topology(13, 0.0);
    let first = h.sim.start_session(h.client, 50, ms(10));
    run_sessions(&mut h.sim, &[(h.client, first)], secs(10));
    assert!(first_direct(&h.sim, h.client).is_some());
    // The member still holds a binding to the old shim endpoint.
    h.sim.restart_shim(h.client);
    ap_session(&mut h.sim, h.client);
    let new_ep = h.sim.nodes[h.client].endpoint();
    let second = h.sim.start_session(h.client, 100, ms(10));
    run_sessions(&mut h.sim, &[(h.client, second)], secs(10));
    let s = h.sim.session(h.client, second);
    assert_eq!(
        s.state,
        SessionState::Done,
        "session after the shim restart failed"
    );
    assert_eq!(s.retransmissions, 0, "answers went to the dead endpoint");
    assert!(
        s.records.last().unwrap().rtt <= ms(5),
        "not route-optimized again"
    );
    assert!(
        h.sim
            .member(h.member)
            .correspondents()
            .any(|c| c.shim == new_ep && c.binding.is_some())
    );
}

#[test]
fn route_optimization_resumes_after_a_long_pause_and_a_member_restart() {
    let mut h = handoff_topology(14, 0.0);
    let first = h.sim.start_session(h.client, 20, ms(10));
    run_sessions(&mut h.sim, &[(h.client, first)], secs(10));
    // Idle for longer than the binding lifetime: the binding lapses.
    h.sim.run_for(secs(300));
    let second = h.sim.start_session(h.client, 100, ms(10));
    run_sessions(&mut h.sim, &[(h.client, second)], secs(20));
    let last = h.sim.session(h.client, second).records.last().unwrap().rtt;
    assert!(
        last <= ms(5),
        "no route optimization after the pause: {last:?}"
    );
    // A restarted member (same endpoint, new instance) is accepted at once
    // (after the cookie round trip); the AP's BRI 126 makes the shim drop
    // the old instance's binding, and the new instance binds again.
    h.sim.restart_member(h.member);
    let instance = h.sim.member(h.member).config().instance;
    h.sim
        .run_until_cond(secs(3), |s| {
            active(s, 1)
                && s.ap().member(MemberId(1)).map(|e| e.instance) == Some(instance)
                && matches!(
                    s.member(h.member).state(),
                    RegistrationState::Registered { .. }
                )
        })
        .expect("restarted member registers at once");
    let client = h.client;
    h.sim
        .run_until_cond(secs(1), |s| {
            !s.shim(client).bindings().any(|(id, _)| *id == MemberId(1))
        })
        .expect("the shim hears of the restart (BRI 126)");
    let third = h.sim.start_session(h.client, 100, ms(10));
    run_sessions(&mut h.sim, &[(h.client, third)], secs(20));
    let s = h.sim.session(h.client, third);
    assert_eq!(s.state, SessionState::Done);
    assert!(
        s.records.last().unwrap().rtt <= ms(5),
        "no route optimization after the restart"
    );
}

#[test]
fn flow_started_directly_keeps_its_member_after_the_binding_lapses() {
    let mut sim = Sim::new(15);
    let m1 = sim.add_member(1);
    let m2 = sim.add_member_with(2, |_| {}); // started later
    all_active(&mut sim, &[1]);
    let client = sim.add_shim_client();
    ap_session(&mut sim, client);
    // Bind the client to member 1, the only member so far.
    let warm = sim.start_session(client, 5, ms(10));
    run_sessions(&mut sim, &[(client, warm)], secs(5));
    assert!(first_direct(&sim, client).is_some());
    sim.start_member(m2);
    all_active(&mut sim, &[1, 2]);
    // Send new clients to member 2: Maglev now picks 2 for this client.
    sim.with_ap(|ap, _| ap.set_weight(MemberId(1), 0).unwrap());
    assert_eq!(
        sim.ap().choose_member(&sim.nodes[client].addr),
        Some(MemberId(2))
    );
    // A new flow starts directly at member 1 (the bound member) ...
    let long = sim.start_session(client, 4, secs(200));
    sim.run_until_cond(secs(5), |s| s.session(client, long).records.len() == 1)
        .expect("first answer");
    assert_eq!(
        sim.session(client, long).members(),
        BTreeSet::from([MemberId(1)])
    );
    // ... and after long pauses (the binding lapses, packets go through
    // the AP) it still reaches member 1, never Maglev's member 2.
    run_sessions(&mut sim, &[(client, long)], secs(900));
    let s = sim.session(client, long);
    assert_eq!(s.state, SessionState::Done, "the flow was reset");
    assert_eq!(s.members(), BTreeSet::from([MemberId(1)]));
    // The shim sends direct until its binding lapses; the member keeps an
    // idle client's binding and session until then, so none of those
    // frames is dropped and no request stalls.
    assert_eq!(
        sim.member(m1).counters().drops.get(DropReason::UnknownPeer),
        0
    );
    let slowest = s.records.iter().map(|r| r.rtt).max().unwrap();
    assert!(slowest <= ms(100), "a request stalled: {slowest:?}");
}
