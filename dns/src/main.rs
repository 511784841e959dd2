//! `homeaddr-dns`: the embedded geo-DNS server binary. Parses arguments,
//! loads the zone and wires the library's parts together; no DNS logic here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use homeaddr_dns::config::Zone;
use homeaddr_dns::server::{self, ServeOptions, UdpEngine};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Engine {
    /// Blocking SO_REUSEPORT worker threads with batched I/O calling the
    /// handler core directly (the default).
    Fast,
    /// hickory-server's UDP loop with our RequestHandler (same answers,
    /// slower).
    Hickory,
}

/// Authoritative geo-DNS for homeaddr: answers each client with the nearest
/// healthy site (EDNS Client Subnet aware).
#[derive(Debug, Parser)]
#[command(name = "homeaddr-dns", version)]
struct Args {
    /// Zone configuration (TOML, see docs/DNS.md).
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// Address to serve UDP and TCP on; repeat for several (IPv6 and IPv4).
    #[arg(long, short = 'l', default_values_t = [SocketAddr::from(([0u16; 8], 53)), SocketAddr::from(([0u8; 4], 53))])]
    listen: Vec<SocketAddr>,
    /// Log filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, default_value = "info")]
    log: String,
    /// Who serves UDP.
    #[arg(long, value_enum, default_value_t = Engine::Fast)]
    udp_engine: Engine,
    /// Fast engine: most queries per recvmmsg/sendmmsg (1 = no batching).
    #[arg(long, default_value_t = server::DEFAULT_UDP_BATCH as u16,
          value_parser = clap::value_parser!(u16).range(1..=server::MAX_BATCH as i64))]
    udp_batch: u16,
    /// UDP sockets (SO_REUSEPORT) per listen address; default: one per core.
    #[arg(long)]
    udp_sockets: Option<usize>,
    /// Serve Prometheus metrics over HTTP on this address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Only check the configuration, print a summary and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // hickory logs per query (malformed EDNS at warn, every request at
    // info); metrics count those queries instead.
    let filter = homeaddr_dns::logging::log_filter(&args.log);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .with_context(|| format!("bad --log filter `{}`", args.log))?,
        )
        .init();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read config {}", args.config.display()))?;
    let zone = Zone::from_toml(&text).with_context(|| format!("in {}", args.config.display()))?;
    if args.check {
        println!(
            "{}: zone {} with {} sites, {} services, {} client policies: OK",
            args.config.display(),
            zone.origin.to_dotted(),
            zone.sites.len(),
            zone.services.len(),
            zone.policies.len()
        );
        return Ok(());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opts = ServeOptions {
        listen: args.listen,
        udp_sockets: args.udp_sockets.unwrap_or(cores),
        udp_engine: match args.udp_engine {
            Engine::Hickory => UdpEngine::Hickory,
            Engine::Fast => UdpEngine::Fast,
        },
        udp_batch: usize::from(args.udp_batch),
        tcp_timeout: Duration::from_secs(10),
        metrics: args.metrics,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let running = server::start(Arc::new(zone), &opts).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot watch SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot wait for ctrl-c")?,
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        running.shutdown().await;
        Ok(())
    })
}
