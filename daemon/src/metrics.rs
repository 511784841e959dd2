//! Prometheus metrics: a daemon's registry, the collector helpers the
//! three roles share, and a tiny HTTP/1.1 server for `GET /metrics`.
//!
//! The engines own their counters; a role's [`Collector`] reads the
//! engine when scraped and encodes its counters and gauges as constant
//! metrics, so nothing on the data path is mirrored into atomics. Only
//! what no engine keeps (the member's latency histograms, fed from engine
//! events) is a live metric, registered once. Text is OpenMetrics 1.0
//! (`prometheus_client::encoding::text`). The server turns each scrape
//! into a [`ControlRequest`] `{"cmd": "metrics"}`, which the daemon answers
//! like any control command with the text as a JSON string, so
//! `homeaddr-ctl metrics` and a scrape read the same numbers.
//! docs/OPERATING.md lists every metric with a sample scrape.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use homeaddr_io::{TunDevice, TunStats, UdpStats};
use homeaddr_proto::engine::DropCounters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::control::{ControlRequest, Request, Response};
use crate::driver::{Driver, SendSocket, Shared};

/// Longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The content type of [`prometheus_client::encoding::text`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Parse a `--metrics` value: `[ADDR]:PORT`, `ADDR:PORT` or `:PORT`
/// (all addresses).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("[::]{s}")
    } else {
        s.to_string()
    };
    full.parse()
        .map_err(|e| format!("--metrics {s:?} is not [ADDR]:PORT (e.g. [::1]:9470 or :9470): {e}"))
}

/// Scrapes, as control requests, from a server on `addr`; `None` serves
/// nothing (the receiver then never yields).
#[derive(Debug)]
pub struct MetricsServer {
    /// Where it listens, if it does.
    pub local_addr: Option<SocketAddr>,
    requests: mpsc::Receiver<ControlRequest>,
    // Keeps the channel open when nothing listens.
    _idle: Option<mpsc::Sender<ControlRequest>>,
}

impl MetricsServer {
    /// Listen on `addr` (if any).
    pub async fn listen(addr: Option<SocketAddr>) -> std::io::Result<Self> {
        let (tx, requests) = mpsc::channel(4);
        let Some(addr) = addr else {
            return Ok(Self {
                local_addr: None,
                requests,
                _idle: Some(tx),
            });
        };
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, tx.clone()));
                    }
                    Err(e) => {
                        warn!(error = %e, "metrics accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Self {
            local_addr: Some(local_addr),
            requests,
            _idle: None,
        })
    }

    /// The next scrape.
    pub async fn recv(&mut self) -> Option<ControlRequest> {
        self.requests.recv().await
    }
}

async fn serve(mut stream: TcpStream, tx: mpsc::Sender<ControlRequest>) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => {
            let (reply, rx) = oneshot::channel();
            let request = Request::Metrics;
            if tx.send(ControlRequest { request, reply }).await.is_err() {
                (
                    "503 Service Unavailable",
                    "the daemon is shutting down\n".into(),
                )
            } else {
                match rx.await {
                    Ok(Ok(Response::Metrics(text))) => ("200 OK", text),
                    _ => ("500 Internal Server Error", "no metrics\n".into()),
                }
            }
        }
        ("GET", _) => ("404 Not Found", "only /metrics is served here\n".into()),
        _ => ("405 Method Not Allowed", "use GET /metrics\n".into()),
    };
    // Errors are a sentence for a human, not an exposition.
    let content_type = if status.starts_with("200") {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = stream.write_all(answer.as_bytes()).await {
        debug!(error = %e, "metrics answer not sent");
    }
    let _ = stream.shutdown().await;
}

/// A daemon's metrics: its role's collector (and any live metrics) with
/// the daemon's I/O counters after them.
#[derive(Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
}

impl Metrics {
    /// `registry` holds the role's collector and live metrics; the I/O
    /// counters of `io` are registered after them.
    pub fn new(mut registry: Registry, io: IoSource) -> Self {
        registry.register_collector(Box::new(io));
        Self {
            registry: Arc::new(registry),
        }
    }

    /// A role's metrics: the live metrics already in `registry`, then
    /// `engine` encoded by `encode` at each scrape, then the I/O counters
    /// of `io`.
    pub fn with_engine<E: Send + 'static>(
        mut registry: Registry,
        engine: Shared<E>,
        encode: EncodeEngine<E>,
        io: IoSource,
    ) -> Self {
        registry.register_collector(Box::new(EngineCollector::new(engine, encode)));
        Self::new(registry, io)
    }

    /// The OpenMetrics text. Collectors lock the engine with a blocking
    /// lock: call this from a test or a blocking thread, never on the
    /// runtime (use [`Metrics::scrape`] there).
    pub fn text(&self) -> String {
        encode(&self.registry)
    }

    /// The OpenMetrics text, encoded on a blocking thread so that the
    /// collectors can wait for the engine without stalling the runtime.
    pub async fn scrape(&self) -> String {
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || encode(&registry))
            .await
            .unwrap_or_else(|e| format!("# metrics failed: {e}\n# EOF\n"))
    }
}

/// `registry` as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String fails only if a collector fails, and ours
    // return the encoder's own (infallible) results.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// The text of `engine` alone, encoded by `encode` as a scrape would now
/// (for the roles' tests, which have no I/O to count).
pub fn engine_text<E: Send + 'static>(engine: E, encode: EncodeEngine<E>) -> String {
    let mut registry = Registry::default();
    let engine = Arc::new(tokio::sync::Mutex::new(engine));
    registry.register_collector(Box::new(EngineCollector::new(engine, encode)));
    self::encode(&registry)
}

/// How a role encodes its engine's counters and gauges at time `now`.
pub type EncodeEngine<E> = fn(&E, Instant, &mut DescriptorEncoder<'_>) -> std::fmt::Result;

/// A role's collector: locks the engine when scraped and encodes what it
/// counts at that moment.
pub struct EngineCollector<E> {
    engine: Shared<E>,
    encode: EncodeEngine<E>,
}

impl<E> EngineCollector<E> {
    /// Encode `engine` with `encode` at each scrape.
    pub fn new(engine: Shared<E>, encode: EncodeEngine<E>) -> Self {
        Self { engine, encode }
    }
}

impl<E> std::fmt::Debug for EngineCollector<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCollector").finish_non_exhaustive()
    }
}

impl<E: Send + 'static> Collector for EngineCollector<E> {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let engine = self.engine.blocking_lock();
        (self.encode)(&engine, Instant::now(), &mut encoder)
    }
}

/// Where a daemon's TUN and UDP counters are read at scrape time: the TUN
/// and the socket data leaves from (which a member's move swaps).
#[derive(Debug, Clone)]
pub struct IoSource {
    tun: Arc<TunDevice>,
    send: Arc<SendSocket>,
    busy: Arc<crate::busy::BusyPoll>,
}

impl IoSource {
    /// The devices of `driver`.
    pub fn of<E: homeaddr_proto::engine::Engine + Send + 'static>(driver: &Driver<E>) -> Self {
        Self {
            tun: driver.tun().clone(),
            send: driver.send_sockets(),
            busy: driver.busy_poll().clone(),
        }
    }
}

impl Collector for IoSource {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let tun = self.tun.counters().snapshot();
        let udp = self.send.get().counters().snapshot();
        encode_io(&mut encoder, &tun, &udp)?;
        encode_busy(&mut encoder, &self.busy)
    }
}

/// The label of a family with one sample per member.
#[derive(Debug, EncodeLabelSet)]
pub struct MemberLabels {
    /// The member's id.
    pub member: u16,
}

/// The label of a family of packets by path (through the AP, direct...).
#[derive(Debug, EncodeLabelSet)]
pub struct PathLabels {
    /// The path's name.
    pub path: &'static str,
}

#[derive(Debug, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Debug, EncodeLabelSet)]
struct DeviceLabels {
    device: &'static str,
    kind: &'static str,
}

#[derive(Debug, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

fn rx_tx(rx: u64, tx: u64) -> [(DirectionLabels, u64); 2] {
    [
        (DirectionLabels { direction: "rx" }, rx),
        (DirectionLabels { direction: "tx" }, tx),
    ]
}

/// The TUN and UDP counters (docs/OPERATING.md, "Every daemon").
pub fn encode_io(
    encoder: &mut DescriptorEncoder<'_>,
    tun: &TunStats,
    udp: &UdpStats,
) -> std::fmt::Result {
    counters(
        encoder,
        "homeaddr_tun_packets",
        "Packets through the TUN device.",
        rx_tx(tun.rx_packets, tun.tx_packets),
    )?;
    counters(
        encoder,
        "homeaddr_tun_bytes",
        "Bytes through the TUN device.",
        rx_tx(tun.rx_bytes, tun.tx_bytes),
    )?;
    counters(
        encoder,
        "homeaddr_udp_datagrams",
        "Tunnel datagrams through the UDP socket data leaves from.",
        rx_tx(udp.rx_datagrams, udp.tx_datagrams),
    )?;
    counters(
        encoder,
        "homeaddr_udp_bytes",
        "Tunnel bytes through the UDP socket data leaves from.",
        rx_tx(udp.rx_bytes, udp.tx_bytes),
    )?;
    let errors = [
        ("tun", "rx_error", tun.rx_errors),
        ("tun", "tx_error", tun.tx_errors),
        ("tun", "tx_dropped", tun.tx_dropped),
        ("udp", "rx_error", udp.rx_errors),
        ("udp", "tx_error", udp.tx_errors),
        ("udp", "tx_dropped", udp.tx_dropped),
    ];
    counters(
        encoder,
        "homeaddr_io_errors",
        "I/O errors and drops of the TUN device and UDP socket.",
        errors.map(|(device, kind, n)| (DeviceLabels { device, kind }, n)),
    )
}

/// The busy-poll counters (see [`crate::busy`]).
pub fn encode_busy(
    encoder: &mut DescriptorEncoder<'_>,
    busy: &crate::busy::BusyPoll,
) -> std::fmt::Result {
    let (windows, hits) = busy.counts();
    counters(
        encoder,
        "homeaddr_busy_poll_events",
        "Busy polling: event=\"window\", traffic found the daemon asleep and a window opened; event=\"hit\", a batch found it polling (no wake-up).",
        [
            (EventLabels { event: "window" }, windows),
            (EventLabels { event: "hit" }, hits),
        ],
    )
}

#[derive(Debug, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

/// Drops by reason as one labelled counter family `name` (without `_total`).
pub fn encode_drops(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    drops: &DropCounters,
) -> std::fmt::Result {
    counters(
        encoder,
        name,
        "Packets dropped, by reason.",
        drops
            .iter()
            .map(|(r, n)| (ReasonLabels { reason: r.name() }, n)),
    )
}

/// A counter family: `name` without `_total` (the encoder adds it to the
/// samples), one sample per label set.
pub fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> std::fmt::Result {
    let samples = samples.into_iter().map(|(l, n)| (l, ConstCounter::new(n)));
    family(encoder, name, help, MetricType::Counter, samples)
}

/// A gauge family, one sample per label set.
pub fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) -> std::fmt::Result {
    let samples = samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
    family(encoder, name, help, MetricType::Gauge, samples)
}

/// A family of `kind`, one sample per label set.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// An unlabelled counter (`name` without `_total`).
pub fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    n: u64,
) -> std::fmt::Result {
    let c = ConstCounter::new(n);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

/// An unlabelled gauge.
pub fn gauge<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: V,
) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

/// Buckets for protocol exchanges, from a LAN to a slow WAN: 1 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The I/O counters of fixed snapshots, as a collector.
    #[derive(Debug)]
    struct FixedIo(TunStats, UdpStats);

    impl Collector for FixedIo {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
            encode_io(&mut encoder, &self.0, &self.1)
        }
    }

    #[test]
    fn io_counters_are_read_from_the_typed_snapshots() {
        let tun = TunStats {
            rx_packets: 7,
            tx_bytes: 1500,
            tx_dropped: 2,
            ..Default::default()
        };
        let udp = UdpStats {
            tx_datagrams: 9,
            rx_errors: 1,
            ..Default::default()
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(FixedIo(tun, udp)));
        let text = encode(&registry);
        for line in [
            "# HELP homeaddr_tun_packets Packets through the TUN device.",
            "# TYPE homeaddr_tun_packets counter",
            "homeaddr_tun_packets_total{direction=\"rx\"} 7",
            "homeaddr_tun_packets_total{direction=\"tx\"} 0",
            "homeaddr_tun_bytes_total{direction=\"tx\"} 1500",
            "homeaddr_udp_datagrams_total{direction=\"tx\"} 9",
            "homeaddr_io_errors_total{device=\"tun\",kind=\"tx_dropped\"} 2",
            "homeaddr_io_errors_total{device=\"udp\",kind=\"rx_error\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn busy_poll_counters_are_one_family_by_event() {
        #[derive(Debug)]
        struct Busy(Arc<crate::busy::BusyPoll>);
        impl Collector for Busy {
            fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
                encode_busy(&mut e, &self.0)
            }
        }
        let busy = crate::busy::BusyPoll::new(std::time::Duration::from_micros(200));
        // Not spinning: the first batch wakes the spinner (a window opens
        // when it runs, which no task does here), no hit is counted.
        busy.traffic(std::time::Instant::now());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Busy(busy)));
        let text = encode(&registry);
        for line in [
            "# TYPE homeaddr_busy_poll_events counter",
            "homeaddr_busy_poll_events_total{event=\"window\"} 0",
            "homeaddr_busy_poll_events_total{event=\"hit\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    #[test]
    fn helpers_encode_labels_in_order_and_gauges_as_given() {
        #[derive(Debug, EncodeLabelSet)]
        struct Labels {
            member: u16,
            why: &'static str,
        }
        #[derive(Debug)]
        struct Fixed;
        impl Collector for Fixed {
            fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
                counters(
                    &mut e,
                    "x",
                    "Things.",
                    [(
                        Labels {
                            member: 1,
                            why: "a\"b",
                        },
                        3,
                    )],
                )?;
                gauge(&mut e, "y_seconds", "Time left.", 1.5)?;
                counter(&mut e, "z", "Zs.", 0)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed));
        assert_eq!(
            encode(&registry),
            "# HELP x Things.\n# TYPE x counter\nx_total{member=\"1\",why=\"a\\\"b\"} 3\n\
             # HELP y_seconds Time left.\n# TYPE y_seconds gauge\ny_seconds 1.5\n\
             # HELP z Zs.\n# TYPE z counter\nz_total 0\n# EOF\n"
        );
    }

    #[test]
    fn latency_histograms_are_cumulative_with_sum_and_count() {
        let h = prometheus_client::metrics::histogram::Histogram::new(LATENCY_BUCKETS);
        let mut registry = Registry::default();
        registry.register("t_seconds", "Time.", h.clone());
        h.observe(0.0009);
        h.observe(0.3);
        h.observe(30.0);
        let text = encode(&registry);
        for line in [
            "# TYPE t_seconds histogram",
            "t_seconds_bucket{le=\"0.001\"} 1",
            "t_seconds_bucket{le=\"0.25\"} 1",
            "t_seconds_bucket{le=\"0.5\"} 2",
            "t_seconds_bucket{le=\"10.0\"} 2",
            "t_seconds_bucket{le=\"+Inf\"} 3",
            "t_seconds_sum 30.3009",
            "t_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(parse_listen(":9470").unwrap().port(), 9470);
        assert!(parse_listen("[::1]:9470").is_ok());
        assert!(parse_listen("9470").unwrap_err().contains("[ADDR]:PORT"));
    }

    #[tokio::test]
    async fn a_scrape_is_answered_through_the_daemon() {
        let mut server = MetricsServer::listen(Some("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let addr = server.local_addr.unwrap();
        tokio::spawn(async move {
            while let Some(req) = server.recv().await {
                assert_eq!(req.cmd(), "metrics");
                let _ = req.reply.send(Ok(Response::Metrics("up 1\n".into())));
            }
        });
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n"))
                && ok.ends_with("\r\n\r\nup 1\n"),
            "{ok}"
        );
        assert!(get("/").await.starts_with("HTTP/1.1 404"));
        let mut idle = MetricsServer::listen(None).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), idle.recv())
                .await
                .is_err()
        );
    }
}
