//! The router between the client LAN and the server LAN: IPv6 forwarding,
//! L4 multipath hashing, and the route of the home address over the APs.
//!
//! Static mode: the test owns the route (`ip -6 route replace HOA/128
//! nexthop via AP1 nexthop via AP2 ...`) and changes it as a router does on
//! a route change ([`Router::remove_nexthop`], [`Router::add_nexthop`]).
//! BIRD mode: the router's BIRD installs it (`proto bird`) and the test
//! only reads it ([`Router::nexthops`], [`Router::wait_nexthops`]).

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::bird::Bird;
use crate::service::HOME_ADDRESS;
use crate::topology::Netns;
use crate::wait_until;

/// The router's interface on the client LAN.
pub const CLIENT_IF: &str = "eth1";
/// The router's interface on the server LAN (towards the APs).
pub const SERVER_IF: &str = "eth2";
/// How often route waits poll (their times are results: keep it fine).
const ROUTE_POLL: Duration = Duration::from_millis(5);

/// The router namespace, and its BIRD in BIRD mode.
#[derive(Debug)]
pub struct Router {
    /// Its namespace.
    pub ns: Netns,
    /// Its BIRD (BIRD mode only).
    pub bird: Option<Bird>,
}

impl Router {
    /// Turns `ns` into the router: IPv6 forwarding, and the L4 hash policy
    /// for multipath routes (`net.ipv6.fib_multipath_hash_policy = 1`: a
    /// flow's 5-tuple picks the nexthop, so one TCP connection always takes
    /// one AP while the route stays the same).
    pub fn new(ns: Netns) -> anyhow::Result<Self> {
        ns.set_forwarding(true)?;
        ns.sysctl("net.ipv6.fib_multipath_hash_policy", "1")?;
        Ok(Self { ns, bird: None })
    }

    /// The gateways of the router's routes to the home address, in the
    /// kernel's order (empty: no route).
    pub fn nexthops(&self) -> anyhow::Result<Vec<Ipv6Addr>> {
        let out = self
            .ns
            .ip(&format!("-6 -j route show {HOME_ADDRESS}/128"))?;
        parse_nexthops(&out)
    }

    /// The route of the home address, as `ip -6 route` prints it (for
    /// failure messages and logs).
    pub fn route(&self) -> String {
        self.ns
            .ip(&format!("-6 route show {HOME_ADDRESS}/128"))
            .unwrap_or_else(|e| e.to_string())
    }

    /// Static mode: the route of the home address becomes exactly
    /// `gateways` on the server LAN (one multipath route; no gateway: no
    /// route). Returns when the kernel has it.
    pub fn set_nexthops(&self, gateways: &[Ipv6Addr]) -> anyhow::Result<Instant> {
        let dest = format!("{HOME_ADDRESS}/128");
        match gateways {
            [] => {
                if !self.nexthops()?.is_empty() {
                    self.ns.ip(&format!("-6 route del {dest}"))?;
                }
            }
            _ => {
                let hops: Vec<String> = gateways
                    .iter()
                    .map(|g| format!("nexthop via {g} dev {SERVER_IF}"))
                    .collect();
                self.ns
                    .ip(&format!("-6 route replace {dest} {}", hops.join(" ")))?;
            }
        }
        Ok(Instant::now())
    }

    /// Static mode: drops `gateway` from the route (what a router does
    /// when that AP's route goes away); when the route changed.
    pub fn remove_nexthop(&self, gateway: Ipv6Addr) -> anyhow::Result<Instant> {
        let mut hops = self.nexthops()?;
        anyhow::ensure!(
            hops.contains(&gateway),
            "the route has no nexthop {gateway}: {}",
            self.route()
        );
        hops.retain(|&g| g != gateway);
        self.set_nexthops(&hops)
    }

    /// Static mode: adds `gateway` to the route (an AP announces itself);
    /// when the route changed.
    pub fn add_nexthop(&self, gateway: Ipv6Addr) -> anyhow::Result<Instant> {
        let mut hops = self.nexthops()?;
        anyhow::ensure!(
            !hops.contains(&gateway),
            "the route has nexthop {gateway} already: {}",
            self.route()
        );
        hops.push(gateway);
        self.set_nexthops(&hops)
    }

    /// Waits until the route's gateways satisfy `cond`; returns when that
    /// was first seen (polled every 5 ms) and how long it took.
    pub fn wait_nexthops(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&[Ipv6Addr]) -> bool,
    ) -> anyhow::Result<(Instant, Duration)> {
        let took = wait_until(timeout, ROUTE_POLL, what, || {
            self.nexthops().is_ok_and(|h| cond(&h))
        })
        .map_err(|e| {
            let bird = self
                .bird
                .as_ref()
                .map(|b| {
                    b.birdc(&["show", "protocols"])
                        .unwrap_or_else(|e| e.to_string())
                })
                .unwrap_or_default();
            anyhow::anyhow!("{e}; the route is now: {}\n{bird}", self.route())
        })?;
        Ok((Instant::now(), took))
    }

    /// Waits until the route has exactly `n` nexthops.
    pub fn wait_nexthop_count(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<(Instant, Duration)> {
        self.wait_nexthops(
            &format!("the router's route to have {n} nexthops"),
            timeout,
            |h| h.len() == n,
        )
    }
}

/// The gateways in `ip -6 -j route show` output: each route's `gateway`,
/// or each of its `nexthops`.
fn parse_nexthops(json: &str) -> anyhow::Result<Vec<Ipv6Addr>> {
    let text = json.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let routes: Value = serde_json::from_str(text)?;
    let mut hops = Vec::new();
    for route in routes.as_array().into_iter().flatten() {
        let gateways: Vec<&Value> = match route["nexthops"].as_array() {
            Some(list) => list.iter().map(|h| &h["gateway"]).collect(),
            None => vec![&route["gateway"]],
        };
        for g in gateways.into_iter().filter_map(Value::as_str) {
            hops.push(g.parse()?);
        }
    }
    Ok(hops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nexthops_parse_from_single_and_multipath_routes() {
        assert!(parse_nexthops("").unwrap().is_empty());
        assert!(parse_nexthops("[]\n").unwrap().is_empty());
        let single = r#"[{"dst":"fd00:4841:aaaa::1","gateway":"fd00:4841:2::3","dev":"eth2"}]"#;
        assert_eq!(
            parse_nexthops(single).unwrap(),
            vec!["fd00:4841:2::3".parse::<Ipv6Addr>().unwrap()]
        );
        let multi = r#"[{"dst":"fd00:4841:aaaa::1","nexthops":[
            {"gateway":"fd00:4841:2::2","dev":"eth2","weight":1},
            {"gateway":"fd00:4841:2::3","dev":"eth2","weight":1}]}]"#;
        assert_eq!(parse_nexthops(multi).unwrap().len(), 2);
    }
}
