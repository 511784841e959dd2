//! `homeaddr-testapp`: the test server and its clients on the command line.
//! Protocol and reports: `homeaddr_netns_tests::testapp`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use homeaddr_netns_tests::testapp;

#[derive(Debug, Parser)]
#[command(
    name = "homeaddr-testapp",
    about = "homeaddr test server and clients (JSON reports on stdout)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// TCP server (WHO / GET <bytes> / ECHO) plus UDP echo on the same port.
    Serve {
        /// Address to bind, e.g. [fd00:4841:100::1]:8080 (may not exist yet).
        #[arg(long)]
        bind: SocketAddr,
        /// Name answered to WHO (e.g. the member id).
        #[arg(long, default_value = "testapp")]
        name: String,
    },
    /// Download <bytes> and print {"bytes","sha256","seconds","server","peer"}.
    Get {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        bytes: u64,
        /// Timeout of each socket operation.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// N round trips on ONE connection; prints each RTT in microseconds.
    Rtt {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 10)]
        count: usize,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Print the server's name.
    Who {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// UDP echo probes; prints sent, received and each RTT (null if lost).
    Udp {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 100)]
        count: usize,
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        /// Datagram size in bytes (at least 16).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// How long to wait for echoes after the last probe.
        #[arg(long, default_value_t = 2_000)]
        timeout_ms: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let ms = Duration::from_millis;
    match Cli::parse().command {
        Cmd::Serve { bind, name } => {
            let server = testapp::Server::start(bind, &name)
                .with_context(|| format!("cannot serve on {bind}"))?;
            // Tests wait for this line before connecting.
            println!("listening on {} as {name}", server.local_addr());
            server.wait();
        }
        Cmd::Get {
            connect,
            bytes,
            timeout_ms,
        } => {
            let report = testapp::get(connect, bytes, ms(timeout_ms))?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Cmd::Rtt {
            connect,
            count,
            interval_ms,
            timeout_ms,
        } => {
            let report = testapp::rtt(connect, count, ms(interval_ms), ms(timeout_ms))?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Cmd::Who {
            connect,
            timeout_ms,
        } => println!("{}", testapp::who(connect, ms(timeout_ms))?),
        Cmd::Udp {
            connect,
            count,
            interval_ms,
            size,
            timeout_ms,
        } => {
            let report = testapp::udp_echo(connect, count, ms(interval_ms), size, ms(timeout_ms))?;
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}
