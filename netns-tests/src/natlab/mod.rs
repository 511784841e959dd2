//! "Today's Internet" in namespaces: an internet segment, NAT routers with
//! the real kernel NAT (nftables masquerade), and the homeaddr daemons on
//! either side of them (issue 11).
//!
//! ```text
//!            internet 198.18.0.0/24 + fd00:4842:ffff::/64 (bridge "inet")
//!  ap ::10/.10   public hosts .20..   nat1 .101 (wan0)   nat2 .102 ...
//!  (HoAs routed here)                   | masquerade          |
//!                                   lan 100.64.1.0/24     100.64.2.0/24
//!                                   .1 = nat1 (lan0)      hosts .10..
//! ```
//!
//! The AP host (`198.18.0.10`, `fd00:4842:ffff::10`) gets both home
//! addresses ([`HOA6`], [`HOA4`]): every other host on the segment routes
//! them to it. Public hosts have an IPv4 and an IPv6 address on the
//! segment; hosts behind a NAT router have only IPv4 on its LAN, their
//! default route through it, and reach everything through its masquerade
//! ([`nat`]: `random` mappings, UDP timeouts, flushes, the conntrack
//! table). The daemons are started with the flags of the spec
//! ([`daemons`]): `--home-address` once per family, `--shim-prefix`,
//! `--shim-pool`, IPv4 `--listen` and `--access-point`.
//!
//! Everything lives in one [`Topology`]: a panic anywhere stops every
//! daemon and deletes the namespaces. Only 198.18.0.0/15, 100.64.0.0/10 and
//! ULA addresses are used.

pub mod daemons;
pub mod nat;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use homeaddr_control::Request;
use serde_json::Value;

use crate::service::{Host, SERVICE_PORT, TUNNEL_PORT};
use crate::topology::{Netns, Topology};
pub use nat::{Mapping, NatOptions, NatRouter};

/// The IPv6 home address.
pub const HOA6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x4841, 0xaaaa, 0, 0, 0, 0, 1);
/// The IPv4 home address.
pub const HOA4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The AP's pool of shim client addresses for IPv6 home addresses.
pub const SHIM_PREFIX_V6: &str = "fd00:4841:cccc::/64";
/// The AP's pool of shim client addresses for IPv4 home addresses.
pub const SHIM_POOL_V4: &str = "100.127.0.0/16";
/// The AP host's address on the internet segment.
pub const AP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// The AP host's IPv6 address on the internet segment.
pub const AP6: Ipv6Addr = inet6(0x10);
/// The internet segment's interface of every host on it.
pub const INET_IF: &str = "eth0";

/// `fd00:4842:ffff::<host>`, on the internet segment.
pub const fn inet6(host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x4842, 0xffff, 0, 0, 0, 0, host)
}

/// `198.18.0.<host>`, on the internet segment.
pub const fn inet4(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, host)
}

/// Where a host sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// On the internet segment.
    Public,
    /// Behind NAT router `n` (1-based), on its LAN.
    Nat(u8),
}

/// An address family (of a home address or an underlay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The home address of this family.
    pub fn hoa(self) -> IpAddr {
        match self {
            Family::V4 => HOA4.into(),
            Family::V6 => HOA6.into(),
        }
    }
}

/// What the daemons are started with.
#[derive(Debug, Clone, Default)]
pub struct LabConfig {
    /// The AP and the members serve [`HOA4`] beside [`HOA6`]
    /// (`--home-address` twice).
    pub hoa_v4: bool,
    /// The AP has the shim pools (`--shim-prefix`, `--shim-pool`).
    pub shim_pools: bool,
    /// The AP listens on the dual-stack `[::]:4790` (both families on one
    /// socket) instead of its IPv4 endpoint.
    pub ap_listen_v6: bool,
    /// `nat_keepalive_s` in the member and shim config files (`None`: no
    /// config file, the daemons' default).
    pub nat_keepalive_s: Option<u64>,
    /// Extra flags for `homeaddr-ap`.
    pub ap_flags: Vec<String>,
}

impl LabConfig {
    /// The IPv6 home address and the shim pools: what a shim behind a NAT
    /// or on another family than the home address's needs.
    pub fn pools() -> Self {
        Self {
            shim_pools: true,
            ..Self::default()
        }
    }

    /// Both home addresses, no shim pools (legacy IPv4 clients).
    pub fn v4() -> Self {
        Self {
            hoa_v4: true,
            ..Self::default()
        }
    }

    /// Everything of issue 11: both home addresses, the shim pools.
    pub fn full() -> Self {
        Self {
            hoa_v4: true,
            shim_pools: true,
            ..Self::default()
        }
    }
}

/// A host of the lab: a [`Host`] (its `addr` is the IPv6 one, or the IPv4
/// one mapped when it has none) and where it sits.
#[derive(Debug)]
pub struct LabHost {
    /// The namespace, the daemon, the control socket.
    pub host: Host,
    /// Its IPv4 address.
    pub v4: Ipv4Addr,
    /// Its IPv6 address (public hosts only).
    pub v6: Option<Ipv6Addr>,
    /// Where it is.
    pub site: Site,
}

impl LabHost {
    /// Its endpoint on `port`, in the underlay family a host behind a NAT
    /// must use (IPv4) or the one asked for.
    pub fn endpoint(&self, family: Family, port: u16) -> SocketAddr {
        match (family, self.v6) {
            (Family::V6, Some(v6)) => SocketAddr::new(v6.into(), port),
            _ => SocketAddr::new(self.v4.into(), port),
        }
    }

    /// The daemon's status as JSON.
    pub fn status(&self) -> Value {
        self.host.status()
    }
}

/// The lab. Field order is drop order: daemons first, namespaces last.
#[derive(Debug)]
pub struct Lab {
    /// The AP host (`daemon` once [`Lab::start_ap`] ran).
    pub ap: Host,
    /// Members by id.
    pub members: BTreeMap<u16, LabHost>,
    /// Shim and legacy clients by name.
    pub clients: BTreeMap<String, LabHost>,
    /// NAT routers, `nats[n - 1]` is router `n`.
    pub nats: Vec<NatRouter>,
    /// What the daemons get.
    pub config: LabConfig,
    inet: Netns,
    next_public: u8,
    /// The namespaces (dropped last).
    pub topo: Topology,
}

impl Lab {
    /// The internet segment and the AP host (no daemon yet).
    pub fn new(tag: &str, config: LabConfig) -> anyhow::Result<Self> {
        let topo = Topology::new(tag)?;
        let inet = topo.lan("inet", &[])?;
        let ns = topo.add_netns("ap")?;
        topo.join_lan(&inet, &ns, INET_IF)?;
        ns.ip(&format!("-4 addr add {AP4}/24 dev {INET_IF}"))?;
        ns.add_addr(INET_IF, AP6, 64)?;
        let ap = Host {
            name: "ap".into(),
            ns,
            addr: AP6,
            daemon: None,
            extra: Vec::new(),
            control: topo.dir().join("ap.sock"),
        };
        Ok(Self {
            ap,
            members: BTreeMap::new(),
            clients: BTreeMap::new(),
            nats: Vec::new(),
            config,
            inet,
            next_public: 20,
            topo,
        })
    }

    /// [`Lab::new`] and [`Lab::start_ap`].
    pub fn start(tag: &str, config: LabConfig) -> anyhow::Result<Self> {
        let mut lab = Self::new(tag, config)?;
        lab.start_ap()?;
        Ok(lab)
    }

    /// The AP's IPv4 tunnel endpoint.
    pub fn ap_endpoint(&self) -> SocketAddr {
        SocketAddr::new(AP4.into(), TUNNEL_PORT)
    }

    /// The AP's IPv6 tunnel endpoint (listened on only with `ap_listen_v6`).
    pub fn ap_endpoint_v6(&self) -> SocketAddr {
        SocketAddr::new(AP6.into(), TUNNEL_PORT)
    }

    /// The service endpoint of `family`'s home address.
    pub fn service(&self, family: Family) -> SocketAddr {
        SocketAddr::new(family.hoa(), SERVICE_PORT)
    }

    /// NAT router `n` (1-based).
    pub fn nat(&self, n: u8) -> &NatRouter {
        &self.nats[usize::from(n) - 1]
    }

    /// Adds NAT router `n = nats.len() + 1`: `198.18.0.<100+n>` (and
    /// `fd00:4842:ffff::<100+n>`) outside, `100.64.n.1/24` inside, the
    /// masquerade and the options; returns `n`.
    pub fn add_nat(&mut self, options: NatOptions) -> anyhow::Result<u8> {
        let n = u8::try_from(self.nats.len() + 1)?;
        anyhow::ensure!(n < 100, "at most 99 NAT routers");
        let ns = self.topo.add_netns(&format!("nat{n}"))?;
        self.topo.join_lan(&self.inet, &ns, nat::OUTSIDE_IF)?;
        let outside = inet4(100 + n);
        ns.ip(&format!("-4 addr add {outside}/24 dev {}", nat::OUTSIDE_IF))?;
        ns.add_addr(nat::OUTSIDE_IF, inet6(100 + u16::from(n)), 64)?;
        public_routes(&ns)?;
        let switch = self
            .topo
            .lan(&format!("lan{n}"), &[(&ns, nat::INSIDE_IF)])?;
        let inside = Ipv4Addr::new(100, 64, n, 1);
        ns.ip(&format!("-4 addr add {inside}/24 dev {}", nat::INSIDE_IF))?;
        let router = NatRouter {
            index: n,
            ns,
            outside,
            inside,
            options,
            switch,
            next_host: 10,
        };
        router.configure()?;
        self.nats.push(router);
        Ok(n)
    }

    /// A bare host `name` at `site` (no daemon).
    pub fn add_host(&mut self, name: &str, site: Site) -> anyhow::Result<LabHost> {
        let ns = self.topo.add_netns(name)?;
        let (v4, v6) = match site {
            Site::Public => {
                let k = self.next_public;
                anyhow::ensure!(k < 100, "at most 80 public hosts");
                self.next_public += 1;
                self.topo.join_lan(&self.inet, &ns, INET_IF)?;
                let (v4, v6) = (inet4(k), inet6(u16::from(k)));
                ns.ip(&format!("-4 addr add {v4}/24 dev {INET_IF}"))?;
                ns.add_addr(INET_IF, v6, 64)?;
                public_routes(&ns)?;
                (v4, Some(v6))
            }
            Site::Nat(n) => {
                let router = self
                    .nats
                    .get_mut(usize::from(n).wrapping_sub(1))
                    .ok_or_else(|| anyhow::anyhow!("no NAT router {n}"))?;
                let k = router.next_host;
                anyhow::ensure!(k < 250, "LAN {n} is full");
                router.next_host += 1;
                self.topo.join_lan(&router.switch, &ns, INET_IF)?;
                let v4 = Ipv4Addr::new(100, 64, n, k);
                ns.ip(&format!("-4 addr add {v4}/24 dev {INET_IF}"))?;
                ns.ip(&format!("-4 route add default via {}", router.inside))?;
                (v4, None)
            }
        };
        Ok(LabHost {
            host: Host {
                name: name.into(),
                ns,
                addr: v6.unwrap_or_else(|| v4.to_ipv6_mapped()),
                daemon: None,
                extra: Vec::new(),
                control: self.topo.dir().join(format!("{name}.sock")),
            },
            v4,
            v6,
            site,
        })
    }

    /// A legacy client `name` at `site` (no daemon: it connects natively).
    pub fn add_legacy(&mut self, name: &str, site: Site) -> anyhow::Result<&LabHost> {
        let host = self.add_host(name, site)?;
        self.clients.insert(name.into(), host);
        Ok(&self.clients[name])
    }

    /// Client `name`.
    pub fn client(&self, name: &str) -> &LabHost {
        &self.clients[name]
    }

    /// Member `id`.
    pub fn member(&self, id: u16) -> &LabHost {
        &self.members[&id]
    }

    /// Every daemon's status and every NAT's table, for failure messages.
    pub fn dump(&self) -> String {
        let mut out = format!("ap: {}\n", self.ap.status());
        if let Ok(rows) = self
            .ap
            .ask::<Vec<homeaddr_control::MemberRow>>(Request::Members)
        {
            out.push_str(&format!("ap members: {rows:?}\n"));
        }
        for (id, m) in &self.members {
            out.push_str(&format!("member {id} ({:?}): {}\n", m.site, m.status()));
        }
        for (name, c) in &self.clients {
            if c.host.daemon.is_some() {
                out.push_str(&format!("{name} ({:?}): {}\n", c.site, c.status()));
            }
        }
        for n in &self.nats {
            out.push_str(&format!("nat{} conntrack:\n{}", n.index, n.dump()));
        }
        out.push_str(&format!("logs: {}", self.topo.dir().display()));
        out
    }

    /// Waits until `cond` holds, polling every 20 ms; the error carries
    /// [`Lab::dump`].
    pub fn wait(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl FnMut() -> bool,
    ) -> anyhow::Result<Duration> {
        crate::wait_until(timeout, Duration::from_millis(20), what, cond)
            .map_err(|e| anyhow::anyhow!("{e}\n{}", self.dump()))
    }

    /// The NAT mapping of `host`'s UDP flow from `local` to `remote`
    /// (`None` for public hosts or when the router has none).
    pub fn mapping(
        &self,
        host: &LabHost,
        local_port: u16,
        remote: SocketAddrV4,
    ) -> Option<SocketAddrV4> {
        match host.site {
            Site::Public => None,
            Site::Nat(n) => self
                .nat(n)
                .mapping_of(SocketAddrV4::new(host.v4, local_port), remote),
        }
    }
}

/// Routes of a host on the internet segment: both home addresses through
/// the AP host.
fn public_routes(ns: &Netns) -> anyhow::Result<()> {
    ns.ip(&format!("-4 route add {HOA4}/32 via {AP4}"))?;
    ns.ip(&format!("-6 route add {HOA6}/128 via {AP6}"))?;
    Ok(())
}

impl Drop for Lab {
    /// Members leave while the AP still answers (as in `Service`).
    fn drop(&mut self) {
        for m in self.members.values() {
            if m.host.daemon.as_ref().is_some_and(|d| d.is_running()) {
                let _ = m.host.control(Request::Leave);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for m in self.members.values() {
            if let Some(d) = m.host.daemon.as_ref() {
                let _ = d.wait_timeout(deadline.saturating_duration_since(Instant::now()));
            }
        }
    }
}
