//! # homeaddr-ap: the access point daemon
//!
//! Layer: binary (shell). Owns the home address: the HoA is routed into
//! its TUN device, and its UDP endpoint takes registrations from members
//! and tunnelled packets from shims. All protocol decisions are the
//! [`AccessPoint`](homeaddr_proto::engine::ap::AccessPoint) engine's; this
//! crate reads configuration, sets up the device and routes, runs the
//! driver, answers the control socket and logs engine events.

pub mod config;
pub mod control;
pub mod metrics;
pub mod status;
