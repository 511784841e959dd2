//! Access point configuration: a TOML file, overridden by flags.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use homeaddr_daemon::common::{
    CommonArgs, CommonConfig, CommonSettings, DaemonSettings, load_config,
};
use homeaddr_proto::engine::ap::{ApConfig, Ipv4Prefix, MemberKey, parse_shim_prefix_v6};
use serde::Deserialize;

/// The longest settle time `settle_ms` accepts.
pub const MAX_SETTLE_MS: u64 = 10_000;

/// Command line of `homeaddr-ap`.
#[derive(Debug, Parser)]
#[command(
    name = "homeaddr-ap",
    version,
    about = "homeaddr access point: owns the home address and hands each client to a member"
)]
pub struct Cli {
    /// Flags every daemon has.
    #[command(flatten)]
    pub common: CommonArgs,
    /// A home address this AP owns: IPv6 or IPv4, at most once per family.
    #[arg(long)]
    pub home_address: Vec<IpAddr>,
    /// UDP tunnel endpoint to listen on (IPv4 or IPv6; `[::]:4790`, the
    /// default, takes both families).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Registration key for SPI 1 (hex of >= 16 bytes, or text).
    #[arg(long)]
    pub key: Option<String>,
    /// Heartbeat (BRR) interval in milliseconds.
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// A member not heard from for this many milliseconds is down.
    #[arg(long)]
    pub dead_after_ms: Option<u64>,
    /// After the first member registration, hold back TCP segments of
    /// unknown flows for this many milliseconds, until their members have
    /// reported them (several APs per home address; 0: never; default 1000).
    #[arg(long)]
    pub settle_ms: Option<u64>,
    /// The IPv6 /64 that client addresses of shims behind a NAT (IPv6
    /// HoA) come from, e.g. fd00:4841:cccc::/64; the same on every AP.
    #[arg(long)]
    pub shim_prefix: Option<String>,
    /// The IPv4 prefix that client addresses of shims behind a NAT (IPv4
    /// HoA) come from, e.g. 100.127.0.0/16; the same on every AP.
    #[arg(long)]
    pub shim_pool: Option<String>,
}

/// One registration key in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Security Parameter Index members use to name this key.
    pub spi: u32,
    /// The key (hex of >= 16 bytes, or text).
    pub key: String,
    /// The member ids this key may register (`[1, 2, "3-10"]`); absent:
    /// any id.
    pub members: Option<Vec<IdSpec>>,
}

/// One entry of a key's `members` list: an id or a range `"a-b"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IdSpec {
    /// One member id.
    One(u16),
    /// A range of ids, `"3-10"` (both ends included), or one id as text.
    Range(String),
}

impl IdSpec {
    fn range(&self, spi: u32) -> anyhow::Result<std::ops::RangeInclusive<u16>> {
        let text = match self {
            IdSpec::One(id) => return Ok(*id..=*id),
            IdSpec::Range(t) => t.trim(),
        };
        let bad = || {
            anyhow::anyhow!(
                "[[keys]] spi {spi}: members entry {text:?} is not an id or a range \"first-last\" of ids (0-65535)"
            )
        };
        let (a, b) = text.split_once('-').unwrap_or((text, text));
        let a: u16 = a.trim().parse().map_err(|_| bad())?;
        let b: u16 = b.trim().parse().map_err(|_| bad())?;
        if a > b {
            bail!("[[keys]] spi {spi}: members range {text:?} is empty; write the lower id first");
        }
        Ok(a..=b)
    }
}

/// Operator policy for one member id, applied when it registers and on
/// every reload (SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberPolicy {
    /// The member id.
    pub id: u16,
    /// Maglev weight (overrides the weight the member advertises).
    pub weight: Option<u32>,
    /// Drain it: no new clients, open flows go on.
    #[serde(default)]
    pub drain: bool,
}

impl From<&MemberPolicy> for homeaddr_proto::engine::ap::MemberPolicy {
    fn from(p: &MemberPolicy) -> Self {
        Self {
            id: homeaddr_proto::wire::MemberId(p.id),
            weight: p.weight,
            drain: p.drain,
        }
    }
}

/// The engine's form of the file's member policies.
pub fn engine_policies(members: &[MemberPolicy]) -> Vec<homeaddr_proto::engine::ap::MemberPolicy> {
    members.iter().map(Into::into).collect()
}

/// What a reload (SIGHUP) changes, read from the file with the flags on top.
#[derive(Debug, Clone)]
pub struct Reloadable {
    /// Registration keys.
    pub keys: Vec<MemberKey>,
    /// Log level.
    pub log_level: String,
    /// Per-member weights and drains.
    pub members: Vec<MemberPolicy>,
}

impl Reloadable {
    /// Read `path` again; flags still win. The error names the file, and
    /// the line for syntax and type errors.
    pub fn load(cli: &Cli, path: &std::path::Path) -> anyhow::Result<Self> {
        let file: FileConfig = load_config(Some(path))?;
        Self::from_file(cli, &file).with_context(|| format!("invalid config {}", path.display()))
    }

    fn from_file(cli: &Cli, file: &FileConfig) -> anyhow::Result<Self> {
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = file.member.iter().find(|m| !seen.insert(m.id)) {
            bail!(
                "[[member]] id {} appears twice; give each member one table",
                dup.id
            );
        }
        Ok(Self {
            keys: keys(cli, file)?,
            log_level: cli
                .common
                .log_level
                .clone()
                .or(file.common.log_level.clone())
                .unwrap_or_else(|| "info".into()),
            members: file.member.clone(),
        })
    }
}

fn keys(cli: &Cli, file: &FileConfig) -> anyhow::Result<Vec<MemberKey>> {
    let mut keys: Vec<MemberKey> = file
        .keys
        .iter()
        .map(|k| {
            let members = k
                .members
                .as_ref()
                .map(|list| list.iter().map(|m| m.range(k.spi)).collect())
                .transpose()?;
            Ok(MemberKey {
                spi: k.spi,
                key: homeaddr_daemon::parse_key(&k.key),
                members,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    if let Some(k) = &cli.key {
        keys.retain(|k| k.spi != 1);
        keys.push(MemberKey::new(1, homeaddr_daemon::parse_key(k)));
    }
    if keys.is_empty() {
        bail!("no registration key: give --key or a [[keys]] table (spi, key) in the config file");
    }
    if let Some(k) = keys.iter().find(|k| k.key.len() < 16) {
        bail!(
            "registration key for SPI {} is {} bytes; use at least 16 (e.g. 32 hex digits)",
            k.spi,
            k.key.len()
        );
    }
    Ok(keys)
}

/// The configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The home address (IPv6 or IPv4).
    pub home_address: Option<IpAddr>,
    /// The home addresses, at most one per family (instead of
    /// `home_address`).
    pub home_addresses: Option<Vec<IpAddr>>,
    /// UDP endpoint.
    pub listen: Option<SocketAddr>,
    /// Keys every daemon has.
    #[serde(flatten)]
    pub common: CommonConfig,
    /// Heartbeat interval, ms.
    pub heartbeat_ms: Option<u64>,
    /// Liveness deadline, ms.
    pub dead_after_ms: Option<u64>,
    /// Settle time after the first registration, ms (0: never).
    pub settle_ms: Option<u64>,
    /// Registration keys.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Per-member weights and drains (`[[member]]` tables).
    #[serde(default)]
    pub member: Vec<MemberPolicy>,
    /// Most shim records kept (default 65536).
    pub max_shim_clients: Option<usize>,
    /// Most shim records per /64 (IPv4: per address) (default 64).
    pub max_shims_per_prefix: Option<usize>,
    /// Most shim handshakes per second (default 2000).
    pub max_handshakes_per_second: Option<u32>,
    /// Client addresses for translated shims with an IPv6 HoA (a /64).
    pub shim_prefix: Option<String>,
    /// Client addresses for translated shims with an IPv4 HoA.
    pub shim_pool: Option<String>,
}

/// Everything the daemon needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Engine configuration.
    pub engine: ApConfig,
    /// UDP endpoint.
    pub listen: SocketAddr,
    /// TUN, MTU, control socket, log level, offload, metrics.
    pub common: CommonSettings,
    /// Per-member weights and drains from the file.
    pub members: Vec<MemberPolicy>,
}

impl DaemonSettings for Settings {
    type Cli = Cli;
    type File = FileConfig;

    fn common_args(cli: &Cli) -> &CommonArgs {
        &cli.common
    }

    fn merge(cli: &Cli, file: FileConfig) -> anyhow::Result<Self> {
        let homes = homeaddr_daemon::common::home_addresses(
            &cli.home_address,
            file.home_address,
            file.home_addresses.as_deref(),
        )?;
        let reloadable = Reloadable::from_file(cli, &file)?;
        let common = CommonSettings::resolve(&cli.common, &file.common, "ap", "ha-ap")?;
        let mut engine = ApConfig::new(homes.primary, reloadable.keys.clone()).with_homes(homes);
        engine.inner_mtu = common.mtu;
        engine.protection = common.protection;
        engine.member_policies = engine_policies(&reloadable.members);
        if let Some(ms) = cli.heartbeat_ms.or(file.heartbeat_ms) {
            engine.heartbeat = Duration::from_millis(ms.max(10));
        }
        if let Some(ms) = cli.dead_after_ms.or(file.dead_after_ms) {
            engine.dead_after = Duration::from_millis(ms.max(10));
        }
        let positive = |name: &str, v: u64| {
            if v == 0 {
                bail!("{name} must be at least 1 (it is a limit; 0 would refuse every shim)");
            }
            Ok(())
        };
        if let Some(n) = file.max_shim_clients {
            positive("max_shim_clients", n as u64)?;
            engine.max_shim_clients = n;
        }
        if let Some(n) = file.max_shims_per_prefix {
            positive("max_shims_per_prefix", n as u64)?;
            engine.max_shims_per_prefix = n;
        }
        if let Some(n) = file.max_handshakes_per_second {
            positive("max_handshakes_per_second", n.into())?;
            engine.max_handshakes_per_second = n;
        }
        if let Some(p) = cli.shim_prefix.as_ref().or(file.shim_prefix.as_ref()) {
            engine.shim_prefix_v6 =
                Some(parse_shim_prefix_v6(p).map_err(|e| anyhow::anyhow!("shim_prefix {e}"))?);
        }
        if let Some(p) = cli.shim_pool.as_ref().or(file.shim_pool.as_ref()) {
            engine.shim_pool_v4 = Some(
                p.parse::<Ipv4Prefix>()
                    .map_err(|e| anyhow::anyhow!("shim_pool {e}"))?,
            );
        }
        if let Some(ms) = cli.settle_ms.or(file.settle_ms) {
            if ms > MAX_SETTLE_MS {
                bail!(
                    "settle_ms is {ms}: at most {MAX_SETTLE_MS} (10 s); while the AP settles it drops \
                     segments of flows it does not know, and a long outage makes TCP give up. \
                     Members report their flows within a few hundred ms; 0 turns settling off"
                );
            }
            engine.settle = Duration::from_millis(ms);
        }
        if engine.dead_after <= engine.heartbeat {
            bail!("dead_after_ms must be longer than heartbeat_ms, or every member flaps");
        }
        Ok(Self {
            engine,
            listen: cli
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "[::]:4790".parse().expect("literal")),
            common,
            members: reloadable.members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let file: FileConfig = toml_file(
            "home_address = \"2001:db8::1\"\nmtu = 1400\n[[keys]]\nspi = 1\nkey = \"0123456789abcdef0123456789abcdef\"\n",
        );
        let s = Settings::from_args(&["--mtu", "1300"], file).unwrap();
        assert_eq!(s.engine.inner_mtu, 1300);
        assert_eq!(
            s.engine.home_address,
            "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap()
        );
        assert_eq!(s.engine.keys[0].key.len(), 16);
        assert_eq!(s.listen.port(), 4790);
    }

    #[test]
    fn one_home_address_per_family_from_flags_or_file() {
        let key = ["--key", "a long enough key!"];
        let s = Settings::from_args(
            &[
                &key[..],
                &["--home-address", "198.19.0.1", "--home-address", "fd00::1"],
            ]
            .concat(),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(
            s.engine.home_address,
            "fd00::1".parse::<std::net::Ipv6Addr>().unwrap()
        );
        assert_eq!(
            s.engine.home_address_v4,
            Some("198.19.0.1".parse().unwrap())
        );
        let file: FileConfig = toml_file(
            "home_addresses = [\"fd00::1\", \"198.19.0.1\"]\n[[keys]]\nspi = 1\nkey = \"0123456789abcdef0123456789abcdef\"\n",
        );
        let s = Settings::from_args(&[], file).unwrap();
        assert_eq!(
            s.engine.home_address_v4,
            Some("198.19.0.1".parse().unwrap())
        );
        let file: FileConfig = toml_file(
            "home_address = \"198.19.0.1\"\n[[keys]]\nspi = 1\nkey = \"0123456789abcdef0123456789abcdef\"\n",
        );
        let s = Settings::from_args(&[], file).unwrap();
        assert_eq!(
            s.engine.home_address,
            "198.19.0.1"
                .parse::<std::net::Ipv4Addr>()
                .unwrap()
                .to_ipv6_mapped()
        );
        let e = Settings::merge_error(
            &[
                &key[..],
                &[
                    "--home-address",
                    "198.19.0.1",
                    "--home-address",
                    "198.19.0.2",
                ],
            ]
            .concat(),
            FileConfig::default(),
        );
        assert!(e.contains("two IPv4"), "{e}");
    }

    #[test]
    fn bad_settings_say_what_to_do() {
        let e = Settings::merge_error(&[], FileConfig::default());
        assert!(e.contains("--home-address"), "{e}");
        let e = Settings::merge_error(&["--home-address", "2001:db8::1"], FileConfig::default());
        assert!(e.contains("--key"), "{e}");
        let e = Settings::merge_error(
            &["--home-address", "2001:db8::1", "--key", "short"],
            FileConfig::default(),
        );
        assert!(e.contains("at least 16"), "{e}");
        let e = Settings::merge_error(
            &[
                "--home-address",
                "2001:db8::1",
                "--key",
                "a long enough key!",
                "--mtu",
                "600",
            ],
            FileConfig::default(),
        );
        assert!(e.contains("1280"), "{e}");
    }

    #[test]
    fn member_policies_parse_and_duplicates_are_refused() {
        let text = "home_address = \"2001:db8::1\"\n[[keys]]\nspi = 1\nkey = \"0123456789abcdef0123456789abcdef\"\n\
                    [[member]]\nid = 2\nweight = 3\n[[member]]\nid = 4\ndrain = true\n";
        let s = Settings::from_args(&[], toml_file(text)).unwrap();
        assert_eq!(
            s.members,
            vec![
                MemberPolicy {
                    id: 2,
                    weight: Some(3),
                    drain: false
                },
                MemberPolicy {
                    id: 4,
                    weight: None,
                    drain: true
                }
            ]
        );
        let e = Settings::merge_error(&[], toml_file(&format!("{text}[[member]]\nid = 2\n")));
        assert!(e.contains("id 2 appears twice"), "{e}");
        let e = homeaddr_daemon::common::parse_config::<FileConfig>(
            std::path::Path::new("ap.toml"),
            &format!("{text}[[member]]\nid = 5\nweight = \"heavy\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("invalid config ap.toml:13:"), "{e}");
    }

    #[test]
    fn key_member_lists_and_limits_parse() {
        let text = "home_address = \"2001:db8::1\"\nmax_shims_per_prefix = 8\n\
                    [[keys]]\nspi = 1\nkey = \"0123456789abcdef0123456789abcdef\"\nmembers = [1, 2, \"3-10\"]\n\
                    [[keys]]\nspi = 2\nkey = \"0123456789abcdef0123456789abcdef\"\n";
        let s = Settings::from_args(&[], toml_file(text)).unwrap();
        assert_eq!(s.engine.keys[0].members, Some(vec![1..=1, 2..=2, 3..=10]));
        assert_eq!(s.engine.keys[1].members, None);
        assert_eq!(s.engine.max_shims_per_prefix, 8);
        assert_eq!(s.engine.max_shim_clients, 65536);
        let bad = text.replace("\"3-10\"", "\"ten\"");
        let e = Settings::merge_error(&[], toml_file(&bad));
        assert!(e.contains("\"ten\" is not an id or a range"), "{e}");
        let bad = text.replace("\"3-10\"", "\"10-3\"");
        let e = Settings::merge_error(&[], toml_file(&bad));
        assert!(e.contains("lower id first"), "{e}");
        let bad = text.replace("= 8", "= 0");
        let e = Settings::merge_error(&[], toml_file(&bad));
        assert!(e.contains("max_shims_per_prefix must be at least 1"), "{e}");
    }

    #[test]
    fn shim_pools_are_read_checked_and_overridden() {
        let text = "home_address = \"2001:db8::1\"\nshim_prefix = \"fd00:4841:cccc::/64\"\n\
                    shim_pool = \"100.127.0.0/16\"\n\
                    [[keys]]\nspi = 1\nkey = \"0123456789abcdef0123456789abcdef\"\n";
        let s = Settings::from_args(&[], toml_file(text)).unwrap();
        assert_eq!(
            s.engine.shim_prefix_v6,
            Some("fd00:4841:cccc::".parse().unwrap())
        );
        assert_eq!(
            s.engine.shim_pool_v4.map(|p| p.to_string()),
            Some("100.127.0.0/16".into())
        );
        let s = Settings::from_args(&["--shim-pool", "100.126.0.0/24"], toml_file(text)).unwrap();
        assert_eq!(
            s.engine.shim_pool_v4.map(|p| p.to_string()),
            Some("100.126.0.0/24".into())
        );
        let e = Settings::merge_error(&[], toml_file(&text.replace("/64", "/56")));
        assert!(e.contains("must be a /64"), "{e}");
        let e = Settings::merge_error(&[], toml_file(&text.replace("0.0/16", "0.1/16")));
        assert!(e.contains("host bits set"), "{e}");
        let e = Settings::merge_error(&[], toml_file(&text.replace("/16", "/31")));
        assert!(e.contains("0..=30"), "{e}");
    }

    #[test]
    fn settle_ms_is_read_checked_and_overridden() {
        let text = "home_address = \"2001:db8::1\"\nsettle_ms = 250\n\
                    [[keys]]\nspi = 1\nkey = \"0123456789abcdef0123456789abcdef\"\n";
        let s = Settings::from_args(&[], toml_file(text)).unwrap();
        assert_eq!(s.engine.settle, Duration::from_millis(250));
        let s = Settings::from_args(&["--settle-ms", "0"], toml_file(text)).unwrap();
        assert_eq!(s.engine.settle, Duration::ZERO);
        let default = text.replace("settle_ms = 250\n", "");
        let s = Settings::from_args(&[], toml_file(&default)).unwrap();
        assert_eq!(s.engine.settle, homeaddr_proto::engine::ap::DEFAULT_SETTLE);
        let e = Settings::merge_error(&["--settle-ms", "60000"], toml_file(text));
        assert!(e.contains("settle_ms is 60000: at most 10000"), "{e}");
        assert!(e.contains("0 turns settling off"), "{e}");
    }

    fn toml_file(text: &str) -> FileConfig {
        homeaddr_daemon::common::parse_config(std::path::Path::new("t.toml"), text).unwrap()
    }
}
