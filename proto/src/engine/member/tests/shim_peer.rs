//! The shim's side of the member tests: the home and care-of tests, the
//! RO BU and the shim's BA, a member bound to a shim.

use super::*;

pub(super) const HOME_TOKEN: Token = [0x11; 8];
pub(super) const CARE_OF_TOKEN: Token = [0x22; 8];
pub(super) const TICKET: Token = [0x44; 8];

pub(super) fn home_test_msg(cookie: Token, ticket: Option<Token>) -> MobilityMessage {
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
pub(super) fn home_test(m: &mut Member, ap: &mut Ap, now: Instant, cookie: Token) -> Token {
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
pub(super) fn coti(m: &mut Member) -> Token {
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

pub(super) fn care_of_test(cookie: Token, token: Token) -> Vec<u8> {
    let msg = MobilityMessage::new(MessageBody::CareOfTest {
        nonce_index: 6,
        cookie,
        token,
    });
    unsigned(None, &msg)
}

/// The RO BU the member sent to the shim: its sequence number and
/// Session, checked against Kbm(HOME_TOKEN, `care_of_token`) (the
/// authenticator covers no endpoint: any care-of endpoint verifies).
pub(super) fn binding_update(m: &mut Member, care_of_token: Token) -> (u16, (u32, [u8; 16])) {
    let t = transmits(m);
    assert_eq!(t.len(), 1, "one BU: {t:?}");
    assert_eq!(t[0].to, shim_ep());
    let kbm = crypto::kbm(&HOME_TOKEN, &care_of_token);
    assert!(verify_binding(unsealed_mh(&t[0]), &kbm));
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
pub(super) struct Shim {
    pub(super) sessions: PeerSessions,
}

/// The shim's BA 0 with Session {Is, Ns}, signed with Kbm, and the shim's session.
pub(super) fn shim_ba(
    seq: u16,
    member_session: (u32, [u8; 16]),
    care_of_token: Token,
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
    sign_binding(&mut frame, &kbm);
    let (im, nm) = member_session;
    let keys = member_shim_keys(&kbm, &nm, &ns, ID.0, im, is);
    let shim = Shim {
        sessions: PeerSessions::new(Session::new(&keys, Role::Responder, is, im)),
    };
    (frame, shim)
}

/// A registered member bound to CLIENT's shim (instance 1), the AP and
/// the shim; nothing queued.
pub(super) fn bound(now: Instant) -> (Member, Ap, Shim) {
    let (mut m, mut ap) = registered(now);
    let shim = bind(&mut m, &mut ap, now);
    (m, ap, shim)
}

/// Bind CLIENT's shim (instance 1) from its Shim Notice on.
pub(super) fn bind(m: &mut Member, ap: &mut Ap, now: Instant) -> Shim {
    let home_cookie = notice(m, ap, now, 1);
    let care_of_cookie = home_test(m, ap, now, home_cookie);
    m.handle_udp(
        now,
        shim_ep(),
        &mut care_of_test(care_of_cookie, CARE_OF_TOKEN),
    );
    let (seq, session) = binding_update(m, CARE_OF_TOKEN);
    let (mut frame, shim) = shim_ba(seq, session, CARE_OF_TOKEN, 0x5a);
    assert_eq!(
        m.handle_udp(now, shim_ep(), &mut frame),
        DataAction::Consumed
    );
    shim
}
