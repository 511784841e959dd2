//! Namespace tests of today's Internet (issue 11): IPv4 underlays, the
//! IPv4 home address and the real kernel NAT (nftables masquerade in
//! router namespaces, `homeaddr_netns_tests::natlab`).
//!
//! - `harness`: the plain kernel NAT of the lab (UDP and TCP through the
//!   masquerade, `random` mappings, a flush gives a new port, a table
//!   reload does not, UDP timeouts per router).
//! - `member`: a member behind a NAT registers and serves a legacy client;
//!   it route-optimizes with a public shim; an IPv4 legacy client behind a
//!   NAT reaches the IPv4 home address; mixed underlays (an IPv6 member and
//!   an IPv4 member behind a NAT) in one service.
//! - `shim`: a shim behind a NAT reaches the home address through the AP
//!   and gets route optimization (50 MB, SHA-256, AP counters flat); the
//!   same for the IPv4 home address.
//! - `both`: shim and member behind two NATs: route optimization by the
//!   punch or the AP path with the member's reason (port-preserving NATs,
//!   the test prints which); the AP path with the reason (`random` NATs).
//! - `events`: the NAT's mappings flushed mid-transfer (`random`, through
//!   the AP; port-preserving, route-optimized); a NAT UDP timeout shorter
//!   than an idle period, held by the NAT keepalive.
//! - `family`: a member and a shim that know the AP in both families move
//!   from IPv4 to IPv6 mid-transfer, one after the other: through the AP
//!   while their families differ, route-optimized again on IPv6, the
//!   download intact.
//!
//! Every test runs alone (`common::heavy_test`).

mod common;

#[path = "nat/both.rs"]
mod both;
#[path = "nat/events.rs"]
mod events;
#[path = "nat/family.rs"]
mod family;
#[path = "nat/harness.rs"]
mod harness;
#[path = "nat/member.rs"]
mod member;
#[path = "nat/shim.rs"]
mod shim;
#[path = "nat/support.rs"]
mod support;
