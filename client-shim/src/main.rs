//! `homeaddr-shim`: see the crate documentation of `homeaddr_shim`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use homeaddr_daemon::common::CommonSettings;
use homeaddr_daemon::control::ControlRequest;
use homeaddr_daemon::driver::{Driver, source_address_for};
use homeaddr_daemon::netcfg::{Claim, NetConfig, claim_route_and_tun};
use homeaddr_daemon::shell::{self, Context, Role, Stop};
use homeaddr_io::{TunConfig, TunDevice, UdpTunnel};
use homeaddr_proto::engine::DropCounters;
use homeaddr_proto::engine::shim::{FlowPath, Shim, ShimConfig, ShimEvent};
use homeaddr_shim::config::{AccessPointSource, Cli, Settings};
use serde_json::{Value, json};
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
        let route = format!("{hoa}/128");
        let src = local.ip().to_string();
        // Applications reach the home address through the TUN, from the
        // address the tunnel leaves from (the AP checks that they match).
        net.apply(
            &[
                "-6",
                "route",
                "replace",
                &route,
                "dev",
                tun.name(),
                "src",
                &src,
            ],
            &["-6", "route", "del", &route, "dev", tun.name()],
        )?;
        let mut config = ShimConfig::new(ap, hoa, local, homeaddr_daemon::random_seed()?);
        config.route_optimization = settings.route_optimization;
        let engine = Arc::new(Mutex::new(Shim::new(Instant::now(), config)));
        let driver = Driver::start(engine.clone(), Arc::new(on_events), tun.clone(), udp);
        info!(home_address = %hoa, access_point = %ap, local = %local, tun = tun.name(), control = %common.control.display(), "shim up");
        Ok(Self {
            engine,
            driver,
            net,
            _claims: claims,
        })
    }

    fn driver(&mut self) -> &mut Driver<Shim> {
        &mut self.driver
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

fn status(s: &Shim) -> Value {
    let now = Instant::now();
    let c = s.counters();
    let drops: serde_json::Map<String, Value> = c
        .drops
        .iter()
        .map(|(r, n)| (r.name().to_string(), json!(n)))
        .collect();
    let bindings: Vec<Value> = s
        .bindings()
        .map(|(id, b)| {
            json!({
                "member": id.0,
                "care_of": b.care_of.to_string(),
                "lifetime_left_s": b.expires.saturating_duration_since(now).as_secs_f64(),
                "draining": b.draining,
                "flows": s.flows().filter(|(_, f)| f.member == Some(*id)).count(),
            })
        })
        .collect();
    let mut flows: Vec<(u64, Value)> = s
        .flows()
        .map(|(k, f)| {
            (
                f.bytes,
                json!({
                    "src": k.src.to_string(), "src_port": k.src_port, "dst_port": k.dst_port, "proto": k.proto,
                    "member": f.member.map(|m| m.0),
                    "path": if f.path == FlowPath::Direct { "direct" } else { "access-point" },
                    "packets_out": f.packets_out, "packets_in": f.packets_in, "bytes": f.bytes,
                }),
            )
        })
        .collect();
    flows.sort_by_key(|f| std::cmp::Reverse(f.0));
    json!({
        "role": "shim",
        "home_address": s.config().home_address.to_string(),
        "access_point": s.config().access_point.to_string(),
        "local": s.config().local.to_string(),
        "bindings": bindings,
        "flows": flows.into_iter().take(100).map(|(_, v)| v).collect::<Vec<_>>(),
        "counters": {
            "via_ap_out": c.via_ap_out, "direct_out": c.direct_out, "via_ap_in": c.via_ap_in, "direct_in": c.direct_in,
            "bus_accepted": c.bus_accepted, "bus_rejected": c.bus_rejected, "tests_answered": c.tests_answered,
            "binding_errors": c.binding_errors, "resets": c.resets, "drops": drops,
        },
    })
}

async fn handle(engine: &Mutex<Shim>, req: ControlRequest, io: Value) {
    let answer = match req.cmd() {
        "status" => {
            let mut v = status(&*engine.lock().await);
            v["io"] = io;
            Ok(v)
        }
        "metrics" => Ok(Value::String(metrics_text(&*engine.lock().await, &io))),
        other => Err(format!("unknown command {other:?}: use status or metrics")),
    };
    let _ = req.reply.send(answer);
}

/// Prometheus text of the shim (docs/OPERATING.md lists the metrics).
fn metrics_text(s: &Shim, io: &Value) -> String {
    let now = Instant::now();
    let c = s.counters();
    let mut e = homeaddr_daemon::metrics::Exposition::default();
    let name = "homeaddr_shim_packets_total";
    e.family(
        name,
        "counter",
        "Data packets by path: through the AP or direct to a member.",
    );
    for (path, n) in [
        ("via_ap_out", c.via_ap_out),
        ("via_ap_in", c.via_ap_in),
        ("direct_out", c.direct_out),
        ("direct_in", c.direct_in),
    ] {
        e.sample(name, &[("path", path)], n as f64);
    }
    let name = "homeaddr_shim_binding_updates_total";
    e.family(name, "counter", "Binding updates from members, by result.")
        .sample(name, &[("result", "accepted")], c.bus_accepted as f64)
        .sample(name, &[("result", "rejected")], c.bus_rejected as f64);
    e.single(
        "homeaddr_shim_tests_answered_total",
        "counter",
        "Home and care-of tests answered.",
        c.tests_answered as f64,
    );
    e.single(
        "homeaddr_shim_binding_errors_total",
        "counter",
        "Binding errors sent.",
        c.binding_errors as f64,
    );
    e.single(
        "homeaddr_shim_resets_total",
        "counter",
        "TCP resets sent to local applications (member revoked).",
        c.resets as f64,
    );
    let name = "homeaddr_shim_binding_lifetime_seconds";
    e.family(name, "gauge", "Lifetime left of each member binding.");
    for (id, b) in s.bindings() {
        let id = id.0.to_string();
        e.sample(
            name,
            &[("member", id.as_str())],
            b.expires.saturating_duration_since(now).as_secs_f64(),
        );
    }
    e.single(
        "homeaddr_shim_flows",
        "gauge",
        "Flows in the flow table.",
        s.flows().count() as f64,
    );
    e.drops("homeaddr_shim_dropped_packets_total", &c.drops);
    e.io(io);
    e.finish()
}
