//! The client side of a daemon's control socket: one JSON request line,
//! one JSON answer line (see `homeaddr_daemon::control`). Blocking: the
//! CLI asks one or two questions and exits, it needs no runtime.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// How long a daemon may take to answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request failed; each maps to an exit status.
#[derive(Debug)]
pub enum CtlError {
    /// No daemon answers on the socket: not running, wrong path or no
    /// permission (exit 3).
    Connect(String),
    /// The daemon answered with an error, e.g. an unknown member (exit 1).
    Daemon(String),
    /// Something on this side failed, e.g. Graphviz is missing (exit 1).
    Local(String),
}

impl CtlError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Connect(_) => 3,
            CtlError::Daemon(_) | CtlError::Local(_) => 1,
        }
    }
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtlError::Connect(e) | CtlError::Daemon(e) | CtlError::Local(e) => f.write_str(e),
        }
    }
}

/// Send `request` to the daemon at `path`; its `result`, or its error.
pub fn call(path: &Path, request: &Value) -> Result<Value, CtlError> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        CtlError::Connect(match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => format!(
                "no daemon is listening on {}: is it running? (or give --control / --member)",
                path.display()
            ),
            std::io::ErrorKind::PermissionDenied => format!(
                "permission denied on {}: the control socket is root's (mode 0600); run as root",
                path.display()
            ),
            _ => format!("cannot connect to {}: {e}", path.display()),
        })
    })?;
    let io = |what: &str, e: std::io::Error| {
        CtlError::Connect(format!("{what} {}: {e}", path.display()))
    };
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| io("cannot set a timeout on", e))?;
    writeln!(stream, "{request}").map_err(|e| io("cannot send the request to", e))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).map_err(|e| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            CtlError::Connect(format!(
                "the daemon on {} did not answer within {} s",
                path.display(),
                ANSWER_TIMEOUT.as_secs()
            ))
        } else {
            io("cannot read the answer from", e)
        }
    })?;
    if line.is_empty() {
        return Err(CtlError::Connect(format!(
            "the daemon on {} closed the connection without answering",
            path.display()
        )));
    }
    let answer: Value = serde_json::from_str(&line)
        .map_err(|e| CtlError::Daemon(format!("the daemon's answer is not JSON: {e}")))?;
    if answer.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    } else {
        Err(CtlError::Daemon(
            answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("the daemon reported an error without a message")
                .to_string(),
        ))
    }
}
