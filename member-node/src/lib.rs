//! # homeaddr-member: the member node daemon
//!
//! Layer: binary (shell). Registers its care-of endpoint with the access
//! point, puts the home address on its TUN device so that any unmodified
//! server bound to the HoA answers, source-routes the answers (from the
//! HoA) back into the TUN, and lets the
//! [`Member`](homeaddr_proto::engine::member::Member) engine decide where
//! each goes: back through the AP or straight to a client's shim. With
//! direct server return ([`direct_return`]) only shim clients' answers
//! come back to the engine; the kernel sends the others natively.

pub mod config;
pub mod control;
pub mod direct_return;
pub mod metrics;
