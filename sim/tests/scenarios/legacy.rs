//! Legacy clients (no shim): affinity across membership changes and
//! direct server return.

use std::collections::BTreeSet;

use homeaddr_proto::wire::MemberId;
use homeaddr_sim::{NodeId, SessionState, Sim};

use crate::common::*;

#[test]
fn legacy_flows_keep_their_member_while_members_join_and_leave() {
    let mut sim = Sim::new(6);
    for id in 1..=3 {
        sim.add_member(id);
    }
    all_active(&mut sim, &[1, 2, 3]);
    let clients: Vec<NodeId> = (0..12).map(|_| sim.add_legacy_client()).collect();
    let first: Vec<(NodeId, usize)> = clients
        .iter()
        .map(|c| (*c, sim.start_session(*c, 60, ms(20))))
        .collect();
    sim.run_for(ms(300));
    let joiner = sim.add_member(4);
    all_active(&mut sim, &[1, 2, 3, 4]);
    // New clients after the join: some of them go to the new member.
    let second: Vec<(NodeId, usize)> = clients
        .iter()
        .map(|c| (*c, sim.start_session(*c, 5, ms(20))))
        .collect();
    run_sessions(&mut sim, &second, secs(5));
    sim.with_member(joiner, |m, now| m.leave(now));
    run_sessions(&mut sim, &first, secs(10));

    let mut used = BTreeSet::new();
    for (c, i) in &first {
        let s = sim.session(*c, *i);
        assert_eq!(s.state, SessionState::Done, "client {c} session reset");
        assert_eq!(s.records.len(), 60);
        assert_eq!(
            s.members().len(),
            1,
            "client {c} flow changed member: {:?}",
            s.members()
        );
        assert_eq!(s.duplicate_answers, 0);
        used.extend(s.members());
    }
    assert!(used.len() >= 2, "12 clients all landed on {used:?}");
    let second_members: BTreeSet<MemberId> = second
        .iter()
        .flat_map(|(c, i)| sim.session(*c, *i).members())
        .collect();
    assert!(
        second_members.contains(&MemberId(4)),
        "no new client reached the new member: {second_members:?}"
    );
    // Every flow was served by exactly one member.
    let by_member = sim.flows_by_member();
    let all: Vec<_> = by_member.values().flatten().collect();
    let unique: BTreeSet<_> = all.iter().collect();
    assert_eq!(all.len(), unique.len(), "a flow is held by two members");
}

#[test]
fn direct_server_return_skips_the_access_point_on_the_way_back() {
    let mut sim = Sim::new(17);
    let m = sim.add_member_with(1, |c| c.direct_return = true);
    sim.start_member(m);
    let c = sim.add_legacy_client();
    sim.net.set_latency(c, Sim::AP, ms(30));
    sim.net.set_latency(c, m, ms(2));
    sim.net.set_latency(Sim::AP, m, ms(2));
    all_active(&mut sim, &[1]);
    let s = sim.start_session(c, 20, ms(10));
    run_sessions(&mut sim, &[(c, s)], secs(10));
    let session = sim.session(c, s);
    assert_eq!(session.state, SessionState::Done);
    // Client -> AP (30) -> member (2) -> client directly (2): 34 ms, not 64.
    let (first, last) = session.first_last_rtt().unwrap();
    assert!(
        first >= ms(34) && last <= ms(35),
        "RTT {first:?} .. {last:?}"
    );
    assert_eq!(
        sim.ap().counters().legacy_out,
        0,
        "answers went through the AP"
    );
    // The host's table sent them natively: the engine saw none.
    let counters = sim.member(m).counters();
    assert_eq!((counters.via_ap_out, counters.direct_return), (0, 0));
    assert!(counters.via_ap_in >= 20);
}

#[test]
fn direct_server_return_still_seals_a_shim_clients_answers() {
    let mut sim = Sim::new(18);
    let m = sim.add_member_with(1, |c| c.direct_return = true);
    sim.start_member(m);
    let c = sim.add_shim_client();
    sim.net.set_latency(c, Sim::AP, ms(30));
    sim.net.set_latency(c, m, ms(2));
    sim.net.set_latency(Sim::AP, m, ms(2));
    all_active(&mut sim, &[1]);
    ap_session(&mut sim, c);
    let s = sim.start_session(c, 40, ms(50));
    run_sessions(&mut sim, &[(c, s)], secs(20));
    assert_eq!(sim.session(c, s).state, SessionState::Done);
    // The Shim Notice put the client in the host's table before any
    // answer: every answer reached the engine, sealed through the AP until
    // the binding, then direct.
    let client = sim.nodes[c].addr;
    assert!(sim.member_app(m).routed.contains(&client));
    let counters = sim.member(m).counters();
    assert_eq!(counters.direct_return, 0, "an answer left unsealed");
    assert!(
        counters.via_ap_out > 0 && counters.direct_out > 0,
        "{counters:?}"
    );
    assert!(first_direct(&sim, c).is_some(), "never route-optimized");
}
