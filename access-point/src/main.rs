//! `homeaddr-ap`: see the crate documentation of `homeaddr_ap`.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use homeaddr_ap::config::{Cli, MemberPolicy, Reloadable, Settings};
use homeaddr_ap::status;
use homeaddr_daemon::LogLevel;
use homeaddr_daemon::control::ControlRequest;
use homeaddr_daemon::driver::Driver;
use homeaddr_daemon::netcfg::{Claim, NetConfig, claim_route_and_tun, sysctl};
use homeaddr_daemon::shell::{self, Context, Role, Stop};
use homeaddr_io::{TunConfig, TunDevice, UdpTunnel};
use homeaddr_proto::engine::DropCounters;
use homeaddr_proto::engine::ap::{AccessPoint, ApEvent};
use homeaddr_proto::wire::MemberId;
use serde_json::json;
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
    policy: Arc<std::sync::Mutex<Policy>>,
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
        let hoa = settings.engine.home_address;
        let common = settings.common.clone();
        // Before anything on the host changes: is the route or the TUN
        // another live daemon's? One killed with -9 leaves its claims (its
        // TUN, with the route into it, went with it).
        let claims = claim_route_and_tun(hoa, &common.tun)?;
        sysctl("net.ipv6.conf.all.forwarding", "1")
            .context("the AP forwards packets between clients and its TUN")?;
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
        let route = format!("{hoa}/128");
        net.apply(
            &["-6", "route", "replace", &route, "dev", tun.name()],
            &["-6", "route", "del", &route, "dev", tun.name()],
        )?;
        let udp = Arc::new(
            UdpTunnel::bind(settings.listen)
                .with_context(|| format!("cannot listen on {}", settings.listen))?,
        );
        let engine = AccessPoint::new(settings.engine.clone())
            .context("invalid access point configuration")?;
        let engine = Arc::new(Mutex::new(engine));
        let policy = Arc::new(std::sync::Mutex::new(Policy {
            members: settings.members.clone(),
            drained: BTreeSet::new(),
        }));
        let hook_policy = policy.clone();
        let hook = Arc::new(move |ap: &mut AccessPoint| on_events(ap, &hook_policy));
        let driver = Driver::start(engine.clone(), hook, tun.clone(), udp.clone());
        info!(
            home_address = %hoa, listen = %udp.local_addr(), tun = tun.name(), mtu = tun.mtu(), offload = tun.offload(),
            control = %common.control.display(), "access point up"
        );
        Ok(Self {
            cli,
            engine,
            driver,
            net,
            policy,
            _claims: claims,
        })
    }

    fn driver(&mut self) -> &mut Driver<AccessPoint> {
        &mut self.driver
    }

    fn drops(ap: &AccessPoint) -> &DropCounters {
        &ap.counters().drops
    }

    async fn control(&mut self, req: ControlRequest, cx: &Context) {
        if req.cmd() == "reload" {
            let answer = reload(&self.cli, &cx.log, &self.engine, &self.policy).await;
            let _ = req.reply.send(answer);
        } else {
            handle(&self.engine, req, self.driver.io_status()).await;
        }
    }

    async fn reload(&mut self, cx: &Context) {
        let _ = reload(&self.cli, &cx.log, &self.engine, &self.policy).await;
    }

    async fn stop(mut self, _why: &Stop) {
        let summary = status::status(&*self.engine.lock().await, Instant::now());
        info!(counters = %summary["counters"], "access point stopping");
        self.driver.shutdown();
        self.net.undo_all();
    }
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
    policy: &std::sync::Mutex<Policy>,
) -> Result<serde_json::Value, String> {
    let outcome = async {
        let path = cli.common.config.as_ref().ok_or_else(|| {
            anyhow::anyhow!("no config file to reload: start homeaddr-ap with --config FILE")
        })?;
        let r = Reloadable::load(cli, path)?;
        LogLevel::parse(&r.log_level)?;
        let mut ap = engine.lock().await;
        ap.set_keys(r.keys.clone())?;
        log.set(&r.log_level)?;
        let mut policy = policy.lock().unwrap_or_else(|p| p.into_inner());
        policy.members = r.members;
        let now = Instant::now();
        let ids: Vec<MemberId> = ap.members().map(|m| m.id).collect();
        for id in ids {
            policy.apply(&mut ap, now, id);
        }
        anyhow::Ok(json!({
            "config": path.display().to_string(),
            "keys": r.keys.len(),
            "log_level": r.log_level,
            "member_policies": policy.members.len(),
        }))
    }
    .await;
    match outcome {
        Ok(v) => {
            info!(config = %v["config"], keys = %v["keys"], log_level = %v["log_level"], member_policies = %v["member_policies"], "configuration reloaded");
            Ok(v)
        }
        Err(e) => {
            let e = format!("{e:#}");
            warn!(error = %e, "configuration reload rejected: the old configuration stays in force");
            Err(format!("{e}; the old configuration stays in force"))
        }
    }
}

/// Log engine events and apply the member policy to members as they
/// register, in the batch that registered them (the driver sends what the
/// policy queued with that batch).
fn on_events(ap: &mut AccessPoint, policy: &std::sync::Mutex<Policy>) {
    while let Some(e) = ap.poll_event() {
        match e {
            ApEvent::MemberRegistered { id, .. } => {
                info!(event = ?e, "access point");
                policy
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply(ap, Instant::now(), id);
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
}

fn member_arg(req: &ControlRequest) -> Result<MemberId, String> {
    let v = req
        .request
        .get("member")
        .ok_or("this command needs \"member\": the member id")?;
    v.as_u64()
        .or_else(|| {
            v.as_str()
                .and_then(|s| s.trim_start_matches('m').parse().ok())
        })
        .and_then(|n| u16::try_from(n).ok())
        .map(MemberId)
        .ok_or_else(|| format!("member {v} is not a member id (0-65535)"))
}

async fn handle(engine: &Mutex<AccessPoint>, req: ControlRequest, io: serde_json::Value) {
    let now = Instant::now();
    let mut ap = engine.lock().await;
    let answer = match req.cmd() {
        "status" => {
            let mut v = status::status(&ap, now);
            v["io"] = io;
            Ok(v)
        }
        "members" => Ok(status::members(&ap, now)),
        "metrics" => Ok(serde_json::Value::String(status::metrics(&ap, now, &io))),
        "flows" => {
            let top = req
                .request
                .get("top")
                .and_then(|v| v.as_u64())
                .unwrap_or(10);
            Ok(status::flows(
                &ap,
                now,
                usize::try_from(top).unwrap_or(usize::MAX),
            ))
        }
        "drain" => member_arg(&req).and_then(|id| {
            let deadline = req
                .request
                .get("deadline_s")
                .and_then(|v| v.as_f64())
                .map(Duration::from_secs_f64);
            ap.drain(now, id, deadline)
                .map(|()| json!({"draining": id.0}))
                .map_err(|e| e.to_string())
        }),
        "undrain" => member_arg(&req).and_then(|id| {
            ap.undrain(id)
                .map(|()| json!({"active": id.0}))
                .map_err(|e| e.to_string())
        }),
        "weight" => member_arg(&req).and_then(|id| {
            let w = req
                .request
                .get("weight")
                .and_then(|v| v.as_u64())
                .ok_or("weight needs \"weight\": a number")?;
            let w = u32::try_from(w).map_err(|_| "weight is too large".to_string())?;
            ap.set_weight(id, w)
                .map(|()| json!({"member": id.0, "weight": w}))
                .map_err(|e| e.to_string())
        }),
        "remove" => member_arg(&req).and_then(|id| {
            ap.remove(now, id)
                .map(|()| json!({"removed": id.0}))
                .map_err(|e| e.to_string())
        }),
        other => Err(format!(
            "unknown command {other:?}: use status, members, flows, metrics, drain, undrain, weight or remove"
        )),
    };
    let _ = req.reply.send(answer);
}
