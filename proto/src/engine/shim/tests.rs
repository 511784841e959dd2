//! The shim engine alone: the AP's and members' frames, the application's
//! packets and a virtual clock in; tests, BAs, data actions, resets on
//! `poll_tun` and events out.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::crypto::{self, Kbm};
use crate::engine::testutil::{
    ACK, HOA, SYN, bid, data_frame, ep, framed, parse, run_until, sent, t0, tcp, transmits, tun,
    unsigned, v6,
};
use crate::engine::{sign_binding, to_units, verify_binding};
use crate::wire::inner;
use crate::wire::mh::{MessageBody, ba_status};
use crate::wire::{FRAME_HEADER_LEN, MobilityMessage, MobilityOption, TunnelHeader};

const M1: MemberId = MemberId(1);
const M2: MemberId = MemberId(2);
const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1);

fn ap_ep() -> SocketAddr {
    ep("[2001:db8:a::1]:4790")
}

fn local() -> SocketAddr {
    SocketAddr::new(CLIENT.into(), 5555)
}

fn care_of(member: MemberId) -> SocketAddr {
    SocketAddr::new(
        Ipv6Addr::new(0x2001, 0xdb8, member.0, 0, 0, 0, 0, 1).into(),
        4790,
    )
}

fn shim(now: Instant) -> Shim {
    Shim::new(now, ShimConfig::new(ap_ep(), HOA, local(), [9; 32]))
}

fn events(s: &mut Shim) -> Vec<ShimEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// The one control message queued, and where it goes.
fn reply(s: &mut Shim) -> (SocketAddr, MobilityMessage, Vec<u8>) {
    let t = transmits(s);
    assert_eq!(t.len(), 1, "one reply: {t:?}");
    (t[0].to, parse(&t[0]).1, t[0].payload.clone())
}

/// Return routability for `member` as the member runs it (HoTI relayed by
/// the AP, CoTI direct): the nonce indices and Kbm the shim's tokens give.
fn return_routability(s: &mut Shim, now: Instant, member: MemberId) -> ((u16, u16), Kbm) {
    let hoti = MobilityMessage::new(MessageBody::HomeTestInit { cookie: [1; 8] })
        .with(bid(member))
        .with(MobilityOption::HomeAddress(HOA))
        .with(MobilityOption::Correspondent(CLIENT));
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut unsigned(Some(member), &hoti)),
        DataAction::Consumed
    );
    let (to, hot, _) = reply(s);
    assert_eq!(to, ap_ep(), "the HoT goes back through the AP");
    let MessageBody::HomeTest {
        nonce_index: home,
        cookie: [1, ..],
        token: home_token,
    } = hot.body
    else {
        panic!("expected a HoT with our cookie, got {hot:?}");
    };
    let coti =
        MobilityMessage::new(MessageBody::CareOfTestInit { cookie: [2; 8] }).with(bid(member));
    s.handle_udp(now, care_of(member), &mut unsigned(Some(member), &coti));
    let (to, cot, _) = reply(s);
    assert_eq!(to, care_of(member), "the CoT goes to the care-of endpoint");
    let MessageBody::CareOfTest {
        nonce_index: care,
        token: care_token,
        ..
    } = cot.body
    else {
        panic!("expected a CoT, got {cot:?}");
    };
    ((home, care), crypto::kbm(&home_token, &care_token))
}

/// A BU from `member`'s care-of endpoint signed with `kbm`.
fn binding_update(member: MemberId, seq: u16, nonces: (u16, u16), kbm: &Kbm) -> Vec<u8> {
    let msg = MobilityMessage::new(MessageBody::BindingUpdate {
        sequence: seq,
        ack: true,
        home: false,
        lifetime: to_units(Duration::from_secs(120)),
    })
    .with(MobilityOption::BindingId {
        id: member,
        status: 0,
        flags: 0,
        care_of: Some(care_of(member).ip()),
    })
    .with(MobilityOption::HomeAddress(HOA))
    .with(MobilityOption::MemberState {
        weight: 100,
        draining: false,
        instance: 1,
    })
    .with(MobilityOption::NonceIndices {
        home: nonces.0,
        care_of: nonces.1,
    })
    .with(MobilityOption::BindingAuthorization([0; 12]));
    let mut frame = unsigned(Some(member), &msg);
    sign_binding(&mut frame, kbm, care_of(member), local());
    frame
}

/// A shim with a binding for `member`; nothing queued.
fn bound(s: &mut Shim, now: Instant, member: MemberId) {
    let (nonces, kbm) = return_routability(s, now, member);
    let mut bu = binding_update(member, 1, nonces, &kbm);
    assert_eq!(
        s.handle_udp(now, care_of(member), &mut bu),
        DataAction::Consumed
    );
    transmits(s);
}

#[test]
fn a_verified_bu_is_bound_and_answered_with_a_signed_ba() {
    let now = t0();
    let mut s = shim(now);
    let (nonces, kbm) = return_routability(&mut s, now, M1);
    let mut bu = binding_update(M1, 7, nonces, &kbm);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut bu),
        DataAction::Consumed
    );
    let (to, ba, payload) = reply(&mut s);
    assert_eq!(to, care_of(M1));
    assert_eq!(
        ba.body,
        MessageBody::BindingAck {
            status: ba_status::ACCEPTED,
            sequence: 7,
            lifetime: 30
        }
    );
    assert!(verify_binding(
        &payload[FRAME_HEADER_LEN..],
        &kbm,
        care_of(M1),
        local()
    ));
    assert_eq!(
        events(&mut s),
        [ShimEvent::BindingUpdated {
            member: M1,
            care_of: care_of(M1),
            moved_from: None
        }]
    );
    let b = s.bindings().find(|(id, _)| **id == M1).map(|(_, b)| *b);
    assert!(b.is_some_and(|b| b.expires == now + Duration::from_secs(120) && !b.draining));
    // The same sequence number again is a replay, answered with the last one.
    let mut again = binding_update(M1, 7, nonces, &kbm);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut again),
        DataAction::Drop(DropReason::Replay)
    );
    let (_, ba, _) = reply(&mut s);
    assert!(matches!(
        ba.body,
        MessageBody::BindingAck {
            status: ba_status::SEQUENCE_OUT_OF_WINDOW,
            sequence: 7,
            ..
        }
    ));
}

#[test]
fn a_forged_bu_is_rejected() {
    let now = t0();
    let mut s = shim(now);
    let (nonces, _) = return_routability(&mut s, now, M1);
    let forged_kbm: Kbm = [0x5a; 32];
    let mut bu = binding_update(M1, 1, nonces, &forged_kbm);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut bu),
        DataAction::Drop(DropReason::AuthFailed)
    );
    assert!(transmits(&mut s).is_empty(), "no answer to a forgery");
    assert_eq!(s.bindings().count(), 0);
    assert!(matches!(
        events(&mut s)[..],
        [ShimEvent::BindingRejected {
            reason: DropReason::AuthFailed,
            ..
        }]
    ));
}

#[test]
fn a_bu_on_expired_nonces_is_refused_with_138() {
    let now = t0();
    let mut s = shim(now);
    let (nonces, kbm) = return_routability(&mut s, now, M1);
    let later = now + DEFAULT_NONCE_LIFETIME + DEFAULT_NONCE_INTERVAL;
    run_until(&mut s, later);
    let mut bu = binding_update(M1, 1, nonces, &kbm);
    assert_eq!(
        s.handle_udp(later, care_of(M1), &mut bu),
        DataAction::Drop(DropReason::Replay)
    );
    let (to, ba, _) = reply(&mut s);
    assert_eq!(to, care_of(M1));
    assert!(matches!(
        ba.body,
        MessageBody::BindingAck {
            status: ba_status::EXPIRED_NONCES,
            ..
        }
    ));
    assert_eq!(s.bindings().count(), 0);
}

fn app(port: u16) -> std::net::SocketAddrV6 {
    v6(CLIENT, port)
}

fn server() -> std::net::SocketAddrV6 {
    v6(HOA, 80)
}

#[test]
fn flows_are_pinned_by_tagged_answers_and_go_direct_once_bound() {
    let now = t0();
    let mut s = shim(now);
    let mut syn = tcp(app(40000), server(), SYN, 1, 0);
    assert_eq!(
        framed(&mut s, now, &mut syn),
        sent(ap_ep(), TunnelHeader::data(None))
    );
    let mut answer = data_frame(Some(M1), &tcp(server(), app(40000), SYN, 100, 2));
    assert_eq!(s.handle_udp(now, ap_ep(), &mut answer), DataAction::ToTun);
    let key = inner::inspect(&syn).expect("valid").flow;
    assert_eq!(s.flow(&key).and_then(|f| f.member), Some(M1));
    // Still through the AP (tagged, so the AP keeps it on M1) until bound.
    let mut ack = tcp(app(40000), server(), ACK, 2, 101);
    assert_eq!(
        framed(&mut s, now, &mut ack),
        sent(ap_ep(), TunnelHeader::data(Some(M1)))
    );
    bound(&mut s, now, M1);
    events(&mut s);
    assert_eq!(
        framed(&mut s, now, &mut ack),
        sent(care_of(M1), TunnelHeader::data(Some(M1)))
    );
    assert_eq!(
        events(&mut s),
        [ShimEvent::FlowDirect {
            flow: key,
            member: M1
        }]
    );
    // A member's data is accepted from its bound care-of endpoint only.
    let mut direct = data_frame(Some(M1), &tcp(server(), app(40000), ACK, 101, 3));
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut direct.clone()),
        DataAction::ToTun
    );
    assert_eq!(
        s.handle_udp(now, care_of(M2), &mut direct),
        DataAction::Drop(DropReason::UnknownPeer)
    );
}

#[test]
fn a_revocation_resets_the_revoked_members_tcp_flows_only() {
    let now = t0();
    let mut s = shim(now);
    for (port, member) in [(40000, M1), (40001, M2)] {
        tun(&mut s, now, &mut tcp(app(port), server(), SYN, 1, 0));
        let mut answer = data_frame(Some(member), &tcp(server(), app(port), SYN, 500, 2));
        s.handle_udp(now, ap_ep(), &mut answer);
        tun(&mut s, now, &mut tcp(app(port), server(), ACK, 2, 501));
    }
    assert_eq!(s.poll_tun(), None);
    let bri = MobilityMessage::new(MessageBody::BindingRevocation {
        trigger: 127,
        sequence: 1,
    })
    .with(bid(M1))
    .with(MobilityOption::HomeAddress(HOA))
    .with(MobilityOption::Correspondent(CLIENT));
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut unsigned(Some(M1), &bri)),
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
        events(&mut s).last(),
        Some(&ShimEvent::Revoked {
            member: M1,
            flows_reset: 1
        })
    );
    assert_eq!(s.flows().count(), 1);
    // A revocation from anyone but the AP is not believed.
    let mut forged = unsigned(Some(M2), &bri);
    assert_eq!(
        s.handle_udp(now, care_of(M2), &mut forged),
        DataAction::Drop(DropReason::UnexpectedMessage)
    );
}
