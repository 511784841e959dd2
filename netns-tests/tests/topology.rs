//! Namespace tests of the topology builder: creation, links, processes, and
//! that everything is gone after drop, also after a panic.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{SECOND, netns_exists, sock};
use homeaddr_netns_tests::{Topology, require_root, testapp, ula, wait_until};

fn pid_alive(pid: u32) -> bool {
    // A zombie would still "exist"; look at its state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

#[test]
fn namespaces_are_created_and_removed_on_drop() {
    if !require_root("namespaces_are_created_and_removed_on_drop") {
        return;
    }
    let topo = Topology::new("create").unwrap();
    let a = topo.add_netns("alpha").unwrap();
    let b = topo.add_netns("beta").unwrap();
    assert!(a.name().starts_with("ha-create-"), "{}", a.name());
    assert!(a.name().ends_with("-alpha"), "{}", a.name());
    assert_ne!(a.name(), b.name());
    assert!(netns_exists(a.name()) && netns_exists(b.name()));
    // Loopback is up, forwarding off, DAD off.
    let lo = a.ip("link show lo").unwrap();
    assert!(lo.contains("UP"), "{lo}");
    let fwd = a
        .run("cat", ["/proc/sys/net/ipv6/conf/all/forwarding"])
        .unwrap();
    assert_eq!(fwd.trim(), "0");
    let names = topo.namespace_names();
    let dir = topo.dir().to_path_buf();
    assert!(dir.is_dir());
    drop(topo);
    for name in &names {
        assert!(!netns_exists(name), "{name} survived the drop");
    }
    assert!(!dir.exists(), "log dir of a passing test is removed");
}

#[test]
fn namespaces_and_daemons_are_removed_after_a_caught_panic() {
    if !require_root("namespaces_and_daemons_are_removed_after_a_caught_panic") {
        return;
    }
    let seen: Mutex<(Vec<String>, Vec<u32>, Option<std::path::PathBuf>)> =
        Mutex::new((Vec::new(), Vec::new(), None));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let topo = Topology::new("panic").unwrap();
        let a = topo.add_netns("a").unwrap();
        let b = topo.add_netns("b").unwrap();
        topo.veth(&a, "eth0", &b, "eth0").unwrap();
        // A daemon whose handle is leaked: only the topology can stop it.
        let daemon = a.spawn("sleeper", "sleep", ["1000"]).unwrap();
        let mut s = seen.lock().unwrap();
        s.0 = topo.namespace_names();
        s.2 = Some(topo.dir().to_path_buf());
        s.1.push(daemon.pid());
        drop(s);
        std::mem::forget(daemon);
        panic!("deliberate panic inside a topology");
    }));
    assert!(result.is_err());
    let (names, pids, dir) = seen.into_inner().unwrap();
    // Logs of a panicking test are kept on purpose; this panic was planned.
    let dir = dir.unwrap();
    assert!(dir.is_dir(), "logs are kept after a panic");
    std::fs::remove_dir_all(dir).unwrap();
    assert_eq!(names.len(), 2);
    for name in &names {
        assert!(!netns_exists(name), "{name} survived the panic");
    }
    for pid in pids {
        wait_until(
            5 * SECOND,
            Duration::from_millis(10),
            "the leaked daemon to die",
            || !pid_alive(pid),
        )
        .unwrap();
    }
}

#[test]
fn veth_link_carries_traffic_and_mtu_is_settable() {
    if !require_root("veth_link_carries_traffic_and_mtu_is_settable") {
        return;
    }
    let topo = Topology::new("veth").unwrap();
    let a = topo.add_netns("a").unwrap();
    let b = topo.add_netns("b").unwrap();
    topo.veth(&a, "eth0", &b, "eth0").unwrap();
    a.set_mtu("eth0", 1400).unwrap();
    b.set_mtu("eth0", 1400).unwrap();
    a.add_addr("eth0", ula(1, 1), 64).unwrap();
    b.add_addr("eth0", ula(1, 2), 64).unwrap();
    assert!(a.ip("link show eth0").unwrap().contains("mtu 1400"));
    let server = b
        .enter(|| testapp::Server::start(sock(ula(1, 2), 7000), "b"))
        .unwrap()
        .unwrap();
    let report = a
        .enter(|| {
            testapp::udp_echo(
                server.local_addr(),
                20,
                Duration::from_millis(1),
                64,
                SECOND,
            )
        })
        .unwrap()
        .unwrap();
    assert_eq!(report.received, 20);
    // The address is only inside the namespaces: the test process (host
    // namespace) has no route to it.
    let host_addrs = std::process::Command::new("ip")
        .args(["-6", "addr"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&host_addrs.stdout).contains("fd00:4841:"));
}

#[test]
fn router_forwards_between_two_links() {
    if !require_root("router_forwards_between_two_links") {
        return;
    }
    let topo = Topology::new("router").unwrap();
    let a = topo.add_netns("a").unwrap();
    let r = topo.add_netns("r").unwrap();
    let b = topo.add_netns("b").unwrap();
    topo.veth(&a, "eth0", &r, "a").unwrap();
    topo.veth(&r, "b", &b, "eth0").unwrap();
    a.add_addr("eth0", ula(1, 2), 64).unwrap();
    r.add_addr("a", ula(1, 1), 64).unwrap();
    r.add_addr("b", ula(2, 1), 64).unwrap();
    b.add_addr("eth0", ula(2, 2), 64).unwrap();
    a.add_route("fd00:4841::/32".parse().unwrap(), Some(ula(1, 1)), None)
        .unwrap();
    b.add_route("fd00:4841::/32".parse().unwrap(), Some(ula(2, 1)), None)
        .unwrap();
    r.set_forwarding(true).unwrap();
    let server = b
        .enter(|| testapp::Server::start(sock(ula(2, 2), 7000), "b"))
        .unwrap()
        .unwrap();
    let report = a
        .enter(|| testapp::get(server.local_addr(), 1 << 20, 5 * SECOND))
        .unwrap()
        .unwrap();
    assert_eq!(report.sha256, testapp::expected_sha256(1 << 20));
    assert_eq!(report.server, "b");
}

#[test]
fn lan_bridge_connects_three_namespaces() {
    if !require_root("lan_bridge_connects_three_namespaces") {
        return;
    }
    let topo = Topology::new("lan").unwrap();
    let hosts: Vec<_> = ["h1", "h2", "h3"]
        .iter()
        .map(|r| topo.add_netns(r).unwrap())
        .collect();
    let members: Vec<_> = hosts.iter().map(|h| (h, "eth0")).collect();
    let switch = topo.lan("sw", &members).unwrap();
    assert!(switch.ip("link show br0").unwrap().contains("UP"));
    for (i, h) in hosts.iter().enumerate() {
        h.add_addr("eth0", ula(5, i as u16 + 1), 64).unwrap();
    }
    let servers: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let name = format!("h{}", i + 1);
            h.enter(|| testapp::Server::start(sock(ula(5, i as u16 + 1), 7000), &name))
                .unwrap()
                .unwrap()
        })
        .collect();
    // Every host reaches every other one over the bridge.
    for (i, h) in hosts.iter().enumerate() {
        for (j, s) in servers.iter().enumerate() {
            if i != j {
                let name = h
                    .enter(|| testapp::who(s.local_addr(), 5 * SECOND))
                    .unwrap()
                    .unwrap();
                assert_eq!(name, format!("h{}", j + 1));
            }
        }
    }
}

#[test]
fn daemon_output_is_captured_and_it_is_stopped_on_drop() {
    if !require_root("daemon_output_is_captured_and_it_is_stopped_on_drop") {
        return;
    }
    let topo = Topology::new("daemon").unwrap();
    let a = topo.add_netns("a").unwrap();
    let daemon = a
        .spawn(
            "talker",
            "sh",
            ["-c", "echo hello-out; echo hello-err >&2; exec sleep 1000"],
        )
        .unwrap();
    daemon.wait_for_output("hello-out", 5 * SECOND).unwrap();
    daemon.wait_for_output("hello-err", 5 * SECOND).unwrap();
    assert!(daemon.stdout_path().starts_with(topo.dir()));
    assert!(daemon.is_running());
    // It runs inside the namespace.
    assert!(a.pids().unwrap().contains(&daemon.pid()));
    let pid = daemon.pid();
    drop(daemon);
    assert!(!pid_alive(pid));

    // A daemon that exits early is reported with its stderr.
    let failing = a
        .spawn("failing", "sh", ["-c", "echo broken config >&2; exit 3"])
        .unwrap();
    let err = failing
        .wait_for_output("ready", 5 * SECOND)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exit code 3") && err.contains("broken config"),
        "{err}"
    );

    // kill() is immediate (SIGKILL) and reaps.
    let victim = a.spawn("victim", "sleep", ["1000"]).unwrap();
    let status = victim.kill().expect("reaped");
    assert!(!status.success());
    assert!(!victim.is_running());
}

#[test]
fn commands_fail_with_their_stderr() {
    if !require_root("commands_fail_with_their_stderr") {
        return;
    }
    let topo = Topology::new("cmdfail").unwrap();
    let a = topo.add_netns("a").unwrap();
    let err = a.ip("link set nosuchdev up").unwrap_err().to_string();
    assert!(err.contains("nosuchdev"), "{err}");
    let out = a.output("sh", ["-c", "exit 4"], 5 * SECOND).unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(topo.veth(&a, "much-too-long-name", &a, "x").is_err());
}
