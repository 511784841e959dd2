//! Namespace tests of the daemons that move bulk data (issue 3): a
//! transfer moving from the AP path to the direct path, full-size segments
//! both ways, and a transfer across a member's care-of change.
//!
//! A separate test binary from `daemons.rs`, so that these transfers never
//! load the CPU while a test there measures round trips (cargo runs test
//! binaries one after another); inside this binary each test holds the
//! exclusive side of the CPU-load lock, so they also run one at a time.

mod common;
mod support;

use std::time::{Duration, Instant};

use homeaddr_control::FlowPath;
use homeaddr_netns_tests::service::Service;
use homeaddr_netns_tests::wan::LinkParams;
use homeaddr_netns_tests::{testapp, wait_until};

use homeaddr_netns_tests::scenario::traffic;
use support::*;

const MB: u64 = 1 << 20;

/// A rate-limited link with about `queue_ms` of queue at that rate.
fn limited(mbit: u64, queue_ms: u64) -> LinkParams {
    let packets_per_ms = mbit * 1_000_000 / 8 / 1500 / 1000;
    LinkParams {
        rate_bps: Some(mbit * 1_000_000),
        queue_limit: (packets_per_ms * queue_ms).max(16) as usize,
        ..LinkParams::default()
    }
}

/// Waits up to `seconds` until member 1 has sent `packets` directly.
fn await_direct_out(svc: &Service, packets: u64, seconds: u64, what: &str) {
    let member = &svc.members[&1];
    wait_until(Duration::from_secs(seconds), POLL, what, || {
        num(&member.status(), "/counters/direct_out") >= packets
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(svc)));
}

fn mbit_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 * 8.0 / seconds.max(1e-9) / 1e6
}

/// Test 2: a 50 MB download by a shim client starts before route
/// optimization is done and finishes, intact, on the direct path.
///
/// The direct path between client and member is cut at first, so the
/// transfer runs through the AP (40 Mbit/s) for several megabytes; then the
/// path comes back, the member's next care-of test retransmission completes
/// the binding, and the open flow moves to the direct path (200 Mbit/s).
/// Proof of the move: the AP's packet counters for the member stop while
/// the transfer goes on, the member's direct counters grow, and the shim
/// shows the flow on the direct path.
#[test]
fn shim_transfer_started_through_the_ap_finishes_on_the_direct_path() {
    let Some(_cpu) = common::heavy_test() else {
        return;
    };
    let svc = service("rotransfer", 1, &[Client::Shim]);
    let client = 0;
    svc.wan.set_link_both("ap", "c0", limited(40, 30)).unwrap();
    svc.wan.set_link_both("m1", "c0", limited(200, 30)).unwrap();
    svc.wan.set_loss("c0", "m1", 1.0).unwrap();
    svc.wan.set_loss("m1", "c0", 1.0).unwrap();
    let server = svc.service_endpoint();
    const BYTES: u64 = 50 * MB;
    let started = Instant::now();
    let transfer = spawn_in(&svc.clients[client], "get", move || {
        testapp::get(server, BYTES, OP_TIMEOUT)
    });
    let shim = &svc.clients[client];
    wait_until(
        Duration::from_secs(20),
        POLL,
        "5 MB of the transfer through the AP",
        || ap_member_num(&svc, 1, |m| m.bytes_from) >= 5 * MB,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&svc)));
    assert!(
        shim_binding(shim, 1).is_none(),
        "a binding while the direct path is cut: {}",
        shim.status()
    );
    assert_eq!(
        shim_service_flow(shim).map(|f| f.path),
        Some(FlowPath::AccessPoint)
    );
    svc.wan.set_loss("c0", "m1", 0.0).unwrap();
    svc.wan.set_loss("m1", "c0", 0.0).unwrap();
    let restored = started.elapsed();
    let switched_at = Instant::now();
    let switched = wait_until(
        Duration::from_secs(15),
        POLL,
        "the transfer's flow to switch to the direct path",
        || shim_service_flow(shim).is_some_and(|f| f.path == FlowPath::Direct),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&svc)));
    let via_ap = ap_member_num(&svc, 1, |m| m.bytes_from);
    let via_ap_seconds = (switched_at + switched)
        .duration_since(started)
        .as_secs_f64();
    let member = &svc.members[&1];
    let direct_out = num(&member.status(), "/counters/direct_out");
    await_direct_out(
        &svc,
        direct_out + 500,
        5,
        "the member to send the transfer directly",
    );
    // Sample A, then B after 10 more MB, while the transfer goes on.
    let sample = || {
        let m = ap_member(&svc, 1);
        let s = member.status();
        let flow = shim_service_flow(shim).expect("the transfer's flow");
        (
            m.packets_to,
            m.packets_from,
            num(&s, "/counters/direct_in"),
            num(&s, "/counters/direct_out"),
            flow.bytes,
        )
    };
    let a = sample();
    wait_until(
        Duration::from_secs(20),
        POLL,
        "10 MB more of the transfer",
        || shim_service_flow(shim).expect("flow").bytes >= a.4 + 10 * MB,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&svc)));
    let b = sample();
    let still_running = !transfer.is_finished();
    let report = transfer
        .join()
        .expect("get thread")
        .unwrap_or_else(|e| panic!("the transfer broke: {e}\n{}", dump(&svc)));
    assert_eq!(report.sha256, testapp::expected_sha256(BYTES));
    let flow = shim_service_flow(shim).expect("flow");
    println!(
        "50 MB in {:.2} s ({:.0} Mbit/s): direct path restored at {restored:?}, flow direct {switched:?} later; {:.1} MB came through the AP ({:.0} Mbit/s there), {:.1} MB direct",
        report.seconds,
        report.mbit_per_s(),
        via_ap as f64 / MB as f64,
        mbit_per_s(via_ap, via_ap_seconds),
        (BYTES - via_ap.min(BYTES)) as f64 / MB as f64,
    );
    println!(
        "while {:.1} MB more arrived: AP packets to/from the member {} -> {} / {} -> {}; member direct in/out {} -> {} / {} -> {}; shim flow {flow:?}",
        (b.4 - a.4) as f64 / MB as f64,
        a.0,
        b.0,
        a.1,
        b.1,
        a.2,
        b.2,
        a.3,
        b.3
    );
    assert!(still_running, "the transfer ended before the second sample");
    assert_eq!(
        (b.0, b.1),
        (a.0, a.1),
        "packets of the moved flow still go through the AP"
    );
    assert!(
        b.2 > a.2 && b.3 >= a.3 + 5000,
        "direct counters do not grow"
    );
    assert_eq!(flow.path, FlowPath::Direct);
    assert!(via_ap >= 5 * MB);
}

/// Test 4 (TCP): bulk transfers both ways (download and upload) with
/// full-size segments, for a legacy client (through the AP, MSS clamped to
/// the 1420-byte inner MTU) and a shim client (direct, its TUN's MTU is
/// 1420): every transfer is intact, the packets on the WAN are full-size,
/// and no tunnel packet or inner packet had to be fragmented.
#[test]
fn full_size_segments_cross_both_ways_for_legacy_and_shim_clients() {
    let Some(_cpu) = common::heavy_test() else {
        return;
    };
    let (svc, shim, legacy) = shim_bound_and_legacy("tcpmtu");
    let server = svc.service_endpoint();
    const BYTES: u64 = 20 * MB;
    let namespaces = [
        ("ap", &svc.ap.ns),
        ("m1", &svc.members[&1].ns),
        ("c0", &svc.clients[shim].ns),
        ("c1", &svc.clients[legacy].ns),
    ];
    let fragments_before: Vec<u64> = namespaces
        .iter()
        .map(|(_, ns)| snmp6(ns, "Ip6FragCreates"))
        .collect();
    let clamped_before = num(&svc.ap.status(), "/counters/mss_clamped");
    let shim_via_ap_before = num(&svc.clients[shim].status(), "/counters/via_ap_out");
    // (client, the WAN host its packets go to and come from)
    for (kind, client, peer) in [("legacy", legacy, "ap"), ("shim", shim, "m1")] {
        let host = &svc.clients[client];
        let name = host.name.as_str();
        let link = |from: &str, to: &str| svc.wan.link_counters(from, to).unwrap_or_default();
        let down_before = link(peer, name);
        let report = in_ns(host, || testapp::get(server, BYTES, OP_TIMEOUT))
            .unwrap_or_else(|e| panic!("{kind} download: {e}\n{}", dump(&svc)));
        let down = link(peer, name);
        assert_eq!(report.sha256, testapp::expected_sha256(BYTES), "{kind}");
        let up_before = link(name, peer);
        let up_report = in_ns(host, || testapp::put(server, BYTES, OP_TIMEOUT))
            .unwrap_or_else(|e| panic!("{kind} upload: {e}\n{}", dump(&svc)));
        let up = link(name, peer);
        assert_eq!(up_report.sha256, testapp::expected_sha256(BYTES), "{kind}");
        let average = |after: homeaddr_netns_tests::wan::LinkCounters,
                       before: homeaddr_netns_tests::wan::LinkCounters| {
            (after.delivered_bytes - before.delivered_bytes) as f64
                / (after.delivered - before.delivered).max(1) as f64
        };
        let (avg_down, avg_up) = (average(down, down_before), average(up, up_before));
        println!(
            "{kind} client: download {:.0} Mbit/s ({avg_down:.0} bytes per packet {peer} -> {name}), upload {:.0} Mbit/s ({avg_up:.0} bytes per packet {name} -> {peer})",
            report.mbit_per_s(),
            up_report.mbit_per_s()
        );
        assert!(
            avg_down > 1400.0 && avg_up > 1400.0,
            "{kind}: packets are not full-size ({avg_down:.0} / {avg_up:.0} bytes)"
        );
    }
    for ((name, ns), before) in namespaces.iter().zip(&fragments_before) {
        assert_eq!(
            snmp6(ns, "Ip6FragCreates"),
            *before,
            "{name} fragmented packets of a TCP transfer"
        );
    }
    // The legacy client's SYNs (MSS 1440 for its 1500-byte link) were
    // clamped to 1360; the member's SYN-ACKs already offer 1360.
    assert!(num(&svc.ap.status(), "/counters/mss_clamped") >= clamped_before + 2);
    // The shim's connections started at its bound member: all direct.
    assert_eq!(
        num(&svc.clients[shim].status(), "/counters/via_ap_out"),
        shim_via_ap_before,
        "{}",
        svc.clients[shim].status()
    );
}

/// Test 5 (transfer): a 50 MB download by a shim client, on the direct
/// path (200 Mbit/s), survives its member moving to a new care-of address
/// mid-way (make before break); it is compared with the same download
/// without a move. After the old address is retired, traffic still flows.
#[test]
fn shim_transfer_survives_a_member_move() {
    let Some(_cpu) = common::heavy_test() else {
        return;
    };
    let mut svc = service("movexfer", 1, &[Client::Shim, Client::Legacy]);
    let (client, legacy) = (0, 1);
    svc.wan.set_link_both("m1", "c0", limited(200, 30)).unwrap();
    // The legacy client's 200 MB take at least 4 s at 400 Mbit/s, while the
    // shim reaches the move after 15 MB (0.6 s at its 200 Mbit/s): the
    // legacy transfer spans the move by its rate limit, not by luck.
    svc.wan.set_link_both("ap", "c1", limited(400, 30)).unwrap();
    let server = svc.service_endpoint();
    assert_eq!(who(&svc, client), "member1");
    bound(&svc, client, 1);
    const BYTES: u64 = 50 * MB;
    let baseline = download(&svc, client, BYTES);

    let spoofed = num(&svc.ap.status(), "/counters/drops/spoofed_source");
    // A legacy client's transfer runs across the move too: the member's
    // answers to it reach the AP from the old, then the new care-of.
    let legacy_transfer = spawn_in(&svc.clients[legacy], "get", move || {
        testapp::get(server, 4 * BYTES, OP_TIMEOUT).map(|r| (r, Instant::now()))
    });
    // About 15 MB in, move.
    let download_start = Instant::now();
    let moved = traffic::move_mid_download(&mut svc, 1, client, BYTES, 15 * MB)
        .unwrap_or_else(|e| panic!("the transfer broke at the move: {e:#}\n{}", dump(&svc)));
    let (legacy_report, legacy_end) = legacy_transfer
        .join()
        .expect("get thread")
        .unwrap_or_else(|e| panic!("the legacy transfer broke at the move: {e}\n{}", dump(&svc)));
    // The move began `at` after the download started, which started after
    // `download_start`.
    let legacy_still_running = moved
        .moved
        .as_ref()
        .is_some_and(|m| legacy_end > download_start + m.at);
    assert_eq!(legacy_report.sha256, testapp::expected_sha256(4 * BYTES));
    let dropped = num(&svc.ap.status(), "/counters/drops/spoofed_source") - spoofed;
    println!(
        "legacy client's 200 MB across the move: {:.2} s ({:.0} Mbit/s); AP dropped {dropped} of the member's packets as spoofed",
        legacy_report.seconds,
        legacy_report.mbit_per_s()
    );
    assert!(
        legacy_still_running,
        "the legacy transfer ended before the move"
    );
    // Make before break: the member re-registers from the new care-of
    // before any data leaves from there, so the AP drops none of it.
    assert_eq!(dropped, 0, "{}", dump(&svc));
    let Some(at) = &moved.moved else {
        panic!("the transfer ended before the move took effect");
    };
    assert!(
        at.mv.rebind.complete(),
        "{:?}\n{}",
        at.mv.rebind,
        dump(&svc)
    );
    let (get, seconds) = (&moved.get, moved.get.elapsed.as_secs_f64());
    println!(
        "50 MB without a move {:.2} s ({:.0} Mbit/s), with a move {seconds:.2} s: {:+.0} ms, longest pause {:?}; AP had the new care-of {:?} and the shim {:?} after the move",
        baseline.seconds,
        baseline.mbit_per_s(),
        (seconds - baseline.seconds) * 1e3,
        moved.stall(Duration::from_millis(500)).0,
        at.mv.rebind.at_ap,
        at.mv.rebind.at_shim,
    );
    assert!(get.sha_ok, "the transfer across the move is not intact");
    assert!(
        seconds < baseline.seconds + 2.0,
        "the move stalled the transfer: {seconds:.2} s vs {:.2} s",
        baseline.seconds
    );

    svc.retire_address(at.mv.old);
    let direct_in = num(&svc.members[&1].status(), "/counters/direct_in");
    download(&svc, client, 5 * MB);
    assert!(num(&svc.members[&1].status(), "/counters/direct_in") > direct_in);
    assert_eq!(
        shim_binding(&svc.clients[client], 1).map(|b| b.care_of.to_string()),
        Some(at.mv.care_of.clone())
    );
}
