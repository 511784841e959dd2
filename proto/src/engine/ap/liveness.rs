//! Liveness: the BRR heartbeat, members declared down when they miss
//! refreshes or their lifetime ends, and the revocations (Binding
//! Revocation Indications, RFC 5846) that tell a gone member's shims.

use std::net::Ipv6Addr;
use std::time::Instant;

use super::{AccessPoint, ApEvent, ApTimer};
use crate::wire::mh::{MessageBody, revocation_trigger};
use crate::wire::{MemberId, MobilityMessage, MobilityOption};

/// A revocation still to be repeated (it is not acknowledged). Each copy
/// is sealed anew in the shim's session (a fresh counter).
#[derive(Debug, Clone)]
pub(super) struct PendingRevocation {
    client: Ipv6Addr,
    member: MemberId,
    msg: MobilityMessage,
    remaining: u8,
    next: Instant,
}

impl AccessPoint {
    /// Ask every live member for a BU; the answers keep them alive.
    pub(super) fn heartbeat(&mut self, now: Instant) {
        let targets: Vec<MemberId> = self
            .members
            .values()
            .filter(|m| !m.is_down())
            .map(|m| m.id)
            .collect();
        for id in &targets {
            self.request_refresh(*id);
        }
        if !targets.is_empty() {
            self.timers
                .set(ApTimer::Heartbeat, now + self.config.heartbeat);
        }
    }

    /// The liveness timer of `id`: down if not heard from for `dead_after`.
    pub(super) fn check_liveness(&mut self, now: Instant, id: MemberId) {
        let deadline = self
            .members
            .get(&id)
            .map(|m| m.last_heard + self.config.dead_after);
        self.down_unless_later(now, id, ApTimer::Liveness(id), deadline);
    }

    /// The lifetime timer of `id`: down if its registration ran out.
    pub(super) fn check_lifetime(&mut self, now: Instant, id: MemberId) {
        let expires = self.members.get(&id).map(|m| m.lifetime_expires);
        self.down_unless_later(now, id, ApTimer::Lifetime(id), expires);
    }

    fn down_unless_later(
        &mut self,
        now: Instant,
        id: MemberId,
        timer: ApTimer,
        at: Option<Instant>,
    ) {
        match at {
            Some(at) if at > now => self.timers.set(timer, at),
            Some(_) => self.mark_down(now, id),
            None => {}
        }
    }

    fn mark_down(&mut self, now: Instant, id: MemberId) {
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if m.state.go_down(now).is_err() {
            return; // down already
        }
        self.timers.cancel(ApTimer::DrainDeadline(id));
        self.events.push_back(ApEvent::MemberDown { id });
        self.rebuild();
        self.member_gone(now, id, revocation_trigger::LIVENESS_FAILURE);
    }

    /// The member serves no flow any more: cut its affinity entries and tell
    /// the shims it served.
    pub(super) fn member_gone(&mut self, now: Instant, id: MemberId, trigger: u8) {
        self.affinity.remove_member(id);
        let mut clients = Vec::new();
        for (client, shim) in self.shims.iter_mut() {
            if shim.members.remove(&id).is_some() {
                clients.push(*client);
            }
        }
        self.revoke(now, id, trigger, clients);
    }

    /// Another instance took member `id` over: the shims the old one served
    /// hear it (BRI trigger 126) and will be noticed anew.
    pub(super) fn member_restarted(&mut self, now: Instant, id: MemberId) {
        let mut clients = Vec::new();
        for (client, shim) in self.shims.iter_mut() {
            if let Some(st) = shim.members.get_mut(&id) {
                *st = super::NoticeState::default();
                clients.push(*client);
            }
        }
        self.revoke(now, id, revocation_trigger::MEMBER_RESTARTED, clients);
    }

    fn revoke(&mut self, now: Instant, id: MemberId, trigger: u8, clients: Vec<Ipv6Addr>) {
        for client in clients {
            self.revocation_seq = self.revocation_seq.wrapping_add(1);
            let [bid, hoa] = self.member_id_options(id);
            let msg = MobilityMessage::new(MessageBody::BindingRevocation {
                trigger,
                sequence: self.revocation_seq,
            })
            .with(bid)
            .with(hoa)
            .with(MobilityOption::Correspondent(client));
            self.revocations.push(PendingRevocation {
                client,
                member: id,
                msg,
                remaining: self.config.revocation_repeats.max(1),
                next: now,
            });
            self.events
                .push_back(ApEvent::Revoked { client, member: id });
        }
        self.send_revocations(now);
    }

    /// Send the revocations that are due (sealed to each shim); arm the
    /// timer for the next. A shim whose record is gone gets none.
    pub(super) fn send_revocations(&mut self, now: Instant) {
        let interval = self.config.revocation_interval;
        let mut next: Option<Instant> = None;
        let mut revocations = std::mem::take(&mut self.revocations);
        for r in revocations.iter_mut() {
            if r.next <= now && r.remaining > 0 {
                if self.send_sealed_to_shim(r.client, Some(r.member), &r.msg) {
                    self.counters.revocations += 1;
                    r.remaining -= 1;
                } else {
                    r.remaining = 0;
                }
                r.next = now + interval;
            }
            if r.remaining > 0 {
                next = Some(next.map_or(r.next, |n: Instant| n.min(r.next)));
            }
        }
        revocations.retain(|r| r.remaining > 0);
        self.revocations = revocations;
        match next {
            Some(at) => self.timers.set(ApTimer::Revocations, at),
            None => self.timers.cancel(ApTimer::Revocations),
        }
    }
}
