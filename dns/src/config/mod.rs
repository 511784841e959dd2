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

mod compile;
mod errors;
mod file;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

pub use errors::ConfigError;
use file::RawConfig;
pub use file::{AllDownPolicy, StaticHealth};

use crate::geo::{Coordinates, PrefixTrie};
use crate::health::{HealthSource, Hysteresis};
use crate::wire::{Name, rtype};

/// The label prepended to a service name to form its discovery name:
/// `_homeaddr._udp.<service>` carries a TXT record with the AP tunnel
/// endpoint of the client's site.
pub const DISCOVERY_PREFIX: &str = "_homeaddr._udp";

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

/// Encodes the discovery TXT text for a site: `v=homeaddr1 site=NAME
/// ap=[ADDR]:PORT` (IPv4 endpoints as `ADDR:PORT`).
pub fn discovery_text(site: &str, ap: SocketAddr) -> String {
    format!("v=homeaddr1 site={site} ap={ap}")
}

impl Zone {
    /// Parses and validates a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Zone, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        compile::compile(raw)
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
}
