//! The simulated hosts: what runs on each (an engine and its application)
//! and how a host turns one arrival or timer into packets to send, in the
//! order a daemon's driver sends them.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use homeaddr_proto::engine::ap::{AccessPoint, ApEvent};
use homeaddr_proto::engine::member::{Member, MemberEvent};
use homeaddr_proto::engine::shim::{Shim, ShimEvent};
use homeaddr_proto::engine::{DataAction, Engine, TunPacket};
use homeaddr_proto::wire::{FRAME_HEADER_LEN, MemberId, TAG_LEN};

use crate::NodeId;
use crate::app::{ClientApp, MemberApp};
use crate::net::Delivery;

/// What runs on a node.
#[derive(Debug)]
pub enum NodeKind {
    /// The access point.
    AccessPoint(Box<AccessPoint>),
    /// A member with its service.
    Member(Box<Member>, MemberApp),
    /// A client with a shim.
    Shim(Box<Shim>, ClientApp),
    /// A client without a shim.
    Legacy(ClientApp),
    /// A host that only injects crafted datagrams.
    Attacker,
}

/// A simulated host.
#[derive(Debug)]
pub struct Node {
    /// Name for logs.
    pub name: String,
    /// Underlay address.
    pub addr: Ipv6Addr,
    /// Tunnel port.
    pub port: u16,
    /// Role.
    pub kind: NodeKind,
    /// A killed node receives nothing and runs no timers.
    pub alive: bool,
}

/// A timestamped event of any engine, for assertions and printing.
#[derive(Debug, Clone)]
pub enum LoggedEvent {
    /// From the AP.
    Ap(ApEvent),
    /// From a member.
    Member(MemberId, MemberEvent),
    /// From a shim client's shim.
    Shim(NodeId, ShimEvent),
}

/// A packet a node sends.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A UDP datagram from `from` (the node's endpoint).
    Udp {
        from: SocketAddr,
        to: SocketAddr,
        payload: Vec<u8>,
    },
    /// A native IPv6 packet.
    Native(Vec<u8>),
}

/// What a node produced in one step: packets in send order, and events.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// The node.
    pub id: NodeId,
    /// Virtual now.
    pub now: Instant,
    /// Packets to send, in order.
    pub packets: Vec<Outgoing>,
    /// Engine events, in order.
    pub events: Vec<LoggedEvent>,
}

impl Outbox {
    pub(crate) fn new(id: NodeId, now: Instant) -> Self {
        Self {
            id,
            now,
            packets: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Send the frame the engine filled in, if it said so.
    fn encap(&mut self, from: SocketAddr, action: DataAction, framed: Vec<u8>) {
        if let DataAction::Send { to } = action {
            self.packets.push(Outgoing::Udp {
                from,
                to,
                payload: framed,
            });
        }
    }
}

/// A TUN packet in a datagram-sized buffer, as the daemons' I/O layer
/// reads it: header room | packet | tag room.
pub fn tun_buffer(packet: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; FRAME_HEADER_LEN + packet.len() + TAG_LEN];
    buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + packet.len()].copy_from_slice(packet);
    buf
}

/// The packet of a [`tun_buffer`] (also: the inner packet of a data frame).
pub fn tun_packet(buf: &[u8]) -> &[u8] {
    buf.get(FRAME_HEADER_LEN..buf.len().saturating_sub(TAG_LEN))
        .unwrap_or(&[])
}

/// Hand `packet` to `engine` as a TUN read, as the daemons' driver does.
/// Returns the action and the buffer: on `Send` the whole datagram
/// (header | packet | tag), else see [`tun_packet`] for the (possibly
/// edited) packet.
pub fn handle_tun(engine: &mut impl Engine, now: Instant, packet: &[u8]) -> (DataAction, Vec<u8>) {
    let mut buf = tun_buffer(packet);
    let action = engine.handle_tun(
        now,
        TunPacket::new(&mut buf).expect("tun_buffer has header and tag room"),
    );
    (action, buf)
}

impl Node {
    /// Its tunnel endpoint.
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(self.addr), self.port)
    }

    /// When its engine or application next needs to run (None if dead).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if !self.alive {
            return None;
        }
        match &self.kind {
            NodeKind::AccessPoint(ap) => ap.poll_timeout(),
            NodeKind::Member(m, _) => m.poll_timeout(),
            NodeKind::Shim(s, app) => min_opt(s.poll_timeout(), app.next_tick()),
            NodeKind::Legacy(app) => app.next_tick(),
            NodeKind::Attacker => None,
        }
    }

    /// Drain the engine's transmits, TUN packets and events.
    pub(crate) fn flush(&mut self, out: &mut Outbox) {
        let from = self.endpoint();
        let mut transmits = Vec::new();
        match &mut self.kind {
            NodeKind::AccessPoint(ap) => {
                while let Some(t) = ap.poll_transmit() {
                    transmits.push(t);
                }
                while let Some(e) = ap.poll_event() {
                    out.events.push(LoggedEvent::Ap(e));
                }
            }
            NodeKind::Member(m, app) => {
                while let Some(t) = m.poll_transmit() {
                    transmits.push(t);
                }
                member_events(m, app, out);
            }
            NodeKind::Shim(s, app) => {
                while let Some(t) = s.poll_transmit() {
                    transmits.push(t);
                }
                // Packets the shim writes to its TUN (local resets) reach
                // the application; they send nothing.
                while let Some(p) = s.poll_tun() {
                    app.receive(out.now, &p);
                }
                while let Some(e) = s.poll_event() {
                    out.events.push(LoggedEvent::Shim(out.id, e));
                }
            }
            NodeKind::Legacy(_) | NodeKind::Attacker => {}
        }
        for t in transmits {
            out.packets.push(Outgoing::Udp {
                from,
                to: t.to,
                payload: t.payload,
            });
        }
    }

    /// The application sends `packet` (an IPv6 packet to the HoA): through
    /// its shim, or natively for a legacy client.
    pub(crate) fn send_from_app(&mut self, out: &mut Outbox, packet: &mut [u8]) {
        let from = self.endpoint();
        let action = match &mut self.kind {
            NodeKind::Legacy(_) => {
                out.packets.push(Outgoing::Native(packet.to_vec()));
                return;
            }
            NodeKind::Shim(shim, _) => Some(handle_tun(&mut **shim, out.now, packet)),
            NodeKind::Member(m, _) => Some(handle_tun(&mut **m, out.now, packet)),
            NodeKind::AccessPoint(_) | NodeKind::Attacker => None,
        };
        if let Some((action, framed)) = action {
            out.encap(from, action, framed);
        }
        self.flush(out);
    }

    /// Let a client application send what is due.
    pub(crate) fn app_tick(&mut self, out: &mut Outbox) {
        let packets = match &mut self.kind {
            NodeKind::Shim(_, app) | NodeKind::Legacy(app) => app.tick(out.now),
            _ => return,
        };
        for mut p in packets {
            self.send_from_app(out, &mut p);
        }
    }

    /// Run the engine's timers if due, then what they caused.
    pub(crate) fn run_timers(&mut self, out: &mut Outbox) {
        let now = out.now;
        match &mut self.kind {
            NodeKind::AccessPoint(ap) => ap.handle_timeout(now),
            NodeKind::Member(m, _) => m.handle_timeout(now),
            NodeKind::Shim(s, _) if s.poll_timeout().is_some_and(|t| t <= now) => {
                s.handle_timeout(now)
            }
            _ => {}
        }
        self.flush(out);
        self.app_tick(out);
    }

    /// A packet arrives (a dead node ignores it).
    pub(crate) fn deliver(&mut self, out: &mut Outbox, d: Delivery) {
        if !self.alive {
            return;
        }
        let now = out.now;
        let (mut payload, from) = match d {
            Delivery::Udp { from, payload, .. } => (payload, Some(from)),
            Delivery::Native { packet, .. } => (packet, None),
        };
        let src = self.endpoint();
        match &mut self.kind {
            NodeKind::AccessPoint(ap) => {
                // A native packet is read from the TUN into a frame-sized
                // buffer; a datagram is handled in place (a relay rewrites
                // it). Either way, on Send the buffer is the datagram.
                let (action, framed) = match from {
                    None => handle_tun(&mut **ap, now, &payload),
                    Some(from) => (ap.handle_udp(now, from, &mut payload), payload),
                };
                // As the daemon's driver does: control messages the packet
                // caused leave before the packet itself.
                self.flush(out);
                match action {
                    DataAction::Send { to } => out.packets.push(Outgoing::Udp {
                        from: src,
                        to,
                        payload: framed,
                    }),
                    DataAction::ToTun => out
                        .packets
                        .push(Outgoing::Native(tun_packet(&framed).to_vec())),
                    _ => {}
                }
            }
            NodeKind::Member(m, app) => {
                let Some(from) = from else { return };
                let action = m.handle_udp(now, from, &mut payload);
                // As the daemon's event hook: routes change before the
                // packet reaches the TUN and the application answers.
                member_events(m, app, out);
                if action == DataAction::ToTun {
                    let id = m.config().id;
                    if let Some(answer) = app.receive(id, tun_packet(&payload)) {
                        if m.config().direct_return && !app.routes_into_tun(&answer) {
                            // The kernel sends it natively; the engine
                            // never sees it.
                            out.packets.push(Outgoing::Native(answer));
                        } else {
                            let (action, framed) = handle_tun(&mut **m, now, &answer);
                            if action == DataAction::ToTun {
                                // A straggler the engine returned: the
                                // member's kernel routes it natively.
                                out.packets
                                    .push(Outgoing::Native(tun_packet(&framed).to_vec()));
                            } else {
                                out.encap(src, action, framed);
                            }
                        }
                    }
                }
            }
            NodeKind::Shim(shim, app) => {
                let Some(from) = from else { return };
                let action = shim.handle_udp(now, from, &mut payload);
                if action == DataAction::ToTun {
                    app.receive(now, tun_packet(&payload));
                }
            }
            NodeKind::Legacy(app) => {
                if from.is_none() {
                    app.receive(now, &payload);
                }
            }
            NodeKind::Attacker => {}
        }
        self.flush(out);
        self.app_tick(out);
    }
}

/// Log a member's events; with direct return, follow its shim clients in
/// the host's table (`MemberApp::routed`).
fn member_events(m: &mut Member, app: &mut MemberApp, out: &mut Outbox) {
    let id = m.config().id;
    while let Some(e) = m.poll_event() {
        match &e {
            MemberEvent::ShimClientAdded { client } => {
                app.routed.insert(*client);
            }
            MemberEvent::ShimClientRemoved { client } => {
                app.routed.remove(client);
            }
            _ => {}
        }
        out.events.push(LoggedEvent::Member(id, e));
    }
}

/// The earlier of two optional instants.
pub(crate) fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Sim;
    use homeaddr_proto::engine::ap::MemberState;

    /// As the daemon's driver does, the AP sends the Shim Notice the
    /// shim's first packet caused before it forwards the packet. Frames to
    /// a member are sealed: the member engine opens them, in arrival
    /// order, and tells which was the notice (it learns the correspondent)
    /// and which the data (to its TUN).
    #[test]
    fn the_ap_sends_the_control_a_packet_caused_before_the_packet() {
        let mut sim = Sim::new(1);
        let m = sim.add_member(1);
        sim.run_until_cond(Duration::from_secs(5), |s| {
            s.ap()
                .member(MemberId(1))
                .is_some_and(|e| e.state == MemberState::Active)
        })
        .expect("member registers");
        let c = sim.add_shim_client();
        sim.run_until_cond(Duration::from_secs(5), |s| s.shim(c).has_ap_session())
            .expect("shim gets its AP session");
        let client = sim.nodes[c].addr;
        sim.start_session(c, 1, Duration::from_millis(10));
        // Shim -> AP is 1 ms: after it the AP's output is in flight.
        sim.run_for(Duration::from_millis(1));
        let now = sim.now;
        let mut to_member = Vec::new();
        while let Some(d) = sim.net.pop_arrival() {
            if let Delivery::Udp {
                to,
                from,
                mut payload,
                ..
            } = d
                && to == m
            {
                let member = sim.member_mut(m);
                let action = member.handle_udp(now, from, &mut payload);
                let knows = member.correspondents().any(|k| k.client == client);
                to_member.push((action, knows));
            }
        }
        let notice = to_member
            .iter()
            .position(|(a, knows)| *a == DataAction::Consumed && *knows)
            .expect("the AP told the member about the shim");
        let data = to_member
            .iter()
            .position(|(a, _)| *a == DataAction::ToTun)
            .expect("the AP forwarded the SYN");
        assert!(notice < data, "data before its notice: {to_member:?}");
    }
}
