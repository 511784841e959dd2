//! Building a [`Cluster`]: the LANs, the router, the AP hosts with their
//! daemons (and BIRD), the members and the shim client; restarting an AP.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::bird::{self, AP_AS_BASE, Bird, Peer, UPLINK};
use super::router::{CLIENT_IF, Router, SERVER_IF};
use super::{
    ApHost, CLIENT_LAN, Cluster, ClusterConfig, REGISTER_TIMEOUT, Routing, SERVER_LAN, ap_addr,
    client_addr, member_addr, shim_addr,
};
use crate::service::{
    HOME_ADDRESS, Host, KEY, TUNNEL_PORT, ap_args, bin, log_args, member_args, member_server,
    start_daemon,
};
use crate::topology::{Netns, Topology};
use crate::ula;

/// The router's address on `subnet`.
fn router_on(subnet: u16) -> Ipv6Addr {
    ula(subnet, 1)
}

/// A host on a LAN: `addr`/64 on `eth0`, default route via the router.
fn lan_host(topo: &Topology, name: &str, ns: Netns, addr: Ipv6Addr) -> anyhow::Result<Host> {
    let subnet = addr.segments()[2];
    ns.add_addr("eth0", addr, 64)?;
    ns.ip(&format!("-6 route add default via {}", router_on(subnet)))?;
    Ok(Host {
        name: name.into(),
        ns,
        addr,
        daemon: None,
        extra: Vec::new(),
        control: topo.dir().join(format!("{name}.sock")),
    })
}

impl Cluster {
    /// Builds and starts everything `config` describes; returns once every
    /// AP serves, the route covers them (BIRD: every session established),
    /// every member is active at each of its APs and the shim is up.
    pub fn start(tag: &str, config: &ClusterConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..200).contains(&config.aps),
            "1 to 199 APs, not {}",
            config.aps
        );
        let topo = Topology::new(tag)?;
        let router_ns = topo.add_netns("router")?;
        let client_nss = (0..config.legacy_clients)
            .map(|i| topo.add_netns(&format!("c{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let shim_ns = config
            .shim_client
            .then(|| topo.add_netns("shim"))
            .transpose()?;
        let mut ports: Vec<(&Netns, &str)> = vec![(&router_ns, CLIENT_IF)];
        ports.extend(client_nss.iter().map(|ns| (ns, "eth0")));
        ports.extend(shim_ns.iter().map(|ns| (ns, "eth0")));
        topo.lan("csw", &ports)?;
        let server_switch = topo.lan("ssw", &[(&router_ns, SERVER_IF)])?;
        router_ns.add_addr(CLIENT_IF, router_on(CLIENT_LAN), 64)?;
        router_ns.add_addr(SERVER_IF, router_on(SERVER_LAN), 64)?;
        let router = Router::new(router_ns)?;
        let clients = client_nss
            .into_iter()
            .enumerate()
            .map(|(i, ns)| lan_host(&topo, &format!("c{i}"), ns, client_addr(i)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let shim = shim_ns
            .map(|ns| lan_host(&topo, "shim", ns, shim_addr()))
            .transpose()?;
        let mut cluster = Cluster {
            aps: Vec::new(),
            members: Default::default(),
            clients,
            shim: None,
            router,
            routing: config.routing,
            member_aps: config.member_aps.clone(),
            server_switch,
            topo,
        };
        for a in 1..=config.aps {
            cluster
                .add_ap_host(a)
                .with_context(|| format!("starting AP {a}"))?;
        }
        match config.routing {
            Routing::StaticEcmp => {
                let routed = config
                    .routed_aps
                    .clone()
                    .unwrap_or_else(|| (1..=config.aps).collect());
                let hops: Vec<Ipv6Addr> = routed.into_iter().map(ap_addr).collect();
                cluster.router.set_nexthops(&hops)?;
            }
            Routing::Bird => cluster.start_birds().context("starting BIRD")?,
        }
        for id in 1..=config.members {
            cluster
                .add_member(id)
                .with_context(|| format!("starting member {id}"))?;
        }
        if let Some(host) = shim {
            cluster.start_shim(host).context("starting the shim")?;
        }
        Ok(cluster)
    }

    /// A new AP host `a` on the server LAN, its daemon started.
    fn add_ap_host(&mut self, a: usize) -> anyhow::Result<()> {
        let name = format!("ap{a}");
        let ns = self.topo.add_netns(&name)?;
        self.topo.join_lan(&self.server_switch, &ns, "eth0")?;
        let host = lan_host(&self.topo, &name, ns, ap_addr(a))?;
        self.aps.push(ApHost {
            index: a,
            host,
            bird: None,
            starts: 0,
        });
        self.start_ap_daemon(a)
    }

    /// Starts `homeaddr-ap` on AP host `a` (a fresh control socket each
    /// start: a killed daemon's may linger) and waits until it is up.
    fn start_ap_daemon(&mut self, a: usize) -> anyhow::Result<()> {
        let dir = self.topo.dir().to_path_buf();
        let ap = &mut self.aps[a - 1];
        ap.starts += 1;
        let control = dir.join(format!("ap{a}-{}.sock", ap.starts));
        let listen = SocketAddr::new(ap.host.addr.into(), TUNNEL_PORT);
        let daemon = start_daemon(
            &ap.host.ns,
            &format!("homeaddr-ap-{a}"),
            "homeaddr-ap",
            ap_args(HOME_ADDRESS, listen, &control),
            &[],
            "access point up",
        )?;
        ap.host.daemon = Some(daemon);
        ap.host.control = control;
        Ok(())
    }

    /// Starts AP `a`'s daemon again after [`Cluster::kill_ap`]; when it
    /// was up (its members come back on their own: see
    /// [`Cluster::wait_members_at`]).
    pub fn restart_ap(&mut self, a: usize) -> anyhow::Result<Instant> {
        anyhow::ensure!(!self.ap(a).running(), "AP {a} still runs");
        self.aps[a - 1].host.daemon = None;
        self.start_ap_daemon(a)?;
        Ok(Instant::now())
    }

    /// BIRD on the router (one session per AP) and on every AP host;
    /// returns once every session is established and the router's route
    /// has every AP.
    fn start_birds(&mut self) -> anyhow::Result<()> {
        let peers: Vec<Peer> = (1..=self.aps.len())
            .map(|a| Peer {
                name: format!("ap{a}"),
                addr: ap_addr(a),
                asn: AP_AS_BASE + a as u32,
            })
            .collect();
        let dir = self.topo.dir().to_path_buf();
        let conf = bird::router_config(
            Ipv4Addr::new(198, 18, 0, 1),
            HOME_ADDRESS,
            router_on(SERVER_LAN),
            &peers,
        );
        self.router.bird = Some(Bird::start(&self.router.ns, &dir, "router", &conf)?);
        for ap in &mut self.aps {
            let a = ap.index;
            let conf = bird::ap_config(
                Ipv4Addr::new(198, 18, 1, a as u8),
                HOME_ADDRESS,
                ap.host.addr,
                AP_AS_BASE + a as u32,
                router_on(SERVER_LAN),
            );
            ap.bird = Some(Bird::start(&ap.host.ns, &dir, &format!("ap{a}"), &conf)?);
        }
        let router_bird = self.router.bird.as_ref().expect("just started");
        for ap in &self.aps {
            router_bird.wait_established(&format!("ap{}", ap.index), bird::ESTABLISH_TIMEOUT)?;
            ap.bird()
                .wait_established(UPLINK, bird::ESTABLISH_TIMEOUT)?;
        }
        self.router
            .wait_nexthop_count(self.aps.len(), Duration::from_secs(10))?;
        Ok(())
    }

    /// Starts member `id` on a new host on the server LAN (also while the
    /// cluster runs: a member joins), registered with each of its APs
    /// (`--access-point` once per AP), and its server; returns once every
    /// one of those APs lists it as active.
    pub fn add_member(&mut self, id: u16) -> anyhow::Result<Duration> {
        let name = format!("m{id}");
        let ns = self.topo.add_netns(&name)?;
        self.topo.join_lan(&self.server_switch, &ns, "eth0")?;
        let mut host = lan_host(&self.topo, &name, ns, member_addr(id))?;
        let aps = self.aps_of(id);
        let endpoints: Vec<SocketAddr> = aps.iter().map(|&a| self.ap(a).endpoint()).collect();
        let care_of = SocketAddr::new(host.addr.into(), TUNNEL_PORT);
        let mut args = member_args(id, &endpoints, care_of, KEY, &host.control);
        args.extend(log_args());
        // The server first (it binds the home address with freebind): a
        // member that is active must answer its first connection.
        host.extra.push(member_server(&host.ns, id)?);
        let start = Instant::now();
        let daemon = host.ns.spawn(
            &format!("homeaddr-member-{id}"),
            &bin("homeaddr-member")?,
            &args,
        )?;
        host.daemon = Some(daemon);
        let registered = self.wait_registered(&host, id, &aps, start);
        self.members.insert(id, host);
        registered
    }

    /// Kills member `id`'s daemon with SIGKILL (its server stays); when it
    /// was dead.
    pub fn kill_member(&self, id: u16) -> Instant {
        if let Some(d) = self.members[&id].daemon.as_ref() {
            d.kill();
        }
        Instant::now()
    }

    /// Starts member `id`'s daemon again after [`Cluster::kill_member`],
    /// with the same flags, without waiting; when it was started.
    pub fn restart_member(&mut self, id: u16) -> anyhow::Result<Instant> {
        let endpoints: Vec<SocketAddr> = self
            .aps_of(id)
            .iter()
            .map(|&a| self.ap(a).endpoint())
            .collect();
        let host = self.members.get_mut(&id).context("no such member")?;
        anyhow::ensure!(
            !host.daemon.as_ref().is_some_and(|d| d.is_running()),
            "member {id} still runs"
        );
        let care_of = SocketAddr::new(host.addr.into(), TUNNEL_PORT);
        let mut args = member_args(id, &endpoints, care_of, KEY, &host.control);
        args.extend(log_args());
        host.daemon = None;
        host.daemon = Some(host.ns.spawn(
            &format!("homeaddr-member-{id}"),
            &bin("homeaddr-member")?,
            &args,
        )?);
        Ok(Instant::now())
    }

    /// Waits until each of `aps` lists member `id` as active; fails early,
    /// with the reason, when its daemon exits.
    fn wait_registered(
        &self,
        host: &Host,
        id: u16,
        aps: &[usize],
        start: Instant,
    ) -> anyhow::Result<Duration> {
        let daemon = host.daemon();
        loop {
            if aps.iter().all(|&a| self.ap(a).has_active(id)) {
                return Ok(start.elapsed());
            }
            if let Some(status) = daemon.exit_status() {
                let stderr = daemon.stderr();
                if stderr.contains("cannot be used multiple times") {
                    anyhow::bail!(
                        "member {id}: this homeaddr-member takes only one --access-point; \
                         registering with APs {aps:?} needs the multi-AP member (issue 10):\n{stderr}"
                    );
                }
                anyhow::bail!("member {id} exited ({status}) before registering:\n{stderr}");
            }
            if start.elapsed() >= REGISTER_TIMEOUT {
                anyhow::bail!(
                    "member {id} not active at APs {aps:?} after {REGISTER_TIMEOUT:?}\n{}",
                    self.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `homeaddr-shim` on `host`, with AP 1.
    fn start_shim(&mut self, mut host: Host) -> anyhow::Result<()> {
        let args = vec![
            "--home-address".to_string(),
            HOME_ADDRESS.to_string(),
            "--access-point".into(),
            self.ap(1).endpoint().to_string(),
            "--local".into(),
            format!("[{}]:0", host.addr),
            "--control".into(),
            host.control.display().to_string(),
        ];
        host.daemon = Some(start_daemon(
            &host.ns,
            "homeaddr-shim",
            "homeaddr-shim",
            args,
            &[],
            "shim up",
        )?);
        self.shim = Some(host);
        Ok(())
    }
}
