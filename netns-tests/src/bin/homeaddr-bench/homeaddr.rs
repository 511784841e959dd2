//! homeaddr's daemons on the bench: which sets of binaries and protection
//! modes get rows, starting the AP, the member and the shim of one set
//! (the shim bound to the member before anything is measured), and their
//! I/O batching counters.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use homeaddr_netns_tests::service::{HOME_ADDRESS, KEY, SERVICE_PORT, TUNNEL_PORT, bin};
use homeaddr_netns_tests::topology::Daemon;
use homeaddr_netns_tests::{testapp, ula, wait_until};

use crate::topology::{Bed, CLIENT_NET, SERVER_NET};

const DAEMONS: [&str; 3] = ["homeaddr-ap", "homeaddr-member", "homeaddr-shim"];

/// The label of the rows of the current daemons, encrypting, with busy
/// polling off (`--busy-poll-us 0`).
pub const NO_BUSY_POLL: &str = "encrypt, no busy-poll";

/// The label of the rows of the current daemons, encrypting, the member
/// with `--direct-return` (legacy answers leave natively, past the member
/// daemon and the AP).
pub const DIRECT_RETURN: &str = "encrypt, direct return";

/// The label of the rows of the v1 daemons from `HOMEADDR_V1_BIN_DIR`.
pub const V1: &str = "none (v1)";

/// A daemon binary: from `dir` when given, else from `HOMEADDR_BIN_DIR`
/// (or next to this program).
fn daemon_bin(dir: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    match dir {
        None => bin(name),
        Some(dir) => {
            let path = dir.join(name);
            anyhow::ensure!(path.exists(), "{} not found", path.display());
            Ok(path)
        }
    }
}

/// Whether all three daemons list `--protection` in their `--help`.
fn daemons_offer_protection(dir: Option<&Path>) -> anyhow::Result<bool> {
    for name in DAEMONS {
        let out = Command::new(daemon_bin(dir, name)?)
            .arg("--help")
            .output()?;
        let help = String::from_utf8_lossy(&out.stdout);
        if !help.contains("--protection") {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One set of homeaddr rows: which binaries, started with which
/// `--protection` (none: the flag is not passed), under which label.
pub struct DaemonSet {
    pub label: &'static str,
    pub protection: Option<&'static str>,
    /// More flags for all three daemons.
    pub extra: &'static [&'static str],
    /// More flags for the member only.
    pub member_extra: &'static [&'static str],
    /// `None`: the daemons of `HOMEADDR_BIN_DIR`.
    pub dir: Option<PathBuf>,
}

/// The current daemons once per protection mode they offer (or once as
/// "v1 (unprotected)" when they have no `--protection`), then the v1
/// daemons of `HOMEADDR_V1_BIN_DIR` when set and usable (else a note).
pub fn daemon_sets() -> anyhow::Result<Vec<DaemonSet>> {
    let mut sets = if daemons_offer_protection(None)? {
        vec![
            DaemonSet {
                label: "encrypt",
                protection: Some("encrypt"),
                extra: &[],
                member_extra: &[],
                dir: None,
            },
            // What busy polling buys: the same daemons without it.
            DaemonSet {
                label: NO_BUSY_POLL,
                protection: Some("encrypt"),
                extra: &["--busy-poll-us", "0"],
                member_extra: &[],
                dir: None,
            },
            DaemonSet {
                label: DIRECT_RETURN,
                protection: Some("encrypt"),
                extra: &[],
                member_extra: &["--direct-return"],
                dir: None,
            },
            DaemonSet {
                label: "integrity",
                protection: Some("integrity"),
                extra: &[],
                member_extra: &[],
                dir: None,
            },
        ]
    } else {
        vec![DaemonSet {
            label: "v1 (unprotected)",
            protection: None,
            extra: &[],
            member_extra: &[],
            dir: None,
        }]
    };
    match std::env::var_os("HOMEADDR_V1_BIN_DIR").map(PathBuf::from) {
        None => eprintln!(
            "homeaddr-bench: HOMEADDR_V1_BIN_DIR not set: no \"{V1}\" rows (scripts/bench builds the v1 daemons)"
        ),
        Some(dir) => match daemons_offer_protection(Some(&dir)) {
            Ok(false) => sets.push(DaemonSet {
                label: V1,
                protection: None,
                extra: &[],
                member_extra: &[],
                dir: Some(dir),
            }),
            Ok(true) => eprintln!(
                "homeaddr-bench: the daemons in {} offer --protection, they are not v1: no \"{V1}\" rows",
                dir.display()
            ),
            Err(e) => eprintln!(
                "homeaddr-bench: no \"{V1}\" rows: the daemons in {}: {e:#}",
                dir.display()
            ),
        },
    }
    Ok(sets)
}

/// The AP, the member and the shim of `set`, started with its protection
/// (the flag only when given), the shim bound to the member.
pub struct Homeaddr {
    daemons: Vec<Daemon>,
    sockets: Vec<(&'static str, PathBuf)>,
}

impl Homeaddr {
    /// Stops the shim first, the AP last.
    pub fn stop(mut self) {
        while let Some(d) = self.daemons.pop() {
            drop(d);
        }
    }
}

/// Starts the daemons of `set` (`run_no` keeps control socket paths
/// fresh) and binds the shim to the member.
pub fn start(bed: &Bed, set: &DaemonSet, run_no: u32) -> anyhow::Result<Homeaddr> {
    let dir_bin = |name: &str| daemon_bin(set.dir.as_deref(), name);
    let dir = bed.topo.dir().to_path_buf();
    // Fresh control socket paths each start: a stopped daemon's may linger.
    let sock = |name: &str| dir.join(format!("{name}-{run_no}.sock"));
    let ap_ep = SocketAddr::new(ula(SERVER_NET, 2).into(), TUNNEL_PORT);
    let mut common: Vec<String> = Vec::new();
    if let Some(p) = set.protection {
        common.extend(["--protection".into(), p.into()]);
    }
    common.extend(set.extra.iter().map(|a| a.to_string()));
    let warn = ["--log-level".to_string(), "warn".into()];
    let mut daemons = Vec::new();
    let mut args = vec![
        "--home-address".to_string(),
        HOME_ADDRESS.to_string(),
        "--key".into(),
        KEY.into(),
        "--listen".into(),
        ap_ep.to_string(),
        "--control".into(),
        sock("ap").display().to_string(),
    ];
    args.extend(common.clone());
    args.extend(warn.clone());
    let d = bed.ap.spawn("ap", &dir_bin("homeaddr-ap")?, &args)?;
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "AP control socket",
        || sock("ap").exists(),
    )?;
    daemons.push(d);
    let mut args = vec![
        "--id".to_string(),
        "1".into(),
        "--home-address".into(),
        HOME_ADDRESS.to_string(),
        "--access-point".into(),
        ap_ep.to_string(),
        "--care-of".into(),
        format!("[{}]:{TUNNEL_PORT}", ula(SERVER_NET, 3)),
        "--key".into(),
        KEY.into(),
        "--control".into(),
        sock("m1").display().to_string(),
    ];
    args.extend(common.clone());
    args.extend(set.member_extra.iter().map(|a| a.to_string()));
    // The readiness line is logged at info.
    args.extend(["--log-level".into(), "info".into()]);
    let d = bed
        .member
        .spawn("member", &dir_bin("homeaddr-member")?, &args)?;
    d.wait_for_output("registered with the access point", Duration::from_secs(10))?;
    daemons.push(d);
    let mut args = vec![
        "--home-address".to_string(),
        HOME_ADDRESS.to_string(),
        "--access-point".into(),
        ap_ep.to_string(),
        "--local".into(),
        format!("[{}]:0", ula(CLIENT_NET, 3)),
        "--control".into(),
        sock("shim").display().to_string(),
    ];
    args.extend(common);
    args.extend(warn);
    let d = bed.shim.spawn("shim", &dir_bin("homeaddr-shim")?, &args)?;
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "shim control socket",
        || sock("shim").exists(),
    )?;
    daemons.push(d);
    // The shim's first connection binds it to the member.
    let hoa = SocketAddr::new(HOME_ADDRESS.into(), SERVICE_PORT);
    let _ = bed
        .shim
        .enter(|| testapp::who(hoa, Duration::from_secs(5)))?;
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "shim binding",
        || {
            raw_status(&sock("shim"))
                .is_ok_and(|v| v["bindings"].as_array().is_some_and(|b| !b.is_empty()))
        },
    )?;
    Ok(Homeaddr {
        daemons,
        sockets: vec![
            ("ap", sock("ap")),
            ("member", sock("m1")),
            ("shim", sock("shim")),
        ],
    })
}

/// A daemon's `status` result as plain JSON, read off the control socket
/// without the typed client: the v1 daemons' status lacks fields the
/// current types require (a member's `aps`), and the bench reads only
/// counters both versions have.
fn raw_status(sock: &Path) -> anyhow::Result<serde_json::Value> {
    let mut stream = UnixStream::connect(sock)
        .with_context(|| format!("cannot connect to {}", sock.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(stream, "{}", homeaddr_control::Request::Status.to_line())?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let mut v: serde_json::Value = serde_json::from_str(&line)
        .with_context(|| format!("{}: not JSON: {line}", sock.display()))?;
    anyhow::ensure!(
        v["ok"] == serde_json::Value::Bool(true),
        "{}: {line}",
        sock.display()
    );
    Ok(v["result"].take())
}

/// One daemon's I/O batching, from its status.
pub struct IoRow {
    protection: String,
    daemon: &'static str,
    tun_per_read: f64,
    tun_written: u64,
    udp_per_recv: f64,
    udp_per_send: f64,
}

/// The I/O batching counters of the three daemons of `h`.
pub fn io_rows(h: &Homeaddr, protection: &str) -> anyhow::Result<Vec<IoRow>> {
    let mut rows = Vec::new();
    for (daemon, sock) in &h.sockets {
        let v = raw_status(sock)?;
        let io = &v["io"];
        let per = |k: &str, a: &str, b: &str| {
            let (x, y) = (
                io[k][a].as_f64().unwrap_or(0.0),
                io[k][b].as_f64().unwrap_or(0.0),
            );
            if y > 0.0 { x / y } else { 0.0 }
        };
        rows.push(IoRow {
            protection: protection.to_string(),
            daemon,
            tun_per_read: per("tun", "rx_packets", "rx_reads"),
            tun_written: io["tun"]["tx_packets"].as_u64().unwrap_or(0),
            udp_per_recv: per("udp", "rx_datagrams", "rx_syscalls"),
            udp_per_send: per("udp", "tx_datagrams", "tx_syscalls"),
        });
    }
    Ok(rows)
}

/// The I/O table: batching per daemon and protection mode (last round).
pub fn print_io(io: &[IoRow]) {
    println!();
    println!(
        "| protection            | daemon | TUN packets/read | TUN packets written | UDP datagrams/recv | UDP datagrams/send |"
    );
    println!(
        "|-----------------------|--------|-----------------:|--------------------:|-------------------:|-------------------:|"
    );
    for r in io {
        println!(
            "| {:<21} | {:<6} | {:>16.1} | {:>19} | {:>18.1} | {:>18.1} |",
            r.protection, r.daemon, r.tun_per_read, r.tun_written, r.udp_per_recv, r.udp_per_send,
        );
    }
}
