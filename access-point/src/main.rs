//! `homeaddr-ap`: see the crate documentation of `homeaddr_ap`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use homeaddr_ap::config::{Cli, Reloadable, Settings, engine_policies};
use homeaddr_ap::control::handle;
use homeaddr_ap::{metrics, status};
use homeaddr_control::{ControlError, Reloaded, Response};
use homeaddr_daemon::LogLevel;
use homeaddr_daemon::common::DaemonSettings;
use homeaddr_daemon::control::ControlRequest;
use homeaddr_daemon::driver::Driver;
use homeaddr_daemon::metrics::{IoSource, Metrics};
use homeaddr_daemon::netcfg::{Claim, NetConfig, claim_route_and_tun, sysctl};
use homeaddr_daemon::shell::{self, Context, Role, Stop};
use homeaddr_io::{TunConfig, TunDevice, UdpTunnel};
use homeaddr_proto::engine::DropCounters;
use homeaddr_proto::engine::ap::{AccessPoint, ApEvent};
use tokio::sync::Mutex;
use tracing::{info, warn};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = Settings::from_cli(&cli).map(|settings| (settings, cli));
    shell::run::<Ap>(settings)
}

/// The running access point.
struct Ap {
    cli: Cli,
    engine: Arc<Mutex<AccessPoint>>,
    driver: Driver<AccessPoint>,
    net: NetConfig,
    metrics: Metrics,
    _claims: Vec<Claim>,
}

impl Role for Ap {
    type Engine = AccessPoint;
    type Settings = (Settings, Cli);
    const NAME: &'static str = "homeaddr-ap";
    const RELOADS: bool = true;

    fn common((settings, _): &Self::Settings) -> &homeaddr_daemon::common::CommonSettings {
        &settings.common
    }

    async fn setup((settings, cli): Self::Settings, _cx: &Context) -> anyhow::Result<Self> {
        let homes = settings.engine.homes();
        let hoa = homes.primary;
        let common = settings.common.clone();
        // Before anything on the host changes: is the route or the TUN
        // another live daemon's? One killed with -9 leaves its claims (its
        // TUN, with the route into it, went with it).
        let claims = claim_route_and_tun(hoa, &common.tun)?;
        if homes.ipv6().is_some() {
            sysctl("net.ipv6.conf.all.forwarding", "1")
                .context("the AP forwards packets between clients and its TUN")?;
        }
        if homes.v4.is_some() {
            sysctl("net.ipv4.ip_forward", "1")
                .context("the AP forwards IPv4 packets between clients and its TUN")?;
        }
        let tun_config =
            // The AP's TUN receives forwarded traffic: super-packets as large
            // as the clients' TSO made them (64 KiB). A smaller gso_max_size
            // makes the kernel split each in software: one TUN read per packet.
            TunConfig::new(&common.tun, settings.engine.inner_mtu)
                .with_offload(common.offload)
                .with_gso_max_size(65536);
        let tun = Arc::new(
            TunDevice::create(&tun_config)
                .context("cannot create the TUN device (root? /dev/net/tun?)")?,
        );
        let mut net = NetConfig::new();
        if let Some(hoa6) = homes.ipv6() {
            let route = format!("{hoa6}/128");
            net.apply(
                &["-6", "route", "replace", &route, "dev", tun.name()],
                &["-6", "route", "del", &route, "dev", tun.name()],
            )?;
        }
        if let Some(hoa4) = homes.v4 {
            let route = format!("{hoa4}/32");
            net.apply(
                &["-4", "route", "replace", &route, "dev", tun.name()],
                &["-4", "route", "del", &route, "dev", tun.name()],
            )?;
        }
        let udp = Arc::new(
            UdpTunnel::bind(settings.listen)
                .with_context(|| format!("cannot listen on {}", settings.listen))?,
        );
        let mut engine_config = settings.engine.clone();
        // Cookie secrets, session indices, nonces and X25519 secrets.
        engine_config.seed = homeaddr_daemon::random_seed()?;
        let engine =
            AccessPoint::new(engine_config).context("invalid access point configuration")?;
        let engine = Arc::new(Mutex::new(engine));
        let hook = Arc::new(on_events);
        let driver = Driver::start(
            engine.clone(),
            hook,
            tun.clone(),
            udp.clone(),
            common.busy_poll,
        );
        let metrics = metrics::metrics(engine.clone(), IoSource::of(&driver));
        let home_addresses = homes
            .all()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        info!(
            home_address = %home_addresses, listen = %udp.local_addr(), tun = tun.name(), mtu = tun.mtu(), offload = tun.offload(),
            control = %common.control.display(), "access point up"
        );
        Ok(Self {
            cli,
            engine,
            driver,
            net,
            metrics,
            _claims: claims,
        })
    }

    fn driver(&mut self) -> &mut Driver<AccessPoint> {
        &mut self.driver
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn drops(ap: &AccessPoint) -> &DropCounters {
        &ap.counters().drops
    }

    async fn control(&mut self, req: ControlRequest, cx: &Context) {
        if req.cmd() == "reload" {
            let answer = reload(&self.cli, &cx.log, &self.engine).await;
            let _ = req.reply.send(answer);
        } else {
            handle(&self.engine, req, self.driver.io_status()).await;
        }
    }

    async fn reload(&mut self, cx: &Context) {
        let _ = reload(&self.cli, &cx.log, &self.engine).await;
    }

    async fn stop(mut self, _why: &Stop) {
        let counters = serde_json::to_value(status::counters(&*self.engine.lock().await));
        info!(counters = %counters.unwrap_or_default(), "access point stopping");
        self.driver.shutdown();
        self.net.undo_all();
    }
}

/// Reload the config file: keys, log level, member weights and drains.
/// Nothing changes unless the whole file is valid; flows are untouched.
async fn reload(
    cli: &Cli,
    log: &LogLevel,
    engine: &Mutex<AccessPoint>,
) -> Result<Response, ControlError> {
    let outcome = async {
        let path = cli.common.config.as_ref().ok_or_else(|| {
            anyhow::anyhow!("no config file to reload: start homeaddr-ap with --config FILE")
        })?;
        let r = Reloadable::load(cli, path)?;
        LogLevel::parse(&r.log_level)?;
        let mut ap = engine.lock().await;
        ap.set_keys(r.keys.clone())?;
        log.set(&r.log_level)?;
        let policies = engine_policies(&r.members);
        let member_policies = policies.len() as u64;
        ap.set_member_policies(Instant::now(), policies);
        anyhow::Ok(Reloaded {
            config: path.display().to_string(),
            keys: r.keys.len() as u64,
            log_level: r.log_level,
            member_policies,
        })
    }
    .await;
    match outcome {
        Ok(v) => {
            info!(config = %v.config, keys = v.keys, log_level = %v.log_level, member_policies = v.member_policies, "configuration reloaded");
            Ok(Response::Reloaded(v))
        }
        Err(e) => {
            let e = format!("{e:#}");
            warn!(error = %e, "configuration reload rejected: the old configuration stays in force");
            Err(ControlError::refused(format!(
                "{e}; the old configuration stays in force"
            )))
        }
    }
}

/// Log engine events, in the batch that caused them.
fn on_events(ap: &mut AccessPoint) {
    while let Some(e) = ap.poll_event() {
        match e {
            ApEvent::PolicyApplied { id, weight, drain } => {
                info!(member = %id, ?weight, drain, "applied the config's member policy")
            }
            ApEvent::RegistrationRefused { from, id, status } => {
                warn!(%from, ?id, status, "refused a registration (146: wrong key; 200: member id in use; 135: replay)")
            }
            ApEvent::MemberDown { id } => {
                warn!(member = %id, "member is down (no refresh in time): its clients move")
            }
            ApEvent::NoClientAddress { ipv4, endpoint } => {
                let (family, flag) = if ipv4 {
                    ("IPv4", "--shim-pool / shim_pool")
                } else {
                    ("IPv6", "--shim-prefix / shim_prefix")
                };
                warn!(%endpoint, "a shim behind a NAT (or of the other address family) with an {family} home address hand-shook, and no {family} shim pool is configured: it gets no session (give {flag}; logged once)")
            }
            other => info!(event = ?other, "access point"),
        }
    }
}
