//! The whole service with `protection = "integrity"` on every node: every
//! frame is still sealed (a GMAC tag) but its payload crosses the network
//! in the clear, and route optimization works as with encryption.

use std::collections::BTreeSet;

use homeaddr_proto::crypto::Protection;
use homeaddr_proto::engine::DropReason;
use homeaddr_proto::wire::mh::MessageBody;
use homeaddr_proto::wire::{FRAME_HEADER_LEN, MemberId, MobilityMessage, TAG_LEN, TunnelFrame};
use homeaddr_sim::{SessionState, Sim};

use crate::common::*;

#[test]
fn route_optimization_works_with_integrity_protection_on_every_node() {
    let mut sim = Sim::with_ap_config(60, |c| c.protection = Protection::Integrity);
    let member = sim.add_member_with(1, |c| c.protection = Protection::Integrity);
    sim.start_member(member);
    let client = sim.add_shim_client_with(|c| c.protection = Protection::Integrity);
    let legacy = sim.add_legacy_client();
    sim.net.set_latency(client, Sim::AP, ms(30));
    sim.net.set_latency(client, member, ms(2));
    sim.net.set_latency(Sim::AP, member, ms(2));
    all_active(&mut sim, &[1]);
    ap_session(&mut sim, client);

    let shim_session = sim.start_session(client, 200, ms(10));
    let legacy_session = sim.start_session(legacy, 50, ms(10));
    run_sessions(
        &mut sim,
        &[(client, shim_session), (legacy, legacy_session)],
        secs(30),
    );
    for (c, i) in [(client, shim_session), (legacy, legacy_session)] {
        let s = sim.session(c, i);
        assert_eq!(s.state, SessionState::Done, "client {c}");
        assert_eq!(s.members(), BTreeSet::from([MemberId(1)]));
        assert_eq!(s.duplicate_answers, 0);
    }
    let s = sim.session(client, shim_session).clone();
    assert_eq!(s.records.len(), 200);
    assert_eq!(s.retransmissions, 0, "lost inner packets");
    let (first, last) = s.first_last_rtt().expect("answers");
    assert!(first >= ms(63), "RTT through the AP {first:?}");
    assert!(last <= ms(5), "RTT after route optimization {last:?}");
    assert!(first_direct(&sim, client).is_some(), "flow went direct");
    assert!(sim.shim(client).counters().direct_out > 150);
    assert!(sim.member(member).counters().direct_out > 150);
    assert!(
        sim.member(member)
            .correspondents()
            .any(|c| c.binding.is_some())
    );
    // Nothing was refused on the way.
    for drops in [
        &sim.ap().counters().drops,
        &sim.member(member).counters().drops,
        &sim.shim(client).counters().drops,
    ] {
        assert_eq!(drops.get(DropReason::AuthFailed), 0);
        assert_eq!(drops.get(DropReason::Unauthenticated), 0);
    }

    // Sealed control frames went without `E`, their messages readable on
    // the wire (e.g. the Shim Notice, AP -> member).
    let sealed: Vec<_> = sim
        .net
        .captured
        .iter()
        .filter_map(|c| TunnelFrame::new_checked(&c.payload[..]).ok())
        .filter(|f| f.session() != 0)
        .collect();
    assert!(!sealed.is_empty());
    assert!(sealed.iter().all(|f| !f.encrypted()), "a frame with E set");
    let ap_ep = sim.nodes[Sim::AP].endpoint();
    let m_ep = sim.nodes[member].endpoint();
    let notices = sim
        .net
        .captured_between(ap_ep, m_ep)
        .into_iter()
        .filter(|c| u32::from_be_bytes(c.payload[4..8].try_into().unwrap()) != 0)
        .filter_map(|c| {
            let mh = &c.payload[FRAME_HEADER_LEN..c.payload.len() - TAG_LEN];
            MobilityMessage::parse(mh).ok()
        })
        .filter(|m| matches!(m.body, MessageBody::ShimNotice { .. }))
        .count();
    assert!(notices >= 1, "no Shim Notice readable in the clear");
}
