//! A member drains or dies: open flows, new clients, resets and recovery.

use std::collections::BTreeSet;
use std::time::Duration;

use homeaddr_proto::engine::ap::MemberState;
use homeaddr_proto::wire::MemberId;
use homeaddr_sim::{NodeId, SessionState, Sim};

use crate::common::*;

struct Pool {
    sim: Sim,
    a: NodeId,
    shim: NodeId,
    legacy: Vec<NodeId>,
}

/// Two members; a shim client and legacy clients whose first sessions are on member 1.
fn pool(seed: u64, loss: f64) -> (Pool, Vec<(NodeId, usize)>) {
    let mut sim = Sim::new(seed);
    let a = sim.add_member(1);
    let _b = sim.add_member(2);
    all_active(&mut sim, &[1, 2]);
    sim.net.loss = loss;
    // Find clients that Maglev sends to member 1.
    let mut shim = None;
    let mut legacy = Vec::new();
    for _ in 0..64 {
        let c = sim.add_shim_client();
        if sim.ap().choose_member(&sim.nodes[c].addr) == Some(MemberId(1)) {
            shim = Some(c);
            break;
        }
    }
    for _ in 0..64 {
        let c = sim.add_legacy_client();
        if sim.ap().choose_member(&sim.nodes[c].addr) == Some(MemberId(1)) {
            legacy.push(c);
            if legacy.len() == 2 {
                break;
            }
        }
    }
    let shim = shim.expect("a client hashed to member 1");
    ap_session(&mut sim, shim);
    let mut sessions = vec![(shim, sim.start_session(shim, 100_000, ms(10)))];
    sessions.extend(
        legacy
            .iter()
            .map(|c| (*c, sim.start_session(*c, 100_000, ms(10)))),
    );
    let took = sim.run_until_cond(secs(20), |s| {
        first_direct(s, shim).is_some()
            && sessions
                .iter()
                .all(|(c, i)| s.session(*c, *i).records.len() > 5)
    });
    assert!(took.is_some(), "pool did not get going");
    (
        Pool {
            sim,
            a,
            shim,
            legacy,
        },
        sessions,
    )
}

fn drain_scenario(seed: u64, loss: f64) {
    let (mut p, old) = pool(seed, loss);
    p.sim
        .with_ap(|ap, now| ap.drain(now, MemberId(1), None).expect("member 1 exists"));
    // The drain reaches the member (BA) and its shims (BU with the drain flag).
    p.sim
        .run_until_cond(secs(10), |s| {
            s.shim(p.shim)
                .bindings()
                .any(|(id, b)| *id == MemberId(1) && b.draining)
        })
        .expect("shim learns of the drain");
    assert!(p.sim.member(p.a).is_draining());
    let new: Vec<(NodeId, usize)> = std::iter::once(p.shim)
        .chain(p.legacy.iter().copied())
        .map(|c| (c, p.sim.start_session(c, 20, ms(10))))
        .collect();
    run_sessions(&mut p.sim, &new, secs(30));
    for (c, i) in &new {
        let s = p.sim.session(*c, *i);
        assert_eq!(s.state, SessionState::Done);
        assert_eq!(
            s.members(),
            BTreeSet::from([MemberId(2)]),
            "a new flow reached the draining member"
        );
    }
    // Open flows keep running on the draining member.
    p.sim.run_for(secs(2));
    for (c, i) in &old {
        let s = p.sim.session(*c, *i);
        assert_eq!(
            s.state,
            SessionState::Open,
            "an open flow of the draining member broke"
        );
        assert_eq!(s.members(), BTreeSet::from([MemberId(1)]));
        let last = s.records.last().unwrap();
        assert!(
            p.sim.now - (last.sent + last.rtt) < secs(1),
            "open flow stalled"
        );
    }
}

#[test]
fn draining_member_keeps_open_flows_and_gets_no_new_clients() {
    drain_scenario(10, 0.0);
}

#[test]
fn drain_converges_under_one_percent_loss() {
    for seed in 0..3 {
        drain_scenario(300 + seed, 0.01);
    }
}

fn death_scenario(seed: u64, loss: f64) -> Duration {
    let (mut p, old) = pool(seed, loss);
    let killed_at = p.sim.now;
    p.sim.kill(p.a);
    let new: Vec<(NodeId, usize)> = std::iter::once(p.shim)
        .chain(p.legacy.iter().copied())
        .map(|c| (c, p.sim.start_session(c, 20, ms(10))))
        .collect();
    run_sessions(&mut p.sim, &new, secs(30));
    let mut recovered = Duration::ZERO;
    for (c, i) in &new {
        let s = p.sim.session(*c, *i);
        assert_eq!(
            s.state,
            SessionState::Done,
            "a new connection after the death failed"
        );
        assert_eq!(s.members(), BTreeSet::from([MemberId(2)]));
        recovered = recovered.max(s.connected.expect("connected") - killed_at);
    }
    assert!(
        recovered < secs(8),
        "new connections took {recovered:?} after the death"
    );
    // Old flows fail fast: the shim resets its flow locally, legacy flows
    // are reset by the member that inherits them.
    run_sessions(&mut p.sim, &old, secs(10));
    for (c, i) in &old {
        assert_eq!(
            p.sim.session(*c, *i).state,
            SessionState::Reset,
            "client {c} flow not reset"
        );
    }
    assert!(p.sim.shim(p.shim).counters().resets >= 1);
    assert!(matches!(
        p.sim.ap().member(MemberId(1)).map(|m| m.state),
        Some(MemberState::Down { .. })
    ));
    recovered
}

#[test]
fn dead_member_clients_fall_back_and_reach_a_live_member() {
    let recovered = death_scenario(11, 0.0);
    println!("member death: new connections served again {recovered:?} after the kill");
}

#[test]
fn death_converges_under_one_percent_loss() {
    for seed in 0..3 {
        death_scenario(400 + seed, 0.01);
    }
}
