//! The legacy flows the member serves, and its Flow Reports to the access
//! points (docs/PROTOCOL.md 7.2).
//!
//! A flow is tracked when its packets arrive from an AP (TCP and UDP,
//! keyed client -> HoA), with the AP its last packet came through, so its
//! answers go back the same way. Every AP the member has a session with
//! hears of each new flow at most [`FLOW_REPORT_DELAY`] after its first
//! packet (batched), of every open flow again every [`FLOW_REPORT_REFRESH`]
//! (the APs that never see its packets would forget it after their TCP idle
//! timeout), and of all of them at once (F flag) when a new session with it
//! is made: so any AP can take any flow over. A flow whose state changes
//! (opening to open on the client's first ACK, open to closing on a FIN)
//! goes into the next batch again: an AP that never sees its packets would
//! otherwise keep the state of the first report until the refresh, and an
//! opening flow lives only 10 s idle there.
//!
//! The table is the AP's [`AffinityTable`] (its TCP FIN/RST and idle
//! tracking, and its compact layout: about 100 bytes per flow), bounded by
//! `max_flows`: a full table serves new flows but neither tracks nor
//! reports them (counted in `limit_hits.flows`). Where the AP's table keeps
//! a member per flow, this one keeps an AP index ([`ApSlot`]).

use std::time::{Duration, Instant};

use super::{Member, MemberTimer};
use crate::affinity::{AffinityConfig, AffinityTable, FlowState};
use crate::wire::inner::InnerInfo;
use crate::wire::mh::{FLOWS_PER_REPORT, MessageBody};
use crate::wire::{FlowKey, MemberId, MobilityMessage, MobilityOption, ReportedFlow};

/// New flows reach the APs at most this long after their first packet.
pub const FLOW_REPORT_DELAY: Duration = Duration::from_millis(50);
/// Every open flow is reported again this often.
pub const FLOW_REPORT_REFRESH: Duration = Duration::from_secs(20);
/// How often the flow table is swept while it holds flows.
const FLOW_SWEEP: Duration = Duration::from_secs(1);
/// New flows waiting for their batch, at most; beyond that (a burst of more
/// than this many new flows within [`FLOW_REPORT_DELAY`]) they wait for the
/// refresh.
const MAX_UNREPORTED: usize = 65_536;
/// IP protocol numbers of the flows tracked.
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// The index of the AP a flow's last packet came through, kept in the
/// affinity table's per-flow member field (a `u16`: far more APs than any
/// configuration has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ApSlot(usize);

impl ApSlot {
    fn to_member_field(self) -> MemberId {
        MemberId(self.0 as u16)
    }

    fn from_member_field(field: MemberId) -> ApSlot {
        ApSlot(usize::from(field.0))
    }
}

/// What a packet from an AP did to the flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// A flow seen for the first time: to be reported.
    New,
    /// A tracked flow (now with the packet's AP).
    Known,
    /// A tracked flow whose state the packet changed: to be reported again.
    Changed,
    /// A new flow, not tracked: the table is full.
    Full,
    /// Not tracked: not TCP or UDP, a later fragment, an RST of an
    /// unknown flow, or the flow ended with this packet.
    Untracked,
}

/// The member's legacy flow table and what is still to report.
#[derive(Debug)]
pub(super) struct FlowTable {
    table: AffinityTable,
    /// Flows seen for the first time, or whose state changed, since the
    /// last batch.
    unreported: Vec<FlowKey>,
    /// When every open flow is reported again.
    next_refresh: Option<Instant>,
}

impl FlowTable {
    pub(super) fn new(max_flows: usize) -> FlowTable {
        FlowTable {
            table: AffinityTable::new(AffinityConfig {
                max_entries: max_flows,
                ..AffinityConfig::default()
            }),
            unreported: Vec::new(),
            next_refresh: None,
        }
    }

    /// A packet of `info`'s flow (`len` bytes) came through `ap`.
    fn arrived(&mut self, now: Instant, ap: usize, info: &InnerInfo, len: usize) -> Arrival {
        if !tracked(info) {
            return Arrival::Untracked;
        }
        let slot = ApSlot(ap);
        let overflows = self.table.overflows();
        let mut new = false;
        let flags = info.tcp.map(|t| t.flags);
        // Only TCP flows change state.
        let before = flags.and_then(|_| self.table.get(&info.flow).map(|e| e.state()));
        let Some(had) = self
            .table
            .lookup_or_insert(now, &info.flow, flags, len, || {
                new = true;
                Some(slot.to_member_field())
            })
        else {
            return Arrival::Untracked;
        };
        if self.table.overflows() != overflows {
            return Arrival::Full;
        }
        let Some(entry) = self.table.get(&info.flow) else {
            // Its RST (or an RST of a flow we never had): nothing to keep.
            return Arrival::Untracked;
        };
        if new {
            return Arrival::New;
        }
        let state = entry.state();
        if ApSlot::from_member_field(had) != slot {
            // The router sent it to another AP: answers follow it there.
            self.table
                .adopt(now, &info.flow, slot.to_member_field(), state);
        }
        if before.is_some_and(|b| b != state) {
            return Arrival::Changed;
        }
        Arrival::Known
    }

    /// An answer of `info`'s flow (HoA -> client, `len` bytes): keeps the
    /// flow alive, applies its FIN or RST; the AP of its last packet, and
    /// whether the answer changed the flow's state.
    fn answer(&mut self, now: Instant, info: &InnerInfo, len: usize) -> (Option<usize>, bool) {
        let key = info.flow.reversed();
        let flags = info.tcp.map(|t| t.flags);
        let before = flags.and_then(|_| self.table.get(&key).map(|e| e.state()));
        self.table.observe_reverse(now, &key, flags, len);
        let Some(entry) = self.table.get(&key) else {
            return (None, false);
        };
        let changed = before.is_some_and(|b| b != entry.state());
        if changed && self.unreported.len() < MAX_UNREPORTED {
            self.unreported.push(key);
        }
        (Some(ApSlot::from_member_field(entry.member).0), changed)
    }

    /// Every tracked flow as a Flow option carries it (a flow timed out in
    /// the last sweep period may be among them: the AP forgets it again).
    fn all(&self) -> Vec<ReportedFlow> {
        self.table
            .iter()
            .map(|(key, e)| ReportedFlow::from_key(key, e.state().into()))
            .collect()
    }

    /// The flows first seen (or changed) since the last batch that are
    /// still tracked, each once, in their state now.
    fn take_unreported(&mut self) -> Vec<ReportedFlow> {
        let mut keys = std::mem::take(&mut self.unreported);
        keys.sort_unstable();
        keys.dedup();
        keys.iter()
            .filter_map(|k| {
                let state: FlowState = self.table.get(k)?.state();
                Some(ReportedFlow::from_key(k, state.into()))
            })
            .collect()
    }
}

/// Flows worth reporting: TCP and UDP with their ports (not a later
/// fragment, whose key has none).
fn tracked(info: &InnerInfo) -> bool {
    matches!(info.flow.proto, IPPROTO_TCP | IPPROTO_UDP)
        && !info.fragment.is_some_and(|f| f.is_later())
}

impl Member {
    /// Legacy flows tracked (timed-out ones until the next sweep).
    pub fn flows(&self) -> usize {
        self.flows.table.len()
    }

    /// Estimated heap bytes of the legacy flow table
    /// ([`AffinityTable::memory_bytes`]) and of the batch still to report.
    pub fn flow_memory_bytes(&self) -> usize {
        self.flows.table.memory_bytes() + self.flows.unreported.capacity() * size_of::<FlowKey>()
    }

    /// A packet from `ap` for the HoA: track its flow with that AP; a new
    /// one, or one whose state the packet changed, goes into the next batch.
    pub(super) fn flow_from_ap(&mut self, now: Instant, ap: usize, info: &InnerInfo, len: usize) {
        match self.flows.arrived(now, ap, info, len) {
            arrival @ (Arrival::New | Arrival::Changed) => {
                if self.flows.unreported.len() < MAX_UNREPORTED {
                    self.flows.unreported.push(info.flow);
                }
                if arrival == Arrival::New {
                    self.flows
                        .next_refresh
                        .get_or_insert(now + FLOW_REPORT_REFRESH);
                }
                self.timers
                    .set_earliest(MemberTimer::FlowReport, now + FLOW_REPORT_DELAY);
            }
            Arrival::Full => self.counters.limit_hits.flows += 1,
            Arrival::Known | Arrival::Untracked => {}
        }
    }

    /// The AP the flow of an answer (HoA -> client) last came through, if
    /// it is tracked; the answer keeps it alive.
    pub(super) fn flow_of_answer(&mut self, now: Instant, packet: &[u8]) -> Option<usize> {
        if self.flows.table.is_empty() {
            return None;
        }
        let info = crate::wire::inner::inspect(packet).ok()?;
        if !tracked(&info) {
            return None;
        }
        let (ap, changed) = self.flows.answer(now, &info, packet.len());
        if changed {
            self.timers
                .set_earliest(MemberTimer::FlowReport, now + FLOW_REPORT_DELAY);
        }
        ap
    }

    /// The flow timer: the batch of new flows to every AP we have a session
    /// with, the refresh of all of them when due, and a sweep of the table.
    pub(super) fn flow_report_due(&mut self, now: Instant) {
        self.flows.table.expire(now);
        let batch = self.flows.take_unreported();
        let refresh = self.flows.next_refresh.is_some_and(|at| at <= now);
        let flows = if refresh {
            self.flows.next_refresh = Some(now + FLOW_REPORT_REFRESH);
            self.flows.all()
        } else {
            batch
        };
        for ap in 0..self.aps.len() {
            if self.aps[ap].reportable() {
                self.send_flow_report(ap, false, &flows);
            }
        }
        if self.flows.table.is_empty() {
            self.flows.next_refresh = None;
            self.timers.cancel(MemberTimer::FlowReport);
            return;
        }
        let next = self
            .flows
            .next_refresh
            .map_or(now + FLOW_SWEEP, |r| r.min(now + FLOW_SWEEP));
        self.timers.set(MemberTimer::FlowReport, next);
    }

    /// A new session with `ap`: it knows none of our flows (first
    /// registration, or it restarted): all of them, flagged full.
    pub(super) fn full_flow_report(&mut self, ap: usize) {
        let flows = self.flows.all();
        self.send_flow_report(ap, true, &flows);
    }

    /// `flows` sealed to `ap`, at most [`FLOWS_PER_REPORT`] per message.
    fn send_flow_report(&mut self, ap: usize, full: bool, flows: &[ReportedFlow]) {
        for chunk in flows.chunks(FLOWS_PER_REPORT) {
            let msg = chunk.iter().fold(
                MobilityMessage::new(MessageBody::FlowReport { full }),
                |msg, f| msg.with(MobilityOption::Flow(*f)),
            );
            if self.send_sealed_to_ap(ap, &msg) {
                self.counters.flow_reports += 1;
                self.counters.flows_reported += chunk.len() as u64;
            }
        }
    }
}
