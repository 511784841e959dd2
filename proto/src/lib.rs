//! # homeaddr-proto: the sans-IO core
//!
//! Layer: bottom. Wire formats ([`wire`]), consistent hashing ([`maglev`],
//! [`affinity`]), the cryptographic helpers of return routability and
//! member registration ([`crypto`]), and the three role engines
//! ([`engine::ap`], [`engine::member`], [`engine::shim`]).
//!
//! Contract: nothing in this crate opens a socket, reads the clock or draws
//! unseeded randomness. Engines take `now` and bytes and return actions and
//! transmits; the I/O shells and the simulator (crate `homeaddr-sim`)
//! drive them.

pub mod affinity;
pub mod crypto;
pub mod engine;
pub mod maglev;
pub mod wire;
