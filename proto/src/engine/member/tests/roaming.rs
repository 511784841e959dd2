//! A shim that moves (docs/PROTOCOL.md 4.6): the correspondent's shim
//! endpoint follows the newest sealed frame and a Shim Notice of the same
//! instance; replays move nothing.

use super::*;

fn shim_endpoint(m: &Member) -> Option<SocketAddr> {
    m.correspondents().find(|c| c.client == CLIENT).map(|c| c.shim)
}

fn bound_to(m: &Member) -> bool {
    m.correspondents()
        .any(|c| c.client == CLIENT && c.binding.is_some())
}

#[test]
fn a_newer_sealed_frame_from_a_new_source_moves_the_shim_endpoint() {
    let now = t0();
    let (mut m, _ap, mut shim) = bound(now);
    events(&mut m);
    let older = sealed_frame(&mut shim.sessions, &inbound());
    let newer = sealed_frame(&mut shim.sessions, &inbound());
    let rebound = ep("[2001:db8:c::1]:31000");
    assert_eq!(
        m.handle_udp(now, rebound, &mut newer.clone()),
        DataAction::ToTun
    );
    assert_eq!(shim_endpoint(&m), Some(rebound));
    assert_eq!(m.counters().roams, 1);
    assert!(bound_to(&m), "the binding stays");
    // Answers go to the new endpoint.
    let (_, out) = tun_out(&mut m, now, &mut answer());
    assert_eq!(out.map(|(to, _)| to), Some(rebound));
    // An attacker's copies: the replay is refused, the older frame opens
    // but is not the newest; neither moves anything.
    let attacker = ep("[2001:db8:bad::1]:666");
    assert_eq!(
        m.handle_udp(now, attacker, &mut newer.clone()),
        DataAction::Drop(DropReason::Replay)
    );
    assert_eq!(
        m.handle_udp(now, attacker, &mut older.clone()),
        DataAction::ToTun
    );
    assert_eq!(shim_endpoint(&m), Some(rebound));
    assert_eq!(m.counters().roams, 1);
}

#[test]
fn a_shim_notice_of_the_same_instance_at_a_new_endpoint_keeps_the_binding() {
    let now = t0();
    let (mut m, mut ap, _shim) = bound(now);
    events(&mut m);
    let moved = ep("[2001:db8:c::1]:32000");
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut shim_notice(&mut ap, CLIENT, moved, 1)),
        DataAction::Consumed
    );
    assert_eq!(shim_endpoint(&m), Some(moved));
    assert!(bound_to(&m), "the same shim process: the binding stays");
    assert_eq!(m.counters().roams, 1);
    assert!(transmits(&mut m).is_empty(), "no new return routability");
    // Another instance is another shim: its state starts over.
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut shim_notice(&mut ap, CLIENT, moved, 2)),
        DataAction::Consumed
    );
    assert!(!bound_to(&m));
}
