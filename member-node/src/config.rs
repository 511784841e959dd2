//! Member configuration: a TOML file, overridden by flags.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use homeaddr_daemon::common::{CommonArgs, CommonConfig, CommonSettings, DaemonSettings};
use homeaddr_proto::engine::{ApEndpoints, member};
use serde::Deserialize;

/// Command line of `homeaddr-member`.
#[derive(Debug, Parser)]
#[command(
    name = "homeaddr-member",
    version,
    about = "homeaddr member node: registers with the access point and serves the home address"
)]
pub struct Cli {
    /// Flags every daemon has.
    #[command(flatten)]
    pub common: CommonArgs,
    /// This member's id (1-65535), unique in the service.
    #[arg(long)]
    pub id: Option<u16>,
    /// A home address of the service (as on the AP): IPv6 or IPv4, at
    /// most once per family.
    #[arg(long)]
    pub home_address: Vec<IpAddr>,
    /// An access point's tunnel endpoint, e.g. [2001:db8::1]:4790, or one
    /// per family comma-separated (IPV4:PORT,[IPV6]:PORT: a move to the
    /// other family takes the AP's endpoint of it); repeat it for several
    /// APs in front of the home address (the member registers with each).
    #[arg(long = "access-point", value_parser = parse_access_point)]
    pub access_point: Vec<ApEndpoints>,
    /// This member's tunnel endpoint (default: the address that reaches the AP, port 4790).
    #[arg(long)]
    pub care_of: Option<SocketAddr>,
    /// Registration key shared with the AP (hex of >= 16 bytes, or text).
    #[arg(long)]
    pub key: Option<String>,
    /// SPI naming the key at the AP.
    #[arg(long)]
    pub spi: Option<u32>,
    /// Maglev weight asked for.
    #[arg(long)]
    pub weight: Option<u16>,
    /// Policy routing table for answers from the home address.
    #[arg(long)]
    pub table: Option<u32>,
    /// Do not offer route optimization to shims.
    #[arg(long)]
    pub no_route_optimization: bool,
    /// Direct server return: answers to clients without a shim leave this
    /// host natively, from the home address, past the daemon and the
    /// access point (needs nftables for the MSS clamp, and a network that
    /// carries packets from the home address: no NAT, no source filter).
    #[arg(long)]
    pub direct_return: bool,
}

/// The configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Member id.
    pub id: Option<u16>,
    /// Home address (IPv6 or IPv4).
    pub home_address: Option<IpAddr>,
    /// Home addresses, at most one per family (instead of `home_address`).
    pub home_addresses: Option<Vec<IpAddr>>,
    /// The AP endpoint (one AP).
    pub access_point: Option<String>,
    /// The AP endpoints (several APs); not with `access_point`.
    pub access_points: Option<Vec<String>>,
    /// Own endpoint.
    pub care_of: Option<SocketAddr>,
    /// Key.
    pub key: Option<String>,
    /// SPI.
    pub spi: Option<u32>,
    /// Weight.
    pub weight: Option<u16>,
    /// Routing table.
    pub table: Option<u32>,
    /// Route optimization.
    pub route_optimization: Option<bool>,
    /// Registration lifetime in seconds.
    pub lifetime_s: Option<u64>,
    /// Direct server return.
    pub direct_return: Option<bool>,
    /// Shim clients with route-optimization state, at most.
    pub max_correspondents: Option<usize>,
    /// Legacy flows tracked and reported to the access points, at most.
    pub max_flows: Option<usize>,
    /// NAT keepalive interval in seconds (0: off).
    pub nat_keepalive_s: Option<u64>,
    /// Keys every daemon has.
    #[serde(flatten)]
    pub common: CommonConfig,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Member id.
    pub id: u16,
    /// Home addresses.
    pub home_addresses: homeaddr_proto::engine::HomeAddresses,
    /// The APs, in configured order (non-empty, distinct), each at one
    /// endpoint or one per family.
    pub access_points: Vec<ApEndpoints>,
    /// Own endpoint, if given.
    pub care_of: Option<SocketAddr>,
    /// Key bytes.
    pub key: Vec<u8>,
    /// SPI.
    pub spi: u32,
    /// Weight.
    pub weight: u16,
    /// Routing table.
    pub table: u32,
    /// Route optimization.
    pub route_optimization: bool,
    /// Registration lifetime.
    pub lifetime: Duration,
    /// Direct server return.
    pub direct_return: bool,
    /// Shim clients with route-optimization state, at most.
    pub max_correspondents: usize,
    /// Legacy flows tracked and reported, at most.
    pub max_flows: usize,
    /// Behind a NAT: an empty sealed frame on each direct binding session
    /// idle this long (zero: off).
    pub nat_keepalive: Duration,
    /// TUN, MTU, control socket, log level, offload, metrics.
    pub common: CommonSettings,
}

impl DaemonSettings for Settings {
    type Cli = Cli;
    type File = FileConfig;

    fn common_args(cli: &Cli) -> &CommonArgs {
        &cli.common
    }

    fn merge(cli: &Cli, file: FileConfig) -> anyhow::Result<Self> {
        let id = cli
            .id
            .or(file.id)
            .context("no member id: give --id (1-65535, unique in the service)")?;
        if id == 0 {
            bail!("member id 0 is reserved; use 1-65535");
        }
        let key = cli
            .key
            .clone()
            .or(file.key)
            .context("no registration key: give --key (the AP's key)")?;
        let key = homeaddr_daemon::parse_key(&key);
        if key.len() < 16 {
            bail!(
                "the registration key is {} bytes; use at least 16 (e.g. 32 hex digits)",
                key.len()
            );
        }
        let max_correspondents = file
            .max_correspondents
            .unwrap_or(member::DEFAULT_MAX_CORRESPONDENTS);
        if max_correspondents == 0 {
            bail!(
                "max_correspondents = 0 leaves no room for any shim client; use at least 1 (default {})",
                member::DEFAULT_MAX_CORRESPONDENTS
            );
        }
        let max_flows = file.max_flows.unwrap_or(member::DEFAULT_MAX_FLOWS);
        if max_flows == 0 {
            bail!(
                "max_flows = 0 tracks no flow, so no access point could take one over; use at least 1 (default {})",
                member::DEFAULT_MAX_FLOWS
            );
        }
        let route_optimization =
            !cli.no_route_optimization && file.route_optimization.unwrap_or(true);
        let direct_return = cli.direct_return || file.direct_return.unwrap_or(false);
        if direct_return && !route_optimization {
            // Without correspondents the member cannot tell shim clients
            // from legacy ones: their answers would leave natively, and a
            // shim client with a pool address (behind a NAT) gets none.
            bail!(
                "direct return needs route optimization: it keeps a shim client's answers on the tunnel by its correspondent entry; drop --no-route-optimization (route_optimization = false) or --direct-return"
            );
        }
        let common = CommonSettings::resolve(
            &cli.common,
            &file.common,
            &format!("member-{id}"),
            &format!("ha-m{id}"),
        )?;
        Ok(Self {
            id,
            home_addresses: homeaddr_daemon::common::home_addresses(
                &cli.home_address,
                file.home_address,
                file.home_addresses.as_deref(),
            )?,
            access_points: access_points(
                &cli.access_point,
                file.access_point.as_deref(),
                file.access_points.as_deref(),
            )?,
            care_of: cli.care_of.or(file.care_of),
            key,
            spi: cli.spi.or(file.spi).unwrap_or(member::DEFAULT_SPI),
            weight: cli.weight.or(file.weight).unwrap_or(member::DEFAULT_WEIGHT),
            table: cli.table.or(file.table).unwrap_or(4790),
            route_optimization,
            lifetime: file.lifetime_s.map_or(member::DEFAULT_LIFETIME, |s| {
                Duration::from_secs(s.clamp(8, 3600))
            }),
            direct_return,
            max_correspondents,
            max_flows,
            nat_keepalive: file
                .nat_keepalive_s
                .map_or(homeaddr_proto::engine::DEFAULT_NAT_KEEPALIVE, |s| {
                    Duration::from_secs(s.min(3600))
                }),
            common,
        })
    }
}

/// An access point from text: `[IPv6]:PORT` or `IPv4:PORT`, or one of
/// each family comma-separated; real addresses and ports (the error says
/// how to write one).
pub fn parse_access_point(text: &str) -> Result<ApEndpoints, String> {
    ApEndpoints::parse(text)
}

/// The access points: the `--access-point` flags if any, else the file's
/// `access_point` (`one`) or `access_points` (`list`), exactly one of
/// them; none, a bad address or one given twice is an error.
fn access_points(
    flags: &[ApEndpoints],
    one: Option<&str>,
    list: Option<&[String]>,
) -> anyhow::Result<Vec<ApEndpoints>> {
    let from_file: Vec<&str> = match (one, list) {
        (Some(_), Some(_)) => bail!(
            "the configuration file gives both access_point and access_points: keep one (access_points = [\"...\", ...] for several)"
        ),
        (Some(one), None) => vec![one],
        (None, Some(list)) => list.iter().map(String::as_str).collect(),
        (None, None) => Vec::new(),
    };
    let aps = if flags.is_empty() {
        from_file
            .iter()
            .map(|t| parse_access_point(t).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        flags.to_vec()
    };
    match member::check_access_points(&aps) {
        Ok(()) => Ok(aps),
        Err(member::MemberConfigError::NoAccessPoint) => bail!(
            "no access point: give --access-point [ADDR]:PORT (repeat it for several), or access_point / access_points in the configuration file"
        ),
        Err(e) => bail!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_settings_are_named() {
        let e = Settings::merge_error(&[], FileConfig::default());
        assert!(e.contains("--id"), "{e}");
        let e = Settings::merge_error(
            &["--id", "1", "--key", "0123456789abcdef"],
            FileConfig::default(),
        );
        assert!(e.contains("--home-address"), "{e}");
        let s = Settings::from_args(
            &[
                "--id",
                "3",
                "--key",
                "0123456789abcdef",
                "--home-address",
                "2001:db8::1",
                "--access-point",
                "[2001:db8::2]:4790",
            ],
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(
            (s.common.tun.as_str(), s.table, s.common.mtu),
            ("ha-m3", 4790, 1420)
        );
        assert_eq!(
            s.common.control,
            std::path::Path::new("/run/homeaddr/member-3.sock")
        );
        assert_eq!(s.max_correspondents, member::DEFAULT_MAX_CORRESPONDENTS);
    }

    #[test]
    fn max_correspondents_comes_from_the_file_and_zero_is_refused() {
        let args = [
            "--id",
            "3",
            "--key",
            "0123456789abcdef",
            "--home-address",
            "2001:db8::1",
            "--access-point",
            "[2001:db8::2]:4790",
        ];
        let file = FileConfig {
            max_correspondents: Some(100),
            ..FileConfig::default()
        };
        let s = Settings::from_args(&args, file).unwrap();
        assert_eq!(s.max_correspondents, 100);
        let file = FileConfig {
            max_correspondents: Some(0),
            ..FileConfig::default()
        };
        let e = Settings::merge_error(&args, file);
        assert!(e.contains("max_correspondents"), "{e}");
    }

    #[test]
    fn direct_return_without_route_optimization_is_refused() {
        let mut args = BASE.to_vec();
        args.extend(["--access-point", "[2001:db8::2]:4790", "--direct-return"]);
        let s = Settings::from_args(&args, FileConfig::default()).unwrap();
        assert!(s.direct_return && s.route_optimization);
        let file = FileConfig {
            route_optimization: Some(false),
            ..FileConfig::default()
        };
        let e = Settings::merge_error(&args, file);
        assert!(e.contains("direct return needs route optimization"), "{e}");
        let mut no_ro = args.clone();
        no_ro.push("--no-route-optimization");
        let e = Settings::merge_error(&no_ro, FileConfig::default());
        assert!(e.contains("drop --no-route-optimization"), "{e}");
    }

    const BASE: [&str; 6] = [
        "--id",
        "3",
        "--key",
        "0123456789abcdef",
        "--home-address",
        "2001:db8::1",
    ];

    fn file(one: Option<&str>, list: Option<&[&str]>) -> FileConfig {
        FileConfig {
            access_point: one.map(str::to_string),
            access_points: list.map(|l| l.iter().map(|s| s.to_string()).collect()),
            ..FileConfig::default()
        }
    }

    fn aps(s: &Settings) -> Vec<String> {
        s.access_points.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn access_points_come_from_repeated_flags_or_one_of_two_file_keys() {
        let mut args = BASE.to_vec();
        args.extend(["--access-point", "[2001:db8::a]:4790"]);
        args.extend(["--access-point", "198.18.0.1:4790"]);
        let s = Settings::from_args(&args, file(Some("[2001:db8::f]:1"), None)).unwrap();
        assert_eq!(
            aps(&s),
            ["[2001:db8::a]:4790", "198.18.0.1:4790"],
            "flags win"
        );
        let s = Settings::from_args(&BASE, file(Some("[2001:db8::a]:4790"), None)).unwrap();
        assert_eq!(aps(&s), ["[2001:db8::a]:4790"]);
        let list = ["[2001:db8::a]:4790", "[2001:db8::b]:4790"];
        let s = Settings::from_args(&BASE, file(None, Some(&list))).unwrap();
        assert_eq!(aps(&s), list);
        assert_eq!(s.max_flows, member::DEFAULT_MAX_FLOWS);
        // One AP at one endpoint per family, next to another AP.
        let mut args = BASE.to_vec();
        args.extend(["--access-point", "198.18.0.1:4790,[2001:db8::a]:4790"]);
        args.extend(["--access-point", "[2001:db8::b]:4790"]);
        let s = Settings::from_args(&args, FileConfig::default()).unwrap();
        assert_eq!(
            aps(&s),
            ["198.18.0.1:4790,[2001:db8::a]:4790", "[2001:db8::b]:4790"]
        );
    }

    #[test]
    fn bad_access_point_settings_are_refused_with_what_to_do() {
        let e = Settings::merge_error(&BASE, FileConfig::default());
        assert!(
            e.contains("no access point") && e.contains("--access-point"),
            "{e}"
        );
        let e = Settings::merge_error(&BASE, file(None, Some(&[])));
        assert!(e.contains("no access point"), "{e}");
        let e = Settings::merge_error(
            &BASE,
            file(Some("[2001:db8::a]:4790"), Some(&["[2001:db8::b]:4790"])),
        );
        assert!(e.contains("both access_point and access_points"), "{e}");
        let twice = [
            "[2001:db8::a]:4790",
            "[2001:db8::b]:4790",
            "[2001:db8::a]:4790",
        ];
        let e = Settings::merge_error(&BASE, file(None, Some(&twice)));
        assert!(e.contains("[2001:db8::a]:4790 is given twice"), "{e}");
        // An endpoint shared by two APs is one AP given twice.
        let shared = ["198.18.0.1:4790,[2001:db8::a]:4790", "[2001:db8::a]:4790"];
        let e = Settings::merge_error(&BASE, file(None, Some(&shared)));
        assert!(e.contains("given twice"), "{e}");
        let e = Settings::merge_error(&BASE, file(Some("198.18.0.1:4790,198.18.0.2:4790"), None));
        assert!(e.contains("two IPv4 endpoints"), "{e}");
        let e = Settings::merge_error(&BASE, file(Some("2001:db8::a:4790"), None));
        assert!(e.contains("in brackets"), "{e}");
        let e = Settings::merge_error(&BASE, file(None, Some(&["[::]:4790"])));
        assert!(e.contains("unicast"), "{e}");
        assert!(parse_access_point("[2001:db8::a]:0").is_err());
        // The flags are parsed the same way (clap reports the message).
        let mut args = vec!["daemon"];
        args.extend(BASE);
        args.extend(["--access-point", "2001:db8::a"]);
        let e = <Cli as clap::Parser>::try_parse_from(&args).unwrap_err();
        assert!(e.to_string().contains("in brackets"), "{e}");
        let mut args = BASE.to_vec();
        args.extend(["--access-point", "[2001:db8::a]:4790"]);
        let zero = FileConfig {
            max_flows: Some(0),
            ..FileConfig::default()
        };
        assert!(Settings::merge_error(&args, zero).contains("max_flows"));
    }
}
