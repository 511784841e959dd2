//! The shim's own moves, perhaps to the other address family: the AP
//! session follows, a binding of the other family is dropped (its flows go
//! through the AP, still pinned), one of the same family gets a frame at
//! once; and the fallback to the AP path when a bound member's data comes
//! through the AP.
//!
//! The shared helpers name documentation addresses; these tests use their
//! own (ULA and 198.18.0.0/15, 100.64.0.0/10) with helpers of their own
//! where an address is checked.

use super::super::moves::BINDING_SETTLE;
use super::*;

/// The home address of these tests.
const ULA_HOA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x4842, 0xffff, 0, 0, 0, 0, 1);
/// The client address the AP gives.
const ULA_CLIENT: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x4842, 0xc, 0, 0, 0, 0, 1);

fn ap_v4() -> SocketAddr {
    ep("198.18.0.10:4790")
}

fn ap_v6() -> SocketAddr {
    ep("[fd00:4842:a::10]:4790")
}

fn local_v4() -> SocketAddr {
    ep("100.64.0.5:5555")
}

fn local_v6() -> SocketAddr {
    ep("[fd00:4842:c::5]:5555")
}

/// A member's care-of endpoint, of `member`'s number.
fn care_of_v4(member: MemberId) -> SocketAddr {
    SocketAddr::new(
        std::net::Ipv4Addr::new(198, 18, 1, member.0 as u8).into(),
        4790,
    )
}

fn care_of_v6(member: MemberId) -> SocketAddr {
    SocketAddr::new(
        Ipv6Addr::new(0xfd00, 0x4842, 1, member.0, 0, 0, 0, 1).into(),
        4790,
    )
}

fn client(port: u16) -> std::net::SocketAddrV6 {
    v6(ULA_CLIENT, port)
}

fn home() -> std::net::SocketAddrV6 {
    v6(ULA_HOA, 80)
}

/// A shim at `local` with its AP session up (AP at `ap_at`, handshake
/// with the cookie round trip); nothing queued, no events.
fn shim_at(now: Instant, ap_at: SocketAddr, local: SocketAddr) -> (Shim, TestAp) {
    let mut s = Shim::new(now, ShimConfig::new(ap_at, ULA_HOA, local, [9; 32]));
    let first = hello_to(&mut s, ap_at);
    assert_eq!(
        s.handle_udp(now, ap_at, &mut cookie_frame(first.2, [0xc0; 16])),
        DataAction::Consumed
    );
    let second = hello_to(&mut s, ap_at);
    let (mut w, session) = welcome_for(&second, AP_INDEX, 1, ULA_CLIENT, local);
    assert_eq!(s.handle_udp(now, ap_at, &mut w), DataAction::Consumed);
    events(&mut s);
    (
        s,
        TestAp {
            sessions: PeerSessions::new(session),
        },
    )
}

/// The one Hello queued, to the AP at `ap_at`.
fn hello_to(s: &mut Shim, ap_at: SocketAddr) -> Hello {
    let t = transmits(s);
    assert_eq!(t.len(), 1, "one Hello: {t:?}");
    assert_eq!(t[0].to, ap_at, "the Hello goes to the AP");
    match unsealed_msg(&t[0].payload).body {
        MessageBody::ShimHello {
            instance,
            index,
            nonce,
            cookie,
            public,
        } => (instance, index, nonce, cookie, public),
        other => panic!("expected a Shim Hello, got {other:?}"),
    }
}

/// Return routability with member `id` at `care_of` (the HoTI relayed by
/// the AP, the CoTI from `care_of`) and its BU from there: bound. The
/// member and its side of the binding session; nothing queued.
fn bind(
    s: &mut Shim,
    ap: &mut TestAp,
    now: Instant,
    id: MemberId,
    care_of: SocketAddr,
) -> (TestMember, PeerSessions) {
    let ap_at = s.config().access_point;
    let hoti = MobilityMessage::new(MessageBody::HomeTestInit { cookie: [1; 8] })
        .with(bid(id))
        .with(MobilityOption::HomeAddress(ULA_HOA))
        .with(MobilityOption::Correspondent(ULA_CLIENT));
    assert_eq!(
        s.handle_udp(now, ap_at, &mut ap.control(Some(id), &hoti)),
        DataAction::Consumed
    );
    let t = transmits(s);
    assert_eq!(t.len(), 1, "the HoT: {t:?}");
    assert_eq!(t[0].to, ap_at);
    let (_, body) = ap.open(now, &t[0].payload);
    let hot = MobilityMessage::parse(&body).expect("mobility header");
    let MessageBody::HomeTest {
        nonce_index: home_index,
        token: home_token,
        ..
    } = hot.body
    else {
        panic!("expected a HoT, got {hot:?}");
    };
    let ticket = hot.care_of_ticket().expect("a care-of ticket");
    assert_eq!(
        s.handle_udp(now, care_of, &mut coti(Some(id), Some(ticket))),
        DataAction::Consumed
    );
    let t = transmits(s);
    assert_eq!(t.len(), 1, "the CoT: {t:?}");
    assert_eq!(t[0].to, care_of);
    let MessageBody::CareOfTest {
        nonce_index: care_of_index,
        token: care_of_token,
        ..
    } = unsealed_msg(&t[0].payload).body
    else {
        panic!("expected a CoT");
    };
    let m = TestMember {
        id,
        nonces: (home_index, care_of_index),
        kbm: crypto::kbm(&home_token, &care_of_token),
        im: 0x3300 + id.0 as u32,
        nm: [id.0 as u8; 16],
    };
    assert_eq!(
        s.handle_udp(now, care_of, &mut bu_from(&m, care_of, 1)),
        DataAction::Consumed
    );
    let t = transmits(s);
    assert_eq!(t.len(), 1, "the BA: {t:?}");
    assert_eq!(t[0].to, care_of);
    assert!(verify_binding(&t[0].payload[HEADER_LEN..], &m.kbm));
    let ba = unsealed_msg(&t[0].payload);
    assert!(matches!(
        ba.body,
        MessageBody::BindingAck {
            status: ba_status::ACCEPTED,
            ..
        }
    ));
    let session = m.session(&ba);
    events(s);
    (m, session)
}

/// Member `m`'s BU `seq` (lifetime 120 s) from `care_of`, signed with its
/// Kbm.
fn bu_from(m: &TestMember, care_of: SocketAddr, seq: u16) -> Vec<u8> {
    let msg = MobilityMessage::new(MessageBody::BindingUpdate {
        sequence: seq,
        ack: true,
        home: false,
        lifetime: to_units(Duration::from_secs(120)),
    })
    .with(MobilityOption::BindingId {
        id: m.id,
        status: 0,
        flags: 0,
        care_of: Some(care_of.ip()),
    })
    .with(MobilityOption::HomeAddress(ULA_HOA))
    .with(MobilityOption::MemberState {
        weight: 100,
        draining: false,
        instance: 1,
    })
    .with(MobilityOption::NonceIndices {
        home: m.nonces.0,
        care_of: m.nonces.1,
    })
    .with(MobilityOption::Session {
        index: m.im,
        nonce: m.nm,
    })
    .with(MobilityOption::BindingAuthorization([0; 12]));
    signed_binding_frame(m.id, &msg, &m.kbm)
}

/// A TCP flow from client port `port`, started through the AP and pinned
/// to `id` by the AP's answer tagged with it.
fn pinned_flow(s: &mut Shim, ap: &mut TestAp, now: Instant, port: u16, id: MemberId) {
    let syn = tcp(client(port), home(), SYN, 1, 0);
    let (to, _) = out(s, now, &syn).expect("sent");
    assert_eq!(to, s.config().access_point);
    let mut answer = ap.data(Some(id), &tcp(home(), client(port), SYN, 100, 2));
    assert_eq!(
        s.handle_udp(now, s.config().access_point, &mut answer),
        DataAction::ToTun
    );
    assert_eq!(member_of(s, port), Some(id));
}

/// The member the flow from client port `port` is pinned to.
fn member_of(s: &Shim, port: u16) -> Option<MemberId> {
    s.flows()
        .find(|(k, _)| k.src == ULA_CLIENT && k.src_port == port)
        .and_then(|(_, f)| f.member)
}

fn ack(port: u16) -> Vec<u8> {
    tcp(client(port), home(), ACK, 2, 101)
}

/// M1's data for the flow from client port 40000 through the AP at `at`.
fn via_ap(s: &mut Shim, ap: &mut TestAp, at: Instant) {
    let mut frame = ap.data(Some(M1), &tcp(home(), client(40000), ACK, 101, 3));
    assert_eq!(s.handle_udp(at, ap_v6(), &mut frame), DataAction::ToTun);
}

fn bound_to(s: &Shim, id: MemberId) -> bool {
    s.bindings().any(|(m, _)| *m == id)
}

#[test]
fn a_move_to_the_other_family_drops_its_bindings_and_keeps_the_flows_pinned() {
    let now = t0();
    let (mut s, mut ap) = shim_at(now, ap_v4(), local_v4());
    pinned_flow(&mut s, &mut ap, now, 40000, M1);
    let (m1, _) = bind(&mut s, &mut ap, now, M1, care_of_v4(M1));
    let (to, _) = out(&mut s, now, &ack(40000)).expect("sent");
    assert_eq!(to, care_of_v4(M1), "direct while bound");
    events(&mut s);
    // Our own endpoints again, IPv4-mapped: no move.
    let mapped = |e: SocketAddr| match e {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    s.moved(now, mapped(ap_v4()), mapped(local_v4()));
    assert_eq!(s.counters().moves, 0);
    assert!(transmits(&mut s).is_empty() && events(&mut s).is_empty());
    assert!(bound_to(&s, M1));

    let later = at(now, 500);
    s.moved(later, ap_v6(), local_v6());
    assert_eq!(s.counters().moves, 1);
    assert_eq!(s.config().access_point, ap_v6());
    assert_eq!(s.config().local, local_v6());
    assert!(!bound_to(&s, M1), "no direct path to an IPv4 member");
    assert_eq!(
        events(&mut s),
        [
            ShimEvent::BindingRemoved { member: M1 },
            ShimEvent::Moved {
                from: local_v4(),
                local: local_v6(),
                access_point: ap_v6(),
            }
        ]
    );
    // One sealed keepalive, in the AP session, to its IPv6 endpoint (the
    // AP follows us there); nothing to the member.
    let t = transmits(&mut s);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].to, ap_v6());
    let (_, body) = ap.open(later, &t[0].payload);
    assert_eq!(
        MobilityMessage::parse(&body).expect("mobility header").body,
        MessageBody::BindingRefreshRequest
    );
    // The flow stays with M1: its packets go through the AP, tagged for it.
    assert_eq!(member_of(&s, 40000), Some(M1));
    let (to, frame) = out(&mut s, later, &ack(40000)).expect("sent");
    assert_eq!(to, ap_v6(), "through the AP");
    let (header, packet) = ap.open(later, &frame);
    assert_eq!((header.member, packet), (Some(M1), ack(40000)));
    // And what comes back through the AP goes on reaching the TUN.
    let mut answer = ap.data(Some(M1), &tcp(home(), client(40000), ACK, 101, 3));
    assert_eq!(s.handle_udp(later, ap_v6(), &mut answer), DataAction::ToTun);

    // The same move again (the route check runs every second): nothing.
    let keepalives = s.counters().keepalives;
    s.moved(at(later, 1_000), ap_v6(), local_v6());
    assert_eq!(s.counters().moves, 1);
    assert_eq!(s.counters().keepalives, keepalives);
    assert_eq!(s.config().access_point, ap_v6());
    assert!(transmits(&mut s).is_empty());
    assert!(events(&mut s).is_empty());

    // A BU from the IPv4 member that was on its way to our old socket
    // binds nothing: we cannot reach it from IPv6.
    let accepted = s.counters().bus_accepted;
    let mut late_bu = bu_from(&m1, care_of_v4(M1), 2);
    assert_eq!(
        s.handle_udp(at(later, 1_100), care_of_v4(M1), &mut late_bu),
        DataAction::Drop(DropReason::UnexpectedMessage)
    );
    assert_eq!(s.counters().bus_accepted, accepted);
    assert!(!bound_to(&s, M1));
    assert!(transmits(&mut s).is_empty(), "no BA to the other family");
}

#[test]
fn a_move_within_the_family_keeps_the_binding_and_shows_the_member_the_new_endpoint() {
    let now = t0();
    let (mut s, mut ap) = shim_at(now, ap_v6(), local_v6());
    pinned_flow(&mut s, &mut ap, now, 40000, M2);
    let (_m2, mut member) = bind(&mut s, &mut ap, now, M2, care_of_v6(M2));
    events(&mut s);

    let later = at(now, 500);
    let new_local = ep("[fd00:4842:d::5]:5555");
    s.moved(later, ap_v6(), new_local);
    assert_eq!(s.counters().moves, 1);
    assert_eq!(s.config().local, new_local);
    assert!(bound_to(&s, M2), "the same family: the binding stays");
    let t = transmits(&mut s);
    let (to_ap, to_member): (Vec<_>, Vec<_>) = t.into_iter().partition(|t| t.to == ap_v6());
    assert_eq!(to_ap.len(), 1, "the keepalive to the AP");
    let (_, body) = ap.open(later, &to_ap[0].payload);
    assert_eq!(
        MobilityMessage::parse(&body).unwrap().body,
        MessageBody::BindingRefreshRequest
    );
    // An empty sealed frame to the member, in the binding session: it
    // roams to our new endpoint on it.
    assert_eq!(to_member.len(), 1, "{to_member:?}");
    assert_eq!(to_member[0].to, care_of_v6(M2));
    let (header, packet) = open(&mut member, later, &to_member[0].payload);
    assert_eq!(header.member, Some(M2));
    assert!(packet.is_empty(), "a keepalive");
    assert!(matches!(
        events(&mut s)[..],
        [ShimEvent::Moved { from, local, access_point }]
            if from == local_v6() && local == new_local && access_point == ap_v6()
    ));
    // The flow goes on direct.
    let (to, _) = out(&mut s, later, &ack(40000)).expect("sent");
    assert_eq!(to, care_of_v6(M2));
}

#[test]
fn a_bound_members_data_through_the_ap_after_the_settle_time_drops_the_binding() {
    let now = t0();
    let (mut s, mut ap) = shim_at(now, ap_v6(), local_v6());
    pinned_flow(&mut s, &mut ap, now, 40000, M1);
    let (m1, _) = bind(&mut s, &mut ap, now, M1, care_of_v6(M1));
    events(&mut s);
    // Just after the BU: a packet the member sent before it had our BA.
    via_ap(&mut s, &mut ap, at(now, 999));
    assert!(bound_to(&s, M1));
    assert_eq!(s.counters().fallbacks, 0);
    // A refresh BU starts the settle time again.
    let refresh = at(now, 3_000);
    assert_eq!(
        s.handle_udp(
            refresh,
            care_of_v6(M1),
            &mut bu_from(&m1, care_of_v6(M1), 2)
        ),
        DataAction::Consumed
    );
    transmits(&mut s);
    via_ap(
        &mut s,
        &mut ap,
        refresh + BINDING_SETTLE - Duration::from_millis(1),
    );
    assert!(bound_to(&s, M1), "within the settle time of the last BU");
    assert_eq!(s.counters().fallbacks, 0);
    let (to, _) = out(&mut s, refresh, &ack(40000)).expect("sent");
    assert_eq!(to, care_of_v6(M1), "still direct");
    events(&mut s);
    // After it: the member has dropped its side; so do we.
    let settled = refresh + BINDING_SETTLE;
    via_ap(&mut s, &mut ap, settled);
    assert!(!bound_to(&s, M1));
    assert_eq!(s.counters().fallbacks, 1);
    assert_eq!(events(&mut s), [ShimEvent::BindingRemoved { member: M1 }]);
    // The flow's next packet goes through the AP, still pinned to M1.
    let (to, frame) = out(&mut s, settled, &ack(40000)).expect("sent");
    assert_eq!(to, ap_v6());
    assert_eq!(ap.open(settled, &frame).0.member, Some(M1));
    assert_eq!(member_of(&s, 40000), Some(M1));
    // More of its data through the AP: nothing more to drop.
    via_ap(&mut s, &mut ap, at(settled, 10));
    assert_eq!(s.counters().fallbacks, 1);
}
