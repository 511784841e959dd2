//! `homeaddr-wan`: the user-space WAN emulator as a process (for the demo).
//!
//! Joins named network namespaces through TUN devices with a latency
//! matrix; see `homeaddr_netns_tests::wan` and the file format in
//! `homeaddr_netns_tests::wan::config`. Prints `ready` once every host is
//! attached, counters as JSON lines every `stats_interval_ms` and on exit.
//! SIGHUP re-reads the config file (link parameters, new hosts); SIGINT or
//! SIGTERM stops it and removes its TUN devices.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use homeaddr_netns_tests::wan::config::{WanFile, parse_host_arg, parse_link_arg};
use homeaddr_netns_tests::wan::{Wan, WanConfig};

#[derive(Debug, Parser)]
#[command(
    name = "homeaddr-wan",
    about = "user-space WAN emulator between network namespaces"
)]
struct Cli {
    /// TOML configuration (hosts, links, defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Extra host: NAME=NETNS,ADDR/LEN[,PREFIX...]
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Extra symmetric link: A,B,LATENCY_MS[,LOSS[,JITTER_MS]]
    #[arg(long = "link")]
    links: Vec<String>,
    /// Loss/jitter seed (overrides the file).
    #[arg(long)]
    seed: Option<u64>,
    /// Counter report interval in ms (overrides the file; 0: off).
    #[arg(long)]
    stats_interval_ms: Option<u64>,
}

fn load(cli: &Cli) -> anyhow::Result<WanFile> {
    let mut file = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            WanFile::parse(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => WanFile::default(),
    };
    for arg in &cli.hosts {
        file.hosts.push(parse_host_arg(arg)?);
    }
    for arg in &cli.links {
        file.links.push(parse_link_arg(arg)?);
    }
    if cli.seed.is_some() {
        file.seed = cli.seed;
    }
    if cli.stats_interval_ms.is_some() {
        file.stats_interval_ms = cli.stats_interval_ms;
    }
    Ok(file)
}

/// Attaches hosts not attached yet and applies every link entry.
fn apply(wan: &Wan, file: &WanFile) -> anyhow::Result<()> {
    let attached = wan.hosts();
    for host in file.host_specs() {
        if !attached.contains(&host.name) {
            wan.attach(&host)
                .with_context(|| format!("attaching host {:?}", host.name))?;
        }
    }
    for (from, to, params) in file.link_params()? {
        wan.set_link(&from, &to, params)
            .with_context(|| format!("link {from} -> {to}"))?;
    }
    Ok(())
}

fn print_counters(wan: &Wan) {
    match serde_json::to_string(&wan.counters()) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("homeaddr-wan: cannot encode counters: {e}"),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let file = load(&cli)?;
    if file.hosts.is_empty() {
        bail!("no hosts: give --config with [[host]] entries or --host NAME=NETNS,ADDR/LEN");
    }
    let config: WanConfig = file.config()?;
    let interval = Duration::from_millis(file.stats_interval_ms.unwrap_or(5_000));

    // Signals are taken synchronously by this thread; block them before
    // any thread exists so that all threads inherit the mask.
    // SAFETY: plain libc signal-set manipulation on a local sigset_t.
    let signals = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };

    let wan = Wan::start(config)?;
    apply(&wan, &file)?;
    println!("ready: hosts {:?}", wan.hosts());

    let tick = if interval.is_zero() {
        Duration::from_secs(1)
    } else {
        interval
    };
    loop {
        let timeout = libc::timespec {
            tv_sec: tick.as_secs() as libc::time_t,
            tv_nsec: tick.subsec_nanos() as libc::c_long,
        };
        // SAFETY: valid signal set and timespec; no siginfo wanted.
        let sig = unsafe { libc::sigtimedwait(&signals, std::ptr::null_mut(), &timeout) };
        match sig {
            libc::SIGHUP => {
                let reloaded = load(&cli).and_then(|file| apply(&wan, &file));
                match reloaded {
                    Ok(()) => eprintln!("homeaddr-wan: configuration reloaded"),
                    Err(e) => {
                        eprintln!("homeaddr-wan: reload failed, keeping the old settings: {e:#}")
                    }
                }
            }
            libc::SIGINT | libc::SIGTERM => break,
            _ => {
                if !interval.is_zero() {
                    print_counters(&wan);
                }
            }
        }
    }
    print_counters(&wan);
    Ok(())
}
