//! Several access points behind a real router, in namespaces.
//!
//! ```text
//!  client LAN fd00:4841:1::/64          server LAN fd00:4841:2::/64
//!  c0..cK-1 ::10+i, shim ::2  --(eth1) router (eth2)--  ap1.. ::11.., m1.. ::101..
//!                               ::1    ECMP    ::1
//! ```
//!
//! Each LAN is a bridge in its own switch namespace ([`Topology::lan`]);
//! hosts that come later join it ([`Topology::join_lan`]). The router
//! forwards IPv6 with the L4 multipath hash policy and routes the home
//! address over the APs ([`router`]): a static multipath route the test
//! changes itself ([`Routing::StaticEcmp`]), or the one BIRD installs from
//! the APs' eBGP announcements ([`Routing::Bird`], [`bird`]). Every AP host
//! runs `homeaddr-ap` on its LAN address; members run `homeaddr-member`,
//! registered with every AP (`--access-point` once per AP) unless the
//! config says otherwise, and `homeaddr-testapp serve` as `member<id>`;
//! the shim client runs `homeaddr-shim` with AP 1. Long transfers and the
//! new-connection probe are in [`transfer`].
//!
//! Everything lives in one [`Topology`]: a panic anywhere stops every
//! daemon (BIRD too) and deletes the namespaces; logs, BIRD configs and
//! sockets are in its directory.

pub mod bird;
mod build;
pub mod router;
pub mod transfer;

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use homeaddr_control::{MemberRow, MemberState, Request};

use crate::service::{HOME_ADDRESS, Host, SERVICE_PORT, TUNNEL_PORT};
use crate::topology::{Netns, Topology};
use crate::{ula, wait_until};
use bird::Bird;
use router::Router;

/// The client LAN's subnet (`fd00:4841:1::/64`).
pub const CLIENT_LAN: u16 = 1;
/// The server LAN's subnet (`fd00:4841:2::/64`).
pub const SERVER_LAN: u16 = 2;
/// How long members may take to register with an AP.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(20);

/// AP `a`'s (1-based) address on the server LAN.
pub fn ap_addr(a: usize) -> Ipv6Addr {
    ula(SERVER_LAN, 0x10 + a as u16)
}

/// Member `id`'s address on the server LAN (its care-of address).
pub fn member_addr(id: u16) -> Ipv6Addr {
    ula(SERVER_LAN, 0x100 + id)
}

/// Legacy client `i`'s (0-based) address on the client LAN.
pub fn client_addr(i: usize) -> Ipv6Addr {
    ula(CLIENT_LAN, 0x10 + i as u16)
}

/// The shim client's address on the client LAN.
pub fn shim_addr() -> Ipv6Addr {
    ula(CLIENT_LAN, 2)
}

/// How the router routes the home address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// A kernel multipath route the test sets and changes.
    StaticEcmp,
    /// BIRD on the router and on every AP host, eBGP.
    Bird,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Access points (hosts `ap1`..).
    pub aps: usize,
    /// Members `1..=members`.
    pub members: u16,
    /// Legacy clients `c0`..
    pub legacy_clients: usize,
    /// A shim client `shim` (with AP 1).
    pub shim_client: bool,
    /// How the router routes the home address.
    pub routing: Routing,
    /// APs (1-based) a member registers with; members not listed register
    /// with every AP.
    pub member_aps: BTreeMap<u16, Vec<usize>>,
    /// Static mode: the APs in the route at the start (default: all).
    pub routed_aps: Option<Vec<usize>>,
}

impl ClusterConfig {
    /// `aps` APs, `members` members, `legacy_clients` legacy clients, no
    /// shim, static ECMP.
    pub fn new(aps: usize, members: u16, legacy_clients: usize) -> Self {
        Self {
            aps,
            members,
            legacy_clients,
            shim_client: false,
            routing: Routing::StaticEcmp,
            member_aps: BTreeMap::new(),
            routed_aps: None,
        }
    }

    /// With a shim client.
    pub fn with_shim(mut self) -> Self {
        self.shim_client = true;
        self
    }

    /// Routed by BIRD.
    pub fn with_bird(mut self) -> Self {
        self.routing = Routing::Bird;
        self
    }

    /// Member `id` registers only with `aps`.
    pub fn member_at(mut self, id: u16, aps: &[usize]) -> Self {
        self.member_aps.insert(id, aps.to_vec());
        self
    }
}

/// One AP host.
#[derive(Debug)]
pub struct ApHost {
    /// 1-based.
    pub index: usize,
    /// The host (`daemon`: the running `homeaddr-ap`, if any).
    pub host: Host,
    /// Its BIRD (BIRD mode).
    pub bird: Option<Bird>,
    starts: u32,
}

impl ApHost {
    /// Its tunnel endpoint.
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.host.addr.into(), TUNNEL_PORT)
    }

    /// Whether its `homeaddr-ap` runs.
    pub fn running(&self) -> bool {
        self.host.daemon.as_ref().is_some_and(|d| d.is_running())
    }

    /// Its member table (empty when it does not answer).
    pub fn members(&self) -> Vec<MemberRow> {
        self.host.ask(Request::Members).unwrap_or_default()
    }

    /// Whether it lists member `id` as active.
    pub fn has_active(&self, id: u16) -> bool {
        self.members()
            .iter()
            .any(|m| m.id == id && m.state == MemberState::Active)
    }

    /// The BIRD, which must exist (BIRD mode).
    pub fn bird(&self) -> &Bird {
        self.bird.as_ref().expect("BIRD mode")
    }
}

/// The running cluster. Field order is drop order: daemons first, the
/// namespaces last.
#[derive(Debug)]
pub struct Cluster {
    /// AP hosts, `aps[a - 1]` is AP `a`.
    pub aps: Vec<ApHost>,
    /// Members by id.
    pub members: BTreeMap<u16, Host>,
    /// Legacy clients, `c0`..
    pub clients: Vec<Host>,
    /// The shim client.
    pub shim: Option<Host>,
    /// The router.
    pub router: Router,
    /// How it routes.
    pub routing: Routing,
    member_aps: BTreeMap<u16, Vec<usize>>,
    server_switch: Netns,
    /// The namespaces (dropped last).
    pub topo: Topology,
}

impl Cluster {
    /// The Maglev table digest every running AP shows in its status, in AP
    /// order (empty where a status has none).
    pub fn table_digests(&self) -> Vec<String> {
        self.aps
            .iter()
            .filter(|ap| ap.running())
            .map(|ap| {
                ap.host.status()["table_digest"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    /// AP `a` (1-based).
    pub fn ap(&self, a: usize) -> &ApHost {
        &self.aps[a - 1]
    }

    /// The service endpoint clients connect to.
    pub fn service_endpoint(&self) -> SocketAddr {
        SocketAddr::new(HOME_ADDRESS.into(), SERVICE_PORT)
    }

    /// The legacy clients.
    pub fn legacy(&self) -> Vec<&Host> {
        self.clients.iter().collect()
    }

    /// The legacy clients and the shim client.
    pub fn all_clients(&self) -> Vec<&Host> {
        self.clients.iter().chain(self.shim.as_ref()).collect()
    }

    /// The APs (1-based) member `id` registers with.
    pub fn aps_of(&self, id: u16) -> Vec<usize> {
        self.member_aps
            .get(&id)
            .cloned()
            .unwrap_or_else(|| (1..=self.aps.len()).collect())
    }

    /// Kills AP `a`'s daemon with SIGKILL (its TUN and the route into it
    /// go with it); when it was dead.
    pub fn kill_ap(&self, a: usize) -> Instant {
        if let Some(d) = self.ap(a).host.daemon.as_ref() {
            d.kill();
        }
        Instant::now()
    }

    /// Waits until AP `a` lists every member that registers with it as
    /// active; how long it took.
    pub fn wait_members_at(&self, a: usize, timeout: Duration) -> anyhow::Result<Duration> {
        let ids: Vec<u16> = self
            .members
            .keys()
            .copied()
            .filter(|&id| self.aps_of(id).contains(&a))
            .collect();
        let ap = self.ap(a);
        wait_until(
            timeout,
            Duration::from_millis(5),
            &format!("AP {a} to list members {ids:?} as active"),
            || {
                let rows = ap.members();
                ids.iter().all(|&id| {
                    rows.iter()
                        .any(|m| m.id == id && m.state == MemberState::Active)
                })
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.dump()))
    }

    /// Every daemon's view and the route, for failure messages.
    pub fn dump(&self) -> String {
        let mut out = format!("router: {}\n", self.router.route());
        if let Some(b) = &self.router.bird {
            out.push_str(
                &b.birdc(&["show", "protocols"])
                    .unwrap_or_else(|e| e.to_string()),
            );
        }
        for ap in &self.aps {
            out.push_str(&format!(
                "ap{} (running: {}): {}\n",
                ap.index,
                ap.running(),
                ap.host.status()
            ));
        }
        for (id, m) in &self.members {
            out.push_str(&format!("member {id}: {}\n", m.status()));
        }
        if let Some(s) = &self.shim {
            out.push_str(&format!("shim: {}\n", s.status()));
        }
        out.push_str(&format!("logs: {}", self.topo.dir().display()));
        out
    }
}

impl Drop for Cluster {
    /// Members leave while the APs still answer (as in `Service`): a
    /// member waiting for an answer that cannot come is killed after the
    /// stop grace.
    fn drop(&mut self) {
        for host in self.members.values() {
            if host.daemon.as_ref().is_some_and(|d| d.is_running()) {
                let _ = host.control(Request::Leave);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for host in self.members.values() {
            if let Some(d) = host.daemon.as_ref() {
                let _ = d.wait_timeout(deadline.saturating_duration_since(Instant::now()));
            }
        }
    }
}
