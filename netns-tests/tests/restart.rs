//! Namespace tests of a member's host state across restarts: a member
//! killed with -9 leaves its source rule behind, and the next start takes
//! it over; a second member on the same host that would share the policy
//! routing table is refused before it changes anything, and the first one
//! keeps serving.

use std::path::Path;
use std::time::Duration;

use homeaddr_netns_tests::service::{HOME_ADDRESS, Host, KEY, START_TIMEOUT, Service, bin};
use homeaddr_netns_tests::topology::Daemon;
use homeaddr_netns_tests::{require_root, testapp};

const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Start `homeaddr-member --id id` in `host`'s namespace with its care-of
/// port and control socket.
fn spawn_member(svc: &Service, host: &Host, id: u16, port: u16, control: &Path) -> Daemon {
    let args: Vec<String> = vec![
        "--id".into(),
        id.to_string(),
        "--home-address".into(),
        HOME_ADDRESS.to_string(),
        "--access-point".into(),
        svc.ap_endpoint().to_string(),
        "--care-of".into(),
        format!("[{}]:{port}", host.addr),
        "--key".into(),
        KEY.into(),
        "--control".into(),
        control.display().to_string(),
    ];
    host.ns
        .spawn(
            &format!("homeaddr-member-{id}-again"),
            bin("homeaddr-member").expect("homeaddr-member is built"),
            &args,
        )
        .expect("spawn homeaddr-member")
}

/// The member that answers a fresh connection from the legacy client.
fn who(svc: &Service, client: usize) -> String {
    let server = svc.service_endpoint();
    svc.clients[client]
        .ns
        .enter(|| testapp::who(server, OP_TIMEOUT))
        .expect("enter the client's namespace")
        .expect("the client reaches the service")
}

#[test]
fn a_member_restarted_after_sigkill_takes_over_and_serves_again() {
    if !require_root("a_member_restarted_after_sigkill_takes_over_and_serves_again") {
        return;
    }
    let mut svc = Service::start("restart").expect("service");
    svc.add_member(1, &[]).expect("member 1");
    let client = svc.add_client(false, &[]).expect("legacy client");
    assert_eq!(who(&svc, client), "member1");

    let m1 = &svc.members[&1];
    m1.daemon().kill().expect("member 1 is killed");
    let rules = m1.ns.ip("-6 rule show").expect("ip rule");
    assert!(
        rules.contains("lookup 4790"),
        "a killed member leaves its source rule behind: {rules}"
    );
    let again = spawn_member(&svc, m1, 1, 4790, &m1.control);
    again
        .wait_for_output("registered with the access point", START_TIMEOUT)
        .unwrap_or_else(|e| panic!("the restarted member does not register: {e}"));
    assert!(
        again.stderr().contains("taking over") || again.stdout().contains("taking over"),
        "the restart says it took over stale state"
    );
    assert_eq!(who(&svc, client), "member1");
    let rules = m1.ns.ip("-6 rule show").expect("ip rule");
    assert_eq!(
        rules.matches("lookup 4790").count(),
        1,
        "one source rule: {rules}"
    );
    again.stop(Duration::from_secs(5)).expect("stops");
    let rules = m1.ns.ip("-6 rule show").expect("ip rule");
    assert!(
        !rules.contains("lookup 4790"),
        "a clean stop removes the rule: {rules}"
    );
}

#[test]
fn a_second_member_on_the_same_table_is_refused_and_the_first_keeps_serving() {
    if !require_root("a_second_member_on_the_same_table_is_refused_and_the_first_keeps_serving") {
        return;
    }
    let mut svc = Service::start("clash").expect("service");
    svc.add_member(1, &[]).expect("member 1");
    let client = svc.add_client(false, &[]).expect("legacy client");
    assert_eq!(who(&svc, client), "member1");

    let m1 = &svc.members[&1];
    let routes_before = m1.ns.ip("-6 route show table 4790").expect("table 4790");
    let control = m1.control.with_file_name("m1-second.sock");
    let second = spawn_member(&svc, m1, 2, 4791, &control);
    let status = second
        .wait_timeout(START_TIMEOUT)
        .expect("the second member exits");
    assert_eq!(status.code(), Some(1), "{}", second.stderr());
    let stderr = second.stderr();
    assert!(
        stderr.contains("routing table 4790") && stderr.contains("--table"),
        "the refusal names the table and the flag: {stderr}"
    );
    assert_eq!(
        m1.ns.ip("-6 route show table 4790").expect("table 4790"),
        routes_before,
        "the refused member left the first one's route alone"
    );
    assert!(m1.daemon().is_running());
    assert_eq!(who(&svc, client), "member1");
}
