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

fn ba(status: u8, seq: u16, lifetime: u16) -> Vec<u8> {
    ba_with(status, seq, lifetime, &[])
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

#[test]
fn registration_is_sent_at_start_retransmitted_and_refreshed_on_its_timer() {
    let (mut m, now) = (member(), t0());
    assert_eq!(m.state(), RegistrationState::Idle);
    m.start(now);
    let bu = registration_bu(&mut m);
    assert_eq!(bu.lifetime, 15, "60 s in 4-second units");
    assert_eq!(bu.cookie, None, "no cookie yet");
    assert_eq!(m.state(), RegistrationState::Registering);
    // No BA: the same BU again after the initial retransmission timeout.
    run_until(&mut m, now + DEFAULT_INITIAL_RETRANSMIT);
    let again = registration_bu(&mut m);
    assert_eq!((again.seq, again.session), (bu.seq, bu.session));

    let then = at(now, 1_100);
    let mut ap = accept(&mut m, then, &bu, 9, [9; 16]);
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
    // The AP's heartbeats keep the member from the silence rule.
    let mut t = then;
    while t + Duration::from_secs(1) < then + DEFAULT_LIFETIME * 3 / 4 {
        t += Duration::from_secs(1);
        run_until(&mut m, t);
        m.handle_udp(t, ap_ep(), &mut ap.data(&inbound()));
    }
    run_until(
        &mut m,
        then + DEFAULT_LIFETIME * 3 / 4 - Duration::from_millis(1),
    );
    assert!(
        transmits(&mut m).is_empty(),
        "nothing before the refresh point"
    );
    run_until(&mut m, then + DEFAULT_LIFETIME * 3 / 4);
    let refresh = registration_bu(&mut m);
    assert_eq!(refresh.seq, bu.seq.wrapping_add(1));
    assert_eq!(
        refresh.session, bu.session,
        "Session drawn once per process"
    );
    assert_eq!(refresh.cookie, Some(COOKIE_2), "the newest cookie");
}

#[test]
fn a_signed_202_makes_a_new_bu_with_the_cookie_at_once() {
    let (mut m, now) = (member(), t0());
    m.start(now);
    let bu = registration_bu(&mut m);
    // For another sequence number: a replay, ignored.
    let cookie = [MobilityOption::Cookie(COOKIE_1)];
    assert_eq!(
        m.handle_udp(
            now,
            ap_ep(),
            &mut ba_with(202, bu.seq.wrapping_add(5), 0, &cookie)
        ),
        DataAction::Drop(DropReason::Replay)
    );
    assert!(transmits(&mut m).is_empty());
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut ba_with(202, bu.seq, 0, &cookie)),
        DataAction::Consumed
    );
    let again = registration_bu(&mut m);
    assert_eq!(again.seq, bu.seq.wrapping_add(1), "a new sequence number");
    assert_eq!(again.cookie, Some(COOKIE_1));
    assert_eq!(again.session, bu.session);
    assert_eq!(m.state(), RegistrationState::Registering);
    // An unsigned 202 is nothing.
    let msg = MobilityMessage::new(MessageBody::BindingAck {
        status: 202,
        sequence: again.seq,
        lifetime: 0,
    })
    .with(bid(ID))
    .with(MobilityOption::Cookie(COOKIE_2));
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut unsigned(Some(ID), &msg)),
        DataAction::Drop(DropReason::AuthFailed)
    );
    assert!(transmits(&mut m).is_empty());
    accept(&mut m, now, &again, 3, [3; 16]);
    assert!(matches!(m.state(), RegistrationState::Registered { .. }));
}

#[test]
fn the_ba_session_opens_sealed_frames_from_the_ap_and_a_brr_triggers_a_bu() {
    let now = t0();
    let (mut m, mut ap) = registered(now);
    let brr = MobilityMessage::new(MessageBody::BindingRefreshRequest).with(bid(ID));
    // Unsealed (even signed, as v1 had it): dropped.
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut signed(ID, brr.clone(), KEY)),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    assert!(transmits(&mut m).is_empty());
    let mut frame = ap.seal(brr);
    // From any endpoint: the session authenticates it.
    assert_eq!(
        m.handle_udp(now, ep("[2001:db8:a::9]:1"), &mut frame.clone()),
        DataAction::Consumed
    );
    assert_eq!(registration_bu(&mut m).cookie, Some(COOKIE_2));
    // The same frame again is a replay.
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut frame),
        DataAction::Drop(DropReason::Replay)
    );
    // A forged frame under our index does not open.
    let mut forged = ap.seal(MobilityMessage::new(MessageBody::BindingRefreshRequest));
    let n = forged.len();
    forged[n - 1] ^= 1;
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut forged),
        DataAction::Drop(DropReason::AuthFailed)
    );
    assert_eq!(m.counters().drops.get(DropReason::Unauthenticated), 1);
}

#[test]
fn a_new_ap_session_replaces_the_old_one() {
    let now = t0();
    let (mut m, mut old) = registered(now);
    // The AP restarted: the refresh BU meets a new session.
    m.handle_udp(
        now,
        ap_ep(),
        &mut old.seal(MobilityMessage::new(MessageBody::BindingRefreshRequest)),
    );
    let bu = registration_bu(&mut m);
    let mut new = accept(&mut m, now, &bu, 0xb2, [0xb2; 16]);
    assert_ne!(new.theirs, old.theirs);
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut new.data(&inbound())),
        DataAction::ToTun
    );
    // Answers go sealed in the new session.
    let (action, out) = tun_out(&mut m, now, &mut answer());
    assert_eq!(action, DataAction::Send { to: ap_ep() });
    let (to, frame) = out.expect("sealed answer");
    assert_eq!(to, ap_ep());
    let mut f = frame.clone();
    let idx = session_index_of(&f).unwrap();
    assert_eq!(idx, 0xb2, "the AP's new index");
    new.sessions.open(now, idx, P, &mut f).unwrap();
    assert_eq!(&f[HEADER_LEN..f.len() - TAG_LEN], &answer()[..]);
}

#[test]
fn forged_unsigned_146_never_refuses() {
    let (mut m, now) = (member(), t0());
    m.start(now);
    let bu = registration_bu(&mut m);
    let refusal = |seq| {
        let msg = MobilityMessage::new(MessageBody::BindingAck {
            status: ba_status::AUTHENTICATION_FAILED,
            sequence: seq,
            lifetime: 0,
        })
        .with(bid(ID));
        unsigned(Some(ID), &msg)
    };
    // An off-path sender does not know the sequence number.
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut refusal(bu.seq.wrapping_add(9))),
        DataAction::Drop(DropReason::AuthFailed)
    );
    for _ in 0..1000 {
        assert_eq!(
            m.handle_udp(now, ap_ep(), &mut refusal(bu.seq)),
            DataAction::Consumed
        );
    }
    assert_eq!(m.state(), RegistrationState::Registering);
    assert_eq!(m.counters().auth_failures_reported, 1000);
    assert!(
        events(&mut m)
            .iter()
            .all(|e| *e == MemberEvent::AuthFailureReported)
    );
    // The member keeps retrying with its backoff.
    run_until(&mut m, now + DEFAULT_INITIAL_RETRANSMIT);
    assert_eq!(registration_bu(&mut m).seq, bu.seq);
    run_until(&mut m, now + DEFAULT_INITIAL_RETRANSMIT * 3);
    assert_eq!(registration_bu(&mut m).seq, bu.seq);
}

#[test]
fn signed_refusals_stay_final() {
    let (mut m, now) = (member(), t0());
    m.start(now);
    let bu = registration_bu(&mut m);
    m.handle_udp(now, ap_ep(), &mut ba(129, bu.seq, 0));
    assert_eq!(m.state(), RegistrationState::Refused { status: 129 });
    assert_eq!(
        events(&mut m),
        [MemberEvent::RegistrationRefused { status: 129 }]
    );
    run_until(&mut m, now + Duration::from_secs(600));
    assert!(transmits(&mut m).is_empty());
}

#[test]
fn a_ba_0_without_session_is_not_a_registration() {
    let (mut m, now) = (member(), t0());
    m.start(now);
    let bu = registration_bu(&mut m);
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut ba(0, bu.seq, 15)),
        DataAction::Drop(DropReason::Malformed)
    );
    assert_eq!(m.state(), RegistrationState::Registering);
}

#[test]
fn ap_silence_re_registers_at_once() {
    let now = t0();
    let (mut m, mut ap) = registered(now);
    // Sealed frames from the AP keep it quiet...
    let t1 = at(now, 2_000);
    run_until(&mut m, t1);
    m.handle_udp(t1, ap_ep(), &mut ap.data(&inbound()));
    run_until(&mut m, t1 + DEFAULT_AP_SILENCE - Duration::from_millis(1));
    assert!(transmits(&mut m).is_empty());
    // ...three seconds without one: a new BU at once.
    run_until(&mut m, t1 + DEFAULT_AP_SILENCE);
    let bu = registration_bu(&mut m);
    // The restarted AP asks for a cookie, then accepts with a new session.
    let t2 = t1 + DEFAULT_AP_SILENCE;
    m.handle_udp(
        t2,
        ap_ep(),
        &mut ba_with(202, bu.seq, 0, &[MobilityOption::Cookie(COOKIE_1)]),
    );
    let bu = registration_bu(&mut m);
    assert_eq!(bu.cookie, Some(COOKIE_1));
    let mut new = accept(&mut m, t2, &bu, 0x77, [0x77; 16]);
    assert_eq!(
        m.handle_udp(t2, ap_ep(), &mut new.data(&inbound())),
        DataAction::ToTun
    );
}

#[test]
fn unsealed_frames_from_the_ap_are_dropped() {
    let now = t0();
    let (mut m, _ap) = registered(now);
    let notice = MobilityMessage::new(MessageBody::ShimNotice {
        client: CLIENT,
        shim: shim_ep(),
    })
    .with(bid(ID))
    .with(MobilityOption::ShimInstance([1; 8]));
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut signed(ID, notice, KEY)),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    assert_eq!(m.correspondents().count(), 0, "no state");
    let brr = MobilityMessage::new(MessageBody::BindingRefreshRequest).with(bid(ID));
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut unsigned(Some(ID), &brr)),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    let mut data = crate::engine::testutil::data_frame(Some(ID), &inbound());
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut data),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    assert!(transmits(&mut m).is_empty(), "nothing answered");
    assert_eq!(m.counters().drops.get(DropReason::Unauthenticated), 3);
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

#[test]
fn the_coti_goes_only_after_the_hot_with_its_ticket() {
    let now = t0();
    let (mut m, mut ap) = registered(now);
    let home_cookie = notice(&mut m, &mut ap, now, 1);
    assert_eq!(
        events(&mut m),
        [MemberEvent::ReturnRoutabilityStarted { client: CLIENT }]
    );
    // A HoT without a ticket gives nothing to show the shim.
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut ap.seal(home_test_msg(home_cookie, None))),
        DataAction::Drop(DropReason::Malformed)
    );
    // An unsealed HoT (v1 style) is dropped.
    assert_eq!(
        m.handle_udp(
            now,
            ap_ep(),
            &mut signed(ID, home_test_msg(home_cookie, Some(TICKET)), KEY)
        ),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    assert!(transmits(&mut m).is_empty(), "still no CoTI");
    // The HoTI is retransmitted while the HoT is missing.
    run_until(&mut m, now + DEFAULT_INITIAL_RETRANSMIT);
    assert_eq!(hoti(&mut m, &mut ap), home_cookie);
    let care_of_cookie = home_test(&mut m, &mut ap, now, home_cookie);
    // A care-of test with the wrong cookie is not ours.
    assert_eq!(
        m.handle_udp(now, shim_ep(), &mut care_of_test([0; 8], CARE_OF_TOKEN)),
        DataAction::Drop(DropReason::AuthFailed)
    );
    m.handle_udp(
        now,
        shim_ep(),
        &mut care_of_test(care_of_cookie, CARE_OF_TOKEN),
    );
    binding_update(&mut m, CARE_OF_TOKEN, care_of());
}

#[test]
fn the_ro_ba_session_carries_sealed_direct_data_both_ways() {
    let now = t0();
    let (mut m, mut ap, mut shim) = bound(now);
    assert!(matches!(
        events(&mut m).last(),
        Some(MemberEvent::RouteOptimized { client: CLIENT, .. })
    ));
    // Answers go sealed to the shim.
    let (_, out) = tun_out(&mut m, now, &mut answer());
    let (to, frame) = out.expect("sealed answer");
    assert_eq!(to, shim_ep());
    assert_eq!(open_frame(&mut shim.sessions, &frame), answer());
    assert_eq!(m.counters().direct_out, 1);
    // Sealed data from the shim opens and goes to the TUN.
    let mut f = sealed_frame(&mut shim.sessions, &inbound());
    assert_eq!(m.handle_udp(now, shim_ep(), &mut f), DataAction::ToTun);
    assert_eq!(
        &f[HEADER_LEN..f.len() - TAG_LEN],
        &inbound()[..],
        "opened in place"
    );
    assert_eq!(m.counters().direct_in, 1);
    // Its inner source must be the client.
    let other = tcp(v6(client_ep(9).0, 40000), v6(HOA, 80), ACK, 1, 1);
    assert_eq!(
        m.handle_udp(
            now,
            shim_ep(),
            &mut sealed_frame(&mut shim.sessions, &other)
        ),
        DataAction::Drop(DropReason::SpoofedSource)
    );
    // Unsealed data from the shim: dropped, and no Binding Error.
    let mut plain = crate::engine::testutil::data_frame(Some(ID), &inbound());
    assert_eq!(
        m.handle_udp(now, shim_ep(), &mut plain),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    // A sealed frame naming an index we do not have: no answer either.
    let mut stranger = ap.data(&inbound());
    stranger[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    assert_eq!(
        m.handle_udp(now, ep("[2001:db8:d::1]:9"), &mut stranger),
        DataAction::Drop(DropReason::UnknownPeer)
    );
    assert!(transmits(&mut m).is_empty(), "no Binding Error sent");
}

#[test]
fn an_unsealed_binding_error_is_ignored() {
    let now = t0();
    let (mut m, _ap, _shim) = bound(now);
    events(&mut m);
    let be = MobilityMessage::new(MessageBody::BindingError {
        status: crate::wire::mh::be_status::UNKNOWN_BINDING,
        home_address: HOA,
    });
    assert_eq!(
        m.handle_udp(now, shim_ep(), &mut unsigned(None, &be)),
        DataAction::Drop(DropReason::Unauthenticated)
    );
    let c = m.correspondents().next().expect("still there");
    assert!(c.binding.is_some(), "binding kept");
    assert!(events(&mut m).is_empty());
    assert!(transmits(&mut m).is_empty());
}

#[test]
fn a_new_shim_instance_resets_return_routability() {
    let now = t0();
    let (mut m, mut ap, mut old_shim) = bound(now);
    events(&mut m);
    // The same instance again: nothing to do.
    m.handle_udp(
        now,
        ap_ep(),
        &mut shim_notice(&mut ap, CLIENT, shim_ep(), 1),
    );
    assert!(transmits(&mut m).is_empty());
    // A new shim process: state dropped, RR again from the HoTI.
    m.handle_udp(
        now,
        ap_ep(),
        &mut shim_notice(&mut ap, CLIENT, shim_ep(), 2),
    );
    let cookie = hoti(&mut m, &mut ap);
    let c = m.correspondents().next().unwrap();
    assert!(c.binding.is_none());
    assert!(matches!(c.rr, RoState::Testing { .. }));
    // The old session is gone: its frames name no session any more.
    assert_eq!(
        m.handle_udp(
            now,
            shim_ep(),
            &mut sealed_frame(&mut old_shim.sessions, &inbound())
        ),
        DataAction::Drop(DropReason::UnknownPeer)
    );
    // Answers go through the AP meanwhile.
    let (_, out) = tun_out(&mut m, now, &mut answer());
    assert_eq!(out.expect("sealed").0, ap_ep());
    // And the new run binds with a new session.
    let care_of_cookie = home_test(&mut m, &mut ap, now, cookie);
    m.handle_udp(
        now,
        shim_ep(),
        &mut care_of_test(care_of_cookie, CARE_OF_TOKEN),
    );
    let (seq, session) = binding_update(&mut m, CARE_OF_TOKEN, care_of());
    let (mut frame, mut shim) = shim_ba(seq, session, CARE_OF_TOKEN, care_of(), 0x6b);
    assert_eq!(
        m.handle_udp(now, shim_ep(), &mut frame),
        DataAction::Consumed
    );
    let (_, out) = tun_out(&mut m, now, &mut answer());
    let (to, frame) = out.unwrap();
    assert_eq!(to, shim_ep());
    assert_eq!(open_frame(&mut shim.sessions, &frame), answer());
}

#[test]
fn the_correspondent_table_evicts_the_unproven_first() {
    let now = t0();
    let mut config = config();
    config.max_correspondents = 2;
    let (mut m, mut ap) = registered_with(config, now);
    // CLIENT bound, client 2 still testing.
    bind(&mut m, &mut ap, now);
    let (c2, s2) = client_ep(2);
    let t1 = at(now, 10);
    m.handle_udp(t1, ap_ep(), &mut shim_notice(&mut ap, c2, s2, 2));
    transmits(&mut m);
    // Client 3 arrives: the unproven client 2 goes, although more recent.
    let (c3, s3) = client_ep(3);
    let t2 = at(now, 20);
    m.handle_udp(t2, ap_ep(), &mut shim_notice(&mut ap, c3, s3, 3));
    let mut clients: Vec<_> = m.correspondents().map(|c| c.client).collect();
    clients.sort();
    assert_eq!(clients, [CLIENT, c3]);
    assert_eq!(m.counters().limit_hits.correspondents, 1);
    // Client 2 again: now client 3 is the unproven one.
    transmits(&mut m);
    m.handle_udp(at(now, 30), ap_ep(), &mut shim_notice(&mut ap, c2, s2, 2));
    let mut clients: Vec<_> = m.correspondents().map(|c| c.client).collect();
    clients.sort();
    assert_eq!(clients, [CLIENT, c2]);
    assert_eq!(m.counters().limit_hits.correspondents, 2);
    assert_eq!(
        m.counters().limit_hits.iter().collect::<Vec<_>>(),
        [("correspondents", 2)]
    );

    // All bound: the least recently active goes.
    let mut config = self::config();
    config.max_correspondents = 1;
    let (mut m, mut ap) = registered_with(config, now);
    bind(&mut m, &mut ap, now);
    m.handle_udp(t1, ap_ep(), &mut shim_notice(&mut ap, c2, s2, 2));
    assert_eq!(
        m.correspondents().map(|c| c.client).collect::<Vec<_>>(),
        [c2]
    );
    // A zero-size table takes nobody.
    let mut config = self::config();
    config.max_correspondents = 0;
    let (mut m, mut ap) = registered_with(config, now);
    m.handle_udp(
        now,
        ap_ep(),
        &mut shim_notice(&mut ap, CLIENT, shim_ep(), 1),
    );
    assert_eq!(m.correspondents().count(), 0);
    assert!(transmits(&mut m).is_empty());
    assert_eq!(m.counters().limit_hits.correspondents, 1);
}

#[test]
fn a_move_holds_answers_until_the_new_binding_then_sends_them_direct() {
    let now = t0();
    let (mut m, _ap, mut shim) = bound(now);
    events(&mut m);
    let new = ep("[2001:db8:1::2]:4790");
    m.set_care_of(now, new);
    let sent = transmits(&mut m);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].to, ap_ep());
    let bu = unsealed_msg(&sent[0]);
    assert!(matches!(
        bu.body,
        MessageBody::BindingUpdate { home: true, .. }
    ));
    assert_eq!(bu.cookie(), None, "the cookie was for the old endpoint");
    // Only a care-of test (the home token and its ticket are reused).
    assert_eq!(sent[1].to, shim_ep());
    let msg = unsealed_msg(&sent[1]);
    assert_eq!(msg.care_of_ticket(), Some((5, TICKET)));
    let MessageBody::CareOfTestInit { cookie } = msg.body else {
        panic!("expected a CoTI: {msg:?}")
    };
    assert_eq!(
        tun_out(&mut m, now, &mut answer()),
        (DataAction::Consumed, None),
        "held"
    );
    // The AP answers the BU from the new endpoint with a cookie: at once again.
    let seq = match bu.body {
        MessageBody::BindingUpdate { sequence, .. } => sequence,
        _ => unreachable!(),
    };
    m.handle_udp(
        now,
        ap_ep(),
        &mut ba_with(202, seq, 0, &[MobilityOption::Cookie(COOKIE_1)]),
    );
    assert_eq!(registration_bu(&mut m).cookie, Some(COOKIE_1));
    let later = at(now, 30);
    let new_token = [0x33; 8];
    m.handle_udp(later, shim_ep(), &mut care_of_test(cookie, new_token));
    let (seq, session) = binding_update(&mut m, new_token, new);
    let (mut frame, mut new_shim) = shim_ba(seq, session, new_token, new, 0x7c);
    m.handle_udp(later, shim_ep(), &mut frame);
    let released = transmits(&mut m);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].to, shim_ep());
    assert_eq!(
        open_frame(&mut new_shim.sessions, &released[0].payload),
        answer(),
        "the held answer, sealed in the new session"
    );
    // The old session still opens frames in flight during its grace.
    let mut late = sealed_frame(&mut shim.sessions, &inbound());
    assert_eq!(m.handle_udp(later, shim_ep(), &mut late), DataAction::ToTun);
    let mut too_late = sealed_frame(&mut shim.sessions, &inbound());
    assert_eq!(
        m.handle_udp(
            later + crate::engine::sealed::SESSION_GRACE,
            shim_ep(),
            &mut too_late
        ),
        DataAction::Drop(DropReason::AuthFailed)
    );
}

#[test]
fn answers_held_past_the_hold_time_go_through_the_ap() {
    let now = t0();
    let (mut m, mut ap, _shim) = bound(now);
    m.set_care_of(now, ep("[2001:db8:1::2]:4790"));
    transmits(&mut m);
    assert_eq!(tun_out(&mut m, now, &mut answer()).0, DataAction::Consumed);
    run_until(&mut m, now + MOVE_HOLD - Duration::from_millis(1));
    assert!(transmits(&mut m).is_empty());
    run_until(&mut m, now + MOVE_HOLD);
    let released = transmits(&mut m);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].to, ap_ep());
    assert_eq!(ap.open(&released[0]), answer(), "sealed in the AP session");
}

#[test]
fn a_refresh_reuses_the_home_token_and_its_ticket() {
    let now = t0();
    let (mut m, _ap, _shim) = bound(now);
    // The shim's BA gave 120 s: the refresh runs at 80 %, the home token
    // (96 s old) is still fresh, so only the care-of test goes, with the
    // ticket.
    let refresh = now + Duration::from_secs(96);
    run_until(&mut m, refresh - Duration::from_millis(1));
    assert!(
        transmits(&mut m).iter().all(|t| t.to == ap_ep()),
        "nothing to the shim before the refresh point"
    );
    run_until(&mut m, refresh);
    let (to_ap, to_shim): (Vec<_>, Vec<_>) =
        transmits(&mut m).into_iter().partition(|t| t.to == ap_ep());
    for t in &to_ap {
        // Registration BUs only (the silence rule): no HoTI.
        assert!(matches!(
            unsealed_msg(t).body,
            MessageBody::BindingUpdate { home: true, .. }
        ));
    }
    assert_eq!(to_shim.len(), 1, "{to_shim:?}");
    let msg = unsealed_msg(&to_shim[0]);
    assert!(matches!(msg.body, MessageBody::CareOfTestInit { .. }));
    assert_eq!(msg.care_of_ticket(), Some((5, TICKET)));
}

#[test]
fn an_encrypting_member_refuses_integrity_only_frames() {
    let now = t0();
    let (mut m, mut ap) = registered(now);
    let mut f = vec![0u8; HEADER_LEN + inbound().len() + TAG_LEN];
    f[HEADER_LEN..HEADER_LEN + inbound().len()].copy_from_slice(&inbound());
    seal_data(&mut ap.sessions, Protection::Integrity, Some(ID), &mut f).unwrap();
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut f.clone()),
        DataAction::Drop(DropReason::AuthFailed)
    );
    // A member configured for integrity takes both.
    let mut config = config();
    config.protection = Protection::Integrity;
    let (mut m, mut ap) = registered_with(config, now);
    let mut f = vec![0u8; HEADER_LEN + inbound().len() + TAG_LEN];
    f[HEADER_LEN..HEADER_LEN + inbound().len()].copy_from_slice(&inbound());
    seal_data(&mut ap.sessions, Protection::Integrity, Some(ID), &mut f).unwrap();
    assert_eq!(m.handle_udp(now, ap_ep(), &mut f), DataAction::ToTun);
    assert_eq!(
        m.handle_udp(now, ap_ep(), &mut ap.data(&inbound())),
        DataAction::ToTun
    );
    // And seals its own frames without E.
    let (_, out) = tun_out(&mut m, now, &mut answer());
    let (_, frame) = out.unwrap();
    assert_eq!(frame[1] & crate::crypto::session::FLAG_ENCRYPTED, 0);
    let mut g = frame.clone();
    let idx = session_index_of(&g).unwrap();
    ap.sessions
        .open(now, idx, Protection::Integrity, &mut g)
        .unwrap();
}

#[test]
fn answers_before_the_ap_session_are_dropped_no_session() {
    let (mut m, now) = (member(), t0());
    m.start(now);
    assert_eq!(
        tun_out(&mut m, now, &mut answer()),
        (DataAction::Drop(DropReason::NoSession), None)
    );
}

/// The CoTI of a refresh, among what the member queued (registration BUs
/// to the AP aside): its cookie.
fn refresh_coti(m: &mut Member) -> Token {
    let to_shim: Vec<_> = transmits(m)
        .into_iter()
        .filter(|t| t.to != ap_ep())
        .collect();
    assert_eq!(to_shim.len(), 1, "one CoTI: {to_shim:?}");
    let msg = unsealed_msg(&to_shim[0]);
    assert_eq!(msg.care_of_ticket(), Some((5, TICKET)));
    let MessageBody::CareOfTestInit { cookie } = msg.body else {
        panic!("expected a CoTI, got {msg:?}");
    };
    cookie
}

/// Bound at `now` (BA lifetime 120 s), the client active only then: the
/// refresh at 96 s (the client was active within 120 s) binds again with
/// a new session (expiring at 216 s), returned with that point.
fn bound_then_refreshed(now: Instant) -> (Member, Shim, Instant) {
    let (m, _ap, shim, refresh) = bound_then_refreshed_with(config(), now);
    (m, shim, refresh)
}

fn bound_then_refreshed_with(config: MemberConfig, now: Instant) -> (Member, Ap, Shim, Instant) {
    let (mut m, mut ap) = registered_with(config, now);
    bind(&mut m, &mut ap, now);
    let refresh = now + Duration::from_secs(96);
    run_until(&mut m, refresh);
    let cookie = refresh_coti(&mut m);
    m.handle_udp(refresh, shim_ep(), &mut care_of_test(cookie, CARE_OF_TOKEN));
    let (seq, session) = binding_update(&mut m, CARE_OF_TOKEN, care_of());
    let (mut frame, shim) = shim_ba(seq, session, CARE_OF_TOKEN, care_of(), 0x6b);
    assert_eq!(
        m.handle_udp(refresh, shim_ep(), &mut frame),
        DataAction::Consumed
    );
    let c = m.correspondents().next().unwrap();
    assert_eq!(
        c.binding.unwrap().expires,
        refresh + Duration::from_secs(120)
    );
    (m, ap, shim, refresh)
}

#[test]
fn an_idle_clients_binding_lapses_at_its_expiry_and_works_until_then() {
    let now = t0();
    let (mut m, mut shim, bound_at) = bound_then_refreshed(now);
    let expires = bound_at + Duration::from_secs(120);
    // At 80 % the client has been idle for more than 120 s: no refresh,
    // but binding and session stay.
    let eighty = expires - Duration::from_secs(24);
    run_until(&mut m, eighty);
    assert!(
        transmits(&mut m).iter().all(|t| t.to == ap_ep()),
        "no return routability for an idle client"
    );
    let c = m.correspondents().next().expect("kept past 80 %");
    assert!(c.binding.is_some() && matches!(c.rr, RoState::Idle));
    // At 90 % the shim (still bound) sends direct: opened, to the TUN ...
    let ninety = expires - Duration::from_secs(12);
    run_until(&mut m, ninety);
    transmits(&mut m);
    let mut f = sealed_frame(&mut shim.sessions, &inbound());
    assert_eq!(m.handle_udp(ninety, shim_ep(), &mut f), DataAction::ToTun);
    assert_eq!(m.counters().drops.get(DropReason::UnknownPeer), 0);
    // ... the client is active again: the refresh starts at once ...
    refresh_coti(&mut m);
    assert!(matches!(
        m.correspondents().next().unwrap().rr,
        RoState::Testing { .. }
    ));
    // ... and the answer goes direct, in the binding's session.
    let (_, out) = tun_out(&mut m, ninety, &mut answer());
    let (to, frame) = out.expect("sealed answer");
    assert_eq!(to, shim_ep());
    assert_eq!(open_frame(&mut shim.sessions, &frame), answer());

    // Without a packet the state goes at the binding's expiry, not before.
    let (mut m, mut shim, bound_at) = bound_then_refreshed(now);
    let expires = bound_at + Duration::from_secs(120);
    run_until(&mut m, expires - Duration::from_millis(1));
    assert_eq!(m.correspondents().count(), 1);
    assert!(
        transmits(&mut m).iter().all(|t| t.to == ap_ep()),
        "no return routability for an idle client"
    );
    run_until(&mut m, expires);
    assert_eq!(m.correspondents().count(), 0, "deleted at expiry");
    assert!(transmits(&mut m).iter().all(|t| t.to == ap_ep()));
    // Its session went with it.
    let mut f = sealed_frame(&mut shim.sessions, &inbound());
    assert_eq!(
        m.handle_udp(expires, shim_ep(), &mut f),
        DataAction::Drop(DropReason::UnknownPeer)
    );
}

#[test]
fn a_lapsing_binding_is_evicted_before_an_unproven_entry() {
    let now = t0();
    let mut config = config();
    config.max_correspondents = 2;
    let (mut m, mut ap, _shim, bound_at) = bound_then_refreshed_with(config, now);
    let eighty = bound_at + Duration::from_secs(96);
    run_until(&mut m, eighty);
    // Client 2 arrives and stays unproven; then client 3 fills the table:
    // CLIENT, idle and lapsing, goes rather than the newer client 2.
    let (c2, s2) = client_ep(2);
    m.handle_udp(eighty, ap_ep(), &mut shim_notice(&mut ap, c2, s2, 2));
    let (c3, s3) = client_ep(3);
    let later = at(eighty, 10);
    m.handle_udp(later, ap_ep(), &mut shim_notice(&mut ap, c3, s3, 3));
    let mut clients: Vec<_> = m.correspondents().map(|c| c.client).collect();
    clients.sort();
    assert_eq!(clients, [c2, c3]);
    assert_eq!(m.counters().limit_hits.correspondents, 1);
}

#[test]
fn a_backoff_that_runs_out_for_an_idle_client_ends_its_state() {
    let now = t0();
    let (mut m, _ap, _shim) = bound(now);
    // The refresh at 96 s (client active within 120 s) meets a refusal.
    let refresh = now + Duration::from_secs(96);
    run_until(&mut m, refresh);
    let cookie = refresh_coti(&mut m);
    m.handle_udp(refresh, shim_ep(), &mut care_of_test(cookie, CARE_OF_TOKEN));
    let (seq, _) = binding_update(&mut m, CARE_OF_TOKEN, care_of());
    let refusal = MobilityMessage::new(MessageBody::BindingAck {
        status: 129,
        sequence: seq,
        lifetime: 0,
    });
    m.handle_udp(refresh, shim_ep(), &mut unsigned(Some(ID), &refusal));
    assert!(matches!(
        m.correspondents().next().unwrap().rr,
        RoState::Backoff { .. }
    ));
    // The backoff ends with the client idle: no RR, the state goes (and
    // the timer does not fire again and again).
    run_until(&mut m, refresh + DEFAULT_MAX_RETRANSMIT);
    assert_eq!(m.correspondents().count(), 0);
    assert!(transmits(&mut m).iter().all(|t| t.to == ap_ep()));
}
