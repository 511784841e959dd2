//! # homeaddr-control: the typed control API of the daemons
//!
//! Layer: I/O shell, beside `homeaddr-daemon`; no protocol logic and no
//! engine types. It defines what a daemon's control socket accepts and
//! answers, so that the daemons, `homeaddr-ctl` and the namespace tests
//! share one set of types: a renamed field is a compile error, not a
//! silently empty column.
//!
//! Contract (the wire, version [`VERSION`]): JSON lines over a Unix
//! socket. A client writes one request object per line, internally tagged
//! by `"cmd"` ([`Request`]), optionally with `"v": 1` (absent means 1);
//! the daemon answers each with one line, `{"v":1,"ok":true,"result":...}`
//! or `{"v":1,"ok":false,"code":"unknown_member","error":"..."}`
//! ([`Reply`], [`ControlError`]). The result's shape depends on the
//! request ([`Response`]); [`client`] decodes it accordingly. So `socat -
//! UNIX-CONNECT:/run/homeaddr/ap.sock` works with hand-written lines.
//! docs/OPERATING.md lists every command.

pub mod client;
mod error;
mod reply;
mod request;
mod response;
pub mod server;

pub use client::{ClientError, call, call_blocking, call_blocking_as};
pub use error::{ControlError, ErrorCode};
pub use reply::Reply;
pub use request::{Request, parse_request};
pub use response::*;

/// The control API version this crate speaks.
pub const VERSION: u32 = 1;
