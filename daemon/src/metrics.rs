//! Prometheus metrics: the text exposition format 0.0.4 and a tiny
//! HTTP/1.1 server for `GET /metrics`.
//!
//! Hand-written on purpose: a scrape is one request line and one text
//! answer, and the daemons already own their counters (the engines count,
//! the daemon renders them on demand); a registry crate would duplicate
//! every counter. The server turns each scrape into a
//! [`ControlRequest`] `{"cmd": "metrics"}`, which the daemon answers like
//! any control command with the text as a JSON string, so
//! `homeaddr-ctl metrics` and a scrape read the same numbers.
//! docs/OPERATING.md lists every metric with a sample scrape.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::control::{ControlRequest, Request, Response};

/// Longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

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
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = stream.write_all(answer.as_bytes()).await {
        debug!(error = %e, "metrics answer not sent");
    }
    let _ = stream.shutdown().await;
}

/// Prometheus text: families with HELP and TYPE, then their samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(l: &[(&str, &str)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Exposition {
    /// Start a family: `kind` is `counter`, `gauge` or `histogram`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, l: &[(&str, &str)], value: impl Into<f64>) -> &mut Self {
        let _ = writeln!(self.out, "{name}{} {}", labels(l), value.into());
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Into<f64>) {
        self.family(name, kind, help).sample(name, &[], value);
    }

    /// A histogram family.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        let mut cumulative = 0u64;
        for (bound, n) in h.bounds.iter().zip(&h.counts) {
            cumulative += n;
            let le = format!("{bound}");
            let _ = writeln!(
                self.out,
                "{name}_bucket{} {cumulative}",
                labels(&[("le", &le)])
            );
        }
        let _ = writeln!(self.out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(self.out, "{name}_sum {}", h.sum);
        let _ = writeln!(self.out, "{name}_count {}", h.count);
    }

    /// The daemon's TUN and UDP counters from `Driver::io_status`.
    pub fn io(&mut self, io: &Value) {
        let n = |p: &str| io.pointer(p).and_then(Value::as_u64).unwrap_or(0) as f64;
        self.family(
            "homeaddr_tun_packets_total",
            "counter",
            "Packets through the TUN device.",
        )
        .sample(
            "homeaddr_tun_packets_total",
            &[("direction", "rx")],
            n("/tun/rx_packets"),
        )
        .sample(
            "homeaddr_tun_packets_total",
            &[("direction", "tx")],
            n("/tun/tx_packets"),
        );
        self.family(
            "homeaddr_tun_bytes_total",
            "counter",
            "Bytes through the TUN device.",
        )
        .sample(
            "homeaddr_tun_bytes_total",
            &[("direction", "rx")],
            n("/tun/rx_bytes"),
        )
        .sample(
            "homeaddr_tun_bytes_total",
            &[("direction", "tx")],
            n("/tun/tx_bytes"),
        );
        self.family(
            "homeaddr_udp_datagrams_total",
            "counter",
            "Tunnel datagrams through the UDP socket data leaves from.",
        )
        .sample(
            "homeaddr_udp_datagrams_total",
            &[("direction", "rx")],
            n("/udp/rx_datagrams"),
        )
        .sample(
            "homeaddr_udp_datagrams_total",
            &[("direction", "tx")],
            n("/udp/tx_datagrams"),
        );
        self.family(
            "homeaddr_udp_bytes_total",
            "counter",
            "Tunnel bytes through the UDP socket data leaves from.",
        )
        .sample(
            "homeaddr_udp_bytes_total",
            &[("direction", "rx")],
            n("/udp/rx_bytes"),
        )
        .sample(
            "homeaddr_udp_bytes_total",
            &[("direction", "tx")],
            n("/udp/tx_bytes"),
        );
        self.family(
            "homeaddr_io_errors_total",
            "counter",
            "I/O errors and drops of the TUN device and UDP socket.",
        )
        .sample(
            "homeaddr_io_errors_total",
            &[("device", "tun"), ("kind", "rx_error")],
            n("/tun/rx_errors"),
        )
        .sample(
            "homeaddr_io_errors_total",
            &[("device", "tun"), ("kind", "tx_error")],
            n("/tun/tx_errors"),
        )
        .sample(
            "homeaddr_io_errors_total",
            &[("device", "tun"), ("kind", "tx_dropped")],
            n("/tun/tx_dropped"),
        )
        .sample(
            "homeaddr_io_errors_total",
            &[("device", "udp"), ("kind", "rx_error")],
            n("/udp/rx_errors"),
        )
        .sample(
            "homeaddr_io_errors_total",
            &[("device", "udp"), ("kind", "tx_error")],
            n("/udp/tx_errors"),
        )
        .sample(
            "homeaddr_io_errors_total",
            &[("device", "udp"), ("kind", "tx_dropped")],
            n("/udp/tx_dropped"),
        );
    }

    /// Drops by reason as one labelled counter family.
    pub fn drops(&mut self, name: &str, drops: &homeaddr_proto::engine::DropCounters) {
        self.family(name, "counter", "Packets dropped, by reason.");
        for (reason, n) in drops.iter() {
            self.sample(name, &[("reason", reason.name())], n as f64);
        }
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A fixed-bucket histogram of seconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Buckets for protocol exchanges, from a LAN to a slow WAN: 1 ms to 10 s.
    pub fn latency() -> Self {
        Self::new(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
    }

    /// Buckets with these upper bounds (ascending, seconds).
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Count one observation.
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| s <= *b) {
            self.counts[i] += 1;
        }
        self.sum += s;
        self.count += 1;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_help_type_labels_and_cumulative_buckets() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(3));
        let mut e = Exposition::default();
        e.family("x_total", "counter", "Things.").sample(
            "x_total",
            &[("member", "1"), ("why", "a\"b")],
            3u32,
        );
        e.histogram("y_seconds", "Time.", &h);
        assert_eq!(
            e.finish(),
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{member=\"1\",why=\"a\\\"b\"} 3\n\
             # HELP y_seconds Time.\n# TYPE y_seconds histogram\n\
             y_seconds_bucket{le=\"0.1\"} 1\ny_seconds_bucket{le=\"1\"} 2\ny_seconds_bucket{le=\"+Inf\"} 3\n\
             y_seconds_sum 3.55\ny_seconds_count 3\n"
        );
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
            ok.contains("version=0.0.4") && ok.ends_with("\r\n\r\nup 1\n"),
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
