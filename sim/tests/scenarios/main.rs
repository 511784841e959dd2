//! Whole-system scenarios on the deterministic simulator: registration,
//! legacy clients, route optimization, forged binding updates, care-of
//! address changes, drain and death (each also under 1% loss), garbage,
//! fragments and the whole service with integrity-only protection. One
//! test binary, one module per theme.
//!
//! Run with `SIM_LOG=1` to see every engine event with its virtual time.

mod attacks;
mod common;
mod drain_and_death;
mod fragments;
mod integrity;
mod legacy;
mod moves;
mod nat;
mod registration;
mod route_optimization;
