//! Settling after a start: segments of unknown flows wait for their
//! members' Flow Reports instead of going to a Maglev pick.

use super::*;

const H: u16 = 80;

fn ack_of(c: SocketAddrV6) -> Vec<u8> {
    tcp(c, v6(HOA, H), ACK, 100, 200)
}

/// An RST (with ACK) of flow `c` -> home port 80.
fn rst_of(c: SocketAddrV6) -> Vec<u8> {
    let mut p = ack_of(c);
    // TCP flags byte: ACK | RST. The AP does not check TCP checksums.
    p[40 + 13] = 0x14;
    p
}

#[test]
fn settle_holds_back_segments_of_unknown_flows_only() {
    let (mut ap, now, mut m) = ap_with_member();
    assert!(ap.settling(now));
    let c = v6(client(1), 40000);
    assert_eq!(
        from_tun(&mut ap, now, &ack_of(c)),
        DataAction::Drop(DropReason::Settling)
    );
    assert_eq!(ap.counters().drops.get(DropReason::Settling), 1);
    assert!(ap.affinity().is_empty(), "not pinned");
    // A SYN starts a flow as usual, and the flow's next segments pass.
    let fresh = v6(client(2), 40000);
    let to_m1 = send_to(m1_ep());
    assert_eq!(
        from_tun(&mut ap, now, &tcp(fresh, v6(HOA, H), SYN, 1, 0)),
        to_m1
    );
    assert_eq!(from_tun(&mut ap, now, &ack_of(fresh)), to_m1);
    // Not TCP: passes.
    let mut udp = ack_of(v6(client(3), 5353));
    udp[6] = 17;
    assert_eq!(from_tun(&mut ap, now, &udp), to_m1);
    // An RST is not retransmitted: it is forwarded (and pins nothing).
    let before = ap.affinity().len();
    assert_eq!(from_tun(&mut ap, now, &rst_of(v6(client(4), 1))), to_m1);
    assert_eq!(ap.affinity().len(), before);
    // A reported flow passes: the point of settling.
    let mut report = m.flow_report(true, &[reported(c)]);
    assert_eq!(
        ap.handle_udp(now, m1_ep(), &mut report),
        DataAction::Consumed
    );
    assert_eq!(from_tun(&mut ap, at(now, 200), &ack_of(c)), to_m1);
    assert_eq!(ap.counters().drops.get(DropReason::Settling), 1);
}

#[test]
fn settle_passes_shim_tagged_segments_and_holds_untagged_ones() {
    let (mut ap, now, _m, mut shim) = ap_member_and_shim();
    let c = v6(shim.client(), 40000);
    let mut tagged = sealed_data(shim.sessions(), Some(M1), &ack_of(c));
    assert_eq!(ap.handle_udp(now, shim.ep, &mut tagged), send_to(m1_ep()));
    let untagged_flow = v6(shim.client(), 40001);
    let mut untagged = sealed_data(shim.sessions(), None, &ack_of(untagged_flow));
    assert_eq!(
        ap.handle_udp(now, shim.ep, &mut untagged),
        DataAction::Drop(DropReason::Settling)
    );
}

#[test]
fn settle_ends_settle_after_the_first_registration() {
    let mut ap = ap();
    let now = t0();
    // Before any registration the AP settles too (and has no member).
    assert!(ap.settling(now));
    assert_eq!(
        from_tun(&mut ap, now, &ack_of(v6(client(1), 1))),
        DataAction::Drop(DropReason::Settling)
    );
    assert_eq!(
        from_tun(&mut ap, now, &tcp(v6(client(1), 2), v6(HOA, H), SYN, 1, 0)),
        DataAction::Drop(DropReason::NoMember)
    );
    let first = at(now, 5000);
    TestMember::new(M1, m1_ep()).register(&mut ap, first);
    let just_before = first + DEFAULT_SETTLE - Duration::from_millis(1);
    assert!(ap.settling(just_before));
    // A second member registering later does not start it again.
    TestMember::new(M2, m2_ep()).register(&mut ap, just_before);
    assert_eq!(
        from_tun(&mut ap, just_before, &ack_of(v6(client(5), 1))),
        DataAction::Drop(DropReason::Settling)
    );
    let over = first + DEFAULT_SETTLE;
    assert!(!ap.settling(over));
    let c = v6(client(5), 1);
    let pick = ap.choose_member(c.ip()).unwrap();
    let to = if pick == M1 { m1_ep() } else { m2_ep() };
    assert_eq!(from_tun(&mut ap, over, &ack_of(c)), send_to(to));
    assert_eq!(
        ap.affinity().get(&reported(c).key(HOA)).unwrap().member,
        pick
    );
}

#[test]
fn a_settle_of_zero_never_holds_back() {
    let mut ap = ap_with(|c| c.settle = Duration::ZERO);
    let now = t0();
    assert!(!ap.settling(now));
    assert_eq!(
        from_tun(&mut ap, now, &ack_of(v6(client(1), 1))),
        DataAction::Drop(DropReason::NoMember)
    );
    TestMember::new(M1, m1_ep()).register(&mut ap, now);
    assert_eq!(
        from_tun(&mut ap, now, &ack_of(v6(client(1), 1))),
        send_to(m1_ep())
    );
    assert_eq!(ap.counters().drops.get(DropReason::Settling), 0);
}
