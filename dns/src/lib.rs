//! homeaddr embedded geo-DNS: an authoritative server that answers each
//! client with the nearest healthy site, located by EDNS Client Subnet
//! (RFC 7871) or the query's source address.
//!
//! Layers, bottom up (dependencies point one way):
//! - sans-IO core: [`wire`] (query parser, reply encoder), [`geo`]
//!   (distance, prefix trie with scope), [`config`] (TOML -> validated
//!   [`config::Zone`]), [`health`] (hysteresis state machine, probe
//!   scheduler, time passed in), [`select`] (site choice) and [`answer`]
//!   (the pure `query bytes + source + transport -> reply bytes` function).
//! - shell: [`handler`] (hickory-server `RequestHandler`), [`server`]
//!   (listeners with SO_REUSEPORT, the fast UDP workers with batched I/O,
//!   probes, metrics endpoint), [`logging`] (the daemon's log filter),
//!   [`client`] (a small stub resolver) and [`discover`] (the client shim's
//!   AP endpoint lookup).
//!
//! Contract: the query path reads one immutable [`answer::Snapshot`] through
//! an `ArcSwap`; health updates publish a new snapshot and never block a
//! query.

pub mod answer;
pub mod client;
pub mod config;
pub mod discover;
pub mod geo;
pub mod handler;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod select;
pub mod server;
pub mod wire;
