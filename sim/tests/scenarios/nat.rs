//! NAT (issue 11): a member behind a NAPT registers, serves and
//! route-optimizes; the direct path carries the data.

use homeaddr_proto::engine::member::MemberEvent;
use homeaddr_sim::{LoggedEvent, SessionState, Sim};

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
    assert_eq!(sim.net.nats[nat].filtered, 0);
}
