//! The flow table: every flow pinned to the member that serves it, new
//! flows started at the preferred bound member, idle flows swept, and a
//! revoked member's flows reset towards the local applications.

use std::net::SocketAddrV6;
use std::time::{Duration, Instant};

use super::{FlowEntry, FlowPath, Shim, ShimEvent, ShimTimer};
use crate::engine::{DataAction, DropReason};
use crate::wire::inner::{self, InnerInfo};
use crate::wire::mh::MessageBody;
use crate::wire::{MemberId, MobilityMessage};

impl Shim {
    /// The member new flows may start at directly: the newest live,
    /// non-draining binding.
    pub(super) fn preferred_member(&self, now: Instant) -> Option<MemberId> {
        self.bindings
            .iter()
            .filter(|(_, b)| b.expires > now && !b.draining)
            .max_by_key(|(_, b)| b.created)
            .map(|(id, _)| *id)
    }

    pub(super) fn arm_flow_sweep(&mut self, now: Instant) {
        if self.timers.get(ShimTimer::FlowSweep).is_none() {
            self.timers
                .set(ShimTimer::FlowSweep, now + Duration::from_secs(5));
        }
    }

    pub(super) fn sweep_flows(&mut self, now: Instant) {
        let (tcp_idle, other_idle) = (self.config.tcp_idle, self.config.other_idle);
        self.flows.retain(|k, f| {
            let idle = if k.proto == 6 && !f.closing {
                tcp_idle
            } else {
                other_idle
            };
            f.last_seen + idle > now
        });
        if !self.flows.is_empty() {
            self.arm_flow_sweep(now);
        }
    }

    /// Outgoing flow bookkeeping; returns the member the flow is pinned to.
    pub(super) fn track_outgoing(
        &mut self,
        now: Instant,
        info: &InnerInfo,
        len: usize,
    ) -> Result<Option<MemberId>, DropReason> {
        let tcp = info.tcp;
        if let Some(f) = self.flows.get_mut(&info.flow) {
            f.last_seen = now;
            f.packets_out += 1;
            f.bytes += len as u64;
            if let Some(t) = tcp {
                if t.flags.ack {
                    f.tcp_rcv_nxt = Some(t.ack);
                }
                f.closing |= t.flags.fin || t.flags.rst;
            }
            return Ok(f.member);
        }
        if self.flows.len() >= self.config.max_flows {
            self.sweep_flows(now);
            if self.flows.len() >= self.config.max_flows {
                // Still routed (through the AP, which knows the flow), not tracked.
                return Err(DropReason::Overflow);
            }
        }
        // Only the start of a flow may go to a member directly; a segment of
        // a flow we do not know goes through the AP, whose affinity knows it.
        let starts = tcp.is_none_or(|t| t.flags.syn && !t.flags.ack);
        let member = if starts && self.config.route_optimization {
            self.preferred_member(now)
        } else {
            None
        };
        self.flows.insert(
            info.flow,
            FlowEntry {
                member,
                path: FlowPath::ViaAccessPoint,
                last_seen: now,
                packets_out: 1,
                packets_in: 0,
                bytes: len as u64,
                tcp_rcv_nxt: tcp.filter(|t| t.flags.ack).map(|t| t.ack),
                closing: tcp.is_some_and(|t| t.flags.fin || t.flags.rst),
            },
        );
        self.arm_flow_sweep(now);
        Ok(member)
    }

    /// Incoming flow bookkeeping: pin a flow to the member that served it.
    pub(super) fn track_incoming(&mut self, now: Instant, packet: &[u8], member: Option<MemberId>) {
        let Ok(info) = inner::inspect(packet) else {
            return;
        };
        let key = info.flow.reversed();
        let len = packet.len() as u64;
        let room = self.flows.len() < self.config.max_flows;
        match self.flows.get_mut(&key) {
            Some(f) => {
                f.last_seen = now;
                f.packets_in += 1;
                f.bytes += len;
                if f.member.is_none() {
                    f.member = member;
                }
                if info.tcp.is_some_and(|t| t.flags.fin || t.flags.rst) {
                    f.closing = true;
                }
            }
            None if room => {
                self.flows.insert(
                    key,
                    FlowEntry {
                        member,
                        path: FlowPath::ViaAccessPoint,
                        last_seen: now,
                        packets_out: 0,
                        packets_in: 1,
                        bytes: len,
                        tcp_rcv_nxt: None,
                        closing: false,
                    },
                );
                self.arm_flow_sweep(now);
            }
            None => {}
        }
    }

    /// The AP says a member is gone (any trigger; 126: another instance took
    /// over its id): drop its binding and session and reset its flows
    /// (RFC 5846 semantics, homeaddr's local reset).
    pub(super) fn revoke(&mut self, msg: &MobilityMessage) -> DataAction {
        let Some((member, _)) = msg.binding_id() else {
            return self.counters.drops.drop(DropReason::Malformed);
        };
        if let MessageBody::BindingRevocation { sequence, .. } = msg.body {
            // A repeat of a revocation already acted on (same sequence
            // number): nothing more to revoke, and what was bound since
            // (a restarted member's new binding) stays.
            if self.ap.revoked.insert(member, sequence) == Some(sequence) {
                return DataAction::Consumed;
            }
        }
        if self.bindings.remove(&member).is_some() {
            self.timers.cancel(ShimTimer::BindingExpiry(member));
        }
        self.drop_member_session(member);
        let hoa = self.config.home_address;
        let mut reset = 0;
        let mut gone = Vec::new();
        for (key, f) in &self.flows {
            if f.member != Some(member) {
                continue;
            }
            gone.push(*key);
            if let (6, Some(seq)) = (key.proto, f.tcp_rcv_nxt) {
                let from = SocketAddrV6::new(hoa, key.dst_port, 0, 0);
                let to = SocketAddrV6::new(key.src, key.src_port, 0, 0);
                self.to_tun.push_back(inner::tcp_reset(from, to, seq));
                reset += 1;
            }
        }
        for key in gone {
            self.flows.remove(&key);
        }
        self.counters.resets += reset as u64;
        self.events.push_back(ShimEvent::Revoked {
            member,
            flows_reset: reset,
        });
        DataAction::Consumed
    }
}
