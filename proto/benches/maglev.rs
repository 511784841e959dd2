//! Maglev and affinity-table figures: rebuild and lookup cost, disruption,
//! balance, and the affinity table's memory and speed at one million flows.
//!
//! `cargo bench -p homeaddr-proto --bench maglev` prints one table. A plain
//! `main` (harness = false) timed with `Instant`; medians of repeated runs.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use homeaddr_proto::affinity::{AffinityConfig, AffinityTable, EXPIRE_TICK};
use homeaddr_proto::maglev::{DEFAULT_TABLE_SIZE, Maglev};
use homeaddr_proto::wire::inner::TcpFlags;
use homeaddr_proto::wire::{FlowKey, MemberId};

const SIZES: [u16; 3] = [10, 100, 1000];
const FLOWS: u32 = 1_000_000;

fn main() {
    let mut rows: Vec<(String, String)> = Vec::new();
    // The affinity table first, so that its resident-size delta is not
    // blurred by memory the Maglev runs freed.
    affinity(&mut rows);
    maglev(&mut rows);

    let kw = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let vw = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    println!();
    println!("| {:kw$} | {:vw$} |", "measure", "value");
    println!("|{}|{}|", "-".repeat(kw + 2), "-".repeat(vw + 2));
    for (k, v) in &rows {
        println!("| {k:kw$} | {v:vw$} |");
    }
}

fn equal(n: u16) -> Vec<(MemberId, u32)> {
    (0..n).map(|i| (MemberId(i), 1)).collect()
}

fn built(members: &[(MemberId, u32)]) -> Maglev {
    let mut maglev = Maglev::new(DEFAULT_TABLE_SIZE).expect("default size is valid");
    maglev.set_members(members).expect("valid members");
    maglev
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A pseudo-random client address per index (splitmix64).
fn client(i: u64) -> Ipv6Addr {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    Ipv6Addr::from_bits(0x2001_0db8_u128 << 96 | u128::from(z))
}

fn flow(i: u32) -> FlowKey {
    FlowKey {
        src: client(u64::from(i)),
        dst: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
        proto: 6,
        src_port: 1024 + (i % 60_000) as u16,
        dst_port: 443,
    }
}

fn changed_percent(a: &Maglev, b: &Maglev) -> f64 {
    100.0 * a.slots_changed(b) as f64 / a.table_size() as f64
}

fn maglev(rows: &mut Vec<(String, String)>) {
    let m = DEFAULT_TABLE_SIZE;
    for n in SIZES {
        let members = equal(n);
        let mut maglev = Maglev::new(m).expect("default size is valid");
        let runs: Vec<Duration> = (0..21)
            .map(|_| {
                let t = Instant::now();
                maglev
                    .set_members(black_box(&members))
                    .expect("valid members");
                t.elapsed()
            })
            .collect();
        let min = runs.iter().min().copied().unwrap_or_default();
        rows.push((
            format!("rebuild, N={n}, M={m} (median of 21)"),
            format!("{:.3} ms (min {:.3} ms)", ms(median(runs)), ms(min)),
        ));
    }

    let maglev = built(&equal(100));
    let clients: Vec<Ipv6Addr> = (0..1u64 << 16).map(client).collect();
    let rounds = 64;
    let t = Instant::now();
    let mut sink = 0u32;
    for _ in 0..rounds {
        for c in &clients {
            sink = sink.wrapping_add(u32::from(
                maglev.lookup_client(black_box(c)).map_or(0, |m| m.0),
            ));
        }
    }
    black_box(sink);
    let per = t.elapsed().as_nanos() as f64 / (rounds * clients.len()) as f64;
    rows.push((
        "lookup_client (hash + table), N=100".into(),
        format!("{per:.1} ns/op"),
    ));
    let hashes: Vec<u64> = (0..1u64 << 16)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    let t = Instant::now();
    for _ in 0..rounds {
        for &h in &hashes {
            sink = sink.wrapping_add(u32::from(maglev.lookup(black_box(h)).map_or(0, |m| m.0)));
        }
    }
    black_box(sink);
    let per = t.elapsed().as_nanos() as f64 / (rounds * hashes.len()) as f64;
    rows.push((
        "lookup (table only), N=100".into(),
        format!("{per:.1} ns/op"),
    ));

    for n in SIZES {
        let full = built(&equal(n));
        // Remove: up to 20 victims spread over the ids. Add: 4 new ids to
        // N - 1 members. Changed slots of the whole table, all counted.
        let mut remove = Vec::new();
        for victim in (0..n).step_by(usize::from(n / 20).max(1)) {
            let rest: Vec<_> = equal(n)
                .into_iter()
                .filter(|&(id, _)| id.0 != victim)
                .collect();
            remove.push(changed_percent(&full, &built(&rest)));
        }
        let mut add = Vec::new();
        let mut before = equal(n - 1);
        let small = built(&before);
        for new_id in [n, n + 7, 3000, 65535] {
            before.push((MemberId(new_id), 1));
            add.push(changed_percent(&small, &built(&before)));
            before.pop();
        }
        let minimum = 100.0 / f64::from(n);
        let worst = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        rows.push((
            format!("disruption remove 1 of N={n} (mean / worst)"),
            format!(
                "{:.3} % / {:.3} % = {:.2} / {:.2} x the minimum 1/N",
                mean(&remove),
                worst(&remove),
                mean(&remove) / minimum,
                worst(&remove) / minimum
            ),
        ));
        rows.push((
            format!("disruption add 1 to N-1, N={n} (mean / worst)"),
            format!(
                "{:.3} % / {:.3} % = {:.2} / {:.2} x the minimum 1/N",
                mean(&add),
                worst(&add),
                mean(&add) / minimum,
                worst(&add) / minimum
            ),
        ));

        let shares: Vec<usize> = (0..n).map(|i| full.share_of(MemberId(i))).collect();
        let max = shares.iter().max().copied().unwrap_or(0);
        let min = shares.iter().min().copied().unwrap_or(0);
        let mean_share = m as f64 / f64::from(n);
        rows.push((
            format!("share spread, N={n} ((max-min)/mean)"),
            format!(
                "{min}..{max} slots: {:.3} %",
                100.0 * (max - min) as f64 / mean_share
            ),
        ));
    }
}

fn affinity(rows: &mut Vec<(String, String)>) {
    let maglev = built(&equal(100));
    let syn = Some(TcpFlags {
        syn: true,
        ack: false,
        fin: false,
        rst: false,
    });
    let ack = Some(TcpFlags {
        syn: false,
        ack: true,
        fin: false,
        rst: false,
    });
    let rss_before = resident_bytes();
    let mut table = AffinityTable::new(AffinityConfig::default());
    let now = Instant::now();
    let t = Instant::now();
    for i in 0..FLOWS {
        let key = flow(i);
        black_box(table.lookup_or_insert(now, &key, syn, 60, || maglev.lookup_client(&key.src)));
    }
    let insert = t.elapsed().as_nanos() as f64 / f64::from(FLOWS);
    let rss_after = resident_bytes();
    assert_eq!(table.len(), FLOWS as usize);

    // Hits in a different order than the inserts (a stride coprime to 10^6).
    let t = Instant::now();
    for j in 0..FLOWS {
        let i = (u64::from(j) * 999_983 % u64::from(FLOWS)) as u32;
        black_box(table.lookup_or_insert(now, &flow(i), ack, 1500, || None));
    }
    let hit = t.elapsed().as_nanos() as f64 / f64::from(FLOWS);
    // The same loop without the table: key construction alone.
    let t = Instant::now();
    for j in 0..FLOWS {
        let i = (u64::from(j) * 999_983 % u64::from(FLOWS)) as u32;
        black_box(flow(i));
    }
    let keys_only = t.elapsed().as_nanos() as f64 / f64::from(FLOWS);

    table.expire(now); // start the sweep clock
    let slices: Vec<Duration> = (1..=11)
        .map(|k| {
            let t = Instant::now();
            table.expire(now + EXPIRE_TICK * k);
            t.elapsed()
        })
        .collect();
    let sweep = median(slices);

    rows.push((
        "affinity bytes/flow at 1M (estimate)".into(),
        format!(
            "{:.1} B ({:.1} MB total)",
            table.memory_bytes() as f64 / f64::from(FLOWS),
            table.memory_bytes() as f64 / 1e6
        ),
    ));
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        rows.push((
            "affinity bytes/flow at 1M (resident delta)".into(),
            format!(
                "{:.1} B",
                (after.saturating_sub(before)) as f64 / f64::from(FLOWS)
            ),
        ));
    }
    rows.push((
        "affinity insert (miss + Maglev), 0->1M".into(),
        format!("{:.1} ns/op", insert - keys_only),
    ));
    rows.push((
        "affinity lookup (hit), random order, 1M".into(),
        format!("{:.1} ns/op", hit - keys_only),
    ));
    rows.push((
        "affinity expire() every 100 ms, 1M flows (median)".into(),
        format!("{:.3} ms", ms(sweep)),
    ));
    let t = Instant::now();
    let removed = table.remove_member(MemberId(42));
    rows.push((
        format!("affinity remove_member ({removed} of 1M flows)"),
        format!("{:.2} ms", ms(t.elapsed())),
    ));
    drop(table);
    std_map_baseline(rows, keys_only);
}

/// The obvious alternative, for comparison: std's `HashMap` from the key to
/// a value of the same size as `AffinityEntry`.
fn std_map_baseline(rows: &mut Vec<(String, String)>, keys_only: f64) {
    type Value = (MemberId, Instant, u64, u64, u8);
    let now = Instant::now();
    let mut map: HashMap<FlowKey, Value> = HashMap::new();
    let t = Instant::now();
    for i in 0..FLOWS {
        map.insert(flow(i), (MemberId(1), now, 1, 60, 0));
    }
    let insert = t.elapsed().as_nanos() as f64 / f64::from(FLOWS);
    let t = Instant::now();
    for j in 0..FLOWS {
        let i = (u64::from(j) * 999_983 % u64::from(FLOWS)) as u32;
        if let Some(v) = map.get_mut(&flow(i)) {
            v.2 += 1;
            black_box(v.0);
        }
    }
    let hit = t.elapsed().as_nanos() as f64 / f64::from(FLOWS);
    // hashbrown: power-of-two buckets, at most 7/8 full, 1 control byte each.
    let buckets = (map.capacity() * 8 / 7).next_power_of_two();
    let bytes = buckets * (size_of::<(FlowKey, Value)>() + 1);
    rows.push((
        "baseline std HashMap<FlowKey, entry> at 1M".into(),
        format!(
            "{:.1} B/flow, insert {:.1} ns/op, hit {:.1} ns/op",
            bytes as f64 / f64::from(FLOWS),
            insert - keys_only,
            hit - keys_only
        ),
    ));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Resident set size from /proc (Linux); `None` elsewhere.
fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
