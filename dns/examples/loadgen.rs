//! Load generator for homeaddr-dns (used by scripts/bench-dns).
//!
//! `--mode udp`: each thread owns a UDP socket (its own source port, so
//! SO_REUSEPORT spreads threads over the server's sockets) and keeps
//! `--window` queries in flight; replies are matched by ID and timed.
//! `--mode inproc`: calls the pure `answer` function in a loop, no sockets:
//! the handler's own per-thread ceiling.
//! Bounded by `--seconds`; prints one line `mode qps p50_us p99_us lost`.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use homeaddr_dns::answer::{Snapshot, Transport, answer};
use homeaddr_dns::config::Zone;
use homeaddr_dns::wire::{ClientSubnet, Name, build_query, rtype};

#[derive(Debug, Parser)]
struct Args {
    /// udp or inproc.
    #[arg(long, default_value = "udp")]
    mode: String,
    /// Server to load (udp mode).
    #[arg(long, default_value = "127.0.0.1:5353")]
    server: SocketAddr,
    /// Zone config (inproc mode).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Name to ask for.
    #[arg(long, default_value = "svc.example.com.")]
    name: String,
    /// Sending threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Queries in flight per thread (udp mode).
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// How long to run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Label printed in the result line.
    #[arg(long, default_value = "run")]
    label: String,
}

/// Log-linear latency histogram in microseconds.
#[derive(Clone)]
struct Histogram {
    buckets: Vec<u64>,
}

impl Histogram {
    const SUB: usize = 16;
    fn new() -> Self {
        Self {
            buckets: vec![0; 64 * Self::SUB],
        }
    }
    fn index(us: u64) -> usize {
        if us < Self::SUB as u64 {
            return us as usize;
        }
        let exp = 63 - us.leading_zeros() as usize;
        let shift = exp - 4;
        let sub = ((us >> shift) as usize) & (Self::SUB - 1);
        (exp - 3) * Self::SUB + sub
    }
    fn value(i: usize) -> u64 {
        if i < Self::SUB {
            return i as u64;
        }
        let exp = i / Self::SUB + 3;
        let sub = (i % Self::SUB) as u64;
        (Self::SUB as u64 | sub) << (exp - 4)
    }
    fn record(&mut self, d: Duration) {
        let i = Self::index(d.as_micros() as u64).min(self.buckets.len() - 1);
        self.buckets[i] += 1;
    }
    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
    }
    fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.buckets.iter().sum();
        let target = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= target && c > 0 {
                return Self::value(i);
            }
        }
        0
    }
}

/// Cached-style queries: the same name from a handful of client subnets.
fn queries(name: &Name) -> Vec<Vec<u8>> {
    let subnets: [(&str, u8); 4] = [
        ("198.51.100.0", 24),
        ("203.0.113.0", 24),
        ("2001:db8:100:ff00::", 56),
        ("192.0.2.0", 24),
    ];
    let mut out: Vec<Vec<u8>> = subnets
        .iter()
        .map(|(a, p)| {
            build_query(
                0,
                name,
                rtype::AAAA,
                Some((1232, Some(ClientSubnet::for_query(a.parse().unwrap(), *p)))),
            )
        })
        .collect();
    out.push(build_query(0, name, rtype::AAAA, None));
    out
}

struct ThreadResult {
    answered: u64,
    lost: u64,
    hist: Histogram,
}

fn udp_thread(server: SocketAddr, name: Name, window: usize, until: Instant) -> ThreadResult {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = UdpSocket::bind(bind).expect("bind");
    sock.connect(server).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let templates = queries(&name);
    let window = window.clamp(1, 4096);
    // Slot k uses IDs k, k+window, ... so the slot is id % window.
    let mut sent_at = vec![None::<Instant>; window];
    let mut generation = vec![0u16; window];
    let mut res = ThreadResult {
        answered: 0,
        lost: 0,
        hist: Histogram::new(),
    };
    let mut buf = [0u8; 4096];
    let send = |slot: usize, generation: &mut [u16], sent_at: &mut [Option<Instant>], n: u64| {
        generation[slot] = generation[slot].wrapping_add(1);
        let id = (slot + window * (generation[slot] as usize % (65536 / window))) as u16;
        let mut q = templates[(n as usize + slot) % templates.len()].clone();
        q[0..2].copy_from_slice(&id.to_be_bytes());
        let _ = sock.send(&q);
        sent_at[slot] = Some(Instant::now());
    };
    let mut n = 0u64;
    for slot in 0..window {
        send(slot, &mut generation, &mut sent_at, n);
        n += 1;
    }
    while Instant::now() < until {
        match sock.recv(&mut buf) {
            Ok(len) if len >= 12 => {
                let id = u16::from_be_bytes([buf[0], buf[1]]) as usize;
                let slot = id % window;
                if let Some(t) = sent_at[slot].take() {
                    res.hist.record(t.elapsed());
                    res.answered += 1;
                    send(slot, &mut generation, &mut sent_at, n);
                    n += 1;
                }
            }
            Ok(_) => {}
            Err(_) => {
                // Timeout: count in-flight queries as lost and refill.
                for slot in 0..window {
                    if sent_at[slot].is_some_and(|t| t.elapsed() > Duration::from_millis(200)) {
                        res.lost += 1;
                        send(slot, &mut generation, &mut sent_at, n);
                        n += 1;
                    }
                }
            }
        }
    }
    res
}

fn inproc_thread(snap: Arc<Snapshot>, name: Name, until: Instant) -> ThreadResult {
    let templates = queries(&name);
    let src: IpAddr = "192.0.2.1".parse().unwrap();
    let mut out = Vec::with_capacity(1500);
    let mut res = ThreadResult {
        answered: 0,
        lost: 0,
        hist: Histogram::new(),
    };
    while Instant::now() < until {
        for _ in 0..1024 {
            for q in &templates {
                if answer(&snap, q, src, Transport::Udp, &mut out).is_some() {
                    res.answered += 1;
                }
            }
        }
    }
    res
}

fn main() {
    let args = Args::parse();
    let name = Name::from_dotted(&args.name).expect("valid name");
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(args.seconds);
    let handles: Vec<_> = match args.mode.as_str() {
        "udp" => (0..args.threads)
            .map(|_| {
                let name = name.clone();
                let (server, window) = (args.server, args.window);
                std::thread::spawn(move || udp_thread(server, name, window, until))
            })
            .collect(),
        "inproc" => {
            let path = args.config.as_ref().expect("--config needed for inproc");
            let zone = Zone::from_toml(&std::fs::read_to_string(path).expect("read config"))
                .expect("valid config");
            let snap = Arc::new(Snapshot::new(Arc::new(zone)));
            (0..args.threads)
                .map(|_| {
                    let (snap, name) = (snap.clone(), name.clone());
                    std::thread::spawn(move || inproc_thread(snap, name, until))
                })
                .collect()
        }
        other => panic!("unknown mode {other}"),
    };
    let mut hist = Histogram::new();
    let (mut answered, mut lost) = (0, 0);
    for h in handles {
        let r = h.join().expect("thread");
        answered += r.answered;
        lost += r.lost;
        hist.merge(&r.hist);
    }
    let secs = start.elapsed().as_secs_f64();
    let (p50, p99) = if args.mode == "inproc" {
        // No network: report the mean cost per query instead.
        let ns = secs * 1e9 * args.threads as f64 / answered.max(1) as f64;
        (format!("{ns:.0}ns/q"), "-".to_string())
    } else {
        (
            hist.quantile(0.50).to_string(),
            hist.quantile(0.99).to_string(),
        )
    };
    println!(
        "{} {:.0} {} {} {}",
        args.label,
        answered as f64 / secs,
        p50,
        p99,
        lost
    );
}
