//! Namespace tests of operating a running service with `homeaddr-ctl`:
//! members joining under load, drain, weight, remove, refusals, reload,
//! metrics and the topology picture, all driven through the real CLI
//! binary against the real daemons.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use homeaddr_netns_tests::scenario::{self, Client};
use homeaddr_netns_tests::service::{KEY, Service, TUNNEL_PORT, bin};
use homeaddr_netns_tests::wan::{HostSpec, WAN_SUBNET};
use homeaddr_netns_tests::{Netns, require_root, testapp, ula, wait_until};
use serde_json::Value;

const POLL: Duration = Duration::from_millis(50);
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// What one `homeaddr-ctl` run printed and how it exited.
#[derive(Debug)]
struct Ctl {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ctl {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("ctl printed no JSON ({e}): {self:?}"))
    }
}

/// Run `homeaddr-ctl --control <socket> <args>`.
fn ctl_at(socket: &Path, args: &[&str]) -> Ctl {
    let out = Command::new(bin("homeaddr-ctl").expect("homeaddr-ctl is built"))
        .arg("--control")
        .arg(socket)
        .args(args)
        .output()
        .expect("homeaddr-ctl runs");
    let r = Ctl {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!(
        "$ homeaddr-ctl {}\n{}{}",
        args.join(" "),
        r.stdout,
        r.stderr
    );
    r
}

/// Run `homeaddr-ctl` against the AP; it must succeed.
fn ctl(svc: &Service, args: &[&str]) -> Ctl {
    let r = ctl_at(&svc.ap.control, args);
    assert_eq!(r.code, 0, "homeaddr-ctl {args:?} failed: {r:?}");
    r
}

/// The AP's member `id` as `homeaddr-ctl members --json` shows it.
fn member_row(svc: &Service, id: u16) -> Option<Value> {
    ctl_at(&svc.ap.control, &["members", "--json"])
        .json()
        .as_array()?
        .iter()
        .find(|m| m["id"].as_u64() == Some(u64::from(id)))
        .cloned()
}

fn member_num(svc: &Service, id: u16, field: &str) -> u64 {
    member_row(svc, id)
        .and_then(|m| m[field].as_u64())
        .unwrap_or(0)
}

/// The member that answers a fresh connection from client `index`.
fn who(svc: &Service, index: usize) -> String {
    scenario::who(svc, &svc.clients[index]).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A long session on one connection from client `index`, on a thread.
fn session(
    svc: &Service,
    index: usize,
    round_trips: usize,
) -> std::thread::JoinHandle<Result<testapp::RttReport, testapp::TestAppError>> {
    let server = svc.service_endpoint();
    svc.clients[index]
        .ns
        .spawn_thread("session", move || {
            testapp::rtt(server, round_trips, Duration::from_millis(50), OP_TIMEOUT)
        })
        .expect("session thread starts")
}

/// A 60-round-trip session from client `index`, once the AP counts a flow
/// on member 1 (where the client's connections go).
fn session_on_member1(
    svc: &Service,
    index: usize,
) -> std::thread::JoinHandle<Result<testapp::RttReport, testapp::TestAppError>> {
    let open = session(svc, index, 60);
    wait_until(
        Duration::from_secs(10),
        POLL,
        "the session on member 1",
        || member_num(svc, 1, "flows") >= 1,
    )
    .expect("session starts");
    open
}

/// An extra host on the WAN that runs no daemon yet.
fn bare_host(svc: &Service, name: &str, n: u16) -> (Netns, Ipv6Addr) {
    let ns = svc.topo.add_netns(name).expect("namespace");
    let addr = ula(WAN_SUBNET, n);
    svc.wan
        .attach(&HostSpec::new(name, ns.name(), addr))
        .expect("attach to the WAN");
    (ns, addr)
}

/// Start members 1..=n and `clients` legacy clients.
fn service(tag: &str, members: u16, clients: usize) -> Service {
    scenario::start_service(tag, members, &vec![Client::Legacy; clients])
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The CLI's tables, JSON, commands and errors against a live AP.
#[test]
fn ctl_lists_members_sets_weights_removes_and_fails_clearly() {
    if !require_root("ctl_lists_members_sets_weights_removes_and_fails_clearly") {
        return;
    }
    let svc = service("ctl", 2, 1);
    assert!(who(&svc, 0).starts_with("member"));

    let table = ctl(&svc, &["members"]).stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID  CARE-OF") && lines[0].contains("LIFETIME"),
        "{table}"
    );
    assert_eq!(lines.len(), 3, "header and two members: {table}");
    assert!(
        lines[1].contains("active") && lines[2].contains("active"),
        "{table}"
    );
    let rows = ctl(&svc, &["members", "--json"]).json();
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{rows}");
    assert!(rows[0]["lifetime_left_s"].as_f64().unwrap() > 0.0, "{rows}");

    // Weight, then the Maglev table follows it.
    ctl(&svc, &["weight", "2", "5"]);
    assert_eq!(member_num(&svc, 2, "weight"), 5);
    ctl(&svc, &["weight", "m2", "1"]);
    assert_eq!(member_num(&svc, 2, "weight"), 1);

    // Status, stats, flows, bindings all answer from the AP.
    assert!(ctl(&svc, &["status"]).stdout.contains("access-point"));
    let stats = ctl(&svc, &["stats", "--json"]).json();
    assert!(stats["legacy_in"].as_u64().unwrap() > 0, "{stats}");
    let flows = ctl(&svc, &["flows", "--json"]).json();
    assert!(flows["total"].as_u64().is_some(), "{flows}");
    ctl(&svc, &["bindings"]);

    // Clear errors with distinct exit statuses.
    let unknown = ctl_at(&svc.ap.control, &["drain", "9"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("unknown member m9"), "{unknown:?}");
    let absent = ctl_at(&svc.topo.dir().join("nobody.sock"), &["members"]);
    assert_eq!(absent.code, 3, "{absent:?}");
    assert!(absent.stderr.contains("is it running?"), "{absent:?}");
    let usage = ctl_at(&svc.ap.control, &["weight", "two", "1"]);
    assert_eq!(usage.code, 2, "{usage:?}");
    assert!(usage.stderr.contains("not a member id"), "{usage:?}");
    let not_here = ctl_at(&svc.members[&1].control, &["flows"]);
    assert_eq!(not_here.code, 1, "{not_here:?}");

    // A member's own socket: status and stats.
    let m = ctl_at(&svc.members[&1].control, &["stats", "--json"]);
    assert_eq!(m.code, 0, "{m:?}");
    assert!(m.json()["retransmissions"].as_u64().is_some(), "{m:?}");

    // Remove: the member is gone from the table at once.
    assert!(
        ctl(&svc, &["remove", "2"])
            .stdout
            .contains("member 2 removed")
    );
    assert!(member_row(&svc, 2).is_none(), "member 2 still listed");
    assert_eq!(who(&svc, 0), "member1");
}

/// Issue: a fourth member joins under load by just starting with the AP's
/// address and key; new clients reach it, no open connection breaks.
#[test]
fn a_fourth_member_joins_under_load_and_no_open_connection_breaks() {
    if !require_root("a_fourth_member_joins_under_load_and_no_open_connection_breaks") {
        return;
    }
    const CLIENTS: usize = 12;
    let mut svc = service("join", 3, CLIENTS);
    let before: Vec<String> = (0..CLIENTS).map(|c| who(&svc, c)).collect();
    let sessions: Vec<_> = (0..CLIENTS).map(|c| session(&svc, c, 60)).collect();
    wait_until(Duration::from_secs(10), POLL, "sessions under way", || {
        (1..=3).map(|id| member_num(&svc, id, "flows")).sum::<u64>() >= CLIENTS as u64
    })
    .expect("sessions start");

    svc.add_member(4, &[]).expect("member 4 joins");
    let m4 = member_row(&svc, 4).expect("homeaddr-ctl members lists member 4");
    assert_eq!(m4["state"], "active", "{m4}");
    assert!(ctl(&svc, &["members"]).stdout.lines().count() == 5);

    for (c, s) in sessions.into_iter().enumerate() {
        let report = s
            .join()
            .expect("session thread")
            .unwrap_or_else(|e| panic!("c{c}'s open connection broke when member 4 joined: {e}"));
        assert_eq!(report.rtt_us.len(), 60);
        assert_eq!(
            report.server, before[c],
            "c{c}'s open connection changed member"
        );
    }
    let after: Vec<String> = (0..CLIENTS).map(|c| who(&svc, c)).collect();
    println!("before: {before:?}\nafter:  {after:?}");
    assert!(
        after.iter().any(|w| w == "member4"),
        "no new connection reached member 4: {after:?}"
    );
    // Clients Maglev did not move stay where they were.
    for c in 0..CLIENTS {
        assert!(
            after[c] == before[c] || after[c] == "member4",
            "c{c} moved from {} to {}",
            before[c],
            after[c]
        );
    }
    assert!(member_num(&svc, 4, "packets_to") > 0);
}

/// Issue: draining members get no new clients and keep their open flows
/// until they end; `members` shows the countdown.
#[test]
fn drain_lets_open_flows_finish_and_sends_new_connections_elsewhere() {
    if !require_root("drain_lets_open_flows_finish_and_sends_new_connections_elsewhere") {
        return;
    }
    let svc = service("drain", 2, 6);
    let homes: Vec<String> = (0..6).map(|c| who(&svc, c)).collect();
    let Some(c) = homes.iter().position(|w| w == "member1") else {
        panic!("no client lands on member 1: {homes:?}");
    };
    let open = session_on_member1(&svc, c);

    let out = ctl(&svc, &["drain", "1", "--deadline", "120"]).stdout;
    assert!(out.contains("member 1 is draining"), "{out}");
    let m1 = member_row(&svc, 1).expect("member 1 listed");
    assert_eq!(m1["state"], "draining", "{m1}");
    assert_eq!(m1["weight"], 0, "{m1}");
    let left = m1["drain_deadline_s"].as_f64().expect("countdown");
    assert!(left > 100.0 && left <= 120.0, "{m1}");
    let table = ctl(&svc, &["members"]).stdout;
    assert!(
        table.contains("draining (") && table.contains(" left)"),
        "no countdown: {table}"
    );

    // New connections of the same client go to member 2 ...
    for _ in 0..3 {
        assert_eq!(
            who(&svc, c),
            "member2",
            "a new connection went to the draining member"
        );
    }
    // ... while the open one finishes on member 1.
    let report = open
        .join()
        .expect("session thread")
        .expect("the open connection survives the drain");
    assert_eq!(report.server, "member1");
    assert_eq!(report.rtt_us.len(), 60);
    wait_until(
        Duration::from_secs(30),
        POLL,
        "member 1's flows to end",
        || member_num(&svc, 1, "flows") == 0,
    )
    .expect("flows end");

    ctl(&svc, &["undrain", "1"]);
    assert_eq!(member_row(&svc, 1).unwrap()["state"], "active");
    assert_eq!(
        who(&svc, c),
        "member1",
        "undrained member gets its clients back"
    );
}

/// Issue: a member with an id clash is refused with a clear log line and
/// exit status 3; one with a wrong key (which only an unsigned, forgeable BA
/// 146 can answer) keeps retrying with backoff, says why in its log and
/// never registers; the AP logs who tried.
#[test]
fn wrong_key_and_id_clash_are_refused_and_the_ap_logs_who_tried() {
    if !require_root("wrong_key_and_id_clash_are_refused_and_the_ap_logs_who_tried") {
        return;
    }
    let svc = service("refuse", 1, 0);
    let start_member = |name: &str, n: u16, id: u16, key: &str| {
        let (ns, addr) = bare_host(&svc, name, n);
        let control = svc.topo.dir().join(format!("{name}.sock"));
        let args = svc.member_args(id, SocketAddr::new(addr.into(), TUNNEL_PORT), key, &control);
        let d = ns
            .spawn(name, bin("homeaddr-member").unwrap(), &args)
            .expect("member starts");
        (d, addr, ns)
    };
    let try_member = |name: &str, n: u16, id: u16, key: &str| {
        let (d, addr, ns) = start_member(name, n, id, key);
        let status = d
            .wait_timeout(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{name} was not refused: {}", d.stderr()));
        (status.code(), d.stderr(), addr, ns)
    };
    let wrong = KEY.replace('0', "f");
    let (bad, addr, _ns1) = start_member("badkey", 200, 7, &wrong);
    let warning = "the access point reports an authentication failure: check --key and --spi";
    wait_until(
        Duration::from_secs(20),
        POLL,
        "the wrong-key member to log the refusal twice (it retries)",
        || bad.stderr().matches(warning).count() >= 2,
    )
    .unwrap_or_else(|e| panic!("{e}: {}", bad.stderr()));
    assert!(
        bad.is_running(),
        "a forgeable BA 146 must not stop a member: {}",
        bad.stderr()
    );
    assert!(
        member_row(&svc, 7).is_none(),
        "the wrong-key member is not registered"
    );
    println!("wrong key:\n{}", bad.stderr());
    let (code, log, addr2, _ns2) = try_member("clash", 201, 1, KEY);
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("member id is in use"), "{log}");

    let ap_log = svc.ap.daemon().stderr();
    let refusals: Vec<&str> = ap_log
        .lines()
        .filter(|l| l.contains("refused a registration"))
        .collect();
    println!("AP log:\n{}", refusals.join("\n"));
    assert!(
        refusals.iter().any(|l| l.contains(&addr.to_string())),
        "the AP did not log the wrong-key attempt from {addr}: {ap_log}"
    );
    assert!(
        refusals.iter().any(|l| l.contains(&addr2.to_string())),
        "the AP did not log the id clash from {addr2}: {ap_log}"
    );
    // The running member 1 is untouched.
    let m1 = member_row(&svc, 1).expect("member 1");
    assert_eq!(m1["state"], "active");
    assert!(
        m1["care_of"]
            .as_str()
            .unwrap()
            .contains(&svc.members[&1].addr.to_string())
    );
}

/// `topology --dot`: every member and client with its traffic.
#[test]
fn topology_dot_shows_members_clients_and_traffic() {
    if !require_root("topology_dot_shows_members_clients_and_traffic") {
        return;
    }
    let mut svc = service("topo", 2, 1);
    svc.add_client(true, &[]).expect("shim client");
    for c in 0..2 {
        who(&svc, c);
    }
    let dot = ctl(&svc, &["topology", "--dot"]).stdout;
    assert!(dot.starts_with("digraph homeaddr {"), "{dot}");
    assert!(
        dot.contains("m1 [shape=box3d") && dot.contains("m2 [shape=box3d"),
        "{dot}"
    );
    assert!(dot.contains(&svc.clients[0].addr.to_string()), "{dot}");
    assert!(dot.contains("shim client"), "{dot}");
    assert!(dot.contains("ap -> m1"), "{dot}");

    // The tables behind the picture, from the AP, a member and the shim.
    let shim_addr = svc.clients[1].addr.to_string();
    assert!(ctl(&svc, &["bindings"]).stdout.contains(&shim_addr));
    assert!(ctl(&svc, &["flows", "-n", "5"]).stdout.contains("of"));
    assert!(
        ctl(&svc, &["stats"])
            .stdout
            .contains("drops.spoofed_source")
    );
    let served_by = svc.ap.status()["shim_clients"][0]["members"][0]
        .as_u64()
        .expect("the shim client has a member") as u16;
    let member = &svc.members[&served_by].control;
    let b = ctl_at(member, &["bindings"]);
    assert!(b.code == 0 && b.stdout.contains(&shim_addr), "{b:?}");
    for args in [["drain"], ["undrain"]] {
        assert_eq!(ctl_at(member, &args).code, 0);
    }
    assert_eq!(ctl_at(member, &["status"]).code, 0);
    let shim = ctl_at(&svc.clients[1].control, &["bindings"]);
    assert!(
        shim.code == 0 && shim.stdout.contains("CARE-OF"),
        "{shim:?}"
    );
    assert_eq!(ctl_at(&svc.clients[1].control, &["flows"]).code, 0);
    if Command::new("dot").arg("-V").output().is_ok() {
        let svg = svc.topo.dir().join("topology.svg");
        ctl(&svc, &["topology", "--svg", svg.to_str().unwrap()]);
        let text = std::fs::read_to_string(&svg).expect("svg written");
        assert!(text.contains("<svg"), "{text}");
    } else {
        println!("Graphviz not installed: --svg not exercised");
    }
}

/// `GET /metrics` from inside `host`'s namespace (the endpoint listens there).
fn scrape(ns: &Netns, port: u16) -> String {
    use std::io::{Read, Write};
    let answer = ns
        .enter(move || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(("::1", port))?;
            s.set_read_timeout(Some(OP_TIMEOUT))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .expect("enter the namespace")
        .expect("scrape the metrics endpoint");
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(
        answer.contains("application/openmetrics-text; version=1.0.0"),
        "{answer}"
    );
    answer.split_once("\r\n\r\n").expect("a body").1.to_string()
}

/// The value of the sample `series` (name with labels, as printed).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Issue: a Prometheus endpoint on each daemon; counters move with traffic;
/// histograms of return-routability latency and handoff time fill.
#[test]
fn metrics_counters_move_with_traffic_and_histograms_fill() {
    if !require_root("metrics_counters_move_with_traffic_and_histograms_fill") {
        return;
    }
    let mut svc = Service::start_with("metrics", &["--metrics", ":9470"]).expect("service");
    svc.add_member(1, &["--metrics", ":9471"])
        .expect("member 1");
    let legacy = svc.add_client(false, &[]).expect("legacy client");
    let shim = svc
        .add_client(true, &["--metrics", "[::1]:9472"])
        .expect("shim client");
    let before = scrape(&svc.ap.ns, 9470);
    assert!(
        before.contains("# TYPE homeaddr_ap_member_bytes counter"),
        "{before}"
    );
    assert_eq!(
        metric(
            &before,
            "homeaddr_ap_member_state{member=\"1\",state=\"active\"}"
        ),
        1.0
    );
    let to_m1 = "homeaddr_ap_member_bytes_total{member=\"1\",direction=\"to\"}";
    let legacy_in = "homeaddr_ap_forwarded_packets_total{path=\"legacy_in\"}";

    let server = svc.service_endpoint();
    let bytes = 1 << 20;
    let report = svc.clients[legacy]
        .ns
        .enter(|| testapp::put(server, bytes, Duration::from_secs(30)))
        .unwrap()
        .expect("upload through the AP");
    assert_eq!(report.server, "member1");
    let after = scrape(&svc.ap.ns, 9470);
    assert!(
        metric(&after, to_m1) >= metric(&before, to_m1) + bytes as f64,
        "bytes to member 1 did not grow by the upload"
    );
    assert!(metric(&after, legacy_in) > metric(&before, legacy_in) + 100.0);
    assert_eq!(metric(&after, "homeaddr_ap_members"), 1.0);
    // homeaddr-ctl metrics reads the same families over the control socket.
    let via_ctl = ctl(&svc, &["metrics"]).stdout;
    assert!(
        via_ctl.contains("# TYPE homeaddr_ap_flows gauge"),
        "{via_ctl}"
    );

    // Route optimization of the shim client: return-routability latency.
    svc.clients[shim]
        .ns
        .enter(|| testapp::who(server, OP_TIMEOUT))
        .unwrap()
        .expect("shim client reaches member 1");
    let m1 = &svc.members[&1];
    wait_until(
        Duration::from_secs(10),
        POLL,
        "an RR latency sample",
        || {
            metric(
                &scrape(&m1.ns, 9471),
                "homeaddr_member_return_routability_seconds_count",
            ) >= 1.0
        },
    )
    .expect("RR histogram fills");
    let text = scrape(&m1.ns, 9471);
    assert!(
        metric(
            &text,
            "homeaddr_member_return_routability_total{member=\"1\",result=\"success\"}"
        ) >= 1.0
    );
    assert!(metric(&text, "homeaddr_member_bindings{member=\"1\"}") >= 1.0);
    let shim_text = scrape(&svc.clients[shim].ns, 9472);
    assert!(
        metric(
            &shim_text,
            "homeaddr_shim_binding_updates_total{result=\"accepted\"}"
        ) >= 1.0
    );

    // A move: the bound shim's re-binding is a handoff sample.
    svc.move_member(1).expect("member 1 moves");
    let m1 = &svc.members[&1];
    wait_until(Duration::from_secs(15), POLL, "a handoff sample", || {
        metric(
            &scrape(&m1.ns, 9471),
            "homeaddr_member_handoff_seconds_count",
        ) >= 1.0
    })
    .expect("handoff histogram fills");
    let text = scrape(&m1.ns, 9471);
    let sum = metric(&text, "homeaddr_member_handoff_seconds_sum");
    assert!(sum > 0.0 && sum < 10.0, "{text}");
    assert_eq!(ctl_at(&m1.control, &["metrics"]).code, 0);
}

/// Sum of the AP's drop counters but `not_tunnelled` (the kernel's own
/// router solicitations and MLD reports on the TUN, never data).
fn ap_drops(svc: &Service) -> u64 {
    svc.ap.status()["counters"]["drops"]
        .as_object()
        .map(|d| {
            d.iter()
                .filter(|(reason, _)| *reason != "not_tunnelled")
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// Issue: config reload (SIGHUP or `homeaddr-ctl reload`) changes weights,
/// drain lists and keys without touching established flows; a broken file
/// is rejected with file, line and reason and the old config stays.
#[test]
fn reload_changes_weights_drains_and_keys_and_rejects_a_broken_line() {
    if !require_root("reload_changes_weights_drains_and_keys_and_rejects_a_broken_line") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("homeaddr-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ap.toml");
    std::fs::write(&file, "# homeaddr-ap\n").unwrap();
    let config = file.display().to_string();
    let mut svc = Service::start_with("reload", &["--config", &config]).expect("service");
    for id in 1..=2 {
        svc.add_member(id, &[]).expect("member");
    }
    for _ in 0..4 {
        svc.add_client(false, &[]).expect("legacy client");
    }
    let homes: Vec<String> = (0..4).map(|c| who(&svc, c)).collect();
    let c = homes
        .iter()
        .position(|w| w == "member1")
        .unwrap_or_else(|| panic!("no client on member 1: {homes:?}"));
    let drops = ap_drops(&svc);
    let open = session_on_member1(&svc, c);

    // Weight 0 for member 1 by `homeaddr-ctl reload`: new connections leave it.
    std::fs::write(&file, "[[member]]\nid = 1\nweight = 0\n").unwrap();
    let out = ctl(&svc, &["reload", "--json"]).json();
    assert_eq!(out["member_policies"], 1, "{out}");
    assert_eq!(member_num(&svc, 1, "weight"), 0);
    assert_eq!(who(&svc, c), "member2");

    // A broken line: rejected with file and line, the old config stays.
    std::fs::write(&file, "[[member]]\nid = 1\nweight = \"heavy\"\n").unwrap();
    let bad = ctl_at(&svc.ap.control, &["reload"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.stderr.contains(&format!("{config}:3"))
            && bad.stderr.contains("the old configuration stays in force"),
        "{bad:?}"
    );
    svc.ap.daemon().signal(libc::SIGHUP);
    wait_until(
        Duration::from_secs(10),
        POLL,
        "the AP to log the rejection",
        || {
            svc.ap
                .daemon()
                .stderr()
                .lines()
                .filter(|l| l.contains("configuration reload rejected"))
                .count()
                >= 2
        },
    )
    .expect("rejection logged");
    assert!(svc.ap.daemon().stderr().contains(&format!("{config}:3")));
    assert_eq!(
        member_num(&svc, 1, "weight"),
        0,
        "the broken file changed the weight"
    );

    // SIGHUP with a valid file: weight 3, member 2 drained by the drain list.
    std::fs::write(
        &file,
        "[[member]]\nid = 1\nweight = 3\n\n[[member]]\nid = 2\ndrain = true\n",
    )
    .unwrap();
    svc.ap.daemon().signal(libc::SIGHUP);
    wait_until(
        Duration::from_secs(10),
        POLL,
        "weight 3 and member 2 draining",
        || {
            member_num(&svc, 1, "weight") == 3
                && member_row(&svc, 2).is_some_and(|m| m["state"] == "draining")
        },
    )
    .expect("SIGHUP reload applied");
    let report = open
        .join()
        .expect("session thread")
        .expect("the open connection survives every reload");
    assert_eq!(
        (report.server.as_str(), report.rtt_us.len()),
        ("member1", 60)
    );
    assert_eq!(ap_drops(&svc), drops, "packets dropped during the reloads");

    // Off the drain list: active again. A new key: a member using it joins.
    let key2 = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
    std::fs::write(
        &file,
        format!("[[keys]]\nspi = 2\nkey = \"{key2}\"\n\n[[member]]\nid = 1\nweight = 3\n"),
    )
    .unwrap();
    ctl(&svc, &["reload"]);
    assert_eq!(member_row(&svc, 2).unwrap()["state"], "active");
    let (ns, addr) = bare_host(&svc, "newkey", 200);
    let care_of = SocketAddr::new(addr.into(), TUNNEL_PORT);
    let mut args = svc.member_args(5, care_of, key2, &svc.topo.dir().join("m5.sock"));
    args.extend(["--spi".into(), "2".into()]);
    let m5 = ns
        .spawn("homeaddr-member-5", bin("homeaddr-member").unwrap(), &args)
        .expect("member 5 starts");
    m5.wait_for_output("registered with the access point", Duration::from_secs(20))
        .expect("a member with the reloaded key registers");
    assert!(member_row(&svc, 5).is_some());
    drop(m5);
    let _ = std::fs::remove_dir_all(&dir);
}
