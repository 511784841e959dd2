//! nginx (Debian's package) in the member namespace, serving one 1 KiB
//! file to wrk on every path.
//!
//! It listens on `[::]:80`, so the member's own address, the boringtun
//! tunnel address and the home address (delivered by the member daemon's
//! TUN) all reach it. Everything it writes (config, pid file, temp
//! directories, error log) lives in the topology's directory; the access
//! log is off, `keepalive_requests` is high enough that wrk's keep-alive
//! connections stay open for the whole figure, and the workers run as root
//! (the directory is root's).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use homeaddr_netns_tests::topology::Daemon;
use homeaddr_netns_tests::{Netns, Topology, wait_until};

use crate::topology::HTTP_PORT;

/// The path of the served file.
pub const FILE: &str = "/1k";
/// Its size.
pub const FILE_BYTES: usize = 1024;

fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "daemon off;
master_process on;
user root;
worker_processes auto;
pid {d}/nginx/nginx.pid;
error_log {d}/nginx/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {d}/nginx/tmp/body;
    proxy_temp_path {d}/nginx/tmp/proxy;
    fastcgi_temp_path {d}/nginx/tmp/fastcgi;
    uwsgi_temp_path {d}/nginx/tmp/uwsgi;
    scgi_temp_path {d}/nginx/tmp/scgi;
    default_type application/octet-stream;
    server {{
        listen [::]:{HTTP_PORT} reuseport;
        root {d}/nginx/www;
    }}
}}
"
    )
}

/// Starts nginx in `ns` and waits until `client` gets the file from
/// `[addr]:80`.
pub fn start(topo: &Topology, ns: &Netns, client: &Netns, addr: IpAddr) -> anyhow::Result<Daemon> {
    let dir = topo.dir();
    std::fs::create_dir_all(dir.join("nginx/www"))?;
    std::fs::create_dir_all(dir.join("nginx/tmp"))?;
    let body: Vec<u8> = (0..FILE_BYTES).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(dir.join(format!("nginx/www{FILE}")), body)?;
    let conf = dir.join("nginx/nginx.conf");
    std::fs::write(&conf, config(dir))?;
    let conf = conf.display().to_string();
    let prefix = format!("{}/nginx/", dir.display());
    let error_log = format!("{}/nginx/error.log", dir.display());
    let d = ns
        .spawn(
            "nginx",
            "nginx",
            ["-p", &prefix, "-e", &error_log, "-c", &conf],
        )
        .context("cannot start nginx (install it: apt-get install nginx)")?;
    let target = SocketAddr::new(addr, HTTP_PORT);
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "nginx serving the file",
        || d.is_running() && client.enter(|| get(target).is_ok()).unwrap_or(false),
    )
    .with_context(|| format!("nginx: {}", d.stderr()))?;
    Ok(d)
}

/// One `GET` of the file on a new connection; checks the status and the
/// size, so a path that reaches some other server fails here, not in wrk.
pub fn get(target: SocketAddr) -> anyhow::Result<()> {
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {FILE} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let text = String::from_utf8_lossy(&reply);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("{target}: no HTTP reply"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{target}: {}",
        head.lines().next().unwrap_or("")
    );
    anyhow::ensure!(
        body.len() == FILE_BYTES,
        "{target}: {} bytes, not {FILE_BYTES}",
        body.len()
    );
    Ok(())
}
