//! Shim configuration: a TOML file, overridden by flags.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use homeaddr_daemon::common::{CommonArgs, CommonConfig, CommonSettings, DaemonSettings};
use homeaddr_proto::engine::ApEndpoints;
use homeaddr_proto::engine::shim::{DEFAULT_KEEPALIVE, DEFAULT_NAT_KEEPALIVE};
use serde::Deserialize;

/// Command line of `homeaddr-shim`.
#[derive(Debug, Parser)]
#[command(
    name = "homeaddr-shim",
    version,
    about = "homeaddr client shim: route optimization to the home address for unmodified applications"
)]
pub struct Cli {
    /// Flags every daemon has.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The service's home address this shim serves: IPv6 or IPv4 (one).
    #[arg(long)]
    pub home_address: Option<IpAddr>,
    /// The access point's tunnel endpoint, or one per family comma-separated
    /// (IPV4:PORT,[IPV6]:PORT: the shim follows its host across families);
    /// or use --dns-server and --service.
    #[arg(long, value_parser = ApEndpoints::parse)]
    pub access_point: Option<ApEndpoints>,
    /// A homeaddr-dns server (or resolver) to discover the nearest access point.
    #[arg(long)]
    pub dns_server: Option<SocketAddr>,
    /// The service name to discover.
    #[arg(long)]
    pub service: Option<String>,
    /// Local tunnel endpoint (default: the address that reaches the AP, an
    /// ephemeral port, followed when the host's address changes).
    #[arg(long)]
    pub local: Option<SocketAddr>,
    /// Never accept binding updates (everything through the AP).
    #[arg(long)]
    pub no_route_optimization: bool,
}

/// The configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Home address (IPv6 or IPv4).
    pub home_address: Option<IpAddr>,
    /// AP endpoint, or one per family comma-separated.
    pub access_point: Option<String>,
    /// DNS server for discovery.
    pub dns_server: Option<SocketAddr>,
    /// Service name.
    pub service: Option<String>,
    /// Local endpoint.
    pub local: Option<SocketAddr>,
    /// Route optimization.
    pub route_optimization: Option<bool>,
    /// Seconds between sealed keepalives to the AP while there are flows
    /// (default 100: a third of the AP's shim idle time).
    pub keepalive_s: Option<u64>,
    /// Seconds between keepalives while behind a NAT (default 25; 0: use
    /// `keepalive_s` there too).
    pub nat_keepalive_s: Option<u64>,
    /// Keys every daemon has.
    #[serde(flatten)]
    pub common: CommonConfig,
}

/// Where the AP endpoint comes from.
#[derive(Debug, Clone)]
pub enum AccessPointSource {
    /// Given: one endpoint, or one per family.
    Fixed(ApEndpoints),
    /// From the discovery record of `service` at `server`.
    Discover {
        /// DNS server.
        server: SocketAddr,
        /// Service name.
        service: String,
    },
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Home address, as the engine holds it (IPv4 IPv4-mapped).
    pub home_address: Ipv6Addr,
    /// AP endpoint source.
    pub access_point: AccessPointSource,
    /// Local endpoint (`None`: from the route to the AP, and followed).
    pub local: Option<SocketAddr>,
    /// Route optimization.
    pub route_optimization: bool,
    /// Keepalive interval towards the AP.
    pub keepalive: Duration,
    /// Keepalive interval while behind a NAT (zero: `keepalive`).
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
        let file_ap = file
            .access_point
            .as_deref()
            .map(ApEndpoints::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("access_point in the configuration file: {e}"))?;
        let access_point = match (
            cli.access_point.or(file_ap),
            cli.dns_server.or(file.dns_server),
        ) {
            (Some(ap), _) => AccessPointSource::Fixed(ap),
            (None, Some(server)) => AccessPointSource::Discover {
                server,
                service: cli
                    .service
                    .clone()
                    .or(file.service)
                    .context("--dns-server needs --service: the service name to discover")?,
            },
            (None, None) => bail!(
                "no access point: give --access-point [ADDR]:PORT (or IPV4:PORT,[IPV6]:PORT, one per family), or --dns-server and --service to discover it"
            ),
        };
        let keepalive = match file.keepalive_s {
            None => DEFAULT_KEEPALIVE,
            Some(s @ 1..=86_400) => Duration::from_secs(s),
            Some(s) => bail!(
                "keepalive_s = {s}: give 1 to 86400 seconds (default {}; keep it below the AP's shim idle time)",
                DEFAULT_KEEPALIVE.as_secs()
            ),
        };
        let nat_keepalive = match file.nat_keepalive_s {
            None => DEFAULT_NAT_KEEPALIVE,
            Some(s @ 0..=86_400) => Duration::from_secs(s),
            Some(s) => bail!(
                "nat_keepalive_s = {s}: give 0 to 86400 seconds (default {}; keep it below the NAT's UDP timeout)",
                DEFAULT_NAT_KEEPALIVE.as_secs()
            ),
        };
        let common = CommonSettings::resolve(&cli.common, &file.common, "shim", "ha-shim")?;
        Ok(Self {
            home_address: homeaddr_proto::engine::HomeAddresses::from_list(
                &cli.home_address
                    .or(file.home_address)
                    .into_iter()
                    .collect::<Vec<_>>(),
            )
            .map_err(|e| match e {
                homeaddr_proto::engine::HomeAddressError::None => anyhow::anyhow!(
                    "no home address: give --home-address (the service's address, IPv6 or IPv4)"
                ),
                e => anyhow::anyhow!("--home-address: {e}"),
            })?
            .primary,
            access_point,
            local: cli.local.or(file.local),
            route_optimization: !cli.no_route_optimization
                && file.route_optimization.unwrap_or(true),
            keepalive,
            nat_keepalive,
            common,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_point_is_given_or_discovered() {
        let e = Settings::merge_error(&["--home-address", "2001:db8::1"], FileConfig::default());
        assert!(
            e.contains("--access-point") && e.contains("--dns-server"),
            "{e}"
        );
        let e = Settings::merge_error(
            &["--home-address", "2001:db8::1", "--dns-server", "[::1]:53"],
            FileConfig::default(),
        );
        assert!(e.contains("--service"), "{e}");
        let s = Settings::from_args(
            &[
                "--home-address",
                "2001:db8::1",
                "--dns-server",
                "[::1]:53",
                "--service",
                "svc.example",
            ],
            FileConfig::default(),
        )
        .unwrap();
        assert!(matches!(s.access_point, AccessPointSource::Discover { .. }));
        assert_eq!(s.keepalive, DEFAULT_KEEPALIVE);
    }

    #[test]
    fn keepalive_is_in_seconds_and_checked() {
        let args = [
            "--home-address",
            "2001:db8::1",
            "--access-point",
            "[::1]:4790",
        ];
        let file = |s| FileConfig {
            keepalive_s: Some(s),
            ..FileConfig::default()
        };
        let s = Settings::from_args(&args, file(30)).unwrap();
        assert_eq!(s.keepalive, Duration::from_secs(30));
        let e = Settings::merge_error(&args, file(0));
        assert!(e.contains("keepalive_s = 0"), "{e}");
    }

    #[test]
    fn access_point_takes_one_endpoint_per_family() {
        let s = Settings::from_args(
            &[
                "--home-address",
                "fd00::1",
                "--access-point",
                "198.18.0.10:4790,[fd00::10]:4790",
            ],
            FileConfig::default(),
        )
        .unwrap();
        let AccessPointSource::Fixed(aps) = s.access_point else {
            panic!("given, not discovered");
        };
        assert_eq!(aps.to_string(), "198.18.0.10:4790,[fd00::10]:4790");
        let e = <Cli as clap::Parser>::try_parse_from([
            "homeaddr-shim",
            "--home-address",
            "fd00::1",
            "--access-point",
            "198.18.0.10:4790,198.18.0.11:4790",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("two IPv4 endpoints"), "{e}");
        let file = FileConfig {
            access_point: Some("[fd00::10]:4790,[fd00::11]:4790".into()),
            ..FileConfig::default()
        };
        let e = Settings::merge_error(&["--home-address", "fd00::1"], file);
        assert!(
            e.contains("access_point in the configuration file") && e.contains("two IPv6"),
            "{e}"
        );
    }
}
