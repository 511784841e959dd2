//! The member engine alone: the AP's and the shims' frames and a virtual
//! clock in; BUs, tests, data actions and events out. The tests play the
//! AP and the shim with the crypto functions (same keys, sealing and
//! opening with `Session`).

use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::control::UNSEALED_MH;
use super::*;
use crate::crypto::session::{HEADER_LEN, TAG_LEN, session_index_of};
use crate::crypto::{self, Protection, Role, Session, Token, member_ap_keys, member_shim_keys};
use crate::engine::sealed::{PeerSessions, seal_data, sealed_control};
use crate::engine::testutil::{
    ACK, HOA, KEY, at, bid, ep, run_until, signed, t0, tcp, transmits, unsigned, v6,
};
use crate::engine::{DropReason, sign_binding, verify_binding, verify_registration};
use crate::wire::mh::{MessageBody, ba_status};
use crate::wire::{MemberId, MobilityMessage, MobilityOption};

mod data;
mod family;
mod flow_report;
mod limits;
mod multi_ap;
mod nat;
mod registration;
mod restart;
mod roaming;
mod route_optimization;
mod shim_peer;

use self::shim_peer::*;

const ID: MemberId = MemberId(1);
const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1);
const P: Protection = Protection::Encrypt;

fn ap_ep() -> SocketAddr {
    ep("[2001:db8:a::1]:4790")
}

fn care_of() -> SocketAddr {
    ep("[2001:db8:1::1]:4790")
}

fn shim_ep() -> SocketAddr {
    SocketAddr::new(CLIENT.into(), 5555)
}

fn client_ep(n: u16) -> (Ipv6Addr, SocketAddr) {
    let ip = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, n);
    (ip, SocketAddr::new(ip.into(), 5555))
}

fn config() -> MemberConfig {
    MemberConfig::new(ID, HOA, ap_ep(), care_of(), KEY.to_vec(), [7; 32])
}

fn member() -> Member {
    Member::new(config())
}

fn events(m: &mut Member) -> Vec<MemberEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

/// The Mobility Header of an unsealed control transmit.
fn unsealed_mh(t: &Transmit) -> &[u8] {
    &t.payload[UNSEALED_MH..]
}

fn unsealed_msg(t: &Transmit) -> MobilityMessage {
    MobilityMessage::parse(unsealed_mh(t)).expect("mobility header")
}

/// A registration BU as sent: sequence, lifetime, Session, Cookie.
#[derive(Debug)]
struct Bu {
    seq: u16,
    lifetime: u16,
    session: (u32, [u8; 16]),
    cookie: Option<[u8; 16]>,
}

/// The one registration BU queued.
fn registration_bu(m: &mut Member) -> Bu {
    let t = transmits(m);
    assert_eq!(t.len(), 1, "one BU: {t:?}");
    assert_eq!(t[0].to, ap_ep());
    parse_bu(&t[0])
}

/// A registration BU transmit, checked (signed, Authentication last).
fn parse_bu(t: &Transmit) -> Bu {
    assert!(verify_registration(unsealed_mh(t), KEY, HOA), "signed");
    let msg = unsealed_msg(t);
    // Session and Cookie come before the Authentication option (last).
    let auth_at = msg
        .options
        .iter()
        .position(|o| matches!(o, MobilityOption::Authentication { .. }));
    assert_eq!(auth_at, Some(msg.options.len() - 1), "Auth last: {msg:?}");
    match msg.body {
        MessageBody::BindingUpdate {
            sequence,
            home: true,
            ack: true,
            lifetime,
        } => Bu {
            seq: sequence,
            lifetime,
            session: msg.session().expect("Session option"),
            cookie: msg.cookie(),
        },
        other => panic!("expected a registration BU, got {other:?}"),
    }
}

/// The AP side of the member - AP session.
struct Ap {
    sessions: PeerSessions,
    theirs: (u32, [u8; 16]),
}

impl Ap {
    /// The AP's session for `bu` with its Session {Ia, Na}.
    fn new(bu: &Bu, ia: u32, na: [u8; 16]) -> Ap {
        let (im, nm) = bu.session;
        let keys = member_ap_keys(KEY, &nm, &na, ID.0, config().instance, im, ia);
        Ap {
            sessions: PeerSessions::new(Session::new(&keys, Role::Responder, ia, im)),
            theirs: (ia, na),
        }
    }

    /// A sealed control frame from the AP.
    fn seal(&mut self, msg: MobilityMessage) -> Vec<u8> {
        sealed_control(&mut self.sessions, P, Some(ID), &msg).expect("sealed")
    }

    /// A sealed data frame from the AP carrying `packet`.
    fn data(&mut self, packet: &[u8]) -> Vec<u8> {
        sealed_frame(&mut self.sessions, packet)
    }

    /// Opens a sealed transmit of the member: its body.
    fn open(&mut self, t: &Transmit) -> Vec<u8> {
        open_frame(&mut self.sessions, &t.payload)
    }
}

fn sealed_frame(sessions: &mut PeerSessions, packet: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HEADER_LEN + packet.len() + TAG_LEN];
    f[HEADER_LEN..HEADER_LEN + packet.len()].copy_from_slice(packet);
    seal_data(sessions, P, Some(ID), &mut f).expect("sealed");
    f
}

fn open_frame(sessions: &mut PeerSessions, frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let index = session_index_of(&f).expect("v2 frame");
    assert_ne!(index, 0, "sealed frame expected");
    sessions
        .open(t0(), index, P, &mut f)
        .expect("opens in the session");
    f[HEADER_LEN..f.len() - TAG_LEN].to_vec()
}

/// The AP's signed BA for `seq` with extra options.
fn ba_with(status: u8, seq: u16, lifetime: u16, opts: &[MobilityOption]) -> Vec<u8> {
    let mut msg = MobilityMessage::new(MessageBody::BindingAck {
        status,
        sequence: seq,
        lifetime,
    })
    .with(bid(ID))
    .with(MobilityOption::HomeAddress(HOA));
    for o in opts {
        msg = msg.with(o.clone());
    }
    signed(ID, msg, KEY)
}

const COOKIE_1: [u8; 16] = [0xc1; 16];
const COOKIE_2: [u8; 16] = [0xc2; 16];

/// The AP's BA 0 for `bu`, making the session (Ia, Na).
fn accept(m: &mut Member, now: Instant, bu: &Bu, ia: u32, na: [u8; 16]) -> Ap {
    accept_from(m, now, ap_ep(), bu, ia, na)
}

/// The BA 0 of the AP at `from` for `bu`, making the session (Ia, Na).
fn accept_from(
    m: &mut Member,
    now: Instant,
    from: SocketAddr,
    bu: &Bu,
    ia: u32,
    na: [u8; 16],
) -> Ap {
    let ap = Ap::new(bu, ia, na);
    let opts = [
        MobilityOption::Session {
            index: ia,
            nonce: na,
        },
        MobilityOption::Cookie(COOKIE_2),
    ];
    assert_eq!(
        m.handle_udp(now, from, &mut ba_with(0, bu.seq, 15, &opts)),
        DataAction::Consumed
    );
    ap
}

/// A member registered at `now` (lifetime 60 s) and the AP's session;
/// nothing queued.
fn registered(now: Instant) -> (Member, Ap) {
    registered_with(config(), now)
}

fn registered_with(config: MemberConfig, now: Instant) -> (Member, Ap) {
    let mut m = Member::new(config);
    m.start(now);
    let bu = registration_bu(&mut m);
    let ap = accept(&mut m, now, &bu, 0xa1, [0xa1; 16]);
    events(&mut m);
    (m, ap)
}

/// A packet from CLIENT for the HoA.
fn inbound() -> Vec<u8> {
    tcp(v6(CLIENT, 40000), v6(HOA, 80), ACK, 1, 1)
}

/// An ICMPv6 echo request from CLIENT for the HoA: data that keeps an AP
/// from being silent without making a legacy flow (only TCP and UDP flows
/// are tracked and reported).
fn ping() -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&8u16.to_be_bytes());
    p[6] = 58;
    p[7] = 64;
    p[8..24].copy_from_slice(&CLIENT.octets());
    p[24..40].copy_from_slice(&HOA.octets());
    p[40] = 128;
    p
}

/// An answer from the HoA to CLIENT.
fn answer() -> Vec<u8> {
    tcp(v6(HOA, 80), v6(CLIENT, 40000), ACK, 1, 1)
}

/// Hand `packet` to the member as a TUN read; the action and, on `Send`,
/// the sealed datagram it made (destination, header | packet | tag).
fn tun_out(
    m: &mut Member,
    now: Instant,
    packet: &mut [u8],
) -> (DataAction, Option<(SocketAddr, Vec<u8>)>) {
    let mut frame = [&[0xee; HEADER_LEN][..], packet, &[0xee; TAG_LEN][..]].concat();
    let pkt = crate::engine::TunPacket::new(&mut frame).expect("room");
    match m.handle_tun(now, pkt) {
        DataAction::Send { to } => (DataAction::Send { to }, Some((to, frame))),
        action => (action, None),
    }
}

/// A sealed Shim Notice from the AP for `client`, shim process `instance`.
fn shim_notice(ap: &mut Ap, client: Ipv6Addr, shim: SocketAddr, instance: u8) -> Vec<u8> {
    ap.seal(
        MobilityMessage::new(MessageBody::ShimNotice { client, shim })
            .with(bid(ID))
            .with(MobilityOption::ShimInstance([instance; 8])),
    )
}

/// A Shim Notice for CLIENT: the member sends the HoTI (sealed, via the
/// AP) and nothing else; returns its cookie.
fn notice(m: &mut Member, ap: &mut Ap, now: Instant, instance: u8) -> Token {
    assert_eq!(
        m.handle_udp(
            now,
            ap_ep(),
            &mut shim_notice(ap, CLIENT, shim_ep(), instance)
        ),
        DataAction::Consumed
    );
    hoti(m, ap)
}

/// The one HoTI queued (sealed to the AP): its cookie.
fn hoti(m: &mut Member, ap: &mut Ap) -> Token {
    let t = transmits(m);
    assert_eq!(t.len(), 1, "the HoTI alone (no CoTI before the HoT): {t:?}");
    assert_eq!(t[0].to, ap_ep());
    let msg = MobilityMessage::parse(&ap.open(&t[0])).unwrap();
    assert_eq!(msg.correspondent(), Some(CLIENT));
    assert_eq!(msg.authentication(), None, "sealed: no Auth option");
    let MessageBody::HomeTestInit { cookie } = msg.body else {
        panic!("expected a HoTI, got {msg:?}");
    };
    cookie
}
