//! The AP engine alone: frames and a virtual clock in; actions, transmits,
//! events and timers out. The members and shims are played here with the
//! crypto functions (the same key schedules, sealing with `Session`).

use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::sessions::{send_to, sign_frame, unsealed_frame};
use super::*;
use crate::crypto::session::{HEADER_LEN, TAG_LEN};
use crate::crypto::{DhKeyPair, Drbg, Protection, Role, Session, member_ap_keys, shim_ap_keys};
use crate::engine::sealed::{PeerSessions, seal_data, sealed_control};
use crate::engine::testutil::{ACK, HOA, KEY, SPI, SYN, at, bid, ep, run_until, t0, tcp, v6};
use crate::engine::{DropReason, to_units, verify_registration};
use crate::wire::TunnelHeader;
use crate::wire::mh::{MessageBody, ba_status, revocation_trigger};

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
    let mut config = ApConfig::new(HOA, vec![MemberKey::new(SPI, KEY.to_vec())]);
    config.seed = [7; 32];
    adjust(&mut config);
    AccessPoint::new(config).expect("valid config")
}

fn ap() -> AccessPoint {
    ap_with(|_| {})
}

fn transmits(ap: &mut AccessPoint) -> Vec<Transmit> {
    std::iter::from_fn(|| ap.poll_transmit()).collect()
}

fn events(ap: &mut AccessPoint) -> Vec<ApEvent> {
    std::iter::from_fn(|| ap.poll_event()).collect()
}

/// The header and message of an unsealed control transmit.
fn unsealed(t: &Transmit) -> (TunnelHeader, MobilityMessage) {
    let h = TunnelHeader::parse(&t.payload).expect("header");
    assert_eq!(&t.payload[4..8], &[0; 4], "unsealed: Session 0");
    let msg = MobilityMessage::parse(&t.payload[HEADER_LEN..]).expect("mobility header");
    (h, msg)
}

/// Open a sealed frame with `sessions`; the inner payload.
fn open(sessions: &mut PeerSessions, frame: &mut [u8]) -> Vec<u8> {
    let index = u32::from_be_bytes(frame[4..8].try_into().unwrap());
    assert_ne!(index, 0, "sealed");
    sessions
        .open(t0(), index, Protection::Encrypt, frame)
        .expect("opens with the peer's keys");
    frame[HEADER_LEN..frame.len() - TAG_LEN].to_vec()
}

/// A data frame buffer: header | packet | tag, sealed by `sessions`.
fn sealed_data(sessions: &mut PeerSessions, member: Option<MemberId>, packet: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HEADER_LEN];
    f.extend_from_slice(packet);
    f.extend_from_slice(&[0; TAG_LEN]);
    seal_data(sessions, Protection::Encrypt, member, &mut f).expect("seals");
    f
}

/// An unsealed data frame (v2 layout, Session 0).
fn unsealed_data(member: Option<MemberId>, packet: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HEADER_LEN];
    f[..4].copy_from_slice(&TunnelHeader::data(member).to_bytes()[..4]);
    f.extend_from_slice(packet);
    f.extend_from_slice(&[0; TAG_LEN]);
    f
}

/// A member as the AP sees it from the wire.
struct TestMember {
    id: MemberId,
    ep: SocketAddr,
    instance: u64,
    index: u32,
    nonce: [u8; 16],
    seq: u16,
    cookie: Option<[u8; 16]>,
    sessions: Option<PeerSessions>,
    /// What the AP sent to others meanwhile.
    others: Vec<Transmit>,
}

impl TestMember {
    fn new(id: MemberId, ep: SocketAddr) -> TestMember {
        TestMember {
            id,
            ep,
            instance: id.0.into(),
            index: 0x1000 + u32::from(id.0),
            nonce: [id.0 as u8; 16],
            seq: 0,
            cookie: None,
            sessions: None,
            others: Vec::new(),
        }
    }

    /// Its next registration BU (lifetime 60 s), signed with `key`.
    fn bu(&mut self, key: &[u8]) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = MobilityMessage::new(MessageBody::BindingUpdate {
            sequence: self.seq,
            ack: true,
            home: true,
            lifetime: to_units(Duration::from_secs(60)),
        })
        .with(MobilityOption::BindingId {
            id: self.id,
            status: 0,
            flags: 0,
            care_of: Some(self.ep.ip()),
        })
        .with(MobilityOption::HomeAddress(HOA))
        .with(MobilityOption::MemberState {
            weight: 100,
            draining: false,
            instance: self.instance,
        })
        .with(MobilityOption::Session {
            index: self.index,
            nonce: self.nonce,
        });
        if let Some(c) = self.cookie {
            msg = msg.with(MobilityOption::Cookie(c));
        }
        let msg = msg.with(MobilityOption::Authentication {
            subtype: AUTH_SUBTYPE_MN_HA,
            spi: SPI,
            data: [0; 16],
        });
        let mut f = unsealed_frame(Some(self.id), &msg);
        sign_frame(&mut f, key, HOA);
        f
    }

    /// Send one BU; returns the (signed) BA the AP answered with.
    fn send_bu(&mut self, ap: &mut AccessPoint, now: Instant) -> MobilityMessage {
        let mut bu = self.bu(KEY);
        assert_eq!(ap.handle_udp(now, self.ep, &mut bu), DataAction::Consumed);
        let (t, others): (Vec<_>, Vec<_>) =
            transmits(ap).into_iter().partition(|t| t.to == self.ep);
        self.others.extend(others);
        assert_eq!(t.len(), 1, "one BA");
        assert!(
            verify_registration(&t[0].payload[HEADER_LEN..], KEY, HOA),
            "the BA is signed"
        );
        let (_, msg) = unsealed(&t[0]);
        if let Some(c) = msg.cookie() {
            self.cookie = Some(c);
        }
        msg
    }

    /// Register with the cookie round trip (202, then 0); derive the keys.
    fn register(&mut self, ap: &mut AccessPoint, now: Instant) {
        let mut ba = self.send_bu(ap, now);
        if ba_status_of(&ba) == ba_status::RETRY_WITH_COOKIE {
            ba = self.send_bu(ap, now);
        }
        assert_eq!(ba_status_of(&ba), ba_status::ACCEPTED);
        let (ia, na) = ba.session().expect("BA 0 carries Session");
        let km = member_ap_keys(
            KEY,
            &self.nonce,
            &na,
            self.id.0,
            self.instance,
            self.index,
            ia,
        );
        self.sessions = Some(PeerSessions::new(Session::new(
            &km,
            Role::Initiator,
            self.index,
            ia,
        )));
    }

    fn sessions(&mut self) -> &mut PeerSessions {
        self.sessions.as_mut().expect("registered")
    }
}

fn ba_status_of(msg: &MobilityMessage) -> u8 {
    match msg.body {
        MessageBody::BindingAck { status, .. } => status,
        ref other => panic!("expected a BA, got {other:?}"),
    }
}

/// A registered member 1 at `m1_ep()`.
fn ap_with_member() -> (AccessPoint, Instant, TestMember) {
    let (mut ap, now) = (ap(), t0());
    let mut m = TestMember::new(M1, m1_ep());
    m.register(&mut ap, now);
    events(&mut ap);
    (ap, now, m)
}

/// A shim as the AP sees it from the wire.
struct TestShim {
    ep: SocketAddr,
    instance: [u8; 8],
    index: u32,
    nonce: [u8; 16],
    dh: DhKeyPair,
    sessions: Option<PeerSessions>,
}

impl TestShim {
    fn new(ep: SocketAddr, drbg: &mut Drbg) -> TestShim {
        TestShim {
            ep,
            instance: [1; 8],
            index: drbg.session_index(),
            nonce: drbg.nonce16(),
            dh: DhKeyPair::generate(drbg),
            sessions: None,
        }
    }

    fn client(&self) -> Ipv6Addr {
        match self.ep.ip() {
            std::net::IpAddr::V6(a) => a,
            std::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
        }
    }

    fn hello(&self, cookie: [u8; 16]) -> Vec<u8> {
        unsealed_frame(
            None,
            &MobilityMessage::new(MessageBody::ShimHello {
                instance: self.instance,
                index: self.index,
                nonce: self.nonce,
                cookie,
                public: self.dh.public,
            }),
        )
    }

    /// Send a Hello; the one answer to our endpoint, if any.
    fn send_hello(
        &self,
        ap: &mut AccessPoint,
        now: Instant,
        cookie: [u8; 16],
    ) -> (DataAction, Option<MobilityMessage>) {
        let mut f = self.hello(cookie);
        let action = ap.handle_udp(now, self.ep, &mut f);
        let mut answers: Vec<_> = transmits(ap)
            .into_iter()
            .filter(|t| t.to == self.ep)
            .collect();
        assert!(answers.len() <= 1);
        (action, answers.pop().map(|t| unsealed(&t).1))
    }

    /// The full handshake; false if the AP sent no Welcome.
    fn handshake(&mut self, ap: &mut AccessPoint, now: Instant) -> bool {
        let (_, answer) = self.send_hello(ap, now, [0; 16]);
        let Some(MessageBody::ShimCookie { nonce, cookie }) = answer.map(|m| m.body) else {
            panic!("a Shim Cookie first");
        };
        assert_eq!(nonce, self.nonce, "echoes Ns");
        let (_, answer) = self.send_hello(ap, now, cookie);
        let Some(MessageBody::ShimWelcome {
            nonce,
            index,
            ap_nonce,
            public,
        }) = answer.map(|m| m.body)
        else {
            return false;
        };
        assert_eq!(nonce, self.nonce);
        let shared = self.dh.agree(&public).expect("contributory");
        let km = shim_ap_keys(
            &shared,
            &self.nonce,
            &ap_nonce,
            self.client(),
            self.index,
            index,
            &self.dh.public,
            &public,
        );
        self.sessions = Some(PeerSessions::new(Session::new(
            &km,
            Role::Initiator,
            self.index,
            index,
        )));
        true
    }

    fn sessions(&mut self) -> &mut PeerSessions {
        self.sessions.as_mut().expect("handshake done")
    }
}

fn shim_at(n: u16, seed: u64) -> TestShim {
    TestShim::new(
        SocketAddr::new(client(n).into(), 5555),
        &mut Drbg::from_u64(seed),
    )
}

// ---- registration ------------------------------------------------------

#[test]
fn registration_needs_a_cookie_round_trip_and_makes_a_session() {
    let (mut ap, now) = (ap(), t0());
    let mut m = TestMember::new(M1, m1_ep());
    let ba = m.send_bu(&mut ap, now);
    assert_eq!(ba_status_of(&ba), ba_status::RETRY_WITH_COOKIE);
    assert!(ba.cookie().is_some(), "202 carries a cookie");
    assert!(ba.authentication().is_some(), "202 is signed");
    assert!(ap.member(M1).is_none(), "202 creates nothing");
    assert!(events(&mut ap).is_empty());

    let ba = m.send_bu(&mut ap, now);
    assert_eq!(ba_status_of(&ba), ba_status::ACCEPTED);
    assert!(ba.session().is_some() && ba.cookie().is_some());
    assert_eq!(ap.member(M1).map(|e| e.care_of), Some(m1_ep()));
    assert_eq!(ap.counters().cookie_challenges, 1);

    // A refresh with the same Session keeps the session (same Ia, Na).
    let (ia, na) = ba.session().unwrap();
    let again = m.send_bu(&mut ap, at(now, 500));
    assert_eq!(again.session(), Some((ia, na)));
}

#[test]
fn the_heartbeat_brr_is_sealed_with_the_members_keys() {
    let (mut ap, now, mut m) = ap_with_member();
    run_until(&mut ap, now + DEFAULT_HEARTBEAT);
    let t = transmits(&mut ap);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].to, m1_ep());
    let mut frame = t[0].payload.clone();
    assert_ne!(
        frame[1] & crate::crypto::session::FLAG_ENCRYPTED,
        0,
        "E set"
    );
    let body = open(m.sessions(), &mut frame);
    let msg = MobilityMessage::parse(&body).unwrap();
    assert_eq!(msg.body, MessageBody::BindingRefreshRequest);
    assert_eq!(
        msg.authentication(),
        None,
        "sealed: no Authentication option"
    );
}

#[test]
fn a_replayed_bu_from_another_endpoint_gets_202_and_never_moves_the_member() {
    let (mut ap, now, mut m) = ap_with_member();
    // The attacker captured the member's last signed BU (cookie included).
    let captured = m.bu(KEY);
    let attacker = ep("[2001:db8:bad::1]:4790");
    let mut replay = captured.clone();
    assert_eq!(
        ap.handle_udp(at(now, 10), attacker, &mut replay),
        DataAction::Consumed
    );
    let t = transmits(&mut ap);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].to, attacker);
    let (_, ba) = unsealed(&t[0]);
    assert_eq!(ba_status_of(&ba), ba_status::RETRY_WITH_COOKIE);
    assert_eq!(ap.member(M1).map(|e| e.care_of), Some(m1_ep()));
    // With the fresh cookie it cannot re-sign: the MAC covers the cookie.
    assert!(events(&mut ap).is_empty());
}

#[test]
fn after_an_ap_restart_an_old_cookie_gets_202() {
    let (_, now, mut m) = ap_with_member();
    let mut restarted = ap_with(|c| c.seed = [8; 32]);
    let ba = m.send_bu(&mut restarted, at(now, 1000));
    assert_eq!(ba_status_of(&ba), ba_status::RETRY_WITH_COOKIE);
    assert!(restarted.member(M1).is_none());
    // The member retries at once with the new cookie and is back.
    m.register(&mut restarted, at(now, 1001));
    assert!(restarted.member(M1).is_some());
}

#[test]
fn a_key_registers_only_its_member_ids() {
    let (mut ap, now) = (
        ap_with(|c| c.keys[0].members = Some(vec![1..=1, 5..=9])),
        t0(),
    );
    let mut m2 = TestMember::new(M2, m2_ep());
    let ba = m2.send_bu(&mut ap, now);
    assert_eq!(
        ba_status_of(&ba),
        ba_status::ADMINISTRATIVELY_PROHIBITED,
        "signed 129"
    );
    assert!(ap.member(M2).is_none());
    let mut m7 = TestMember::new(MemberId(7), ep("[2001:db8:7::1]:4790"));
    m7.register(&mut ap, now);
    assert!(ap.member(MemberId(7)).is_some());
}

#[test]
fn wrong_key_is_refused_with_146_unsigned() {
    let (mut ap, now) = (ap(), t0());
    let mut m = TestMember::new(M1, m1_ep());
    let mut bu = m.bu(b"not-the-right-key");
    assert_eq!(ap.handle_udp(now, m1_ep(), &mut bu), DataAction::Consumed);
    let t = transmits(&mut ap);
    let (_, ba) = unsealed(&t[0]);
    assert_eq!(ba_status_of(&ba), ba_status::AUTHENTICATION_FAILED);
    assert_eq!(ba.authentication(), None);
    assert!(ap.member(M1).is_none());
}

#[test]
fn replayed_sequence_is_refused_with_135() {
    let (mut ap, now, mut m) = ap_with_member();
    m.seq -= 1;
    let ba = m.send_bu(&mut ap, at(now, 10));
    assert_eq!(ba_status_of(&ba), ba_status::SEQUENCE_OUT_OF_WINDOW);
    assert_eq!(ap.counters().drops.get(DropReason::Replay), 1);
}

// ---- sealed everything else ---------------------------------------------

#[test]
fn unsealed_frames_that_must_be_sealed_are_dropped_unauthenticated() {
    let (mut ap, now, _m) = ap_with_member();
    // Data from a spoofed legacy client's address, unsealed: nothing made.
    let spoofed = SocketAddr::new(client(1).into(), 4000);
    let mut data = unsealed_data(None, &tcp(v6(client(1), 4000), v6(HOA, 80), SYN, 1, 0));
    assert_eq!(
        ap.handle_udp(now, spoofed, &mut data),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    // The member's own address does not help either.
    let mut data = unsealed_data(Some(M1), &tcp(v6(HOA, 80), v6(client(1), 4000), ACK, 1, 1));
    assert_eq!(
        ap.handle_udp(now, m1_ep(), &mut data),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    for body in [
        MessageBody::BindingRefreshRequest,
        MessageBody::HomeTestInit { cookie: [7; 8] },
    ] {
        let mut f = unsealed_frame(None, &MobilityMessage::new(body).with(bid(M1)));
        assert_eq!(
            ap.handle_udp(now, spoofed, &mut f),
            DataAction::Drop(DropReason::Unauthenticated)
        );
    }
    assert_eq!(ap.shim_client_count(), 0);
    assert!(transmits(&mut ap).is_empty(), "no answer");
    assert!(events(&mut ap).is_empty());
}

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
fn a_sealed_frame_naming_no_session_gets_a_zero_shim_cookie_once_a_second() {
    let (mut ap, now) = (ap(), t0());
    let stranger = ep("[2001:db8:5::1]:7000");
    let mut f = unsealed_data(None, &tcp(v6(client(1), 1), v6(HOA, 80), SYN, 1, 0));
    f[4..8].copy_from_slice(&77u32.to_be_bytes());
    for _ in 0..3 {
        let mut g = f.clone();
        assert_eq!(
            ap.handle_udp(now, stranger, &mut g),
            DataAction::Drop(DropReason::UnknownPeer)
        );
    }
    let t = transmits(&mut ap);
    assert_eq!(t.len(), 1, "once per second");
    assert!(matches!(
        unsealed(&t[0]).1.body,
        MessageBody::ShimCookie { nonce, .. } if nonce == [0; 16]
    ));
    let mut g = f.clone();
    ap.handle_udp(at(now, 1000), stranger, &mut g);
    assert_eq!(transmits(&mut ap).len(), 1);
}

// ---- shim handshake -----------------------------------------------------

#[test]
fn a_hello_without_cookie_gets_a_cookie_and_creates_nothing() {
    let (mut ap, now) = (ap(), t0());
    let shim = shim_at(1, 1);
    let (action, answer) = shim.send_hello(&mut ap, now, [0; 16]);
    assert_eq!(action, DataAction::Consumed);
    assert!(matches!(
        answer.map(|m| m.body),
        Some(MessageBody::ShimCookie { nonce, .. }) if nonce == shim.nonce
    ));
    // The answer is smaller than the Hello (no amplification).
    assert!(
        unsealed_frame(
            None,
            &MobilityMessage::new(MessageBody::ShimCookie {
                nonce: [0; 16],
                cookie: [0; 16]
            })
        )
        .len()
            < shim.hello([0; 16]).len()
    );
    // A forged cookie: the same.
    let (_, answer) = shim.send_hello(&mut ap, now, [9; 16]);
    assert!(matches!(
        answer.map(|m| m.body),
        Some(MessageBody::ShimCookie { .. })
    ));
    assert_eq!(ap.shim_client_count(), 0);
    assert!(events(&mut ap).is_empty());
}

#[test]
fn the_shim_handshake_makes_a_session_and_a_retransmitted_hello_the_same_welcome() {
    let (mut ap, now) = (ap(), t0());
    let mut shim = shim_at(1, 1);
    assert!(shim.handshake(&mut ap, now));
    assert_eq!(ap.shim_client_count(), 1);
    assert_eq!(ap.counters().shim_handshakes, 1);
    // The cookie from before: the Hello again (lost Welcome).
    let cookie = ap.cookies.as_ref().unwrap().make(
        crate::crypto::CookieKind::ShimHello,
        shim.ep,
        &shim.nonce,
    );
    let (_, first) = shim.send_hello(&mut ap, at(now, 1000), cookie);
    let (_, second) = shim.send_hello(&mut ap, at(now, 2000), cookie);
    assert_eq!(first, second);
    assert!(matches!(
        first.map(|m| m.body),
        Some(MessageBody::ShimWelcome { .. })
    ));
    assert_eq!(ap.counters().shim_handshakes, 1, "no new session");
    // Its sealed keepalive refreshes it, with no answer.
    let keepalive = MobilityMessage::new(MessageBody::BindingRefreshRequest);
    let mut f = sealed_control(shim.sessions(), Protection::Encrypt, None, &keepalive).unwrap();
    assert_eq!(
        ap.handle_udp(at(now, 5000), shim.ep, &mut f),
        DataAction::Consumed
    );
    assert!(transmits(&mut ap).is_empty());
    assert_eq!(
        ap.shim_clients().next().map(|(_, s)| s.last_seen),
        Some(at(now, 5000))
    );
}

#[test]
fn a_low_order_public_key_is_refused() {
    let (mut ap, now) = (ap(), t0());
    let mut shim = shim_at(1, 1);
    shim.dh.public = [0; 32];
    assert!(!shim.handshake(&mut ap, now));
    assert_eq!(ap.shim_client_count(), 0);
}

#[test]
fn the_handshake_rate_is_limited() {
    let (mut ap, now) = (ap_with(|c| c.max_handshakes_per_second = 3), t0());
    let mut done = 0;
    for n in 1..=5 {
        if shim_at(n, n.into()).handshake(&mut ap, now) {
            done += 1;
        }
    }
    assert_eq!(done, 3);
    assert_eq!(ap.counters().limit_hits.handshake_rate, 2);
    assert!(
        shim_at(9, 9).handshake(&mut ap, at(now, 1000)),
        "next second"
    );
}

#[test]
fn one_prefix_keeps_at_most_64_shim_records() {
    let (mut ap, now) = (ap(), t0());
    let mut drbg = Drbg::from_u64(5);
    let dh = DhKeyPair::generate(&mut drbg);
    let mut welcomed = 0;
    for n in 0..20_000u32 {
        let addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, (n >> 16) as u16, n as u16);
        let mut shim = TestShim {
            ep: SocketAddr::new(addr.into(), 5555),
            instance: [2; 8],
            index: n + 1,
            nonce: [n as u8; 16],
            dh: dh.clone(),
            sessions: None,
        };
        // One new address every millisecond: under the handshake rate.
        if shim.handshake(&mut ap, now + Duration::from_millis(n.into())) {
            welcomed += 1;
        }
        assert!(ap.shim_client_count() <= 64);
    }
    assert_eq!(ap.shim_client_count(), 64);
    // The first 64 filled the prefix; after 10 s idle records were evicted
    // one by one; in between newcomers were refused.
    assert!(welcomed > 64 && welcomed < 20_000, "{welcomed}");
    assert!(ap.counters().limit_hits.shims_per_prefix > 0);
    assert!(ap.counters().drops.get(DropReason::Overflow) > 0);
    assert_eq!(ap.index.len(), 64, "evicted records leave no index behind");
    // Another prefix is not affected.
    assert!(shim_at(1, 1).handshake(&mut ap, now + Duration::from_secs(20)));
}

#[test]
fn the_global_limit_evicts_an_idle_record_or_refuses() {
    let (mut ap, now) = (ap_with(|c| c.max_shim_clients = 2), t0());
    assert!(shim_at(1, 1).handshake(&mut ap, now));
    assert!(shim_at(2, 2).handshake(&mut ap, at(now, 1)));
    assert!(
        !shim_at(3, 3).handshake(&mut ap, at(now, 5000)),
        "nobody idle"
    );
    assert!(shim_at(3, 3).handshake(&mut ap, now + EVICTABLE_IDLE));
    assert_eq!(ap.shim_client_count(), 2);
    assert!(
        ap.shim_clients().all(|(c, _)| *c != client(1)),
        "oldest evicted"
    );
    assert_eq!(ap.counters().limit_hits.shim_clients, 2);
}

// ---- relays ---------------------------------------------------------------

/// Member 1 registered and client 1's shim with a session; nothing queued.
fn ap_member_and_shim() -> (AccessPoint, Instant, TestMember, TestShim) {
    let (mut ap, now, m) = ap_with_member();
    let mut shim = shim_at(1, 1);
    assert!(shim.handshake(&mut ap, now));
    events(&mut ap);
    (ap, now, m, shim)
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
fn a_new_shim_instance_replaces_the_record_and_the_next_notice_carries_it() {
    let (mut ap, now, mut m, mut shim) = ap_member_and_shim();
    let syn = tcp(v6(client(1), 40000), v6(HOA, 80), SYN, 1, 0);
    let mut f = sealed_data(shim.sessions(), None, &syn);
    ap.handle_udp(now, shim.ep, &mut f);
    transmits(&mut ap);
    let mut again = shim_at(1, 2);
    again.instance = [3; 8];
    assert!(again.handshake(&mut ap, at(now, 100)));
    assert_eq!(ap.shim_client_count(), 1);
    let mut f = sealed_data(again.sessions(), None, &syn);
    assert_eq!(
        ap.handle_udp(at(now, 200), again.ep, &mut f),
        send_to(m1_ep())
    );
    let t = transmits(&mut ap);
    assert_eq!(t.len(), 1);
    let mut notice = t[0].payload.clone();
    let msg = MobilityMessage::parse(&open(m.sessions(), &mut notice)).unwrap();
    assert_eq!(msg.shim_instance(), Some([3; 8]));
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
    TestMember::new(M1, m1_ep()).register(&mut ap, now);
    let mut m2 = TestMember::new(M2, m2_ep());
    m2.register(&mut ap, now);
    let e = ap.member(M2).expect("registered");
    assert_eq!(e.effective_weight(), 0);
    assert_eq!(e.drained_by(), DrainedBy::only(DrainCause::Config));
    assert!(events(&mut ap).contains(&ApEvent::PolicyApplied {
        id: M2,
        weight: None,
        drain: true
    }));
    for n in 1..200 {
        let syn = tcp(v6(client(n), 40000), v6(HOA, 80), SYN, 1, 0);
        let mut frame = vec![0u8; HEADER_LEN];
        frame.extend_from_slice(&syn);
        frame.extend_from_slice(&[0u8; TAG_LEN]);
        let pkt = crate::engine::TunPacket::new(&mut frame).expect("room");
        assert_eq!(ap.handle_tun(now, pkt), send_to(m1_ep()));
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
    TestMember::new(M1, m1_ep()).register(&mut ap, now);
    TestMember::new(M2, m2_ep()).register(&mut ap, now);
    assert_eq!(ap.member(M1).map(MemberEntry::effective_weight), Some(5));
    ap.drain(now, M2, None).expect("registered");
    transmits(&mut ap);
    events(&mut ap);
    ap.set_member_policies(now, Vec::new());
    assert_eq!(ap.member(M1).map(MemberEntry::effective_weight), Some(100));
    let e = ap.member(M2).expect("registered");
    assert!(
        matches!(e.state, MemberState::Draining { by, .. } if by == DrainedBy::only(DrainCause::Operator))
    );
    ap.undrain(M2).expect("registered");
    assert_eq!(ap.member(M2).map(|m| m.state), Some(MemberState::Active));
}

#[test]
fn a_second_live_instance_of_an_id_is_refused_with_200() {
    let (mut ap, now, _m) = ap_with_member();
    let mut clash = TestMember::new(M1, m2_ep());
    clash.instance = 99;
    let ba = clash.send_bu(&mut ap, now);
    assert_eq!(ba_status_of(&ba), ba_status::RETRY_WITH_COOKIE);
    let ba = clash.send_bu(&mut ap, now);
    assert_eq!(ba_status_of(&ba), ba_status::MEMBER_ID_IN_USE);
    assert_eq!(ap.member(M1).map(|m| m.care_of), Some(m1_ep()));
}

#[test]
fn a_replaced_session_opens_during_its_grace_then_its_index_is_forgotten() {
    let (mut ap, now, mut m) = ap_with_member();
    let old_frame = sealed_data(
        m.sessions(),
        Some(M1),
        &tcp(v6(HOA, 80), v6(client(1), 1), ACK, 1, 1),
    );
    // A new Session (the member drew new values): a new AP session.
    m.nonce = [99; 16];
    m.index += 1;
    m.register(&mut ap, at(now, 100));
    assert_eq!(ap.index.len(), 2, "current and previous");
    let mut f = old_frame.clone();
    assert_eq!(
        ap.handle_udp(at(now, 200), m1_ep(), &mut f),
        DataAction::ToTun
    );
    run_until(&mut ap, at(now, 100) + crate::engine::sealed::SESSION_GRACE);
    assert_eq!(ap.index.len(), 1, "the previous index is gone");
}

#[test]
fn integrity_protection_sends_clear_payloads_and_accepts_both() {
    let (mut ap, now) = (ap_with(|c| c.protection = Protection::Integrity), t0());
    let mut m = TestMember::new(M1, m1_ep());
    m.register(&mut ap, now);
    let (c, h) = (v6(client(1), 40000), v6(HOA, 80));
    let syn = tcp(c, h, SYN, 1, 0);
    let mut frame = vec![0u8; HEADER_LEN];
    frame.extend_from_slice(&syn);
    frame.extend_from_slice(&[0; TAG_LEN]);
    assert_eq!(ap.handle_tun_frame(now, &mut frame), send_to(m1_ep()));
    assert_eq!(
        frame[1] & crate::crypto::session::FLAG_ENCRYPTED,
        0,
        "E clear"
    );
    assert_eq!(
        &frame[HEADER_LEN..HEADER_LEN + 40],
        &syn[..40],
        "clear payload"
    );
    let index = u32::from_be_bytes(frame[4..8].try_into().unwrap());
    m.sessions()
        .open(now, index, Protection::Integrity, &mut frame)
        .expect("authenticated");
    // An encrypted answer is accepted too.
    let mut answer = sealed_data(m.sessions(), Some(M1), &tcp(h, c, ACK, 1, 2));
    assert_eq!(ap.handle_udp(now, m1_ep(), &mut answer), DataAction::ToTun);
}

#[test]
fn an_encrypt_ap_refuses_frames_without_e() {
    let (mut ap, now, mut m) = ap_with_member();
    let (c, h) = (v6(client(1), 40000), v6(HOA, 80));
    let mut f = vec![0u8; HEADER_LEN];
    f.extend_from_slice(&tcp(h, c, ACK, 1, 2));
    f.extend_from_slice(&[0; TAG_LEN]);
    seal_data(m.sessions(), Protection::Integrity, Some(M1), &mut f).unwrap();
    assert_eq!(
        ap.handle_udp(now, m1_ep(), &mut f),
        DataAction::Drop(DropReason::AuthFailed)
    );
}
