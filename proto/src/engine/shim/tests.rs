//! The shim engine alone: the test plays the AP and the members with the
//! crypto functions (same key schedules, its own sessions), feeds their
//! frames, the application's packets and a virtual clock in, and opens
//! what comes out.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::bindings::signed_binding_frame;
use super::control::unsealed_frame;
use super::*;
use crate::crypto::session::{FLAG_ENCRYPTED, HEADER_LEN, TAG_LEN, session_index_of};
use crate::crypto::{
    self, DhKeyPair, Kbm, Protection, Role, Session, member_shim_keys, shim_ap_keys,
};
use crate::engine::sealed::{PeerSessions, SESSION_GRACE, seal_data, sealed_control};
use crate::engine::testutil::{ACK, HOA, SYN, bid, ep, run_until, t0, tcp, transmits, tun, v6};
use crate::engine::{to_units, verify_binding};
use crate::wire::inner;
use crate::wire::mh::{MessageBody, ba_status, revocation_trigger};
use crate::wire::{MobilityMessage, MobilityOption, TunnelHeader};

const M1: MemberId = MemberId(1);
const M2: MemberId = MemberId(2);
const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1);
const AP_INDEX: u32 = 0xa0a0_0001;

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

fn config() -> ShimConfig {
    ShimConfig::new(ap_ep(), HOA, local(), [9; 32])
}

fn events(s: &mut Shim) -> Vec<ShimEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn app(port: u16) -> std::net::SocketAddrV6 {
    v6(CLIENT, port)
}

fn server() -> std::net::SocketAddrV6 {
    v6(HOA, 80)
}

/// The message of an unsealed control transmit (Session 0, no tag).
fn unsealed_msg(payload: &[u8]) -> MobilityMessage {
    assert_eq!(session_index_of(payload), Some(0), "unsealed");
    MobilityMessage::parse(&payload[HEADER_LEN..]).expect("mobility header")
}

/// The fields of a Shim Hello transmit: (instance, Is, Ns, cookie, pub).
type Hello = ([u8; 8], u32, [u8; 16], [u8; 16], [u8; 32]);

fn hello_of(t: &Transmit) -> Hello {
    assert_eq!(t.to, ap_ep(), "the Hello goes to the AP");
    match unsealed_msg(&t.payload).body {
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

/// The one Hello queued.
fn one_hello(s: &mut Shim) -> Hello {
    let t = transmits(s);
    assert_eq!(t.len(), 1, "one Hello: {t:?}");
    hello_of(&t[0])
}

/// What the test AP keeps of a shim.
struct TestAp {
    sessions: PeerSessions,
}

fn cookie_frame(nonce: [u8; 16], cookie: [u8; 16]) -> Vec<u8> {
    unsealed_frame(
        None,
        &MobilityMessage::new(MessageBody::ShimCookie { nonce, cookie }),
    )
}

/// The AP's side of a Welcome answering `hello`: the frame and the AP's
/// session (the AP is the responder).
fn welcome(hello: &Hello, ap_index: u32, seed: u64) -> (Vec<u8>, Session) {
    let (_, is, ns, _, shim_pub) = *hello;
    let mut drbg = crypto::Drbg::from_u64(seed);
    let pair = DhKeyPair::generate(&mut drbg);
    let na = drbg.nonce16();
    let shared = pair.agree(&shim_pub).expect("contributory");
    let keys = shim_ap_keys(
        &shared,
        &ns,
        &na,
        CLIENT,
        is,
        ap_index,
        &shim_pub,
        &pair.public,
    );
    let frame = unsealed_frame(
        None,
        &MobilityMessage::new(MessageBody::ShimWelcome {
            nonce: ns,
            index: ap_index,
            ap_nonce: na,
            public: pair.public,
        }),
    );
    (frame, Session::new(&keys, Role::Responder, ap_index, is))
}

/// A new shim and its handshake with the test AP, cookie round trip
/// included; nothing queued, no events.
fn up(now: Instant, config: ShimConfig) -> (Shim, TestAp) {
    let mut s = Shim::new(now, config);
    let first = one_hello(&mut s);
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut cookie_frame(first.2, [0xc0; 16])),
        DataAction::Consumed
    );
    let second = one_hello(&mut s);
    let (mut w, session) = welcome(&second, AP_INDEX, 1);
    assert_eq!(s.handle_udp(now, ap_ep(), &mut w), DataAction::Consumed);
    events(&mut s);
    (
        s,
        TestAp {
            sessions: PeerSessions::new(session),
        },
    )
}

fn shim(now: Instant) -> (Shim, TestAp) {
    up(now, config())
}

impl TestAp {
    /// A control message sealed by the AP.
    fn control(&mut self, member: Option<MemberId>, msg: &MobilityMessage) -> Vec<u8> {
        sealed_control(&mut self.sessions, Protection::Encrypt, member, msg).expect("sealed")
    }

    /// A data frame sealed by the AP, tagged with `member`.
    fn data(&mut self, member: Option<MemberId>, packet: &[u8]) -> Vec<u8> {
        seal(&mut self.sessions, member, packet)
    }

    /// Opens a frame the shim sealed for the AP: header and payload.
    fn open(&mut self, now: Instant, frame: &[u8]) -> (TunnelHeader, Vec<u8>) {
        open(&mut self.sessions, now, frame)
    }

    /// The control messages the shim queued, all sealed for the AP.
    fn messages(&mut self, s: &mut Shim, now: Instant) -> Vec<MobilityMessage> {
        transmits(s)
            .iter()
            .map(|t| {
                assert_eq!(t.to, ap_ep());
                let (_, body) = self.open(now, &t.payload);
                MobilityMessage::parse(&body).expect("mobility header")
            })
            .collect()
    }
}

fn seal(sessions: &mut PeerSessions, member: Option<MemberId>, packet: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HEADER_LEN];
    f.extend_from_slice(packet);
    f.extend_from_slice(&[0; TAG_LEN]);
    seal_data(sessions, Protection::Encrypt, member, &mut f).expect("sealed");
    f
}

fn open(sessions: &mut PeerSessions, now: Instant, frame: &[u8]) -> (TunnelHeader, Vec<u8>) {
    let mut f = frame.to_vec();
    let index = session_index_of(&f).expect("index");
    sessions
        .open(now, index, Protection::Encrypt, &mut f)
        .expect("opens");
    let header = TunnelHeader::parse(&f).expect("header");
    (header, f[HEADER_LEN..f.len() - TAG_LEN].to_vec())
}

/// An application packet through the shim: `Ok((to, frame))` when sent.
fn out(s: &mut Shim, now: Instant, packet: &[u8]) -> Result<(SocketAddr, Vec<u8>), DataAction> {
    let mut f = vec![0xee; HEADER_LEN];
    f.extend_from_slice(packet);
    f.extend_from_slice(&[0xee; TAG_LEN]);
    s.data_out(now, &mut f).map(|to| (to, f))
}

#[test]
fn the_handshake_takes_a_cookie_round_trip_and_seals_both_ways() {
    let now = t0();
    let mut s = Shim::new(now, config());
    let first = one_hello(&mut s);
    assert_eq!(first.0, s.instance());
    assert_eq!(first.3, [0; 16], "no cookie yet");
    assert!(!s.has_ap_session());
    // A cookie for another nonce is not the AP's answer.
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut cookie_frame([7; 16], [0xc0; 16])),
        DataAction::Drop(DropReason::AuthFailed)
    );
    assert!(transmits(&mut s).is_empty());
    s.handle_udp(now, ap_ep(), &mut cookie_frame(first.2, [0xc0; 16]));
    let second = one_hello(&mut s);
    assert_eq!(
        (second.0, second.1, second.2, second.3, second.4),
        (first.0, first.1, first.2, [0xc0; 16], first.4),
        "the same Hello with the cookie"
    );
    let (mut w, session) = welcome(&second, AP_INDEX, 1);
    assert_eq!(s.handle_udp(now, ap_ep(), &mut w), DataAction::Consumed);
    assert!(s.has_ap_session());
    assert_eq!(
        events(&mut s),
        [ShimEvent::ApSession {
            index: first.1,
            renewed: false
        }]
    );
    assert!(transmits(&mut s).is_empty());
    // No retransmission after the Welcome; the AP's answer to a
    // retransmitted Hello (the same Welcome) changes nothing.
    run_until(&mut s, now + Duration::from_secs(60));
    assert!(transmits(&mut s).is_empty());
    let (mut again, _) = welcome(&second, AP_INDEX, 1);
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut again),
        DataAction::Drop(DropReason::UnexpectedMessage)
    );
    assert_eq!(
        s.ap.sessions.as_ref().map(|x| x.current().remote_index),
        Some(AP_INDEX)
    );

    let mut ap = TestAp {
        sessions: PeerSessions::new(session),
    };
    let syn = tcp(app(40000), server(), SYN, 1, 0);
    let (to, frame) = out(&mut s, now, &syn).expect("sent");
    assert_eq!(to, ap_ep());
    assert_ne!(frame[1] & FLAG_ENCRYPTED, 0, "encrypted by default");
    assert_ne!(&frame[HEADER_LEN..HEADER_LEN + syn.len()], &syn[..]);
    let (header, packet) = ap.open(now, &frame);
    assert_eq!((header.member, packet), (None, syn.clone()));
    let mut answer = ap.data(Some(M1), &tcp(server(), app(40000), SYN, 100, 2));
    assert_eq!(s.handle_udp(now, ap_ep(), &mut answer), DataAction::ToTun);
    let key = inner::inspect(&syn).expect("valid").flow;
    assert_eq!(s.flow(&key).and_then(|f| f.member), Some(M1));
    assert_eq!(s.counters().ap_sessions, 1);
}

#[test]
fn the_hello_is_retransmitted_with_backoff_until_a_welcome() {
    let now = t0();
    let mut s = Shim::new(now, config());
    let first = one_hello(&mut s);
    let mut at = now;
    for gap in [1, 2, 4, 8, 16, 32, 32] {
        let next = s.poll_timeout().expect("a timer");
        run_until(
            &mut s,
            at + Duration::from_secs(gap) - Duration::from_millis(1),
        );
        assert!(transmits(&mut s).is_empty(), "not before {gap} s");
        at += Duration::from_secs(gap);
        assert!(next <= at);
        run_until(&mut s, at);
        let again = one_hello(&mut s);
        assert_eq!((again.1, again.2), (first.1, first.2), "the same Hello");
    }
    let (mut w, _) = welcome(&first, AP_INDEX, 1);
    s.handle_udp(at, ap_ep(), &mut w);
    run_until(&mut s, at + Duration::from_secs(64));
    assert!(transmits(&mut s).is_empty());
    assert_eq!(s.counters().hellos_sent, 8);
}

#[test]
fn no_packet_leaves_before_the_session() {
    let now = t0();
    let mut s = Shim::new(now, config());
    let hello = one_hello(&mut s);
    let syn = tcp(app(40000), server(), SYN, 1, 0);
    assert_eq!(
        out(&mut s, now, &syn),
        Err(DataAction::Drop(DropReason::NoSession))
    );
    assert_eq!(
        tun(&mut s, now, &mut syn.clone()),
        DataAction::Drop(DropReason::NoSession)
    );
    assert_eq!(s.counters().drops.get(DropReason::NoSession), 2);
    assert!(transmits(&mut s).is_empty());
    assert_eq!(s.flows().count(), 0);
    let (mut w, session) = welcome(&hello, AP_INDEX, 1);
    s.handle_udp(now, ap_ep(), &mut w);
    // Sent once the session is up: header | packet | tag, sealed.
    let mut frame = [&[0u8; HEADER_LEN][..], &syn, &[0u8; TAG_LEN]].concat();
    let pkt = TunPacket::new(&mut frame).expect("room");
    assert_eq!(s.handle_tun(now, pkt), DataAction::Send { to: ap_ep() });
    let mut ap = PeerSessions::new(session);
    assert_eq!(open(&mut ap, now, &frame).1, syn);
}

#[test]
fn a_welcome_needs_our_nonce_from_the_ap_and_a_good_key() {
    let now = t0();
    let mut s = Shim::new(now, config());
    let hello = one_hello(&mut s);
    let (_, is, ns, cookie, public) = hello;
    // Wrong nonce: an off-path guess.
    let (mut w, _) = welcome(&(hello.0, is, [1; 16], cookie, public), AP_INDEX, 1);
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut w),
        DataAction::Drop(DropReason::AuthFailed)
    );
    // Right nonce, from somewhere else than the AP.
    let (mut w, _) = welcome(&hello, AP_INDEX, 1);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut w.clone()),
        DataAction::Drop(DropReason::UnexpectedMessage)
    );
    // Right nonce, low-order AP key (all zero).
    let mut low = unsealed_frame(
        None,
        &MobilityMessage::new(MessageBody::ShimWelcome {
            nonce: ns,
            index: AP_INDEX,
            ap_nonce: [3; 16],
            public: [0; 32],
        }),
    );
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut low),
        DataAction::Drop(DropReason::AuthFailed)
    );
    assert!(!s.has_ap_session());
    assert!(events(&mut s).is_empty());
    // The pending handshake survived all of it.
    assert_eq!(s.handle_udp(now, ap_ep(), &mut w), DataAction::Consumed);
    assert!(s.has_ap_session());
}

#[test]
fn a_zero_nonce_cookie_starts_a_new_handshake_and_the_old_session_works_until_the_welcome() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let old_hello_index = s.ap.sessions.as_ref().expect("up").current().local_index;
    let later = now + Duration::from_secs(5);
    assert_eq!(
        s.handle_udp(later, ap_ep(), &mut cookie_frame([0; 16], [0; 16])),
        DataAction::Consumed
    );
    let fresh = one_hello(&mut s);
    assert_eq!(fresh.0, s.instance(), "same instance");
    assert_ne!(fresh.1, old_hello_index, "fresh Is");
    assert_eq!(fresh.3, [0; 16]);
    // Another one while the handshake is pending: nothing new.
    s.handle_udp(later, ap_ep(), &mut cookie_frame([0; 16], [0; 16]));
    assert!(transmits(&mut s).is_empty());
    // The old session still works both ways.
    let syn = tcp(app(40000), server(), SYN, 1, 0);
    let (_, frame) = out(&mut s, later, &syn).expect("sent");
    assert_eq!(ap.open(later, &frame).1, syn);
    let mut answer = ap.data(Some(M1), &tcp(server(), app(40000), SYN, 100, 2));
    assert_eq!(s.handle_udp(later, ap_ep(), &mut answer), DataAction::ToTun);
    // The new Welcome switches; the old session opens frames for its grace.
    let (mut w, new_session) = welcome(&fresh, AP_INDEX + 1, 2);
    assert_eq!(s.handle_udp(later, ap_ep(), &mut w), DataAction::Consumed);
    assert_eq!(
        events(&mut s),
        [ShimEvent::ApSession {
            index: fresh.1,
            renewed: true
        }]
    );
    let mut new_ap = TestAp {
        sessions: PeerSessions::new(new_session),
    };
    let ack = tcp(app(40000), server(), ACK, 2, 101);
    let (_, frame) = out(&mut s, later, &ack).expect("sent");
    assert_eq!(session_index_of(&frame), Some(AP_INDEX + 1), "new session");
    assert_eq!(new_ap.open(later, &frame).1, ack);
    let late = tcp(server(), app(40000), ACK, 101, 3);
    assert_eq!(
        s.handle_udp(later, ap_ep(), &mut ap.data(Some(M1), &late)),
        DataAction::ToTun,
        "old session in its grace"
    );
    // A zero cookie within a second of the last start: nothing.
    s.handle_udp(later, ap_ep(), &mut cookie_frame([0; 16], [0; 16]));
    assert!(transmits(&mut s).is_empty());
    let after = later + SESSION_GRACE;
    run_until(&mut s, after);
    assert_eq!(
        s.handle_udp(after, ap_ep(), &mut ap.data(Some(M1), &late)),
        DataAction::Drop(DropReason::UnknownPeer),
        "grace over"
    );
}

#[test]
fn unsealed_data_from_the_ap_endpoint_never_reaches_the_tun() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let packet = tcp(server(), app(40000), SYN, 100, 2);
    let mut unsealed = vec![0u8; HEADER_LEN];
    unsealed[..4].copy_from_slice(&TunnelHeader::data(Some(M1)).to_bytes()[..4]);
    unsealed.extend_from_slice(&packet);
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut unsealed),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    let sealed = ap.data(Some(M1), &packet);
    let mut tampered = sealed.clone();
    tampered[HEADER_LEN + 3] ^= 1;
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut tampered),
        DataAction::Drop(DropReason::AuthFailed)
    );
    let mut unknown = sealed.clone();
    unknown[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut unknown),
        DataAction::Drop(DropReason::UnknownPeer)
    );
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut sealed.clone()),
        DataAction::ToTun
    );
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut sealed.clone()),
        DataAction::Drop(DropReason::Replay)
    );
    assert_eq!(s.counters().via_ap_in, 1);
    assert_eq!(s.counters().drops.get(DropReason::Unauthenticated), 1);
}

#[test]
fn an_encrypting_shim_refuses_integrity_frames_an_integrity_shim_sends_them() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let packet = tcp(server(), app(40000), SYN, 100, 2);
    let mut f = vec![0u8; HEADER_LEN];
    f.extend_from_slice(&packet);
    f.extend_from_slice(&[0; TAG_LEN]);
    seal_data(&mut ap.sessions, Protection::Integrity, Some(M1), &mut f).expect("sealed");
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut f),
        DataAction::Drop(DropReason::AuthFailed)
    );
    let mut cfg = config();
    cfg.protection = Protection::Integrity;
    let (mut s, mut ap) = up(now, cfg);
    let syn = tcp(app(40000), server(), SYN, 1, 0);
    let (_, frame) = out(&mut s, now, &syn).expect("sent");
    assert_eq!(frame[1] & FLAG_ENCRYPTED, 0);
    assert_eq!(
        &frame[HEADER_LEN..HEADER_LEN + syn.len()],
        &syn[..],
        "clear"
    );
    let mut g = frame.clone();
    let index = session_index_of(&g).expect("index");
    ap.sessions
        .open(now, index, Protection::Integrity, &mut g)
        .expect("authenticated");
    // An integrity receiver accepts encrypted frames too.
    let mut enc = ap.data(Some(M1), &packet);
    assert_eq!(s.handle_udp(now, ap_ep(), &mut enc), DataAction::ToTun);
}

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

/// What a member learns from the home test: (nonce index, token, ticket).
fn home_test(
    s: &mut Shim,
    ap: &mut TestAp,
    now: Instant,
    member: MemberId,
) -> (u16, [u8; 8], (u16, [u8; 8])) {
    let hoti = MobilityMessage::new(MessageBody::HomeTestInit { cookie: [1; 8] })
        .with(bid(member))
        .with(MobilityOption::HomeAddress(HOA))
        .with(MobilityOption::Correspondent(CLIENT));
    // Unsealed, as v1 relayed it: not answered.
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut unsealed_frame(Some(member), &hoti)),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    assert!(transmits(s).is_empty());
    assert_eq!(
        s.handle_udp(now, ap_ep(), &mut ap.control(Some(member), &hoti)),
        DataAction::Consumed
    );
    let msgs = ap.messages(s, now);
    let [hot] = &msgs[..] else {
        panic!("one HoT: {msgs:?}");
    };
    let MessageBody::HomeTest {
        nonce_index,
        cookie: [1, ..],
        token,
    } = hot.body
    else {
        panic!("expected a HoT with our cookie, got {hot:?}");
    };
    let ticket = hot.care_of_ticket().expect("a care-of ticket");
    assert_eq!(ticket.0, nonce_index);
    assert_eq!(hot.binding_id().map(|b| b.0), Some(member));
    (nonce_index, token, ticket)
}

fn coti(member: Option<MemberId>, ticket: Option<(u16, [u8; 8])>) -> Vec<u8> {
    let mut msg = MobilityMessage::new(MessageBody::CareOfTestInit { cookie: [2; 8] });
    if let Some(m) = member {
        msg = msg.with(bid(m));
    }
    if let Some((nonce_index, ticket)) = ticket {
        msg = msg.with(MobilityOption::CareOfTicket {
            nonce_index,
            ticket,
        });
    }
    unsealed_frame(member, &msg)
}

/// The CoT answering a CoTI from `member`'s care-of endpoint:
/// (nonce index, token).
fn care_of_test(
    s: &mut Shim,
    now: Instant,
    member: MemberId,
    ticket: (u16, [u8; 8]),
) -> (u16, [u8; 8]) {
    assert_eq!(
        s.handle_udp(now, care_of(member), &mut coti(Some(member), Some(ticket))),
        DataAction::Consumed
    );
    let t = transmits(s);
    assert_eq!(t.len(), 1);
    assert_eq!(
        t[0].to,
        care_of(member),
        "the CoT goes to the care-of endpoint"
    );
    match unsealed_msg(&t[0].payload).body {
        MessageBody::CareOfTest {
            nonce_index,
            cookie: [2, ..],
            token,
        } => (nonce_index, token),
        other => panic!("expected a CoT, got {other:?}"),
    }
}

#[test]
fn a_care_of_test_is_answered_only_with_a_good_ticket() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let (_, _, ticket) = home_test(&mut s, &mut ap, now, M1);
    let mut bad = ticket;
    bad.1[0] ^= 1;
    let unknown_index = (ticket.0.wrapping_add(100), ticket.1);
    for (what, mut frame) in [
        ("no ticket", coti(Some(M1), None)),
        ("no binding id", coti(None, Some(ticket))),
        ("a bad ticket", coti(Some(M1), Some(bad))),
        ("another member's ticket", coti(Some(M2), Some(ticket))),
        (
            "an unknown nonce index",
            coti(Some(M1), Some(unknown_index)),
        ),
    ] {
        assert_eq!(
            s.handle_udp(now, care_of(M1), &mut frame),
            DataAction::Drop(DropReason::AuthFailed),
            "{what}"
        );
        assert!(transmits(&mut s).is_empty(), "no answer to {what}");
    }
    assert_eq!(s.counters().drops.get(DropReason::AuthFailed), 5);
    care_of_test(&mut s, now, M1, ticket);
    // The ticket lives as long as its nonce.
    let later = now + DEFAULT_NONCE_LIFETIME + DEFAULT_NONCE_INTERVAL;
    run_until(&mut s, later);
    assert_eq!(
        s.handle_udp(later, care_of(M1), &mut coti(Some(M1), Some(ticket))),
        DataAction::Drop(DropReason::AuthFailed)
    );
}

/// A member doing route optimization with the shim.
struct TestMember {
    id: MemberId,
    nonces: (u16, u16),
    kbm: Kbm,
    im: u32,
    nm: [u8; 16],
}

fn return_routability(s: &mut Shim, ap: &mut TestAp, now: Instant, id: MemberId) -> TestMember {
    let (home, home_token, ticket) = home_test(s, ap, now, id);
    let (care, care_token) = care_of_test(s, now, id, ticket);
    TestMember {
        id,
        nonces: (home, care),
        kbm: crypto::kbm(&home_token, &care_token),
        im: 0x3300 + id.0 as u32,
        nm: [id.0 as u8; 16],
    }
}

impl TestMember {
    /// A BU from the member's care-of endpoint, signed with its Kbm.
    fn bu(&self, seq: u16, lifetime_s: u64) -> Vec<u8> {
        self.bu_with(seq, lifetime_s, &self.kbm, Some((self.im, self.nm)))
    }

    fn bu_with(
        &self,
        seq: u16,
        lifetime_s: u64,
        kbm: &Kbm,
        session: Option<(u32, [u8; 16])>,
    ) -> Vec<u8> {
        let mut msg = MobilityMessage::new(MessageBody::BindingUpdate {
            sequence: seq,
            ack: true,
            home: false,
            lifetime: to_units(Duration::from_secs(lifetime_s)),
        })
        .with(MobilityOption::BindingId {
            id: self.id,
            status: 0,
            flags: 0,
            care_of: Some(care_of(self.id).ip()),
        })
        .with(MobilityOption::HomeAddress(HOA))
        .with(MobilityOption::MemberState {
            weight: 100,
            draining: false,
            instance: 1,
        })
        .with(MobilityOption::NonceIndices {
            home: self.nonces.0,
            care_of: self.nonces.1,
        });
        if let Some((index, nonce)) = session {
            msg = msg.with(MobilityOption::Session { index, nonce });
        }
        let msg = msg.with(MobilityOption::BindingAuthorization([0; 12]));
        signed_binding_frame(self.id, &msg, kbm, care_of(self.id), local())
    }

    /// The one BA queued, checked for the member's Kbm signature.
    fn ba(&self, s: &mut Shim) -> MobilityMessage {
        let t = transmits(s);
        assert_eq!(t.len(), 1, "one BA: {t:?}");
        assert_eq!(t[0].to, care_of(self.id));
        assert!(
            verify_binding(
                &t[0].payload[HEADER_LEN..],
                &self.kbm,
                care_of(self.id),
                local()
            ),
            "signed with Kbm"
        );
        unsealed_msg(&t[0].payload)
    }

    /// The member's session from the BA's Session {Is, Ns}.
    fn session(&self, ba: &MobilityMessage) -> PeerSessions {
        let (is, ns) = ba.session().expect("a Session option");
        let keys = member_shim_keys(&self.kbm, &self.nm, &ns, self.id.0, self.im, is);
        PeerSessions::new(Session::new(&keys, Role::Initiator, self.im, is))
    }
}

/// A shim with a binding for `id`, and the member's session.
fn bound(s: &mut Shim, ap: &mut TestAp, now: Instant, id: MemberId) -> (TestMember, PeerSessions) {
    let m = return_routability(s, ap, now, id);
    assert_eq!(
        s.handle_udp(now, care_of(id), &mut m.bu(1, 120)),
        DataAction::Consumed
    );
    let ba = m.ba(s);
    let session = m.session(&ba);
    events(s);
    (m, session)
}

#[test]
fn a_verified_bu_gets_a_signed_ba_with_the_shims_session() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let m = return_routability(&mut s, &mut ap, now, M1);
    // Without a Session option: refused, no answer.
    let mut old = m.bu_with(7, 120, &m.kbm, None);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut old),
        DataAction::Drop(DropReason::Malformed)
    );
    assert!(transmits(&mut s).is_empty());
    events(&mut s);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut m.bu(7, 120)),
        DataAction::Consumed
    );
    let ba = m.ba(&mut s);
    assert_eq!(
        ba.body,
        MessageBody::BindingAck {
            status: ba_status::ACCEPTED,
            sequence: 7,
            lifetime: 30
        }
    );
    let kinds: Vec<_> = ba.options.iter().map(std::mem::discriminant).collect();
    assert_eq!(
        kinds,
        [
            std::mem::discriminant(&MobilityOption::Session {
                index: 0,
                nonce: [0; 16]
            }),
            std::mem::discriminant(&MobilityOption::BindingAuthorization([0; 12])),
        ],
        "Session, then the Binding Authorization Data"
    );
    let (is, _) = ba.session().expect("session");
    assert_ne!(is, 0);
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
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut m.bu(7, 120)),
        DataAction::Drop(DropReason::Replay)
    );
    let ba = m.ba(&mut s);
    assert!(matches!(
        ba.body,
        MessageBody::BindingAck {
            status: ba_status::SEQUENCE_OUT_OF_WINDOW,
            sequence: 7,
            ..
        }
    ));
    assert_eq!(ba.session(), None);
    // A refresh with the same Kbm and Session keeps the session.
    s.handle_udp(now, care_of(M1), &mut m.bu(8, 120));
    assert_eq!(m.ba(&mut s).session().map(|x| x.0), Some(is));
}

#[test]
fn a_forged_bu_is_rejected() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let m = return_routability(&mut s, &mut ap, now, M1);
    let forged_kbm: Kbm = [0x5a; 32];
    let mut bu = m.bu_with(1, 120, &forged_kbm, Some((m.im, m.nm)));
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
    let (mut s, mut ap) = shim(now);
    let m = return_routability(&mut s, &mut ap, now, M1);
    let later = now + DEFAULT_NONCE_LIFETIME + DEFAULT_NONCE_INTERVAL;
    run_until(&mut s, later);
    transmits(&mut s);
    assert_eq!(
        s.handle_udp(later, care_of(M1), &mut m.bu(1, 120)),
        DataAction::Drop(DropReason::Replay)
    );
    let t = transmits(&mut s);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].to, care_of(M1));
    assert!(matches!(
        unsealed_msg(&t[0].payload).body,
        MessageBody::BindingAck {
            status: ba_status::EXPIRED_NONCES,
            ..
        }
    ));
    assert_eq!(s.bindings().count(), 0);
}

#[test]
fn direct_data_is_sealed_in_the_binding_session_both_ways() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let syn = tcp(app(40000), server(), SYN, 1, 0);
    out(&mut s, now, &syn).expect("via the AP");
    let mut answer = ap.data(Some(M1), &tcp(server(), app(40000), SYN, 100, 2));
    assert_eq!(s.handle_udp(now, ap_ep(), &mut answer), DataAction::ToTun);
    let key = inner::inspect(&syn).expect("valid").flow;
    // Still through the AP (tagged, so the AP keeps it on M1) until bound.
    let ack = tcp(app(40000), server(), ACK, 2, 101);
    let (to, frame) = out(&mut s, now, &ack).expect("sent");
    assert_eq!(to, ap_ep());
    assert_eq!(ap.open(now, &frame).0.member, Some(M1));
    let (m, mut member) = bound(&mut s, &mut ap, now, M1);
    let (to, frame) = out(&mut s, now, &ack).expect("sent");
    assert_eq!(to, care_of(M1), "direct");
    let (header, packet) = open(&mut member, now, &frame);
    assert_eq!((header.member, packet), (Some(M1), ack.clone()));
    assert_eq!(
        events(&mut s),
        [ShimEvent::FlowDirect {
            flow: key,
            member: M1
        }]
    );
    // The member's sealed data, from any endpoint (the seal proves it).
    let data = tcp(server(), app(40000), ACK, 101, 3);
    let sealed = seal(&mut member, Some(M1), &data);
    assert_eq!(
        s.handle_udp(now, care_of(M2), &mut sealed.clone()),
        DataAction::ToTun
    );
    assert_eq!(s.counters().direct_in, 1);
    // Unsealed from its care-of endpoint: never delivered, no answer.
    let mut unsealed = vec![0u8; HEADER_LEN];
    unsealed[..4].copy_from_slice(&TunnelHeader::data(Some(M1)).to_bytes()[..4]);
    unsealed.extend_from_slice(&data);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut unsealed),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    // Sealed but naming another member, or with a foreign inner source.
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut seal(&mut member, Some(M2), &data)),
        DataAction::Drop(DropReason::UnknownPeer)
    );
    let spoofed = tcp(v6(CLIENT, 80), app(40000), ACK, 101, 3);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut seal(&mut member, Some(M1), &spoofed)),
        DataAction::Drop(DropReason::SpoofedSource)
    );
    assert!(transmits(&mut s).is_empty(), "no binding errors");
    // A new Session in the next BU: a new session; the old one in its grace.
    let mut m2 = m;
    m2.im += 100;
    m2.nm = [0x77; 16];
    s.handle_udp(now, care_of(M1), &mut m2.bu(2, 120));
    let mut renewed = m2.session(&m2.ba(&mut s));
    let (_, frame) = out(&mut s, now, &ack).expect("sent");
    assert_eq!(open(&mut renewed, now, &frame).1, ack);
    let old = seal(&mut member, Some(M1), &data);
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut old.clone()),
        DataAction::ToTun
    );
    let after = now + SESSION_GRACE;
    run_until(&mut s, after);
    let old = seal(&mut member, Some(M1), &data);
    assert_eq!(
        s.handle_udp(after, care_of(M1), &mut old.clone()),
        DataAction::Drop(DropReason::UnknownPeer)
    );
    // Once the binding lapses its session opens nothing and flows go
    // through the AP.
    let expired = now + Duration::from_secs(121);
    run_until(&mut s, expired);
    let (to, _) = out(&mut s, expired, &ack).expect("sent");
    assert_eq!(to, ap_ep());
    assert_eq!(
        s.handle_udp(
            expired,
            care_of(M1),
            &mut seal(&mut renewed, Some(M1), &data)
        ),
        DataAction::Drop(DropReason::UnknownPeer)
    );
}

#[test]
fn binding_errors_and_unknown_messages_get_no_answer_and_change_nothing() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    bound(&mut s, &mut ap, now, M1);
    let be = MobilityMessage::new(MessageBody::BindingError {
        status: 1,
        home_address: HOA,
    });
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut unsealed_frame(Some(M1), &be)),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    assert_eq!(s.bindings().count(), 1, "the binding stays");
    // An unknown MH type (250): no BE 2 any more.
    let mut unknown = unsealed_frame(None, &be);
    unknown[HEADER_LEN + 2] = 250;
    assert_eq!(
        s.handle_udp(now, care_of(M1), &mut unknown),
        DataAction::Drop(DropReason::UnexpectedMessage)
    );
    // Sealed data to an index we never gave out: dropped, no answer.
    let mut stray = seal(&mut ap.sessions, None, &tcp(server(), app(1), ACK, 1, 1));
    stray[4..8].copy_from_slice(&7u32.to_be_bytes());
    assert_eq!(
        s.handle_udp(now, care_of(M2), &mut stray),
        DataAction::Drop(DropReason::UnknownPeer)
    );
    assert!(transmits(&mut s).is_empty());
    assert_eq!(s.counters().binding_errors, 0);
}

#[test]
fn a_sealed_keepalive_goes_to_the_ap_while_there_are_flows() {
    let now = t0();
    let (mut s, mut ap) = shim(now);
    let keepalive = DEFAULT_KEEPALIVE;
    run_until(&mut s, now + keepalive);
    assert!(ap.messages(&mut s, now).is_empty(), "no flows: silent");
    out(
        &mut s,
        now + keepalive,
        &tcp(app(40000), server(), SYN, 1, 0),
    )
    .expect("sent");
    run_until(&mut s, now + keepalive * 2);
    let msgs = ap.messages(&mut s, now);
    assert_eq!(
        msgs.iter().map(|m| m.body.clone()).collect::<Vec<_>>(),
        [MessageBody::BindingRefreshRequest]
    );
    assert_eq!(s.counters().keepalives, 1);
}
