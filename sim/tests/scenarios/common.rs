//! Helpers every scenario uses: time units, waiting for registrations
//! and sessions, and the handoff topology.

use std::time::{Duration, Instant};

use homeaddr_proto::engine::ap::MemberState;
use homeaddr_proto::engine::shim::ShimEvent;
use homeaddr_proto::wire::MemberId;
use homeaddr_sim::{LoggedEvent, NodeId, SessionState, Sim};

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn active(sim: &Sim, id: u16) -> bool {
    sim.ap()
        .member(MemberId(id))
        .is_some_and(|m| m.state == MemberState::Active)
}

pub fn all_active(sim: &mut Sim, ids: &[u16]) {
    let took = sim.run_until_cond(secs(10), |s| ids.iter().all(|id| active(s, *id)));
    assert!(
        took.is_some(),
        "members {ids:?} did not all register within 10 s"
    );
}

/// Wait until a shim has its AP session (Hello, Cookie, Hello, Welcome:
/// two round trips to the AP): until then it drops application packets
/// (`no_session`).
pub fn ap_session(sim: &mut Sim, client: NodeId) {
    let took = sim.run_until_cond(secs(5), |s| s.shim(client).has_ap_session());
    assert!(took.is_some(), "shim {client} got no AP session within 5 s");
}

pub fn session_done(sim: &Sim, client: NodeId, idx: usize) -> bool {
    !matches!(
        sim.session(client, idx).state,
        SessionState::Connecting | SessionState::Open
    )
}

pub fn run_sessions(sim: &mut Sim, sessions: &[(NodeId, usize)], max: Duration) {
    let took = sim.run_until_cond(max, |s| {
        sessions.iter().all(|(c, i)| session_done(s, *c, *i))
    });
    assert!(took.is_some(), "sessions did not finish within {max:?}");
}

pub struct Handoff {
    pub sim: Sim,
    pub client: NodeId,
    pub member: NodeId,
    pub session: usize,
}

/// AP 30 ms from the client, member 2 ms from the client and from the AP.
pub fn handoff_topology(seed: u64, loss: f64) -> Handoff {
    let mut sim = Sim::new(seed);
    let member = sim.add_member(1);
    let client = sim.add_shim_client();
    sim.net.set_latency(client, Sim::AP, ms(30));
    sim.net.set_latency(client, member, ms(2));
    sim.net.set_latency(Sim::AP, member, ms(2));
    all_active(&mut sim, &[1]);
    ap_session(&mut sim, client);
    sim.net.loss = loss;
    Handoff {
        sim,
        client,
        member,
        session: 0,
    }
}

pub fn first_direct(sim: &Sim, client: NodeId) -> Option<Instant> {
    sim.events(|(at, e)| match e {
        LoggedEvent::Shim(c, ShimEvent::FlowDirect { .. }) if *c == client => Some(*at),
        _ => None,
    })
    .next()
}
