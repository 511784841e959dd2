//! Background tasks of the server: the health monitor's probe loop and
//! the metrics endpoint.
//!
//! Layer: shell. Contract: [`run_health`] owns the sans-IO
//! [`HealthMonitor`], runs its due probes as tasks and publishes a new
//! [`Snapshot`] whenever the view changes; [`serve_metrics`] answers every
//! HTTP request with the Prometheus text of [`Metrics`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::answer::Snapshot;
use crate::config::Zone;
use crate::health::{HealthMonitor, Verdict};
use crate::metrics::Metrics;

/// One TCP connect probe. This is where the AP status interface plugs in
/// once access points expose one: poll it here instead.
async fn probe_tcp(target: SocketAddr, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target)).await,
        Ok(Ok(_))
    )
}

/// Owns the health monitor: runs due probes, feeds results, logs
/// transitions and publishes a new snapshot when the view changes.
pub(super) async fn run_health(
    zone: Arc<Zone>,
    state: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
) {
    let epoch = Instant::now();
    let mut monitor = HealthMonitor::new(
        epoch,
        &zone.health_sources(),
        zone.hysteresis,
        zone.probe_interval,
    );
    let (tx, mut rx) = mpsc::channel::<(usize, bool)>(zone.sites.len().max(1) * 2);
    loop {
        let now = Instant::now();
        while let Some(site) = monitor.poll_probe(now) {
            let Some(target) = zone.sites[site].probe else {
                continue;
            };
            let (tx, timeout) = (tx.clone(), zone.probe_timeout);
            tokio::spawn(async move {
                let ok = probe_tcp(target, timeout).await;
                let _ = tx.send((site, ok)).await;
            });
        }
        let wake = monitor.poll_timeout().map(tokio::time::Instant::from_std);
        let result = match wake {
            Some(at) => tokio::select! {
                r = rx.recv() => r,
                _ = tokio::time::sleep_until(at) => continue,
            },
            None => rx.recv().await,
        };
        let Some((site, ok)) = result else {
            return;
        };
        monitor.on_probe_result(Instant::now(), site, ok);
        let mut transitioned = false;
        while let Some(ev) = monitor.poll_event() {
            transitioned = true;
            let name = &zone.sites[ev.site].name;
            match ev.to {
                Verdict::Down => {
                    warn!(site = %name, from = %ev.from, to = %ev.to, "site down: answers move to the next site")
                }
                _ => info!(site = %name, from = %ev.from, to = %ev.to, "site health changed"),
            }
        }
        if let Some(s) = monitor.state(site) {
            debug!(site = %zone.sites[site].name, ok, state = ?s, "probe result");
            metrics.record_health(site, s, ok, transitioned);
        }
        let view = monitor.view();
        let current = state.load();
        if current.health != view {
            state.store(Arc::new(current.with_health(view)));
        }
    }
}

pub(super) async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut req = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut req)).await;
            let body = metrics.render();
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}
