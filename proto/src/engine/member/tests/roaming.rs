//! A shim that moves (docs/PROTOCOL.md 4.6): the correspondent's shim
//! endpoint follows the newest sealed frame and a Shim Notice of the same
//! instance; replays move nothing.

use super::*;

fn shim_endpoint(m: &Member) -> Option<SocketAddr> {
    m.correspondents()
        .find(|c| c.client == CLIENT)
        .map(|c| c.shim)
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

#[test]
fn the_shims_home_address_from_its_notice_is_used_for_its_return_routability() {
    let now = t0();
    let (mut m, mut ap) = registered(now);
    let notice_for = |ap: &mut Ap, home: Ipv6Addr| {
        ap.seal(
            MobilityMessage::new(MessageBody::ShimNotice {
                client: CLIENT,
                shim: shim_ep(),
            })
            .with(bid(ID))
            .with(MobilityOption::HomeAddress(home))
            .with(MobilityOption::ShimInstance([1; 8])),
        )
    };
    // A HoA this member does not serve (an IPv4 one, IPv4-mapped): the
    // notice is refused.
    let hoa4 = std::net::Ipv4Addr::new(198, 19, 0, 1).to_ipv6_mapped();
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut notice_for(&mut ap, hoa4)),
        DataAction::Drop(DropReason::UnknownHomeAddress)
    );
    assert!(m.correspondents().next().is_none());
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut notice_for(&mut ap, HOA)),
        DataAction::Consumed
    );
    assert_eq!(m.correspondents().next().map(|c| c.home_address), Some(HOA));
    let t = transmits(&mut m);
    assert_eq!(t.len(), 1);
    let hoti = MobilityMessage::parse(&ap.open(&t[0])).unwrap();
    assert!(matches!(hoti.body, MessageBody::HomeTestInit { .. }));
    assert_eq!(hoti.home_address(), Some(HOA), "the shim's HoA");
}
