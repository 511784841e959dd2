//! Direct server return in the kernel (docs/OPERATING.md, "Direct server
//! return"): answers to legacy clients leave this host natively, from the
//! home address, without passing through the member daemon or the AP.
//!
//! Without it, the source rule `from HOA iif lo lookup TABLE` meets a
//! default route into the TUN, and every answer crosses the daemon. With
//! it, the table holds only one host route per shim client (`C/128 dev TUN`,
//! `C/32` for an IPv4 one), added and removed over rtnetlink as the engine
//! reports correspondents ([`MemberEvent::ShimClientAdded`] and
//! [`MemberEvent::ShimClientRemoved`]); for any other destination the
//! lookup finds nothing and falls through to the main table. Shim clients'
//! answers still come to the engine, to be sealed (direct to a bound shim,
//! or through its AP).
//!
//! A client's packets reach this host through the tunnel, whose inner MTU is
//! smaller than the path the answers take. The AP clamps the MSS of the
//! clients' SYNs, but the SYN-ACK never passes it now: an nftables rule
//! (table `inet homeaddr-member-TABLE`, output hook) clamps the MSS of
//! SYN-ACKs from the home address to what the tunnel carries, so clients
//! never send segments that only Packet Too Big could shrink.
//!
//! [`MemberEvent::ShimClientAdded`]: homeaddr_proto::engine::member::MemberEvent::ShimClientAdded
//! [`MemberEvent::ShimClientRemoved`]: homeaddr_proto::engine::member::MemberEvent::ShimClientRemoved

use std::io::Write as _;
use std::net::Ipv6Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::Context as _;
use homeaddr_daemon::routes::HostRoutes;
use homeaddr_proto::engine::HomeAddresses;
use tracing::{debug, info, warn};

/// The kernel half of direct server return, for as long as the member runs.
#[derive(Debug)]
pub struct DirectReturn {
    routes: Mutex<HostRoutes>,
    clamp: String,
}

impl DirectReturn {
    /// Install the MSS clamp for `homes` at tunnel MTU `mtu` and open the
    /// route socket for `table` through `tun` (whose routes vanish with it).
    pub fn setup(table: u32, tun: &str, homes: &HomeAddresses, mtu: u16) -> anyhow::Result<Self> {
        // The socket first: it changes nothing, so a failure leaves
        // nothing to undo.
        let routes = HostRoutes::open(table, tun)
            .with_context(|| format!("cannot open rtnetlink for the routes of table {table}"))?;
        let clamp = format!("homeaddr-member-{table}");
        nft(&clamp_ruleset(&clamp, homes, mtu)).with_context(|| {
            format!("direct server return clamps the MSS of answers with nftables (table inet {clamp}): is nftables installed (apt-get install nftables)?")
        })?;
        info!(table, clamp = %clamp, "direct server return: answers to legacy clients leave natively");
        Ok(Self {
            routes: Mutex::new(routes),
            clamp,
        })
    }

    /// The engine learnt (`known`) or forgot a shim client: route its
    /// answers into the TUN, or let them leave natively again.
    pub fn shim_client(&self, client: Ipv6Addr, known: bool) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let result = if known {
            routes.add(client)
        } else {
            routes.remove(client)
        };
        if let Err(e) = result {
            if known {
                warn!(%client, error = %e, "cannot route the answers to a shim client into the TUN: they leave natively, unsealed");
            } else {
                warn!(%client, error = %e, "cannot remove the route of a forgotten shim client: its answers still come to the engine");
            }
        }
    }
}

/// A member of `table` died before it could remove its MSS clamp, and this
/// one runs without direct return: remove the clamp if it is there (no
/// nftables, or no such table, is fine).
pub fn remove_stale_clamp(table: u32) {
    let name = format!("homeaddr-member-{table}");
    match nft(&format!("delete table inet {name}\n")) {
        Ok(()) => info!(clamp = %name, "removed the MSS clamp a dead member left behind"),
        Err(e) => debug!(error = %e, "no stale MSS clamp"),
    }
}

impl Drop for DirectReturn {
    fn drop(&mut self) {
        remove_clamp(&self.clamp);
    }
}

/// The nftables ruleset of table `inet NAME`: it replaces any table of
/// that name (a member killed before it could remove its own) in one
/// transaction.
fn clamp_ruleset(name: &str, homes: &HomeAddresses, mtu: u16) -> String {
    let mut rules = String::new();
    // SYN-ACKs only: SYN and ACK set, the other flags of a handshake
    // answer clear.
    let synack = "tcp flags & (syn | ack | rst | fin) == syn | ack";
    if let Some(hoa6) = homes.ipv6() {
        let mss = mtu.saturating_sub(60);
        rules.push_str(&format!(
            "        ip6 saddr {hoa6} {synack} tcp option maxseg size > {mss} tcp option maxseg size set {mss}\n"
        ));
    }
    if let Some(hoa4) = homes.v4 {
        let mss = mtu.saturating_sub(40);
        rules.push_str(&format!(
            "        ip saddr {hoa4} {synack} tcp option maxseg size > {mss} tcp option maxseg size set {mss}\n"
        ));
    }
    format!(
        "table inet {name}\ndelete table inet {name}\ntable inet {name} {{\n    chain answers {{\n        type filter hook output priority mangle; policy accept;\n{rules}    }}\n}}\n"
    )
}

/// Run `nft -f -` with `ruleset`; the error repeats nft's message.
fn nft(ruleset: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .context("cannot write to nft")?;
    }
    let out = child.wait_with_output().context("nft did not finish")?;
    if !out.status.success() {
        anyhow::bail!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn remove_clamp(name: &str) {
    if let Err(e) = nft(&format!("delete table inet {name}\n")) {
        warn!(error = %e, "cleanup step failed: the MSS clamp's nftables table stays");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clamp_covers_each_home_address_at_its_family_mss() {
        let homes = HomeAddresses {
            primary: "fd00::1".parse().unwrap(),
            v4: Some("198.18.0.1".parse().unwrap()),
        };
        let r = clamp_ruleset("homeaddr-member-4790", &homes, 1420);
        assert!(
            r.starts_with(
                "table inet homeaddr-member-4790\ndelete table inet homeaddr-member-4790\n"
            ),
            "{r}"
        );
        assert!(r.contains("type filter hook output priority mangle"), "{r}");
        assert!(r.contains("ip6 saddr fd00::1 tcp flags & (syn | ack | rst | fin) == syn | ack tcp option maxseg size > 1360 tcp option maxseg size set 1360"), "{r}");
        assert!(r.contains("ip saddr 198.18.0.1 tcp flags & (syn | ack | rst | fin) == syn | ack tcp option maxseg size > 1380 tcp option maxseg size set 1380"), "{r}");
        let v4_only = HomeAddresses {
            primary: "::ffff:198.18.0.1".parse().unwrap(),
            v4: Some("198.18.0.1".parse().unwrap()),
        };
        let r = clamp_ruleset("t", &v4_only, 1420);
        assert!(!r.contains("ip6 saddr"), "{r}");
        assert!(r.contains("ip saddr 198.18.0.1"), "{r}");
    }
}
