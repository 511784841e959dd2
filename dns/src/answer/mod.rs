//! The pure query -> response function of the authoritative server.
//!
//! Layer: sans-IO core. Contract: [`answer`] reads a query message, the
//! transport it came on and its source address, and writes the complete
//! reply into the caller's buffer (or says to stay silent). It never panics
//! on any input, never allocates beyond the reply buffer on the common path,
//! and reads only the immutable [`Snapshot`] it is given, so any number of
//! threads can run it against one `ArcSwap<Snapshot>` without locks.
//!
//! Time does not appear: health (the only thing that changes with time) is
//! decided by the health monitor, which publishes a new snapshot.

mod locate;
mod reply;

use std::net::IpAddr;
use std::sync::Arc;

pub use locate::{PRIVATE_RANGES, private_range};

use crate::config::{AllDownPolicy, NameData, Service, Weighted, Zone};
use crate::health::{HealthSource, SiteHealth};
use crate::select::{self, ClientPrefix, Need, SPREAD_BITS_V4, SPREAD_BITS_V6, Selection};
use crate::wire::{self, ParseError, Query, WireError, class, pointer, rcode, rtype};
use locate::{Locator, locate};
use reply::{AN, Envelope, NS, Reply};

/// Transport of a query (decides the reply size limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 octets without EDNS, else the smaller of the requestor's
    /// payload size and ours; larger replies are truncated (TC).
    Udp,
    /// TCP: up to 65535 octets.
    Tcp,
}

/// What the query path reads: a zone and the health of its sites.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The compiled zone.
    pub zone: Arc<Zone>,
    /// Health per site (same order as `zone.sites`).
    pub health: Vec<SiteHealth>,
}

impl Snapshot {
    /// A snapshot with the initial health: static sites as configured,
    /// probed sites serving but uncertain until their first verdict.
    pub fn new(zone: Arc<Zone>) -> Self {
        let health = zone
            .health_sources()
            .into_iter()
            .map(|s| match s {
                HealthSource::Static(true) => SiteHealth::UP,
                HealthSource::Static(false) => SiteHealth::DOWN,
                HealthSource::Probed => SiteHealth {
                    serving: true,
                    uncertain: true,
                },
            })
            .collect();
        Self { zone, health }
    }

    /// The same zone with new health.
    pub fn with_health(&self, health: Vec<SiteHealth>) -> Self {
        Self {
            zone: self.zone.clone(),
            health,
        }
    }
}

/// What happened, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The 12-bit RCODE sent.
    pub rcode: u16,
    /// The site answered with, if the answer was a geo answer.
    pub site: Option<usize>,
    /// The reply was truncated (TC set).
    pub truncated: bool,
    /// The query carried ECS.
    pub ecs: bool,
    /// Why the query was malformed (answered FORMERR), if it was.
    pub malformed: Option<WireError>,
}

/// Answers one query. Returns `None` when no reply must be sent (runt
/// packets and responses). `out` is cleared and receives the reply.
pub fn answer(
    snap: &Snapshot,
    query: &[u8],
    src: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Option<Outcome> {
    match Query::parse(query) {
        Err(ParseError::Drop) => None,
        Err(ParseError::Malformed(bad)) => {
            let wire::Malformed {
                header,
                question,
                edns,
                error,
            } = *bad;
            let env = Envelope::new(&snap.zone, header, edns.as_ref(), transport);
            let reply = Reply::start(out, question.as_ref());
            let truncated = reply.finish(&env, rcode::FORMERR, false, None);
            Some(Outcome {
                rcode: rcode::FORMERR,
                site: None,
                truncated,
                ecs: false,
                malformed: Some(error),
            })
        }
        Ok(q) => Some(respond(snap, &q, src, transport, out)),
    }
}

/// A well-formed query: rejected, or answered from the zone.
fn respond(
    snap: &Snapshot,
    q: &Query,
    src: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Outcome {
    let edns = q.edns.as_ref();
    let env = Envelope::new(&snap.zone, q.header, edns, transport);
    let query_ecs = edns.and_then(|e| e.client_subnet);
    let mut outcome = Outcome {
        rcode: rcode::NOERROR,
        site: None,
        truncated: false,
        ecs: query_ecs.is_some(),
        malformed: None,
    };
    let mut reply = Reply::start(out, Some(&q.question));
    // ECS echoed with SCOPE 0 unless a geo decision sets it (RFC 7871 sec.
    // 7.2.1: an ECS query always gets ECS back; FAMILY, SOURCE and ADDRESS
    // as in the query).
    let mut reply_ecs = query_ecs.map(|mut e| {
        e.scope_prefix = 0;
        e
    });
    let (rcode, aa) = match check_query(&snap.zone, q) {
        Err(Rejection { rcode, echo_ecs }) => {
            if !echo_ecs {
                reply_ecs = None;
            }
            (rcode, false)
        }
        Ok(qname) => {
            let client = locate(query_ecs.as_ref(), src);
            let (rcode, geo) = answer_in_zone(&mut reply, snap, &qname, q.question.qtype, client);
            if let Some(geo) = geo {
                outcome.site = geo.site;
                if let Some(e) = reply_ecs.as_mut() {
                    e.scope_prefix = geo.scope;
                }
            }
            (rcode, true)
        }
    };
    outcome.rcode = rcode;
    outcome.truncated = reply.finish(&env, rcode, aa, reply_ecs.as_ref());
    outcome
}

/// Why a query is not answered from the zone, and whether the reply echoes
/// the query's ECS (not when the query was not processed at all).
struct Rejection {
    rcode: u16,
    echo_ecs: bool,
}

/// The checks before the zone is read. Returns the question name in lower
/// case when the zone answers.
fn check_query(zone: &Zone, q: &Query) -> Result<wire::Name, Rejection> {
    // RFC 6891 sec. 6.1.3: an unsupported version gets BADVERS, and the
    // OPT of the reply says which version we do support (0). No ECS: the
    // query was not processed.
    if let Some(e) = &q.edns
        && e.version > 0
    {
        return Err(Rejection {
            rcode: rcode::BADVERS,
            echo_ecs: false,
        });
    }
    if q.header.opcode() != 0 {
        return Err(Rejection {
            rcode: rcode::NOTIMP,
            echo_ecs: true,
        });
    }
    let qtype = q.question.qtype;
    if qtype == rtype::OPT {
        return Err(Rejection {
            rcode: rcode::FORMERR,
            echo_ecs: false,
        });
    }
    let qname = q.question.name.to_lower();
    if q.question.qclass != class::IN
        || !qname.is_within(&zone.origin)
        || qtype == rtype::AXFR
        || qtype == rtype::IXFR
    {
        // Not ours (other class, other zone) or a zone transfer we do not
        // offer: REFUSED, without AA.
        return Err(Rejection {
            rcode: rcode::REFUSED,
            echo_ecs: true,
        });
    }
    Ok(qname)
}

/// Owner of every answer record: the question name at offset 12.
const QNAME: [u8; 2] = pointer(wire::HEADER_LEN);

/// A name of the zone: its records, or the negative answer with the SOA
/// (RFC 2308). Returns the RCODE, and what the geo answer decided if
/// there was one.
fn answer_in_zone(
    reply: &mut Reply<'_>,
    snap: &Snapshot,
    qname: &wire::Name,
    qtype: u16,
    client: Locator,
) -> (u16, Option<GeoAnswer>) {
    let zone = &*snap.zone;
    let Some(data) = zone.names.get(qname.as_wire()) else {
        add_soa(reply, zone, qname);
        let rcode = if zone.empty_non_terminals.contains(qname.as_wire()) {
            rcode::NOERROR
        } else {
            rcode::NXDOMAIN
        };
        return (rcode, None);
    };
    static_records(reply, zone, data, qtype);
    let geo = geo_question(zone, data, qtype)
        .map(|(service, need)| geo_answer(reply, snap, service, need, client));
    if reply.answers() == 0 {
        // NODATA: the name exists, the type does not (RFC 2308 sec. 2.2).
        // A geo NODATA (all down with the nodata policy) keeps its scope;
        // other negative answers are /0 (RFC 7871 sec. 7.4).
        add_soa(reply, zone, qname);
    }
    (rcode::NOERROR, geo)
}

/// The records the file gives a name: SOA and NS at the apex, glue of
/// name servers.
fn static_records(reply: &mut Reply<'_>, zone: &Zone, data: &NameData, qtype: u16) {
    let any = qtype == rtype::ANY;
    if data.apex {
        if qtype == rtype::SOA || any {
            reply.record(AN, &QNAME, rtype::SOA, zone.negative_ttl, &zone.soa_rdata);
        }
        if qtype == rtype::NS || any {
            for ns in &zone.ns_rdata {
                reply.record(AN, &QNAME, rtype::NS, zone.ttl, ns);
            }
        }
    }
    if qtype == rtype::AAAA || any {
        for a in &data.aaaa {
            reply.record(AN, &QNAME, rtype::AAAA, zone.ttl, &a.octets());
        }
    }
    if qtype == rtype::A || any {
        for a in &data.a {
            reply.record(AN, &QNAME, rtype::A, zone.ttl, &a.octets());
        }
    }
}

/// Whether the question asks for a geo answer: which service, and what of
/// its sites.
fn geo_question(zone: &Zone, data: &NameData, qtype: u16) -> Option<(usize, Need)> {
    let any = qtype == rtype::ANY;
    match (data.service, data.discovery) {
        (Some(s), _) if qtype == rtype::AAAA || any => Some((s, Need::Aaaa)),
        (Some(s), _) if qtype == rtype::A && zone.service_has_type(s, rtype::A) => {
            Some((s, Need::A))
        }
        (_, Some(s)) if qtype == rtype::TXT || any => Some((s, Need::Discovery)),
        _ => None,
    }
}

/// What a geo answer decided: the site answered with, and the SCOPE the
/// reply's ECS states.
struct GeoAnswer {
    site: Option<usize>,
    scope: u8,
}

/// Selects the site for the client and writes its records.
fn geo_answer(
    reply: &mut Reply<'_>,
    snap: &Snapshot,
    service: usize,
    need: Need,
    loc: Locator,
) -> GeoAnswer {
    let zone = &*snap.zone;
    let svc = &zone.services[service];
    let selection = select::select(zone, &snap.health, service, need, loc.client);
    let (mut scope, ttl, sites) = geo_decision(zone, svc, selection);
    let records = SiteRecords {
        zone,
        need,
        ttl,
        client: loc.client,
    };
    let site = match sites {
        SiteList::One(site) => {
            if let Some(spread) = records.emit(reply, site, svc.max_answers) {
                scope = scope.max(spread);
            }
            Some(site)
        }
        SiteList::All => {
            for site in select::fail_open_sites(zone, service, need, loc.client) {
                records.emit(reply, site, 0);
            }
            None
        }
        SiteList::None => None,
    };
    GeoAnswer {
        site,
        scope: loc.fixed_scope.unwrap_or(scope),
    }
}

enum SiteList {
    One(usize),
    All,
    None,
}

/// The selection as a SCOPE, a TTL and the sites to answer with: short TTL
/// while uncertain or when every site is down.
fn geo_decision(zone: &Zone, svc: &Service, selection: Selection) -> (u8, u32, SiteList) {
    let short_ttl = zone.uncertain_ttl.min(svc.ttl);
    match selection {
        Selection::Site {
            site,
            scope,
            short_ttl: short,
        } => {
            let ttl = if short { short_ttl } else { svc.ttl };
            (scope, ttl, SiteList::One(site))
        }
        Selection::AllDown { scope } => match zone.all_down {
            AllDownPolicy::Nodata => (scope, short_ttl, SiteList::None),
            AllDownPolicy::FailOpen => (scope, short_ttl, SiteList::All),
        },
    }
}

/// Writes the records of one site a geo answer names.
struct SiteRecords<'z> {
    zone: &'z Zone,
    need: Need,
    ttl: u32,
    client: ClientPrefix,
}

impl SiteRecords<'_> {
    /// Returns the prefix length the choice of addresses depends on, if
    /// fewer than all were chosen.
    fn emit(&self, reply: &mut Reply<'_>, site: usize, limit_answers: usize) -> Option<u8> {
        let s = &self.zone.sites[site];
        match self.need {
            Need::Aaaa => emit_weighted(
                reply,
                rtype::AAAA,
                self.ttl,
                &s.hoas,
                limit_answers,
                self.client,
            ),
            Need::A => emit_weighted(
                reply,
                rtype::A,
                self.ttl,
                &s.ipv4,
                limit_answers,
                self.client,
            ),
            Need::Discovery => {
                reply.record(AN, &QNAME, rtype::TXT, self.ttl, &s.discovery_rdata);
                None
            }
        }
    }
}

/// Emits a site's addresses; with `limit` > 0 and fewer than all, picks them
/// by weighted rendezvous on the client prefix and returns the prefix length
/// that choice depends on.
fn emit_weighted<A: Copy + Into<IpAddr>>(
    reply: &mut Reply<'_>,
    rtype: u16,
    ttl: u32,
    addrs: &[Weighted<A>],
    limit: usize,
    client: ClientPrefix,
) -> Option<u8> {
    let put = |reply: &mut Reply<'_>, addr: A| match addr.into() {
        IpAddr::V4(a) => reply.record(AN, &QNAME, rtype, ttl, &a.octets()),
        IpAddr::V6(a) => reply.record(AN, &QNAME, rtype, ttl, &a.octets()),
    };
    if limit == 0 || limit >= addrs.len() {
        for a in addrs {
            put(reply, a.addr);
        }
        return None;
    }
    let bits = if client.addr.is_ipv4() {
        SPREAD_BITS_V4
    } else {
        SPREAD_BITS_V6
    };
    let key = select::spread_key(client.addr, bits.min(client.known));
    for i in select::rendezvous_order(addrs, key).into_iter().take(limit) {
        put(reply, addrs[i].addr);
    }
    Some(bits)
}

fn add_soa(reply: &mut Reply<'_>, zone: &Zone, qname: &wire::Name) {
    // The apex is a suffix of the question name, which sits uncompressed at
    // offset 12: point at it.
    let skip = qname.label_count().saturating_sub(zone.origin_labels);
    let offset = qname.label_offsets().nth(skip).unwrap_or(0);
    let owner = pointer(wire::HEADER_LEN + offset);
    reply.record(NS, &owner, rtype::SOA, zone.negative_ttl, &zone.soa_rdata);
}

#[cfg(test)]
mod tests;
