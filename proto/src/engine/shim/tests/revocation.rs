//! Binding revocations from the AP.

use super::*;

/// Two flows pinned to M1 and M2 through the AP, with acknowledgements.
fn two_flows(s: &mut Shim, ap: &mut TestAp, now: Instant) {
    for (port, member) in [(40000, M1), (40001, M2)] {
        out(s, now, &tcp(app(port), server(), SYN, 1, 0)).expect("sent");
        let mut answer = ap.data(Some(member), &tcp(server(), app(port), SYN, 500, 2));
        assert_eq!(s.handle_udp(now, ap_ep(), &mut answer), DataAction::ToTun);
        out(s, now, &tcp(app(port), server(), ACK, 2, 501)).expect("sent");
    }
}

fn revocation(trigger: u8) -> MobilityMessage {
    MobilityMessage::new(MessageBody::BindingRevocation {
        trigger,
        sequence: 1,
    })
    .with(bid(M1))
    .with(MobilityOption::HomeAddress(HOA))
    .with(MobilityOption::Correspondent(CLIENT))
}

#[test]
fn an_unsealed_revocation_does_nothing_a_sealed_one_resets_the_members_flows() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    two_flows(&mut s, &mut ap, now);
    assert_eq!(s.poll_tun(), None);
    // The v1 attack: a spoofed BRI from the AP's endpoint reset idle
    // connections. Now it is dropped.
    let bri = revocation(revocation_trigger::MEMBER_RESTARTED);
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut unsealed_frame(Some(M1), &bri)),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    assert_eq!(s.poll_tun(), None);
    assert_eq!(s.flows().count(), 2);
    assert!(events(&mut s).is_empty());
    // Sealed by the AP (trigger 126: another instance took over M1).
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut ap.control(Some(M1), &bri)),
        DataAction::Consumed
    );
    let rst = s.poll_tun().expect("a reset for M1's flow");
    let info = inner::inspect(&rst).expect("a valid packet");
    let tcp_info = info.tcp.expect("TCP");
    assert!(tcp_info.flags.rst);
    assert_eq!(
        (
            info.flow.src,
            info.flow.src_port,
            info.flow.dst,
            info.flow.dst_port
        ),
        (HOA, 80, CLIENT, 40000)
    );
    assert_eq!(
        tcp_info.seq, 501,
        "the application's latest acknowledgement"
    );
    assert_eq!(s.poll_tun(), None, "M2's flow is left alone");
    assert_eq!(
        events(&mut s),
        [ShimEvent::Revoked {
            member: M1,
            flows_reset: 1
        }]
    );
    assert_eq!(s.flows().count(), 1);
}

#[test]
fn a_repeated_revocation_leaves_what_the_restarted_member_bound_since() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    two_flows(&mut s, &mut ap, now);
    let bri = revocation(revocation_trigger::MEMBER_RESTARTED);
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut ap.control(Some(M1), &bri)),
        DataAction::Consumed
    );
    assert!(s.poll_tun().is_some(), "M1's flow reset");
    events(&mut s);
    // The new instance of M1 binds again before the AP's repeat (500 ms
    // later, same sequence number): the repeat revokes nothing.
    bound(&mut s, &mut ap, now, M1);
    assert!(s.bindings().any(|(id, _)| *id == M1));
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut ap.control(Some(M1), &bri)),
        DataAction::Consumed
    );
    assert!(s.bindings().any(|(id, _)| *id == M1), "binding kept");
    assert!(events(&mut s).is_empty());
    assert_eq!(s.poll_tun(), None);
    // A new revocation (next sequence number) does.
    let next = MobilityMessage::new(MessageBody::BindingRevocation {
        trigger: revocation_trigger::MEMBER_RESTARTED,
        sequence: 2,
    })
    .with(bid(M1))
    .with(MobilityOption::HomeAddress(HOA))
    .with(MobilityOption::Correspondent(CLIENT));
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut ap.control(Some(M1), &next)),
        DataAction::Consumed
    );
    assert!(!s.bindings().any(|(id, _)| *id == M1));
    assert_eq!(
        events(&mut s),
        [ShimEvent::Revoked {
            member: M1,
            flows_reset: 0
        }]
    );
}
