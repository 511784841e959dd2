//! BIRD 2 in the namespaces: the configs of an AP host and of the router,
//! and a running `bird` with its `birdc`.
//!
//! An AP host's BIRD learns the home address's route from the kernel
//! (`learn` in its kernel protocol): the route `HOA/128 dev <tun>` that
//! `homeaddr-ap` installs into its TUN and that disappears with the TUN
//! when the daemon dies. Its BGP protocol `uplink` announces exactly that
//! route to the router by eBGP, so the AP withdraws itself at once when its
//! daemon dies (or when a health hook disables `uplink`), and the router
//! drops it after the hold time when the whole host goes silent. The
//! router's BIRD accepts only the home address from its AP peers and its
//! kernel protocol merges the equal routes into one multipath route
//! (`merge paths on`), which the kernel hashes on L4
//! (`net.ipv6.fib_multipath_hash_policy = 1`).
//!
//! docs/OPERATING.md ("Several access points") shows these configs.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::topology::{Daemon, Netns};
use crate::wait_until;

/// BGP hold time of every session: the router drops a silent AP after it.
pub const HOLD_TIME: Duration = Duration::from_secs(3);
/// BGP keepalive interval (a third of the hold time).
pub const KEEPALIVE: Duration = Duration::from_secs(1);
/// The router's AS number; AP host `a` (1-based) has `AP_AS_BASE + a`.
pub const ROUTER_AS: u32 = 65000;
/// AP host `a` (1-based) is in AS `AP_AS_BASE + a` (private ASNs).
pub const AP_AS_BASE: u32 = 65000;
/// The name of an AP host's announcing BGP protocol (what a health hook
/// disables and enables).
pub const UPLINK: &str = "uplink";
/// How long a BGP session may take to come up.
pub const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(20);

/// The session timers every config uses (hold time, keepalive, and fast
/// (re)connects: the defaults wait 5 s before the first connect and up to
/// 60 s after an error).
fn timers() -> String {
    format!(
        "  hold time {};\n  keepalive time {};\n  connect delay time 1;\n  connect retry time 1;\n  error wait time 1, 5;\n",
        HOLD_TIME.as_secs(),
        KEEPALIVE.as_secs()
    )
}

/// The BIRD config of an AP host: learn `home_address`/128 from the kernel
/// and announce it over `uplink` from `local` (AS `local_as`) to the router
/// at `router` (AS [`ROUTER_AS`]). `router_id` is any unique IPv4-form id.
pub fn ap_config(
    router_id: std::net::Ipv4Addr,
    home_address: Ipv6Addr,
    local: Ipv6Addr,
    local_as: u32,
    router: Ipv6Addr,
) -> String {
    format!(
        "# homeaddr AP host: announce the home address while homeaddr-ap serves it\n\
         log stderr all;\n\
         router id {router_id};\n\
         define HOME_ADDRESS = {home_address}/128;\n\
         \n\
         protocol device {{ }}\n\
         \n\
         # The route homeaddr-ap installs into its TUN (gone with the daemon).\n\
         protocol kernel {{\n  ipv6 {{ import where net = HOME_ADDRESS; export none; }};\n  learn;\n  scan time 1;\n}}\n\
         \n\
         protocol bgp {UPLINK} {{\n  local {local} as {local_as};\n  neighbor {router} as {ROUTER_AS};\n{}  ipv6 {{ import none; export where net = HOME_ADDRESS; }};\n}}\n",
        timers()
    )
}

/// One AP peer of the router: protocol name, address, AS.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The BGP protocol's name on the router (`ap1`, ...).
    pub name: String,
    /// The AP host's address on the shared LAN.
    pub addr: Ipv6Addr,
    /// Its AS.
    pub asn: u32,
}

/// The router's BIRD config: one eBGP session per AP peer from `local`,
/// accepting only `home_address`/128, and a kernel protocol that installs
/// the equal routes as one multipath route.
pub fn router_config(
    router_id: std::net::Ipv4Addr,
    home_address: Ipv6Addr,
    local: Ipv6Addr,
    peers: &[Peer],
) -> String {
    let mut s = format!(
        "# router: ECMP over every AP that announces the home address\n\
         log stderr all;\n\
         router id {router_id};\n\
         define HOME_ADDRESS = {home_address}/128;\n\
         \n\
         protocol device {{ }}\n\
         \n\
         protocol kernel {{\n  ipv6 {{ import none; export where source = RTS_BGP; }};\n  merge paths on;\n}}\n\
         \n\
         template bgp access_point {{\n  local {local} as {ROUTER_AS};\n{}  ipv6 {{ import where net = HOME_ADDRESS; export none; }};\n}}\n",
        timers()
    );
    for p in peers {
        s.push_str(&format!(
            "\nprotocol bgp {} from access_point {{ neighbor {} as {}; }}\n",
            p.name, p.addr, p.asn
        ));
    }
    s
}

/// A running `bird -f` in a namespace, its config, control socket and
/// pid file in `<dir>/bird-<label>.*`; stopped on drop (it is a [`Daemon`]).
#[derive(Debug)]
pub struct Bird {
    /// The process (stderr has BIRD's log).
    pub daemon: Daemon,
    /// The control socket `birdc -s` talks to.
    pub socket: PathBuf,
    /// The config file.
    pub config: PathBuf,
}

impl Bird {
    /// Writes `config` to `<dir>/bird-<label>.conf` and starts BIRD in
    /// `ns` on it; returns once its control socket answers.
    pub fn start(ns: &Netns, dir: &Path, label: &str, config: &str) -> anyhow::Result<Self> {
        let conf = dir.join(format!("bird-{label}.conf"));
        let socket = dir.join(format!("bird-{label}.ctl"));
        let pid = dir.join(format!("bird-{label}.pid"));
        std::fs::write(&conf, config)?;
        let _ = std::fs::remove_file(&socket);
        let daemon = ns.spawn(
            &format!("bird-{label}"),
            "bird",
            [
                "-f".as_ref(),
                "-c".as_ref(),
                conf.as_os_str(),
                "-s".as_ref(),
                socket.as_os_str(),
                "-P".as_ref(),
                pid.as_os_str(),
            ],
        )?;
        let bird = Self {
            daemon,
            socket,
            config: conf,
        };
        wait_until(
            Duration::from_secs(10),
            Duration::from_millis(20),
            &format!("bird {label} to answer on its control socket"),
            || bird.daemon.is_running() && bird.birdc(&["show", "status"]).is_ok(),
        )
        .map_err(|e| anyhow::anyhow!("{e}; bird's stderr:\n{}", bird.daemon.stderr()))?;
        Ok(bird)
    }

    /// Runs `birdc -s <socket> <args>` and returns its output; a failure
    /// (exit status, or BIRD's `syntax error`/`unknown` answers) is an error.
    pub fn birdc(&self, args: &[&str]) -> anyhow::Result<String> {
        birdc(&self.socket, args)
    }

    /// The state column and info of protocol `name` (`up Established`,
    /// `start Active`, `down`...), as `show protocols` prints them.
    pub fn protocol(&self, name: &str) -> anyhow::Result<String> {
        let out = self.birdc(&["show", "protocols", name])?;
        protocol_line(&out, name)
            .ok_or_else(|| anyhow::anyhow!("bird shows no protocol {name}:\n{out}"))
    }

    /// Whether BGP protocol `name` is up with its session established.
    pub fn established(&self, name: &str) -> bool {
        self.protocol(name)
            .is_ok_and(|s| s.starts_with("up") && s.contains("Established"))
    }

    /// Waits until BGP protocol `name` is established; how long it took.
    pub fn wait_established(&self, name: &str, timeout: Duration) -> anyhow::Result<Duration> {
        wait_until(
            timeout,
            Duration::from_millis(20),
            &format!("BGP session {name} established"),
            || self.established(name),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}; now: {:?}; bird's log:\n{}",
                self.protocol(name),
                self.daemon.stderr()
            )
        })
    }
}

/// `birdc -s socket args` (see [`Bird::birdc`]).
pub fn birdc(socket: &Path, args: &[&str]) -> anyhow::Result<String> {
    // `timeout`: a frozen BIRD (SIGSTOP) would block birdc for ever.
    let out = Command::new("timeout")
        .args(["5", "birdc", "-s"])
        .arg(socket)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run timeout birdc (install coreutils, bird2): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.contains("syntax error") || text.contains("Unable to connect")
    {
        anyhow::bail!(
            "birdc -s {} {}: {}{}",
            socket.display(),
            args.join(" "),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text)
}

/// From `show protocols` output, the state and info of protocol `name`:
/// the columns after Name, Proto, Table and State's `Since` are dropped.
fn protocol_line(out: &str, name: &str) -> Option<String> {
    out.lines().find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // Name Proto Table State Since(1 or 2 words) Info...
        (cols.first() == Some(&name) && cols.len() >= 4).then(|| {
            let state = cols[3];
            let info: Vec<&str> = cols[4..]
                .iter()
                .copied()
                .filter(|c| !c.contains(':') && !c.contains('-'))
                .collect();
            format!("{state} {}", info.join(" ")).trim().to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x4841, 0xaaaa, 0, 0, 0, 0, 1);

    fn lan(host: u16) -> Ipv6Addr {
        crate::ula(2, host)
    }

    #[test]
    fn protocol_lines_parse() {
        let out = "BIRD 2.0.12 ready.\n\
                   Name       Proto      Table      State  Since         Info\n\
                   ap1        BGP        ---        up     06:05:57.425  Established   \n\
                   ap2        BGP        ---        start  06:05:57.440  Active        Socket: Connection refused\n\
                   uplink     BGP        ---        down   2026-12-02 06:05:57  \n";
        assert_eq!(protocol_line(out, "ap1").unwrap(), "up Established");
        assert!(
            protocol_line(out, "ap2")
                .unwrap()
                .starts_with("start Active")
        );
        assert_eq!(protocol_line(out, "uplink").unwrap(), "down");
        assert!(protocol_line(out, "ap3").is_none());
    }

    #[test]
    fn configs_name_the_hold_time_and_the_home_address() {
        let ap = ap_config([198, 18, 0, 11].into(), HOA, lan(0x11), 65001, lan(1));
        assert!(ap.contains("hold time 3;"), "{ap}");
        assert!(ap.contains("keepalive time 1;"), "{ap}");
        assert!(ap.contains("learn;"), "{ap}");
        assert!(ap.contains("define HOME_ADDRESS = fd00:4841:aaaa::1/128;"));
        let peers = [Peer {
            name: "ap1".into(),
            addr: lan(0x11),
            asn: 65001,
        }];
        let router = router_config([198, 18, 0, 1].into(), HOA, lan(1), &peers);
        assert!(router.contains("merge paths on;"), "{router}");
        assert!(
            router.contains(
                "protocol bgp ap1 from access_point { neighbor fd00:4841:2::11 as 65001; }"
            )
        );
    }

    /// BIRD itself accepts both configs (`bird -p` only parses), when
    /// installed (the README's commands install bird2).
    #[test]
    fn bird_parses_both_configs() {
        if Command::new("bird").arg("--version").output().is_err() {
            eprintln!("SKIPPED: bird is not installed (apt-get install bird2)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("homeaddr-bird-parse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let peers: Vec<Peer> = (1..=2)
            .map(|a| Peer {
                name: format!("ap{a}"),
                addr: lan(0x10 + a),
                asn: AP_AS_BASE + u32::from(a),
            })
            .collect();
        for (name, conf) in [
            (
                "ap",
                ap_config([198, 18, 0, 11].into(), HOA, lan(0x11), 65001, lan(1)),
            ),
            (
                "router",
                router_config([198, 18, 0, 1].into(), HOA, lan(1), &peers),
            ),
        ] {
            let path = dir.join(format!("{name}.conf"));
            std::fs::write(&path, conf).unwrap();
            let out = Command::new("bird")
                .arg("-p")
                .arg("-c")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "bird -p rejects the {name} config: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
