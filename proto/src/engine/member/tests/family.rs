//! A move that changes address family: an AP reached at one endpoint per
//! family, the endpoint of the care-of's family picked at each move, a
//! shim of the other family left on the AP path (no direct path between
//! two families), and route optimization back once the two share a family
//! again.
//!
//! The shared helpers name documentation addresses; these tests use their
//! own (ULA and 198.18.0.0/15, 100.64.0.0/10) with helpers of their own
//! where an address is checked.

use super::*;
use crate::engine::{ApEndpoints, control_frame, sign_registration};
use crate::wire::option::AUTH_SUBTYPE_MN_HA;

/// The home address of these tests.
const ULA_HOA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x4842, 0xffff, 0, 0, 0, 0, 1);
/// The client (inner source of its packets).
const ULA_CLIENT: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x4842, 0xc, 0, 0, 0, 0, 1);

fn ap_v4() -> SocketAddr {
    ep("198.18.0.10:4790")
}

fn ap_v6() -> SocketAddr {
    ep("[fd00:4842:a::10]:4790")
}

/// The one AP, at one endpoint of each family (IPv4 first).
fn dual() -> ApEndpoints {
    ApEndpoints::pair(ap_v4(), ap_v6()).expect("one endpoint per family")
}

fn care_of_v4() -> SocketAddr {
    ep("198.18.1.1:4790")
}

fn care_of_v6() -> SocketAddr {
    ep("[fd00:4842:1::1]:4790")
}

fn shim_v4() -> SocketAddr {
    ep("100.64.0.5:5555")
}

fn shim_v6() -> SocketAddr {
    ep("[fd00:4842:c::5]:5555")
}

/// An endpoint that is neither the AP's nor a shim's.
fn stranger() -> SocketAddr {
    ep("[fd00:4842:bad::1]:4790")
}

/// The member's configuration: `aps` the only AP, care-of `care_of`.
fn config_at(aps: ApEndpoints, care_of: SocketAddr) -> MemberConfig {
    let mut c = MemberConfig::new(ID, ULA_HOA, aps.first(), care_of, KEY.to_vec(), [7; 32]);
    c.access_points = vec![aps];
    c
}

/// The one registration BU queued: it goes to `to`, signed for our HoA.
fn bu_to(m: &mut Member, to: SocketAddr) -> Bu {
    let t = transmits(m);
    assert_eq!(t.len(), 1, "one BU: {t:?}");
    assert_eq!(t[0].to, to, "the BU goes to the AP's endpoint {to}");
    assert!(
        verify_registration(unsealed_mh(&t[0]), KEY, ULA_HOA),
        "signed"
    );
    let msg = unsealed_msg(&t[0]);
    let MessageBody::BindingUpdate {
        sequence,
        home: true,
        lifetime,
        ..
    } = msg.body
    else {
        panic!("expected a registration BU, got {msg:?}");
    };
    Bu {
        seq: sequence,
        lifetime,
        session: msg.session().expect("Session option"),
        cookie: msg.cookie(),
    }
}

/// The AP's signed BA (`status`) for `seq`: with the AP's Session (BA 0)
/// or a cookie (BA 202).
fn ba(status: u8, seq: u16) -> Vec<u8> {
    let mut msg = MobilityMessage::new(MessageBody::BindingAck {
        status,
        sequence: seq,
        lifetime: if status == 0 { 15 } else { 0 },
    })
    .with(bid(ID))
    .with(MobilityOption::HomeAddress(ULA_HOA));
    msg = if status == 0 {
        msg.with(MobilityOption::Session {
            index: 0xa1,
            nonce: [0xa1; 16],
        })
        .with(MobilityOption::Cookie(COOKIE_2))
    } else {
        msg.with(MobilityOption::Cookie(COOKIE_1))
    };
    let msg = msg.with(MobilityOption::Authentication {
        subtype: AUTH_SUBTYPE_MN_HA,
        spi: crate::engine::testutil::SPI,
        data: [0; 16],
    });
    let mut frame = control_frame(Some(ID), &msg);
    sign_registration(&mut frame, KEY, ULA_HOA);
    frame
}

/// A member with `config` registered with its AP, whose BU went to (and
/// BA came from) `ap_at`; nothing queued.
fn registered_at(config: MemberConfig, now: Instant, ap_at: SocketAddr) -> (Member, Ap) {
    let mut m = Member::new(config);
    m.start(now);
    let bu = bu_to(&mut m, ap_at);
    let ap = Ap::new(&bu, 0xa1, [0xa1; 16]);
    assert_eq!(
        m.handle_udp(now, ap_at, &mut ba(0, bu.seq)),
        DataAction::Consumed
    );
    assert!(matches!(m.state(), RegistrationState::Registered { .. }));
    events(&mut m);
    (m, ap)
}

/// The AP's sealed Shim Notice: ULA_CLIENT's shim process `instance` at
/// `shim`.
fn notice_of(ap: &mut Ap, shim: SocketAddr, instance: u8) -> Vec<u8> {
    ap.seal(
        MobilityMessage::new(MessageBody::ShimNotice {
            client: ULA_CLIENT,
            shim,
        })
        .with(bid(ID))
        .with(MobilityOption::ShimInstance([instance; 8])),
    )
}

/// The one HoTI queued, sealed to the AP at `ap_at`: its cookie.
fn hoti_via(m: &mut Member, ap: &mut Ap, ap_at: SocketAddr) -> Token {
    let t = transmits(m);
    assert_eq!(t.len(), 1, "the HoTI alone: {t:?}");
    assert_eq!(t[0].to, ap_at);
    let msg = MobilityMessage::parse(&ap.open(&t[0])).unwrap();
    assert_eq!(msg.correspondent(), Some(ULA_CLIENT));
    let MessageBody::HomeTestInit { cookie } = msg.body else {
        panic!("expected a HoTI, got {msg:?}");
    };
    cookie
}

/// The shim's HoT for `cookie`, relayed (sealed) by the AP, with the
/// shim's care-of ticket.
fn hot(ap: &mut Ap, cookie: Token) -> Vec<u8> {
    ap.seal(
        MobilityMessage::new(MessageBody::HomeTest {
            nonce_index: 5,
            cookie,
            token: HOME_TOKEN,
        })
        .with(bid(ID))
        .with(MobilityOption::HomeAddress(ULA_HOA))
        .with(MobilityOption::Correspondent(ULA_CLIENT))
        .with(MobilityOption::CareOfTicket {
            nonce_index: 5,
            ticket: TICKET,
        }),
    )
}

/// The one CoTI queued (unsealed, to the shim at `shim`, with the
/// ticket): its cookie.
fn coti_to(m: &mut Member, shim: SocketAddr) -> Token {
    let t = transmits(m);
    assert_eq!(t.len(), 1, "one CoTI: {t:?}");
    assert_eq!(t[0].to, shim, "the CoTI goes to the shim");
    let msg = unsealed_msg(&t[0]);
    assert_eq!(msg.care_of_ticket(), Some((5, TICKET)));
    let MessageBody::CareOfTestInit { cookie } = msg.body else {
        panic!("expected a CoTI, got {msg:?}");
    };
    cookie
}

/// The care-of test from `shim` answering `cookie`, then the member's RO
/// BU (to `shim`, signed with Kbm) and the shim's BA 0: bound. The shim's
/// side of the new session.
fn care_of_test_and_bind(
    m: &mut Member,
    now: Instant,
    shim: SocketAddr,
    cookie: Token,
    token: Token,
) -> Shim {
    assert_eq!(
        m.handle_udp(now, shim, &mut care_of_test(cookie, token)),
        DataAction::Consumed
    );
    let t = transmits(m);
    assert_eq!(t.len(), 1, "one RO BU: {t:?}");
    assert_eq!(t[0].to, shim, "the RO BU goes to the shim");
    assert!(verify_binding(
        unsealed_mh(&t[0]),
        &crypto::kbm(&HOME_TOKEN, &token)
    ));
    let msg = unsealed_msg(&t[0]);
    let MessageBody::BindingUpdate {
        sequence,
        home: false,
        ..
    } = msg.body
    else {
        panic!("expected an RO BU, got {msg:?}");
    };
    let session = msg.session().expect("Session in the RO BU");
    let (mut frame, peer) = shim_ba(sequence, session, token, 0x5a);
    assert_eq!(m.handle_udp(now, shim, &mut frame), DataAction::Consumed);
    assert!(bound_to(m), "bound");
    peer
}

/// Bind ULA_CLIENT's shim (instance 1) at `shim` from its Shim Notice,
/// relayed by the AP at `ap_at`.
fn bind_at(m: &mut Member, ap: &mut Ap, now: Instant, ap_at: SocketAddr, shim: SocketAddr) -> Shim {
    assert_eq!(
        m.handle_udp(now, ap_at, &mut notice_of(ap, shim, 1)),
        DataAction::Consumed
    );
    let home_cookie = hoti_via(m, ap, ap_at);
    assert_eq!(
        m.handle_udp(now, ap_at, &mut hot(ap, home_cookie)),
        DataAction::Consumed
    );
    let cookie = coti_to(m, shim);
    care_of_test_and_bind(m, now, shim, cookie, CARE_OF_TOKEN)
}

fn client(m: &Member) -> &Correspondent {
    m.correspondents()
        .find(|c| c.client == ULA_CLIENT)
        .expect("the client's entry")
}

fn bound_to(m: &Member) -> bool {
    client(m).binding.is_some()
}

/// Why the client is not bound, as the status says.
fn why(m: &Member) -> Option<String> {
    client(m).why_unbound(m.config().care_of)
}

/// An answer from the HoA to the client.
fn answer_f() -> Vec<u8> {
    tcp(v6(ULA_HOA, 80), v6(ULA_CLIENT, 40000), ACK, 1, 1)
}

/// A packet from the client for the HoA.
fn inbound_f() -> Vec<u8> {
    tcp(v6(ULA_CLIENT, 40000), v6(ULA_HOA, 80), ACK, 1, 1)
}

#[test]
fn a_move_to_the_other_family_re_registers_at_the_aps_endpoint_of_that_family() {
    let now = t0();
    let (mut m, mut ap) = registered_at(config_at(dual(), care_of_v4()), now, ap_v4());
    let view = m.access_points().next().expect("one AP");
    assert_eq!(
        view.endpoint,
        ap_v4(),
        "the endpoint of the care-of's family"
    );
    assert_eq!(view.endpoints, dual());
    assert!(m.reaches_an_ap_from(care_of_v4()));
    assert!(m.reaches_an_ap_from(care_of_v6()));

    m.set_care_of(now, care_of_v6());
    let bu = bu_to(&mut m, ap_v6());
    assert_eq!(bu.cookie, None, "the cookie was for the old endpoint");
    let view = m.access_points().next().expect("one AP");
    assert_eq!(view.endpoint, ap_v6());
    assert_eq!(view.endpoints, dual(), "the configuration stays");
    assert_eq!(m.config().care_of, care_of_v6());

    // A BA from an endpoint of no AP is not the AP's.
    assert_eq!(
        m.handle_udp(now, stranger(), &mut ba(0, bu.seq)),
        DataAction::Drop(DropReason::UnknownPeer)
    );
    // The AP answers from either of its endpoints: a 202 with a cookie
    // from the IPv4 one (say, the old path still up), and the BU goes
    // again with it, to the IPv6 one.
    assert_eq!(
        m.handle_udp(now, ap_v4(), &mut ba(202, bu.seq)),
        DataAction::Consumed
    );
    let again = bu_to(&mut m, ap_v6());
    assert_eq!(again.cookie, Some(COOKIE_1));
    assert_eq!(again.session, bu.session, "the same member - AP session");
    let later = at(now, 20);
    assert_eq!(
        m.handle_udp(later, ap_v6(), &mut ba(0, again.seq)),
        DataAction::Consumed
    );
    assert!(matches!(
        events(&mut m)[..],
        [MemberEvent::Registered { ap, care_of, .. }] if ap == ap_v6() && care_of == care_of_v6()
    ));
    let view = m.access_points().next().unwrap();
    assert!(matches!(view.state, RegistrationState::Registered { expires } if expires > later));
    // Nothing outstanding: no retransmission (before the AP-silence
    // probe, which a quiet AP gets at 1.2 s).
    run_until(&mut m, later + DEFAULT_INITIAL_RETRANSMIT);
    assert!(transmits(&mut m).is_empty());
    // The AP's data (its session, from its new endpoint) reaches the TUN;
    // answers go to its IPv6 endpoint, sealed in the same session.
    assert_eq!(
        m.handle_udp(later, ap_v6(), &mut ap.data(&inbound_f())),
        DataAction::ToTun
    );
    let (action, out) = tun_out(&mut m, later, &mut answer_f());
    assert_eq!(action, DataAction::Send { to: ap_v6() });
    let (_, frame) = out.expect("sealed");
    assert_eq!(open_frame(&mut ap.sessions, &frame), answer_f());
    // An unsealed frame from the old endpoint is still the AP's (a BA with
    // nothing outstanding: unexpected), not a stranger's.
    assert_eq!(
        m.handle_udp(later, ap_v4(), &mut ba(0, again.seq)),
        DataAction::Drop(DropReason::UnexpectedMessage)
    );
}

#[test]
fn the_care_ofs_family_picks_the_endpoint_from_the_start_and_one_family_reaches_only_it() {
    let now = t0();
    // The IPv4 endpoint is listed first; an IPv6 care-of starts at the
    // IPv6 one.
    let (m, _ap) = registered_at(config_at(dual(), care_of_v6()), now, ap_v6());
    assert_eq!(m.access_points().next().unwrap().endpoint, ap_v6());

    let single = Member::new(config_at(ap_v4().into(), care_of_v4()));
    assert!(single.reaches_an_ap_from(care_of_v4()));
    // An IPv4-mapped care-of is IPv4.
    assert!(single.reaches_an_ap_from(ep("[::ffff:198.18.1.2]:4790")));
    assert!(!single.reaches_an_ap_from(care_of_v6()));
    let single = Member::new(config_at(ap_v6().into(), care_of_v6()));
    assert!(single.reaches_an_ap_from(care_of_v6()));
    assert!(!single.reaches_an_ap_from(care_of_v4()));
}

#[test]
fn a_move_away_from_a_shims_family_unbinds_it_and_sends_its_answers_through_the_ap() {
    let now = t0();
    let (mut m, mut ap) = registered_at(config_at(dual(), care_of_v4()), now, ap_v4());
    let _shim = bind_at(&mut m, &mut ap, now, ap_v4(), shim_v4());
    events(&mut m);
    assert_eq!(why(&m), None);

    m.set_care_of(now, care_of_v6());
    let sent: Vec<SocketAddr> = transmits(&mut m).iter().map(|t| t.to).collect();
    assert_eq!(sent, [ap_v6()], "the registration BU alone: no CoTI");
    assert!(!bound_to(&m), "the binding is gone");
    assert!(
        matches!(client(&m).rr, RoState::Idle),
        "no return routability"
    );
    let reason = why(&m).expect("the status says why");
    assert!(reason.contains("family"), "{reason}");
    // Answers go through the AP at once: not held for a re-binding that
    // cannot come.
    let (action, out) = tun_out(&mut m, now, &mut answer_f());
    assert_eq!(action, DataAction::Send { to: ap_v6() });
    let (_, frame) = out.expect("sealed");
    assert_eq!(open_frame(&mut ap.sessions, &frame), answer_f());
    // Nor does anything go to the shim later (the registration BU goes
    // on being retransmitted to the AP, unanswered here).
    run_until(&mut m, now + MOVE_HOLD + Duration::from_secs(10));
    let to_shim: Vec<_> = transmits(&mut m)
        .into_iter()
        .filter(|t| t.to.ip() == shim_v4().ip())
        .collect();
    assert!(to_shim.is_empty(), "{to_shim:?}");

    // Back in the shim's family (another IPv4 care-of): route
    // optimization comes back by itself; the home token is still fresh,
    // so the care-of test goes at once.
    let back = at(now, 11_000);
    let care_of_back = ep("198.18.1.2:4790");
    m.set_care_of(back, care_of_back);
    let t = transmits(&mut m);
    let (to_ap, to_shim): (Vec<_>, Vec<_>) = t.into_iter().partition(|t| t.to == ap_v4());
    assert_eq!(to_ap.len(), 1, "the BU to the AP's IPv4 endpoint");
    assert_eq!(to_shim.len(), 1, "{to_shim:?}");
    assert_eq!(to_shim[0].to, shim_v4());
    assert!(matches!(
        unsealed_msg(&to_shim[0]).body,
        MessageBody::CareOfTestInit { .. }
    ));
    assert_eq!(why(&m), None);
}

#[test]
fn a_move_within_the_family_holds_the_answers_and_tests_the_new_care_of() {
    let now = t0();
    let (mut m, mut ap) = registered_at(config_at(dual(), care_of_v4()), now, ap_v4());
    let _shim = bind_at(&mut m, &mut ap, now, ap_v4(), shim_v4());
    events(&mut m);
    m.set_care_of(now, ep("198.18.1.2:4790"));
    let t = transmits(&mut m);
    let (to_ap, to_shim): (Vec<_>, Vec<_>) = t.into_iter().partition(|t| t.to == ap_v4());
    assert_eq!(to_ap.len(), 1, "the BU, to the same endpoint");
    assert_eq!(to_shim.len(), 1, "a CoTI: {to_shim:?}");
    assert_eq!(to_shim[0].to, shim_v4());
    assert!(matches!(
        unsealed_msg(&to_shim[0]).body,
        MessageBody::CareOfTestInit { .. }
    ));
    assert_eq!(
        tun_out(&mut m, now, &mut answer_f()),
        (DataAction::Consumed, None),
        "held for the new binding"
    );
    assert_eq!(why(&m), None, "nothing to say: the test is under way");
}

/// The member moves while return routability with a shim is under way
/// (the CoTI is out): to the other family, no more care-of tests go to
/// that shim.
#[test]
fn a_move_to_the_other_family_during_return_routability_stops_the_care_of_tests() {
    let now = t0();
    let (mut m, mut ap) = registered_at(config_at(dual(), care_of_v4()), now, ap_v4());
    assert_eq!(
        m.handle_udp(now, ap_v4(), &mut notice_of(&mut ap, shim_v4(), 1)),
        DataAction::Consumed
    );
    let home_cookie = hoti_via(&mut m, &mut ap, ap_v4());
    m.handle_udp(now, ap_v4(), &mut hot(&mut ap, home_cookie));
    coti_to(&mut m, shim_v4());
    m.set_care_of(now, care_of_v6());
    let sent: Vec<SocketAddr> = transmits(&mut m).iter().map(|t| t.to).collect();
    assert_eq!(sent, [ap_v6()], "the registration BU alone");
    run_until(&mut m, now + Duration::from_secs(10));
    let to_shim: Vec<_> = transmits(&mut m)
        .into_iter()
        .filter(|t| t.to.ip() == shim_v4().ip())
        .collect();
    assert!(to_shim.is_empty(), "no CoTI retransmitted: {to_shim:?}");
    let reason = why(&m).expect("the status says why");
    assert!(reason.contains("family"), "{reason}");
}

#[test]
fn a_shim_that_roams_to_the_other_family_is_unbound_and_bound_again_when_it_comes_back() {
    let now = t0();
    let (mut m, mut ap) = registered_at(config_at(dual(), care_of_v6()), now, ap_v6());
    let _shim = bind_at(&mut m, &mut ap, now, ap_v6(), shim_v6());
    events(&mut m);

    // The same shim process, now on IPv4 (the AP followed it).
    assert_eq!(
        m.handle_udp(now, ap_v6(), &mut notice_of(&mut ap, shim_v4(), 1)),
        DataAction::Consumed
    );
    assert_eq!(client(&m).shim, shim_v4());
    assert_eq!(m.counters().roams, 1);
    assert!(!bound_to(&m), "no direct path between two families");
    assert!(transmits(&mut m).is_empty(), "no return routability");
    let reason = why(&m).expect("the status says why");
    assert!(reason.contains("family"), "{reason}");
    let (action, _) = tun_out(&mut m, now, &mut answer_f());
    assert_eq!(action, DataAction::Send { to: ap_v6() }, "through the AP");
    // The AP names it there again (a refresh of its notice): still nothing.
    assert_eq!(
        m.handle_udp(now, ap_v6(), &mut notice_of(&mut ap, shim_v4(), 1)),
        DataAction::Consumed
    );
    assert!(transmits(&mut m).is_empty());
    run_until(&mut m, now + Duration::from_secs(10));
    assert!(
        transmits(&mut m)
            .iter()
            .all(|t| t.to.ip() != shim_v4().ip()),
        "nothing to the shim of the other family"
    );

    // Back on IPv6, at a new endpoint: return routability again (the home
    // token is fresh: the care-of test at once), and bound.
    let back = at(now, 10_000);
    let shim_back = ep("[fd00:4842:d::5]:5555");
    assert_eq!(
        m.handle_udp(back, ap_v6(), &mut notice_of(&mut ap, shim_back, 1)),
        DataAction::Consumed
    );
    assert_eq!(m.counters().roams, 2);
    assert!(matches!(client(&m).rr, RoState::Testing { .. }));
    let cookie = coti_to(&mut m, shim_back);
    let new_token = [0x33; 8];
    let mut peer = care_of_test_and_bind(&mut m, back, shim_back, cookie, new_token);
    assert_eq!(why(&m), None);
    let (action, out) = tun_out(&mut m, back, &mut answer_f());
    assert_eq!(action, DataAction::Send { to: shim_back }, "direct again");
    let (_, frame) = out.expect("sealed");
    assert_eq!(open_frame(&mut peer.sessions, &frame), answer_f());
}
