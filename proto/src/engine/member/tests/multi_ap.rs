//! Several access points: one registration and session per AP, the
//! aggregate state, answers back through the flow's AP, drain and leave
//! at every AP, HoTIs through the shim's AP.

use super::*;

/// The second access point.
pub(super) fn ap_b() -> SocketAddr {
    ep("[2001:db8:b::1]:4790")
}

/// The member's configuration with APs A (first) and B.
pub(super) fn two_aps() -> MemberConfig {
    let mut c = config();
    c.access_points.push(ap_b().into());
    c
}

/// The registration BUs queued, one to A then one to B.
pub(super) fn bus_to_both(m: &mut Member) -> (Bu, Bu) {
    let t = transmits(m);
    assert_eq!(t.len(), 2, "a BU to each AP: {t:?}");
    assert_eq!((t[0].to, t[1].to), (ap_ep(), ap_b()));
    (parse_bu(&t[0]), parse_bu(&t[1]))
}

/// A member registered with A and B at `now` (nothing queued, no events),
/// and both APs' sides of the sessions.
pub(super) fn registered_with_both(now: Instant) -> (Member, Ap, Ap) {
    let mut m = Member::new(two_aps());
    m.start(now);
    let (bu_a, bu_b) = bus_to_both(&mut m);
    let a = accept_from(&mut m, now, ap_ep(), &bu_a, 0xa1, [0xa1; 16]);
    let b = accept_from(&mut m, now, ap_b(), &bu_b, 0xb1, [0xb1; 16]);
    events(&mut m);
    assert!(transmits(&mut m).is_empty(), "no flows: no full reports");
    (m, a, b)
}

/// A packet from CLIENT on port `port` for the HoA.
pub(super) fn inbound_on(port: u16) -> Vec<u8> {
    tcp(v6(CLIENT, port), v6(HOA, 80), ACK, 1, 1)
}

/// The answer to [`inbound_on`].
pub(super) fn answer_on(port: u16) -> Vec<u8> {
    tcp(v6(HOA, 80), v6(CLIENT, port), ACK, 1, 1)
}

/// Where an answer is sent (sealed), checked to open at that AP.
fn answer_goes_to(m: &mut Member, now: Instant, packet: &[u8], aps: [(&mut Ap, SocketAddr); 2]) {
    let (action, out) = tun_out(m, now, &mut packet.to_vec());
    let DataAction::Send { to } = action else {
        panic!("expected a send, got {action:?}");
    };
    let (_, frame) = out.unwrap();
    let [(a, a_ep), (b, b_ep)] = aps;
    let ap = if to == a_ep {
        a
    } else {
        assert_eq!(to, b_ep);
        b
    };
    assert_eq!(open_frame(&mut ap.sessions, &frame), packet);
}

#[test]
fn registers_with_two_aps_in_two_sessions() {
    let now = t0();
    let mut m = Member::new(two_aps());
    m.start(now);
    let (bu_a, bu_b) = bus_to_both(&mut m);
    assert_ne!(bu_a.session.0, bu_b.session.0, "distinct indices");
    assert_ne!(bu_a.session.1, bu_b.session.1, "distinct nonces");
    let mut a = accept_from(&mut m, now, ap_ep(), &bu_a, 0xa1, [0xa1; 16]);
    assert_eq!(
        events(&mut m),
        [MemberEvent::Registered {
            ap: ap_ep(),
            care_of: care_of(),
            lifetime: DEFAULT_LIFETIME
        }]
    );
    let views: Vec<ApView> = m.access_points().collect();
    assert_eq!(views.len(), 2);
    assert!(views[0].has_session && !views[1].has_session);
    assert_eq!(views[1].state, RegistrationState::Registering);
    assert!(matches!(m.state(), RegistrationState::Registered { .. }));
    let later = at(now, 10);
    let mut b = accept_from(&mut m, later, ap_b(), &bu_b, 0xb1, [0xb1; 16]);
    assert_eq!(
        m.state(),
        RegistrationState::Registered {
            expires: later + DEFAULT_LIFETIME
        },
        "the latest expiry"
    );
    assert!(m.access_points().all(|v| v.has_session
        && matches!(v.state, RegistrationState::Registered { .. })
        && v.last_heard.is_some()));
    // Each session opens only its own AP's frames.
    assert_eq!(
        m.handle_udp(later, ap_b(), &mut b.data(&ping())),
        DataAction::ToTun
    );
    assert_eq!(
        m.handle_udp(later, ap_ep(), &mut a.data(&ping())),
        DataAction::ToTun
    );
    // A duplicate endpoint in the configuration is refused by `check`.
    let mut dup = two_aps();
    assert_eq!(dup.check(), Ok(()));
    dup.access_points.push(ap_ep().into());
    assert_eq!(
        dup.check(),
        Err(MemberConfigError::DuplicateAccessPoint(ap_ep().into()))
    );
    dup.access_points.clear();
    assert_eq!(dup.check(), Err(MemberConfigError::NoAccessPoint));
}

#[test]
fn one_ap_refusing_does_not_stop_the_member() {
    let now = t0();
    let mut m = Member::new(two_aps());
    m.start(now);
    let (bu_a, bu_b) = bus_to_both(&mut m);
    m.handle_udp(now, ap_ep(), &mut ba_with(129, bu_a.seq, 0, &[]));
    assert_eq!(
        events(&mut m),
        [MemberEvent::RegistrationRefused {
            ap: ap_ep(),
            status: 129
        }]
    );
    assert_eq!(m.state(), RegistrationState::Registering);
    // B still gets its retransmissions, A none.
    run_until(&mut m, now + DEFAULT_INITIAL_RETRANSMIT);
    let t = transmits(&mut m);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].to, ap_b());
    let mut b = accept_from(&mut m, now, ap_b(), &bu_b, 0xb1, [0xb1; 16]);
    assert!(matches!(m.state(), RegistrationState::Registered { .. }));
    assert_eq!(
        m.handle_udp(now, ap_b(), &mut b.data(&inbound())),
        DataAction::ToTun
    );
    // Refused only when every AP refused.
    let mut m = Member::new(two_aps());
    m.start(now);
    let (bu_a, bu_b) = bus_to_both(&mut m);
    m.handle_udp(now, ap_ep(), &mut ba_with(129, bu_a.seq, 0, &[]));
    m.handle_udp(now, ap_b(), &mut ba_with(133, bu_b.seq, 0, &[]));
    assert_eq!(m.state(), RegistrationState::Refused { status: 129 });
}

#[test]
fn answers_go_back_through_the_ap_the_flow_came_from() {
    let now = t0();
    let (mut m, mut a, mut b) = registered_with_both(now);
    m.handle_udp(now, ap_b(), &mut b.data(&inbound_on(1000)));
    m.handle_udp(now, ap_ep(), &mut a.data(&inbound_on(2000)));
    answer_goes_to(
        &mut m,
        now,
        &answer_on(1000),
        [(&mut b, ap_b()), (&mut a, ap_ep())],
    );
    answer_goes_to(
        &mut m,
        now,
        &answer_on(2000),
        [(&mut a, ap_ep()), (&mut b, ap_b())],
    );
    // Answers of an unknown flow: the first AP registered and not silent.
    let (action, _) = tun_out(&mut m, now, &mut answer_on(3000));
    assert_eq!(action, DataAction::Send { to: ap_ep() });
    // The router moves the first flow to A: its answers follow.
    m.handle_udp(now, ap_ep(), &mut a.data(&inbound_on(1000)));
    let (action, _) = tun_out(&mut m, now, &mut answer_on(1000));
    assert_eq!(action, DataAction::Send { to: ap_ep() });
    m.handle_udp(now, ap_b(), &mut b.data(&inbound_on(1000)));
    transmits(&mut m);

    // B goes silent while A keeps sending: B's flow answers through A.
    let mut t = now;
    let mut to_b = Vec::new();
    while t < now + DEFAULT_AP_SILENCE {
        t += Duration::from_millis(100);
        run_until(&mut m, t);
        m.handle_udp(t, ap_ep(), &mut a.data(&ping()));
        // (the batch of the new flows at 50 ms aside)
        let unsealed = |t: &Transmit| session_index_of(&t.payload) == Some(0);
        to_b.extend(
            transmits(&mut m)
                .into_iter()
                .filter(|t| t.to == ap_b() && unsealed(t)),
        );
    }
    let (action, _) = tun_out(&mut m, t, &mut answer_on(1000));
    assert_eq!(action, DataAction::Send { to: ap_ep() }, "B is silent");
    // B is heard again, but until it answers the silence BU it may have
    // lost our session: still through A.
    m.handle_udp(t, ap_b(), &mut b.data(&ping()));
    let (action, _) = tun_out(&mut m, t, &mut answer_on(1000));
    assert_eq!(action, DataAction::Send { to: ap_ep() });
    assert_eq!(to_b.len(), 1, "the silence BU: {to_b:?}");
    accept_from(&mut m, t, ap_b(), &parse_bu(&to_b[0]), 0xb1, [0xb1; 16]);
    let (action, _) = tun_out(&mut m, t, &mut answer_on(1000));
    assert_eq!(action, DataAction::Send { to: ap_b() }, "back through B");
    // Everything silent: any AP with a session, the flow's first.
    let late = t + DEFAULT_AP_SILENCE * 2;
    let (action, _) = tun_out(&mut m, late, &mut answer_on(1000));
    assert_eq!(action, DataAction::Send { to: ap_b() });
}

#[test]
fn a_brr_refreshes_the_registration_with_its_ap_only() {
    let now = t0();
    let (mut m, _a, mut b) = registered_with_both(now);
    let brr = MobilityMessage::new(MessageBody::BindingRefreshRequest).with(bid(ID));
    assert_eq!(
        m.handle_udp(now, ap_b(), &mut b.seal(brr)),
        DataAction::Consumed
    );
    let t = transmits(&mut m);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].to, ap_b());
    assert!(matches!(
        unsealed_msg(&t[0]).body,
        MessageBody::BindingUpdate { home: true, .. }
    ));
}

#[test]
fn drain_and_leave_go_to_every_ap() {
    let now = t0();
    let (mut m, _a, _b) = registered_with_both(now);
    m.set_draining(now, true);
    let t = transmits(&mut m);
    assert_eq!(t.len(), 2);
    for t in &t {
        assert_eq!(unsealed_msg(t).member_state().map(|s| s.1), Some(true));
    }
    m.set_draining(now, false);
    let (_, bu_b) = bus_to_both(&mut m);
    // B's operator drains us: the member drains, A's does not matter.
    let opts = [
        MobilityOption::Session {
            index: 0xb1,
            nonce: [0xb1; 16],
        },
        MobilityOption::MemberState {
            weight: 100,
            draining: true,
            instance: config().instance,
        },
    ];
    m.handle_udp(now, ap_b(), &mut ba_with(0, bu_b.seq, 15, &opts));
    assert!(m.is_draining());
    assert_eq!(
        m.access_points().map(|v| v.draining).collect::<Vec<_>>(),
        [false, true]
    );

    m.leave(now);
    let (leave_a, leave_b) = bus_to_both(&mut m);
    assert_eq!((leave_a.lifetime, leave_b.lifetime), (0, 0));
    assert_eq!(m.state(), RegistrationState::Deregistering);
    m.handle_udp(now, ap_ep(), &mut ba_with(0, leave_a.seq, 0, &[]));
    assert_eq!(m.state(), RegistrationState::Deregistering, "B is not done");
    assert!(!events(&mut m).contains(&MemberEvent::Left));
    // B never answers: after its three BUs the member leaves anyway.
    run_until(&mut m, now + Duration::from_secs(7));
    assert_eq!(m.state(), RegistrationState::Left);
    assert_eq!(events(&mut m), [MemberEvent::Left]);
}

#[test]
fn a_shim_notice_via_b_makes_the_hoti_go_through_b() {
    let now = t0();
    let (mut m, mut a, mut b) = registered_with_both(now);
    m.handle_udp(now, ap_b(), &mut shim_notice(&mut b, CLIENT, shim_ep(), 1));
    let t = transmits(&mut m);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].to, ap_b());
    let msg = MobilityMessage::parse(&b.open(&t[0])).unwrap();
    assert!(matches!(msg.body, MessageBody::HomeTestInit { .. }));
    // The shim moved to A: the retransmitted HoTI goes through A.
    m.handle_udp(now, ap_ep(), &mut shim_notice(&mut a, CLIENT, shim_ep(), 1));
    run_until(&mut m, now + DEFAULT_INITIAL_RETRANSMIT);
    let hotis = transmits(&mut m);
    assert_eq!(hotis.len(), 1, "{hotis:?}");
    assert_eq!(hotis[0].to, ap_ep());
    let msg = MobilityMessage::parse(&a.open(&hotis[0])).unwrap();
    assert!(matches!(msg.body, MessageBody::HomeTestInit { .. }));
}
