//! The access point's connection (affinity) table: established flows never
//! move to another member.
//!
//! Layer: [`crate`] core, next to [`crate::maglev`], below the access point
//! engine. No clock reads: every call takes `now`.
//!
//! Contract (Maglev paper, Eisenbud et al. NSDI 2016, sec. 3.3, connection
//! tracking): the first packet of a flow picks its member through the caller's
//! `choose` (a Maglev lookup); every later packet of that flow goes to the same
//! member, whatever happens to the Maglev table in between, until the flow
//! ends (TCP RST, FIN then a short idle time, or an idle timeout), its member
//! is removed, or the table is full. A full table never drops traffic: the
//! packet still goes to the member `choose` picked, only the flow is not
//! pinned (counted in [`AffinityTable::overflows`]); it keeps going to the
//! same member as long as the member set does not change.
//!
//! With several access points in front of one home address, a flow's
//! packets may reach an AP that never saw its first packet; members report
//! the flows they serve to every AP (docs/PROTOCOL.md section 10) and
//! [`AffinityTable::adopt`] pins each to its reporter, re-pinning it if
//! another member had it: the member that serves a flow is the truth.
//!
//! Flows are keyed by [`FlowKey`] in the client -> home address direction;
//! the caller reverses return traffic before [`AffinityTable::observe_reverse`].
//!
//! ## Flow lifecycle
//!
//! ```text
//!   SYN (no ACK) ──> Opening ──ACK (no SYN/FIN)──> Open
//!   other first packet ─────────────────────────> Open
//!   FIN (any state, either direction) ──────────> Closing ──SYN (no ACK)──> Opening
//!   RST (either direction) ─────────────────────> removed
//!   idle >= timeout ────────────────────────────> expired (removed)
//! ```
//!
//! Idle timeouts: non-TCP flows `udp_idle`; TCP `Open` flows `tcp_idle`;
//! TCP `Opening` and `Closing` flows `tcp_closing_idle`, so a SYN flood of
//! spoofed sources only holds entries for the short timeout. An entry whose
//! timeout has passed counts as gone at once, whether or not
//! [`AffinityTable::expire`] has removed it yet: its next packet starts a new
//! flow and calls `choose` again. So results never depend on when the
//! sweep ran; only [`len`](AffinityTable::len) and
//! [`flows_of`](AffinityTable::flows_of) lag by up to one sweep period.
//!
//! ## Expiry: an incremental sweep
//!
//! [`AffinityTable::expire`] examines a slice of the table per call, from a
//! cursor that wraps around: `len x elapsed / SWEEP_PERIOD` entries (at least
//! 64), where `elapsed` is the time since the previous call, so the whole
//! table is examined once per [`SWEEP_PERIOD`] (2 s) however often it is
//! called; a call after a gap of a whole period or more does one full pass.
//! Called every [`EXPIRE_TICK`] (what [`AffinityTable::next_expiry`] asks
//! for), a table of one million flows costs 50 000 entry checks per call,
//! sequential reads in a dense array. A timing wheel would expire on time to
//! the tick but costs a list link per entry and a wheel update per packet;
//! since lookups treat timed-out entries as gone anyway, sweeping late only
//! delays freeing memory, which a slower sweep does well enough.
//!
//! ## Memory: about 100 bytes per flow
//!
//! Entries live in a dense array (80 bytes each: the 38-byte key and the
//! 40-byte [`AffinityEntry`]) that grows by a quarter at a time and never
//! beyond `max_entries`. A hash index maps a 32-bit keyed hash of the flow
//! key to the entry's position: 8 bytes plus one control byte per bucket, at
//! a load of 44-87 % (at one million flows: 2^21 buckets, 19 bytes per flow).
//! Keys whose 32-bit hashes collide (about 100 pairs among a million flows)
//! go to a small second map keyed by the full key. `std`'s
//! `HashMap<FlowKey, AffinityEntry>` would hold 81 bytes per bucket: 170 bytes
//! per flow at one million. [`AffinityTable::memory_bytes`] reports the
//! estimate; `benches/maglev.rs` prints it with the measured resident size.
//!
//! ## Hash flooding
//!
//! Clients choose their flow keys, so the hash is keyed: SipHash-1-3 under a
//! per-table random key (std's `RandomState`, seeded once from the OS when
//! the table is created). That is the only randomness here and it does not
//! change any result: which member a flow gets never depends on the hash.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::wire::inner::TcpFlags;
use crate::wire::{FlowKey, MemberId, ReportedState};

/// How long one full pass of the incremental expiry sweep takes.
pub const SWEEP_PERIOD: Duration = Duration::from_secs(2);

/// How often [`AffinityTable::next_expiry`] asks for [`AffinityTable::expire`]
/// while the table is not empty.
pub const EXPIRE_TICK: Duration = Duration::from_millis(100);

/// The least number of entries one [`AffinityTable::expire`] call examines.
const MIN_SCAN: usize = 64;

/// IP protocol number of TCP.
const IPPROTO_TCP: u8 = 6;

/// Limits and idle timeouts of an [`AffinityTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinityConfig {
    /// Most flows tracked at once (at most `u32::MAX`); new flows beyond it
    /// are forwarded but not pinned. About 100 bytes each.
    pub max_entries: usize,
    /// Idle timeout of an established TCP flow.
    pub tcp_idle: Duration,
    /// Idle timeout of a TCP flow that has only sent a SYN, or has sent a
    /// FIN in either direction.
    pub tcp_closing_idle: Duration,
    /// Idle timeout of a UDP flow, and of any other non-TCP flow.
    pub udp_idle: Duration,
}

impl Default for AffinityConfig {
    /// One million flows; TCP 300 s (10 s opening or closing); UDP 30 s.
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            tcp_idle: Duration::from_secs(300),
            tcp_closing_idle: Duration::from_secs(10),
            udp_idle: Duration::from_secs(30),
        }
    }
}

/// Where a tracked flow is in its life (see the [module docs](self)).
/// Outside this crate it is built from the state a member reports
/// (`FlowState::from(ReportedState::Open)`) or named by its variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlowState {
    /// TCP: a SYN was seen, the handshake has not completed.
    Opening,
    /// Established TCP, or any non-TCP flow.
    Open,
    /// TCP: a FIN was seen in one direction or both.
    Closing,
}

impl From<ReportedState> for FlowState {
    fn from(state: ReportedState) -> Self {
        match state {
            ReportedState::Opening => FlowState::Opening,
            ReportedState::Open => FlowState::Open,
            ReportedState::Closing => FlowState::Closing,
        }
    }
}

impl From<FlowState> for ReportedState {
    fn from(state: FlowState) -> Self {
        match state {
            FlowState::Opening => ReportedState::Opening,
            FlowState::Open => ReportedState::Open,
            FlowState::Closing => ReportedState::Closing,
        }
    }
}

/// What [`AffinityTable::adopt`] did with a flow a member reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// The flow was not tracked (or had timed out): it is now, pinned to
    /// the reporter.
    Inserted,
    /// The flow was pinned to another member: it is re-pinned to the
    /// reporter.
    Moved {
        /// The member it was pinned to.
        from: MemberId,
    },
    /// The flow was already pinned to the reporter: kept alive.
    Refreshed,
    /// The flow was not tracked and the table is full: not pinned.
    Full,
}

/// One tracked flow.
#[derive(Debug, Clone, Copy)]
pub struct AffinityEntry {
    /// The member this flow is pinned to.
    pub member: MemberId,
    /// When the last packet of the flow, in either direction, was seen.
    pub last_seen: Instant,
    /// Packets seen on the flow, both directions.
    pub packets: u64,
    /// Bytes (IPv6 packet lengths) seen on the flow, both directions.
    pub bytes: u64,
    state: FlowState,
}

impl AffinityEntry {
    /// The flow's lifecycle state.
    pub fn state(&self) -> FlowState {
        self.state
    }

    fn new(member: MemberId, now: Instant, tcp: Option<TcpFlags>) -> Self {
        let state = match tcp {
            Some(f) if f.fin => FlowState::Closing,
            Some(f) if f.syn && !f.ack => FlowState::Opening,
            _ => FlowState::Open,
        };
        Self {
            member,
            last_seen: now,
            packets: 0,
            bytes: 0,
            state,
        }
    }

    /// Counts a packet and applies its TCP flags. Returns `false` when the
    /// flow ends here (RST).
    fn on_packet(&mut self, now: Instant, tcp: Option<TcpFlags>, len: usize) -> bool {
        self.last_seen = self.last_seen.max(now);
        self.packets += 1;
        self.bytes = self.bytes.saturating_add(len as u64);
        if let Some(f) = tcp {
            if f.rst {
                return false;
            }
            self.state = match self.state {
                _ if f.fin => FlowState::Closing,
                // The tuple is reused for a new connection (TIME_WAIT reuse):
                // the member that holds the old TIME_WAIT state takes it.
                FlowState::Closing if f.syn && !f.ack => FlowState::Opening,
                FlowState::Opening if f.ack && !f.syn => FlowState::Open,
                state => state,
            };
        }
        true
    }

    fn idle_timeout(&self, cfg: &AffinityConfig, proto: u8) -> Duration {
        match (proto, self.state) {
            (IPPROTO_TCP, FlowState::Open) => cfg.tcp_idle,
            (IPPROTO_TCP, FlowState::Opening | FlowState::Closing) => cfg.tcp_closing_idle,
            _ => cfg.udp_idle,
        }
    }

    fn is_expired(&self, now: Instant, cfg: &AffinityConfig, proto: u8) -> bool {
        now.saturating_duration_since(self.last_seen) >= self.idle_timeout(cfg, proto)
    }
}

/// A slot of the dense entry array.
#[derive(Debug, Clone, Copy)]
struct Flow {
    key: FlowKey,
    entry: AffinityEntry,
}

/// Hasher for the index, whose keys are already keyed SipHash values: passes
/// them through, multiplied so that hashbrown's 7-bit tags (the top bits)
/// depend on every key bit.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u32` is used; this keeps the hasher total.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }
}

/// The access point's flow -> member table: see the [module docs](self).
pub struct AffinityTable {
    cfg: AffinityConfig,
    /// Keyed hash of flow keys (SipHash-1-3, random key).
    keyed: RandomState,
    /// All entries, densely packed; removal swaps the last one in.
    flows: Vec<Flow>,
    /// 32-bit keyed hash -> position in `flows`, for one key per hash.
    index: HashMap<u32, u32, BuildHasherDefault<Prehashed>>,
    /// Position in `flows` of keys whose 32-bit hash `index` already holds
    /// for another key.
    collided: HashMap<FlowKey, u32>,
    /// Tracked flows per member.
    per_member: HashMap<MemberId, usize>,
    /// Next position the expiry sweep examines.
    cursor: usize,
    /// Table length when the current sweep started at position 0.
    sweep_len: usize,
    /// `now` of the last `expire` call (or of the insert into an empty table).
    last_sweep: Option<Instant>,
    overflows: u64,
    /// Tests: give every key the same 32-bit hash.
    #[cfg(test)]
    collide_all: bool,
}

impl std::fmt::Debug for AffinityTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AffinityTable")
            .field("cfg", &self.cfg)
            .field("len", &self.flows.len())
            .field("per_member", &self.per_member)
            .field("overflows", &self.overflows)
            .finish_non_exhaustive()
    }
}

impl AffinityTable {
    /// An empty table. Memory is taken as flows arrive, not up front.
    pub fn new(cfg: AffinityConfig) -> Self {
        let cfg = AffinityConfig {
            max_entries: cfg.max_entries.min(u32::MAX as usize),
            ..cfg
        };
        Self {
            cfg,
            keyed: RandomState::new(),
            flows: Vec::new(),
            index: HashMap::default(),
            collided: HashMap::new(),
            per_member: HashMap::new(),
            cursor: 0,
            sweep_len: 0,
            last_sweep: None,
            overflows: 0,
            #[cfg(test)]
            collide_all: false,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &AffinityConfig {
        &self.cfg
    }

    /// The member of the flow `key` (client -> home address) for a packet
    /// of `len` bytes with TCP flags `tcp` (`None` for non-TCP packets).
    ///
    /// A tracked flow keeps its member; its counters and `last_seen` are
    /// updated, a FIN moves it to closing (short idle timeout), and an RST
    /// removes it after returning its member. An unknown (or timed-out)
    /// flow gets `choose()` (a Maglev lookup), which is then pinned; an RST
    /// on an unknown flow is forwarded but not tracked. When the table is
    /// full the new flow is forwarded to `choose()` but not pinned, and
    /// [`overflows`](Self::overflows) is counted. `None` only when `choose`
    /// has no member.
    pub fn lookup_or_insert(
        &mut self,
        now: Instant,
        key: &FlowKey,
        tcp: Option<TcpFlags>,
        len: usize,
        choose: impl FnOnce() -> Option<MemberId>,
    ) -> Option<MemberId> {
        let hash = self.hash(key);
        if let Some(pos) = self.find(hash, key) {
            let flow = &mut self.flows[pos];
            if !flow.entry.is_expired(now, &self.cfg, key.proto) {
                let member = flow.entry.member;
                if !flow.entry.on_packet(now, tcp, len) {
                    self.remove_at(pos);
                }
                return Some(member);
            }
            // Timed out but not swept yet: the flow is over, this packet
            // starts a new one.
            self.remove_at(pos);
        }
        let member = choose()?;
        if tcp.is_some_and(|f| f.rst) {
            return Some(member);
        }
        if self.flows.len() >= self.cfg.max_entries {
            self.overflows += 1;
            return Some(member);
        }
        let mut entry = AffinityEntry::new(member, now, tcp);
        entry.packets = 1;
        entry.bytes = len as u64;
        self.insert(hash, *key, entry);
        Some(member)
    }

    /// Pins flow `key` (client -> home address) to `member`, which reports
    /// that it serves the flow in `state` (a member's Flow Report): the
    /// member that serves a flow is the truth, so a flow pinned to another
    /// member is re-pinned. The entry's `last_seen` becomes `now` (never
    /// earlier than it was) and its state `state`; its packet counters are
    /// kept (a new entry starts at zero). A flow that timed out but was not
    /// swept yet counts as absent. A full table pins nothing new
    /// ([`Adoption::Full`]; not counted in [`overflows`](Self::overflows),
    /// which counts packets).
    pub fn adopt(
        &mut self,
        now: Instant,
        key: &FlowKey,
        member: MemberId,
        state: FlowState,
    ) -> Adoption {
        let hash = self.hash(key);
        if let Some(pos) = self.find(hash, key) {
            if !self.flows[pos].entry.is_expired(now, &self.cfg, key.proto) {
                let entry = &mut self.flows[pos].entry;
                let from = entry.member;
                entry.last_seen = entry.last_seen.max(now);
                entry.state = state;
                if from == member {
                    return Adoption::Refreshed;
                }
                entry.member = member;
                self.count_out(from);
                *self.per_member.entry(member).or_insert(0) += 1;
                return Adoption::Moved { from };
            }
            self.remove_at(pos);
        }
        if self.flows.len() >= self.cfg.max_entries {
            return Adoption::Full;
        }
        let entry = AffinityEntry {
            member,
            last_seen: now,
            packets: 0,
            bytes: 0,
            state,
        };
        self.insert(hash, *key, entry);
        Adoption::Inserted
    }

    /// The entry of flow `key`, as stored: it may have timed out already if
    /// [`expire`](Self::expire) has not removed it yet.
    pub fn get(&self, key: &FlowKey) -> Option<&AffinityEntry> {
        self.find(self.hash(key), key)
            .map(|pos| &self.flows[pos].entry)
    }

    /// Return traffic (member -> client) of flow `key`, given in the
    /// client -> home address orientation: keeps the flow alive, counts it,
    /// and applies FIN and RST like [`lookup_or_insert`](Self::lookup_or_insert).
    /// It never creates a flow, and does not revive a timed-out one.
    pub fn observe_reverse(
        &mut self,
        now: Instant,
        key: &FlowKey,
        tcp: Option<TcpFlags>,
        len: usize,
    ) {
        let Some(pos) = self.find(self.hash(key), key) else {
            return;
        };
        let entry = &mut self.flows[pos].entry;
        if entry.is_expired(now, &self.cfg, key.proto) || !entry.on_packet(now, tcp, len) {
            self.remove_at(pos);
        }
    }

    /// Forgets every flow of `member` (it died or left: its flows will be
    /// handed to live members as new flows). Returns how many. Costs one
    /// pass over the table. A draining member is not removed: give it weight
    /// 0 in Maglev and let its flows finish.
    pub fn remove_member(&mut self, member: MemberId) -> usize {
        if !self.per_member.contains_key(&member) {
            return 0;
        }
        let mut removed = 0;
        let mut pos = 0;
        while pos < self.flows.len() {
            if self.flows[pos].entry.member == member {
                // The last entry moves into `pos`: examine `pos` again.
                self.remove_at(pos);
                removed += 1;
            } else {
                pos += 1;
            }
        }
        removed
    }

    /// Removes timed-out flows from the next slice of the table (see the
    /// [module docs](self): the whole table is examined once per
    /// [`SWEEP_PERIOD`]). Returns how many were removed.
    pub fn expire(&mut self, now: Instant) -> usize {
        let elapsed = self
            .last_sweep
            .map_or(SWEEP_PERIOD, |last| now.saturating_duration_since(last));
        self.last_sweep = Some(self.last_sweep.map_or(now, |last| last.max(now)));
        let len = self.flows.len();
        if len == 0 {
            return 0;
        }
        let mut removed = 0;
        if elapsed >= SWEEP_PERIOD {
            // A whole period has passed: one full pass, in order, so that
            // every entry (including those swapped in from the end) is seen.
            let mut pos = 0;
            while pos < self.flows.len() {
                if self.flows[pos]
                    .entry
                    .is_expired(now, &self.cfg, self.flows[pos].key.proto)
                {
                    self.remove_at(pos);
                    removed += 1;
                } else {
                    pos += 1;
                }
            }
            self.cursor = 0;
            self.sweep_len = self.flows.len();
            return removed;
        }
        // Sized by the larger of the table now and at the start of this
        // pass, so that a pass ends within the period even while removals
        // shrink the table.
        let share = len.max(self.sweep_len) as u128 * elapsed.as_nanos() / SWEEP_PERIOD.as_nanos();
        let budget = (share as usize + 1).max(MIN_SCAN).min(len);
        for _ in 0..budget {
            if self.cursor >= self.flows.len() {
                if self.flows.is_empty() {
                    break;
                }
                self.cursor = 0;
                self.sweep_len = self.flows.len();
            }
            let flow = &self.flows[self.cursor];
            if flow.entry.is_expired(now, &self.cfg, flow.key.proto) {
                // The last entry, not yet examined in this pass, moves here.
                self.remove_at(self.cursor);
                removed += 1;
            } else {
                self.cursor += 1;
            }
        }
        removed
    }

    /// When [`expire`](Self::expire) should run next: every
    /// [`EXPIRE_TICK`] while the table holds flows, `None` when it is empty.
    pub fn next_expiry(&self) -> Option<Instant> {
        if self.flows.is_empty() {
            return None;
        }
        self.last_sweep.map(|last| last + EXPIRE_TICK)
    }

    /// Flows pinned to `member` (timed-out ones included until swept).
    pub fn flows_of(&self, member: MemberId) -> usize {
        self.per_member.get(&member).copied().unwrap_or(0)
    }

    /// Flows tracked (timed-out ones included until swept).
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// No flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// New flows that were forwarded but not pinned because the table was full.
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    /// All tracked flows, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &AffinityEntry)> {
        self.flows.iter().map(|flow| (&flow.key, &flow.entry))
    }

    /// Estimated heap bytes held: the entry array's capacity plus the hash
    /// maps' buckets and control bytes (std's map is hashbrown: one control
    /// byte per bucket, power-of-two bucket counts, at most 7/8 full).
    pub fn memory_bytes(&self) -> usize {
        fn map_bytes<K, V>(capacity: usize) -> usize {
            if capacity == 0 {
                return 0;
            }
            let buckets = if capacity < 8 {
                (capacity + 1).next_power_of_two()
            } else {
                (capacity * 8 / 7).next_power_of_two()
            };
            // 16 extra control bytes mirror the first group for SIMD probes.
            buckets * (size_of::<(K, V)>() + 1) + 16
        }
        self.flows.capacity() * size_of::<Flow>()
            + map_bytes::<u32, u32>(self.index.capacity())
            + map_bytes::<FlowKey, u32>(self.collided.capacity())
            + map_bytes::<MemberId, usize>(self.per_member.capacity())
    }

    fn hash(&self, key: &FlowKey) -> u32 {
        #[cfg(test)]
        if self.collide_all {
            return 0xdead_beef;
        }
        let h = self.keyed.hash_one(key);
        (h ^ (h >> 32)) as u32
    }

    fn find(&self, hash: u32, key: &FlowKey) -> Option<usize> {
        if let Some(&pos) = self.index.get(&hash)
            && self.flows[pos as usize].key == *key
        {
            return Some(pos as usize);
        }
        if self.collided.is_empty() {
            return None;
        }
        self.collided.get(key).map(|&pos| pos as usize)
    }

    /// Adds a flow known to be absent; the caller checked `max_entries`.
    fn insert(&mut self, hash: u32, key: FlowKey, entry: AffinityEntry) {
        if self.flows.is_empty() {
            // The sweep clock starts with the first flow.
            self.last_sweep = Some(entry.last_seen);
        }
        if self.flows.len() == self.flows.capacity() {
            // Grow by a quarter (not std's doubling) and never past the
            // limit, to keep the slack per flow small.
            let extra = (self.flows.len() / 4)
                .max(64)
                .min(self.cfg.max_entries - self.flows.len());
            self.flows.reserve_exact(extra);
        }
        let pos = self.flows.len() as u32;
        self.flows.push(Flow { key, entry });
        match self.index.entry(hash) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(pos);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(key, pos);
            }
        }
        *self.per_member.entry(entry.member).or_insert(0) += 1;
    }

    /// One flow fewer pinned to `member`.
    fn count_out(&mut self, member: MemberId) {
        if let Some(count) = self.per_member.get_mut(&member) {
            *count -= 1;
            if *count == 0 {
                self.per_member.remove(&member);
            }
        }
    }

    /// Removes the flow at `pos`; the last flow moves into `pos`.
    fn remove_at(&mut self, pos: usize) {
        let Flow { key, entry } = self.flows[pos];
        let hash = self.hash(&key);
        if self.index.get(&hash) == Some(&(pos as u32)) {
            self.index.remove(&hash);
        } else {
            self.collided.remove(&key);
        }
        self.count_out(entry.member);
        self.flows.swap_remove(pos);
        let from = self.flows.len() as u32;
        if pos < self.flows.len() {
            let moved = self.flows[pos].key;
            let hash = self.hash(&moved);
            match self.index.get_mut(&hash) {
                Some(at) if *at == from => *at = pos as u32,
                _ => {
                    if let Some(at) = self.collided.get_mut(&moved) {
                        *at = pos as u32;
                    }
                }
            }
        }
        if self.flows.is_empty() {
            // Let a table that filled up once give its memory back.
            self.flows.shrink_to(0);
            self.cursor = 0;
            self.sweep_len = 0;
        }
    }
}

#[cfg(test)]
mod adopt_tests;

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use crate::maglev::{DEFAULT_TABLE_SIZE, Maglev, hash_client};

    const HOA: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

    fn client(i: u32) -> Ipv6Addr {
        Ipv6Addr::from_bits(0x2001_0db8_0001_u128 << 80 | u128::from(i))
    }

    fn tcp_key(i: u32) -> FlowKey {
        FlowKey {
            src: client(i),
            dst: HOA,
            proto: 6,
            src_port: 40_000 + (i % 20_000) as u16,
            dst_port: 443,
        }
    }

    fn udp_key(i: u32) -> FlowKey {
        FlowKey {
            proto: 17,
            ..tcp_key(i)
        }
    }

    fn flags(syn: bool, ack: bool, fin: bool, rst: bool) -> Option<TcpFlags> {
        Some(TcpFlags { syn, ack, fin, rst })
    }

    const SYN: Option<TcpFlags> = Some(TcpFlags {
        syn: true,
        ack: false,
        fin: false,
        rst: false,
    });
    const ACK: Option<TcpFlags> = Some(TcpFlags {
        syn: false,
        ack: true,
        fin: false,
        rst: false,
    });

    fn maglev(members: &[(MemberId, u32)]) -> Maglev {
        let mut maglev = Maglev::new(DEFAULT_TABLE_SIZE).unwrap();
        maglev.set_members(members).unwrap();
        maglev
    }

    fn members(n: u16) -> Vec<(MemberId, u32)> {
        (1..=n).map(|i| (MemberId(i), 1)).collect()
    }

    #[test]
    fn affinity_established_flows_keep_member_after_maglev_change() {
        let t0 = Instant::now();
        let mut table = AffinityTable::new(AffinityConfig::default());
        let mut lb = maglev(&members(5));
        let keys: Vec<FlowKey> = (0..2000).map(tcp_key).collect();
        let first: Vec<MemberId> = keys
            .iter()
            .map(|k| {
                table
                    .lookup_or_insert(t0, k, SYN, 60, || lb.lookup_client(&k.src))
                    .unwrap()
            })
            .collect();

        // Member 3 drains, member 6 joins: Maglev moves many clients ...
        let mut changed = members(6);
        changed[2].1 = 0;
        lb.set_members(&changed).unwrap();
        let moved = keys
            .iter()
            .zip(&first)
            .filter(|(k, m)| lb.lookup_client(&k.src) != Some(**m))
            .count();
        assert!(
            moved > 200,
            "the Maglev change should move clients, moved {moved}"
        );

        // ... but no established flow moves.
        let t1 = t0 + Duration::from_secs(1);
        for (k, &m) in keys.iter().zip(&first) {
            let got = table.lookup_or_insert(t1, k, ACK, 1500, || lb.lookup_client(&k.src));
            assert_eq!(got, Some(m), "flow {k:?} moved");
        }
        assert_eq!(table.len(), 2000);
        let e = table.get(&keys[0]).unwrap();
        assert_eq!((e.packets, e.bytes, e.last_seen), (2, 1560, t1));
        assert_eq!(e.state(), FlowState::Open);
        // New flows of the same clients follow the new table.
        let fresh = FlowKey {
            dst_port: 80,
            ..keys[0]
        };
        let got = table.lookup_or_insert(t1, &fresh, SYN, 60, || lb.lookup_client(&fresh.src));
        assert_eq!(got, lb.lookup_client(&fresh.src));
        assert_eq!(lb.lookup(hash_client(&fresh.src)), got);
    }

    #[test]
    fn affinity_rst_removes_either_direction() {
        let t0 = Instant::now();
        let mut table = AffinityTable::new(AffinityConfig::default());
        let k = tcp_key(1);
        table.lookup_or_insert(t0, &k, SYN, 60, || Some(MemberId(7)));
        let got = table.lookup_or_insert(t0, &k, flags(false, true, false, true), 60, || {
            panic!("an RST on a tracked flow must not choose")
        });
        assert_eq!(
            got,
            Some(MemberId(7)),
            "the RST itself still goes to the member"
        );
        assert!(table.get(&k).is_none());
        assert_eq!(table.flows_of(MemberId(7)), 0);

        // An RST for an unknown flow is forwarded, not tracked.
        let got = table.lookup_or_insert(t0, &k, flags(false, false, false, true), 40, || {
            Some(MemberId(8))
        });
        assert_eq!(got, Some(MemberId(8)));
        assert!(table.is_empty());

        // Reverse RST.
        table.lookup_or_insert(t0, &k, SYN, 60, || Some(MemberId(7)));
        table.observe_reverse(t0, &k, flags(false, true, false, true), 40);
        assert!(table.is_empty());
    }

    #[test]
    fn affinity_fin_closing_timeout_and_reverse_keepalive() {
        let cfg = AffinityConfig::default();
        let t0 = Instant::now();
        let mut table = AffinityTable::new(cfg);
        let (a, b) = (tcp_key(1), tcp_key(2));
        for k in [&a, &b] {
            table.lookup_or_insert(t0, k, SYN, 60, || Some(MemberId(1)));
            table.observe_reverse(t0, k, flags(true, true, false, false), 60);
            assert_eq!(table.get(k).unwrap().state(), FlowState::Opening);
            table.lookup_or_insert(t0, k, ACK, 52, || None);
            assert_eq!(table.get(k).unwrap().state(), FlowState::Open);
        }
        // a: the server closes (FIN on the return path).
        table.observe_reverse(t0, &a, flags(false, true, true, false), 52);
        assert_eq!(table.get(&a).unwrap().state(), FlowState::Closing);
        // b: return traffic alone keeps it alive past the TCP idle timeout.
        let mut t = t0;
        for _ in 0..4 {
            t += Duration::from_secs(100);
            table.observe_reverse(t, &b, ACK, 1500);
        }
        assert_eq!(table.get(&b).unwrap().packets, 7);

        let just_before = t0 + cfg.tcp_closing_idle - Duration::from_millis(1);
        assert_eq!(table.expire(just_before), 0);
        assert_eq!(table.expire(t0 + cfg.tcp_closing_idle + SWEEP_PERIOD), 1);
        assert!(table.get(&a).is_none());
        assert_eq!(table.expire(t), 0);
        assert!(table.get(&b).is_some(), "reverse traffic kept b alive");

        // A new SYN on a closing tuple reopens it on the same member.
        table.lookup_or_insert(t, &b, flags(false, true, true, false), 52, || None);
        table.lookup_or_insert(t, &b, SYN, 60, || Some(MemberId(9)));
        let e = table.get(&b).unwrap();
        assert_eq!((e.member, e.state()), (MemberId(1), FlowState::Opening));
    }

    #[test]
    fn affinity_idle_expiry_and_lazy_timeout() {
        let cfg = AffinityConfig::default();
        let t0 = Instant::now();
        let mut table = AffinityTable::new(cfg);
        assert_eq!(table.next_expiry(), None);
        let (udp, tcp, syn_only) = (udp_key(1), tcp_key(2), tcp_key(3));
        table.lookup_or_insert(t0, &udp, None, 100, || Some(MemberId(1)));
        table.lookup_or_insert(t0, &tcp, ACK, 100, || Some(MemberId(1)));
        table.lookup_or_insert(t0, &syn_only, SYN, 60, || Some(MemberId(1)));
        assert_eq!(table.next_expiry(), Some(t0 + EXPIRE_TICK));

        // The SYN-only flow goes after the short timeout, UDP after 30 s,
        // established TCP after 300 s.
        assert_eq!(table.expire(t0 + Duration::from_secs(11)), 1);
        assert!(table.get(&syn_only).is_none());
        assert_eq!(table.expire(t0 + Duration::from_secs(29)), 0);
        assert_eq!(table.expire(t0 + Duration::from_secs(31)), 1);
        assert!(table.get(&udp).is_none());
        assert_eq!(
            table.next_expiry(),
            Some(t0 + Duration::from_secs(31) + EXPIRE_TICK)
        );

        // Timed out but not swept: the next packet is a new flow.
        let late = t0 + Duration::from_secs(301);
        assert!(table.get(&tcp).is_some());
        let got = table.lookup_or_insert(late, &tcp, ACK, 100, || Some(MemberId(2)));
        assert_eq!(got, Some(MemberId(2)));
        assert_eq!(table.get(&tcp).unwrap().packets, 1);
        assert_eq!(table.flows_of(MemberId(1)), 0);
        assert_eq!(table.expire(late + Duration::from_secs(301)), 1);
        assert!(table.is_empty());
        assert_eq!(table.next_expiry(), None);
    }

    /// Expiry is incremental: frequent calls examine a slice of the table,
    /// and still cover all of it once per sweep period.
    #[test]
    fn affinity_expiry_is_incremental() {
        let cfg = AffinityConfig::default();
        let t0 = Instant::now();
        let mut table = AffinityTable::new(cfg);
        let n = 20_000;
        for i in 0..n {
            // Half UDP (30 s), half established TCP (300 s), interleaved.
            let key = if i % 2 == 0 { udp_key(i) } else { tcp_key(i) };
            table.lookup_or_insert(t0, &key, ACK, 100, || Some(MemberId(1)));
        }
        let mut now = t0 + Duration::from_secs(31);
        table.expire(now); // starts the sweep clock: a full pass
        assert_eq!(table.len(), n as usize / 2);

        for i in 0..n {
            let key = if i % 2 == 0 { udp_key(i) } else { tcp_key(i) };
            table.lookup_or_insert(now, &key, ACK, 100, || Some(MemberId(1)));
        }
        // Tick for 30 s (the UDP timeout), then until the UDP flows are gone.
        let start = now;
        let mut calls_after_timeout = 0;
        let mut first_call = None;
        while table.len() > n as usize / 2 {
            now += EXPIRE_TICK;
            let removed = table.expire(now);
            if now - start < cfg.udp_idle {
                assert_eq!(removed, 0);
                continue;
            }
            first_call.get_or_insert(removed);
            calls_after_timeout += 1;
            assert!(calls_after_timeout <= 21, "one sweep period is 20 ticks");
        }
        // 100 ms of a 2 s period: 1/20 of the 20000 entries (+1) examined.
        let first = first_call.unwrap();
        assert!((1..=1001).contains(&first), "first call removed {first}");
        assert!(
            calls_after_timeout >= 19,
            "took {calls_after_timeout} calls"
        );
        assert_eq!(table.flows_of(MemberId(1)), n as usize / 2);
    }

    #[test]
    fn affinity_remove_member() {
        let t0 = Instant::now();
        let mut table = AffinityTable::new(AffinityConfig::default());
        for i in 0..300 {
            let m = MemberId((i % 3) as u16);
            table.lookup_or_insert(t0, &tcp_key(i), SYN, 60, || Some(m));
        }
        assert_eq!(table.flows_of(MemberId(1)), 100);
        assert_eq!(table.remove_member(MemberId(1)), 100);
        assert_eq!(table.remove_member(MemberId(1)), 0);
        assert_eq!(table.flows_of(MemberId(1)), 0);
        assert_eq!(table.len(), 200);
        assert!(table.iter().all(|(_, e)| e.member != MemberId(1)));
        for i in 0..300 {
            let got = table.get(&tcp_key(i)).map(|e| e.member);
            let want = (i % 3 != 1).then_some(MemberId((i % 3) as u16));
            assert_eq!(got, want);
        }
    }

    #[test]
    fn affinity_overflow_forwards_without_pinning() {
        let cfg = AffinityConfig {
            max_entries: 10,
            ..AffinityConfig::default()
        };
        let t0 = Instant::now();
        let mut table = AffinityTable::new(cfg);
        for i in 0..10 {
            table.lookup_or_insert(t0, &tcp_key(i), SYN, 60, || Some(MemberId(1)));
        }
        let extra = tcp_key(10);
        let got = table.lookup_or_insert(t0, &extra, SYN, 60, || Some(MemberId(2)));
        assert_eq!(got, Some(MemberId(2)), "still forwarded");
        assert!(table.get(&extra).is_none());
        assert_eq!((table.len(), table.overflows()), (10, 1));
        // Tracked flows are unaffected; after one ends there is room again.
        let got = table.lookup_or_insert(t0, &tcp_key(3), ACK, 60, || Some(MemberId(5)));
        assert_eq!(got, Some(MemberId(1)));
        table.lookup_or_insert(t0, &tcp_key(3), flags(false, true, false, true), 40, || {
            None
        });
        table.lookup_or_insert(t0, &extra, SYN, 60, || Some(MemberId(2)));
        assert_eq!(table.get(&extra).unwrap().member, MemberId(2));
        assert_eq!(table.overflows(), 1);
        // No member at all: nothing to forward to, nothing stored.
        let lost = tcp_key(99);
        assert_eq!(table.lookup_or_insert(t0, &lost, SYN, 60, || None), None);
    }

    /// The index and the collision map stay consistent through random
    /// inserts and removals (positions move on every removal), with real
    /// hashes and with every key forced onto one 32-bit hash.
    #[test]
    fn affinity_index_consistent_under_churn() {
        for collide_all in [false, true] {
            let t0 = Instant::now();
            let mut table = AffinityTable::new(AffinityConfig::default());
            table.collide_all = collide_all;
            let mut live = std::collections::BTreeMap::new();
            let mut x = 12345u64;
            for step in 0..30_000u32 {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let i = (x >> 40) as u32 % 2000;
                let key = tcp_key(i);
                if (x >> 20).is_multiple_of(3) {
                    let rst = flags(false, false, false, true);
                    table.lookup_or_insert(t0, &key, rst, 40, || Some(MemberId(0)));
                    live.remove(&i);
                } else {
                    let m = MemberId((step % 7) as u16);
                    let got = table
                        .lookup_or_insert(t0, &key, SYN, 60, || Some(m))
                        .unwrap();
                    assert_eq!(got, *live.entry(i).or_insert(m));
                }
            }
            assert_eq!(table.len(), live.len());
            for (&i, &m) in &live {
                assert_eq!(table.get(&tcp_key(i)).unwrap().member, m);
            }
            let per_member: usize = (0..7).map(|m| table.flows_of(MemberId(m))).sum();
            assert_eq!(per_member, live.len());
            if collide_all {
                assert_eq!(table.index.len(), 1);
                assert_eq!(table.collided.len(), live.len() - 1);
            }
            assert_eq!(
                table.remove_member(MemberId(3)),
                live.values().filter(|m| m.0 == 3).count()
            );
            let left = table.len();
            assert_eq!(table.expire(t0 + Duration::from_secs(11)), left);
            assert!(table.is_empty());
        }
    }

    #[test]
    fn flow_state_maps_to_and_from_the_reported_state() {
        for state in [FlowState::Opening, FlowState::Open, FlowState::Closing] {
            assert_eq!(FlowState::from(ReportedState::from(state)), state);
        }
        assert_eq!(
            ReportedState::from(FlowState::Closing),
            ReportedState::Closing
        );
    }

    #[test]
    fn affinity_entry_size() {
        // The memory budget in the module docs relies on these.
        assert!(size_of::<Flow>() <= 80, "{}", size_of::<Flow>());
        assert_eq!(size_of::<(u32, u32)>(), 8);
    }
}
