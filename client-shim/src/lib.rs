//! # homeaddr-shim: the client shim daemon
//!
//! Layer: binary (shell). Creates a TUN device, routes the service's home
//! address into it, and tunnels what applications send there to the
//! access point or, once a member has proven its addresses and sent a
//! binding update, straight to that member. Applications see only the
//! home address. The [`Shim`](homeaddr_proto::engine::shim::Shim) engine
//! makes every decision; the AP endpoint may come from the geo-DNS
//! discovery record.

pub mod config;
pub mod control;
pub mod metrics;
pub mod path;
