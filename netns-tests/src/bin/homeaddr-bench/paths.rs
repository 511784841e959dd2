//! The measured paths: which client namespace sends to which address, and
//! the peers (haproxy, boringtun) that stay up for the whole run.
//!
//! - direct kernel path: legacy client -> the member's own address, the
//!   router forwarding in the kernel;
//! - haproxy: legacy client -> haproxy's service address on the router,
//!   a second TCP connection from there to the member's own address;
//! - boringtun: legacy client -> the member's tunnel address, user-space
//!   WireGuard between the two (crossing the router as UDP);
//! - legacy client via the AP: legacy client -> the home address, routed
//!   by the router to the AP, tunnelled by it to the member;
//! - shim, route-optimized: the shim client -> the home address,
//!   tunnelled by its shim straight to the member once bound.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use homeaddr_netns_tests::service::{HOME_ADDRESS, SERVICE_PORT};
use homeaddr_netns_tests::topology::Daemon;
use homeaddr_netns_tests::{Netns, ula};

use crate::topology::{Bed, CLIENT_NET, SERVER_NET, WG_NET, haproxy_addr, member_addr};
use crate::{boringtun, haproxy};

pub const DIRECT: &str = "direct kernel path";
pub const HAPROXY: &str = "haproxy TCP on the router";
pub const BORINGTUN: &str = "boringtun (WireGuard)";
pub const LEGACY: &str = "legacy client via the AP";
pub const RO: &str = "shim, route-optimized";

/// One measured path.
pub struct Path<'a> {
    pub label: &'static str,
    pub protection: &'static str,
    pub client: &'a Netns,
    pub target: IpAddr,
}

/// The peers running for the whole run (each `None` when not available).
pub struct Peers {
    haproxy: Option<Daemon>,
    boringtun: Option<boringtun::Tunnel>,
}

/// Starts haproxy on the router (when `haproxy` runs) and boringtun
/// between the legacy client and the member (when `BORINGTUN` names it).
pub fn start_peers(bed: &Bed) -> anyhow::Result<Peers> {
    let haproxy = if Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        Some(haproxy::start(
            &bed.topo,
            &bed.router,
            &bed.legacy,
            haproxy_addr(),
            member_addr(),
        )?)
    } else {
        eprintln!("homeaddr-bench: no haproxy: no haproxy row (scripts/bench installs it)");
        None
    };
    let boringtun = match std::env::var_os("BORINGTUN").map(PathBuf::from) {
        Some(exe) => Some(boringtun::start(
            &bed.topo,
            &exe,
            boringtun::End {
                ns: &bed.legacy,
                underlay: ula(CLIENT_NET, 2),
                tunnel: ula(WG_NET, 1),
            },
            boringtun::End {
                ns: &bed.member,
                underlay: ula(SERVER_NET, 3),
                tunnel: ula(WG_NET, 2),
            },
            SERVICE_PORT,
        )?),
        None => {
            eprintln!(
                "homeaddr-bench: BORINGTUN not set: no boringtun row (scripts/bench installs it)"
            );
            None
        }
    };
    Ok(Peers { haproxy, boringtun })
}

/// The direct path and the peers' paths.
pub fn peer_paths<'a>(bed: &'a Bed, peers: &Peers) -> Vec<Path<'a>> {
    let mut paths = vec![Path {
        label: DIRECT,
        protection: "none",
        client: &bed.legacy,
        target: member_addr().into(),
    }];
    if peers.haproxy.is_some() {
        paths.push(Path {
            label: HAPROXY,
            protection: "none",
            client: &bed.legacy,
            target: haproxy_addr().into(),
        });
    }
    if peers.boringtun.is_some() {
        paths.push(Path {
            label: BORINGTUN,
            protection: "ChaCha20-Poly1305",
            client: &bed.legacy,
            target: ula(WG_NET, 2).into(),
        });
    }
    paths
}

/// homeaddr's two paths, labelled with the protection of its daemons.
pub fn homeaddr_paths<'a>(bed: &'a Bed, protection: &'static str) -> [Path<'a>; 2] {
    [
        Path {
            label: LEGACY,
            protection,
            client: &bed.legacy,
            target: HOME_ADDRESS.into(),
        },
        Path {
            label: RO,
            protection,
            client: &bed.shim,
            target: HOME_ADDRESS.into(),
        },
    ]
}
