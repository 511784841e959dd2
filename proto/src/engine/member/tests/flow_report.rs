//! The legacy flow table and the Flow Reports to every AP.

use super::multi_ap::{answer_on, ap_b, inbound_on, registered_with_both, two_aps};
use super::*;
use crate::engine::testutil::SYN;
use crate::wire::mh::FLOWS_PER_REPORT;
use crate::wire::{ReportedFlow, ReportedState};

/// The Flow Reports among `sent` to the AP at `to`, opened by `ap`:
/// (F flag, flows) each.
fn reports(sent: &[Transmit], to: SocketAddr, ap: &mut Ap) -> Vec<(bool, Vec<ReportedFlow>)> {
    sent.iter()
        .filter(|t| t.to == to)
        .map(|t| {
            let msg = MobilityMessage::parse(&ap.open(t)).expect("mobility header");
            let MessageBody::FlowReport { full } = msg.body else {
                panic!("expected a Flow Report, got {msg:?}");
            };
            (full, msg.flows().collect())
        })
        .collect()
}

fn flow(port: u16, state: ReportedState) -> ReportedFlow {
    ReportedFlow {
        proto: 6,
        state,
        client: CLIENT,
        client_port: port,
        home_port: 80,
    }
}

fn syn_on(port: u16) -> Vec<u8> {
    tcp(v6(CLIENT, port), v6(HOA, 80), SYN, 1, 0)
}

#[test]
fn a_new_flow_from_a_is_reported_to_a_and_b_within_50_ms() {
    let now = t0();
    let (mut m, mut a, mut b) = registered_with_both(now);
    m.handle_udp(now, ap_ep(), &mut a.data(&syn_on(1000)));
    let t1 = at(now, 20);
    m.handle_udp(t1, ap_ep(), &mut a.data(&inbound_on(2000)));
    m.handle_udp(t1, ap_ep(), &mut a.data(&inbound_on(2000)));
    assert_eq!(m.flows(), 2);
    run_until(&mut m, now + FLOW_REPORT_DELAY - Duration::from_millis(1));
    assert!(transmits(&mut m).is_empty(), "batched");
    run_until(&mut m, now + FLOW_REPORT_DELAY);
    let sent = transmits(&mut m);
    assert_eq!(sent.len(), 2, "one report to each AP: {sent:?}");
    let want = vec![(
        false,
        vec![
            flow(1000, ReportedState::Opening),
            flow(2000, ReportedState::Open),
        ],
    )];
    assert_eq!(reports(&sent, ap_ep(), &mut a), want);
    assert_eq!(reports(&sent, ap_b(), &mut b), want);
    assert_eq!(
        (m.counters().flow_reports, m.counters().flows_reported),
        (2, 4)
    );
    // A known flow whose state stays is not reported again (until the refresh).
    m.handle_udp(t1, ap_ep(), &mut a.data(&inbound_on(2000)));
    run_until(&mut m, t1 + Duration::from_secs(1));
    assert!(transmits(&mut m).is_empty());
}

/// An AP that never sees a flow's packets keeps the state of its last
/// report: a flow reported while opening (10 s idle timeout there) is
/// reported again once the client's ACK opens it, and again when it closes.
#[test]
fn a_flow_is_reported_again_when_its_state_changes() {
    let now = t0();
    let (mut m, mut a, mut b) = registered_with_both(now);
    m.handle_udp(now, ap_ep(), &mut a.data(&syn_on(1000)));
    run_until(&mut m, now + FLOW_REPORT_DELAY);
    let sent = transmits(&mut m);
    let opening = vec![(false, vec![flow(1000, ReportedState::Opening)])];
    assert_eq!(reports(&sent, ap_b(), &mut b), opening);
    // The client's ACK (and data) opens it: within 50 ms both APs hear so.
    let t1 = at(now, 100);
    m.handle_udp(t1, ap_ep(), &mut a.data(&inbound_on(1000)));
    m.handle_udp(t1, ap_ep(), &mut a.data(&inbound_on(1000)));
    run_until(&mut m, t1 + FLOW_REPORT_DELAY);
    let sent = transmits(&mut m);
    let open = vec![(false, vec![flow(1000, ReportedState::Open)])];
    assert_eq!(reports(&sent, ap_ep(), &mut a), open);
    assert_eq!(reports(&sent, ap_b(), &mut b), open);
    // The server's FIN (an answer) starts closing it: reported once more.
    let t2 = at(now, 200);
    let mut fin = answer_on(1000);
    fin[IPV6_TCP_FLAGS] |= 0x01;
    tun_out(&mut m, t2, &mut fin);
    tun_out(&mut m, t2, &mut answer_on(1000));
    run_until(&mut m, t2 + FLOW_REPORT_DELAY);
    let sent = transmits(&mut m);
    let closing = vec![(false, vec![flow(1000, ReportedState::Closing)])];
    assert_eq!(reports(&sent, ap_b(), &mut b), closing);
    assert_eq!(m.counters().flows_reported, 6);
}

/// A flow whose state changes before its first batch is sent goes out
/// once, in its state at the batch.
#[test]
fn a_flow_new_and_changed_in_one_batch_is_reported_once() {
    let now = t0();
    let (mut m, mut a, mut b) = registered_with_both(now);
    m.handle_udp(now, ap_ep(), &mut a.data(&syn_on(1000)));
    m.handle_udp(at(now, 20), ap_ep(), &mut a.data(&inbound_on(1000)));
    run_until(&mut m, now + FLOW_REPORT_DELAY);
    let sent = transmits(&mut m);
    let want = vec![(false, vec![flow(1000, ReportedState::Open)])];
    assert_eq!(reports(&sent, ap_b(), &mut b), want);
    assert_eq!(reports(&sent, ap_ep(), &mut a), want);
}

#[test]
fn open_flows_are_reported_again_every_minute_and_ended_ones_not() {
    let now = t0();
    let (mut m, mut a, mut b) = registered_with_both(now);
    m.handle_udp(now, ap_b(), &mut b.data(&inbound_on(1000)));
    m.handle_udp(now, ap_b(), &mut b.data(&inbound_on(2000)));
    run_until(&mut m, now + FLOW_REPORT_DELAY);
    transmits(&mut m);
    // Flow 2000 ends (the server resets it); both APs keep hearing of us.
    let mut rst = answer_on(2000);
    rst[IPV6_TCP_FLAGS] |= 0x04;
    tun_out(&mut m, now, &mut rst);
    let mut t = now;
    while t < now + FLOW_REPORT_REFRESH {
        t += Duration::from_secs(1);
        m.handle_udp(t, ap_ep(), &mut a.data(&ping()));
        m.handle_udp(t, ap_b(), &mut b.data(&ping()));
        // Flow 1000 stays alive through its answers.
        tun_out(&mut m, t, &mut answer_on(1000));
        run_until(&mut m, t);
        let sent = transmits(&mut m);
        let registration = |t: &Transmit| session_index_of(&t.payload) == Some(0);
        let reports_now: Vec<_> = sent.iter().filter(|t| !registration(t)).collect();
        if t < now + FLOW_REPORT_REFRESH {
            assert!(reports_now.is_empty(), "at {:?}: {reports_now:?}", t - now);
        } else {
            let sent: Vec<Transmit> = sent.into_iter().filter(|t| !registration(t)).collect();
            let want = vec![(false, vec![flow(1000, ReportedState::Open)])];
            assert_eq!(reports(&sent, ap_ep(), &mut a), want);
            assert_eq!(reports(&sent, ap_b(), &mut b), want);
        }
    }
    assert_eq!(m.flows(), 1);
}

/// Byte offset of the TCP flags in a packet from `tcp` (IPv6 header, then
/// the TCP header's byte 13).
const IPV6_TCP_FLAGS: usize = 40 + 13;

#[test]
fn a_new_session_with_an_ap_gets_a_full_report_in_messages_of_48_flows() {
    let now = t0();
    let (mut m, mut a, mut b) = registered_with_both(now);
    let n = FLOWS_PER_REPORT as u16 * 2 + 4;
    for port in 0..n {
        m.handle_udp(now, ap_ep(), &mut a.data(&inbound_on(10_000 + port)));
    }
    run_until(&mut m, now + FLOW_REPORT_DELAY);
    let sent = transmits(&mut m);
    let to_b = reports(&sent, ap_b(), &mut b);
    assert_eq!(
        to_b.iter().map(|(_, f)| f.len()).collect::<Vec<_>>(),
        [48, 48, 4]
    );
    for t in &sent {
        // Each sealed report fits a 1280-byte IPv6 packet with UDP.
        assert!(t.payload.len() + 48 <= 1280, "{} bytes", t.payload.len());
    }
    // B restarts: silence, a BU, and a new session: a full report to B only.
    let later = now + DEFAULT_AP_SILENCE;
    m.handle_udp(at(now, 1000), ap_ep(), &mut a.data(&ping()));
    run_until(&mut m, later);
    let t = transmits(&mut m);
    assert_eq!(t.len(), 1, "the BU to the silent B: {t:?}");
    let bu = parse_bu(&t[0]);
    let mut new_b = accept_from(&mut m, later, ap_b(), &bu, 0xb2, [0xb2; 16]);
    assert_eq!(events(&mut m), [MemberEvent::ApRestarted { ap: ap_b() }]);
    let sent = transmits(&mut m);
    assert!(sent.iter().all(|t| t.to == ap_b()), "nothing to A");
    let full = reports(&sent, ap_b(), &mut new_b);
    assert_eq!(full.len(), 3);
    assert!(full.iter().all(|(f, _)| *f), "every message flagged full");
    let mut ports: Vec<u16> = full
        .iter()
        .flat_map(|(_, flows)| flows.iter().map(|f| f.client_port))
        .collect();
    ports.sort();
    assert_eq!(ports, (10_000..10_000 + n).collect::<Vec<_>>());
}

#[test]
fn the_flow_table_is_bounded_and_a_full_table_still_serves() {
    let now = t0();
    let mut config = two_aps();
    config.max_flows = 2;
    let mut m = Member::new(config);
    m.start(now);
    let (bu_a, _) = super::multi_ap::bus_to_both(&mut m);
    let mut a = accept_from(&mut m, now, ap_ep(), &bu_a, 0xa1, [0xa1; 16]);
    for port in [1, 2, 3] {
        assert_eq!(
            m.handle_udp(now, ap_ep(), &mut a.data(&inbound_on(port))),
            DataAction::ToTun
        );
    }
    assert_eq!(m.flows(), 2);
    assert_eq!(m.counters().limit_hits.flows, 1);
    run_until(&mut m, now + FLOW_REPORT_DELAY);
    let sent: Vec<_> = transmits(&mut m)
        .into_iter()
        .filter(|t| t.to == ap_ep())
        .collect();
    let got = reports(&sent, ap_ep(), &mut a);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.len(), 2, "the untracked flow is not reported");
    // Its answers still go out, through the first AP.
    let (action, _) = tun_out(&mut m, now, &mut answer_on(3));
    assert_eq!(action, DataAction::Send { to: ap_ep() });
}
