//! The AP engine alone: frames and a virtual clock in; actions, transmits,
//! events and timers out.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Instant;

use super::*;
use crate::engine::testutil::{
    ACK, HOA, KEY, SPI, SYN, at, bid, data_frame, ep, framed, messages, parse, registration_bu,
    relay, run_until, sent, t0, tcp, transmits, tun, unsigned, v6,
};
use crate::engine::verify_registration;
use crate::wire::TunnelHeader;
use crate::wire::mh::ba_status;

const M1: MemberId = MemberId(1);
const M2: MemberId = MemberId(2);

fn m1_ep() -> SocketAddr {
    ep("[2001:db8:1::1]:4790")
}

fn m2_ep() -> SocketAddr {
    ep("[2001:db8:2::1]:4790")
}

fn client(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, n)
}

fn ap_with(adjust: impl FnOnce(&mut ApConfig)) -> AccessPoint {
    let mut config = ApConfig::new(
        HOA,
        vec![MemberKey {
            spi: SPI,
            key: KEY.to_vec(),
        }],
    );
    adjust(&mut config);
    AccessPoint::new(config).expect("valid config")
}

fn ap() -> AccessPoint {
    ap_with(|_| {})
}

/// Member `id` registers from `from` (weight 100, instance `id`).
fn register(ap: &mut AccessPoint, now: Instant, id: MemberId, from: SocketAddr, seq: u16) {
    let mut bu = registration_bu(id, from, seq, 60, (100, false, id.0.into()), KEY);
    assert_eq!(ap.handle_udp(now, from, &mut bu), DataAction::Consumed);
}

fn events(ap: &mut AccessPoint) -> Vec<ApEvent> {
    std::iter::from_fn(|| ap.poll_event()).collect()
}

/// The BA status and sequence number of the one transmit to `to`.
fn ba_to(ap: &mut AccessPoint, to: SocketAddr) -> (u8, u16, MobilityMessage) {
    let mut bas: Vec<_> = messages(ap)
        .into_iter()
        .filter(|(dst, _)| *dst == to)
        .collect();
    assert_eq!(bas.len(), 1, "one answer to {to}");
    let (_, msg) = bas.remove(0);
    match msg.body {
        MessageBody::BindingAck {
            status, sequence, ..
        } => (status, sequence, msg),
        ref other => panic!("expected a BA, got {other:?}"),
    }
}

#[test]
fn registration_is_accepted_signed_and_enters_maglev() {
    let (mut ap, now) = (ap(), t0());
    let mut bu = registration_bu(M1, m1_ep(), 7, 60, (100, false, 1), KEY);
    assert_eq!(ap.handle_udp(now, m1_ep(), &mut bu), DataAction::Consumed);
    assert_eq!(
        events(&mut ap),
        [ApEvent::MemberRegistered {
            id: M1,
            care_of: m1_ep()
        }]
    );
    let m = ap.member(M1).expect("in the table");
    assert_eq!((m.state, m.effective_weight()), (MemberState::Active, 100));
    assert_eq!(ap.choose_member(&client(1)), Some(M1));
    let t = transmits(&mut ap);
    assert_eq!(t.len(), 1);
    assert!(
        verify_registration(&t[0].payload[FRAME_HEADER_LEN..], KEY, HOA),
        "the BA is signed"
    );
    let (_, msg) = parse(&t[0]);
    assert_eq!(
        msg.body,
        MessageBody::BindingAck {
            status: ba_status::ACCEPTED,
            sequence: 7,
            lifetime: 15
        }
    );
    assert_eq!(msg.member_state(), Some((100, false, 0)));
    assert_eq!(ap.poll_timeout(), Some(now + DEFAULT_HEARTBEAT));
}

#[test]
fn wrong_key_is_refused_with_146_unsigned() {
    let (mut ap, now) = (ap(), t0());
    let mut bu = registration_bu(M1, m1_ep(), 7, 60, (100, false, 1), b"not-the-right-key");
    assert_eq!(ap.handle_udp(now, m1_ep(), &mut bu), DataAction::Consumed);
    let (status, seq, msg) = ba_to(&mut ap, m1_ep());
    assert_eq!((status, seq), (ba_status::AUTHENTICATION_FAILED, 7));
    assert_eq!(msg.authentication(), None, "no key to sign with");
    assert!(ap.member(M1).is_none());
    assert_eq!(ap.counters().drops.get(DropReason::AuthFailed), 1);
    assert!(matches!(
        events(&mut ap)[..],
        [ApEvent::RegistrationRefused { status: 146, .. }]
    ));
}

#[test]
fn replayed_sequence_is_refused_with_135_naming_the_last_accepted() {
    let (mut ap, now) = (ap(), t0());
    register(&mut ap, now, M1, m1_ep(), 10);
    transmits(&mut ap);
    register(&mut ap, at(now, 10), M1, m1_ep(), 10);
    let (status, seq, _) = ba_to(&mut ap, m1_ep());
    assert_eq!((status, seq), (ba_status::SEQUENCE_OUT_OF_WINDOW, 10));
    assert_eq!(ap.counters().drops.get(DropReason::Replay), 1);
    // The member resynchronises above the number the BA named.
    register(&mut ap, at(now, 20), M1, m1_ep(), 11);
    assert_eq!(ba_to(&mut ap, m1_ep()).0, ba_status::ACCEPTED);
}

#[test]
fn a_second_live_instance_of_an_id_is_refused_with_200() {
    let (mut ap, now) = (ap(), t0());
    register(&mut ap, now, M1, m1_ep(), 1);
    transmits(&mut ap);
    let mut clash = registration_bu(M1, m2_ep(), 1, 60, (100, false, 99), KEY);
    assert_eq!(
        ap.handle_udp(now, m2_ep(), &mut clash),
        DataAction::Consumed
    );
    assert_eq!(ba_to(&mut ap, m2_ep()).0, ba_status::MEMBER_ID_IN_USE);
    assert_eq!(ap.member(M1).map(|m| m.care_of), Some(m1_ep()));
}

#[test]
fn a_member_the_policy_drains_gets_no_flow_from_its_first_packet_on() {
    let (mut ap, now) = (
        ap_with(|c| {
            c.member_policies = vec![MemberPolicy {
                id: M2,
                weight: None,
                drain: true,
            }]
        }),
        t0(),
    );
    register(&mut ap, now, M1, m1_ep(), 1);
    register(&mut ap, now, M2, m2_ep(), 1);
    let m2 = ap.member(M2).expect("registered");
    assert_eq!(m2.effective_weight(), 0);
    assert_eq!(m2.drained_by(), DrainedBy::only(DrainCause::Config));
    assert!(events(&mut ap).contains(&ApEvent::PolicyApplied {
        id: M2,
        weight: None,
        drain: true
    }));
    // Its BA already tells it that the AP drains it.
    let (_, _, ba) = ba_to(&mut ap, m2_ep());
    assert_eq!(ba.member_state().map(|(_, d, _)| d), Some(true));
    for n in 1..200 {
        let mut syn = tcp(v6(client(n), 40000), v6(HOA, 80), SYN, 1, 0);
        assert_eq!(
            framed(&mut ap, now, &mut syn),
            sent(m1_ep(), TunnelHeader::data(Some(M1)))
        );
    }
    assert_eq!(ap.affinity().flows_of(M2), 0);
}

#[test]
fn replacing_the_policies_undrains_config_drains_only_and_restores_weights() {
    let policies = vec![
        MemberPolicy {
            id: M1,
            weight: Some(5),
            drain: false,
        },
        MemberPolicy {
            id: M2,
            weight: None,
            drain: true,
        },
    ];
    let (mut ap, now) = (ap_with(|c| c.member_policies = policies), t0());
    register(&mut ap, now, M1, m1_ep(), 1);
    register(&mut ap, now, M2, m2_ep(), 1);
    assert_eq!(ap.member(M1).map(MemberEntry::effective_weight), Some(5));
    ap.drain(now, M2, None).expect("registered");
    transmits(&mut ap);
    events(&mut ap);

    ap.set_member_policies(now, Vec::new());
    assert_eq!(
        ap.member(M1).map(MemberEntry::effective_weight),
        Some(100),
        "the advertised weight is back"
    );
    let m2 = ap.member(M2).expect("registered");
    assert!(
        matches!(m2.state, MemberState::Draining { by, .. } if by == DrainedBy::only(DrainCause::Operator)),
        "the operator's drain stays: {:?}",
        m2.state
    );
    ap.undrain(M2).expect("registered");
    assert_eq!(ap.member(M2).map(|m| m.state), Some(MemberState::Active));
    assert!(events(&mut ap).contains(&ApEvent::MemberUndrained { id: M2 }));
}

#[test]
fn legacy_data_goes_to_the_member_clamped_and_its_answer_to_the_tun() {
    let (mut ap, now) = (ap(), t0());
    register(&mut ap, now, M1, m1_ep(), 1);
    let (c, h) = (v6(client(1), 40000), v6(HOA, 80));
    let mut syn = tcp(c, h, SYN, 1, 0);
    assert_eq!(
        framed(&mut ap, now, &mut syn),
        sent(m1_ep(), TunnelHeader::data(Some(M1)))
    );
    // MSS option (bytes 62..64 of the packet) clamped to 1420 - 60.
    assert_eq!(u16::from_be_bytes([syn[62], syn[63]]), 1360);
    assert_eq!(ap.counters().mss_clamped, 1);
    let mut answer = data_frame(Some(M1), &tcp(h, c, ACK, 100, 2));
    assert_eq!(ap.handle_udp(now, m1_ep(), &mut answer), DataAction::ToTun);
    assert_eq!(ap.counters().legacy_out, 1);
    assert_eq!(ap.member(M1).map(|m| m.counters.packets_from), Some(1));
    // An answer whose source is not the HoA is a spoof.
    let mut forged = data_frame(Some(M1), &tcp(v6(client(9), 80), c, ACK, 1, 1));
    assert_eq!(
        ap.handle_udp(now, m1_ep(), &mut forged),
        DataAction::Drop(DropReason::SpoofedSource)
    );
}

#[test]
fn shim_data_needs_the_inner_source_of_its_endpoint_and_is_noticed() {
    let (mut ap, now) = (ap(), t0());
    register(&mut ap, now, M1, m1_ep(), 1);
    transmits(&mut ap);
    let shim = SocketAddr::new(client(1).into(), 5555);
    let (c, h) = (v6(client(1), 40000), v6(HOA, 80));
    let mut spoofed = data_frame(None, &tcp(v6(client(2), 40000), h, SYN, 1, 0));
    assert_eq!(
        ap.handle_udp(now, shim, &mut spoofed),
        DataAction::Drop(DropReason::SpoofedSource)
    );
    let mut frame = data_frame(None, &tcp(c, h, SYN, 1, 0));
    assert_eq!(
        relay(&mut ap, now, shim, &mut frame),
        sent(m1_ep(), TunnelHeader::data(Some(M1)))
    );
    let notices = messages(&mut ap);
    assert!(matches!(
        &notices[..],
        [(to, msg)] if *to == m1_ep() && msg.body == MessageBody::ShimNotice { client: client(1), shim }
    ));
    // The member's answer goes back to the shim, tagged with its id.
    let mut answer = data_frame(Some(M1), &tcp(h, c, ACK, 100, 2));
    assert_eq!(
        relay(&mut ap, now, m1_ep(), &mut answer),
        sent(shim, TunnelHeader::data(Some(M1)))
    );
}

/// An AP with member 1 registered and serving one flow of client 1's
/// shim (at `[client 1]:5555`); nothing queued.
fn ap_serving_a_shim() -> (AccessPoint, Instant, SocketAddr) {
    let (mut ap, now) = (ap(), t0());
    register(&mut ap, now, M1, m1_ep(), 1);
    let shim = SocketAddr::new(client(1).into(), 5555);
    let mut frame = data_frame(None, &tcp(v6(client(1), 40000), v6(HOA, 80), SYN, 1, 0));
    ap.handle_udp(now, shim, &mut frame);
    transmits(&mut ap);
    (ap, now, shim)
}

#[test]
fn a_member_that_misses_refreshes_is_down_and_its_shims_get_revocations() {
    let (mut ap, now, shim) = ap_serving_a_shim();
    events(&mut ap);

    // Heartbeats go out every second; nothing answers.
    run_until(&mut ap, at(now, 2_999));
    let brrs = messages(&mut ap);
    assert_eq!(brrs.len(), 2);
    assert!(
        brrs.iter()
            .all(|(to, m)| *to == m1_ep() && m.body == MessageBody::BindingRefreshRequest)
    );
    assert_eq!(ap.member(M1).map(|m| m.state), Some(MemberState::Active));

    run_until(&mut ap, now + DEFAULT_DEAD_AFTER);
    assert!(ap.member(M1).is_some_and(MemberEntry::is_down));
    assert_eq!(ap.choose_member(&client(1)), None);
    let ev = events(&mut ap);
    assert!(ev.contains(&ApEvent::MemberDown { id: M1 }));
    assert!(ev.contains(&ApEvent::Revoked {
        client: client(1),
        member: M1
    }));
    let revocation = |ap: &mut AccessPoint| {
        messages(ap)
            .into_iter()
            .filter(|(to, m)| {
                *to == shim && matches!(m.body, MessageBody::BindingRevocation { .. })
            })
            .count()
    };
    assert_eq!(revocation(&mut ap), 1, "sent at once");
    run_until(
        &mut ap,
        now + DEFAULT_DEAD_AFTER + DEFAULT_REVOCATION_INTERVAL * 2,
    );
    assert_eq!(revocation(&mut ap), 2, "and repeated twice");
    assert_eq!(ap.counters().revocations, 3);
    let mut syn = tcp(v6(client(1), 40001), v6(HOA, 80), SYN, 1, 0);
    assert_eq!(
        tun(&mut ap, now + DEFAULT_DEAD_AFTER, &mut syn),
        DataAction::Drop(DropReason::NoMember)
    );
}

#[test]
fn the_home_test_init_of_a_member_is_relayed_to_the_shim() {
    let (mut ap, now, shim) = ap_serving_a_shim();
    let hoti = MobilityMessage::new(MessageBody::HomeTestInit { cookie: [7; 8] })
        .with(bid(M1))
        .with(MobilityOption::HomeAddress(HOA))
        .with(MobilityOption::Correspondent(client(1)));
    let mut forged = unsigned(Some(M1), &hoti);
    assert_eq!(
        ap.handle_udp(now, m1_ep(), &mut forged),
        DataAction::Drop(DropReason::AuthFailed)
    );
    let mut signed_hoti = crate::engine::testutil::signed(M1, hoti, KEY);
    assert_eq!(
        ap.handle_udp(now, m1_ep(), &mut signed_hoti),
        DataAction::Consumed
    );
    let relayed = messages(&mut ap);
    assert!(matches!(
        &relayed[..],
        [(to, m)] if *to == shim && m.body == MessageBody::HomeTestInit { cookie: [7; 8] }
    ));
}
