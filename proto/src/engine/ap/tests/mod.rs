//! The AP engine alone: frames and a virtual clock in; actions, transmits,
//! events and timers out. The members and shims are played here with the
//! crypto functions (the same key schedules, sealing with `Session`).

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use super::sessions::{send_to, sign_frame, unsealed_frame};
use super::*;
use crate::affinity::FlowState;
use crate::crypto::session::{HEADER_LEN, TAG_LEN};
use crate::crypto::{DhKeyPair, Drbg, Protection, Role, Session, member_ap_keys, shim_ap_keys};
use crate::engine::sealed::{PeerSessions, seal_data, sealed_control};
use crate::engine::testutil::{ACK, HOA, KEY, SPI, SYN, at, bid, ep, run_until, t0, tcp, v6};
use crate::engine::{DropReason, to_units, verify_registration};
use crate::wire::mh::FLOWS_PER_REPORT;
use crate::wire::mh::{MessageBody, ba_status, revocation_trigger};
use crate::wire::{ReportedFlow, ReportedState, TunnelHeader};

mod digest;
mod flow_report;
mod ipv4;
mod nat;
mod policy_limits;
mod registration;
mod relay;
mod sealing;
mod settle;
mod shim_handshake;

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

    /// A Flow Report of `flows`, sealed in its session.
    fn flow_report(&mut self, full: bool, flows: &[ReportedFlow]) -> Vec<u8> {
        let msg = flows.iter().fold(
            MobilityMessage::new(MessageBody::FlowReport { full }),
            |msg, flow| msg.with(MobilityOption::Flow(*flow)),
        );
        let id = self.id;
        sealed_control(self.sessions(), Protection::Encrypt, Some(id), &msg).expect("seals")
    }
}

/// A legacy client's packet as the TUN hands it to the AP: the action.
fn from_tun(ap: &mut AccessPoint, now: Instant, packet: &[u8]) -> DataAction {
    let mut frame = vec![0u8; HEADER_LEN];
    frame.extend_from_slice(packet);
    frame.extend_from_slice(&[0; TAG_LEN]);
    ap.handle_tun_frame(now, &mut frame)
}

/// The open TCP flow client `c` -> the home address's port 80.
fn reported(c: SocketAddrV6) -> ReportedFlow {
    ReportedFlow {
        proto: 6,
        state: ReportedState::Open,
        client: *c.ip(),
        client_port: c.port(),
        home_port: 80,
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
    /// The Hello's Endpoint option (the shim's local endpoint).
    local: Option<SocketAddr>,
    /// The Hello's Home Address option.
    home: Option<Ipv6Addr>,
    /// The Welcome's Client Address and Endpoint.
    given: Option<Ipv6Addr>,
    observed: Option<SocketAddr>,
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
            local: Some(ep),
            home: None,
            given: None,
            observed: None,
        }
    }

    /// The client address: the Welcome's, else the source address.
    fn client(&self) -> Ipv6Addr {
        if let Some(c) = self.given {
            return c;
        }
        match self.ep.ip() {
            std::net::IpAddr::V6(a) => a,
            std::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
        }
    }

    fn hello(&self, cookie: [u8; 16]) -> Vec<u8> {
        let mut msg = MobilityMessage::new(MessageBody::ShimHello {
            instance: self.instance,
            index: self.index,
            nonce: self.nonce,
            cookie,
            public: self.dh.public,
        });
        msg.options.extend(self.local.map(MobilityOption::Endpoint));
        msg.options
            .extend(self.home.map(MobilityOption::HomeAddress));
        unsealed_frame(None, &msg)
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
        let Some(welcome) = answer else {
            return false;
        };
        let MessageBody::ShimWelcome {
            nonce,
            index,
            ap_nonce,
            public,
        } = welcome.body
        else {
            return false;
        };
        assert_eq!(nonce, self.nonce);
        assert_eq!(welcome.endpoint(), Some(self.ep), "the observed endpoint");
        let Some(given) = welcome.client_address() else {
            return false;
        };
        self.given = Some(given);
        self.observed = welcome.endpoint();
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

/// Member 1 registered and client 1's shim with a session; nothing queued.
fn ap_member_and_shim() -> (AccessPoint, Instant, TestMember, TestShim) {
    let (mut ap, now, m) = ap_with_member();
    let mut shim = shim_at(1, 1);
    assert!(shim.handshake(&mut ap, now));
    events(&mut ap);
    (ap, now, m, shim)
}
