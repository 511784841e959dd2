//! A boringtun (user-space WireGuard) tunnel between two namespaces, the
//! encrypting baseline of `homeaddr-bench`.
//!
//! `boringtun-cli` runs in the foreground in each namespace and creates
//! its TUN there; `wg set` configures it over boringtun's UAPI socket
//! (`/var/run/wireguard/<interface>.sock`, a path shared by all
//! namespaces, so the interface names carry the bench's pid). Keys come
//! from `wg genkey`; the tunnel addresses are ULA.

use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use homeaddr_netns_tests::topology::Daemon;
use homeaddr_netns_tests::{Netns, Topology, testapp, wait_until};

/// The UDP port both ends listen on.
const WG_PORT: u16 = 51820;
/// Inner MTU: 1500 minus the WireGuard overhead over IPv6 (40 + 8 + 32).
const WG_MTU: u32 = 1420;
/// Where boringtun (and `wg`) keep the UAPI sockets.
const UAPI_DIR: &str = "/var/run/wireguard";

/// One end of the tunnel.
pub struct End<'a> {
    /// Its namespace.
    pub ns: &'a Netns,
    /// Its underlay address (the WireGuard endpoint).
    pub underlay: Ipv6Addr,
    /// Its tunnel address.
    pub tunnel: Ipv6Addr,
}

/// A running tunnel; dropping it stops both boringtun processes.
pub struct Tunnel {
    daemons: Vec<Daemon>,
    sockets: Vec<PathBuf>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.daemons.clear();
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

fn wg(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut child = Command::new("wg")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `wg` (install wireguard-tools)")?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "wg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Starts boringtun (`exe`) on `client` and `server`, client -> server
/// configured with an endpoint, and waits until a TCP request to
/// `[server.tunnel]:service_port` gets through (the handshake is done).
pub fn start(
    topo: &Topology,
    exe: &Path,
    client: End<'_>,
    server: End<'_>,
    service_port: u16,
) -> anyhow::Result<Tunnel> {
    let mut tunnel = Tunnel {
        daemons: Vec::new(),
        sockets: Vec::new(),
    };
    let ends = [("c", &client, &server), ("s", &server, &client)];
    let mut keys = Vec::new();
    for (side, _, _) in &ends {
        let private = wg(&["genkey"], None)?;
        let public = wg(&["pubkey"], Some(&private))?;
        let path = topo.dir().join(format!("wg-{side}.key"));
        std::fs::write(&path, format!("{private}\n"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        keys.push((path, public));
    }
    for (i, (side, me, peer)) in ends.iter().enumerate() {
        let ifname = format!("hab{}{side}", std::process::id());
        let socket = Path::new(UAPI_DIR).join(format!("{ifname}.sock"));
        tunnel.sockets.push(socket.clone());
        let log = topo.dir().join(format!("boringtun-{side}.log"));
        let d = me.ns.spawn(
            &format!("boringtun-{side}"),
            exe,
            [
                "--foreground",
                "--disable-drop-privileges",
                "--log",
                &log.display().to_string(),
                &ifname,
            ],
        )?;
        tunnel.daemons.push(d);
        wait_until(
            Duration::from_secs(10),
            Duration::from_millis(10),
            "the boringtun UAPI socket",
            || socket.exists() && me.ns.ip(&format!("link show dev {ifname}")).is_ok(),
        )?;
        let key = keys[i].0.display().to_string();
        let peer_key = &keys[1 - i].1;
        let port = WG_PORT.to_string();
        let allowed = format!("{}/128", peer.tunnel);
        let endpoint = SocketAddr::new(peer.underlay.into(), WG_PORT).to_string();
        let mut args = vec![
            "set",
            &ifname,
            "private-key",
            &key,
            "listen-port",
            &port,
            "peer",
            peer_key,
            "allowed-ips",
            &allowed,
        ];
        if *side == "c" {
            args.extend(["endpoint", &endpoint]);
        }
        me.ns.run("wg", &args)?;
        me.ns.set_mtu(&ifname, WG_MTU)?;
        me.ns.link_up(&ifname)?;
        me.ns.add_addr(&ifname, me.tunnel, 64)?;
    }
    let target = SocketAddr::new(server.tunnel.into(), service_port);
    wait_until(
        Duration::from_secs(15),
        Duration::from_millis(50),
        "a request through boringtun",
        || {
            client
                .ns
                .enter(|| testapp::who(target, Duration::from_secs(1)).is_ok())
                .unwrap_or(false)
        },
    )?;
    Ok(tunnel)
}
