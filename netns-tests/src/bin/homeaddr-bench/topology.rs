//! The bench's namespaces: a client LAN (legacy client, shim client) and a
//! server LAN (access point, member), each a bridge, joined by a router
//! namespace that forwards between them, so every measured path crosses a
//! router hop. The servers every path reaches run in the member namespace,
//! bound to the wildcard address (so the member's own address, the
//! boringtun tunnel address and the home address all reach them): the
//! homeaddr test server, iperf3 and nginx. ULA addresses only.

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use homeaddr_netns_tests::service::{HOME_ADDRESS, SERVICE_PORT, bin};
use homeaddr_netns_tests::topology::Daemon;
use homeaddr_netns_tests::{Netns, Topology, ula};

use crate::nginx;

/// Client LAN: router ::1, legacy client ::2, shim client ::3, haproxy's
/// service address on the router ::80.
pub const CLIENT_NET: u16 = 1;
/// Server LAN: router ::1, access point ::2, member ::3.
pub const SERVER_NET: u16 = 2;
/// boringtun's tunnel addresses: client ::1, member ::2.
pub const WG_NET: u16 = 0x77;
/// The iperf3 server's port.
pub const IPERF_PORT: u16 = 5201;
/// nginx's port.
pub const HTTP_PORT: u16 = 80;

/// The member's own address (the direct path's target).
pub fn member_addr() -> Ipv6Addr {
    ula(SERVER_NET, 3)
}

/// The address haproxy listens on, on the router's client-side interface.
pub fn haproxy_addr() -> Ipv6Addr {
    ula(CLIENT_NET, 0x80)
}

/// The namespaces and the servers of one bench run.
pub struct Bed {
    /// The test server, iperf3 and nginx in the member namespace.
    _servers: Vec<Daemon>,
    pub router: Netns,
    pub ap: Netns,
    pub member: Netns,
    pub legacy: Netns,
    pub shim: Netns,
    pub topo: Topology,
}

fn gro_on(ns: &Netns, iface: &str) {
    // Physical NICs receive with GRO; veth does only when asked. Without
    // it a TUN gets one forwarded packet per read.
    if let Err(e) = ns.run("ethtool", ["-K", iface, "gro", "on"]) {
        eprintln!(
            "homeaddr-bench: cannot enable GRO on {iface} in {} ({e}); install ethtool",
            ns.name()
        );
    }
}

/// Builds the namespaces and starts the servers.
pub fn setup() -> anyhow::Result<Bed> {
    let topo = Topology::new("bench")?;
    let router = topo.add_netns("router")?;
    let ap = topo.add_netns("ap")?;
    let member = topo.add_netns("m1")?;
    let legacy = topo.add_netns("legacy")?;
    let shim = topo.add_netns("shim")?;
    topo.lan(
        "csw",
        &[(&router, "eth1"), (&legacy, "eth0"), (&shim, "eth0")],
    )?;
    topo.lan(
        "ssw",
        &[(&router, "eth2"), (&ap, "eth0"), (&member, "eth0")],
    )?;
    router.add_addr("eth1", ula(CLIENT_NET, 1), 64)?;
    router.add_addr("eth1", haproxy_addr(), 64)?;
    router.add_addr("eth2", ula(SERVER_NET, 1), 64)?;
    router.set_forwarding(true)?;
    gro_on(&router, "eth1");
    gro_on(&router, "eth2");
    for (ns, net, host) in [
        (&legacy, CLIENT_NET, 2),
        (&shim, CLIENT_NET, 3),
        (&ap, SERVER_NET, 2),
        (&member, SERVER_NET, 3),
    ] {
        ns.add_addr("eth0", ula(net, host), 64)?;
        ns.ip(&format!("-6 route add default via {}", ula(net, 1)))?;
        gro_on(ns, "eth0");
    }
    // Each round opens tens of thousands of connections per path from the
    // same client (and haproxy from the router): let connect() reuse
    // TIME_WAIT ports (timestamps keep it safe), so later rounds do not
    // hunt for free ports.
    for ns in [&legacy, &shim, &router] {
        ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
    }
    // The router sends the home address to the access point.
    router.add_route(
        ipnet::Ipv6Net::new(HOME_ADDRESS, 128)?,
        Some(ula(SERVER_NET, 2)),
        None,
    )?;
    let servers = start_servers(&topo, &member, &legacy)?;
    Ok(Bed {
        _servers: servers,
        router,
        ap,
        member,
        legacy,
        shim,
        topo,
    })
}

fn start_servers(topo: &Topology, member: &Netns, client: &Netns) -> anyhow::Result<Vec<Daemon>> {
    let mut servers = Vec::new();
    let d = member.spawn(
        "server",
        &bin("homeaddr-testapp")?,
        &[
            "serve".to_string(),
            "--bind".into(),
            format!("[::]:{SERVICE_PORT}"),
            "--name".into(),
            "member1".into(),
        ],
    )?;
    d.wait_for_output("listening on", Duration::from_secs(10))?;
    servers.push(d);
    let d = member.spawn(
        "iperf3",
        Path::new("iperf3"),
        &[
            "-s".to_string(),
            "--forceflush".into(),
            "-p".into(),
            IPERF_PORT.to_string(),
        ],
    )?;
    d.wait_for_output("Server listening", Duration::from_secs(10))?;
    servers.push(d);
    servers.push(nginx::start(
        topo,
        member,
        client,
        IpAddr::V6(member_addr()),
    )?);
    Ok(servers)
}
