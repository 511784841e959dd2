//! `homeaddr-shim`: see the crate documentation of `homeaddr_shim`.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

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
use tokio::sync::Mutex;
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
        // Applications reach the home address through the TUN, from the
        // address the tunnel leaves from (the AP checks that they match).
        // An IPv4 home address on an IPv6 underlay has no such source yet:
        // the route goes without one.
        let (family, route, src) = match hoa.to_ipv4_mapped() {
            Some(hoa4) => (
                "-4",
                format!("{hoa4}/32"),
                match local.ip().to_canonical() {
                    IpAddr::V4(v4) => Some(v4.to_string()),
                    IpAddr::V6(_) => None,
                },
            ),
            None => (
                "-6",
                format!("{hoa}/128"),
                match local.ip().to_canonical() {
                    IpAddr::V6(v6) => Some(v6.to_string()),
                    IpAddr::V4(_) => None,
                },
            ),
        };
        let mut add = vec![family, "route", "replace", &route, "dev", tun.name()];
        if let Some(src) = &src {
            add.extend(["src", src.as_str()]);
        }
        net.apply(&add, &[family, "route", "del", &route, "dev", tun.name()])?;
        let mut config = ShimConfig::new(ap, hoa, local, homeaddr_daemon::random_seed()?);
        config.route_optimization = settings.route_optimization;
        config.keepalive = settings.keepalive;
        config.protection = common.protection;
        let engine = Arc::new(Mutex::new(Shim::new(Instant::now(), config)));
        let driver = Driver::start(engine.clone(), Arc::new(on_events), tun.clone(), udp);
        let metrics = metrics::metrics(engine.clone(), IoSource::of(&driver));
        info!(home_address = %hoa, access_point = %ap, local = %local, tun = tun.name(), control = %common.control.display(), "shim up");
        Ok(Self {
            engine,
            driver,
            net,
            metrics,
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

/// Log engine events: bindings at INFO, one line per flow only at DEBUG.
fn on_events(s: &mut Shim) {
    while let Some(e) = s.poll_event() {
        match e {
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
