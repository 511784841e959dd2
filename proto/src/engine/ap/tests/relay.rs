//! Relaying between shims, members and the TUN; member loss and takeover.

use super::*;

#[test]
fn legacy_data_is_sealed_to_the_member_and_its_answer_opened_to_the_tun() {
    let (mut ap, now, mut m) = ap_with_member();
    let (c, h) = (v6(client(1), 40000), v6(HOA, 80));
    let syn = tcp(c, h, SYN, 1, 0);
    let mut frame = vec![0u8; HEADER_LEN];
    frame.extend_from_slice(&syn);
    frame.extend_from_slice(&[0; TAG_LEN]);
    assert_eq!(ap.handle_tun_frame(now, &mut frame), send_to(m1_ep()));
    let inner = open(m.sessions(), &mut frame);
    assert_eq!(TunnelHeader::parse(&frame).unwrap().member, Some(M1));
    // MSS clamped to inner_mtu - 60.
    assert_eq!(
        u16::from_be_bytes([inner[62], inner[63]]),
        DEFAULT_INNER_MTU - 60
    );
    // The answer, sealed, from any endpoint of the member: to the TUN.
    let mut answer = sealed_data(m.sessions(), Some(M1), &tcp(h, c, ACK, 100, 2));
    let elsewhere = ep("[2001:db8:1::99]:6000");
    assert_eq!(
        ap.handle_udp(now, elsewhere, &mut answer),
        DataAction::ToTun
    );
    assert_eq!(ap.member(M1).map(|e| e.care_of), Some(m1_ep()), "not moved");
    // Replayed: dropped.
    let mut again = sealed_data(m.sessions(), Some(M1), &tcp(h, c, ACK, 100, 2));
    let copy = again.clone();
    assert_eq!(ap.handle_udp(now, m1_ep(), &mut again), DataAction::ToTun);
    let mut replay = copy;
    assert_eq!(
        ap.handle_udp(now, m1_ep(), &mut replay),
        DataAction::Drop(DropReason::Replay)
    );
    // Tampered: auth_failed.
    let mut forged = sealed_data(m.sessions(), Some(M1), &tcp(h, c, ACK, 100, 2));
    forged[HEADER_LEN + 3] ^= 1;
    assert_eq!(
        ap.handle_udp(now, m1_ep(), &mut forged),
        DataAction::Drop(DropReason::AuthFailed)
    );
}

#[test]
fn shim_data_is_relayed_to_the_member_and_the_answer_back_to_the_shim() {
    let (mut ap, now, mut m, mut shim) = ap_member_and_shim();
    let (c, h) = (v6(client(1), 40000), v6(HOA, 80));
    // Inner source not the session's client: spoofed.
    let mut spoofed = sealed_data(shim.sessions(), None, &tcp(v6(client(2), 1), h, SYN, 1, 0));
    assert_eq!(
        ap.handle_udp(now, shim.ep, &mut spoofed),
        DataAction::Drop(DropReason::SpoofedSource)
    );
    let syn = tcp(c, h, SYN, 1, 0);
    let mut frame = sealed_data(shim.sessions(), None, &syn);
    let len = frame.len();
    assert_eq!(ap.handle_udp(now, shim.ep, &mut frame), send_to(m1_ep()));
    assert_eq!(frame.len(), len, "rewritten in place");
    let inner = open(m.sessions(), &mut frame);
    assert_eq!(
        &inner[..40],
        &syn[..40],
        "the member opens the shim's packet"
    );
    // The Shim Notice, sealed, with the shim's instance.
    let t = transmits(&mut ap);
    assert_eq!(t.len(), 1);
    let mut notice = t[0].payload.clone();
    let msg = MobilityMessage::parse(&open(m.sessions(), &mut notice)).unwrap();
    assert_eq!(
        msg.body,
        MessageBody::ShimNotice {
            client: client(1),
            shim: shim.ep
        }
    );
    assert_eq!(msg.shim_instance(), Some(shim.instance));
    // The member's answer: re-sealed for the shim, tagged with the member.
    let ack = tcp(h, c, ACK, 100, 2);
    let mut answer = sealed_data(m.sessions(), Some(M1), &ack);
    assert_eq!(ap.handle_udp(now, m1_ep(), &mut answer), send_to(shim.ep));
    assert_eq!(TunnelHeader::parse(&answer).unwrap().member, Some(M1));
    assert_eq!(open(shim.sessions(), &mut answer), ack);
}

#[test]
fn home_tests_are_relayed_sealed_with_the_care_of_ticket() {
    let (mut ap, now, mut m, mut shim) = ap_member_and_shim();
    let hoti = MobilityMessage::new(MessageBody::HomeTestInit { cookie: [7; 8] })
        .with(bid(M1))
        .with(MobilityOption::HomeAddress(HOA))
        .with(MobilityOption::Correspondent(client(1)));
    let mut f = sealed_control(m.sessions(), Protection::Encrypt, Some(M1), &hoti).unwrap();
    assert_eq!(ap.handle_udp(now, m1_ep(), &mut f), DataAction::Consumed);
    let t = transmits(&mut ap);
    assert_eq!(t[0].to, shim.ep);
    let mut relayed = t[0].payload.clone();
    let msg = MobilityMessage::parse(&open(shim.sessions(), &mut relayed)).unwrap();
    assert_eq!(msg.body, MessageBody::HomeTestInit { cookie: [7; 8] });
    // The member's registered care-of endpoint, for the shim's Punch.
    assert_eq!(msg.endpoint(), Some(m1_ep()));

    let hot = MobilityMessage::new(MessageBody::HomeTest {
        nonce_index: 3,
        cookie: [7; 8],
        token: [8; 8],
    })
    .with(bid(M1))
    .with(MobilityOption::HomeAddress(HOA))
    .with(MobilityOption::Correspondent(client(1)))
    .with(MobilityOption::CareOfTicket {
        nonce_index: 3,
        ticket: [9; 8],
    });
    let mut unsealed_hot = unsealed_frame(None, &hot);
    assert_eq!(
        ap.handle_udp(now, shim.ep, &mut unsealed_hot),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    let mut f = sealed_control(shim.sessions(), Protection::Encrypt, None, &hot).unwrap();
    assert_eq!(ap.handle_udp(now, shim.ep, &mut f), DataAction::Consumed);
    let t = transmits(&mut ap);
    assert_eq!(t[0].to, m1_ep());
    let mut relayed = t[0].payload.clone();
    let msg = MobilityMessage::parse(&open(m.sessions(), &mut relayed)).unwrap();
    assert_eq!(msg.care_of_ticket(), Some((3, [9; 8])));
}

#[test]
fn a_member_that_misses_refreshes_is_down_and_its_shims_get_sealed_revocations() {
    let (mut ap, now, mut m, mut shim) = ap_member_and_shim();
    let mut f = sealed_data(
        shim.sessions(),
        None,
        &tcp(v6(client(1), 40000), v6(HOA, 80), SYN, 1, 0),
    );
    ap.handle_udp(now, shim.ep, &mut f);
    let _ = m.sessions();
    transmits(&mut ap);
    run_until(&mut ap, now + DEFAULT_DEAD_AFTER);
    assert!(ap.member(M1).is_some_and(MemberEntry::is_down));
    let revocations: Vec<_> = transmits(&mut ap)
        .into_iter()
        .filter(|t| t.to == shim.ep)
        .collect();
    assert_eq!(revocations.len(), 1, "sent at once");
    let mut bri = revocations[0].payload.clone();
    let msg = MobilityMessage::parse(&open(shim.sessions(), &mut bri)).unwrap();
    assert!(matches!(
        msg.body,
        MessageBody::BindingRevocation {
            trigger: revocation_trigger::LIVENESS_FAILURE,
            ..
        }
    ));
    run_until(
        &mut ap,
        now + DEFAULT_DEAD_AFTER + DEFAULT_REVOCATION_INTERVAL * 2,
    );
    let shim_ep = shim.ep;
    for t in transmits(&mut ap).into_iter().filter(|t| t.to == shim_ep) {
        let mut f = t.payload.clone();
        open(shim.sessions(), &mut f); // each repeat sealed anew
    }
    assert_eq!(ap.counters().revocations, 3);
}

#[test]
fn a_member_instance_takeover_sends_bri_126_to_its_shims() {
    let (mut ap, now, _m, mut shim) = ap_member_and_shim();
    let mut f = sealed_data(
        shim.sessions(),
        None,
        &tcp(v6(client(1), 40000), v6(HOA, 80), SYN, 1, 0),
    );
    ap.handle_udp(now, shim.ep, &mut f);
    transmits(&mut ap);
    // The member restarts on the same endpoint (a new instance).
    let mut restarted = TestMember::new(M1, m1_ep());
    restarted.instance = 99;
    restarted.nonce = [42; 16];
    restarted.register(&mut ap, at(now, 100));
    let bris: Vec<_> = std::mem::take(&mut restarted.others)
        .into_iter()
        .filter(|t| t.to == shim.ep)
        .collect();
    assert_eq!(bris.len(), 1);
    let mut bri = bris[0].payload.clone();
    let msg = MobilityMessage::parse(&open(shim.sessions(), &mut bri)).unwrap();
    assert!(matches!(
        msg.body,
        MessageBody::BindingRevocation {
            trigger: revocation_trigger::MEMBER_RESTARTED,
            ..
        }
    ));
    // The new instance's session opens; it is noticed again.
    let mut f = sealed_data(
        shim.sessions(),
        None,
        &tcp(v6(client(1), 40001), v6(HOA, 80), SYN, 1, 0),
    );
    assert_eq!(
        ap.handle_udp(at(now, 200), shim.ep, &mut f),
        send_to(m1_ep())
    );
    open(restarted.sessions(), &mut f);
}

#[test]
fn empty_sealed_data_frames_are_nat_keepalives() {
    let (mut ap, now, mut m, mut shim) = ap_member_and_shim();
    let before = ap.counters().keepalives;
    for (from, sessions, member) in [
        (m1_ep(), m.sessions(), Some(M1)),
        (shim.ep, shim.sessions(), None),
    ] {
        let mut f = vec![0u8; HEADER_LEN + TAG_LEN];
        seal_data(sessions, Protection::Encrypt, member, &mut f).unwrap();
        assert_eq!(ap.handle_udp(now, from, &mut f), DataAction::Consumed);
    }
    assert_eq!(ap.counters().keepalives, before + 2);
    assert!(transmits(&mut ap).is_empty());
    assert_eq!(ap.counters().drops.total(), 0);
}
