//! From the file to the [`Zone`]: every check, one step per part of the file.
//!
//! [`compile`] runs the steps in a fixed order (settings, SOA, name servers,
//! sites, services, client networks), so a file with several problems always
//! reports the same first one. Each step returns only what the query path
//! needs of its part.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::errors::{ConfigError, invalid};
use super::file::{
    RawAddr, RawConfig, RawHealth, RawNetwork, RawNs, RawPolicy, RawService, RawSite, RawSoa,
    StaticHealth,
};
use super::{
    DISCOVERY_PREFIX, NameData, Service, Site, Weighted, Zone, discovery_text, preference_order,
};
use crate::geo::{Coordinates, PrefixTrie};
use crate::health::{HealthSource, Hysteresis};
use crate::wire::Name;

/// Validates a parsed file and compiles it into a [`Zone`].
pub(super) fn compile(raw: RawConfig) -> Result<Zone, ConfigError> {
    let mut names = ZoneNames::new(&raw.origin)?;
    check_ttls(&raw)?;
    check_health(&raw.health)?;
    let soa_rdata = soa_rdata(&raw.soa)?;
    let ns_rdata = name_servers(&mut names, &raw.ns)?;
    let sites = SiteTable::compile(&raw.site)?;
    let services = services(&mut names, &raw.service, raw.ttl, &sites)?;
    let networks = ClientNetworks::compile(&raw.network, raw.default.as_ref(), &sites)?;
    let empty_non_terminals = names.empty_non_terminals();
    let ZoneNames { origin, names, .. } = names;
    Ok(Zone {
        origin_labels: origin.label_count(),
        origin,
        soa_rdata,
        negative_ttl: raw.soa.minimum,
        ns_rdata,
        names,
        empty_non_terminals,
        sites: sites.sites,
        services,
        policies: networks.policies,
        networks_v4: networks.v4,
        networks_v6: networks.v6,
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

/// The answer TTLs and the UDP payload size.
fn check_ttls(raw: &RawConfig) -> Result<(), ConfigError> {
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
    Ok(())
}

/// The probe thresholds and timers.
fn check_health(health: &RawHealth) -> Result<(), ConfigError> {
    if health.down_after == 0 || health.up_after == 0 {
        return Err(invalid(
            "health",
            "thresholds must be at least 1",
            "set down_after and up_after to 1 or more",
        ));
    }
    if health.timeout_ms == 0 || health.interval_ms == 0 {
        return Err(invalid(
            "health",
            "interval_ms and timeout_ms must be positive",
            "set both, e.g. 2000 and 1000",
        ));
    }
    Ok(())
}

/// The SOA RDATA (RFC 1035 sec. 3.3.13), encoded once.
fn soa_rdata(soa: &RawSoa) -> Result<Vec<u8>, ConfigError> {
    let mname = parse_name("soa.mname", &soa.mname)?;
    let rname = parse_name("soa.rname", &soa.rname)?;
    let mut rdata = Vec::new();
    rdata.extend_from_slice(mname.as_wire());
    rdata.extend_from_slice(rname.as_wire());
    for v in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    Ok(rdata)
}

/// The names of the zone as they are compiled: the apex, and what exists at
/// each name below it.
struct ZoneNames<'r> {
    /// The apex, lower case.
    origin: Name,
    /// The origin as the file writes it, for error messages.
    origin_text: &'r str,
    /// What exists at each name, keyed by lower-case wire form.
    names: HashMap<Vec<u8>, NameData>,
}

impl<'r> ZoneNames<'r> {
    fn new(origin_text: &'r str) -> Result<Self, ConfigError> {
        let origin = parse_name("origin", origin_text)?;
        let mut names: HashMap<Vec<u8>, NameData> = HashMap::new();
        names.entry(origin.as_wire().to_vec()).or_default().apex = true;
        Ok(Self {
            origin,
            origin_text,
            names,
        })
    }

    fn contains(&self, name: &Name) -> bool {
        name.is_within(&self.origin)
    }

    fn at(&mut self, name: &Name) -> &mut NameData {
        self.names.entry(name.as_wire().to_vec()).or_default()
    }

    /// Gives `name` to service `i`, and its discovery name too; neither may
    /// hold anything yet.
    fn claim_service(&mut self, what: &str, name: &Name, i: usize) -> Result<(), ConfigError> {
        let data = self.at(name);
        if data.service.is_some()
            || data.discovery.is_some()
            || !data.aaaa.is_empty()
            || !data.a.is_empty()
        {
            return Err(invalid(
                what,
                "name already has records",
                "use a distinct name per service",
            ));
        }
        data.service = Some(i);
        let disc = parse_name(what, &format!("{DISCOVERY_PREFIX}.{}", name.to_dotted()))?;
        let ddata = self.at(&disc);
        if ddata.service.is_some() || ddata.discovery.is_some() {
            return Err(invalid(
                what,
                "its discovery name collides with another name",
                "rename the service",
            ));
        }
        ddata.discovery = Some(i);
        Ok(())
    }

    /// Every ancestor of a name, below the apex, that has no data of its
    /// own: it exists (NODATA, not NXDOMAIN).
    fn empty_non_terminals(&self) -> HashSet<Vec<u8>> {
        let origin_labels = self.origin.label_count();
        let mut out = HashSet::new();
        for key in self.names.keys() {
            let n = Name::from_wire_trusted(key);
            let labels = n.label_count();
            for skip in 1..labels.saturating_sub(origin_labels) {
                let anc = n.suffix_wire(skip).to_vec();
                if !self.names.contains_key(&anc) {
                    out.insert(anc);
                }
            }
        }
        out
    }
}

/// The NS RDATA; name servers inside the zone get their glue as A/AAAA.
fn name_servers(names: &mut ZoneNames<'_>, raw: &[RawNs]) -> Result<Vec<Vec<u8>>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid(
            "ns",
            "no name servers",
            "add at least one [[ns]] with the name of this server",
        ));
    }
    let mut ns_rdata = Vec::new();
    for (i, ns) in raw.iter().enumerate() {
        let what = format!("ns[{i}]");
        let name = parse_name(&what, &ns.name)?;
        ns_rdata.push(name.as_wire().to_vec());
        if names.contains(&name) {
            let data = names.at(&name);
            for a in &ns.addrs {
                match *a {
                    IpAddr::V6(v6) => data.aaaa.push(v6),
                    IpAddr::V4(v4) => data.a.push(v4),
                }
            }
        } else if !ns.addrs.is_empty() {
            return Err(invalid(
                &what,
                format!("{} is outside {} but has addrs", ns.name, names.origin_text),
                "glue is only served for names inside the zone; drop addrs",
            ));
        }
    }
    Ok(ns_rdata)
}

/// The sites, and their names for the references of services and networks.
struct SiteTable {
    sites: Vec<Site>,
    index: HashMap<String, usize>,
}

impl SiteTable {
    fn compile(raw: &[RawSite]) -> Result<Self, ConfigError> {
        if raw.is_empty() {
            return Err(invalid("site", "no sites", "add at least one [[site]]"));
        }
        let mut table = SiteTable {
            sites: Vec::new(),
            index: HashMap::new(),
        };
        for (i, s) in raw.iter().enumerate() {
            let what = format!("site `{}`", s.name);
            if s.name.is_empty() || s.name.contains(char::is_whitespace) {
                return Err(invalid(
                    format!("site[{i}]"),
                    "empty name or name with spaces",
                    "name sites with a short token like `ams`",
                ));
            }
            if table.index.insert(s.name.clone(), i).is_some() {
                return Err(invalid(
                    &what,
                    "defined twice",
                    "give each [[site]] a unique name",
                ));
            }
            table.sites.push(site(&what, s)?);
        }
        Ok(table)
    }

    /// Site names to indices, each site at most once, order kept.
    fn resolve(&self, what: &str, list: &[String]) -> Result<Vec<usize>, ConfigError> {
        let mut out = Vec::new();
        for n in list {
            let idx = *self.index.get(n).ok_or_else(|| {
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
    }

    /// Per site: may a service with this `sites` list answer with it.
    fn allowed(&self, what: &str, list: Option<&[String]>) -> Result<Vec<bool>, ConfigError> {
        let Some(list) = list else {
            return Ok(vec![true; self.sites.len()]);
        };
        let idx = self.resolve(what, list)?;
        if idx.is_empty() {
            return Err(invalid(
                what,
                "has an empty site list",
                "omit `sites` to use all sites",
            ));
        }
        Ok((0..self.sites.len()).map(|k| idx.contains(&k)).collect())
    }

    /// A client group's full site preference order.
    fn policy(&self, what: &str, p: &RawPolicy) -> Result<Vec<usize>, ConfigError> {
        let explicit = self.resolve(what, p.sites.as_deref().unwrap_or(&[]))?;
        check_location(what, p.location)?;
        if let Some(r) = &p.region
            && !self
                .sites
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
            &self.sites,
            &explicit,
            p.location,
            p.region.as_deref(),
        ))
    }
}

/// One site: its addresses, location and how its health is known.
fn site(what: &str, s: &RawSite) -> Result<Site, ConfigError> {
    let hoas = weighted(
        what,
        &s.hoas,
        |a| match a {
            IpAddr::V6(v6) => Some(v6),
            IpAddr::V4(_) => None,
        },
        "IPv6",
    )?;
    if hoas.is_empty() {
        return Err(invalid(
            what,
            "has no home address",
            "list the site's HoA(s) in hoas",
        ));
    }
    let ipv4 = weighted(
        what,
        &s.ipv4,
        |a| match a {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        },
        "IPv4",
    )?;
    check_location(what, s.location)?;
    Ok(Site {
        name: s.name.clone(),
        hoas,
        ipv4,
        ap_endpoint: s.ap_endpoint,
        location: s.location,
        region: s.region.clone(),
        health: site_health(what, s)?,
        probe: s.probe,
        discovery_rdata: txt_rdata(&discovery_text(&s.name, s.ap_endpoint)),
    })
}

/// A site is either probed or has a fixed state, never both.
fn site_health(what: &str, s: &RawSite) -> Result<HealthSource, ConfigError> {
    Ok(match (s.health, s.probe) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                what,
                "has both a static health and a probe",
                "remove `health` to probe, or `probe` to fix the state",
            ));
        }
        (Some(StaticHealth::Up), None) | (None, None) => HealthSource::Static(true),
        (Some(StaticHealth::Down), None) => HealthSource::Static(false),
        (None, Some(_)) => HealthSource::Probed,
    })
}

fn check_location(what: &str, location: Option<Coordinates>) -> Result<(), ConfigError> {
    match location {
        Some(loc) if !loc.is_valid() => Err(invalid(
            what,
            "location is off the globe",
            "lat is -90..=90 and lon -180..=180",
        )),
        _ => Ok(()),
    }
}

/// The services, in file order; each claims its name and discovery name.
fn services(
    names: &mut ZoneNames<'_>,
    raw: &[RawService],
    default_ttl: u32,
    sites: &SiteTable,
) -> Result<Vec<Service>, ConfigError> {
    let mut services = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let what = format!("service `{}`", s.name);
        let name = parse_name(&what, &s.name)?;
        if !names.contains(&name) {
            return Err(invalid(
                &what,
                format!("is outside the zone {}", names.origin_text),
                "service names must end with the origin",
            ));
        }
        let allowed = sites.allowed(&what, s.sites.as_deref())?;
        names.claim_service(&what, &name, i)?;
        services.push(Service {
            name,
            ttl: s.ttl.unwrap_or(default_ttl),
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
    Ok(services)
}

/// The client networks: one policy each (index 0 is the default) and the
/// per-family prefix tries that map a client to it.
///
/// A prefix nested in a shorter one is kept as is: the trie gives the longer
/// one its addresses and answers for the rest of the shorter one with a
/// SCOPE that excludes it (RFC 7871 sec. 7.2.1, "deaggregate").
struct ClientNetworks {
    policies: Vec<Vec<usize>>,
    v4: PrefixTrie,
    v6: PrefixTrie,
}

impl ClientNetworks {
    fn compile(
        raw: &[RawNetwork],
        default: Option<&RawPolicy>,
        sites: &SiteTable,
    ) -> Result<Self, ConfigError> {
        let mut out = ClientNetworks {
            policies: vec![sites.policy("default", default.unwrap_or(&RawPolicy::default()))?],
            v4: PrefixTrie::new(32),
            v6: PrefixTrie::new(128),
        };
        let mut seen: HashMap<IpNet, usize> = HashMap::new();
        for (i, n) in raw.iter().enumerate() {
            let what = format!("network[{i}] `{}`", n.prefix);
            let net = parse_prefix(&what, &n.prefix)?;
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
            let policy = RawPolicy {
                sites: n.sites.clone(),
                location: n.location,
                region: n.region.clone(),
            };
            let order = sites.policy(&what, &policy)?;
            out.insert(net, order);
        }
        Ok(out)
    }

    fn insert(&mut self, net: IpNet, order: Vec<usize>) {
        let id = self.policies.len() as u32;
        self.policies.push(order);
        match net {
            IpNet::V4(v4) => self.v4.insert(IpAddr::V4(v4.addr()), v4.prefix_len(), id),
            IpNet::V6(v6) => self.v6.insert(IpAddr::V6(v6.addr()), v6.prefix_len(), id),
        };
    }
}

/// A CIDR prefix with no host bits set.
fn parse_prefix(what: &str, text: &str) -> Result<IpNet, ConfigError> {
    let net: IpNet = text.parse().map_err(|_| {
        invalid(
            what,
            "is not a CIDR prefix",
            "write it like 2001:db8:100::/40 or 198.51.100.0/24",
        )
    })?;
    if net.trunc() != net {
        return Err(invalid(
            what,
            "has host bits set",
            format!("write the network as {}", net.trunc()),
        ));
    }
    Ok(net)
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

fn txt_rdata(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 1);
    for chunk in text.as_bytes().chunks(255) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::SAMPLE;

    fn err(text: &str) -> String {
        Zone::from_toml(text)
            .expect_err("must be rejected")
            .to_string()
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
}
