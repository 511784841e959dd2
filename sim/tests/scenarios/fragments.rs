//! Fragments of one datagram reach one member, whatever joins or binds.

use std::collections::BTreeSet;

use homeaddr_proto::wire::MemberId;
use homeaddr_sim::packet::udp_fragments;
use homeaddr_sim::{NodeId, NodeKind, Sim, home_address};

use crate::common::*;

/// Send a datagram's fragments from `client`'s application and return the
/// members that received each (in fragment order).
fn send_fragmented(sim: &mut Sim, client: NodeId, port: u16, id: u32) -> Vec<BTreeSet<u16>> {
    let src = sim.nodes[client].addr;
    let fragments = udp_fragments(src, home_address(), port, id);
    for f in &fragments {
        sim.send_from_app(client, f.clone());
    }
    sim.run_for(ms(100));
    fragments
        .iter()
        .map(|f| {
            (0..sim.nodes.len())
                .filter(|&n| matches!(sim.nodes[n].kind, NodeKind::Member(..)))
                .filter(|&n| sim.member_app(n).other.iter().any(|p| p == f))
                .map(|n| sim.member(n).config().id.0)
                .collect()
        })
        .collect()
}

#[test]
fn fragments_of_a_legacy_datagram_reach_one_member_after_a_join() {
    let mut sim = Sim::new(31);
    sim.add_member(1);
    all_active(&mut sim, &[1]);
    let clients: Vec<NodeId> = (0..16).map(|_| sim.add_legacy_client()).collect();
    // Each client's first fragmented datagram: both fragments at member 1,
    // and the AP now has an entry for the portless key of its fragments.
    for &c in &clients {
        let got = send_fragmented(&mut sim, c, 5000, 1);
        assert_eq!(got, vec![BTreeSet::from([1]), BTreeSet::from([1])]);
    }
    sim.add_member(2);
    all_active(&mut sim, &[1, 2]);
    let moved: Vec<NodeId> = clients
        .iter()
        .copied()
        .filter(|c| sim.ap().choose_member(&sim.nodes[*c].addr) == Some(MemberId(2)))
        .collect();
    assert!(!moved.is_empty(), "no client hashes to the new member");
    for c in moved {
        // A new datagram flow goes to the new member, all of it.
        let got = send_fragmented(&mut sim, c, 5001, 2);
        assert_eq!(
            got,
            vec![BTreeSet::from([2]), BTreeSet::from([2])],
            "client {c}: the fragments of one datagram went to different members"
        );
        // The old flow stays on member 1, all of it.
        let got = send_fragmented(&mut sim, c, 5000, 3);
        assert_eq!(got, vec![BTreeSet::from([1]), BTreeSet::from([1])]);
    }
}

#[test]
fn fragments_of_a_shim_datagram_reach_one_member_after_a_second_binding() {
    let mut sim = Sim::new(32);
    sim.add_member(1);
    sim.add_member(2);
    all_active(&mut sim, &[1, 2]);
    let shim = sim.add_shim_client();
    ap_session(&mut sim, shim);
    let first = sim
        .ap()
        .choose_member(&sim.nodes[shim].addr)
        .expect("a member");
    let other = MemberId(3 - first.0);
    let s = sim.start_session(shim, 3, ms(10));
    run_sessions(&mut sim, &[(shim, s)], secs(5));
    sim.run_until_cond(secs(5), |s| {
        s.shim(shim).bindings().any(|(id, _)| *id == first)
    })
    .expect("binding to the first member");
    let got = send_fragmented(&mut sim, shim, 5000, 1);
    assert_eq!(got, vec![BTreeSet::from([first.0]); 2]);
    // Drained, the first member is no longer preferred; a new connection
    // through the AP binds the shim to the other member too.
    sim.with_ap(|ap, now| ap.drain(now, first, None).expect("member exists"));
    sim.run_until_cond(secs(10), |s| {
        s.shim(shim)
            .bindings()
            .any(|(id, b)| *id == first && b.draining)
    })
    .expect("the shim learns of the drain");
    let s = sim.start_session(shim, 3, ms(10));
    run_sessions(&mut sim, &[(shim, s)], secs(5));
    sim.run_until_cond(secs(5), |s| {
        s.shim(shim).bindings().any(|(id, _)| *id == other)
    })
    .expect("binding to the other member");
    let got = send_fragmented(&mut sim, shim, 5001, 2);
    assert_eq!(
        got,
        vec![BTreeSet::from([other.0]); 2],
        "the fragments of one datagram went to different members"
    );
}
