//! `homeaddr-member`: see the crate documentation of `homeaddr_member`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use homeaddr_control::{ControlError, Moved, Request, Response};
use homeaddr_daemon::common::RUN_DIR;
use homeaddr_daemon::common::{CommonSettings, DaemonSettings};
use homeaddr_daemon::control::{ControlRequest, io_status};
use homeaddr_daemon::driver::{Driver, source_address_for};
use homeaddr_daemon::metrics::{IoSource, Metrics};
use homeaddr_daemon::netcfg::{Claim, NetConfig, ip, ip_output};
use homeaddr_daemon::shell::{self, Context, Role, Stop, StopHandle};
use homeaddr_io::{TunConfig, TunDevice, UdpTunnel};
use homeaddr_member::config::{Cli, Settings};
use homeaddr_member::direct_return::{self, DirectReturn};
use homeaddr_member::metrics::{self, Timings};
use homeaddr_proto::engine::member::{Member, MemberConfig, MemberEvent, RegistrationState};
use homeaddr_proto::engine::{DropCounters, HomeAddresses};
use homeaddr_proto::wire::MemberId;
use homeaddr_proto::wire::mh::ba_status;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

/// Exit status when every AP refuses the registration.
const EXIT_REFUSED: u8 = 3;
/// How long the old care-of endpoint keeps receiving after a move.
const MOVE_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    shell::run::<MemberNode>(Settings::from_cli(&cli))
}

fn refusal_reason(status: u8) -> String {
    match status {
        ba_status::AUTHENTICATION_FAILED => {
            "authentication failed: --key/--spi do not match a key of the access point".into()
        }
        ba_status::MEMBER_ID_IN_USE => {
            "the member id is in use by another running member: choose another --id".into()
        }
        ba_status::NOT_HOME_AGENT => {
            "the access point does not own this home address: check --home-address".into()
        }
        ba_status::ADMINISTRATIVELY_PROHIBITED => {
            "the access point refused it administratively".into()
        }
        other => format!("status {other}"),
    }
}

/// The running member.
struct MemberNode {
    driver: Driver<Member>,
    net: NetConfig,
    /// The routing table and the TUN are ours until the network setup is
    /// undone.
    _claims: [Option<Claim>; 2],
    /// The MSS clamp and the shim clients' routes of direct server return.
    _direct_return: Option<Arc<DirectReturn>>,
    timings: Arc<Timings>,
    metrics: Metrics,
}

impl Role for MemberNode {
    type Engine = Member;
    type Settings = Settings;
    const NAME: &'static str = "homeaddr-member";

    fn common(settings: &Settings) -> &CommonSettings {
        &settings.common
    }

    async fn setup(settings: Settings, cx: &Context) -> anyhow::Result<Self> {
        let homes = settings.home_addresses;
        let care_of = care_of_endpoint(&settings)?;
        let common = &settings.common;
        let table = settings.table.to_string();
        let claim = claim_table(&table)?;
        let tun_claim = Claim::tun(Path::new(RUN_DIR), &common.tun)?;
        let tun = create_tun(&settings)?;
        let mut net = NetConfig::new();
        route_answers_into_tun(
            &mut net,
            claim.stale,
            &homes,
            tun.name(),
            &table,
            settings.direct_return,
        )?;
        let direct_return = if settings.direct_return {
            let d = DirectReturn::setup(settings.table, tun.name(), &homes, common.mtu)?;
            Some(Arc::new(d))
        } else {
            if claim.stale {
                direct_return::remove_stale_clamp(settings.table);
            }
            None
        };
        let udp = Arc::new(
            UdpTunnel::bind(care_of)
                .with_context(|| format!("cannot bind the care-of endpoint {care_of}"))?,
        );
        let engine = Arc::new(Mutex::new(start_engine(&settings, udp.local_addr())?));
        let timings = Arc::new(Timings::default());
        let (hook_timings, stop) = (timings.clone(), cx.stop.clone());
        let answers = direct_return.as_ref().map(Arc::downgrade);
        let hook = Arc::new(move |m: &mut Member| {
            let answers = answers.as_ref().and_then(std::sync::Weak::upgrade);
            on_events(m, &hook_timings, &stop, answers.as_deref())
        });
        let driver = Driver::start(
            engine.clone(),
            hook,
            tun.clone(),
            udp.clone(),
            settings.common.busy_poll,
        );
        let metrics = metrics::metrics(engine, &timings, IoSource::of(&driver));
        driver.kick().await;
        let aps = settings
            .access_points
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        info!(
            id = settings.id, home_address = %homes.all().iter().map(ToString::to_string).collect::<Vec<_>>().join(", "), care_of = %udp.local_addr(), access_points = %aps,
            tun = tun.name(), offload = tun.offload(), control = %common.control.display(), "member up, registering"
        );
        Ok(Self {
            driver,
            net,
            _claims: [Some(claim), tun_claim],
            _direct_return: direct_return,
            timings,
            metrics,
        })
    }

    fn driver(&mut self) -> &mut Driver<Member> {
        &mut self.driver
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn drops(m: &Member) -> &DropCounters {
        &m.counters().drops
    }

    async fn control(&mut self, req: ControlRequest, cx: &Context) {
        let leave = req.cmd() == "leave";
        handle(self, req).await;
        if leave {
            cx.stop.stop(Stop::Requested);
        }
    }

    async fn housekeeping(&mut self) {
        self.driver.stop_retired(Instant::now());
    }

    async fn stop(mut self, why: &Stop) {
        match why {
            Stop::Signal(sig) => {
                info!("{sig}: leaving the service");
                leave(&self.driver).await;
            }
            Stop::Requested => leave(&self.driver).await,
            Stop::Failed(_) | Stop::Exit { .. } => {}
        }
        self.driver.shutdown();
        self.net.undo_all();
    }
}

/// `--care-of`, or the address the route to the first access point leaves
/// from with the tunnel port.
fn care_of_endpoint(settings: &Settings) -> anyhow::Result<SocketAddr> {
    if let Some(c) = settings.care_of {
        return Ok(c);
    }
    let first = settings.access_points[0].first();
    let ip = source_address_for(first)
        .with_context(|| format!("no route to the access point {first}; give --care-of"))?;
    Ok(SocketAddr::new(ip, 4790))
}

/// Claim the policy routing `table` before anything on the host changes:
/// is it another live member's? A member killed with -9 leaves its claim
/// and its rule. A table with routes belongs to another program.
fn claim_table(table: &str) -> anyhow::Result<Claim> {
    let claim = Claim::take(
        Path::new(RUN_DIR),
        &format!("routing table {table}"),
        "--table",
    )?;
    // A table nobody has used yet does not exist.
    let routes = ip_output(&["-6", "route", "show", "table", table]).or_else(|e| {
        if e.to_string().contains("does not exist") {
            Ok(String::new())
        } else {
            Err(e)
        }
    })?;
    if !routes.trim().is_empty() {
        anyhow::bail!(
            "policy routing table {table} already has routes ({}): another program uses it; give another --table",
            routes.trim().replace('\n', "; ")
        );
    }
    Ok(claim)
}

/// The TUN holding the home address (after forwarding is on, for direct
/// server return).
fn create_tun(settings: &Settings) -> anyhow::Result<Arc<TunDevice>> {
    let common = &settings.common;
    // Before the TUN exists: writing all.forwarding resets every
    // interface's, and the TUN's must stay 0 (no MLD reports into it).
    if settings.direct_return {
        homeaddr_daemon::netcfg::sysctl("net.ipv6.conf.all.forwarding", "1")
            .context("direct server return forwards answers out of the TUN")?;
        if settings.home_addresses.v4.is_some() {
            homeaddr_daemon::netcfg::sysctl("net.ipv4.ip_forward", "1")
                .context("direct server return forwards IPv4 answers out of the TUN")?;
        }
    }
    let mut tun_config = TunConfig::new(&common.tun, common.mtu).with_offload(common.offload);
    if let Some(hoa6) = settings.home_addresses.ipv6() {
        tun_config = tun_config.with_ipv6(hoa6, 128);
    }
    let tun = TunDevice::create(&tun_config).with_context(|| {
        format!(
            "cannot create the TUN device {} (root? /dev/net/tun? another daemon's: give another --tun)",
            common.tun
        )
    })?;
    Ok(Arc::new(tun))
}

/// `ip -6 rule OP` (`family` "-6") or `ip -4 rule OP` of the rule sending
/// the home address's answers to `table`.
fn source_rule<'a>(family: &'a str, op: &'a str, from: &'a str, table: &'a str) -> [&'a str; 11] {
    [
        family, "rule", op, "from", from, "iif", "lo", "lookup", table, "priority", "1000",
    ]
}

/// Answers from the home address go back into the TUN, to the engine: a
/// default route into `tun` in `table` and a source rule to it (after
/// removing the rule a dead member left behind, if the table's claim was
/// `stale`). With `direct_return` the table starts empty: only shim
/// clients get routes into the TUN (`direct_return.rs`), and every other
/// answer falls through to the main table.
fn route_answers_into_tun(
    net: &mut NetConfig,
    stale: bool,
    homes: &HomeAddresses,
    tun: &str,
    table: &str,
    direct_return: bool,
) -> anyhow::Result<()> {
    let mut families = Vec::new();
    if let Some(hoa6) = homes.ipv6() {
        families.push(("-6", format!("{hoa6}/128")));
    }
    if let Some(hoa4) = homes.v4 {
        // The IPv4 home address on the TUN (IPv6 has it from the TUN's
        // creation); it goes with the TUN.
        let addr = format!("{hoa4}/32");
        net.apply(
            &["-4", "addr", "replace", &addr, "dev", tun],
            &["-4", "addr", "del", &addr, "dev", tun],
        )?;
        families.push(("-4", addr));
        // Clients' IPv4 packets come in on the TUN while the route back to
        // them leaves elsewhere: strict reverse path filtering (the
        // effective value is the larger of `all` and the device's) would
        // drop them; loose mode only asks for some route back.
        homeaddr_daemon::netcfg::sysctl(&format!("net.ipv4.conf.{tun}.rp_filter"), "2")
            .context("loose reverse path filtering on the TUN for the IPv4 home address")?;
    }
    for (family, from) in &families {
        if stale && ip(&source_rule(family, "del", from, table)).is_ok() {
            info!(table = %table, "removed the source rule a dead member left behind");
        }
        let default_route = |op| [*family, "route", op, "default", "dev", tun, "table", table];
        if !direct_return {
            net.apply(&default_route("replace"), &default_route("del"))?;
        }
        // `iif lo`: only locally generated answers; packets the engine
        // writes back for direct server return come in on the TUN and are
        // routed natively.
        net.apply(
            &source_rule(family, "add", from, table),
            &source_rule(family, "del", from, table),
        )?;
    }
    Ok(())
}

/// The member engine of `settings`, bound to `care_of`, started.
fn start_engine(settings: &Settings, care_of: SocketAddr) -> anyhow::Result<Member> {
    let mut config = MemberConfig::new(
        MemberId(settings.id),
        settings.home_addresses.primary,
        settings.access_points[0].first(),
        care_of,
        settings.key.clone(),
        homeaddr_daemon::random_seed()?,
    );
    config.home_address_v4 = settings.home_addresses.v4;
    config.access_points = settings.access_points.clone();
    config.spi = settings.spi;
    config.weight = settings.weight;
    config.route_optimization = settings.route_optimization;
    config.direct_return = settings.direct_return;
    config.lifetime = settings.lifetime;
    config.max_correspondents = settings.max_correspondents;
    config.max_flows = settings.max_flows;
    config.nat_keepalive = settings.nat_keepalive;
    config.protection = settings.common.protection;
    let mut member = Member::new(config);
    member.start(Instant::now());
    Ok(member)
}

/// Deregister and wait (bounded) for the AP's acknowledgement.
async fn leave(driver: &Driver<Member>) {
    let engine = driver.engine();
    engine.lock().await.leave(Instant::now());
    driver.kick().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if engine.lock().await.state() == RegistrationState::Left {
            info!("deregistered");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    warn!("not every access point acknowledged the deregistration; leaving anyway");
}

/// Log engine events and time route optimization; a registration every
/// AP refused stops the daemon (exit status 3).
fn on_events(
    m: &mut Member,
    timings: &Timings,
    stop: &StopHandle,
    direct_return: Option<&DirectReturn>,
) {
    while let Some(e) = m.poll_event() {
        match e {
            // Before this batch writes anything into the TUN (the driver
            // calls the hook first): the answers to its packets find the
            // route.
            MemberEvent::ShimClientAdded { client } => {
                if let Some(d) = direct_return {
                    d.shim_client(client, true);
                }
            }
            MemberEvent::ShimClientRemoved { client } => {
                if let Some(d) = direct_return {
                    d.shim_client(client, false);
                }
            }
            MemberEvent::Registered {
                ap,
                care_of,
                lifetime,
            } => {
                info!(%ap, %care_of, ?lifetime, "registered with the access point")
            }
            MemberEvent::RegistrationRefused { ap, status } => {
                let reason = refusal_reason(status);
                if let RegistrationState::Refused { .. } = m.state() {
                    stop.stop(Stop::Exit {
                        code: EXIT_REFUSED,
                        message: format!(
                            "every access point refused the registration ({ap}: {reason})"
                        ),
                    })
                } else {
                    warn!(%ap, %reason, "the access point refused the registration; registering with the others")
                }
            }
            MemberEvent::AuthFailureReported { ap } => {
                warn!(%ap, "the access point reports an authentication failure: check --key and --spi")
            }
            MemberEvent::RegistrationLost { ap } => {
                warn!(
                    %ap, "the registration lapsed (no answer from the access point): registering again"
                )
            }
            MemberEvent::ApRestarted { ap } => {
                info!(%ap, "the access point restarted: registered again, flows reported")
            }
            MemberEvent::RouteOptimized {
                client,
                shim,
                elapsed,
            } => {
                timings.route_optimized(client, elapsed);
                debug!(%client, %shim, ?elapsed, "route optimized: talking to the client's shim directly")
            }
            // One per client: the operator reads them in `status`, not the log.
            MemberEvent::ReturnRoutabilityStarted { .. } | MemberEvent::BindingRejected { .. } => {
                debug!(event = ?e, "member")
            }
            other => info!(event = ?other, "member"),
        }
    }
}

async fn handle(state: &mut MemberNode, req: ControlRequest) {
    let ControlRequest { request, reply } = req;
    let answer = match request {
        Request::Move { care_of } => move_to(state, care_of).await,
        request => match io_status(&state.driver.io_status()) {
            Ok(io) => homeaddr_member::control::answer(
                &mut *state.driver.engine().lock().await,
                Instant::now(),
                &io,
                request,
            ),
            Err(e) => Err(e),
        },
    };
    let _ = reply.send(answer);
}

/// Re-register from a new care-of endpoint (make before break: the old
/// endpoint keeps receiving for a while).
async fn move_to(state: &mut MemberNode, to: SocketAddr) -> Result<Response, ControlError> {
    if !state.driver.engine().lock().await.reaches_an_ap_from(to) {
        let family = homeaddr_proto::engine::family_name(to);
        return Err(ControlError::refused(format!(
            "no access point has an {family} endpoint, so {to} would reach none: give the APs' {family} endpoints (--access-point IPV4:PORT,[IPV6]:PORT) or move within the family"
        )));
    }
    let udp = UdpTunnel::bind(to).map_err(|e| {
        ControlError::refused(format!(
            "cannot bind {to} (is the address configured on an interface?): {e}"
        ))
    })?;
    let udp = Arc::new(udp);
    // The re-registration leaves from the new endpoint before any data:
    // the AP drops data from an endpoint until it has registered it.
    let care_of = udp.local_addr();
    {
        let now = Instant::now();
        let m = state.driver.engine().lock().await;
        state.timings.moved(
            m.correspondents()
                .filter(|c| c.binding.is_some_and(|b| b.expires > now))
                .map(|c| c.client),
        );
    }
    state
        .driver
        .move_to_socket(udp.clone(), MOVE_GRACE, |m| {
            m.set_care_of(Instant::now(), care_of)
        })
        .await;
    info!(care_of = %udp.local_addr(), "moved: re-registering and re-binding shims");
    Ok(Response::Moved(Moved {
        care_of: udp.local_addr(),
    }))
}
