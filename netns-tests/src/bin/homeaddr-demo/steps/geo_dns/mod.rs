//! Step 6: the geo-DNS. homeaddr-dns serves the service name for two sites
//! (the first steps' access point in Frankfurt and a second one in New
//! York); a resolver asks on behalf of a client in each region, with ECS
//! carrying the client's subnet, and each client connects to the site it
//! was given. Then the New York site loses power: its health probe fails,
//! and the next answer sends its client to Frankfurt (the time printed).

mod resolver;
mod world;

use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use homeaddr_netns_tests::scenario::{self, Interrupted};
use homeaddr_netns_tests::service::{SERVICE_PORT, Service};
use homeaddr_netns_tests::testapp;

use self::resolver::{Answer, Resolver};
use self::world::{
    ASKERS, Asker, CHICAGO, DOWN_AFTER, PROBE_INTERVAL, PROBE_TIMEOUT, SERVICE_NAME, SITES, Site,
    TTL, UNCERTAIN_TTL, UP_AFTER, World, site_of,
};
use super::header;
use crate::output::{ms, say, secs, table};
use crate::report::Report;

/// The check names (the summary lists them as NOT RUN if the step stops).
pub(crate) const NEAREST: &str = "geo-DNS: each client gets its nearest site";
pub(crate) const FAILOVER: &str = "geo-DNS: a site down sends its clients to the next site";

/// The site that goes down.
const FAILING: &str = "new-york";
/// How long the name server may take to have both sites healthy, and to
/// move the answers once a site is down.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(15);
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the resolver asks while waiting for the answer to change.
const ASK_EVERY: Duration = Duration::from_millis(10);
/// What the failover may take beyond the probes' own bound (scheduling
/// on a loaded machine).
const FAILOVER_SLACK: Duration = Duration::from_millis(750);

/// One asker's answer, and what a connection to it reached.
struct Row {
    asker: &'static Asker,
    answer: Answer,
    site: Option<&'static Site>,
    expected: Option<&'static Site>,
    /// Who answered WHO at the answer's address (clients only).
    served_by: Option<Result<String, String>>,
}

impl Row {
    fn ok(&self) -> bool {
        let site_ok =
            self.site.is_some() && self.site.map(|s| s.name) == self.expected.map(|s| s.name);
        // An ECS query's reply echoes ECS with the decision's scope (here
        // the client's /24); a query without ECS gets none back.
        let scope_ok = match self.asker.subnet {
            Some((_, len)) => self.answer.scope == Some(len),
            None => self.answer.scope.is_none(),
        };
        let served_ok = match (&self.served_by, self.site) {
            (None, _) => true,
            (Some(Ok(who)), Some(site)) => site.members.contains(&who.as_str()),
            _ => false,
        };
        site_ok && scope_ok && served_ok && self.answer.addrs.len() == 1
    }

    fn short(&self) -> String {
        format!(
            "{} -> {}{}",
            if self.asker.subnet.is_some() {
                self.asker.city
            } else {
                "no ECS"
            },
            self.site.map_or("?", |s| s.name),
            match &self.served_by {
                Some(Ok(who)) => format!(" ({who})"),
                Some(Err(_)) => " (connection FAILED)".into(),
                None => String::new(),
            }
        )
    }
}

pub(crate) fn step_geo_dns(svc: &mut Service, report: &mut Report) -> anyhow::Result<()> {
    header(
        6,
        "The geo-DNS: clients in two regions get their nearest site; then a site goes down",
    )?;
    let world = world::build(svc)?;
    say_world(&world);
    let mut resolver = Resolver::new(&world.rs.ns, world.dns_endpoint())?;
    // Until its probes have passed UP_AFTER times, a site's health is
    // unknown and the answers naming it carry the short TTL.
    let healthy = scenario::wait_for(
        "both sites healthy at the name server (answers with the full TTL)",
        HEALTHY_TIMEOUT,
        ASK_EVERY,
        || {
            ASKERS.iter().all(|a| {
                resolver
                    .aaaa(SERVICE_NAME, a.ecs())
                    .is_ok_and(|r| r.ttl == TTL)
            })
        },
    )?;
    say(&format!(
        "both sites healthy {} after the name server started ({UP_AFTER} good probes each; answers now carry the full TTL, {TTL} s)",
        ms(healthy)
    ));
    say(&format!(
        "a resolver in London asks for {SERVICE_NAME} AAAA on each client's behalf, with ECS carrying the client's subnet;"
    ));
    say(
        "both queries come from the resolver's address: only ECS tells the clients apart. Then each client connects to its answer:",
    );
    let rows = ask_all(svc, &world, &mut resolver, |_| true)?;
    print_rows(&rows);
    report.check(
        NEAREST,
        rows.iter().all(Row::ok),
        format!(
            "{}; scope /24",
            rows.iter().map(Row::short).collect::<Vec<_>>().join(", ")
        ),
    );
    fail_site(svc, report, &world, &mut resolver, &rows)?;
    drop(world);
    Ok(())
}

fn say_world(world: &World) {
    say(&format!(
        "a second site in New York: access point 2 with home address {} and member 4 (registered {} after the access point's start)",
        SITES[1].hoa,
        ms(world.site_up)
    ));
    say(&format!(
        "homeaddr-dns on the name server in London ({}) serves {SERVICE_NAME} from two sites:",
        world.dns_endpoint()
    ));
    let mut rows = vec![vec![
        "site".to_string(),
        "city".into(),
        "home address".into(),
        "members".into(),
        "health probe (TCP connect through the site's access point to a member)".into(),
    ]];
    for s in &SITES {
        rows.push(vec![
            s.name.into(),
            s.city.into(),
            s.hoa.to_string(),
            s.members.join(", "),
            SocketAddr::new(s.hoa.into(), SERVICE_PORT).to_string(),
        ]);
    }
    table(6, &rows);
    say(&format!(
        "probes every {} (timeout {}); a site is down after {DOWN_AFTER} failed probes, up after {UP_AFTER} good ones",
        ms(PROBE_INTERVAL),
        ms(PROBE_TIMEOUT)
    ));
    say(
        "the zone places the clients' networks: 198.18.1.0/24 in Lisbon (the legacy client c0), 198.18.2.0/24 in Chicago (a new",
    );
    say(
        "client c2); other addresses, such as the resolver's, at the default location, London. (ECS must carry a public",
    );
    say(
        "subnet: a ULA prefix is private, and RFC 7871 sec. 10 says to place the resolver instead; homeaddr-dns does.)",
    );
}

/// Each asker's answer; clients then connect to it. `up`: which sites the
/// answers may name (the nearest of them is expected).
fn ask_all(
    svc: &Service,
    world: &World,
    resolver: &mut Resolver,
    up: impl Fn(&Site) -> bool,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for asker in &ASKERS {
        let answer = resolver.aaaa(SERVICE_NAME, asker.ecs())?;
        let site = answer.addrs.first().copied().and_then(site_of);
        let served_by = answer
            .addrs
            .first()
            .filter(|_| asker.subnet.is_some())
            .map(|addr| connect(svc, world, asker.host, *addr));
        rows.push(Row {
            asker,
            expected: asker.nearest(&up),
            answer,
            site,
            served_by,
        });
    }
    Ok(rows)
}

/// Who answers a new connection from client `host` to `addr`.
fn connect(svc: &Service, world: &World, host: &str, addr: Ipv6Addr) -> Result<String, String> {
    let client = if host == CHICAGO {
        &svc.clients[world.chicago]
    } else {
        svc.clients
            .iter()
            .find(|c| c.name == host)
            .ok_or("no such client")?
    };
    let target = SocketAddr::new(addr.into(), SERVICE_PORT);
    match client
        .ns
        .enter(|| testapp::who(target, Duration::from_secs(10)))
    {
        Ok(Ok(who)) => Ok(who),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn print_rows(rows: &[Row]) {
    let mut table_rows = vec![vec![
        "client".to_string(),
        "region".into(),
        "ECS subnet".into(),
        "answer (AAAA)".into(),
        "site".into(),
        ">TTL".into(),
        "scope".into(),
        "expected (nearest up)".into(),
        "served by".into(),
    ]];
    for r in rows {
        let a = r.asker;
        table_rows.push(vec![
            if a.subnet.is_some() {
                format!("{} {}", a.host, a.city)
            } else {
                format!("resolver {}", a.city)
            },
            a.region.into(),
            a.subnet_text(),
            r.answer
                .addrs
                .iter()
                .map(Ipv6Addr::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            r.site
                .map_or("?".into(), |s| format!("{} ({:.0} km)", s.name, a.km(s))),
            format!("{} s", r.answer.ttl),
            r.answer.scope.map_or("-".into(), |s| format!("/{s}")),
            r.expected
                .map_or("?".into(), |s| format!("{} ({:.0} km)", s.name, a.km(s))),
            match &r.served_by {
                Some(Ok(who)) => who.clone(),
                Some(Err(e)) => format!("FAILED: {e}"),
                None => "-".into(),
            },
        ]);
    }
    table(6, &table_rows);
}

/// The New York site loses power; the resolver keeps asking for the
/// Chicago client until the answer changes.
fn fail_site(
    svc: &Service,
    report: &mut Report,
    world: &World,
    resolver: &mut Resolver,
    before: &[Row],
) -> anyhow::Result<()> {
    scenario::check_interrupted()?;
    let chicago = ASKERS.iter().find(|a| a.host == CHICAGO).expect("listed");
    let old = before
        .iter()
        .find(|r| r.asker.host == CHICAGO)
        .map(|r| r.answer.addrs.clone())
        .unwrap_or_default();
    say(&format!(
        "the New York site loses power: access point 2, member 4 and its server are killed (SIGKILL); the resolver asks again every {}",
        ms(ASK_EVERY)
    ));
    let down = Instant::now();
    world.ap2.daemon().kill();
    world.m4.daemon().kill();
    for process in &world.m4.extra {
        process.kill();
    }
    let (mut stale, mut changed) = (0u32, None);
    let waited = scenario::wait_for(
        "an answer for the Chicago client that no longer names the site that is down",
        FAILOVER_TIMEOUT,
        ASK_EVERY,
        || match resolver.aaaa(SERVICE_NAME, chicago.ecs()) {
            Ok(a) if a.addrs != old => {
                changed = Some(down.elapsed());
                true
            }
            Ok(_) => {
                stale += 1;
                false
            }
            Err(_) => false,
        },
    );
    if let Err(e) = waited {
        if e.downcast_ref::<Interrupted>().is_some() {
            return Err(e);
        }
        report.check(
            FAILOVER,
            false,
            format!("no answer changed within {}", secs(FAILOVER_TIMEOUT)),
        );
        return Ok(());
    }
    let took = changed.expect("set when the wait succeeded");
    let bound = PROBE_INTERVAL * DOWN_AFTER + PROBE_TIMEOUT;
    say(&format!(
        "the first answer that changed came {} after the power cut ({stale} answers before it still named {FAILING});",
        ms(took)
    ));
    say(&format!(
        "the probes' bound: {DOWN_AFTER} failed probes {} apart, the last one's timeout {} = {}",
        ms(PROBE_INTERVAL),
        ms(PROBE_TIMEOUT),
        ms(bound)
    ));
    // The health task logs the transition when it publishes the new view.
    let logged = world
        .dns
        .wait_for_output("site down", Duration::from_secs(2))
        .is_ok();
    if logged {
        say("(the name server logged it: \"site down: answers move to the next site\")");
    }
    let rows = ask_all(svc, world, resolver, |s| s.name != FAILING)?;
    print_rows(&rows);
    let moved = rows.iter().find(|r| r.asker.host == CHICAGO);
    let ttl = moved.map_or(0, |r| r.answer.ttl);
    say(&format!(
        "the fallback answer has the short TTL ({ttl} s): resolvers ask again soon. A resolver that cached the answer from before"
    ));
    say(&format!(
        "the power cut (TTL {TTL} s) may hand it out until it expires: the time above is when the name server's answer changed"
    ));
    report.check(
        FAILOVER,
        rows.iter().all(Row::ok) && ttl == UNCERTAIN_TTL && took <= bound + FAILOVER_SLACK,
        format!(
            "answer changed {} after the power cut (probe bound {}): {} (TTL {ttl} s)",
            ms(took),
            ms(bound),
            rows.iter().map(Row::short).collect::<Vec<_>>().join(", ")
        ),
    );
    Ok(())
}
