//! Flow Reports: members pin the flows they serve, whatever Maglev says.

use super::*;

/// Members 1 and 2 registered; nothing queued.
fn ap_with_two_members() -> (AccessPoint, Instant, TestMember, TestMember) {
    let (mut ap, now, m1) = ap_with_member();
    let mut m2 = TestMember::new(M2, m2_ep());
    m2.register(&mut ap, now);
    events(&mut ap);
    transmits(&mut ap);
    (ap, now, m1, m2)
}

/// A client endpoint Maglev gives to `member`.
fn client_of(ap: &AccessPoint, member: MemberId) -> SocketAddrV6 {
    (1..1000)
        .map(client)
        .find(|c| ap.choose_member(c) == Some(member))
        .map(|c| v6(c, 40000))
        .expect("Maglev gives some client to each member")
}

#[test]
fn a_flow_report_pins_a_flow_maglev_gives_to_another_member() {
    let (mut ap, now, _m1, mut m2) = ap_with_two_members();
    let c = client_of(&ap, M1);
    let mut report = m2.flow_report(true, &[reported(c)]);
    assert_eq!(
        ap.handle_udp(now, m2_ep(), &mut report),
        DataAction::Consumed
    );
    assert_eq!(
        (ap.counters().flows_reported, ap.counters().flows_moved),
        (1, 0)
    );
    let e = ap.affinity().get(&reported(c).key(HOA)).expect("pinned");
    assert_eq!((e.member, e.state()), (M2, FlowState::Open));
    // A segment of the flow (here during settle, too) goes to the reporter.
    let later = at(now, 10);
    assert_eq!(
        from_tun(&mut ap, later, &tcp(c, v6(HOA, 80), ACK, 5, 6)),
        send_to(m2_ep())
    );
    // Another flow of the same client follows Maglev.
    let other = v6(*c.ip(), 40001);
    assert_eq!(
        from_tun(&mut ap, later, &tcp(other, v6(HOA, 80), SYN, 1, 0)),
        send_to(m1_ep())
    );
}

#[test]
fn a_flow_report_re_pins_a_flow_from_another_member() {
    let (mut ap, now, _m1, mut m2) = ap_with_two_members();
    let c = client_of(&ap, M1);
    let h = v6(HOA, 80);
    assert_eq!(
        from_tun(&mut ap, now, &tcp(c, h, SYN, 1, 0)),
        send_to(m1_ep())
    );
    assert_eq!(ap.affinity().flows_of(M1), 1);
    // Member 2 serves it (it came through another AP first): its report wins.
    let mut report = m2.flow_report(false, &[reported(c)]);
    assert_eq!(
        ap.handle_udp(now, m2_ep(), &mut report),
        DataAction::Consumed
    );
    assert_eq!(
        (ap.counters().flows_reported, ap.counters().flows_moved),
        (1, 1)
    );
    assert_eq!(
        (ap.affinity().flows_of(M1), ap.affinity().flows_of(M2)),
        (0, 1)
    );
    assert_eq!(
        from_tun(&mut ap, at(now, 5), &tcp(c, h, ACK, 2, 1)),
        send_to(m2_ep())
    );
    // Reported again by the same member: refreshed, not moved.
    let mut again = m2.flow_report(false, &[reported(c)]);
    ap.handle_udp(at(now, 6), m2_ep(), &mut again);
    assert_eq!(
        (ap.counters().flows_reported, ap.counters().flows_moved),
        (2, 1)
    );
}

#[test]
fn an_unsealed_flow_report_is_dropped() {
    let (mut ap, now, _m1, _m2) = ap_with_two_members();
    let c = client_of(&ap, M1);
    let msg = MobilityMessage::new(MessageBody::FlowReport { full: true })
        .with(MobilityOption::Flow(reported(c)));
    let mut f = unsealed_frame(Some(M2), &msg);
    assert_eq!(
        ap.handle_udp(now, m2_ep(), &mut f),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    // Signed like a registration does not help either.
    let mut signed = crate::engine::testutil::signed(M2, msg, KEY);
    assert_eq!(
        ap.handle_udp(now, m2_ep(), &mut signed),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    assert!(ap.affinity().is_empty());
    assert_eq!(ap.counters().flows_reported, 0);
}

#[test]
fn a_flow_report_from_a_down_member_is_ignored() {
    let (mut ap, now, mut m) = ap_with_member();
    let c = v6(client(3), 40000);
    let report = m.flow_report(true, &[reported(c)]);
    run_until(&mut ap, now + DEFAULT_DEAD_AFTER);
    assert!(ap.member(M1).is_some_and(MemberEntry::is_down));
    let late = now + DEFAULT_DEAD_AFTER;
    let mut f = report;
    assert!(matches!(
        ap.handle_udp(late, m1_ep(), &mut f),
        DataAction::Drop(DropReason::UnknownPeer)
    ));
    assert!(ap.affinity().is_empty());
    assert_eq!(ap.counters().flows_reported, 0);
    assert!(
        ap.member(M1).is_some_and(MemberEntry::is_down),
        "still down"
    );
}

#[test]
fn a_flow_report_skips_invalid_flows_and_refuses_too_many() {
    let (mut ap, now, mut m) = ap_with_member();
    let good = reported(v6(client(1), 40000));
    let bad = [
        ReportedFlow {
            client: HOA,
            ..good
        },
        ReportedFlow {
            client: Ipv6Addr::UNSPECIFIED,
            ..good
        },
        ReportedFlow {
            client: "ff02::1".parse().unwrap(),
            ..good
        },
        ReportedFlow {
            client: "fe80::1".parse().unwrap(),
            ..good
        },
        ReportedFlow {
            client_port: 0,
            ..good
        },
        ReportedFlow {
            proto: 17,
            home_port: 0,
            ..good
        },
    ];
    let icmp = ReportedFlow {
        proto: 58,
        client_port: 0,
        home_port: 0,
        client: client(2),
        ..good
    };
    let mut flows = bad.to_vec();
    flows.extend([good, icmp]);
    let mut f = m.flow_report(false, &flows);
    assert_eq!(ap.handle_udp(now, m1_ep(), &mut f), DataAction::Consumed);
    assert_eq!(ap.counters().flows_reported, 2);
    assert_eq!(ap.affinity().len(), 2);
    assert!(ap.affinity().get(&icmp.key(HOA)).is_some());
    // 49 flows in one report: malformed, nothing taken.
    let many: Vec<_> = (0..=FLOWS_PER_REPORT as u16)
        .map(|i| reported(v6(client(100 + i), 40000)))
        .collect();
    let mut f = m.flow_report(true, &many);
    assert_eq!(
        ap.handle_udp(now, m1_ep(), &mut f),
        DataAction::Drop(DropReason::Malformed)
    );
    assert_eq!(ap.affinity().len(), 2);
    // 48 are fine.
    let mut f = m.flow_report(true, &many[..FLOWS_PER_REPORT]);
    assert_eq!(ap.handle_udp(now, m1_ep(), &mut f), DataAction::Consumed);
    assert_eq!(ap.affinity().len(), 2 + FLOWS_PER_REPORT);
    // The sweep timer runs for the reported flows.
    assert!(ap.poll_timeout().is_some());
}
