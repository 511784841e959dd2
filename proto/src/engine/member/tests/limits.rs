//! The correspondent table's limits and binding lifetimes.

use super::*;

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
        [("correspondents", 2), ("flows", 0)]
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
    let (seq, session) = binding_update(&mut m, CARE_OF_TOKEN);
    let (mut frame, shim) = shim_ba(seq, session, CARE_OF_TOKEN, 0x6b);
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
    let (seq, _) = binding_update(&mut m, CARE_OF_TOKEN);
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
