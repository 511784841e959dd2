//! NAT traversal at the member: Punches, NAT keepalives sent and received,
//! and the status when the care-of test goes unanswered.

use super::*;
use crate::engine::DEFAULT_NAT_KEEPALIVE;
use crate::engine::testutil::tun;

/// A member the AP saw at `mapped` (behind a NAT), bound to CLIENT's shim.
fn bound_behind_nat(now: Instant, mapped: SocketAddr) -> (Member, Ap, Shim) {
    let mut m = member();
    m.start(now);
    let bu = registration_bu(&mut m);
    let mut ap = Ap::new(&bu, 0xa1, [0xa1; 16]);
    let opts = [
        MobilityOption::Session {
            index: 0xa1,
            nonce: [0xa1; 16],
        },
        MobilityOption::Cookie(COOKIE_2),
        MobilityOption::Endpoint(mapped),
    ];
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut ba_with(0, bu.seq, 15, &opts)),
        DataAction::Consumed
    );
    events(&mut m);
    assert!(m.behind_nat());
    let shim = bind(&mut m, &mut ap, now);
    events(&mut m);
    (m, ap, shim)
}

fn to_shim(m: &mut Member) -> Vec<Transmit> {
    transmits(m)
        .into_iter()
        .filter(|t| t.to == shim_ep())
        .collect()
}

#[test]
fn a_punch_is_dropped_silently_and_counted() {
    let now = t0();
    let (mut m, _ap) = registered(now);
    let punch = MobilityMessage::new(MessageBody::Punch);
    assert_eq!(
        m.handle_udp(now, shim_ep(), &mut unsigned(None, &punch)),
        DataAction::Consumed
    );
    assert_eq!(m.counters().punches, 1);
    assert!(transmits(&mut m).is_empty());
    assert_eq!(m.counters().drops.total(), 0);
}

#[test]
fn an_empty_sealed_frame_from_a_bound_shim_is_a_keepalive() {
    let now = t0();
    let (mut m, _ap, mut shim) = bound(now);
    let mut keepalive = sealed_frame(&mut shim.sessions, &[]);
    assert_eq!(
        m.handle_udp(now, shim_ep(), &mut keepalive),
        DataAction::Consumed
    );
    assert_eq!(m.counters().keepalives, 1);
    assert_eq!(m.counters().direct_in, 0);
    assert!(transmits(&mut m).is_empty());
}

#[test]
fn behind_a_nat_an_idle_direct_session_gets_a_keepalive() {
    let now = t0();
    let every = DEFAULT_NAT_KEEPALIVE;
    let (mut m, _ap, mut shim) = bound_behind_nat(now, ep("198.18.0.9:31000"));
    run_until(&mut m, now + every - Duration::from_millis(1));
    assert!(to_shim(&mut m).is_empty());
    run_until(&mut m, now + every);
    let t = to_shim(&mut m);
    assert_eq!(t.len(), 1, "one keepalive: {t:?}");
    assert!(open_frame(&mut shim.sessions, &t[0].payload).is_empty());
    assert_eq!(m.counters().nat_keepalives, 1);
    // An answer sent direct restarts the clock.
    let half = now + every + every / 2;
    run_until(&mut m, half);
    let mut answer = tcp(v6(HOA, 80), v6(CLIENT, 40000), ACK, 1, 1);
    assert!(matches!(
        tun(&mut m, half, &mut answer),
        DataAction::Send { .. }
    ));
    run_until(&mut m, now + every * 2);
    assert!(to_shim(&mut m).is_empty(), "sent {:?} ago", every / 2);
    run_until(&mut m, half + every);
    assert_eq!(to_shim(&mut m).len(), 1);
}

#[test]
fn without_a_nat_nothing_is_sent() {
    let now = t0();
    let every = DEFAULT_NAT_KEEPALIVE;
    let (mut m, _ap, _shim) = bound(now);
    run_until(&mut m, now + every * 2);
    assert!(to_shim(&mut m).is_empty());
    assert_eq!(m.counters().nat_keepalives, 0);
}

#[test]
fn an_unanswered_care_of_test_says_why_there_is_no_binding() {
    let now = t0();
    let (mut m, mut ap) = registered(now);
    let home_cookie = notice(&mut m, &mut ap, now, 1);
    home_test(&mut m, &mut ap, now, home_cookie);
    let why = |m: &Member| {
        m.correspondents()
            .next()
            .and_then(|c| c.why_unbound(m.config().care_of))
    };
    assert_eq!(why(&m), None);
    // The CoTI goes again on its backoff (1 s, then 2 s): no CoT comes.
    run_until(&mut m, at(now, 3_000));
    let c = m.correspondents().next().unwrap();
    assert_eq!(c.care_of_tests_unanswered(), 3);
    assert_eq!(
        why(&m).as_deref(),
        Some("care-of test unanswered (3 tries): NAT without a hole?")
    );
}

/// A shim behind a NAT that maps per destination: its Punch comes from
/// another port of its address than the AP saw. The CoTI goes to both;
/// the CoT from the punched endpoint moves the shim's endpoint there and
/// the BU follows. A Punch from another address records nothing.
#[test]
fn a_punch_from_another_port_of_the_shim_gets_the_care_of_test_too() {
    let now = t0();
    let (mut m, mut ap) = registered(now);
    let home_cookie = notice(&mut m, &mut ap, now, 1);
    let punched = SocketAddr::new(shim_ep().ip(), shim_ep().port() + 7);
    let stranger: SocketAddr = "[2001:db8:99::1]:4000".parse().unwrap();
    let punch = MobilityMessage::new(MessageBody::Punch);
    for from in [stranger, punched] {
        assert_eq!(
            m.handle_udp(now, from, &mut unsigned(None, &punch)),
            DataAction::Consumed
        );
    }
    assert!(transmits(&mut m).is_empty(), "a Punch is never answered");
    assert_eq!(
        m.handle_udp(
            now,
            ap_ep(),
            &mut ap.seal(shim_peer::home_test_msg(home_cookie, Some(TICKET)))
        ),
        DataAction::Consumed
    );
    let t = transmits(&mut m);
    let mut to: Vec<_> = t.iter().map(|t| t.to).collect();
    to.sort();
    let mut want = vec![shim_ep(), punched];
    want.sort();
    assert_eq!(
        to, want,
        "the CoTI goes to the notice's and the punched endpoint"
    );
    let MessageBody::CareOfTestInit { cookie } = unsealed_msg(&t[0]).body else {
        panic!("expected CoTIs: {t:?}");
    };
    // A CoT from an endpoint that is neither: unknown.
    assert_eq!(
        m.handle_udp(now, stranger, &mut care_of_test(cookie, [6; 8])),
        DataAction::Drop(DropReason::UnknownPeer)
    );
    assert_eq!(
        m.handle_udp(now, punched, &mut care_of_test(cookie, [6; 8])),
        DataAction::Consumed
    );
    let bu = transmits(&mut m);
    assert_eq!(bu.len(), 1, "{bu:?}");
    assert_eq!(bu[0].to, punched, "the BU goes where the CoT came from");
    assert_eq!(m.correspondents().next().map(|c| c.shim), Some(punched));
}
