//! NAT (issue 11): a member behind a NAPT registers, serves and
//! route-optimizes; the direct path carries the data.

use std::time::Duration;

use homeaddr_proto::engine::member::MemberEvent;
use homeaddr_sim::{LoggedEvent, NodeId, SessionState, Sim};

use crate::common::*;

#[test]
fn member_behind_a_napt_route_optimizes() {
    let mut sim = Sim::new(21);
    let member = sim.add_member_with(1, |_| {});
    let nat = sim.add_nat(&[member]);
    sim.start_member(member);
    let client = sim.add_shim_client();
    sim.net.set_latency(client, Sim::AP, ms(30));
    sim.net.set_latency(client, member, ms(2));
    sim.net.set_latency(Sim::AP, member, ms(2));
    all_active(&mut sim, &[1]);
    ap_session(&mut sim, client);
    let local = sim.nodes[member].endpoint();
    let mapped = sim.net.nats[nat]
        .mapped(local)
        .expect("a mapping to the AP");
    assert_ne!(mapped, local);

    let session = sim.start_session(client, 200, ms(10));
    run_sessions(&mut sim, &[(client, session)], secs(30));
    let s = sim.session(client, session).clone();
    assert_eq!(s.state, SessionState::Done);
    assert_eq!(s.records.len(), 200);
    assert_eq!(s.retransmissions, 0, "lost inner packets");
    assert!(
        sim.events(|(_, e)| match e {
            LoggedEvent::Member(_, MemberEvent::RouteOptimized { .. }) => Some(()),
            _ => None,
        })
        .next()
        .is_some(),
        "the member saw no BA 0"
    );
    assert!(
        first_direct(&sim, client).is_some(),
        "the flow never went direct"
    );
    // The shim's binding points at the NAT's mapping (the BU's source),
    // and both sides sent most of the flow direct.
    assert!(sim.shim(client).counters().direct_out > 150);
    assert!(sim.member(member).counters().direct_out > 150);
    let (_, last) = s.first_last_rtt().expect("answers");
    assert!(last <= ms(5), "RTT after route optimization {last:?}");
    // The only datagram the member's NAT filtered is the shim's Punch (it
    // opens the shim's NAT, not the member's): the member had not sent to
    // the shim yet.
    assert_eq!(sim.shim(client).counters().punches, 1);
    assert_eq!(sim.member(member).counters().punches, 0);
    assert_eq!(sim.net.nats[nat].filtered, 1);
}

/// A member behind a NAPT whose UDP pairs live `timeout` idle, route-
/// optimized with a shim client; then the client idles for `idle` and
/// starts again. Returns the sim, the client, the member and the NAT index.
fn idle_behind_nat(nat_keepalive: Duration, idle: Duration) -> (Sim, NodeId, NodeId, usize) {
    let mut sim = Sim::new(22);
    let member = sim.add_member_with(1, |c| c.nat_keepalive = nat_keepalive);
    let nat = sim.add_nat(&[member]);
    sim.net.nats[nat].timeout = secs(30);
    sim.start_member(member);
    let client = sim.add_shim_client();
    sim.net.set_latency(client, Sim::AP, ms(30));
    sim.net.set_latency(client, member, ms(2));
    sim.net.set_latency(Sim::AP, member, ms(2));
    all_active(&mut sim, &[1]);
    ap_session(&mut sim, client);
    assert!(sim.member(member).behind_nat(), "the AP's BA 0 told it");
    let first = sim.start_session(client, 50, ms(10));
    run_sessions(&mut sim, &[(client, first)], secs(10));
    assert!(first_direct(&sim, client).is_some());
    sim.run_for(idle);
    let second = sim.start_session(client, 20, ms(10));
    run_sessions(&mut sim, &[(client, second)], secs(30));
    (sim, client, member, nat)
}

#[test]
fn nat_keepalives_hold_an_idle_direct_path_open() {
    let (sim, client, member, nat) = idle_behind_nat(secs(25), secs(70));
    let m = sim.member(member).counters();
    assert!(
        m.nat_keepalives >= 2,
        "keepalives sent: {}",
        m.nat_keepalives
    );
    assert_eq!(sim.shim(client).counters().keepalives_in, m.nat_keepalives);
    // Nothing but Punches met the closed NAT (a Punch after the member's
    // first CoTI passes: the pair is open by then).
    let punches = sim.shim(client).counters().punches;
    assert!(punches >= 1);
    assert_eq!(
        sim.net.nats[nat].filtered,
        punches - m.punches,
        "the pair to the shim lapsed"
    );
    let s = sim.session(client, 1);
    assert_eq!(s.retransmissions, 0);
    assert!(s.records.last().unwrap().rtt <= ms(5), "still direct");
}

#[test]
fn without_nat_keepalives_the_idle_pair_lapses() {
    let (sim, client, member, nat) = idle_behind_nat(Duration::ZERO, secs(70));
    let m = sim.member(member).counters();
    assert_eq!(m.nat_keepalives, 0);
    let punches = sim.shim(client).counters().punches;
    assert!(
        sim.net.nats[nat].filtered > punches - m.punches,
        "the shim's direct packets met a closed NAT"
    );
    assert!(sim.session(client, 1).retransmissions > 0);
}
