//! # homeaddr-daemon: what the three daemons share
//!
//! Layer: I/O shell, between the engines (`homeaddr-proto`) with the
//! batched I/O (`homeaddr-io`) below, and the binaries above. It holds no
//! protocol logic: [`driver`] runs any [`Engine`](homeaddr_proto::engine::Engine)
//! over a TUN device and UDP sockets; [`control`] is the local control
//! socket; [`metrics`] the Prometheus endpoint; [`netcfg`] sets up routes
//! and undoes them; [`routes`] changes host routes at run time over
//! rtnetlink; [`common`] holds the flags, file keys and defaults of
//! every daemon; [`shell`] is the one run loop around a daemon's
//! [`Role`](shell::Role); this module loads configuration files, seeds
//! engines and starts logging.

pub mod busy;
pub mod common;
pub mod control;
pub mod driver;
pub mod metrics;
pub mod netcfg;
pub mod netwatch;
pub mod routes;
pub mod shell;

use std::path::Path;

use serde::de::DeserializeOwned;

/// Read and parse a TOML configuration file. The error names the file and,
/// for syntax and type errors, the line, column and what was expected.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
    parse_toml(path, &text)
}

/// Parse TOML text that came from `path` (for error messages).
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> anyhow::Result<T> {
    toml::from_str(text).map_err(|e| {
        let location = e
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!(":{line}")
            })
            .unwrap_or_default();
        anyhow::anyhow!(
            "invalid config {}{location}: {}",
            path.display(),
            e.message()
        )
    })
}

/// 32 bytes from the OS for an engine's random generator.
pub fn random_seed() -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(seed)
}

/// Start logging to stderr at `level` (`error`..`trace`, or a full
/// `tracing` filter such as `homeaddr=debug`); `RUST_LOG` wins if set.
pub fn init_logging(level: &str) -> anyhow::Result<()> {
    init_reloadable_logging(level).map(drop)
}

/// Changes the log level of a running daemon (config reload).
pub struct LogLevel {
    set: Box<dyn Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send + Sync>,
}

impl std::fmt::Debug for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogLevel")
    }
}

impl LogLevel {
    /// Check `level` without applying it.
    pub fn parse(level: &str) -> anyhow::Result<tracing_subscriber::EnvFilter> {
        tracing_subscriber::EnvFilter::try_new(level).map_err(|e| {
            anyhow::anyhow!(
                "invalid log level {level:?}: {e} (use error, warn, info, debug or trace)"
            )
        })
    }

    /// Log at `level` from now on, unless `RUST_LOG` is set (it wins).
    pub fn set(&self, level: &str) -> anyhow::Result<()> {
        let filter = Self::parse(level)?;
        if std::env::var("RUST_LOG").is_ok_and(|f| !f.is_empty()) {
            return Ok(());
        }
        (self.set)(filter).map_err(|e| anyhow::anyhow!("cannot change the log level: {e}"))
    }
}

/// As [`init_logging`], returning a handle to change the level later.
pub fn init_reloadable_logging(level: &str) -> anyhow::Result<LogLevel> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => f,
        _ => level.to_string(),
    };
    let filter = LogLevel::parse(&filter)?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter_reloading();
    let handle = builder.reload_handle();
    builder.init();
    Ok(LogLevel {
        set: Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())),
    })
}

/// The default inner MTU: a 1500-byte path minus the 80 bytes of tunnel
/// overhead (IPv6 40, UDP 8, frame header 16, tag 16).
pub const DEFAULT_INNER_MTU: u16 = 1420;

/// The inner MTU a daemon is configured with (default
/// [`DEFAULT_INNER_MTU`]), checked.
pub fn inner_mtu(configured: Option<u16>) -> anyhow::Result<u16> {
    let mtu = configured.unwrap_or(DEFAULT_INNER_MTU);
    if !(1280..=65000).contains(&mtu) {
        anyhow::bail!(
            "mtu {mtu} is out of range: the inner MTU must be at least 1280 (IPv6 minimum) and at most 65000 \
             (it is the path MTU minus 80 bytes of tunnel overhead)"
        );
    }
    Ok(mtu)
}

/// Parse a key given in hex (`0x...` or plain) or as text.
pub fn parse_key(s: &str) -> Vec<u8> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    if hex.len() >= 32 && hex.len().is_multiple_of(2) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        (0..hex.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
            .collect()
    } else {
        s.as_bytes().to_vec()
    }
}

/// The daemons' tokio runtime: one thread by default, which measured
/// faster than two workers on a 2-core machine (no cross-thread wake-ups
/// between the TUN, UDP and timer tasks); `HOMEADDR_THREADS=N` for more.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    match std::env::var("HOMEADDR_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
    {
        Some(n) if n > 1 => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
}

/// Rate-limited logging of dropped packets: at most one line per
/// interval, with the drops of that interval by reason.
#[derive(Debug)]
pub struct DropLog {
    last: homeaddr_proto::engine::DropCounters,
    last_log: std::time::Instant,
    interval: std::time::Duration,
}

impl Default for DropLog {
    fn default() -> Self {
        Self::new(std::time::Duration::from_secs(10))
    }
}

impl DropLog {
    /// Log at most once per `interval`.
    pub fn new(interval: std::time::Duration) -> Self {
        Self {
            last: Default::default(),
            last_log: std::time::Instant::now(),
            interval,
        }
    }

    /// Look at the engine's counters; log what was dropped since the last line.
    pub fn observe(&mut self, drops: &homeaddr_proto::engine::DropCounters) {
        let now = std::time::Instant::now();
        if now < self.last_log + self.interval {
            return;
        }
        let delta: Vec<String> = drops
            .iter()
            .zip(self.last.iter())
            // The kernel's own router solicitations and MLD reports on our
            // TUN: counted (status, metrics), never a warning.
            .filter(|((reason, _), _)| *reason != homeaddr_proto::engine::DropReason::NotTunnelled)
            .filter(|((_, n), (_, before))| n > before)
            .map(|((reason, n), (_, before))| format!("{}={}", reason.name(), n - before))
            .collect();
        if !delta.is_empty() {
            tracing::warn!(
                seconds = self.interval.as_secs(),
                dropped = %delta.join(" "),
                "dropped packets (malformed, spoofed, unknown peers...): see status counters"
            );
        }
        self.last = drops.clone();
        self.last_log = now;
    }
}

/// Wait for SIGINT or SIGTERM.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct C {
        port: u16,
    }

    #[test]
    fn config_errors_name_file_and_line() {
        let e = parse_toml::<C>(Path::new("x.toml"), "\n\nport = \"no\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid config x.toml:3:"), "{e}");
        let e = parse_toml::<C>(Path::new("x.toml"), "port = 1\nbogus = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml:2") && e.contains("bogus"), "{e}");
    }

    #[test]
    fn keys_parse_as_hex_or_text() {
        assert_eq!(parse_key("secret"), b"secret".to_vec());
        let hex = "00112233445566778899aabbccddeeff";
        assert_eq!(parse_key(hex).len(), 16);
        assert_eq!(parse_key(&format!("0x{hex}"))[1], 0x11);
    }
}
