//! `homeaddr-ap`: see the crate documentation of `homeaddr_ap`.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use homeaddr_ap::config::{Cli, MemberPolicy, Reloadable, Settings};
use homeaddr_ap::control::handle;
use homeaddr_ap::status;
use homeaddr_control::{ControlError, Reloaded, Response};
use homeaddr_daemon::LogLevel;
use homeaddr_daemon::control;
use homeaddr_daemon::driver::Driver;
use homeaddr_daemon::netcfg::{NetConfig, sysctl};
use homeaddr_io::{TunConfig, TunDevice, UdpTunnel};
use homeaddr_proto::engine::ap::{AccessPoint, ApEvent};
use homeaddr_proto::wire::MemberId;
use tokio::sync::Mutex;
use tracing::{info, warn};

fn main() -> ExitCode {
    let cli = Cli::parse();
    homeaddr_daemon::daemon_main(
        "homeaddr-ap",
        Settings::from_cli(&cli),
        |s| s.log_level.clone(),
        |settings, log| async { run(settings, &cli, log).await.map(|()| ExitCode::SUCCESS) },
    )
}

async fn run(settings: Settings, cli: &Cli, log: LogLevel) -> anyhow::Result<()> {
    let metrics = cli.metrics;
    let hoa = settings.engine.home_address;
    sysctl("net.ipv6.conf.all.forwarding", "1")
        .context("the AP forwards packets between clients and its TUN")?;
    let tun_config =
        // The AP's TUN receives forwarded traffic: super-packets as large
        // as the clients' TSO made them (64 KiB). A smaller gso_max_size
        // makes the kernel split each in software: one TUN read per packet.
        TunConfig::new(&settings.tun, settings.engine.inner_mtu)
            .with_offload(settings.offload)
            .with_gso_max_size(65536);
    let tun = Arc::new(
        TunDevice::create(&tun_config)
            .context("cannot create the TUN device (root? /dev/net/tun?)")?,
    );
    let mut net = NetConfig::new();
    let route = format!("{hoa}/128");
    net.apply(
        &["-6", "route", "replace", &route, "dev", tun.name()],
        &["-6", "route", "del", &route, "dev", tun.name()],
    )?;
    let udp = Arc::new(
        UdpTunnel::bind(settings.listen)
            .with_context(|| format!("cannot listen on {}", settings.listen))?,
    );
    let engine =
        AccessPoint::new(settings.engine.clone()).context("invalid access point configuration")?;
    let engine = Arc::new(Mutex::new(engine));
    let mut driver = Driver::start(engine.clone(), tun.clone(), udp.clone());
    let (_control_guard, mut requests) = control::listen(&settings.control).with_context(|| {
        format!(
            "cannot open the control socket {}",
            settings.control.display()
        )
    })?;
    let mut metrics = homeaddr_daemon::metrics::MetricsServer::listen(metrics)
        .await
        .context("cannot listen for --metrics")?;
    if let Some(at) = metrics.local_addr {
        info!(%at, "metrics on http://{at}/metrics");
    }
    info!(
        home_address = %hoa, listen = %udp.local_addr(), tun = tun.name(), mtu = tun.mtu(), offload = tun.offload(),
        control = %settings.control.display(), "access point up"
    );
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut drop_log = homeaddr_daemon::DropLog::default();
    let mut policy = Policy {
        members: settings.members.clone(),
        drained: BTreeSet::new(),
    };
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    let outcome = loop {
        tokio::select! {
            sig = homeaddr_daemon::shutdown_signal() => break Ok(sig),
            why = driver.failed() => break Err(anyhow::anyhow!(why)),
            Some(req) = requests.recv() => {
                if req.cmd() == "reload" {
                    let answer = reload(cli, &log, &engine, &mut policy).await;
                    let _ = req.reply.send(answer);
                } else {
                    handle(&engine, req, driver.io_status()).await;
                }
                driver.kick().await;
            }
            Some(req) = metrics.recv() => handle(&engine, req, driver.io_status()).await,
            Some(()) = hangup.recv() => {
                info!("SIGHUP: reloading the configuration");
                let _ = reload(cli, &log, &engine, &mut policy).await;
                driver.kick().await;
            }
            _ = tick.tick() => {
                if log_events(&engine, &mut drop_log, &mut policy).await {
                    driver.kick().await;
                }
            }
        }
    };
    log_events(&engine, &mut drop_log, &mut policy).await;
    let counters = serde_json::to_value(status::counters(&*engine.lock().await));
    info!(counters = %counters.unwrap_or_default(), "access point stopping");
    driver.shutdown();
    net.undo_all();
    outcome.map(|sig| info!("stopped on {sig}"))
}

/// The operator's per-member policy from the config file.
struct Policy {
    members: Vec<MemberPolicy>,
    /// Members drained because the config said so (a reload undrains them
    /// when it no longer does; drains by command are left alone).
    drained: BTreeSet<u16>,
}

impl Policy {
    /// Apply the policy for `id`, if it is registered; true if anything changed.
    fn apply(&mut self, ap: &mut AccessPoint, now: Instant, id: MemberId) -> bool {
        let Some(entry) = ap.member(id) else {
            return false;
        };
        let admin_drain = entry.admin_drain;
        let p = self.members.iter().find(|p| p.id == id.0).cloned();
        let mut changed = false;
        if let Some(w) = p.as_ref().and_then(|p| p.weight) {
            changed |= ap.set_weight(id, w).is_ok();
        }
        if p.as_ref().is_some_and(|p| p.drain) {
            if !admin_drain && ap.drain(now, id, None).is_ok() {
                self.drained.insert(id.0);
                changed = true;
            }
        } else if self.drained.remove(&id.0) {
            changed |= ap.undrain(id).is_ok();
        }
        if changed {
            info!(member = %id, weight = ?p.as_ref().and_then(|p| p.weight), drain = p.is_some_and(|p| p.drain), "applied the config's member policy");
        }
        changed
    }
}

/// Reload the config file: keys, log level, member weights and drains.
/// Nothing changes unless the whole file is valid; flows are untouched.
async fn reload(
    cli: &Cli,
    log: &LogLevel,
    engine: &Mutex<AccessPoint>,
    policy: &mut Policy,
) -> Result<Response, ControlError> {
    let outcome = async {
        let path = cli.config.as_ref().ok_or_else(|| {
            anyhow::anyhow!("no config file to reload: start homeaddr-ap with --config FILE")
        })?;
        let r = Reloadable::load(cli, path)?;
        LogLevel::parse(&r.log_level)?;
        let mut ap = engine.lock().await;
        ap.set_keys(r.keys.clone())?;
        log.set(&r.log_level)?;
        policy.members = r.members;
        let now = Instant::now();
        let ids: Vec<MemberId> = ap.members().map(|m| m.id).collect();
        for id in ids {
            policy.apply(&mut ap, now, id);
        }
        anyhow::Ok(Reloaded {
            config: path.display().to_string(),
            keys: r.keys.len() as u64,
            log_level: r.log_level,
            member_policies: policy.members.len() as u64,
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

/// Log engine events and apply the member policy to members that
/// register; true if a policy was applied (the caller sends what it queued).
async fn log_events(
    engine: &Mutex<AccessPoint>,
    drop_log: &mut homeaddr_daemon::DropLog,
    policy: &mut Policy,
) -> bool {
    let mut ap = engine.lock().await;
    drop_log.observe(&ap.counters().drops);
    let mut applied = false;
    while let Some(e) = ap.poll_event() {
        match e {
            ApEvent::MemberRegistered { id, .. } => {
                info!(event = ?e, "access point");
                applied |= policy.apply(&mut ap, Instant::now(), id);
            }
            ApEvent::RegistrationRefused { from, id, status } => {
                warn!(%from, ?id, status, "refused a registration (146: wrong key; 200: member id in use; 135: replay)")
            }
            ApEvent::MemberDown { id } => {
                warn!(member = %id, "member is down (no refresh in time): its clients move")
            }
            other => info!(event = ?other, "access point"),
        }
    }
    applied
}
