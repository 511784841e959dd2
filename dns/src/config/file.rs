//! The configuration file as written: serde types and their defaults.
//!
//! Nothing here is validated beyond TOML types; [`super::compile`] checks
//! every value and turns these into the [`super::Zone`] the query path reads.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::geo::Coordinates;

/// What to answer when every site a client could use is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AllDownPolicy {
    /// Answer with every site (clients may still reach one; a dead health
    /// checker must not take the service off the air).
    #[default]
    FailOpen,
    /// Answer NODATA.
    Nodata,
}

/// Static health from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StaticHealth {
    /// Always serving.
    Up,
    /// Never serving (maintenance).
    Down,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) origin: String,
    #[serde(default = "default_ttl")]
    pub(super) ttl: u32,
    #[serde(default = "default_uncertain_ttl")]
    pub(super) uncertain_ttl: u32,
    #[serde(default = "default_payload")]
    pub(super) max_udp_payload: u16,
    #[serde(default)]
    pub(super) all_down: AllDownPolicy,
    pub(super) soa: RawSoa,
    #[serde(default)]
    pub(super) ns: Vec<RawNs>,
    #[serde(default)]
    pub(super) service: Vec<RawService>,
    #[serde(default)]
    pub(super) site: Vec<RawSite>,
    #[serde(default)]
    pub(super) network: Vec<RawNetwork>,
    #[serde(default)]
    pub(super) default: Option<RawPolicy>,
    #[serde(default)]
    pub(super) health: RawHealth,
}

fn default_ttl() -> u32 {
    60
}
fn default_uncertain_ttl() -> u32 {
    5
}
fn default_payload() -> u16 {
    1232
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSoa {
    pub(super) mname: String,
    pub(super) rname: String,
    #[serde(default = "one")]
    pub(super) serial: u32,
    #[serde(default = "default_refresh")]
    pub(super) refresh: u32,
    #[serde(default = "default_retry")]
    pub(super) retry: u32,
    #[serde(default = "default_expire")]
    pub(super) expire: u32,
    #[serde(default = "default_minimum")]
    pub(super) minimum: u32,
}
fn one() -> u32 {
    1
}
fn default_refresh() -> u32 {
    3600
}
fn default_retry() -> u32 {
    600
}
fn default_expire() -> u32 {
    1_209_600
}
fn default_minimum() -> u32 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNs {
    pub(super) name: String,
    #[serde(default)]
    pub(super) addrs: Vec<IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: String,
    pub(super) ttl: Option<u32>,
    pub(super) sites: Option<Vec<String>>,
    pub(super) max_answers: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawAddr {
    Plain(IpAddr),
    Weighted { addr: IpAddr, weight: u32 },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSite {
    pub(super) name: String,
    pub(super) hoas: Vec<RawAddr>,
    #[serde(default)]
    pub(super) ipv4: Vec<RawAddr>,
    pub(super) ap_endpoint: SocketAddr,
    pub(super) location: Option<Coordinates>,
    pub(super) region: Option<String>,
    pub(super) health: Option<StaticHealth>,
    pub(super) probe: Option<SocketAddr>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) sites: Option<Vec<String>>,
    pub(super) location: Option<Coordinates>,
    pub(super) region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    pub(super) prefix: String,
    pub(super) sites: Option<Vec<String>>,
    pub(super) location: Option<Coordinates>,
    pub(super) region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    #[serde(default = "default_interval")]
    pub(super) interval_ms: u64,
    #[serde(default = "default_timeout")]
    pub(super) timeout_ms: u64,
    #[serde(default = "default_down_after")]
    pub(super) down_after: u32,
    #[serde(default = "default_up_after")]
    pub(super) up_after: u32,
}
impl Default for RawHealth {
    fn default() -> Self {
        Self {
            interval_ms: default_interval(),
            timeout_ms: default_timeout(),
            down_after: default_down_after(),
            up_after: default_up_after(),
        }
    }
}
fn default_interval() -> u64 {
    2000
}
fn default_timeout() -> u64 {
    1000
}
fn default_down_after() -> u32 {
    3
}
fn default_up_after() -> u32 {
    2
}
