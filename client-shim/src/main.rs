//! `homeaddr-shim`: see the crate documentation of `homeaddr_shim`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
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
use homeaddr_proto::engine::DropCounters;
use homeaddr_proto::engine::shim::{Shim, ShimConfig, ShimEvent};
use homeaddr_shim::config::{AccessPointSource, Cli, Settings};
use homeaddr_shim::control::handle;
use homeaddr_shim::metrics;
use tokio::sync::{Mutex, mpsc};
use tracing::{debug, info, warn};

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
        let ap = access_point(&settings.access_point).await?;
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
        );
        let metrics = metrics::metrics(engine.clone(), IoSource::of(&driver));
        match client_address.wait_ready(FIRST_SESSION_WAIT).await {
            Some(c) => debug!(client_address = %c, "client address in place"),
            None => warn!(
                waited_s = FIRST_SESSION_WAIT.as_secs(),
                "no session with the access point yet: applications that connect to the home address before it comes may take a source address the access point refuses"
            ),
        }
        info!(home_address = %hoa, access_point = %ap, local = %local, tun = tun.name(), control = %common.control.display(), "shim up");
        Ok(Self {
            engine,
            driver,
            net,
            metrics,
            client_address,
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

    async fn stop(mut self, _why: &Stop) {
        self.driver.shutdown();
        self.client_address.stop().await;
        self.net.undo_all();
    }
}

async fn access_point(source: &AccessPointSource) -> anyhow::Result<SocketAddr> {
    match source {
        AccessPointSource::Fixed(ap) => Ok(*ap),
        AccessPointSource::Discover { server, service } => {
            let ap = homeaddr_dns::discover::discover_ap_endpoint(*server, service)
                .await
                .with_context(|| {
                    format!("cannot discover the access point of {service} from {server}")
                })?;
            info!(%service, %server, access_point = %ap, "discovered the nearest access point");
            Ok(ap)
        }
    }
}

/// How long the start waits for the first session (its client address)
/// before it reports the shim up anyway.
const FIRST_SESSION_WAIT: Duration = Duration::from_secs(5);

/// The client address on the TUN and as the HoA route's source, set when
/// a Welcome gives it (and moved when a later one gives another): `ip`
/// runs in a task of its own, not under the engine's lock.
struct ClientAddress {
    tx: mpsc::UnboundedSender<Ipv6Addr>,
    tun: String,
    current: Arc<std::sync::Mutex<Option<Ipv6Addr>>>,
    /// The client address once it is the route's source (`None` before).
    ready: tokio::sync::watch::Receiver<Option<Ipv6Addr>>,
    task: tokio::task::JoinHandle<()>,
}

impl ClientAddress {
    fn start(hoa: Ipv6Addr, local: std::net::IpAddr, tun: String) -> ClientAddress {
        let (tx, mut rx) = mpsc::unbounded_channel::<Ipv6Addr>();
        let current = Arc::new(std::sync::Mutex::new(None::<Ipv6Addr>));
        let (set, dev) = (current.clone(), tun.clone());
        let (ready_tx, ready) = tokio::sync::watch::channel(None);
        let task = tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                let mut cur = set.lock().unwrap_or_else(|p| p.into_inner());
                if *cur == Some(c) {
                    continue;
                }
                if let Some(old) = cur.take() {
                    del_address(old, &dev);
                }
                let result = if homeaddr_proto::wire::ip_to_v6(local) == c {
                    // No NAT: the local address, which is on another
                    // interface already; the route names it.
                    set_route(hoa, c, &dev)
                } else {
                    set_address(hoa, c, &dev)
                };
                match result {
                    Ok(()) => {
                        info!(client_address = %c, "the access point gave our client address: applications' source for the home address");
                        if homeaddr_proto::wire::ip_to_v6(local) != c {
                            *cur = Some(c);
                        }
                        ready_tx.send_replace(Some(c));
                    }
                    Err(e) => {
                        warn!(client_address = %c, error = %e, "cannot set the client address")
                    }
                }
            }
        });
        ClientAddress {
            tx,
            tun,
            current,
            ready,
            task,
        }
    }

    /// Waits (at most `limit`) until the AP gave the client address and
    /// the HoA's route has it as source: an application that connects
    /// earlier takes another source address, which the AP would refuse,
    /// and keeps it for the connection's life.
    async fn wait_ready(&self, limit: Duration) -> Option<Ipv6Addr> {
        let mut rx = self.ready.clone();
        match tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await {
            Ok(Ok(c)) => *c,
            _ => None,
        }
    }

    fn sender(&self) -> mpsc::UnboundedSender<Ipv6Addr> {
        self.tx.clone()
    }

    /// Remove the address (the route goes with the rest of the setup).
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        let c = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(c) = c {
            del_address(c, &self.tun);
        }
    }
}

/// `ip` arguments for address `c` on `tun`: /128 (IPv6) or /32 (IPv4).
fn address_args(c: Ipv6Addr) -> (&'static str, String) {
    match c.to_ipv4_mapped() {
        Some(v4) => ("-4", format!("{v4}/32")),
        None => ("-6", format!("{c}/128")),
    }
}

fn set_address(hoa: Ipv6Addr, c: Ipv6Addr, tun: &str) -> anyhow::Result<()> {
    let (family, addr) = address_args(c);
    let mut args = vec![family, "addr", "replace", &addr, "dev", tun];
    if family == "-6" {
        args.push("nodad");
    }
    homeaddr_daemon::netcfg::ip(&args)?;
    set_route(hoa, c, tun)
}

/// The HoA's route through `tun` with source `c`.
fn set_route(hoa: Ipv6Addr, c: Ipv6Addr, tun: &str) -> anyhow::Result<()> {
    let (src, route) = match (c.to_ipv4_mapped(), hoa.to_ipv4_mapped()) {
        (Some(c4), Some(h4)) => (c4.to_string(), format!("{h4}/32")),
        _ => (c.to_string(), format!("{hoa}/128")),
    };
    let family = if hoa.to_ipv4_mapped().is_some() {
        "-4"
    } else {
        "-6"
    };
    homeaddr_daemon::netcfg::ip(&[family, "route", "replace", &route, "dev", tun, "src", &src])
}

fn del_address(c: Ipv6Addr, tun: &str) {
    let (family, addr) = address_args(c);
    if let Err(e) = homeaddr_daemon::netcfg::ip(&[family, "addr", "del", &addr, "dev", tun]) {
        warn!(client_address = %c, error = %e, "cannot remove the old client address");
    }
}

/// Log engine events: bindings at INFO, one line per flow only at DEBUG;
/// a new AP session's client address goes to `sessions`.
fn on_events(s: &mut Shim, sessions: &mpsc::UnboundedSender<Ipv6Addr>) {
    while let Some(e) = s.poll_event() {
        match e {
            ShimEvent::ApSession {
                client, observed, ..
            } => {
                let behind_nat = s.behind_nat();
                info!(client_address = %client, observed = ?observed, behind_nat, "session with the access point up");
                let _ = sessions.send(client);
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
