//! # homeaddr-sim: the deterministic multi-node simulator
//!
//! Layer: test harness on top of the sans-IO engines of `homeaddr-proto`.
//! Contract: test-only. It drives the engines on a virtual clock (the only
//! `Instant` read the engines see is the anchor of virtual time; [`scale`]
//! also reads wall time for its report) with seeded randomness, so a seed
//! replays a whole run; it is never linked into a daemon.
//!
//! One access point, any number of members (each with a tiny TCP-like echo
//! service bound to the HoA), shim clients and legacy clients (each with a
//! request/response application), joined by links with a one-way latency
//! per node pair, seeded loss and jitter (jitter reorders), and NAPTs in
//! front of chosen nodes. A whole handoff
//! runs in milliseconds of real time. Run a test with `SIM_LOG=1` to see
//! every engine event with its virtual time.
//!
//! - [`sim`]: the [`Sim`] itself: building a scenario, the run loop, what
//!   tests inspect and the operator commands they issue.
//! - [`net`]: addresses, latency, loss, jitter, the packets in flight and
//!   the capture of control datagrams.
//! - [`node`]: what runs on a host and how it turns an arrival or a timer
//!   into packets, in the order a daemon's driver sends them.
//! - [`app`]: the member service and the client sessions.
//! - [`packet`]: inner IPv6 / TCP / UDP packets, built with `smoltcp::wire`.
//! - [`rng`]: the seeded generator.
//! - [`scale`]: several access points at scale (issue 10): a lighter pump
//!   between many AP and member engines, one million flows, AP deaths.

use std::net::Ipv6Addr;

pub mod app;
pub mod net;
pub mod node;
pub mod packet;
pub mod rng;
pub mod scale;
pub mod sim;

pub use app::{ClientApp, MemberApp, RequestRecord, Session, SessionState};
pub use net::{Captured, Nat, Network};
pub use node::{LoggedEvent, Node, NodeKind, handle_tun, tun_buffer, tun_packet};
pub use rng::SimRng;
pub use sim::Sim;

/// The UDP port of the AP and of members in the simulation.
pub const TUNNEL_PORT: u16 = 4790;
/// The UDP port of shims in the simulation.
pub const SHIM_PORT: u16 = 40000;
/// The port the member applications listen on.
pub const SERVICE_PORT: u16 = 80;
/// The registration key of the simulated service.
pub const KEY: &[u8] = b"homeaddr simulation shared key!!";

/// Index of a node in the simulation.
pub type NodeId = usize;

/// The simulated home address.
pub fn home_address() -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1)
}
