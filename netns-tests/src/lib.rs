//! homeaddr namespace test infrastructure: the test-harness layer.
//!
//! Contract: everything here runs *around* the homeaddr daemons, never inside
//! them. It builds throw-away Linux network namespaces ([`topology`]), joins
//! them through a user-space WAN emulator with a latency matrix, seeded loss
//! and jitter ([`wan`]), and provides a deterministic traffic generator and
//! RTT probe ([`testapp`]) whose results a test can check exactly (SHA-256 of
//! a download, per-round-trip RTTs inside one TCP connection). [`cluster`]
//! puts several access points behind a real router instead (LANs, L4
//! multipath, BIRD 2 with eBGP). [`natlab`] is today's Internet: IPv4, an
//! IPv4 home address and the kernel's NAT (nftables masquerade) in front of
//! members and shims.
//!
//! Every namespace, process and TUN device created here is owned by an RAII
//! handle and removed on drop, also when a test panics; the host's own
//! interfaces are never touched, and all addresses come from the ULA prefix
//! [`topology::ULA_PREFIX`], used only inside the namespaces.
//!
//! Tests that need root call [`require_root`] first: it skips loudly when not
//! root, and fails when `CI=true` (a skipped namespace test in CI is a bug).

pub mod attacker;
pub mod cluster;
pub mod natlab;
mod nsenter;
pub mod scenario;
pub mod service;
pub mod testapp;
pub mod topology;
pub mod wan;

pub use topology::{
    Daemon, Netns, Topology, TopologyError, WaitTimeout, require_root, ula, wait_until,
};
