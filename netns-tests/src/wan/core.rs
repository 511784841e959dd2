//! The WAN emulator's scheduling core: sans-IO, time passed in.
//!
//! [`WanCore::handle_packet`] takes a packet a host sent into its WAN
//! interface, finds the destination host by longest-prefix match on the
//! IPv6 destination, and either drops it (seeded loss, full queue, no route)
//! or schedules it for delivery after the link's one-way delay;
//! [`WanCore::poll_due`] hands out packets whose time has come, in due order,
//! and [`WanCore::poll_timeout`] says when the next one is due. The I/O shell
//! ([`super::Wan`]) only moves bytes between TUN devices and this core.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv6Net;
use serde::Serialize;

/// Index of a host attached to the emulator.
pub type HostId = usize;

/// Properties of one direction of a link between two hosts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkParams {
    /// One-way propagation delay.
    pub latency: Duration,
    /// Each packet's delay is `latency` plus a uniform offset in
    /// `[-jitter, +jitter]` (clamped at zero). Jitter larger than the gap
    /// between packets reorders them.
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a packet is lost.
    pub loss: f64,
    /// Serialisation rate in bit/s; `None` is unlimited. Packets queue
    /// behind each other at this rate before the propagation delay.
    pub rate_bps: Option<u64>,
    /// Most packets of this link in flight (queued or propagating) at once;
    /// further packets are dropped and counted as `dropped_queue`.
    pub queue_limit: usize,
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            rate_bps: None,
            queue_limit: 16_384,
        }
    }
}

impl LinkParams {
    /// Default parameters with one-way `latency`.
    pub fn with_latency(latency: Duration) -> Self {
        LinkParams {
            latency,
            ..LinkParams::default()
        }
    }

    /// Checks the ranges; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.loss) || self.loss.is_nan() {
            return Err(format!(
                "loss {} must be a probability in [0, 1]",
                self.loss
            ));
        }
        if self.queue_limit == 0 {
            return Err("queue_limit must be at least 1 packet".into());
        }
        if self.rate_bps == Some(0) {
            return Err("rate must be positive (leave it unset for unlimited)".into());
        }
        Ok(())
    }
}

/// Counters of one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkCounters {
    /// Packets the source host sent towards the destination.
    pub offered: u64,
    /// Packets handed to the destination (by [`WanCore::poll_due`]).
    pub delivered: u64,
    /// Bytes of those packets.
    pub delivered_bytes: u64,
    /// Packets dropped by the emulated random loss.
    pub dropped_loss: u64,
    /// Packets dropped because `queue_limit` packets were in flight.
    pub dropped_queue: u64,
}

/// Counters of one direction of one link, with host names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkReport {
    /// Sending host.
    pub from: String,
    /// Receiving host.
    pub to: String,
    /// Its counters.
    #[serde(flatten)]
    pub counters: LinkCounters,
}

/// All counters of the emulator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WanCounters {
    /// Per direction of every link that saw traffic or was configured.
    pub links: Vec<LinkReport>,
    /// Packets whose destination matches no attached host.
    pub unroutable: u64,
    /// Packets that are not IPv6 or are truncated.
    pub malformed: u64,
    /// Failed writes into a destination TUN (filled in by the shell).
    pub write_errors: u64,
}

/// Why a packet was not scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Emulated random loss.
    Loss,
    /// The link's queue limit was reached.
    QueueFull,
    /// No host owns the destination address.
    Unroutable,
    /// Not an IPv6 packet, or shorter than its fixed header.
    Malformed,
}

/// What [`WanCore::handle_packet`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Scheduled for delivery to `to` at `due`.
    Queued {
        /// Destination host.
        to: HostId,
        /// When it will be due.
        due: Instant,
    },
    /// Dropped.
    Dropped(DropReason),
}

/// Errors of the emulator core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// A host name is used twice.
    #[error("host {0:?} is already attached; host names must be unique")]
    DuplicateHost(String),
    /// A host name is not known.
    #[error("no host named {0:?} is attached")]
    UnknownHost(String),
    /// Link parameters out of range.
    #[error("invalid link parameters: {0}")]
    InvalidParams(String),
}

/// SplitMix64: small, seedable, good enough for loss and jitter draws.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// FNV-1a, to derive a stable per-link seed from host names.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Debug)]
struct Link {
    params: LinkParams,
    rng: SplitMix64,
    in_flight: usize,
    /// When the serialiser is free again (rate-limited links only).
    next_free: Option<Instant>,
    counters: LinkCounters,
}

#[derive(Debug)]
struct Pending {
    due: Instant,
    seq: u64,
    from: HostId,
    to: HostId,
    packet: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    /// Reversed so that `BinaryHeap` (a max-heap) pops the earliest first;
    /// `seq` keeps packets with equal due times in arrival order.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// Offset of the destination address in the IPv6 header.
const IPV6_DST: std::ops::Range<usize> = 24..40;
/// Length of the fixed IPv6 header.
const IPV6_HEADER_LEN: usize = 40;

/// The emulator's state: hosts, routes, links, packets in flight.
#[derive(Debug)]
pub struct WanCore {
    seed: u64,
    default_link: LinkParams,
    hosts: Vec<String>,
    /// Longest prefix first.
    routes: Vec<(Ipv6Net, HostId)>,
    links: HashMap<(HostId, HostId), Link>,
    pending: BinaryHeap<Pending>,
    next_seq: u64,
    unroutable: u64,
    malformed: u64,
}

impl WanCore {
    /// An empty emulator; links not configured explicitly use
    /// `default_link`; `seed` seeds every link's loss and jitter draws.
    pub fn new(seed: u64, default_link: LinkParams) -> Result<Self, CoreError> {
        default_link.validate().map_err(CoreError::InvalidParams)?;
        Ok(WanCore {
            seed,
            default_link,
            hosts: Vec::new(),
            routes: Vec::new(),
            links: HashMap::new(),
            pending: BinaryHeap::new(),
            next_seq: 0,
            unroutable: 0,
            malformed: 0,
        })
    }

    /// Adds a host (without routes yet).
    pub fn add_host(&mut self, name: &str) -> Result<HostId, CoreError> {
        if self.host_id(name).is_some() {
            return Err(CoreError::DuplicateHost(name.to_string()));
        }
        self.hosts.push(name.to_string());
        Ok(self.hosts.len() - 1)
    }

    /// The id of host `name`.
    pub fn host_id(&self, name: &str) -> Option<HostId> {
        self.hosts.iter().position(|h| h == name)
    }

    fn require_host(&self, name: &str) -> Result<HostId, CoreError> {
        self.host_id(name)
            .ok_or_else(|| CoreError::UnknownHost(name.to_string()))
    }

    /// The name of host `id`.
    pub fn host_name(&self, id: HostId) -> &str {
        &self.hosts[id]
    }

    /// Names of all hosts, in attach order.
    pub fn host_names(&self) -> &[String] {
        &self.hosts
    }

    /// Delivers packets for destinations inside `prefix` to `host`.
    /// Replaces an existing route for the same prefix.
    pub fn add_route(&mut self, host: &str, prefix: Ipv6Net) -> Result<(), CoreError> {
        let id = self.require_host(host)?;
        let prefix = prefix.trunc();
        self.routes.retain(|(p, _)| *p != prefix);
        self.routes.push((prefix, id));
        self.routes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.prefix_len()));
        Ok(())
    }

    /// Removes the route for `prefix`; returns whether there was one.
    pub fn remove_route(&mut self, prefix: Ipv6Net) -> bool {
        let prefix = prefix.trunc();
        let before = self.routes.len();
        self.routes.retain(|(p, _)| *p != prefix);
        self.routes.len() != before
    }

    /// The host that owns `dst` (longest prefix match).
    pub fn route(&self, dst: Ipv6Addr) -> Option<HostId> {
        self.routes
            .iter()
            .find(|(prefix, _)| prefix.contains(&dst))
            .map(|(_, host)| *host)
    }

    fn link_mut(&mut self, from: HostId, to: HostId) -> &mut Link {
        let (seed, default_link) = (self.seed, self.default_link);
        let key = fnv1a(format!("{}->{}", self.hosts[from], self.hosts[to]).as_bytes());
        self.links.entry((from, to)).or_insert_with(|| Link {
            params: default_link,
            rng: SplitMix64::new(seed ^ key),
            in_flight: 0,
            next_free: None,
            counters: LinkCounters::default(),
        })
    }

    /// Sets the parameters of the direction `from -> to`.
    pub fn set_link(&mut self, from: &str, to: &str, params: LinkParams) -> Result<(), CoreError> {
        params.validate().map_err(CoreError::InvalidParams)?;
        let (from, to) = (self.require_host(from)?, self.require_host(to)?);
        self.link_mut(from, to).params = params;
        Ok(())
    }

    /// The parameters of the direction `from -> to`.
    pub fn link_params(&self, from: &str, to: &str) -> Result<LinkParams, CoreError> {
        let (from, to) = (self.require_host(from)?, self.require_host(to)?);
        Ok(self
            .links
            .get(&(from, to))
            .map_or(self.default_link, |l| l.params))
    }

    /// The counters of the direction `from -> to`.
    pub fn link_counters(&self, from: &str, to: &str) -> Result<LinkCounters, CoreError> {
        let (from, to) = (self.require_host(from)?, self.require_host(to)?);
        Ok(self
            .links
            .get(&(from, to))
            .map(|l| l.counters)
            .unwrap_or_default())
    }

    /// Every counter, links sorted by host names.
    pub fn counters(&self) -> WanCounters {
        let mut links: Vec<LinkReport> = self
            .links
            .iter()
            .map(|(&(from, to), link)| LinkReport {
                from: self.hosts[from].clone(),
                to: self.hosts[to].clone(),
                counters: link.counters,
            })
            .collect();
        links.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
        WanCounters {
            links,
            unroutable: self.unroutable,
            malformed: self.malformed,
            write_errors: 0,
        }
    }

    /// Number of packets in flight on all links.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Takes a packet that host `from` sent at `now` and schedules or drops it.
    pub fn handle_packet(&mut self, now: Instant, from: HostId, packet: Vec<u8>) -> Verdict {
        if packet.len() < IPV6_HEADER_LEN || packet[0] >> 4 != 6 {
            self.malformed += 1;
            return Verdict::Dropped(DropReason::Malformed);
        }
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&packet[IPV6_DST]);
        let Some(to) = self.route(Ipv6Addr::from(dst)) else {
            self.unroutable += 1;
            return Verdict::Dropped(DropReason::Unroutable);
        };
        let link = self.link_mut(from, to);
        link.counters.offered += 1;
        // Always draw both numbers so that one link's sequence of outcomes
        // does not depend on which parameters were set.
        let loss_draw = link.rng.next_f64();
        let jitter_draw = link.rng.next_f64();
        if loss_draw < link.params.loss {
            link.counters.dropped_loss += 1;
            return Verdict::Dropped(DropReason::Loss);
        }
        if link.in_flight >= link.params.queue_limit {
            link.counters.dropped_queue += 1;
            return Verdict::Dropped(DropReason::QueueFull);
        }
        let sent = match link.params.rate_bps {
            Some(rate) => {
                let start = link.next_free.map_or(now, |free| free.max(now));
                let bits = packet.len() as u64 * 8;
                let end = start + Duration::from_nanos(bits.saturating_mul(1_000_000_000) / rate);
                link.next_free = Some(end);
                end
            }
            None => now,
        };
        let latency = link.params.latency.as_secs_f64();
        let jitter = link.params.jitter.as_secs_f64() * (2.0 * jitter_draw - 1.0);
        let due = sent + Duration::from_secs_f64((latency + jitter).max(0.0));
        link.in_flight += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push(Pending {
            due,
            seq,
            from,
            to,
            packet,
        });
        Verdict::Queued { to, due }
    }

    /// When the next packet is due, if any is in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.peek().map(|p| p.due)
    }

    /// The next packet due at or before `now`, with its destination host.
    pub fn poll_due(&mut self, now: Instant) -> Option<(HostId, Vec<u8>)> {
        if self.pending.peek()?.due > now {
            return None;
        }
        let p = self.pending.pop()?;
        if let Some(link) = self.links.get_mut(&(p.from, p.to)) {
            link.in_flight -= 1;
            link.counters.delivered += 1;
            link.counters.delivered_bytes += p.packet.len() as u64;
        }
        Some((p.to, p.packet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal IPv6 header (no payload) from `src` to `dst`.
    fn packet(dst: Ipv6Addr, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len.max(IPV6_HEADER_LEN)];
        p[0] = 0x60;
        p[IPV6_DST].copy_from_slice(&dst.octets());
        p
    }

    fn two_hosts(params: LinkParams) -> WanCore {
        let mut core = WanCore::new(7, LinkParams::default()).unwrap();
        core.add_host("a").unwrap();
        core.add_host("b").unwrap();
        core.add_route("a", "fd00:4841:ffff::1/128".parse().unwrap())
            .unwrap();
        core.add_route("b", "fd00:4841:ffff::2/128".parse().unwrap())
            .unwrap();
        core.add_route("b", "fd00:4841:100::/64".parse().unwrap())
            .unwrap();
        core.set_link("a", "b", params).unwrap();
        core
    }

    const B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x4841, 0xffff, 0, 0, 0, 0, 2);

    #[test]
    fn delivers_after_latency_in_order() {
        let mut core = two_hosts(LinkParams::with_latency(Duration::from_millis(30)));
        let t0 = Instant::now();
        for i in 0..3u64 {
            let v =
                core.handle_packet(t0 + Duration::from_micros(i), 0, packet(B, 40 + i as usize));
            assert!(matches!(v, Verdict::Queued { to: 1, .. }), "{v:?}");
        }
        assert_eq!(core.poll_timeout(), Some(t0 + Duration::from_millis(30)));
        assert!(core.poll_due(t0 + Duration::from_millis(29)).is_none());
        let later = t0 + Duration::from_millis(31);
        let lens: Vec<usize> = std::iter::from_fn(|| core.poll_due(later))
            .map(|(_, p)| p.len())
            .collect();
        assert_eq!(lens, vec![40, 41, 42]);
        let c = core.link_counters("a", "b").unwrap();
        assert_eq!((c.offered, c.delivered, c.delivered_bytes), (3, 3, 123));
    }

    #[test]
    fn longest_prefix_wins_and_unknown_is_unroutable() {
        let mut core = two_hosts(LinkParams::default());
        core.add_route("a", "fd00:4841::/32".parse().unwrap())
            .unwrap();
        assert_eq!(core.route("fd00:4841:100::5".parse().unwrap()), Some(1));
        assert_eq!(core.route("fd00:4841:200::5".parse().unwrap()), Some(0));
        let v = core.handle_packet(
            Instant::now(),
            0,
            packet("2001:db8::1".parse().unwrap(), 40),
        );
        assert_eq!(v, Verdict::Dropped(DropReason::Unroutable));
        assert_eq!(core.counters().unroutable, 1);
    }

    #[test]
    fn malformed_packets_are_counted() {
        let mut core = two_hosts(LinkParams::default());
        let now = Instant::now();
        assert_eq!(
            core.handle_packet(now, 0, vec![0x60; 10]),
            Verdict::Dropped(DropReason::Malformed)
        );
        let mut v4 = packet(B, 40);
        v4[0] = 0x45;
        assert_eq!(
            core.handle_packet(now, 0, v4),
            Verdict::Dropped(DropReason::Malformed)
        );
        assert_eq!(core.counters().malformed, 2);
    }

    #[test]
    fn loss_is_seeded_and_close_to_the_rate() {
        let run = || {
            let mut core = two_hosts(LinkParams {
                loss: 0.1,
                ..LinkParams::default()
            });
            let now = Instant::now();
            (0..10_000)
                .map(|_| core.handle_packet(now, 0, packet(B, 40)))
                .map(|v| v == Verdict::Dropped(DropReason::Loss))
                .collect::<Vec<bool>>()
        };
        let first = run();
        assert_eq!(first, run(), "same seed, same losses");
        let lost = first.iter().filter(|&&l| l).count();
        assert!((900..1100).contains(&lost), "lost {lost} of 10000 at 10%");
    }

    #[test]
    fn queue_limit_drops_and_counts() {
        let mut core = two_hosts(LinkParams {
            latency: Duration::from_millis(10),
            queue_limit: 2,
            ..LinkParams::default()
        });
        let now = Instant::now();
        for _ in 0..3 {
            core.handle_packet(now, 0, packet(B, 40));
        }
        let c = core.link_counters("a", "b").unwrap();
        assert_eq!((c.offered, c.dropped_queue), (3, 1));
        assert!(core.poll_due(now + Duration::from_millis(10)).is_some());
        assert!(matches!(
            core.handle_packet(now, 0, packet(B, 40)),
            Verdict::Queued { .. }
        ));
    }

    #[test]
    fn rate_serialises_packets() {
        // 1500-byte packets at 12 Mbit/s take 1 ms each.
        let mut core = two_hosts(LinkParams {
            latency: Duration::from_millis(5),
            rate_bps: Some(12_000_000),
            ..LinkParams::default()
        });
        let now = Instant::now();
        let dues: Vec<Instant> = (0..3)
            .map(|_| match core.handle_packet(now, 0, packet(B, 1500)) {
                Verdict::Queued { due, .. } => due,
                v => panic!("{v:?}"),
            })
            .collect();
        assert_eq!(dues[0], now + Duration::from_millis(6));
        assert_eq!(dues[2], now + Duration::from_millis(8));
    }

    #[test]
    fn jitter_stays_in_bounds_and_reorders() {
        let mut core = two_hosts(LinkParams {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            ..LinkParams::default()
        });
        let t0 = Instant::now();
        for i in 0..200u32 {
            let mut p = packet(B, 44);
            p[40..44].copy_from_slice(&i.to_be_bytes());
            match core.handle_packet(t0 + Duration::from_micros(u64::from(i) * 100), 0, p) {
                Verdict::Queued { due, .. } => {
                    let d = due - (t0 + Duration::from_micros(u64::from(i) * 100));
                    assert!(
                        d >= Duration::from_millis(15) && d <= Duration::from_millis(25),
                        "{d:?}"
                    );
                }
                v => panic!("{v:?}"),
            }
        }
        let end = t0 + Duration::from_secs(1);
        let order: Vec<u32> = std::iter::from_fn(|| core.poll_due(end))
            .map(|(_, p)| u32::from_be_bytes(p[40..44].try_into().unwrap()))
            .collect();
        assert_eq!(order.len(), 200);
        assert!(
            order.windows(2).any(|w| w[0] > w[1]),
            "jitter 5 ms over 0.1 ms gaps must reorder"
        );
    }

    #[test]
    fn invalid_params_and_names_are_rejected() {
        let mut core = two_hosts(LinkParams::default());
        let bad = LinkParams {
            loss: 1.5,
            ..LinkParams::default()
        };
        assert!(matches!(
            core.set_link("a", "b", bad),
            Err(CoreError::InvalidParams(_))
        ));
        assert!(matches!(
            core.set_link("a", "zz", LinkParams::default()),
            Err(CoreError::UnknownHost(_))
        ));
        assert!(matches!(
            core.add_host("a"),
            Err(CoreError::DuplicateHost(_))
        ));
    }
}
