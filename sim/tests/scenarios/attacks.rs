//! Forged binding updates (replayed, spoofed, wrong Kbm, stale nonces)
//! and garbage thrown at every engine.

use std::collections::BTreeSet;

use homeaddr_proto::engine::{DropReason, Engine};
use homeaddr_proto::wire::mh::MessageBody;
use homeaddr_proto::wire::{FRAME_HEADER_LEN, MemberId, MobilityMessage};
use homeaddr_sim::{SessionState, Sim, SimRng};

use crate::common::*;

fn bu_sequence(payload: &[u8]) -> Option<u16> {
    match MobilityMessage::parse(&payload[FRAME_HEADER_LEN..])
        .ok()?
        .body
    {
        MessageBody::BindingUpdate {
            sequence,
            home: false,
            ..
        } => Some(sequence),
        _ => None,
    }
}

#[test]
fn forged_binding_updates_are_rejected_and_the_flow_stays() {
    let mut h = handoff_topology(8, 0.0);
    h.session = h.sim.start_session(h.client, 100_000, ms(20));
    h.sim
        .run_until_cond(secs(5), |s| first_direct(s, h.client).is_some())
        .expect("goes direct");
    let member_ep = h.sim.nodes[h.member].endpoint();
    let shim_ep = h.sim.nodes[h.client].endpoint();
    let valid = h
        .sim
        .net
        .captured_between(member_ep, shim_ep)
        .into_iter()
        .find(|c| bu_sequence(&c.payload).is_some())
        .expect("captured the BU")
        .payload
        .clone();
    let attacker = h.sim.add_attacker();
    let attacker_ep = h.sim.nodes[attacker].endpoint();
    let binding = |sim: &Sim| {
        sim.shim(h.client)
            .bindings()
            .map(|(id, b)| (*id, b.care_of, b.seq))
            .collect::<Vec<_>>()
    };
    let before = binding(&h.sim);
    let rejected = |sim: &Sim| sim.shim(h.client).counters().bus_rejected;

    // 1. Replayed: same bytes, same source, old sequence number.
    let n = rejected(&h.sim);
    h.sim.send_udp(h.member, member_ep, shim_ep, valid.clone());
    h.sim.run_for(ms(20));
    assert_eq!(rejected(&h.sim), n + 1, "replay accepted");
    assert_eq!(binding(&h.sim), before);

    // 2. Spoofed source: the BU of the member sent from elsewhere (hijack).
    h.sim
        .send_udp(attacker, attacker_ep, shim_ep, valid.clone());
    h.sim.run_for(ms(20));
    assert_eq!(rejected(&h.sim), n + 2, "spoofed BU accepted");
    assert_eq!(binding(&h.sim), before);

    // 3. Wrong Kbm: a newer sequence number with the old authenticator.
    let mut forged = valid.clone();
    let seq = bu_sequence(&forged).unwrap().wrapping_add(100);
    forged[FRAME_HEADER_LEN + 6..FRAME_HEADER_LEN + 8].copy_from_slice(&seq.to_be_bytes());
    h.sim.send_udp(h.member, member_ep, shim_ep, forged);
    h.sim.run_for(ms(20));
    assert_eq!(
        rejected(&h.sim),
        n + 3,
        "BU with a wrong authenticator accepted"
    );
    assert_eq!(binding(&h.sim), before);
    let auth_failures = h
        .sim
        .shim(h.client)
        .counters()
        .drops
        .get(DropReason::AuthFailed);
    assert_eq!(auth_failures, 2);

    // 4. Stale nonce: the old BU after its nonces have expired (240 s).
    h.sim.run_for(secs(300));
    let n = rejected(&h.sim);
    let sent_before = h.sim.net.captured_between(shim_ep, member_ep).len();
    h.sim.send_udp(h.member, member_ep, shim_ep, valid);
    h.sim.run_for(ms(20));
    assert_eq!(rejected(&h.sim), n + 1, "BU with expired nonces accepted");
    let status = h.sim.net.captured_between(shim_ep, member_ep)[sent_before..]
        .iter()
        .find_map(|c| {
            match MobilityMessage::parse(&c.payload[FRAME_HEADER_LEN..])
                .ok()?
                .body
            {
                MessageBody::BindingAck { status, .. } => Some(status),
                _ => None,
            }
        })
        .expect("shim answered with a BA");
    assert!((136..=138).contains(&status), "status {status}");

    // The flow stayed on its direct path with its member throughout.
    let s = h.sim.session(h.client, h.session);
    assert_eq!(s.state, SessionState::Open);
    assert_eq!(s.members(), BTreeSet::from([MemberId(1)]));
    let last = s.records.last().unwrap().rtt;
    assert!(last <= ms(5), "flow left the direct path: RTT {last:?}");
    assert_eq!(
        h.sim
            .shim(h.client)
            .bindings()
            .next()
            .map(|(_, b)| b.care_of),
        Some(member_ep)
    );
}

// ----- garbage -----

#[test]
fn engines_survive_garbage() {
    let mut sim = Sim::new(12);
    let m = sim.add_member(1);
    let c = sim.add_shim_client();
    all_active(&mut sim, &[1]);
    let mut rng = SimRng::new(99);
    let now = sim.now;
    let from = sim.nodes[c].endpoint();
    for len in 0..2000usize {
        let mut buf: Vec<u8> = (0..len % 300).map(|_| rng.next_u64() as u8).collect();
        if len % 3 == 0 && buf.len() > 4 {
            buf[0] = 0x20 | (buf[0] & 1); // version 2, so deeper parsers run
            buf[1] = (len % 2) as u8;
        }
        let _ = sim.ap_mut().handle_udp(now, from, &mut buf.clone());
        let _ = homeaddr_sim::handle_tun(sim.ap_mut(), now, &buf);
        let _ = sim.member_mut(m).handle_udp(now, from, &mut buf.clone());
        let _ = homeaddr_sim::handle_tun(sim.member_mut(m), now, &buf);
    }
    assert!(sim.ap().counters().drops.total() > 0);
}
