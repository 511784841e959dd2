//! The client address on the TUN and as the HoA route's source, set when
//! a Welcome gives it (and moved when a later one gives another), and put
//! on the TUN when the host loses it (a move: docs/PROTOCOL.md 6.5.2).
//! `ip` runs in a task of its own, not under the engine's lock.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use homeaddr_proto::wire::ip_to_v6;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// What changes the client address's place.
enum Update {
    /// A Welcome's client address.
    Session(Ipv6Addr),
    /// Our local address after a move.
    Moved(IpAddr),
}

/// The task that keeps the client address in place.
pub struct ClientAddress {
    tx: mpsc::UnboundedSender<Update>,
    tun: String,
    /// The client address while it is on the TUN.
    on_tun: Arc<std::sync::Mutex<Option<Ipv6Addr>>>,
    /// The client address once it is the route's source (`None` before).
    ready: watch::Receiver<Option<Ipv6Addr>>,
    task: tokio::task::JoinHandle<()>,
}

impl ClientAddress {
    /// Start the task for the home address `hoa` through `tun`, with the
    /// local address `local` (the client address when no NAT is in the
    /// way: on another interface already, so not added to the TUN).
    pub fn start(hoa: Ipv6Addr, local: IpAddr, tun: String) -> ClientAddress {
        let (tx, mut rx) = mpsc::unbounded_channel::<Update>();
        let on_tun = Arc::new(std::sync::Mutex::new(None::<Ipv6Addr>));
        let (set, dev) = (on_tun.clone(), tun.clone());
        let (ready_tx, ready) = watch::channel(None);
        let task = tokio::spawn(async move {
            let (mut client, mut local) = (None::<Ipv6Addr>, ip_to_v6(local));
            while let Some(update) = rx.recv().await {
                match update {
                    Update::Session(c) => client = Some(c),
                    Update::Moved(l) => local = ip_to_v6(l),
                }
                let Some(c) = client else { continue };
                let mut cur = set.lock().unwrap_or_else(|p| p.into_inner());
                // On the TUN unless it is our local address: after a move
                // the old one is gone from the host, and the connections
                // that use it as their source must keep it.
                let want = (c != local).then_some(c);
                if *cur == want && ready_tx.borrow().is_some_and(|r| r == c) {
                    continue;
                }
                if let Some(old) = cur.take().filter(|o| Some(*o) != want) {
                    del_address(old, &dev);
                }
                let result = match want {
                    None => set_route(hoa, c, &dev),
                    Some(c) => set_address(hoa, c, &dev),
                };
                match result {
                    Ok(()) => {
                        if ready_tx.borrow().is_none_or(|r| r != c) {
                            info!(client_address = %c, "the access point gave our client address: applications' source for the home address");
                        }
                        *cur = want;
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
            on_tun,
            ready,
            task,
        }
    }

    /// Waits (at most `limit`) until the AP gave the client address and
    /// the HoA's route has it as source: an application that connects
    /// earlier takes another source address, which the AP would refuse,
    /// and keeps it for the connection's life.
    pub async fn wait_ready(&self, limit: Duration) -> Option<Ipv6Addr> {
        let mut rx = self.ready.clone();
        match tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await {
            Ok(Ok(c)) => *c,
            _ => None,
        }
    }

    /// Where a Welcome's client address goes.
    pub fn sender(&self) -> ClientAddressSender {
        ClientAddressSender(self.tx.clone())
    }

    /// Our local address is `local` now (a move).
    pub fn moved(&self, local: IpAddr) {
        let _ = self.tx.send(Update::Moved(local));
    }

    /// Remove the address (the route goes with the rest of the setup).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        let c = self.on_tun.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(c) = c {
            del_address(c, &self.tun);
        }
    }
}

/// Hands a Welcome's client address to the task (from the engine's hook).
#[derive(Clone)]
pub struct ClientAddressSender(mpsc::UnboundedSender<Update>);

impl ClientAddressSender {
    /// The AP gave `c`.
    pub fn send(&self, c: Ipv6Addr) {
        let _ = self.0.send(Update::Session(c));
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
