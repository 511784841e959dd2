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
mod limits;
mod registration;
mod route_optimization;

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
    assert!(verify_registration(unsealed_mh(&t[0]), KEY, HOA), "signed");
    let msg = unsealed_msg(&t[0]);
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
    let ap = Ap::new(bu, ia, na);
    let opts = [
        MobilityOption::Session {
            index: ia,
            nonce: na,
        },
        MobilityOption::Cookie(COOKIE_2),
    ];
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut ba_with(0, bu.seq, 15, &opts)),
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

const HOME_TOKEN: Token = [0x11; 8];
const CARE_OF_TOKEN: Token = [0x22; 8];
const TICKET: Token = [0x44; 8];

fn home_test_msg(cookie: Token, ticket: Option<Token>) -> MobilityMessage {
    let mut msg = MobilityMessage::new(MessageBody::HomeTest {
        nonce_index: 5,
        cookie,
        token: HOME_TOKEN,
    })
    .with(bid(ID))
    .with(MobilityOption::HomeAddress(HOA))
    .with(MobilityOption::Correspondent(CLIENT));
    if let Some(ticket) = ticket {
        msg = msg.with(MobilityOption::CareOfTicket {
            nonce_index: 5,
            ticket,
        });
    }
    msg
}

/// The relayed HoT: the member answers with the CoTI (Binding ID, the
/// ticket); returns its cookie.
fn home_test(m: &mut Member, ap: &mut Ap, now: Instant, cookie: Token) -> Token {
    assert_eq!(
        m.handle_udp(
            now,
            ap_ep(),
            &mut ap.seal(home_test_msg(cookie, Some(TICKET)))
        ),
        DataAction::Consumed
    );
    coti(m)
}

/// The one CoTI queued (unsealed, to the shim): its cookie.
fn coti(m: &mut Member) -> Token {
    let t = transmits(m);
    assert_eq!(t.len(), 1, "one CoTI: {t:?}");
    assert_eq!(t[0].to, shim_ep());
    let msg = unsealed_msg(&t[0]);
    assert_eq!(msg.binding_id().map(|b| b.0), Some(ID));
    assert_eq!(msg.care_of_ticket(), Some((5, TICKET)));
    let MessageBody::CareOfTestInit { cookie } = msg.body else {
        panic!("expected a CoTI, got {msg:?}");
    };
    cookie
}

fn care_of_test(cookie: Token, token: Token) -> Vec<u8> {
    let msg = MobilityMessage::new(MessageBody::CareOfTest {
        nonce_index: 6,
        cookie,
        token,
    });
    unsigned(None, &msg)
}

/// The RO BU the member sent to the shim: its sequence number and
/// Session, checked against Kbm(HOME_TOKEN, `care_of_token`).
fn binding_update(
    m: &mut Member,
    care_of_token: Token,
    from: SocketAddr,
) -> (u16, (u32, [u8; 16])) {
    let t = transmits(m);
    assert_eq!(t.len(), 1, "one BU: {t:?}");
    assert_eq!(t[0].to, shim_ep());
    let kbm = crypto::kbm(&HOME_TOKEN, &care_of_token);
    assert!(verify_binding(unsealed_mh(&t[0]), &kbm, from, shim_ep()));
    let msg = unsealed_msg(&t[0]);
    assert_eq!(msg.nonce_indices(), Some((5, 6)));
    assert!(
        matches!(
            msg.options.last(),
            Some(MobilityOption::BindingAuthorization(_))
        ),
        "BAD last"
    );
    let session = msg.session().expect("Session in the RO BU");
    match msg.body {
        MessageBody::BindingUpdate {
            sequence,
            home: false,
            ..
        } => (sequence, session),
        other => panic!("expected a BU, got {other:?}"),
    }
}

/// The shim side of a member - shim session.
struct Shim {
    sessions: PeerSessions,
}

/// The shim's BA 0 with Session {Is, Ns}, signed with Kbm for the member
/// at `care_of`, and the shim's session.
fn shim_ba(
    seq: u16,
    member_session: (u32, [u8; 16]),
    care_of_token: Token,
    care_of: SocketAddr,
    is: u32,
) -> (Vec<u8>, Shim) {
    let ns = [is as u8; 16];
    let msg = MobilityMessage::new(MessageBody::BindingAck {
        status: 0,
        sequence: seq,
        lifetime: 30,
    })
    .with(MobilityOption::Session {
        index: is,
        nonce: ns,
    })
    .with(MobilityOption::BindingAuthorization([0; 12]));
    let mut frame = unsigned(Some(ID), &msg);
    let kbm = crypto::kbm(&HOME_TOKEN, &care_of_token);
    sign_binding(&mut frame, &kbm, care_of, shim_ep());
    let (im, nm) = member_session;
    let keys = member_shim_keys(&kbm, &nm, &ns, ID.0, im, is);
    let shim = Shim {
        sessions: PeerSessions::new(Session::new(&keys, Role::Responder, is, im)),
    };
    (frame, shim)
}

/// A registered member bound to CLIENT's shim (instance 1), the AP and
/// the shim; nothing queued.
fn bound(now: Instant) -> (Member, Ap, Shim) {
    let (mut m, mut ap) = registered(now);
    let shim = bind(&mut m, &mut ap, now);
    (m, ap, shim)
}

/// Bind CLIENT's shim (instance 1) from its Shim Notice on.
fn bind(m: &mut Member, ap: &mut Ap, now: Instant) -> Shim {
    let home_cookie = notice(m, ap, now, 1);
    let care_of_cookie = home_test(m, ap, now, home_cookie);
    m.handle_udp(
        now,
        shim_ep(),
        &mut care_of_test(care_of_cookie, CARE_OF_TOKEN),
    );
    let (seq, session) = binding_update(m, CARE_OF_TOKEN, care_of());
    let (mut frame, shim) = shim_ba(seq, session, CARE_OF_TOKEN, care_of(), 0x5a);
    assert_eq!(
        m.handle_udp(now, shim_ep(), &mut frame),
        DataAction::Consumed
    );
    shim
}
