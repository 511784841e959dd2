//! A member changes care-of address: make before break, break before
//! make, under loss.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use homeaddr_proto::wire::MemberId;
use homeaddr_sim::{NodeId, SessionState, Sim};

use crate::common::*;

/// Largest gap between two consecutive answers around the move.
fn stall(sim: &Sim, client: NodeId, session: usize, at: Instant) -> Duration {
    let s = sim.session(client, session);
    let times: Vec<_> = s.records.iter().map(|r| r.sent + r.rtt).collect();
    times
        .windows(2)
        .filter(|w| w[1] >= at && w[0] <= at + secs(2))
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

fn care_of_change(seed: u64, loss: f64, keep_old: bool) -> (Duration, Duration) {
    let mut h = handoff_topology(seed, loss);
    h.session = h.sim.start_session(h.client, 400, ms(5));
    h.sim
        .run_until_cond(secs(10), |s| first_direct(s, h.client).is_some())
        .expect("goes direct");
    h.sim.run_for(ms(500));
    let moved_at = h.sim.now;
    let old = h.sim.nodes[h.member].addr;
    let new_ep = h.sim.move_member(h.member, keep_old);
    let rebound = h
        .sim
        .run_until_cond(secs(10), |s| {
            s.shim(h.client)
                .bindings()
                .any(|(_, b)| b.care_of == new_ep)
        })
        .expect("shim learns the new care-of address");
    h.sim.retire_address(old);
    run_sessions(&mut h.sim, &[(h.client, h.session)], secs(60));
    let s = h.sim.session(h.client, h.session);
    assert_eq!(
        s.state,
        SessionState::Done,
        "transfer did not survive the move"
    );
    assert_eq!(s.records.len(), 400);
    assert_eq!(s.members(), BTreeSet::from([MemberId(1)]));
    // The last answer that needed no retransmission (under loss the very
    // last request may have been lost: its RTT then includes the RTO).
    let last = s.records.iter().rev().find(|r| !r.retransmitted).unwrap();
    assert!(last.rtt < ms(10), "not back on the direct path");
    assert_eq!(
        h.sim.ap().member(MemberId(1)).map(|m| m.care_of),
        Some(new_ep)
    );
    (stall(&h.sim, h.client, h.session, moved_at), rebound)
}

#[test]
fn flow_follows_a_member_that_changes_care_of_address() {
    let (stall_mbb, rebound) = care_of_change(9, 0.0, true);
    // Make before break: no packet is lost; the member holds its answers
    // until the new binding is in place (a care-of test and a BU, ~6 ms).
    assert!(stall_mbb < ms(20), "make-before-break stall {stall_mbb:?}");
    let (stall_bbm, _) = care_of_change(9, 0.0, false);
    // Break before make: what was in flight to the old address is lost and
    // the client retransmits after its RTO (300 ms).
    assert!(stall_bbm < ms(500), "break-before-make stall {stall_bbm:?}");
    println!(
        "care-of change: rebinding took {rebound:?}; stall {stall_mbb:?} (make before break), {stall_bbm:?} (break before make)"
    );
}

#[test]
fn care_of_change_converges_under_one_percent_loss() {
    for seed in 0..4 {
        let _ = care_of_change(200 + seed, 0.01, seed % 2 == 0);
    }
}
