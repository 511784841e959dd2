//! The geo-DNS step's world: a second site (an access point with its own
//! home address and one member), the name server running homeaddr-dns, a
//! resolver, a client in a second region, and the zone that names them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use homeaddr_dns::geo::Coordinates;
use homeaddr_netns_tests::Daemon;
use homeaddr_netns_tests::service::{
    HOME_ADDRESS, Host, KEY, SERVICE_PORT, START_TIMEOUT, Service, TUNNEL_PORT, ap_args, bin,
    start_daemon,
};
use ipnet::Ipv6Net;

/// The second site's home address.
pub(crate) const SECOND_HOA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x4841, 0xbbbb, 0, 0, 0, 0, 1);
/// The name the clients resolve (the zone is `homeaddr.test.`, RFC 6761).
pub(crate) const SERVICE_NAME: &str = "svc.homeaddr.test";
/// TTL of an answer naming a healthy first choice, and of the others
/// (a site uncertain, or a fallback past a site that is down).
pub(crate) const TTL: u32 = 30;
pub(crate) const UNCERTAIN_TTL: u32 = 5;
/// The health probes: one TCP connect per site every interval.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(500);
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
pub(crate) const DOWN_AFTER: u32 = 2;
pub(crate) const UP_AFTER: u32 = 2;

/// A site of the zone: one access point, its home address and members.
#[derive(Debug)]
pub(crate) struct Site {
    pub(crate) name: &'static str,
    pub(crate) city: &'static str,
    pub(crate) at: Coordinates,
    pub(crate) hoa: Ipv6Addr,
    /// The names its members answer WHO with.
    pub(crate) members: &'static [&'static str],
}

/// The sites, in the zone's order.
pub(crate) const SITES: [Site; 2] = [
    Site {
        name: "frankfurt",
        city: "Frankfurt",
        at: Coordinates {
            lat: 50.11,
            lon: 8.68,
        },
        hoa: HOME_ADDRESS,
        members: &["member1", "member2", "member3"],
    },
    Site {
        name: "new-york",
        city: "New York",
        at: Coordinates {
            lat: 40.71,
            lon: -74.01,
        },
        hoa: SECOND_HOA,
        members: &["member4"],
    },
];

/// The site whose home address is `addr`.
pub(crate) fn site_of(addr: Ipv6Addr) -> Option<&'static Site> {
    SITES.iter().find(|s| s.hoa == addr)
}

/// Who asks: a client's network, as the resolver's ECS option carries it.
/// The subnets are IPv4 from 198.18.0.0/15 (RFC 2544): a ULA prefix in ECS
/// is private, and RFC 7871 sec. 10 (which homeaddr-dns follows) says to
/// ignore it and place the resolver instead.
#[derive(Debug)]
pub(crate) struct Asker {
    /// The client's WAN name, or "-" for the resolver's own query.
    pub(crate) host: &'static str,
    pub(crate) region: &'static str,
    pub(crate) city: &'static str,
    pub(crate) at: Coordinates,
    /// The ECS subnet; `None`: no ECS, the resolver's address decides.
    pub(crate) subnet: Option<(Ipv4Addr, u8)>,
}

impl Asker {
    pub(crate) fn ecs(&self) -> Option<(IpAddr, u8)> {
        self.subnet.map(|(a, len)| (IpAddr::V4(a), len))
    }

    pub(crate) fn subnet_text(&self) -> String {
        self.subnet
            .map_or("none".into(), |(a, len)| format!("{a}/{len}"))
    }

    /// The nearest of the `up` sites by great-circle distance: what the
    /// answer must be.
    pub(crate) fn nearest(&self, up: impl Fn(&Site) -> bool) -> Option<&'static Site> {
        SITES
            .iter()
            .filter(|s| up(s))
            .min_by(|a, b| self.km(a).total_cmp(&self.km(b)))
    }

    pub(crate) fn km(&self, site: &Site) -> f64 {
        self.at.distance_km(&site.at)
    }
}

/// The legacy client of the first steps (Lisbon), a new client in Chicago,
/// and the resolver asking for itself, without ECS (it is in London, the
/// zone's default location).
pub(crate) const ASKERS: [Asker; 3] = [
    Asker {
        host: "c0",
        region: "eu",
        city: "Lisbon",
        at: Coordinates {
            lat: 38.72,
            lon: -9.14,
        },
        subnet: Some((Ipv4Addr::new(198, 18, 1, 0), 24)),
    },
    Asker {
        host: CHICAGO,
        region: "us",
        city: "Chicago",
        at: Coordinates {
            lat: 41.88,
            lon: -87.63,
        },
        subnet: Some((Ipv4Addr::new(198, 18, 2, 0), 24)),
    },
    Asker {
        host: "-",
        region: "-",
        city: "London",
        at: LONDON,
        subnet: None,
    },
];

/// The new client's WAN name (the third client created).
pub(crate) const CHICAGO: &str = "c2";
const LONDON: Coordinates = Coordinates {
    lat: 51.51,
    lon: -0.13,
};

/// One-way WAN latencies in ms of the pairs that carry this step's
/// traffic: resolver -> name server, probes, and each client to each site.
pub(crate) const LATENCY_MS: &[(&str, &str, u64)] = &[
    ("rs", "ns", 1),
    ("ns", "ap", 8),
    ("ns", "ap2", 35),
    ("ap2", "m4", 1),
    ("c0", "ap2", 30),
    (CHICAGO, "ap2", 10),
    (CHICAGO, "ap", 50),
];

/// What the step runs; dropped at its end (the processes stop, the
/// namespaces go with the topology).
#[derive(Debug)]
pub(crate) struct World {
    /// Site 2's access point and member hosts.
    pub(crate) ap2: Host,
    pub(crate) m4: Host,
    /// The name server and its homeaddr-dns.
    pub(crate) ns: Host,
    pub(crate) dns: Daemon,
    /// The resolver (no daemon: the demo asks from its namespace).
    pub(crate) rs: Host,
    /// The Chicago client's index in `svc.clients`.
    pub(crate) chicago: usize,
    /// How long site 2 took to come up.
    pub(crate) site_up: Duration,
}

impl World {
    /// The name server's DNS endpoint.
    pub(crate) fn dns_endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.ns.addr.into(), 53)
    }
}

/// Builds the hosts, sets the latencies, starts site 2 and the name server.
pub(crate) fn build(svc: &mut Service) -> anyhow::Result<World> {
    let chicago = svc.add_client(false, &[])?;
    anyhow::ensure!(svc.clients[chicago].name == CHICAGO, "unexpected host name");
    let ap2 = svc.add_host("ap2")?;
    let m4 = svc.add_host("m4")?;
    let ns = svc.add_host("ns")?;
    let rs = svc.add_host("rs")?;
    for (a, b, ms) in LATENCY_MS {
        svc.set_latency(a, b, Duration::from_millis(*ms))?;
    }
    let started = Instant::now();
    let (ap2, m4) = start_second_site(svc, ap2, m4)?;
    let site_up = started.elapsed();
    let zone = zone(ns.addr, svc.ap_endpoint(), ap_endpoint(&ap2));
    let path = svc.topo.dir().join("zone.toml");
    std::fs::write(&path, zone)?;
    let dns = ns.ns.spawn(
        "homeaddr-dns",
        &bin("homeaddr-dns")?,
        &[
            "--config".to_string(),
            path.display().to_string(),
            "--listen".into(),
            SocketAddr::new(ns.addr.into(), 53).to_string(),
            "--log".into(),
            std::env::var("HOMEADDR_TEST_LOG").unwrap_or_else(|_| "info".into()),
        ],
    )?;
    dns.wait_for_output("listening (udp+tcp)", START_TIMEOUT)?;
    Ok(World {
        ap2,
        m4,
        ns,
        dns,
        rs,
        chicago,
        site_up,
    })
}

fn ap_endpoint(ap: &Host) -> SocketAddr {
    SocketAddr::new(ap.addr.into(), TUNNEL_PORT)
}

/// Access point 2 owns [`SECOND_HOA`]; member 4 registers with it and
/// serves the same test server as the first site's members.
fn start_second_site(svc: &Service, mut ap: Host, mut m: Host) -> anyhow::Result<(Host, Host)> {
    svc.wan
        .add_prefix(&ap.name, Ipv6Net::new(SECOND_HOA, 128)?)?;
    let args = ap_args(SECOND_HOA, ap_endpoint(&ap), &ap.control);
    ap.daemon = Some(start_daemon(
        &ap.ns,
        "homeaddr-ap-2",
        "homeaddr-ap",
        args,
        &[],
        "access point up",
    )?);
    let care_of = SocketAddr::new(m.addr.into(), TUNNEL_PORT);
    let args = [
        "--id",
        "4",
        "--home-address",
        &SECOND_HOA.to_string(),
        "--access-point",
        &ap_endpoint(&ap).to_string(),
        "--care-of",
        &care_of.to_string(),
        "--key",
        KEY,
        "--control",
        &m.control.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    m.daemon = Some(start_daemon(
        &m.ns,
        "homeaddr-member-4",
        "homeaddr-member",
        args,
        &[],
        "registered with the access point",
    )?);
    let server = m.ns.spawn(
        "server-4",
        &bin("homeaddr-testapp")?,
        &[
            "serve".to_string(),
            "--bind".into(),
            format!("[::]:{SERVICE_PORT}"),
            "--name".into(),
            "member4".into(),
        ],
    )?;
    server.wait_for_output("listening on", START_TIMEOUT)?;
    m.extra.push(server);
    Ok((ap, m))
}

/// The zone: the two sites, each probed by a TCP connect to its home
/// address's service port (through its access point to a member: the
/// whole site, not just a host), and the clients' networks by location.
fn zone(ns: Ipv6Addr, ap1: SocketAddr, ap2: SocketAddr) -> String {
    let site = |s: &Site, ap: SocketAddr| {
        format!(
            "[[site]]\nname = \"{}\"\nhoas = [\"{}\"]\nap_endpoint = \"{ap}\"\nlocation = {{ lat = {}, lon = {} }}\nprobe = \"[{}]:{SERVICE_PORT}\"\n",
            s.name, s.hoa, s.at.lat, s.at.lon, s.hoa
        )
    };
    let networks: String = ASKERS
        .iter()
        .filter_map(|a| {
            let (addr, len) = a.subnet?;
            Some(format!(
                "[[network]]\nprefix = \"{addr}/{len}\"\nlocation = {{ lat = {}, lon = {} }}\n",
                a.at.lat, a.at.lon
            ))
        })
        .collect();
    format!(
        r#"origin = "homeaddr.test."
ttl = {TTL}
uncertain_ttl = {UNCERTAIN_TTL}
all_down = "fail-open"
[soa]
mname = "ns1.homeaddr.test."
rname = "hostmaster.homeaddr.test."
serial = 1
minimum = 30
[[ns]]
name = "ns1.homeaddr.test."
addrs = ["{ns}"]
[[service]]
name = "{SERVICE_NAME}."
[health]
interval_ms = {}
timeout_ms = {}
down_after = {DOWN_AFTER}
up_after = {UP_AFTER}
{}{}{networks}[default]
location = {{ lat = {}, lon = {} }}
"#,
        PROBE_INTERVAL.as_millis(),
        PROBE_TIMEOUT.as_millis(),
        site(&SITES[0], ap1),
        site(&SITES[1], ap2),
        LONDON.lat,
        LONDON.lon,
    )
}
