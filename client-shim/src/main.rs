//! `homeaddr-shim`: see the crate documentation of `homeaddr_shim`.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use homeaddr_daemon::common::{CommonSettings, DaemonSettings};
use homeaddr_daemon::control::ControlRequest;
use homeaddr_daemon::driver::{Driver, source_address_for};
use homeaddr_daemon::metrics::{IoSource, Metrics};
use homeaddr_daemon::netcfg::{Claim, NetConfig, claim_route_and_tun};
use homeaddr_daemon::shell::{self, Context, Role, Stop};
use homeaddr_io::{TunConfig, TunDevice, UdpTunnel};
use homeaddr_proto::engine::ApEndpoints;
use homeaddr_proto::engine::DropCounters;
use homeaddr_proto::engine::shim::{Shim, ShimConfig, ShimEvent};
use homeaddr_shim::config::{AccessPointSource, Cli, Settings};
use homeaddr_shim::control::handle;
use homeaddr_shim::metrics;
use homeaddr_shim::path::Path;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

mod client_address;

use client_address::ClientAddress;

fn main() -> ExitCode {
    let cli = Cli::parse();
    shell::run::<ShimNode>(Settings::from_cli(&cli))
}

/// The running shim.
struct ShimNode {
    engine: Arc<Mutex<Shim>>,
    driver: Driver<Shim>,
    net: NetConfig,
    metrics: Metrics,
    client_address: ClientAddress,
    /// The route to the AP, followed once a second and on every address or
    /// route change (`None` with `--local`).
    path: Option<Path>,
    /// The kernel's address and route announcements, while `path` is followed.
    changes: Option<Arc<tokio::sync::Notify>>,
    _claims: Vec<Claim>,
}

impl Role for ShimNode {
    type Engine = Shim;
    type Settings = Settings;
    const NAME: &'static str = "homeaddr-shim";

    fn common(settings: &Settings) -> &CommonSettings {
        &settings.common
    }

    async fn setup(settings: Settings, _cx: &Context) -> anyhow::Result<Self> {
        let hoa = settings.home_address;
        let common = &settings.common;
        // Before anything on the host changes (see the AP's setup).
        let claims = claim_route_and_tun(hoa, &common.tun)?;
        let endpoints = access_point(&settings.access_point).await?;
        let ap = endpoints.first();
        let local = match settings.local {
            Some(l) => l,
            None => {
                let ip = source_address_for(ap)
                    .with_context(|| format!("no route to the access point {ap}; give --local"))?;
                SocketAddr::new(ip, 0)
            }
        };
        let udp = Arc::new(
            UdpTunnel::bind(local)
                .with_context(|| format!("cannot bind the tunnel endpoint {local}"))?,
        );
        let local = udp.local_addr();
        let tun_config = TunConfig::new(&common.tun, common.mtu).with_offload(common.offload);
        let tun = Arc::new(
            TunDevice::create(&tun_config)
                .context("cannot create the TUN device (root? /dev/net/tun?)")?,
        );
        let mut net = NetConfig::new();
        // Applications reach the home address through the TUN; the source
        // address they must use (the AP checks it) comes with the AP's
        // Welcome, and the route gets it then (`ClientAddress`). Until
        // then: the local address if it is of the HoA's family (it is the
        // client address when no NAT is in the way), else none.
        let (family, route, src) = match hoa.to_ipv4_mapped() {
            Some(hoa4) => (
                "-4",
                format!("{hoa4}/32"),
                match local.ip().to_canonical() {
                    IpAddr::V4(v4) if !v4.is_unspecified() => Some(v4.to_string()),
                    _ => None,
                },
            ),
            None => (
                "-6",
                format!("{hoa}/128"),
                match local.ip().to_canonical() {
                    IpAddr::V6(v6) if !v6.is_unspecified() => Some(v6.to_string()),
                    _ => None,
                },
            ),
        };
        let mut add = vec![family, "route", "replace", &route, "dev", tun.name()];
        if let Some(src) = &src {
            add.extend(["src", src.as_str()]);
        }
        net.apply(&add, &[family, "route", "del", &route, "dev", tun.name()])?;
        let client_address = ClientAddress::start(hoa, local.ip(), tun.name().to_string());
        let mut config = ShimConfig::new(ap, hoa, local, homeaddr_daemon::random_seed()?);
        config.route_optimization = settings.route_optimization;
        config.keepalive = settings.keepalive;
        config.nat_keepalive = settings.nat_keepalive;
        config.protection = common.protection;
        let engine = Arc::new(Mutex::new(Shim::new(Instant::now(), config)));
        let sessions = client_address.sender();
        let driver = Driver::start(
            engine.clone(),
            Arc::new(move |s: &mut Shim| on_events(s, &sessions)),
            tun.clone(),
            udp,
            common.busy_poll,
        );
        let metrics = metrics::metrics(engine.clone(), IoSource::of(&driver));
        match client_address.wait_ready(FIRST_SESSION_WAIT).await {
            Some(c) => debug!(client_address = %c, "client address in place"),
            None => warn!(
                waited_s = FIRST_SESSION_WAIT.as_secs(),
                "no session with the access point yet: applications that connect to the home address before it comes may take a source address the access point refuses"
            ),
        }
        info!(home_address = %hoa, access_point = %ap, access_points = %endpoints, local = %local, tun = tun.name(), control = %common.control.display(), "shim up");
        // An explicit --local is the operator's: it is not followed.
        let path = settings.local.is_none().then(|| Path {
            endpoints,
            access_point: ap,
            local: local.ip(),
        });
        let changes = match path {
            Some(_) => homeaddr_daemon::netwatch::watch()
                .inspect_err(|e| warn!(error = %e, "cannot watch address and route changes; the route to the access point is checked once a second"))
                .ok(),
            None => None,
        };
        Ok(Self {
            engine,
            driver,
            net,
            metrics,
            client_address,
            path,
            changes,
            _claims: claims,
        })
    }

    fn driver(&mut self) -> &mut Driver<Shim> {
        &mut self.driver
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn drops(s: &Shim) -> &DropCounters {
        &s.counters().drops
    }

    async fn control(&mut self, req: ControlRequest, _cx: &Context) {
        handle(&self.engine, req, self.driver.io_status()).await;
    }

    fn network_changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.changes.clone()
    }

    async fn housekeeping(&mut self) {
        self.driver.stop_retired(Instant::now());
        self.follow_the_route().await;
    }

    async fn stop(mut self, _why: &Stop) {
        self.driver.shutdown();
        self.client_address.stop().await;
        self.net.undo_all();
    }
}

impl ShimNode {
    /// The route to the AP left from another address, or is gone while the
    /// AP's endpoint of the other family has one: bind there and move the
    /// engine (make before break: the old socket receives for
    /// [`MOVE_GRACE`]).
    async fn follow_the_route(&mut self) {
        let Some(path) = self.path.as_mut() else {
            return;
        };
        let Some((ap, ip)) = path.check(source_address_for) else {
            return;
        };
        let udp = match UdpTunnel::bind(SocketAddr::new(ip, 0)) {
            Ok(u) => Arc::new(u),
            Err(e) => {
                warn!(address = %ip, error = %e, "the route to the access point moved, but its source address cannot be bound; staying");
                return;
            }
        };
        let (from, local) = (path.local, udp.local_addr());
        path.access_point = ap;
        path.local = ip;
        self.driver
            .move_to_socket(udp, MOVE_GRACE, |s| s.moved(Instant::now(), ap, local))
            .await;
        self.client_address.moved(local.ip());
        info!(%from, %local, access_point = %ap, "moved: the host's address changed; the session follows");
    }
}

/// How long the old socket still receives after a move.
const MOVE_GRACE: Duration = Duration::from_secs(5);

async fn access_point(source: &AccessPointSource) -> anyhow::Result<ApEndpoints> {
    match source {
        AccessPointSource::Fixed(ap) => Ok(*ap),
        AccessPointSource::Discover { server, service } => {
            let ap = homeaddr_dns::discover::discover_ap_endpoint(*server, service)
                .await
                .with_context(|| {
                    format!("cannot discover the access point of {service} from {server}")
                })?;
            info!(%service, %server, access_point = %ap, "discovered the nearest access point");
            Ok(ap.into())
        }
    }
}

/// How long the start waits for the first session (its client address)
/// before it reports the shim up anyway.
const FIRST_SESSION_WAIT: Duration = Duration::from_secs(5);

/// Log engine events: bindings at INFO, one line per flow only at DEBUG;
/// a new AP session's client address goes to `sessions`.
fn on_events(s: &mut Shim, sessions: &client_address::ClientAddressSender) {
    while let Some(e) = s.poll_event() {
        match e {
            ShimEvent::ApSession {
                client, observed, ..
            } => {
                let behind_nat = s.behind_nat();
                info!(client_address = %client, observed = ?observed, behind_nat, "session with the access point up");
                sessions.send(client);
            }
            ShimEvent::BindingUpdated {
                member,
                care_of,
                moved_from: Some(old),
            } => {
                info!(%member, from = %old, to = %care_of, "member moved: its flows follow")
            }
            ShimEvent::BindingUpdated {
                member,
                care_of,
                moved_from: None,
            } => {
                info!(%member, %care_of, "binding accepted: route optimization to the member")
            }
            ShimEvent::FlowDirect { flow, member } => debug!(
                %member, src = %flow.src, src_port = flow.src_port, dst_port = flow.dst_port, "flow switched to the direct path"
            ),
            ShimEvent::BindingRejected { from, reason } => {
                warn!(%from, reason = reason.name(), "rejected a binding update")
            }
            ShimEvent::Revoked {
                member,
                flows_reset,
            } => {
                warn!(%member, flows_reset, "the access point revoked a member; its connections were reset")
            }
            other => info!(event = ?other, "shim"),
        }
    }
}
