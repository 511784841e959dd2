//! Namespace tests of several access points for one home address behind a
//! real router (issue 10): a client LAN (12 legacy clients, a shim client),
//! a router that hashes flows over the APs (L4 multipath), a server LAN
//! with the APs and the members (`homeaddr_netns_tests::cluster`).
//!
//! - `ecmp`: a static kernel multipath route the test changes as a router
//!   does: an AP dies, an AP comes back, a member joins and then an AP
//!   dies; every long transfer must finish intact (0 flows lost) and new
//!   connections succeed within 1 s of the route change.
//! - `bgp`: BIRD 2 on every AP host announcing the home address by eBGP to
//!   BIRD on the router (hold time 3 s): a dead AP daemon's route is
//!   withdrawn at once, a silent AP host's after the hold time, and the
//!   health hook (`scripts/ap-health-hook`) withdraws an AP without active
//!   members.
//! - `restart`: one AP restarted after kill -9, one member restarted after
//!   kill -9: serving again within 2 s.
//!
//! Tests whose members register with several APs need the multi-AP member
//! (`--access-point` repeated); a member daemon without it fails them
//! saying so.
//! Every test runs alone (they load both cores): see `common::heavy_test`.

mod common;

#[path = "multi_ap/bgp.rs"]
mod bgp;
#[path = "multi_ap/ecmp.rs"]
mod ecmp;
#[path = "multi_ap/restart.rs"]
mod restart;
#[path = "multi_ap/support.rs"]
mod support;
