//! The `homeaddr-wan` configuration: a TOML file and command-line shorthands.
//!
//! ```toml
//! seed = 42                       # loss/jitter seed (default 1)
//! tun_name = "wan0"               # TUN created in every host namespace
//! mtu = 1500
//! tx_queue_len = 10000
//! routes = ["fd00:4841::/32"]     # routed into the TUN in every host
//! stats_interval_ms = 5000        # counters printed as JSON lines (0: off)
//! realtime_priority = 10          # SCHED_FIFO priority of its threads (0: off)
//!
//! [default_link]                  # links not listed below
//! latency_ms = 0.0
//! jitter_ms = 0.0
//! loss = 0.0
//! rate_mbit = 0.0                 # 0: unlimited
//! queue_limit = 16384
//!
//! [[host]]
//! name = "ap"
//! netns = "ha-demo-ap"            # or a path like /proc/1234/ns/net
//! addr = "fd00:4841:ffff::1/128"
//! prefixes = ["fd00:4841:100::/64"]
//!
//! [[link]]
//! from = "client"
//! to = "ap"
//! latency_ms = 30.0               # one way
//! symmetric = true                # also to -> from (default true)
//! ```

use std::net::Ipv6Addr;
use std::time::Duration;

use ipnet::Ipv6Net;
use serde::Deserialize;

use super::{HostSpec, LinkParams, WanConfig, WanError};

/// Link settings as written in the file; unset fields inherit.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSettings {
    /// One-way delay in milliseconds.
    pub latency_ms: Option<f64>,
    /// Jitter (+-) in milliseconds.
    pub jitter_ms: Option<f64>,
    /// Loss probability.
    pub loss: Option<f64>,
    /// Rate limit in Mbit/s (0: unlimited).
    pub rate_mbit: Option<f64>,
    /// Packets in flight per direction.
    pub queue_limit: Option<usize>,
}

fn duration_ms(ms: f64, field: &str) -> Result<Duration, WanError> {
    if ms.is_finite() && ms >= 0.0 {
        Ok(Duration::from_secs_f64(ms / 1000.0))
    } else {
        Err(WanError::Config(format!(
            "{field} = {ms} must be a non-negative number of milliseconds"
        )))
    }
}

impl LinkSettings {
    /// `base` with the fields set here replaced.
    pub fn apply(&self, base: LinkParams) -> Result<LinkParams, WanError> {
        let mut p = base;
        if let Some(ms) = self.latency_ms {
            p.latency = duration_ms(ms, "latency_ms")?;
        }
        if let Some(ms) = self.jitter_ms {
            p.jitter = duration_ms(ms, "jitter_ms")?;
        }
        if let Some(loss) = self.loss {
            p.loss = loss;
        }
        if let Some(mbit) = self.rate_mbit {
            if !(mbit.is_finite() && mbit >= 0.0) {
                return Err(WanError::Config(format!("rate_mbit = {mbit} must be >= 0")));
            }
            p.rate_bps = (mbit > 0.0).then_some((mbit * 1e6) as u64);
        }
        if let Some(limit) = self.queue_limit {
            p.queue_limit = limit;
        }
        p.validate().map_err(WanError::Config)?;
        Ok(p)
    }
}

/// A `[[host]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    /// Host name in the matrix.
    pub name: String,
    /// Namespace name or path.
    pub netns: String,
    /// WAN address with prefix length, e.g. `fd00:4841:ffff::1/128`.
    pub addr: Ipv6Net,
    /// Extra prefixes delivered to this host.
    #[serde(default)]
    pub prefixes: Vec<Ipv6Net>,
}

impl HostEntry {
    /// As a [`HostSpec`].
    pub fn spec(&self) -> HostSpec {
        HostSpec {
            name: self.name.clone(),
            netns: self.netns.clone(),
            addr: self.addr.addr(),
            prefix_len: self.addr.prefix_len(),
            prefixes: self.prefixes.clone(),
        }
    }
}

/// A `[[link]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkEntry {
    /// Sending host.
    pub from: String,
    /// Receiving host.
    pub to: String,
    /// Also applies to `to -> from` (default true).
    #[serde(default = "yes")]
    pub symmetric: bool,
    /// One-way delay in milliseconds.
    pub latency_ms: Option<f64>,
    /// Jitter (+-) in milliseconds.
    pub jitter_ms: Option<f64>,
    /// Loss probability.
    pub loss: Option<f64>,
    /// Rate limit in Mbit/s (0: unlimited).
    pub rate_mbit: Option<f64>,
    /// Packets in flight per direction.
    pub queue_limit: Option<usize>,
}

fn yes() -> bool {
    true
}

impl LinkEntry {
    fn settings(&self) -> LinkSettings {
        LinkSettings {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            loss: self.loss,
            rate_mbit: self.rate_mbit,
            queue_limit: self.queue_limit,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanFile {
    /// Seed of loss and jitter.
    pub seed: Option<u64>,
    /// TUN name in each host.
    pub tun_name: Option<String>,
    /// TUN MTU.
    pub mtu: Option<u16>,
    /// TUN transmit queue length.
    pub tx_queue_len: Option<u32>,
    /// Prefixes routed into each host's TUN.
    pub routes: Option<Vec<Ipv6Net>>,
    /// Counter report interval; 0 turns periodic reports off.
    pub stats_interval_ms: Option<u64>,
    /// SCHED_FIFO priority of the emulator threads; 0 turns it off.
    pub realtime_priority: Option<u8>,
    /// Defaults for all links.
    #[serde(default)]
    pub default_link: LinkSettings,
    /// Hosts.
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostEntry>,
    /// Link overrides.
    #[serde(default, rename = "link")]
    pub links: Vec<LinkEntry>,
}

impl WanFile {
    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<WanFile, WanError> {
        toml::from_str(text).map_err(|e| WanError::Config(e.to_string()))
    }

    /// The emulator settings.
    pub fn config(&self) -> Result<WanConfig, WanError> {
        let d = WanConfig::default();
        Ok(WanConfig {
            seed: self.seed.unwrap_or(d.seed),
            tun_name: self.tun_name.clone().unwrap_or(d.tun_name),
            mtu: self.mtu.unwrap_or(d.mtu),
            tx_queue_len: self.tx_queue_len.unwrap_or(d.tx_queue_len),
            routes: self.routes.clone().unwrap_or(d.routes),
            default_link: self.default_link.apply(d.default_link)?,
            realtime_priority: match self.realtime_priority {
                None => d.realtime_priority,
                Some(0) => None,
                Some(p) if p <= 99 => Some(p),
                Some(p) => {
                    return Err(WanError::Config(format!(
                        "realtime_priority = {p} must be 0 (off) to 99"
                    )));
                }
            },
        })
    }

    /// The hosts to attach.
    pub fn host_specs(&self) -> Vec<HostSpec> {
        self.hosts.iter().map(HostEntry::spec).collect()
    }

    /// Every configured direction `(from, to, params)`, symmetric entries
    /// expanded; later entries win.
    pub fn link_params(&self) -> Result<Vec<(String, String, LinkParams)>, WanError> {
        let default = self.config()?.default_link;
        let mut out = Vec::new();
        for entry in &self.links {
            let params = entry.settings().apply(default)?;
            out.push((entry.from.clone(), entry.to.clone(), params));
            if entry.symmetric {
                out.push((entry.to.clone(), entry.from.clone(), params));
            }
        }
        Ok(out)
    }
}

/// Parses `--host NAME=NETNS,ADDR/LEN[,PREFIX...]`.
pub fn parse_host_arg(arg: &str) -> Result<HostEntry, WanError> {
    let usage = || {
        WanError::Config(format!(
            "--host {arg:?}: expected NAME=NETNS,ADDR/LEN[,PREFIX...], e.g. ap=ha-demo-ap,fd00:4841:ffff::1/128"
        ))
    };
    let (name, rest) = arg.split_once('=').ok_or_else(usage)?;
    let mut parts = rest.split(',');
    let netns = parts.next().filter(|s| !s.is_empty()).ok_or_else(usage)?;
    let addr = parts.next().ok_or_else(usage)?;
    let addr: Ipv6Net = match addr.parse() {
        Ok(net) => net,
        Err(_) => {
            Ipv6Net::new(addr.parse::<Ipv6Addr>().map_err(|_| usage())?, 128).expect("128 is valid")
        }
    };
    let prefixes = parts
        .map(|p| p.parse::<Ipv6Net>().map_err(|_| usage()))
        .collect::<Result<_, _>>()?;
    if name.is_empty() {
        return Err(usage());
    }
    Ok(HostEntry {
        name: name.into(),
        netns: netns.into(),
        addr,
        prefixes,
    })
}

/// Parses `--link A,B,LATENCY_MS[,LOSS[,JITTER_MS]]` (both directions).
pub fn parse_link_arg(arg: &str) -> Result<LinkEntry, WanError> {
    let usage = || {
        WanError::Config(format!(
            "--link {arg:?}: expected A,B,LATENCY_MS[,LOSS[,JITTER_MS]], e.g. client,ap,30,0.01"
        ))
    };
    let parts: Vec<&str> = arg.split(',').collect();
    if !(3..=5).contains(&parts.len()) || parts[0].is_empty() || parts[1].is_empty() {
        return Err(usage());
    }
    let num = |s: &str| s.parse::<f64>().map_err(|_| usage());
    Ok(LinkEntry {
        from: parts[0].into(),
        to: parts[1].into(),
        symmetric: true,
        latency_ms: Some(num(parts[2])?),
        loss: parts.get(3).map(|s| num(s)).transpose()?,
        jitter_ms: parts.get(4).map(|s| num(s)).transpose()?,
        rate_mbit: None,
        queue_limit: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
seed = 42
routes = ["fd00:4841::/32"]
[default_link]
latency_ms = 1.0
[[host]]
name = "ap"
netns = "ha-demo-ap"
addr = "fd00:4841:ffff::1/128"
prefixes = ["fd00:4841:100::/64"]
[[host]]
name = "client"
netns = "ha-demo-client"
addr = "fd00:4841:ffff::2/128"
[[link]]
from = "client"
to = "ap"
latency_ms = 30
loss = 0.01
[[link]]
from = "ap"
to = "client"
symmetric = false
jitter_ms = 2.5
"#;

    #[test]
    fn parses_the_documented_example() {
        let file = WanFile::parse(EXAMPLE).unwrap();
        let config = file.config().unwrap();
        assert_eq!(config.seed, 42);
        assert_eq!(config.tun_name, "wan0");
        assert_eq!(config.default_link.latency, Duration::from_millis(1));
        let hosts = file.host_specs();
        assert_eq!(
            hosts[0].prefixes,
            vec!["fd00:4841:100::/64".parse::<Ipv6Net>().unwrap()]
        );
        assert_eq!(hosts[1].prefix_len, 128);
        let links = file.link_params().unwrap();
        assert_eq!(links.len(), 3);
        assert_eq!((links[1].0.as_str(), links[1].1.as_str()), ("ap", "client"));
        assert_eq!(links[1].2.latency, Duration::from_millis(30));
        assert_eq!(links[1].2.loss, 0.01);
        // The asymmetric entry starts from the default, not from the one before.
        assert_eq!(links[2].2.latency, Duration::from_millis(1));
        assert_eq!(links[2].2.jitter, Duration::from_micros(2500));
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        assert!(WanFile::parse("latency = 3").is_err());
        let file = WanFile::parse("[default_link]\nloss = 2.0").unwrap();
        assert!(file.config().is_err());
        let file = WanFile::parse("[default_link]\nlatency_ms = -1.0").unwrap();
        assert!(file.config().is_err());
    }

    #[test]
    fn parses_command_line_shorthands() {
        let h = parse_host_arg("m1=ha-x-m1,fd00:4841:ffff::3/64,fd00:4841:100::/64").unwrap();
        assert_eq!(h.spec().prefix_len, 64);
        assert_eq!(h.prefixes.len(), 1);
        let h = parse_host_arg("m1=/proc/1/ns/net,fd00:4841:ffff::3").unwrap();
        assert_eq!(h.spec().prefix_len, 128);
        assert!(parse_host_arg("m1,fd00::1").is_err());
        let l = parse_link_arg("client,ap,30,0.1,2").unwrap();
        assert_eq!(
            (l.latency_ms, l.loss, l.jitter_ms),
            (Some(30.0), Some(0.1), Some(2.0))
        );
        assert!(parse_link_arg("client,ap").is_err());
        assert!(parse_link_arg("client,ap,x").is_err());
    }
}
