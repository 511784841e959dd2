//! The member engine alone: the AP's and the shims' frames and a virtual
//! clock in; BUs, tests, data actions and events out.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::crypto::{self, Token};
use crate::engine::testutil::{
    ACK, HOA, KEY, at, bid, ep, framed, parse, run_until, sent, signed, t0, tcp, transmits, tun,
    unsigned, v6,
};
use crate::engine::{sign_binding, verify_binding, verify_registration};
use crate::wire::mh::MessageBody;
use crate::wire::{
    FRAME_HEADER_LEN, MemberId, MobilityMessage, MobilityOption, TAG_LEN, TunnelHeader,
};

const ID: MemberId = MemberId(1);
const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1);

fn ap_ep() -> SocketAddr {
    ep("[2001:db8:a::1]:4790")
}

fn care_of() -> SocketAddr {
    ep("[2001:db8:1::1]:4790")
}

fn shim_ep() -> SocketAddr {
    SocketAddr::new(CLIENT.into(), 5555)
}

fn member() -> Member {
    Member::new(MemberConfig::new(
        ID,
        HOA,
        ap_ep(),
        care_of(),
        KEY.to_vec(),
        [7; 32],
    ))
}

fn events(m: &mut Member) -> Vec<MemberEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

/// The one registration BU queued: its sequence number and lifetime units.
fn registration_bu(m: &mut Member) -> (u16, u16) {
    let t = transmits(m);
    assert_eq!(t.len(), 1, "one BU: {t:?}");
    assert_eq!(t[0].to, ap_ep());
    assert!(
        verify_registration(&t[0].payload[FRAME_HEADER_LEN..], KEY, HOA),
        "signed"
    );
    match parse(&t[0]).1.body {
        MessageBody::BindingUpdate {
            sequence,
            home: true,
            ack: true,
            lifetime,
        } => (sequence, lifetime),
        other => panic!("expected a registration BU, got {other:?}"),
    }
}

/// The AP's signed BA for `seq`.
fn ba(status: u8, seq: u16, lifetime: u16) -> Vec<u8> {
    let msg = MobilityMessage::new(MessageBody::BindingAck {
        status,
        sequence: seq,
        lifetime,
    })
    .with(bid(ID))
    .with(MobilityOption::HomeAddress(HOA));
    signed(ID, msg, KEY)
}

/// A member registered at `now` (lifetime 60 s), nothing queued.
fn registered(now: Instant) -> Member {
    let mut m = member();
    m.start(now);
    let (seq, _) = registration_bu(&mut m);
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut ba(0, seq, 15)),
        DataAction::Consumed
    );
    events(&mut m);
    m
}

#[test]
fn registration_is_sent_at_start_retransmitted_and_refreshed_on_its_timer() {
    let (mut m, now) = (member(), t0());
    assert_eq!(m.state(), RegistrationState::Idle);
    m.start(now);
    let (seq, lifetime) = registration_bu(&mut m);
    assert_eq!(lifetime, 15, "60 s in 4-second units");
    assert_eq!(m.state(), RegistrationState::Registering);
    // No BA: the same BU again after the initial retransmission timeout.
    run_until(&mut m, now + DEFAULT_INITIAL_RETRANSMIT);
    assert_eq!(registration_bu(&mut m).0, seq);

    let then = at(now, 1_100);
    m.handle_udp(then, ap_ep(), &mut ba(0, seq, 15));
    assert_eq!(
        m.state(),
        RegistrationState::Registered {
            expires: then + DEFAULT_LIFETIME
        }
    );
    assert_eq!(
        events(&mut m),
        [MemberEvent::Registered {
            care_of: care_of(),
            lifetime: DEFAULT_LIFETIME
        }]
    );
    run_until(
        &mut m,
        then + DEFAULT_LIFETIME * 3 / 4 - Duration::from_millis(1),
    );
    assert!(
        transmits(&mut m).is_empty(),
        "nothing before the refresh point"
    );
    run_until(&mut m, then + DEFAULT_LIFETIME * 3 / 4);
    assert_eq!(registration_bu(&mut m).0, seq.wrapping_add(1));
}

#[test]
fn a_signed_refusal_stops_the_member_and_unsigned_ones_need_three() {
    let (mut m, now) = (member(), t0());
    m.start(now);
    let (seq, _) = registration_bu(&mut m);
    m.handle_udp(now, ap_ep(), &mut ba(129, seq, 0));
    assert_eq!(m.state(), RegistrationState::Refused { status: 129 });
    assert_eq!(
        events(&mut m),
        [MemberEvent::RegistrationRefused { status: 129 }]
    );

    let mut m = member();
    m.start(now);
    let (seq, _) = registration_bu(&mut m);
    let refusal = |seq| {
        let msg = MobilityMessage::new(MessageBody::BindingAck {
            status: 146,
            sequence: seq,
            lifetime: 0,
        })
        .with(bid(ID));
        unsigned(Some(ID), &msg)
    };
    // An off-path sender does not know the sequence number.
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut refusal(seq.wrapping_add(9))),
        DataAction::Drop(DropReason::AuthFailed)
    );
    for _ in 0..2 {
        m.handle_udp(now, ap_ep(), &mut refusal(seq));
        assert_eq!(m.state(), RegistrationState::Registering);
    }
    m.handle_udp(now, ap_ep(), &mut refusal(seq));
    assert_eq!(m.state(), RegistrationState::Refused { status: 146 });
}

/// A Shim Notice from the AP for CLIENT; returns the HoTI and CoTI cookies.
fn notice(m: &mut Member, now: Instant) -> (Token, Token) {
    let msg = MobilityMessage::new(MessageBody::ShimNotice {
        client: CLIENT,
        shim: shim_ep(),
    })
    .with(bid(ID))
    .with(MobilityOption::HomeAddress(HOA));
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut signed(ID, msg, KEY)),
        DataAction::Consumed
    );
    let (mut home, mut care_of) = (None, None);
    for t in transmits(m) {
        match (t.to, parse(&t).1) {
            (to, msg) if to == ap_ep() => {
                assert!(verify_registration(
                    &t.payload[FRAME_HEADER_LEN..],
                    KEY,
                    HOA
                ));
                assert_eq!(msg.correspondent(), Some(CLIENT));
                let MessageBody::HomeTestInit { cookie } = msg.body else {
                    panic!("expected a HoTI to the AP, got {msg:?}");
                };
                home = Some(cookie);
            }
            (to, msg) if to == shim_ep() => {
                let MessageBody::CareOfTestInit { cookie } = msg.body else {
                    panic!("expected a CoTI to the shim, got {msg:?}");
                };
                care_of = Some(cookie);
            }
            (to, msg) => panic!("unexpected {msg:?} to {to}"),
        }
    }
    (
        home.expect("HoTI via the AP"),
        care_of.expect("CoTI direct"),
    )
}

const HOME_TOKEN: Token = [0x11; 8];
const CARE_OF_TOKEN: Token = [0x22; 8];

fn home_test(cookie: Token) -> Vec<u8> {
    let msg = MobilityMessage::new(MessageBody::HomeTest {
        nonce_index: 5,
        cookie,
        token: HOME_TOKEN,
    })
    .with(bid(ID))
    .with(MobilityOption::HomeAddress(HOA))
    .with(MobilityOption::Correspondent(CLIENT));
    signed(ID, msg, KEY)
}

fn care_of_test(cookie: Token, token: Token) -> Vec<u8> {
    let msg = MobilityMessage::new(MessageBody::CareOfTest {
        nonce_index: 6,
        cookie,
        token,
    });
    unsigned(None, &msg)
}

/// The BU the member sent to the shim: its sequence number, checked
/// against the authenticator of Kbm(HOME_TOKEN, `care_of_token`).
fn binding_update(m: &mut Member, care_of_token: Token, from: SocketAddr) -> u16 {
    let t = transmits(m);
    assert_eq!(t.len(), 1, "one BU: {t:?}");
    assert_eq!(t[0].to, shim_ep());
    let kbm = crypto::kbm(&HOME_TOKEN, &care_of_token);
    assert!(verify_binding(
        &t[0].payload[FRAME_HEADER_LEN..],
        &kbm,
        from,
        shim_ep()
    ));
    let msg = parse(&t[0]).1;
    assert_eq!(msg.nonce_indices(), Some((5, 6)));
    match msg.body {
        MessageBody::BindingUpdate {
            sequence,
            home: false,
            ..
        } => sequence,
        other => panic!("expected a BU, got {other:?}"),
    }
}

/// The shim's BA, signed with Kbm for the member at `care_of`.
fn shim_ba(seq: u16, care_of_token: Token, care_of: SocketAddr) -> Vec<u8> {
    let msg = MobilityMessage::new(MessageBody::BindingAck {
        status: 0,
        sequence: seq,
        lifetime: 30,
    })
    .with(MobilityOption::BindingAuthorization([0; 12]));
    let mut frame = unsigned(Some(ID), &msg);
    let kbm = crypto::kbm(&HOME_TOKEN, &care_of_token);
    sign_binding(&mut frame, &kbm, care_of, shim_ep());
    frame
}

/// A registered member bound to CLIENT's shim; nothing queued.
fn bound(now: Instant) -> Member {
    let mut m = registered(now);
    let (home_cookie, care_of_cookie) = notice(&mut m, now);
    m.handle_udp(now, ap_ep(), &mut home_test(home_cookie));
    assert!(transmits(&mut m).is_empty(), "no BU on one token");
    m.handle_udp(
        now,
        shim_ep(),
        &mut care_of_test(care_of_cookie, CARE_OF_TOKEN),
    );
    let seq = binding_update(&mut m, CARE_OF_TOKEN, care_of());
    assert_eq!(
        m.handle_udp(now, shim_ep(), &mut shim_ba(seq, CARE_OF_TOKEN, care_of())),
        DataAction::Consumed
    );
    m
}

fn answer() -> Vec<u8> {
    tcp(v6(HOA, 80), v6(CLIENT, 40000), ACK, 1, 1)
}

#[test]
fn a_shim_notice_starts_return_routability_home_via_the_ap_care_of_direct() {
    let now = t0();
    let mut m = registered(now);
    let (home_cookie, care_of_cookie) = notice(&mut m, now);
    assert_eq!(
        events(&mut m),
        [MemberEvent::ReturnRoutabilityStarted { client: CLIENT }]
    );
    // A care-of test with the wrong cookie is not ours.
    assert_eq!(
        m.handle_udp(now, shim_ep(), &mut care_of_test([0; 8], CARE_OF_TOKEN)),
        DataAction::Drop(DropReason::AuthFailed)
    );
    m.handle_udp(now, ap_ep(), &mut home_test(home_cookie));
    m.handle_udp(
        now,
        shim_ep(),
        &mut care_of_test(care_of_cookie, CARE_OF_TOKEN),
    );
    binding_update(&mut m, CARE_OF_TOKEN, care_of());
}

#[test]
fn the_shims_ba_puts_answers_on_the_direct_path() {
    let now = t0();
    let mut m = registered(now);
    // Before the binding: answers go back through the AP.
    let header = TunnelHeader::data(Some(ID));
    assert_eq!(framed(&mut m, now, &mut answer()), sent(ap_ep(), header));
    let mut m = bound(now);
    assert!(matches!(
        events(&mut m).last(),
        Some(MemberEvent::RouteOptimized { client: CLIENT, .. })
    ));
    assert_eq!(framed(&mut m, now, &mut answer()), sent(shim_ep(), header));
    // Data from the bound shim is accepted, from elsewhere not.
    let mut frame = crate::engine::testutil::data_frame(
        Some(ID),
        &tcp(v6(CLIENT, 40000), v6(HOA, 80), ACK, 1, 1),
    );
    assert_eq!(
        m.handle_udp(now, shim_ep(), &mut frame.clone()),
        DataAction::ToTun
    );
    assert_eq!(
        m.handle_udp(now, ep("[2001:db8:c::1]:6666"), &mut frame),
        DataAction::Drop(DropReason::SpoofedSource)
    );
}

#[test]
fn a_move_holds_answers_until_the_new_binding_then_sends_them_direct() {
    let now = t0();
    let mut m = bound(now);
    events(&mut m);
    let new = ep("[2001:db8:1::2]:4790");
    m.set_care_of(now, new);
    let sent: Vec<_> = transmits(&mut m)
        .iter()
        .map(|t| (t.to, parse(t).1.body))
        .collect();
    assert!(
        matches!(&sent[..], [(a, MessageBody::BindingUpdate { home: true, .. }), (s, MessageBody::CareOfTestInit { .. })] if *a == ap_ep() && *s == shim_ep()),
        "re-registration, then only a care-of test (the home token is reused): {sent:?}"
    );
    let MessageBody::CareOfTestInit { cookie } = sent[1].1 else {
        unreachable!()
    };
    assert_eq!(
        tun(&mut m, now, &mut answer()),
        DataAction::Consumed,
        "held"
    );
    let later = at(now, 30);
    let new_token = [0x33; 8];
    m.handle_udp(later, shim_ep(), &mut care_of_test(cookie, new_token));
    let seq = binding_update(&mut m, new_token, new);
    m.handle_udp(later, shim_ep(), &mut shim_ba(seq, new_token, new));
    let released = transmits(&mut m);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].to, shim_ep());
    let p = &released[0].payload;
    assert_eq!(
        &p[FRAME_HEADER_LEN..p.len() - TAG_LEN],
        &answer()[..],
        "the held answer"
    );
    assert_eq!(p[p.len() - TAG_LEN..], [0; TAG_LEN], "interim zero tag");
}

#[test]
fn answers_held_past_the_hold_time_go_through_the_ap() {
    let now = t0();
    let mut m = bound(now);
    m.set_care_of(now, ep("[2001:db8:1::2]:4790"));
    transmits(&mut m);
    assert_eq!(tun(&mut m, now, &mut answer()), DataAction::Consumed);
    run_until(&mut m, now + MOVE_HOLD - Duration::from_millis(1));
    assert!(transmits(&mut m).is_empty());
    run_until(&mut m, now + MOVE_HOLD);
    let released = transmits(&mut m);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].to, ap_ep());
}
