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
use crate::engine::testutil::{ACK, HOA, SYN, at, bid, ep, run_until, t0, tcp, transmits, tun, v6};
use crate::engine::{to_units, verify_binding};
use crate::wire::inner;
use crate::wire::mh::{MessageBody, ba_status, revocation_trigger};
use crate::wire::{MobilityMessage, MobilityOption, TunnelHeader};

mod bindings;
mod data;
mod family;
mod handshake;
mod nat;
mod revocation;

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
    welcome_for(hello, ap_index, seed, CLIENT, local())
}

/// [`welcome`] giving client address `client`, having seen `observed`.
fn welcome_for(
    hello: &Hello,
    ap_index: u32,
    seed: u64,
    client: Ipv6Addr,
    observed: SocketAddr,
) -> (Vec<u8>, Session) {
    let (_, is, ns, _, shim_pub) = *hello;
    let mut drbg = crypto::Drbg::from_u64(seed);
    let pair = DhKeyPair::generate(&mut drbg);
    let na = drbg.nonce16();
    let shared = pair.agree(&shim_pub).expect("contributory");
    let keys = shim_ap_keys(
        &shared,
        &ns,
        &na,
        client,
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
        })
        .with(MobilityOption::Endpoint(observed))
        .with(MobilityOption::ClientAddress(client)),
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
        signed_binding_frame(self.id, &msg, kbm)
    }

    /// The one BA queued, checked for the member's Kbm signature.
    fn ba(&self, s: &mut Shim) -> MobilityMessage {
        let t = transmits(s);
        assert_eq!(t.len(), 1, "one BA: {t:?}");
        assert_eq!(t[0].to, care_of(self.id));
        assert!(
            verify_binding(&t[0].payload[HEADER_LEN..], &self.kbm),
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
