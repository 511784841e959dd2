//! haproxy (Debian's package, 2.6) in TCP mode on the router namespace:
//! the user-space proxy peer of `homeaddr-bench`.
//!
//! Clients connect to a service address on the router's client-side
//! interface; haproxy opens a second connection to the member's own
//! address for each one and copies bytes between them, as a TCP load
//! balancer in front of a server LAN does. Stock settings otherwise (its
//! default threads, one per core; no splicing), in the foreground (`-db`),
//! config in the topology's directory. One listener per port the bench
//! uses: iperf3, nginx and the test server (the readiness check).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use homeaddr_netns_tests::service::SERVICE_PORT;
use homeaddr_netns_tests::topology::Daemon;
use homeaddr_netns_tests::{Netns, Topology, testapp, wait_until};

use crate::topology::{HTTP_PORT, IPERF_PORT};

fn config(listen: Ipv6Addr, server: Ipv6Addr) -> String {
    let mut c = String::from(
        "global
    # Well under the file descriptor limit (two sockets per connection).
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
",
    );
    for (name, port) in [
        ("iperf3", IPERF_PORT),
        ("http", HTTP_PORT),
        ("testapp", SERVICE_PORT),
    ] {
        c.push_str(&format!(
            "listen {name}\n    bind [{listen}]:{port}\n    server member [{server}]:{port}\n"
        ));
    }
    c
}

/// Starts haproxy on `router`, listening on `listen` and forwarding to
/// `server`, and waits until a request from `client` gets through.
pub fn start(
    topo: &Topology,
    router: &Netns,
    client: &Netns,
    listen: Ipv6Addr,
    server: Ipv6Addr,
) -> anyhow::Result<Daemon> {
    let conf = topo.dir().join("haproxy.cfg");
    std::fs::write(&conf, config(listen, server))?;
    let d = router
        .spawn(
            "haproxy",
            Path::new("haproxy"),
            ["-db".to_string(), "-f".into(), conf.display().to_string()],
        )
        .context("cannot start haproxy (install it: apt-get install haproxy)")?;
    let target = SocketAddr::new(IpAddr::V6(listen), SERVICE_PORT);
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "a request through haproxy",
        || {
            d.is_running()
                && client
                    .enter(|| testapp::who(target, Duration::from_secs(1)).is_ok())
                    .unwrap_or(false)
        },
    )
    .with_context(|| format!("haproxy: {}", d.stderr()))?;
    Ok(d)
}
