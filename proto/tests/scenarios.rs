//! Whole-system scenarios on the deterministic simulator: registration,
//! legacy clients, route optimization, forged binding updates, care-of
//! address changes, drain and death, each also under 1% loss.
//!
//! Run with `SIM_LOG=1` to see every engine event with its virtual time.

use std::collections::BTreeSet;
use std::time::Duration;

use homeaddr_proto::engine::ap::MemberState;
use homeaddr_proto::engine::member::{MemberEvent, RegistrationState};
use homeaddr_proto::engine::shim::ShimEvent;
use homeaddr_proto::engine::{DropReason, Engine};
use homeaddr_proto::sim::{LoggedEvent, NodeId, SessionState, Sim};
use homeaddr_proto::wire::mh::MessageBody;
use homeaddr_proto::wire::{MemberId, MobilityMessage, TUNNEL_HEADER_LEN};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn active(sim: &Sim, id: u16) -> bool {
    sim.ap()
        .member(MemberId(id))
        .is_some_and(|m| m.state == MemberState::Active)
}

fn all_active(sim: &mut Sim, ids: &[u16]) {
    let took = sim.run_until_cond(secs(10), |s| ids.iter().all(|id| active(s, *id)));
    assert!(
        took.is_some(),
        "members {ids:?} did not all register within 10 s"
    );
}

fn session_done(sim: &Sim, client: NodeId, idx: usize) -> bool {
    !matches!(
        sim.session(client, idx).state,
        SessionState::Connecting | SessionState::Open
    )
}

fn run_sessions(sim: &mut Sim, sessions: &[(NodeId, usize)], max: Duration) {
    let took = sim.run_until_cond(max, |s| {
        sessions.iter().all(|(c, i)| session_done(s, *c, *i))
    });
    assert!(took.is_some(), "sessions did not finish within {max:?}");
}

// ----- registration -----

#[test]
fn member_registers_refreshes_and_deregisters() {
    let mut sim = Sim::new(1);
    let m = sim.add_member(1);
    let took = sim
        .run_until_cond(secs(5), |s| {
            active(s, 1) && matches!(s.member(m).state(), RegistrationState::Registered { .. })
        })
        .expect("member registers");
    // BU and BA over a 1 ms link, in 1 ms steps.
    assert!(took <= ms(3), "registration over a 1 ms link took {took:?}");

    // The AP's BRR heartbeat makes the member refresh about once a second.
    let before = sim.member(m).counters().registration_bus;
    sim.run_for(secs(10));
    let refreshes = sim.member(m).counters().registration_bus - before;
    assert!(
        (9..=11).contains(&refreshes),
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
    sim.loss = 1.0;
    let m = sim.add_member(1);
    sim.run_for(ms(1500));
    assert!(!active(&sim, 1));
    sim.loss = 0.0;
    sim.run_until_cond(secs(5), |s| active(s, 1))
        .expect("registers after retransmission");
    assert!(sim.member(m).counters().retransmissions >= 1);
}

#[test]
fn wrong_key_is_refused_and_logged() {
    let mut sim = Sim::new(3);
    let m = sim.add_member_with(7, |c| c.key = b"not the key".to_vec());
    sim.start_member(m);
    sim.run_until_cond(secs(30), |s| {
        matches!(s.member(m).state(), RegistrationState::Refused { .. })
    })
    .expect("member gives up");
    assert_eq!(
        sim.member(m).state(),
        RegistrationState::Refused { status: 146 }
    );
    assert!(sim.ap().member(MemberId(7)).is_none());
    let tried: Vec<_> = sim
        .events(|(_, e)| match e {
            LoggedEvent::Ap(homeaddr_proto::engine::ap::ApEvent::RegistrationRefused {
                from,
                id,
                status,
            }) => Some((*from, *id, *status)),
            _ => None,
        })
        .collect();
    assert!(!tried.is_empty());
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
    let old_bu = sim.captured_between(old_ep, ap_ep)[0].payload.clone();
    let new_ep = sim.move_member(m, false);
    sim.run_until_cond(secs(5), |s| {
        s.ap()
            .member(MemberId(1))
            .is_some_and(|e| e.care_of == new_ep)
    })
    .expect("AP follows the move");
    let replays = sim.ap().counters().drops.get(DropReason::Replay);
    let attacker = sim.add_attacker();
    sim.send_udp(attacker, old_ep, ap_ep, old_bu);
    sim.run_for(ms(50));
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
        let mut payload = vec![0x11, 0x80, 0, 1];
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

// ----- legacy clients -----

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
    sim.set_latency(c, Sim::AP, ms(30));
    sim.set_latency(c, m, ms(2));
    sim.set_latency(Sim::AP, m, ms(2));
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
    assert!(sim.member(m).counters().direct_return >= 20);
}

// ----- route optimization -----

struct Handoff {
    sim: Sim,
    client: NodeId,
    member: NodeId,
    session: usize,
}

/// AP 30 ms from the client, member 2 ms from the client and from the AP.
fn handoff_topology(seed: u64, loss: f64) -> Handoff {
    let mut sim = Sim::new(seed);
    let member = sim.add_member(1);
    let client = sim.add_shim_client();
    sim.set_latency(client, Sim::AP, ms(30));
    sim.set_latency(client, member, ms(2));
    sim.set_latency(Sim::AP, member, ms(2));
    all_active(&mut sim, &[1]);
    sim.loss = loss;
    Handoff {
        sim,
        client,
        member,
        session: 0,
    }
}

fn first_direct(sim: &Sim, client: NodeId) -> Option<std::time::Instant> {
    sim.events(|(at, e)| match e {
        LoggedEvent::Shim(c, ShimEvent::FlowDirect { .. }) if *c == client => Some(*at),
        _ => None,
    })
    .next()
}

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
        h.sim.jitter = ms(1);
        h.session = h.sim.start_session(h.client, 300, ms(10));
        run_sessions(&mut h.sim, &[(h.client, h.session)], secs(60));
        let s = h.sim.session(h.client, h.session);
        assert_eq!(s.state, SessionState::Done, "seed {seed}");
        assert_eq!(s.members(), BTreeSet::from([MemberId(1)]));
        assert!(
            first_direct(&h.sim, h.client).is_some(),
            "seed {seed}: never went direct"
        );
        let (_, last) = s.first_last_rtt().unwrap();
        assert!(last < ms(10), "seed {seed}: last RTT {last:?}");
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
    // A restarted member (same endpoint, new sequence numbers) is accepted
    // at once and binds again, resynchronising on the shim's BA 135.
    h.sim.restart_member(h.member);
    h.sim
        .run_until_cond(secs(3), |s| active(s, 1))
        .expect("restarted member registers at once");
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
    sim.add_member(1);
    let m2 = sim.add_member_with(2, |_| {}); // started later
    all_active(&mut sim, &[1]);
    let client = sim.add_shim_client();
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
}

// ----- forged binding updates -----

fn bu_sequence(payload: &[u8]) -> Option<u16> {
    match MobilityMessage::parse(&payload[TUNNEL_HEADER_LEN..])
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
    forged[TUNNEL_HEADER_LEN + 6..TUNNEL_HEADER_LEN + 8].copy_from_slice(&seq.to_be_bytes());
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
    let sent_before = h.sim.captured_between(shim_ep, member_ep).len();
    h.sim.send_udp(h.member, member_ep, shim_ep, valid);
    h.sim.run_for(ms(20));
    assert_eq!(rejected(&h.sim), n + 1, "BU with expired nonces accepted");
    let status = h.sim.captured_between(shim_ep, member_ep)[sent_before..]
        .iter()
        .find_map(|c| {
            match MobilityMessage::parse(&c.payload[TUNNEL_HEADER_LEN..])
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

// ----- member moves -----

/// Largest gap between two consecutive answers around the move.
fn stall(sim: &Sim, client: NodeId, session: usize, at: std::time::Instant) -> Duration {
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
    assert!(
        s.records.last().unwrap().rtt < ms(10),
        "not back on the direct path"
    );
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

// ----- drain and death -----

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
    sim.loss = loss;
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

// ----- robustness -----

#[test]
fn engines_survive_garbage() {
    let mut sim = Sim::new(12);
    let m = sim.add_member(1);
    let c = sim.add_shim_client();
    all_active(&mut sim, &[1]);
    let mut rng = homeaddr_proto::sim::SimRng::new(99);
    let now = sim.now;
    let from = sim.nodes[c].endpoint();
    for len in 0..2000usize {
        let mut buf: Vec<u8> = (0..len % 300).map(|_| rng.next_u64() as u8).collect();
        if len % 3 == 0 && buf.len() > 4 {
            buf[0] = 0x01; // a valid version nibble, so deeper parsers run
            buf[1] = (len % 2) as u8;
        }
        let _ = sim.ap_mut().handle_udp(now, from, &mut buf.clone());
        let _ = sim.ap_mut().handle_tun(now, &mut buf.clone());
        let _ = sim.member_mut(m).handle_udp(now, from, &mut buf.clone());
        let _ = sim.member_mut(m).handle_tun(now, &mut buf.clone());
    }
    assert!(sim.ap().counters().drops.total() > 0);
}

// ----- fragments -----

/// The two fragments of one UDP datagram from `src` to the HoA, port
/// `port`, identification `id`: the first holds the UDP header.
fn udp_fragments(src: std::net::Ipv6Addr, port: u16, id: u32) -> [Vec<u8>; 2] {
    let hoa = homeaddr_proto::sim::home_address();
    let fragment = |offset_units: u16, more: bool, payload: &[u8]| {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[44, 64]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&hoa.octets());
        p.extend_from_slice(&[17, 0]);
        p.extend_from_slice(&(offset_units << 3 | u16::from(more)).to_be_bytes());
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(payload);
        p
    };
    let mut first = Vec::new();
    first.extend_from_slice(&port.to_be_bytes());
    first.extend_from_slice(&8080u16.to_be_bytes());
    first.extend_from_slice(&1508u16.to_be_bytes());
    first.extend_from_slice(&[0, 0]);
    first.extend_from_slice(&[0xab; 1000]);
    // 1008 bytes = 126 units of 8.
    [
        fragment(0, true, &first),
        fragment(126, false, &[0xcd; 500]),
    ]
}

/// Send a datagram's fragments from `client`'s application and return the
/// members that received each (in fragment order).
fn send_fragmented(sim: &mut Sim, client: NodeId, port: u16, id: u32) -> Vec<BTreeSet<u16>> {
    let src = sim.nodes[client].addr;
    let fragments = udp_fragments(src, port, id);
    for f in &fragments {
        sim.send_from_app(client, f.clone());
    }
    sim.run_for(ms(100));
    fragments
        .iter()
        .map(|f| {
            (0..sim.nodes.len())
                .filter(|&n| matches!(sim.nodes[n].kind, homeaddr_proto::sim::NodeKind::Member(..)))
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
