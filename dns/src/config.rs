//! Zone configuration: the TOML file, its validation, and the compiled,
//! immutable [`Zone`] the query path reads.
//!
//! Layer: sans-IO core. Contract: [`Zone::from_toml`] either returns a zone
//! in which every name, address, prefix and reference has been checked, or a
//! [`ConfigError`] that says what is wrong and how to fix it. Nothing is
//! checked again per query.
//!
//! Overlapping client networks: two entries with the same prefix are
//! rejected. A prefix nested inside a shorter one is accepted and splits it
//! (RFC 7871 sec. 7.2.1, option 1, "deaggregate"): the longer prefix wins for
//! its addresses, and replies for the rest of the shorter prefix carry a
//! SCOPE that excludes the nested one, so resolvers never cache one answer
//! for both.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::geo::{Coordinates, PrefixTrie};
use crate::health::{HealthSource, Hysteresis};
use crate::wire::{Name, rtype};

/// The label prepended to a service name to form its discovery name:
/// `_homeaddr._udp.<service>` carries a TXT record with the AP tunnel
/// endpoint of the client's site.
pub const DISCOVERY_PREFIX: &str = "_homeaddr._udp";

/// A configuration problem, with what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("config is not valid: {0}")]
    Syntax(String),
    /// A semantic problem.
    #[error("{what}: {why}; {fix}")]
    Invalid {
        /// Which item.
        what: String,
        /// What is wrong.
        why: String,
        /// What to do.
        fix: String,
    },
}

fn invalid(what: impl Into<String>, why: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        what: what.into(),
        why: why.into(),
        fix: fix.into(),
    }
}

/// What to answer when every site a client could use is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AllDownPolicy {
    /// Answer with every site (clients may still reach one; a dead health
    /// checker must not take the service off the air).
    #[default]
    FailOpen,
    /// Answer NODATA.
    Nodata,
}

/// Static health from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StaticHealth {
    /// Always serving.
    Up,
    /// Never serving (maintenance).
    Down,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    origin: String,
    #[serde(default = "default_ttl")]
    ttl: u32,
    #[serde(default = "default_uncertain_ttl")]
    uncertain_ttl: u32,
    #[serde(default = "default_payload")]
    max_udp_payload: u16,
    #[serde(default)]
    all_down: AllDownPolicy,
    soa: RawSoa,
    #[serde(default)]
    ns: Vec<RawNs>,
    #[serde(default)]
    service: Vec<RawService>,
    #[serde(default)]
    site: Vec<RawSite>,
    #[serde(default)]
    network: Vec<RawNetwork>,
    #[serde(default)]
    default: Option<RawPolicy>,
    #[serde(default)]
    health: RawHealth,
}

fn default_ttl() -> u32 {
    60
}
fn default_uncertain_ttl() -> u32 {
    5
}
fn default_payload() -> u16 {
    1232
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSoa {
    mname: String,
    rname: String,
    #[serde(default = "one")]
    serial: u32,
    #[serde(default = "default_refresh")]
    refresh: u32,
    #[serde(default = "default_retry")]
    retry: u32,
    #[serde(default = "default_expire")]
    expire: u32,
    #[serde(default = "default_minimum")]
    minimum: u32,
}
fn one() -> u32 {
    1
}
fn default_refresh() -> u32 {
    3600
}
fn default_retry() -> u32 {
    600
}
fn default_expire() -> u32 {
    1_209_600
}
fn default_minimum() -> u32 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNs {
    name: String,
    #[serde(default)]
    addrs: Vec<IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    ttl: Option<u32>,
    sites: Option<Vec<String>>,
    max_answers: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawAddr {
    Plain(IpAddr),
    Weighted { addr: IpAddr, weight: u32 },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    name: String,
    hoas: Vec<RawAddr>,
    #[serde(default)]
    ipv4: Vec<RawAddr>,
    ap_endpoint: SocketAddr,
    location: Option<Coordinates>,
    region: Option<String>,
    health: Option<StaticHealth>,
    probe: Option<SocketAddr>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    sites: Option<Vec<String>>,
    location: Option<Coordinates>,
    region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    prefix: String,
    sites: Option<Vec<String>>,
    location: Option<Coordinates>,
    region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(default = "default_interval")]
    interval_ms: u64,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_down_after")]
    down_after: u32,
    #[serde(default = "default_up_after")]
    up_after: u32,
}
impl Default for RawHealth {
    fn default() -> Self {
        Self {
            interval_ms: default_interval(),
            timeout_ms: default_timeout(),
            down_after: default_down_after(),
            up_after: default_up_after(),
        }
    }
}
fn default_interval() -> u64 {
    2000
}
fn default_timeout() -> u64 {
    1000
}
fn default_down_after() -> u32 {
    3
}
fn default_up_after() -> u32 {
    2
}

/// An address with its weight within a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weighted<A> {
    /// The address.
    pub addr: A,
    /// Relative weight (>= 1) for weighted rendezvous ordering.
    pub weight: u32,
}

/// One access point and what it serves.
#[derive(Debug, Clone)]
pub struct Site {
    /// Operator's name for the site.
    pub name: String,
    /// Home addresses (AAAA answers).
    pub hoas: Vec<Weighted<Ipv6Addr>>,
    /// IPv4 addresses (A answers), possibly empty.
    pub ipv4: Vec<Weighted<Ipv4Addr>>,
    /// The AP's tunnel endpoint, published in the discovery record.
    pub ap_endpoint: SocketAddr,
    /// Where the site is.
    pub location: Option<Coordinates>,
    /// Region tag.
    pub region: Option<String>,
    /// How its health is known.
    pub health: HealthSource,
    /// TCP probe target when probed.
    pub probe: Option<SocketAddr>,
    /// Pre-encoded TXT RDATA of the discovery record.
    pub discovery_rdata: Vec<u8>,
}

/// A service name answered with the nearest healthy site.
#[derive(Debug, Clone)]
pub struct Service {
    /// The service name.
    pub name: Name,
    /// Answer TTL.
    pub ttl: u32,
    /// Per site: may this service answer with it.
    pub allowed: Vec<bool>,
    /// At most this many addresses per answer (0: all of the site's).
    pub max_answers: usize,
}

/// What exists at a name of the zone.
#[derive(Debug, Clone, Default)]
pub struct NameData {
    /// The zone apex (SOA, NS).
    pub apex: bool,
    /// A geo service name.
    pub service: Option<usize>,
    /// A discovery name of this service.
    pub discovery: Option<usize>,
    /// Static AAAA (name server hosts).
    pub aaaa: Vec<Ipv6Addr>,
    /// Static A (name server hosts).
    pub a: Vec<Ipv4Addr>,
}

/// A compiled, validated zone. Immutable; shared by all query threads.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Zone apex, lower case.
    pub origin: Name,
    /// Labels in the apex.
    pub origin_labels: usize,
    /// SOA RDATA, encoded.
    pub soa_rdata: Vec<u8>,
    /// TTL of the SOA record and of negative answers (RFC 2308).
    pub negative_ttl: u32,
    /// NS RDATA (encoded target names).
    pub ns_rdata: Vec<Vec<u8>>,
    /// Names that exist, keyed by lower-case wire form.
    pub names: HashMap<Vec<u8>, NameData>,
    /// Empty non-terminals (exist, no data: NODATA, not NXDOMAIN).
    pub empty_non_terminals: HashSet<Vec<u8>>,
    /// Sites.
    pub sites: Vec<Site>,
    /// Services.
    pub services: Vec<Service>,
    /// Site preference lists; index 0 is the default policy.
    pub policies: Vec<Vec<usize>>,
    /// IPv4 client networks -> policy index.
    pub networks_v4: PrefixTrie,
    /// IPv6 client networks -> policy index.
    pub networks_v6: PrefixTrie,
    /// Default answer TTL.
    pub ttl: u32,
    /// TTL while a site's state is uncertain or an answer is a fallback.
    pub uncertain_ttl: u32,
    /// Largest UDP reply we send (RFC 6891; 1232 avoids fragmentation).
    pub max_udp_payload: u16,
    /// What to do when every site is down.
    pub all_down: AllDownPolicy,
    /// Health thresholds.
    pub hysteresis: Hysteresis,
    /// Probe interval.
    pub probe_interval: Duration,
    /// Probe timeout.
    pub probe_timeout: Duration,
}

fn parse_name(what: &str, text: &str) -> Result<Name, ConfigError> {
    if !text.is_ascii() || text.is_empty() {
        return Err(invalid(
            what,
            format!("`{text}` is not a domain name"),
            "use ASCII (punycode) names like `svc.example.com.`",
        ));
    }
    Name::from_dotted(text).map(|n| n.to_lower()).map_err(|e| {
        invalid(
            what,
            format!("`{text}` is not a valid domain name ({e})"),
            "labels are 1-63 characters and the name at most 253",
        )
    })
}

fn is_within(name: &Name, origin: &Name) -> bool {
    let (n, o) = (name.as_wire(), origin.as_wire());
    if n.len() < o.len() || !n.ends_with(o) {
        return false;
    }
    // The suffix must start at a label boundary.
    let start = n.len() - o.len();
    start == 0 || name.label_offsets().any(|off| off == start)
}

fn txt_rdata(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 1);
    for chunk in text.as_bytes().chunks(255) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    out
}

/// Encodes the discovery TXT text for a site: `v=homeaddr1 site=NAME
/// ap=[ADDR]:PORT` (IPv4 endpoints as `ADDR:PORT`).
pub fn discovery_text(site: &str, ap: SocketAddr) -> String {
    format!("v=homeaddr1 site={site} ap={ap}")
}

fn weighted<A>(
    what: &str,
    raw: &[RawAddr],
    pick: impl Fn(IpAddr) -> Option<A>,
    family: &str,
) -> Result<Vec<Weighted<A>>, ConfigError> {
    raw.iter()
        .map(|r| {
            let (addr, weight) = match *r {
                RawAddr::Plain(a) => (a, 1),
                RawAddr::Weighted { addr, weight } => (addr, weight),
            };
            if weight == 0 {
                return Err(invalid(
                    what,
                    format!("{addr} has weight 0"),
                    "weights are >= 1; remove the address to stop answering with it",
                ));
            }
            let addr = pick(addr).ok_or_else(|| {
                invalid(
                    what,
                    format!("{addr} is not an {family} address"),
                    format!("list {family} addresses here"),
                )
            })?;
            Ok(Weighted { addr, weight })
        })
        .collect()
}

impl Zone {
    /// Parses and validates a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Zone, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        Self::compile(raw)
    }

    fn compile(raw: RawConfig) -> Result<Zone, ConfigError> {
        let origin = parse_name("origin", &raw.origin)?;
        let origin_labels = origin.label_count();
        if raw.uncertain_ttl > raw.ttl {
            return Err(invalid(
                "uncertain_ttl",
                format!("{} exceeds ttl {}", raw.uncertain_ttl, raw.ttl),
                "the uncertain TTL shortens answers; set it below ttl",
            ));
        }
        if !(512..=4096).contains(&raw.max_udp_payload) {
            return Err(invalid(
                "max_udp_payload",
                format!("{} is out of range", raw.max_udp_payload),
                "use 512..=4096 (1232 is the DNS flag day value)",
            ));
        }
        if raw.health.down_after == 0 || raw.health.up_after == 0 {
            return Err(invalid(
                "health",
                "thresholds must be at least 1",
                "set down_after and up_after to 1 or more",
            ));
        }
        if raw.health.timeout_ms == 0 || raw.health.interval_ms == 0 {
            return Err(invalid(
                "health",
                "interval_ms and timeout_ms must be positive",
                "set both, e.g. 2000 and 1000",
            ));
        }

        // SOA.
        let mname = parse_name("soa.mname", &raw.soa.mname)?;
        let rname = parse_name("soa.rname", &raw.soa.rname)?;
        let mut soa_rdata = Vec::new();
        soa_rdata.extend_from_slice(mname.as_wire());
        soa_rdata.extend_from_slice(rname.as_wire());
        for v in [
            raw.soa.serial,
            raw.soa.refresh,
            raw.soa.retry,
            raw.soa.expire,
            raw.soa.minimum,
        ] {
            soa_rdata.extend_from_slice(&v.to_be_bytes());
        }

        let mut names: HashMap<Vec<u8>, NameData> = HashMap::new();
        names.entry(origin.as_wire().to_vec()).or_default().apex = true;

        // Name servers.
        if raw.ns.is_empty() {
            return Err(invalid(
                "ns",
                "no name servers",
                "add at least one [[ns]] with the name of this server",
            ));
        }
        let mut ns_rdata = Vec::new();
        for (i, ns) in raw.ns.iter().enumerate() {
            let what = format!("ns[{i}]");
            let name = parse_name(&what, &ns.name)?;
            ns_rdata.push(name.as_wire().to_vec());
            if is_within(&name, &origin) {
                let data = names.entry(name.as_wire().to_vec()).or_default();
                for a in &ns.addrs {
                    match *a {
                        IpAddr::V6(v6) => data.aaaa.push(v6),
                        IpAddr::V4(v4) => data.a.push(v4),
                    }
                }
            } else if !ns.addrs.is_empty() {
                return Err(invalid(
                    &what,
                    format!("{} is outside {} but has addrs", ns.name, raw.origin),
                    "glue is only served for names inside the zone; drop addrs",
                ));
            }
        }

        // Sites.
        if raw.site.is_empty() {
            return Err(invalid("site", "no sites", "add at least one [[site]]"));
        }
        let mut site_index: HashMap<String, usize> = HashMap::new();
        let mut sites = Vec::new();
        for (i, s) in raw.site.iter().enumerate() {
            let what = format!("site `{}`", s.name);
            if s.name.is_empty() || s.name.contains(char::is_whitespace) {
                return Err(invalid(
                    format!("site[{i}]"),
                    "empty name or name with spaces",
                    "name sites with a short token like `ams`",
                ));
            }
            if site_index.insert(s.name.clone(), i).is_some() {
                return Err(invalid(
                    &what,
                    "defined twice",
                    "give each [[site]] a unique name",
                ));
            }
            let hoas = weighted(
                &what,
                &s.hoas,
                |a| match a {
                    IpAddr::V6(v6) => Some(v6),
                    IpAddr::V4(_) => None,
                },
                "IPv6",
            )?;
            if hoas.is_empty() {
                return Err(invalid(
                    &what,
                    "has no home address",
                    "list the site's HoA(s) in hoas",
                ));
            }
            let ipv4 = weighted(
                &what,
                &s.ipv4,
                |a| match a {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                },
                "IPv4",
            )?;
            if let Some(loc) = s.location
                && !loc.is_valid()
            {
                return Err(invalid(
                    &what,
                    "location is off the globe",
                    "lat is -90..=90 and lon -180..=180",
                ));
            }
            let health = match (s.health, s.probe) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        &what,
                        "has both a static health and a probe",
                        "remove `health` to probe, or `probe` to fix the state",
                    ));
                }
                (Some(StaticHealth::Up), None) | (None, None) => HealthSource::Static(true),
                (Some(StaticHealth::Down), None) => HealthSource::Static(false),
                (None, Some(_)) => HealthSource::Probed,
            };
            sites.push(Site {
                name: s.name.clone(),
                hoas,
                ipv4,
                ap_endpoint: s.ap_endpoint,
                location: s.location,
                region: s.region.clone(),
                health,
                probe: s.probe,
                discovery_rdata: txt_rdata(&discovery_text(&s.name, s.ap_endpoint)),
            });
        }
        let resolve_sites = |what: &str, list: &[String]| -> Result<Vec<usize>, ConfigError> {
            let mut out = Vec::new();
            for n in list {
                let idx = *site_index.get(n).ok_or_else(|| {
                    invalid(
                        what,
                        format!("unknown site `{n}`"),
                        "use a name from a [[site]] entry",
                    )
                })?;
                if out.contains(&idx) {
                    return Err(invalid(
                        what,
                        format!("site `{n}` listed twice"),
                        "list each site once, most preferred first",
                    ));
                }
                out.push(idx);
            }
            Ok(out)
        };

        // Services and their discovery names.
        let mut services = Vec::new();
        for (i, s) in raw.service.iter().enumerate() {
            let what = format!("service `{}`", s.name);
            let name = parse_name(&what, &s.name)?;
            if !is_within(&name, &origin) {
                return Err(invalid(
                    &what,
                    format!("is outside the zone {}", raw.origin),
                    "service names must end with the origin",
                ));
            }
            let allowed = match &s.sites {
                None => vec![true; sites.len()],
                Some(list) => {
                    let idx = resolve_sites(&what, list)?;
                    if idx.is_empty() {
                        return Err(invalid(
                            &what,
                            "has an empty site list",
                            "omit `sites` to use all sites",
                        ));
                    }
                    (0..sites.len()).map(|k| idx.contains(&k)).collect()
                }
            };
            let data = names.entry(name.as_wire().to_vec()).or_default();
            if data.service.is_some()
                || data.discovery.is_some()
                || !data.aaaa.is_empty()
                || !data.a.is_empty()
            {
                return Err(invalid(
                    &what,
                    "name already has records",
                    "use a distinct name per service",
                ));
            }
            data.service = Some(i);
            let disc = parse_name(&what, &format!("{DISCOVERY_PREFIX}.{}", name.to_dotted()))?;
            let ddata = names.entry(disc.as_wire().to_vec()).or_default();
            if ddata.service.is_some() || ddata.discovery.is_some() {
                return Err(invalid(
                    &what,
                    "its discovery name collides with another name",
                    "rename the service",
                ));
            }
            ddata.discovery = Some(i);
            services.push(Service {
                name,
                ttl: s.ttl.unwrap_or(raw.ttl),
                allowed,
                max_answers: s.max_answers.unwrap_or(0),
            });
        }
        if services.is_empty() {
            return Err(invalid(
                "service",
                "no services",
                "add a [[service]] with the name clients look up",
            ));
        }

        // Empty non-terminals: every ancestor of a name, below the apex.
        let mut empty_non_terminals = HashSet::new();
        for key in names.keys() {
            let n = Name::from_wire_trusted(key);
            let labels = n.label_count();
            for skip in 1..labels.saturating_sub(origin_labels) {
                let anc = n.suffix_wire(skip).to_vec();
                if !names.contains_key(&anc) {
                    empty_non_terminals.insert(anc);
                }
            }
        }

        // Policies.
        let policy = |what: &str, p: &RawPolicy| -> Result<Vec<usize>, ConfigError> {
            let explicit = resolve_sites(what, p.sites.as_deref().unwrap_or(&[]))?;
            if let Some(loc) = p.location
                && !loc.is_valid()
            {
                return Err(invalid(
                    what,
                    "location is off the globe",
                    "lat is -90..=90 and lon -180..=180",
                ));
            }
            if let Some(r) = &p.region
                && !sites
                    .iter()
                    .any(|s| s.region.as_deref() == Some(r.as_str()))
            {
                return Err(invalid(
                    what,
                    format!("no site is in region `{r}`"),
                    "set `region` on the sites or fix the name",
                ));
            }
            Ok(preference_order(
                &sites,
                &explicit,
                p.location,
                p.region.as_deref(),
            ))
        };
        let default_raw = raw.default.unwrap_or_default();
        let mut policies = vec![policy("default", &default_raw)?];
        let mut networks_v4 = PrefixTrie::new(32);
        let mut networks_v6 = PrefixTrie::new(128);
        let mut seen: HashMap<IpNet, usize> = HashMap::new();
        for (i, n) in raw.network.iter().enumerate() {
            let what = format!("network[{i}] `{}`", n.prefix);
            let net: IpNet = n.prefix.parse().map_err(|_| {
                invalid(
                    &what,
                    "is not a CIDR prefix",
                    "write it like 2001:db8:100::/40 or 198.51.100.0/24",
                )
            })?;
            if net.trunc() != net {
                return Err(invalid(
                    &what,
                    "has host bits set",
                    format!("write the network as {}", net.trunc()),
                ));
            }
            if let Some(prev) = seen.insert(net, i) {
                return Err(invalid(
                    &what,
                    format!("repeats network[{prev}]"),
                    "overlapping entries with the same prefix are ambiguous; merge them into one",
                ));
            }
            if n.sites.is_none() && n.location.is_none() && n.region.is_none() {
                return Err(invalid(
                    &what,
                    "says nothing about its clients",
                    "give it `sites`, a `location` or a `region`",
                ));
            }
            let order = policy(
                &what,
                &RawPolicy {
                    sites: n.sites.clone(),
                    location: n.location,
                    region: n.region.clone(),
                },
            )?;
            let id = policies.len() as u32;
            policies.push(order);
            match net {
                IpNet::V4(v4) => networks_v4.insert(IpAddr::V4(v4.addr()), v4.prefix_len(), id),
                IpNet::V6(v6) => networks_v6.insert(IpAddr::V6(v6.addr()), v6.prefix_len(), id),
            };
        }

        Ok(Zone {
            origin,
            origin_labels,
            soa_rdata,
            negative_ttl: raw.soa.minimum,
            ns_rdata,
            names,
            empty_non_terminals,
            sites,
            services,
            policies,
            networks_v4,
            networks_v6,
            ttl: raw.ttl,
            uncertain_ttl: raw.uncertain_ttl,
            max_udp_payload: raw.max_udp_payload,
            all_down: raw.all_down,
            hysteresis: Hysteresis {
                down_after: raw.health.down_after,
                up_after: raw.health.up_after,
            },
            probe_interval: Duration::from_millis(raw.health.interval_ms),
            probe_timeout: Duration::from_millis(raw.health.timeout_ms),
        })
    }

    /// Health sources of all sites, in site order.
    pub fn health_sources(&self) -> Vec<HealthSource> {
        self.sites.iter().map(|s| s.health).collect()
    }

    /// Looks up a site by name.
    pub fn site_index(&self, name: &str) -> Option<usize> {
        self.sites.iter().position(|s| s.name == name)
    }

    /// Whether a service has any address of this type at any site.
    pub fn service_has_type(&self, service: usize, qtype: u16) -> bool {
        let s = &self.services[service];
        self.sites.iter().enumerate().any(|(i, site)| {
            s.allowed[i]
                && match qtype {
                    rtype::AAAA => !site.hoas.is_empty(),
                    rtype::A => !site.ipv4.is_empty(),
                    _ => false,
                }
        })
    }
}

impl Name {
    /// Rebuilds a name from wire bytes this crate produced itself.
    pub(crate) fn from_wire_trusted(wire: &[u8]) -> Name {
        let mut text = String::new();
        let mut pos = 0usize;
        while let Some(&len) = wire.get(pos) {
            if len == 0 {
                break;
            }
            let label = &wire[pos + 1..pos + 1 + len as usize];
            text.push_str(&String::from_utf8_lossy(label));
            text.push('.');
            pos += 1 + len as usize;
        }
        Name::from_dotted(&text).unwrap_or_else(|_| Name::root())
    }
}

/// The full preference order for a client group: explicitly listed sites
/// first; then sites of `region`; then every other site by great-circle
/// distance from `anchor` (the group's location, else the first listed
/// site's). Sites without coordinates, or with no anchor, keep config order
/// after those that have them.
pub fn preference_order(
    sites: &[Site],
    explicit: &[usize],
    location: Option<Coordinates>,
    region: Option<&str>,
) -> Vec<usize> {
    let anchor = location.or_else(|| explicit.first().and_then(|&i| sites[i].location));
    let mut order: Vec<usize> = explicit.to_vec();
    let by_distance = |mut idx: Vec<usize>| -> Vec<usize> {
        idx.sort_by(|&a, &b| {
            let da = anchor.and_then(|p| sites[a].location.map(|l| p.distance_km(&l)));
            let db = anchor.and_then(|p| sites[b].location.map(|l| p.distance_km(&l)));
            match (da, db) {
                (Some(x), Some(y)) => x.total_cmp(&y).then(a.cmp(&b)),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.cmp(&b),
            }
        });
        idx
    };
    if let Some(r) = region {
        let in_region: Vec<usize> = (0..sites.len())
            .filter(|i| !order.contains(i) && sites[*i].region.as_deref() == Some(r))
            .collect();
        order.extend(by_distance(in_region));
    }
    let rest: Vec<usize> = (0..sites.len()).filter(|i| !order.contains(i)).collect();
    order.extend(by_distance(rest));
    order
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A three-site zone used across the crate's tests.
    pub(crate) const SAMPLE: &str = r#"
origin = "example.com."
ttl = 60
uncertain_ttl = 5
all_down = "fail-open"

[soa]
mname = "ns1.example.com."
rname = "hostmaster.example.com."
serial = 2024060101
minimum = 30

[[ns]]
name = "ns1.example.com."
addrs = ["2001:db8::53", "192.0.2.53"]

[[service]]
name = "svc.example.com."

[[service]]
name = "atlantic.example.com."
sites = ["ams", "nyc"]
ttl = 120

[[service]]
name = "fra.example.com."
sites = ["fra"]

[[service]]
name = "one.example.com."
max_answers = 1

[health]
down_after = 3
up_after = 2

[[site]]
name = "ams"
hoas = ["2001:db8:a::1"]
ipv4 = ["192.0.2.10"]
ap_endpoint = "[2001:db8:a::100]:4500"
location = { lat = 52.37, lon = 4.90 }
region = "eu"
probe = "[2001:db8:a::100]:443"

[[site]]
name = "fra"
hoas = ["2001:db8:f::1"]
ap_endpoint = "[2001:db8:f::100]:4500"
location = { lat = 50.11, lon = 8.68 }
region = "eu"
probe = "[2001:db8:f::100]:443"

[[site]]
name = "nyc"
hoas = ["2001:db8:c::1", { addr = "2001:db8:c::2", weight = 3 }]
ipv4 = ["198.51.100.10"]
ap_endpoint = "198.51.100.100:4500"
location = { lat = 40.71, lon = -74.01 }
region = "us"

[default]
location = { lat = 51.5, lon = -0.12 }

[[network]]
prefix = "2001:db8:100::/40"
region = "eu"

[[network]]
prefix = "2001:db8:100:ff00::/56"
sites = ["fra"]

[[network]]
prefix = "203.0.113.0/24"
location = { lat = 37.77, lon = -122.42 }

[[network]]
prefix = "10.0.0.0/8"
sites = ["nyc"]
"#;

    pub(crate) fn sample() -> Zone {
        Zone::from_toml(SAMPLE).expect("sample config is valid")
    }

    fn err(text: &str) -> String {
        Zone::from_toml(text)
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn sample_compiles_with_expected_policies() {
        let z = sample();
        assert_eq!(z.sites.len(), 3);
        let (ams, fra, nyc) = (0, 1, 2);
        // Default: from London, ams is nearer than fra, nyc last.
        assert_eq!(z.policies[0], vec![ams, fra, nyc]);
        // Region eu: ams and fra (by config order since no anchor), then nyc.
        assert_eq!(z.policies[1], vec![ams, fra, nyc]);
        // Explicit fra, then by distance from fra.
        assert_eq!(z.policies[2], vec![fra, ams, nyc]);
        // From San Francisco.
        assert_eq!(z.policies[3], vec![nyc, ams, fra]);
        assert_eq!(z.sites[0].health, HealthSource::Probed);
        assert_eq!(z.sites[2].health, HealthSource::Static(true));
        assert_eq!(z.sites[2].hoas[1].weight, 3);
        assert!(
            z.names.contains_key(
                Name::from_dotted("_homeaddr._udp.svc.example.com.")
                    .unwrap()
                    .as_wire()
            )
        );
        assert!(
            z.empty_non_terminals.contains(
                Name::from_dotted("_udp.svc.example.com.")
                    .unwrap()
                    .as_wire()
            )
        );
        assert!(z.service_has_type(0, rtype::A));
    }

    #[test]
    fn duplicate_prefix_is_rejected_with_both_entries_named() {
        let text = format!("{SAMPLE}\n[[network]]\nprefix = \"10.0.0.0/8\"\nsites = [\"ams\"]\n");
        let e = err(&text);
        assert!(
            e.contains("network[4] `10.0.0.0/8`: repeats network[3]"),
            "{e}"
        );
        assert!(e.contains("merge them"), "{e}");
    }

    #[test]
    fn host_bits_in_prefix_are_rejected_with_the_fix() {
        let text = format!("{SAMPLE}\n[[network]]\nprefix = \"10.1.2.3/16\"\nsites = [\"ams\"]\n");
        assert!(err(&text).contains("write the network as 10.1.0.0/16"));
    }

    #[test]
    fn bad_references_and_values_are_explained() {
        let e = err(&SAMPLE.replace("sites = [\"fra\"]", "sites = [\"lhr\"]"));
        assert!(e.contains("unknown site `lhr`"), "{e}");
        let e = err(&SAMPLE.replace("hoas = [\"2001:db8:a::1\"]", "hoas = [\"192.0.2.1\"]"));
        assert!(e.contains("not an IPv6 address"), "{e}");
        let e = err(&SAMPLE.replace("name = \"svc.example.com.\"", "name = \"svc.example.net.\""));
        assert!(e.contains("outside the zone"), "{e}");
        let e = err(&SAMPLE.replace("uncertain_ttl = 5", "uncertain_ttl = 500"));
        assert!(e.contains("uncertain_ttl"), "{e}");
        let e = err(&SAMPLE.replace("ttl = 60", "ttl = 60\nbogus = 1"));
        assert!(e.contains("bogus"), "{e}");
        let e = err(&SAMPLE.replace("lat = 52.37", "lat = 152.37"));
        assert!(e.contains("off the globe"), "{e}");
    }

    #[test]
    fn within_respects_label_boundaries() {
        let o = Name::from_dotted("example.com.").unwrap();
        assert!(is_within(&Name::from_dotted("a.example.com.").unwrap(), &o));
        assert!(is_within(&o, &o));
        assert!(!is_within(
            &Name::from_dotted("badexample.com.").unwrap(),
            &o
        ));
        assert!(!is_within(&Name::from_dotted("com.").unwrap(), &o));
    }
}
