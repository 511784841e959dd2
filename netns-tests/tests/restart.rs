//! Namespace tests of the daemons' host state across restarts: a member
//! or an AP killed with -9 leaves its claims (and the member its source
//! rule) behind, and the next start takes them over; a second daemon on
//! the same host that would share the policy routing table, the route of
//! the home address or the TUN is refused before it changes anything, and
//! the first one keeps serving. On the way: the kernel sends nothing of
//! its own into the daemons' TUNs (`not_tunnelled` stays 0).

use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use homeaddr_netns_tests::scenario::{self, Client};
use homeaddr_netns_tests::service::{
    HOME_ADDRESS, Host, KEY, START_TIMEOUT, Service, TUNNEL_PORT, ap_args, bin,
};
use homeaddr_netns_tests::topology::Daemon;
use homeaddr_netns_tests::{require_root, wait_until};

/// Start `homeaddr-member --id id` in `host`'s namespace with its care-of
/// port and control socket.
fn spawn_member(svc: &Service, host: &Host, id: u16, port: u16, control: &Path) -> Daemon {
    let args = svc.member_args(id, SocketAddr::new(host.addr.into(), port), KEY, control);
    host.ns
        .spawn(
            &format!("homeaddr-member-{id}-again"),
            bin("homeaddr-member").expect("homeaddr-member is built"),
            &args,
        )
        .expect("spawn homeaddr-member")
}

/// Start another `homeaddr-ap` in the AP's namespace, for `home_address`
/// on `port`, with `extra` flags.
fn spawn_ap(
    svc: &Service,
    home_address: Ipv6Addr,
    port: u16,
    control: &Path,
    extra: &[&str],
) -> Daemon {
    let listen = SocketAddr::new(svc.ap.addr.into(), port);
    let mut args = ap_args(home_address, listen, control);
    args.extend(extra.iter().map(|s| s.to_string()));
    svc.ap
        .ns
        .spawn(
            &format!("homeaddr-ap-{port}"),
            bin("homeaddr-ap").expect("homeaddr-ap is built"),
            &args,
        )
        .expect("spawn homeaddr-ap")
}

/// A daemon that must be refused exits with 1, with an error that
/// contains every one of `needles`.
fn assert_refused(daemon: &Daemon, needles: &[&str]) {
    let status = daemon
        .wait_timeout(START_TIMEOUT)
        .expect("the refused daemon exits");
    let stderr = daemon.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "the refusal names {needle:?}: {stderr}"
        );
    }
}

/// Wait until a daemon started over a killed one's state is `ready`; it
/// must say that it took that state over.
fn assert_took_over(daemon: &Daemon, ready: &str) {
    daemon
        .wait_for_output(ready, START_TIMEOUT)
        .unwrap_or_else(|e| panic!("the restarted daemon does not start: {e}"));
    assert!(
        daemon.stderr().contains("taking over") || daemon.stdout().contains("taking over"),
        "the restart says it took over the dead daemon's state"
    );
}

/// Packets the kernel itself wrote into `host`'s TUN (MLD reports, router
/// solicitations), as its daemon counted them.
fn not_tunnelled(host: &Host) -> u64 {
    let status = host.status();
    status["counters"]["drops"]["not_tunnelled"]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: no counters.drops.not_tunnelled in {status}", host.name))
}

/// The member that answers a fresh connection from client `client`.
fn who(svc: &Service, client: usize) -> String {
    scenario::who(svc, &svc.clients[client]).unwrap_or_else(|e| panic!("{e:#}"))
}

/// An AP and member 1 serving one legacy client; returns the service and
/// the client's index.
fn member1_serving_a_client(tag: &str) -> (Service, usize) {
    let svc =
        scenario::start_service(tag, 1, &[Client::Legacy]).unwrap_or_else(|e| panic!("{e:#}"));
    let client = 0;
    assert_eq!(who(&svc, client), "member1");
    (svc, client)
}

#[test]
fn a_member_restarted_after_sigkill_takes_over_and_serves_again() {
    if !require_root("a_member_restarted_after_sigkill_takes_over_and_serves_again") {
        return;
    }
    let (svc, client) = member1_serving_a_client("restart");

    let m1 = &svc.members[&1];
    m1.daemon().kill().expect("member 1 is killed");
    let rules = m1.ns.ip("-6 rule show").expect("ip rule");
    assert!(
        rules.contains("lookup 4790"),
        "a killed member leaves its source rule behind: {rules}"
    );
    let again = spawn_member(&svc, m1, 1, 4790, &m1.control);
    assert_took_over(&again, "registered with the access point");
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
    let (svc, client) = member1_serving_a_client("clash");

    let m1 = &svc.members[&1];
    let routes_before = m1.ns.ip("-6 route show table 4790").expect("table 4790");
    let control = m1.control.with_file_name("m1-second.sock");
    let second = spawn_member(&svc, m1, 2, 4791, &control);
    assert_refused(&second, &["routing table 4790", "--table"]);
    assert_eq!(
        m1.ns.ip("-6 route show table 4790").expect("table 4790"),
        routes_before,
        "the refused member left the first one's route alone"
    );
    assert!(m1.daemon().is_running());
    assert_eq!(who(&svc, client), "member1");
}

#[test]
fn an_ap_restarted_after_sigkill_takes_over_and_serves_again() {
    if !require_root("an_ap_restarted_after_sigkill_takes_over_and_serves_again") {
        return;
    }
    let mut svc = Service::start("aprestart").expect("service");
    // A short lifetime: the member refreshes, and so registers with the
    // restarted AP, within seconds.
    let config = svc.topo.dir().join("m1.toml");
    std::fs::write(&config, "lifetime_s = 8\n").expect("member config");
    let config = config.display().to_string();
    svc.add_member(1, &["--config", &config]).expect("member 1");
    let legacy = svc.add_client(false, &[]).expect("legacy client");
    let shim = svc.add_client(true, &[]).expect("shim client");
    assert_eq!(who(&svc, legacy), "member1");

    svc.ap.daemon().kill().expect("the AP is killed");
    let again = spawn_ap(&svc, HOME_ADDRESS, TUNNEL_PORT, &svc.ap.control, &[]);
    assert_took_over(&again, "access point up");
    wait_until(
        START_TIMEOUT,
        Duration::from_millis(100),
        "member 1 registers again",
        || svc.ap_member(1).is_some(),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(who(&svc, legacy), "member1");
    assert_eq!(who(&svc, shim), "member1");
    let route = svc
        .ap
        .ns
        .ip(&format!("-6 route show {HOME_ADDRESS}"))
        .expect("ip route");
    assert_eq!(
        route.lines().count(),
        1,
        "one route of the home address: {route}"
    );
    // Seconds after their TUNs came up: the kernel's MLD reports and router
    // solicitations would have arrived by now.
    for host in [&svc.ap, &svc.members[&1], &svc.clients[shim]] {
        assert_eq!(
            not_tunnelled(host),
            0,
            "{}: the kernel wrote into the TUN",
            host.name
        );
    }
}

#[test]
fn a_second_ap_for_the_same_home_address_or_tun_is_refused_and_the_first_keeps_serving() {
    if !require_root(
        "a_second_ap_for_the_same_home_address_or_tun_is_refused_and_the_first_keeps_serving",
    ) {
        return;
    }
    let (svc, client) = member1_serving_a_client("apclash");
    let routes = || svc.ap.ns.ip("-6 route show").expect("ip route");
    let before = routes();

    let control = svc.ap.control.with_file_name("ap-second.sock");
    let same_address = spawn_ap(
        &svc,
        HOME_ADDRESS,
        TUNNEL_PORT + 1,
        &control,
        &["--tun", "ha-ap2"],
    );
    assert_refused(
        &same_address,
        &[&format!("home address {HOME_ADDRESS}"), "--home-address"],
    );
    let other = Ipv6Addr::from(u128::from(HOME_ADDRESS) + 1);
    let same_tun = spawn_ap(&svc, other, TUNNEL_PORT + 2, &control, &[]);
    assert_refused(&same_tun, &["TUN device ha-ap", "--tun"]);

    assert_eq!(routes(), before, "the refused APs left the routes alone");
    assert!(svc.ap.daemon().is_running());
    assert_eq!(who(&svc, client), "member1");
}
