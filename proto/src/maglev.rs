//! Maglev consistent hashing with weights: which member a new client goes to.
//!
//! Layer: [`crate`] core, below the access point engine. Pure computation: no
//! clock, no randomness, no allocation on the lookup path.
//!
//! Contract: [`Maglev::lookup`] maps a 64-bit key hash to a member through a
//! lookup table of prime size M, built as in Eisenbud et al., "Maglev: A Fast
//! and Reliable Software Network Load Balancer" (NSDI 2016), sec. 3.4,
//! Pseudocode 1. The table is a pure function of the member set (ids and
//! weights) and M: the same set in any order gives the same table on every
//! machine and every Rust version. When one member joins or leaves, that
//! member's share of the table (1 / N) changes owner, plus some churn from
//! the tail of the fill that grows with N / M: measured with M = 65537,
//! 1.04 / N at N = 10, 1.6 / N at N = 100, 7 / N at N = 1000; with
//! M = 655373, 1.15 / N at N = 100. To keep a change within 1.2 / N, choose
//! M of about 6500 N (the paper's M >= 100 N only bounds the imbalance).
//! Only new flows follow the table: established flows must not move at all,
//! which is the job of the connection table next to it
//! ([`crate::affinity::AffinityTable`], paper sec. 3.3).
//!
//! ## Construction (paper sec. 3.4)
//!
//! Each member derives two independent hashes of its [`MemberId`]:
//! `offset = h1(id) mod M` and `skip = h2(id) mod (M - 1) + 1`. Its
//! preference list is the permutation `(offset + j * skip) mod M`,
//! `j = 0, 1, ..`; because M is prime and `1 <= skip < M` this visits every
//! slot exactly once. Members then take turns: on its turn a member walks its
//! preference list to the first slot still empty and claims it, until the
//! table is full. With equal weights every member takes one turn per round,
//! so all shares are within one entry of each other.
//!
//! ## Weights
//!
//! The weighted variant gives turns in proportion to the weight: every round,
//! each member earns its weight as credit and takes one turn per `unit` of
//! credit it holds (`unit` = the largest weight, so the heaviest members take
//! one turn per round and the others interleave; it is capped at four times
//! the mean weight so that one huge weight cannot make the rebuild crawl
//! through thousands of near-empty rounds). Every turn fills exactly one
//! slot, so shares are proportional to weights within about one turn.
//! Weight 0 means *draining*: the member keeps its place in the member list
//! but gets no slots, so it gets no new clients while the affinity table keeps
//! its open connections where they are.
//!
//! ## Cost
//!
//! Nothing is allocated per step and there is no division in the fill loop:
//! the preference walk is an addition and a conditional subtraction, and the
//! "slot taken?" test reads a bitset of M bits (8 KiB for M = 65537, it stays
//! in L1). A rebuild costs about `M ln M` probes: 1.1 to 1.5 ms for
//! M = 65537 at 10 to 1000 members (see `benches/maglev.rs`). A lookup is
//! one multiply-high reduction and one load from a 2-byte-per-slot table.

use std::net::Ipv6Addr;

use crate::wire::MemberId;

/// The table size the paper uses for its production numbers; a prime.
///
/// Large enough for up to ~650 members at the paper's "M >= 100 N" rule,
/// small enough (128 KiB) to stay in a core's L2 cache.
pub const DEFAULT_TABLE_SIZE: usize = 65537;

/// The smallest table size [`Maglev::new`] accepts.
pub const MIN_TABLE_SIZE: usize = 7;

/// The largest table size [`Maglev::new`] accepts (2^24: 32 MiB of entries,
/// a rebuild of about a second).
pub const MAX_TABLE_SIZE: usize = 1 << 24;

/// Why a Maglev table could not be created or rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MaglevError {
    /// The table size is not a prime number.
    #[error(
        "Maglev table size {0} is not prime: the preference lists are only permutations \
         when the size is prime; use {next} (the next prime) or the default 65537",
        next = next_prime(*.0)
    )]
    NotPrime(usize),
    /// The table size is below [`MIN_TABLE_SIZE`].
    #[error(
        "Maglev table size {size} is too small (minimum {min}); use a prime of at least \
         100 x the number of members, e.g. the default 65537"
    )]
    TooSmall {
        /// The size asked for.
        size: usize,
        /// The smallest size accepted.
        min: usize,
    },
    /// The table size is above [`MAX_TABLE_SIZE`].
    #[error(
        "Maglev table size {size} is too large (maximum {max}); 100 x the number of \
         members is plenty, e.g. the default 65537"
    )]
    TooLarge {
        /// The size asked for.
        size: usize,
        /// The largest size accepted.
        max: usize,
    },
    /// More members with a weight above zero than the table has slots.
    #[error(
        "{members} members with weight > 0 do not fit a Maglev table of {table_size} slots; \
         create the table with a prime size of at least 100 x the member count"
    )]
    TooManyMembers {
        /// Members with a weight above zero.
        members: usize,
        /// The table size.
        table_size: usize,
    },
    /// The same member id appears twice in the member list.
    #[error(
        "member {0} appears twice in the Maglev member list; give each member one entry \
         (its total weight)"
    )]
    DuplicateMember(MemberId),
}

/// A weighted Maglev lookup table: see the [module documentation](self).
#[derive(Clone)]
pub struct Maglev {
    /// M, a prime.
    table_size: usize,
    /// Precomputed `u64::MAX / M + 1` for the division-free reduction.
    reduce_magic: u64,
    /// The member set, sorted by id: `(id, weight)`.
    members: Vec<(MemberId, u32)>,
    /// Slots owned by each member of `members` (same index).
    shares: Vec<usize>,
    /// The lookup table: M slots, or empty when no member has a weight.
    entries: Vec<MemberId>,
}

impl std::fmt::Debug for Maglev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The table itself is 65537 entries: show the shares instead.
        f.debug_struct("Maglev")
            .field("table_size", &self.table_size)
            .field("members", &self.members)
            .field("shares", &self.shares)
            .finish_non_exhaustive()
    }
}

impl Maglev {
    /// An empty table of `table_size` slots (a prime between
    /// [`MIN_TABLE_SIZE`] and [`MAX_TABLE_SIZE`]; [`DEFAULT_TABLE_SIZE`] is a
    /// good choice up to ~650 members). Lookups return `None` until
    /// [`set_members`](Self::set_members) adds a member with a weight.
    pub fn new(table_size: usize) -> Result<Self, MaglevError> {
        if table_size < MIN_TABLE_SIZE {
            return Err(MaglevError::TooSmall {
                size: table_size,
                min: MIN_TABLE_SIZE,
            });
        }
        if table_size > MAX_TABLE_SIZE {
            return Err(MaglevError::TooLarge {
                size: table_size,
                max: MAX_TABLE_SIZE,
            });
        }
        if !is_prime(table_size) {
            return Err(MaglevError::NotPrime(table_size));
        }
        Ok(Self {
            table_size,
            reduce_magic: u64::MAX / table_size as u64 + 1,
            members: Vec::new(),
            shares: Vec::new(),
            entries: Vec::new(),
        })
    }

    /// Replaces the member set with `members` (`(id, weight)` pairs) and
    /// rebuilds the table.
    ///
    /// Weight 0 marks a draining member: it stays listed (see
    /// [`members`](Self::members)) but owns no slot. The result does not
    /// depend on the order of `members`. On error the previous table stays
    /// in place.
    pub fn set_members(&mut self, members: &[(MemberId, u32)]) -> Result<(), MaglevError> {
        let mut sorted = members.to_vec();
        sorted.sort_unstable_by_key(|&(id, _)| id);
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(MaglevError::DuplicateMember(pair[0].0));
        }
        let active = sorted.iter().filter(|&&(_, weight)| weight > 0).count();
        if active > self.table_size {
            return Err(MaglevError::TooManyMembers {
                members: active,
                table_size: self.table_size,
            });
        }
        self.members = sorted;
        self.rebuild();
        Ok(())
    }

    /// Fills `entries` and `shares` from `members` (paper Pseudocode 1 with
    /// weighted turns).
    fn rebuild(&mut self) {
        let m = self.table_size;
        self.shares.clear();
        self.shares.resize(self.members.len(), 0);
        self.entries.clear();

        // Per active member: index into `members`, weight, next position
        // in its preference list, skip, turn credit.
        struct Walker {
            index: usize,
            id: MemberId,
            weight: u64,
            next: u32,
            skip: u32,
            credit: u64,
        }
        let mut walkers: Vec<Walker> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, (_, weight))| *weight > 0)
            .map(|(index, &(id, weight))| {
                let (offset, skip) = permutation(id, m);
                Walker {
                    index,
                    id,
                    weight: u64::from(weight),
                    next: offset,
                    skip,
                    credit: 0,
                }
            })
            .collect();
        if walkers.is_empty() {
            return;
        }
        let total_weight: u64 = walkers.iter().map(|w| w.weight).sum();
        let max_weight = walkers.iter().map(|w| w.weight).max().unwrap_or(1);
        let mean_cap = (4 * total_weight).div_ceil(walkers.len() as u64);
        let unit = max_weight.min(mean_cap).max(1);
        // Half a unit of starting credit rounds each member's turn count to
        // nearest instead of down, so light members are not always last.
        for walker in &mut walkers {
            walker.credit = unit / 2;
        }

        // The placeholder is overwritten: every slot is claimed exactly once.
        self.entries.resize(m, MemberId(0));
        let mut taken = vec![0u64; m.div_ceil(64)];
        let m32 = m as u32;
        let mut filled = 0usize;
        'fill: loop {
            for walker in &mut walkers {
                walker.credit += walker.weight;
                while walker.credit >= unit {
                    walker.credit -= unit;
                    // One turn: claim the first free slot of the preference list.
                    let mut pos = walker.next;
                    loop {
                        let slot = pos;
                        pos += walker.skip;
                        if pos >= m32 {
                            pos -= m32;
                        }
                        let word = &mut taken[(slot >> 6) as usize];
                        let bit = 1u64 << (slot & 63);
                        if *word & bit == 0 {
                            *word |= bit;
                            self.entries[slot as usize] = walker.id;
                            break;
                        }
                    }
                    walker.next = pos;
                    self.shares[walker.index] += 1;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
    }

    /// The member for a key hash, or `None` when no member has a weight.
    ///
    /// The slot is `fold(key_hash) mod M`, where `fold` xors the two 32-bit
    /// halves, so the hash should be well mixed in either half (as
    /// [`hash_client`] is).
    #[inline]
    pub fn lookup(&self, key_hash: u64) -> Option<MemberId> {
        self.entries.get(self.slot(key_hash)).copied()
    }

    /// The member for a client address: `lookup(hash_client(client))`.
    #[inline]
    pub fn lookup_client(&self, client: &Ipv6Addr) -> Option<MemberId> {
        self.lookup(hash_client(client))
    }

    /// The table slot `key_hash` maps to.
    #[inline]
    fn slot(&self, key_hash: u64) -> usize {
        let folded = (key_hash ^ (key_hash >> 32)) as u32;
        // Lemire's fastmod: exact `folded % M` for 32-bit operands, without a
        // division (Lemire, Kaser, Kurz 2019, "Faster remainder by direct
        // computation").
        let low = self.reduce_magic.wrapping_mul(u64::from(folded));
        ((u128::from(low) * self.table_size as u128) >> 64) as usize
    }

    /// M, the number of slots.
    pub fn table_size(&self) -> usize {
        self.table_size
    }

    /// The lookup table: slot `i` is owned by `entries()[i]`. Empty when no
    /// member has a weight, otherwise [`table_size`](Self::table_size) long.
    pub fn entries(&self) -> &[MemberId] {
        &self.entries
    }

    /// The member set as last given to [`set_members`](Self::set_members),
    /// sorted by id, draining members (weight 0) included.
    pub fn members(&self) -> &[(MemberId, u32)] {
        &self.members
    }

    /// A digest of the table's input, the same on every machine and build:
    /// FNV-1a 64 over M (8 bytes, big-endian), then each member with a
    /// weight above zero, sorted by id, as its id (2 bytes) and weight (4
    /// bytes), big-endian. Members of weight 0 own no slot and do not
    /// count, so two tables with the same digest are equal (barring a hash
    /// collision), whatever order their members were given in.
    pub fn digest(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let fnv = |h: u64, bytes: &[u8]| {
            bytes
                .iter()
                .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
        };
        let h = fnv(OFFSET, &(self.table_size as u64).to_be_bytes());
        self.members
            .iter()
            .filter(|&&(_, weight)| weight > 0)
            .fold(h, |h, &(id, weight)| {
                fnv(fnv(h, &id.0.to_be_bytes()), &weight.to_be_bytes())
            })
    }

    /// How many slots have another owner in `other` than here: the
    /// disruption of going from one member set to the other.
    pub fn slots_changed(&self, other: &Maglev) -> usize {
        self.entries
            .iter()
            .zip(other.entries())
            .filter(|(x, y)| x != y)
            .count()
    }

    /// How many slots `id` owns (0 for unknown and draining members). Its
    /// share of new clients is `share_of(id) / table_size()`.
    pub fn share_of(&self, id: MemberId) -> usize {
        self.members
            .binary_search_by_key(&id, |&(member, _)| member)
            .map_or(0, |index| self.shares[index])
    }
}

/// `(offset, skip)` of `id`'s preference list in a table of prime size `m`.
fn permutation(id: MemberId, m: usize) -> (u32, u32) {
    let id = u64::from(id.0);
    let m = m as u64;
    // Two independent hashes: fmix64 of the id under two unrelated constants.
    let offset = fmix64(id ^ 0x2545_f491_4f6c_dd1d) % m;
    let skip = fmix64(id ^ 0x9e37_79b9_7f4a_7c15) % (m - 1) + 1;
    (offset as u32, skip as u32)
}

/// A fast, well-mixed, deterministic hash of a client address.
///
/// The same value on every machine, build and Rust version (unlike std's
/// `DefaultHasher`), so every AP replica hashes a client alike. It is not
/// keyed: a client can pick addresses that land on a member of its choice,
/// which is harmless here (it only chooses where its own flows go; the
/// affinity table, which is keyed by untrusted flows, uses a keyed hash).
///
/// Construction: the murmur3 64-bit finaliser (`fmix64`) over the high half,
/// then again over that result xor the low half; every input bit affects
/// every output bit.
#[inline]
pub fn hash_client(addr: &Ipv6Addr) -> u64 {
    let bits = addr.to_bits();
    let high = (bits >> 64) as u64;
    let low = bits as u64;
    // The constants keep fmix64's fixed point (0 -> 0) away from ::.
    fmix64(fmix64(high ^ 0x6a09_e667_f3bc_c908) ^ low ^ 0xbb67_ae85_84ca_a73b)
}

/// The murmur3 64-bit finaliser: a bijection with full avalanche.
#[inline]
fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Trial division; table sizes are at most 2^24, so at most ~2000 steps.
fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The smallest prime `>= n`, for error messages.
fn next_prime(n: usize) -> usize {
    (n.max(2)..).find(|&k| is_prime(k)).unwrap_or(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn equal(n: u16) -> Vec<(MemberId, u32)> {
        (0..n).map(|i| (MemberId(i), 1)).collect()
    }

    fn build(members: &[(MemberId, u32)]) -> Maglev {
        let mut maglev = Maglev::new(DEFAULT_TABLE_SIZE).unwrap();
        maglev.set_members(members).unwrap();
        maglev
    }

    #[test]
    fn maglev_digest_is_fnv1a_of_the_weighted_members_and_the_size() {
        let mut maglev = Maglev::new(7).unwrap();
        assert_eq!(
            maglev.digest(),
            0xa8c7_f132_281a_2de0,
            "empty: the size alone"
        );
        maglev
            .set_members(&[(MemberId(2), 50), (MemberId(3), 0), (MemberId(1), 100)])
            .unwrap();
        // Computed independently: FNV-1a 64 of 00..07 | 0001 00000064 | 0002 00000032.
        assert_eq!(maglev.digest(), 0x089d_3765_bbf5_c3a7);
        let mut other = Maglev::new(7).unwrap();
        other
            .set_members(&[(MemberId(1), 100), (MemberId(2), 50)])
            .unwrap();
        assert_eq!(
            other.digest(),
            maglev.digest(),
            "weight 0 and order do not count"
        );
        other
            .set_members(&[(MemberId(1), 100), (MemberId(2), 51)])
            .unwrap();
        assert_ne!(other.digest(), maglev.digest());
        let mut bigger = Maglev::new(11).unwrap();
        bigger
            .set_members(&[(MemberId(1), 100), (MemberId(2), 50)])
            .unwrap();
        assert_ne!(bigger.digest(), maglev.digest());
    }

    /// Fraction of all slots whose owner differs between `a` and `b`.
    fn changed_fraction(a: &Maglev, b: &Maglev) -> f64 {
        a.slots_changed(b) as f64 / a.table_size() as f64
    }

    /// (max share - min share) / mean share, over the members with a weight.
    fn spread(maglev: &Maglev) -> f64 {
        let shares: Vec<usize> = maglev
            .members()
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|&(id, _)| maglev.share_of(id))
            .collect();
        let max = *shares.iter().max().unwrap() as f64;
        let min = *shares.iter().min().unwrap() as f64;
        let mean = shares.iter().sum::<usize>() as f64 / shares.len() as f64;
        (max - min) / mean
    }

    /// Worst fraction of the table, in units of 1 / N, that changes owner when
    /// one member of `n` is removed (every member, or 20 spread over the ids)
    /// or added (four new ids to `n - 1` members), with a table of `m` slots.
    ///
    /// N is the member count of the larger of the two sets (before a
    /// removal, after an addition), and every changed slot counts, including
    /// the ones the removed or added member must lose or gain: that
    /// unavoidable part alone is 1 / N, so 1.0 is the minimum.
    fn worst_disruption(m: usize, n: u16) -> (f64, f64) {
        let build_m = |members: &[(MemberId, u32)]| {
            let mut maglev = Maglev::new(m).unwrap();
            maglev.set_members(members).unwrap();
            maglev
        };
        let full = build_m(&equal(n));
        let mut worst_remove = 0.0f64;
        for victim in (0..n).step_by(usize::from(n / 20).max(1)) {
            let rest: Vec<_> = equal(n).into_iter().filter(|m| m.0.0 != victim).collect();
            let removed = build_m(&rest);
            assert_eq!(removed.share_of(MemberId(victim)), 0);
            worst_remove = worst_remove.max(changed_fraction(&full, &removed));
        }
        let mut worst_add = 0.0f64;
        let mut before = equal(n - 1);
        let small = build_m(&before);
        for new_id in [n, n + 7, 1000, 65535] {
            before.push((MemberId(new_id), 1));
            worst_add = worst_add.max(changed_fraction(&small, &build_m(&before)));
            before.pop();
        }
        (worst_remove * f64::from(n), worst_add * f64::from(n))
    }

    /// Disruption target: adding or removing one member remaps at most
    /// 1.2 / N of the table (see [`worst_disruption`] for the counting).
    ///
    /// Met with the default table at N = 10 (measured 1.04 / N). At N = 100
    /// the paper's algorithm needs M >= ~6500 N for it: with M = 655373 it
    /// moves at most 1.17 / N. With the default M = 65537 it moves about
    /// 1.6 / N (the extra comes from the last rounds of the fill, when the
    /// preference walks are long); that is pinned below at 1.7 / N so a
    /// regression shows, but it is above the target: choose the table size
    /// for the member count (about 10 x the paper's M >= 100 N).
    #[test]
    fn maglev_disruption_add_remove_one_member() {
        let cases = [
            (DEFAULT_TABLE_SIZE, 10u16, 1.2),
            (655_373, 100, 1.2),
            (DEFAULT_TABLE_SIZE, 100, 1.7),
        ];
        for (m, n, bound) in cases {
            let (remove, add) = worst_disruption(m, n);
            println!("M={m} N={n}: worst remove {remove:.3}/N, worst add {add:.3}/N");
            assert!(
                remove <= bound,
                "M={m} N={n}: removal moved {remove:.3}/N > {bound}/N"
            );
            assert!(
                add <= bound,
                "M={m} N={n}: addition moved {add:.3}/N > {bound}/N"
            );
        }
    }

    /// Balance: with equal weights and M >= 100 N, the spread
    /// (max share - min share) / mean share is at most 1 %. (Every member
    /// takes one slot per round, so max - min is at most one slot.)
    #[test]
    fn maglev_equal_weights_balanced() {
        for n in [10u16, 100, 655] {
            let maglev = build(&equal(n));
            let s = spread(&maglev);
            println!("N={n}: spread {:.4} %", s * 100.0);
            assert!(s <= 0.01, "N={n}: spread {s}");
            let total: usize = (0..n).map(|i| maglev.share_of(MemberId(i))).sum();
            assert_eq!(total, DEFAULT_TABLE_SIZE);
        }
    }

    /// Weights: a weight-2 member gets twice the slots of a weight-1 member
    /// (within 1 %), weight 3 three times; a weight-0 member gets none.
    #[test]
    fn maglev_weights_proportional_and_zero_drains() {
        let members = [
            (MemberId(1), 1),
            (MemberId(2), 2),
            (MemberId(3), 1),
            (MemberId(4), 3),
            (MemberId(5), 0),
            (MemberId(6), 2),
        ];
        let maglev = build(&members);
        let unit = (maglev.share_of(MemberId(1)) + maglev.share_of(MemberId(3))) as f64 / 2.0;
        for (id, weight) in members {
            let ratio = maglev.share_of(id) as f64 / unit;
            assert!(
                (ratio - f64::from(weight)).abs() <= 0.01 * f64::from(weight.max(1)),
                "{id}: weight {weight}, share ratio {ratio}"
            );
        }
        assert_eq!(maglev.share_of(MemberId(5)), 0);
        assert!(!maglev.entries().contains(&MemberId(5)));
        assert_eq!(maglev.members().len(), 6);
    }

    /// Draining a member (weight -> 0) moves only its slots, like a removal.
    #[test]
    fn maglev_draining_is_like_removal() {
        let all = equal(10);
        let full = build(&all);
        let mut drained = all.clone();
        drained[3].1 = 0;
        let drained = build(&drained);
        let removed = build(&[&all[..3], &all[4..]].concat());
        assert_eq!(drained.entries(), removed.entries());
        assert!(changed_fraction(&full, &drained) <= 1.2 / 10.0);
    }

    /// Skewed weights still fill the whole table, quickly, in proportion.
    #[test]
    fn maglev_skewed_weights() {
        let mut members: Vec<_> = (0..999).map(|i| (MemberId(i), 1)).collect();
        members.push((MemberId(999), 100_000));
        let maglev = build(&members);
        let heavy = maglev.share_of(MemberId(999)) as f64 / DEFAULT_TABLE_SIZE as f64;
        let expected = 100_000.0 / 100_999.0;
        assert!((heavy - expected).abs() < 0.01, "heavy share {heavy}");
        let total: usize = members.iter().map(|&(id, _)| maglev.share_of(id)).sum();
        assert_eq!(total, DEFAULT_TABLE_SIZE);
    }

    #[test]
    fn maglev_deterministic_independent_of_order() {
        let members: Vec<_> = (0..50u16)
            .map(|i| (MemberId(i * 37 % 101), u32::from(i % 3)))
            .collect();
        let a = build(&members);
        let mut reversed = members.clone();
        reversed.reverse();
        let b = build(&reversed);
        let mut rotated = members.clone();
        rotated.rotate_left(17);
        let c = build(&rotated);
        assert_eq!(a.entries(), b.entries());
        assert_eq!(a.entries(), c.entries());
        // Pinned values: a change here changes where clients go after an
        // upgrade, which moves every new flow. Update only on purpose.
        let small = build(&equal(3));
        let head: Vec<u16> = small.entries()[..8].iter().map(|m| m.0).collect();
        assert_eq!(head, PINNED_HEAD, "table layout changed");
        assert_eq!(hash_client(&Ipv6Addr::LOCALHOST), PINNED_LOCALHOST_HASH);
    }

    const PINNED_HEAD: [u16; 8] = [0, 0, 2, 1, 0, 1, 1, 2];
    const PINNED_LOCALHOST_HASH: u64 = 0x26be_eaba_9d8b_28be;

    #[test]
    fn maglev_rejects_bad_sizes_and_members() {
        let err = Maglev::new(65536).unwrap_err();
        assert_eq!(err, MaglevError::NotPrime(65536));
        let msg = err.to_string();
        assert!(msg.contains("65537"), "{msg}");
        assert!(matches!(Maglev::new(5), Err(MaglevError::TooSmall { .. })));
        assert!(matches!(
            Maglev::new(MAX_TABLE_SIZE + 1),
            Err(MaglevError::TooLarge { .. })
        ));
        assert!(Maglev::new(7).is_ok());

        let mut tiny = Maglev::new(7).unwrap();
        let err = tiny.set_members(&equal(8)).unwrap_err();
        assert!(matches!(
            err,
            MaglevError::TooManyMembers {
                members: 8,
                table_size: 7
            }
        ));
        // Draining members do not count against the slots.
        let mut eight = equal(7);
        eight.push((MemberId(100), 0));
        tiny.set_members(&eight).unwrap();

        let mut maglev = build(&equal(4));
        let before = maglev.entries().to_vec();
        let err = maglev
            .set_members(&[(MemberId(1), 1), (MemberId(1), 2)])
            .unwrap_err();
        assert_eq!(err, MaglevError::DuplicateMember(MemberId(1)));
        assert_eq!(maglev.entries(), before, "table kept after an error");
    }

    #[test]
    fn maglev_empty_and_all_draining_look_up_none() {
        let mut maglev = Maglev::new(DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(maglev.lookup(42), None);
        maglev
            .set_members(&[(MemberId(1), 0), (MemberId(2), 0)])
            .unwrap();
        assert_eq!(maglev.lookup_client(&Ipv6Addr::LOCALHOST), None);
        assert!(maglev.entries().is_empty());
        maglev
            .set_members(&[(MemberId(1), 0), (MemberId(2), 5)])
            .unwrap();
        assert_eq!(
            maglev.lookup_client(&Ipv6Addr::LOCALHOST),
            Some(MemberId(2))
        );
        assert_eq!(maglev.share_of(MemberId(2)), DEFAULT_TABLE_SIZE);
    }

    #[test]
    fn maglev_slot_reduction_is_exact_modulo() {
        let maglev = Maglev::new(DEFAULT_TABLE_SIZE).unwrap();
        let mut x = 1u64;
        for _ in 0..100_000 {
            x = fmix64(x.wrapping_add(0x9e37_79b9_7f4a_7c15));
            let folded = (x ^ (x >> 32)) as u32;
            assert_eq!(maglev.slot(x), folded as usize % DEFAULT_TABLE_SIZE);
        }
        for folded in [0u32, 1, 65536, 65537, u32::MAX, u32::MAX - 1] {
            assert_eq!(
                maglev.slot(u64::from(folded)),
                folded as usize % DEFAULT_TABLE_SIZE
            );
        }
    }

    /// Clients spread over members like slots do.
    #[test]
    fn maglev_clients_spread_evenly() {
        let maglev = build(&equal(10));
        let mut counts = [0usize; 10];
        for i in 0..100_000u128 {
            let client = Ipv6Addr::from_bits(0x2001_0db8_u128 << 96 | i);
            counts[usize::from(maglev.lookup_client(&client).unwrap().0)] += 1;
        }
        for c in counts {
            assert!((9_500..=10_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn maglev_primes() {
        assert!(is_prime(65537) && is_prime(7) && is_prime(2));
        assert!(!is_prime(65535) && !is_prime(1) && !is_prime(9));
        assert_eq!(next_prime(65536), 65537);
        assert_eq!(next_prime(100), 101);
    }
}
