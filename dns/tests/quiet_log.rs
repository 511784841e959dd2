//! The daemon's default log filter keeps per-query library warnings out of
//! the log, and the metrics count those queries instead. A second layer
//! with hickory-proto's WARN enabled is the control: it shows the library
//! did warn, so the quiet default is what kept the line out.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use homeaddr_dns::client;
use homeaddr_dns::config::Zone;
use homeaddr_dns::logging::log_filter;
use homeaddr_dns::server::{self, ServeOptions, UdpEngine};
use homeaddr_dns::wire::{self, Name, build_query, put_rr_header, rtype};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

const ZONE: &str = r#"
origin = "example.com."
[soa]
mname = "ns1.example.com."
rname = "hostmaster.example.com."
[[ns]]
name = "ns1.example.com."
addrs = ["127.0.0.1"]
[[service]]
name = "svc.example.com."
[[site]]
name = "ams"
hoas = ["2001:db8:a::1"]
ap_endpoint = "[2001:db8:a::100]:4500"
"#;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// An ECS option whose length (9) runs past the end of the OPT record (7
/// octets left): our parser says FORMERR (`bad_option`); hickory-proto
/// logs "incomplete or poorly formatted EDNS options" at WARN, drops the
/// options and hands the query on.
fn malformed_ecs_query() -> Vec<u8> {
    let mut m = build_query(
        0x5151,
        &Name::from_dotted("svc.example.com.").unwrap(),
        rtype::AAAA,
        None,
    );
    m[11] = 1;
    let opt = [0, 8, 0, 9, 0, 1, 24, 0, 198, 51, 100];
    put_rr_header(&mut m, &[0], rtype::OPT, 1232, 0, opt.len());
    m.extend_from_slice(&opt);
    m
}

fn udp_exchange(to: SocketAddr, q: &[u8]) -> Vec<u8> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(q, to).unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).expect("a reply");
    buf.truncate(n);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ecs_is_counted_not_logged_at_the_default_level() {
    let (quiet, control) = (Captured::default(), Captured::default());
    let (q, c) = (quiet.clone(), control.clone());
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || q.clone())
                .with_filter(EnvFilter::try_new(log_filter("info")).unwrap()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || c.clone())
                .with_filter(EnvFilter::try_new("hickory_proto=warn").unwrap()),
        );
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber");

    let query = malformed_ecs_query();
    for engine in [UdpEngine::Fast, UdpEngine::Hickory] {
        let opts = ServeOptions {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            udp_sockets: 1,
            udp_engine: engine,
            udp_batch: server::DEFAULT_UDP_BATCH,
            tcp_timeout: Duration::from_secs(5),
            metrics: None,
        };
        let running = server::start(Arc::new(Zone::from_toml(ZONE).unwrap()), &opts)
            .await
            .expect("server starts");
        let to = running.addrs[0];
        let q = query.clone();
        let udp = tokio::task::spawn_blocking(move || udp_exchange(to, &q))
            .await
            .unwrap();
        let tcp = client::exchange_tcp(to, &query, Duration::from_secs(5))
            .await
            .expect("tcp reply");
        for reply in [udp, tcp] {
            assert_eq!(reply[..2], query[..2]);
            assert_eq!(reply[3] & 0xf, wire::rcode::FORMERR as u8, "{engine:?}");
        }
        // Each reply was sent after its query was parsed, so every event
        // of these queries has been written by now.
        assert_eq!(running.metrics.malformed("bad_option"), 2, "{engine:?}");
        running.shutdown().await;
    }

    let quiet = quiet.text();
    let control = control.text();
    assert!(
        control.contains("poorly formatted EDNS options"),
        "the control layer must see hickory-proto's warning: {control:?}"
    );
    assert!(
        quiet.contains("listening"),
        "the quiet layer works: {quiet:?}"
    );
    for line in quiet.lines() {
        assert!(
            !line.contains("hickory") && !line.contains("WARN") && !line.contains("EDNS"),
            "per-query line at the default level: {line}"
        );
    }
}
