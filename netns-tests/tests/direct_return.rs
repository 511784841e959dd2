//! Direct server return: a member answers legacy clients natively, from the
//! home address, and the answers never pass through the access point.

use std::time::Duration;

use homeaddr_netns_tests::service::Service;
use homeaddr_netns_tests::{require_root, testapp};

#[test]
fn legacy_answers_bypass_the_access_point_with_direct_return() {
    if !require_root("legacy_answers_bypass_the_access_point_with_direct_return") {
        return;
    }
    let mut svc = Service::start("dsr").expect("service starts");
    svc.add_member(1, &["--direct-return"]).expect("member 1");
    let legacy = svc.add_client(false, &[]).expect("legacy client");
    let server = svc.service_endpoint();
    let bytes = 4 << 20;
    let report = svc.clients[legacy]
        .ns
        .enter(|| testapp::get(server, bytes, Duration::from_secs(30)))
        .unwrap();
    let report = report.expect("download through direct server return");
    assert_eq!(report.sha256, testapp::expected_sha256(bytes));
    assert_eq!(report.server, "member1");
    let ap = svc.ap.status();
    let member = svc.members[&1].status();
    // Requests went in through the AP; no answer came back through it.
    assert!(ap["counters"]["legacy_in"].as_u64().unwrap() > 0, "{ap}");
    assert_eq!(
        ap["counters"]["legacy_out"], 0,
        "answers went through the AP: {ap}"
    );
    assert!(
        member["counters"]["direct_return"].as_u64().unwrap() > 1000,
        "{member}"
    );
}
