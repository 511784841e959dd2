//! The settings every daemon has: one set of flags ([`CommonArgs`], put
//! into each daemon's command line with `#[command(flatten)]`), one set of
//! TOML keys ([`CommonConfig`], `#[serde(flatten)]` into each daemon's file
//! struct) and one set of defaults ([`CommonSettings::resolve`]). A flag
//! beats the file, the file beats the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use homeaddr_proto::crypto::Protection;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Flags of every daemon.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// TOML configuration file (flags override it).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// TUN device name.
    #[arg(long)]
    pub tun: Option<String>,
    /// Inner MTU (path MTU minus 80 bytes of tunnel overhead).
    #[arg(long)]
    pub mtu: Option<u16>,
    /// Control socket path.
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long)]
    pub log_level: Option<String>,
    /// Serve Prometheus metrics on [ADDR]:PORT (e.g. [::1]:9470 or :9470); off by default.
    #[arg(long, value_name = "[ADDR]:PORT", value_parser = crate::metrics::parse_listen)]
    pub metrics: Option<SocketAddr>,
    /// Disable TUN offload (TSO/GRO).
    #[arg(long)]
    pub no_offload: bool,
    /// How tunnel frames are protected: `encrypt` (AES-256-GCM, the
    /// default) or `integrity` (authenticated, payload in the clear: for
    /// trusted networks). Every node of a service should use the same;
    /// an `encrypt` node refuses frames that are not encrypted.
    #[arg(long, value_name = "encrypt|integrity")]
    pub protection: Option<Protection>,
    /// After traffic, keep polling the TUN and the sockets for this many
    /// microseconds before sleeping (lower latency, a core's worth of CPU
    /// while traffic flows); 0 turns it off, for shared hosts. Default 200.
    #[arg(long, value_name = "MICROSECONDS", value_parser = crate::busy::parse_window_us)]
    pub busy_poll_us: Option<std::time::Duration>,
}

/// Keys of every daemon's configuration file. Unknown keys are left to
/// the daemon's own struct (which denies them), so this one can also be
/// read alone.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CommonConfig {
    /// TUN device name.
    pub tun: Option<String>,
    /// Inner MTU.
    pub mtu: Option<u16>,
    /// Control socket path.
    pub control: Option<PathBuf>,
    /// Log level.
    pub log_level: Option<String>,
    /// TUN offload.
    pub offload: Option<bool>,
    /// Prometheus endpoint, `[ADDR]:PORT`.
    pub metrics: Option<String>,
    /// Frame protection, `encrypt` or `integrity`.
    pub protection: Option<String>,
    /// Busy-poll window after traffic, microseconds (0: off).
    pub busy_poll_us: Option<u64>,
}

/// The common settings, resolved and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommonSettings {
    /// The configuration file, if one was given (a reload reads it again).
    pub config: Option<PathBuf>,
    /// TUN device name.
    pub tun: String,
    /// Inner MTU.
    pub mtu: u16,
    /// Control socket path.
    pub control: PathBuf,
    /// Log level.
    pub log_level: String,
    /// TUN offload.
    pub offload: bool,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Frame protection.
    pub protection: Protection,
    /// Busy-poll window after traffic (zero: off).
    pub busy_poll: std::time::Duration,
}

/// Where the control sockets live: `/run/homeaddr/<name>.sock`.
pub const RUN_DIR: &str = "/run/homeaddr";

impl CommonSettings {
    /// Flags over file over defaults. `instance` names the daemon's
    /// defaults: control socket `/run/homeaddr/<instance>.sock`;
    /// `default_tun` is the TUN name without `--tun`.
    pub fn resolve(
        args: &CommonArgs,
        file: &CommonConfig,
        instance: &str,
        default_tun: &str,
    ) -> anyhow::Result<Self> {
        let metrics = match (&args.metrics, &file.metrics) {
            (Some(m), _) => Some(*m),
            (None, Some(m)) => Some(
                crate::metrics::parse_listen(m)
                    .map_err(|e| anyhow::anyhow!("config key metrics: {e}"))?,
            ),
            (None, None) => None,
        };
        let protection = match (args.protection, &file.protection) {
            (Some(p), _) => p,
            (None, Some(p)) => p
                .parse()
                .map_err(|e: String| anyhow::anyhow!("config key protection: {e}"))?,
            (None, None) => Protection::default(),
        };
        let busy_poll = match (args.busy_poll_us, file.busy_poll_us) {
            (Some(w), _) => w,
            (None, Some(us)) => crate::busy::window_from_us(us)
                .map_err(|e| anyhow::anyhow!("config key busy_poll_us: {e}"))?,
            (None, None) => crate::busy::DEFAULT_WINDOW,
        };
        Ok(Self {
            config: args.config.clone(),
            tun: args
                .tun
                .clone()
                .or(file.tun.clone())
                .unwrap_or_else(|| default_tun.to_string()),
            mtu: crate::inner_mtu(args.mtu.or(file.mtu))?,
            control: args
                .control
                .clone()
                .or(file.control.clone())
                .unwrap_or_else(|| Path::new(RUN_DIR).join(format!("{instance}.sock"))),
            log_level: args
                .log_level
                .clone()
                .or(file.log_level.clone())
                .unwrap_or_else(|| "info".into()),
            offload: !args.no_offload && file.offload.unwrap_or(true),
            metrics,
            protection,
            busy_poll,
        })
    }
}

/// A daemon's validated settings: its command line and its file merged,
/// a flag beating the file.
pub trait DaemonSettings: Sized {
    /// The command line (which flattens a [`CommonArgs`]).
    type Cli: clap::Parser;
    /// The configuration file (which flattens a [`CommonConfig`]).
    type File: DeserializeOwned + Default;

    /// The flags every daemon has, within `cli`.
    fn common_args(cli: &Self::Cli) -> &CommonArgs;

    /// Merge a parsed file and the flags.
    fn merge(cli: &Self::Cli, file: Self::File) -> anyhow::Result<Self>;

    /// Merge the file (if any) and the flags; flags win.
    fn from_cli(cli: &Self::Cli) -> anyhow::Result<Self> {
        Self::merge(cli, load_config(Self::common_args(cli).config.as_deref())?)
    }

    /// Merge `file` and the command line `args` (without the program
    /// name), for the daemons' tests.
    fn from_args(args: &[&str], file: Self::File) -> anyhow::Result<Self> {
        let cli = <Self::Cli as clap::Parser>::parse_from(
            std::iter::once("daemon").chain(args.iter().copied()),
        );
        Self::merge(&cli, file)
    }

    /// What [`from_args`](Self::from_args) refuses `args` and `file` with,
    /// for the daemons' tests; panics if it accepts them.
    fn merge_error(args: &[&str], file: Self::File) -> String {
        match Self::from_args(args, file) {
            Ok(_) => panic!("{args:?} were accepted"),
            Err(e) => e.to_string(),
        }
    }
}

/// Read the daemon's configuration file `T` (which flattens a
/// [`CommonConfig`]), or `T::default()` without one.
pub fn load_config<T: DeserializeOwned + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
    parse_config(path, &text)
}

/// Parse a daemon's configuration text (see [`load_config`]).
///
/// The keys of a flattened struct reach serde without their position, so
/// an error in one of them would name no line: the common keys are read
/// alone first (with positions), and an unknown key is looked up in the
/// text.
pub fn parse_config<T: DeserializeOwned>(path: &Path, text: &str) -> anyhow::Result<T> {
    crate::parse_toml::<CommonConfig>(path, text)?;
    crate::parse_toml::<T>(path, text).map_err(|e| {
        let message = e.to_string();
        let unknown = message
            .split_once("unknown field `")
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(key, _)| key);
        let line = unknown.and_then(|key| {
            text.lines().position(|l| {
                l.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|r| r.trim_start().starts_with('='))
            })
        });
        match line {
            Some(n) if message.contains(&format!("{}:1:", path.display())) => anyhow::anyhow!(
                "{}",
                message.replacen(
                    &format!("{}:1:", path.display()),
                    &format!("{}:{}:", path.display(), n + 1),
                    1
                )
            ),
            _ => e,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        id: Option<u16>,
        #[serde(flatten)]
        common: CommonConfig,
    }

    fn args(a: &[&str]) -> CommonArgs {
        Cli::parse_from(std::iter::once("d").chain(a.iter().copied())).common
    }

    fn file(text: &str) -> anyhow::Result<File> {
        parse_config(Path::new("d.toml"), text)
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let f = file("id = 1\ntun = \"from-file\"\nmtu = 1400\nmetrics = \":9470\"\n").unwrap();
        assert_eq!(f.id, Some(1));
        let s = CommonSettings::resolve(
            &args(&["--tun", "from-flag"]),
            &f.common,
            "member-1",
            "ha-m1",
        )
        .unwrap();
        assert_eq!(s.tun, "from-flag");
        assert_eq!(s.mtu, 1400);
        assert_eq!(s.metrics.map(|m| m.port()), Some(9470));
        assert_eq!(s.control, Path::new("/run/homeaddr/member-1.sock"));
        let d =
            CommonSettings::resolve(&args(&[]), &CommonConfig::default(), "ap", "ha-ap").unwrap();
        assert_eq!(
            d,
            CommonSettings {
                config: None,
                tun: "ha-ap".into(),
                mtu: 1420,
                control: "/run/homeaddr/ap.sock".into(),
                log_level: "info".into(),
                offload: true,
                metrics: None,
                protection: Protection::Encrypt,
                busy_poll: crate::busy::DEFAULT_WINDOW,
            }
        );
        let s = CommonSettings::resolve(
            &args(&["--no-offload", "--metrics", "[::1]:1"]),
            &file("offload = true\nmetrics = \":2\"\n").unwrap().common,
            "ap",
            "ha-ap",
        )
        .unwrap();
        assert!(!s.offload);
        assert_eq!(s.metrics.map(|m| m.port()), Some(1));
        let s = CommonSettings::resolve(
            &args(&[]),
            &file("protection = \"integrity\"\n").unwrap().common,
            "ap",
            "ha-ap",
        )
        .unwrap();
        assert_eq!(s.protection, Protection::Integrity);
        let s = CommonSettings::resolve(
            &args(&["--protection", "encrypt"]),
            &file("protection = \"integrity\"\n").unwrap().common,
            "ap",
            "ha-ap",
        )
        .unwrap();
        assert_eq!(s.protection, Protection::Encrypt, "the flag wins");
        let e = CommonSettings::resolve(
            &args(&[]),
            &file("protection = \"none\"\n").unwrap().common,
            "ap",
            "ha-ap",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("protection") && e.contains("integrity"), "{e}");
    }

    #[test]
    fn busy_poll_window_from_flag_file_or_default() {
        let resolve = |a: &[&str], f: &str| {
            CommonSettings::resolve(&args(a), &file(f).unwrap().common, "ap", "ha-ap")
        };
        let us = |s: CommonSettings| s.busy_poll.as_micros();
        assert_eq!(us(resolve(&[], "").unwrap()), 200);
        assert_eq!(us(resolve(&[], "busy_poll_us = 0\n").unwrap()), 0);
        assert_eq!(
            us(resolve(&["--busy-poll-us", "50"], "busy_poll_us = 0\n").unwrap()),
            50,
            "the flag wins"
        );
        let e = resolve(&[], "busy_poll_us = 99999\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("busy_poll_us") && e.contains("at most"), "{e}");
        let e = Cli::try_parse_from(["d", "--busy-poll-us", "soon"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("microseconds"), "{e}");
    }

    #[test]
    fn errors_in_common_keys_name_the_line() {
        let e = file("id = 1\n\nmtu = \"big\"\n").unwrap_err().to_string();
        assert!(e.starts_with("invalid config d.toml:3:"), "{e}");
        let e = file("id = 1\nbogus = 2\n").unwrap_err().to_string();
        assert!(e.starts_with("invalid config d.toml:2:"), "{e}");
        assert!(e.contains("bogus"), "{e}");
        let e = CommonSettings::resolve(
            &args(&[]),
            &file("metrics = \"9470\"\n").unwrap().common,
            "ap",
            "ha-ap",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("metrics") && e.contains("[ADDR]:PORT"), "{e}");
        let e = CommonSettings::resolve(
            &args(&["--mtu", "600"]),
            &CommonConfig::default(),
            "ap",
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("1280"), "{e}");
    }
}

/// The home addresses from `--home-address` (given once per family) or,
/// without the flag, the file's `home_address = "x"` or
/// `home_addresses = ["x", "y"]` (not both): at most one IPv6 and one IPv4
/// address, at least one. `flag_name` and the errors name what to fix.
pub fn home_addresses(
    cli: &[std::net::IpAddr],
    file_one: Option<std::net::IpAddr>,
    file_many: Option<&[std::net::IpAddr]>,
) -> anyhow::Result<homeaddr_proto::engine::HomeAddresses> {
    use homeaddr_proto::engine::{HomeAddressError, HomeAddresses};
    let list: Vec<std::net::IpAddr> = if !cli.is_empty() {
        cli.to_vec()
    } else {
        match (file_one, file_many) {
            (Some(_), Some(_)) => anyhow::bail!(
                "the config file has both home_address and home_addresses: keep one \
                 (home_addresses = [\"IPv6\", \"IPv4\"] for both families)"
            ),
            (Some(a), None) => vec![a],
            (None, Some(many)) => many.to_vec(),
            (None, None) => Vec::new(),
        }
    };
    HomeAddresses::from_list(&list).map_err(|e| match e {
        HomeAddressError::None => anyhow::anyhow!(
            "no home address: give --home-address (IPv6 and/or IPv4, once per family) \
             or home_address / home_addresses in the config file"
        ),
        e => anyhow::anyhow!("--home-address / home_addresses: {e}"),
    })
}

#[cfg(test)]
mod home_address_tests {
    use super::home_addresses;

    #[test]
    fn one_per_family_from_the_flags_or_the_file() {
        let v6 = "fd00:4841:aaaa::1".parse().unwrap();
        let v4 = "198.19.0.1".parse().unwrap();
        let both = home_addresses(&[v4, v6], None, None).unwrap();
        assert_eq!(both.all(), vec![v6, v4]);
        // Flags win over the file.
        assert_eq!(
            home_addresses(&[v4], Some(v6), None).unwrap().all(),
            vec![v4]
        );
        assert_eq!(home_addresses(&[], Some(v6), None).unwrap().all(), vec![v6]);
        assert_eq!(
            home_addresses(&[], None, Some(&[v6, v4])).unwrap().all(),
            vec![v6, v4]
        );
        let e = home_addresses(&[], Some(v6), Some(&[v4]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("keep one"), "{e}");
        let e = home_addresses(&[], None, None).unwrap_err().to_string();
        assert!(e.contains("--home-address"), "{e}");
        let e = home_addresses(&[v4, "198.19.0.2".parse().unwrap()], None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("two IPv4"), "{e}");
    }
}
