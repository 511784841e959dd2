//! Handshake and record limits, and the placement policy.

use super::*;

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
        let ep = SocketAddr::new(addr.into(), 5555);
        let mut shim = TestShim {
            ep,
            instance: [2; 8],
            index: n + 1,
            nonce: [n as u8; 16],
            dh: dh.clone(),
            sessions: None,
            local: Some(ep),
            home: None,
            given: None,
            observed: None,
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
