//! The local control socket of a daemon: the server of
//! [`homeaddr_control`] (JSON lines over a Unix socket, typed requests and
//! answers), re-exported here with what the daemons need to answer.
//!
//! A daemon reads [`ControlRequest`]s from [`listen`], matches on
//! `request`, and answers with a typed [`Response`] or a
//! [`ControlError`]. docs/OPERATING.md lists every command.

pub use homeaddr_control::server::{ControlRequest, ControlSocket, MAX_REQUEST, listen};
pub use homeaddr_control::{ControlError, ErrorCode, IoStatus, Request, Response};

/// The driver's I/O counters (`Driver::io_status`) as the typed
/// [`IoStatus`] of a `status` answer.
pub fn io_status(io: &serde_json::Value) -> Result<IoStatus, ControlError> {
    serde_json::from_value(io.clone())
        .map_err(|e| ControlError::internal(format!("the driver's I/O counters: {e}")))
}

/// An engine's drop counters by reason name, as a `status` shows them.
pub fn drops(counters: &homeaddr_proto::engine::DropCounters) -> homeaddr_control::Drops {
    counters
        .iter()
        .map(|(reason, n)| (reason.name().to_string(), n))
        .collect()
}
