//! The daemon ctl talks to: its socket, how it was chosen (for the error
//! when nothing listens there), and typed calls through the one client of
//! `homeaddr_control`. Blocking: the CLI asks one or two questions and
//! exits, it needs no runtime.

use std::path::{Path, PathBuf};

use homeaddr_control::{ClientError, Request, Response, UnexpectedResponse, call_blocking};

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

/// How the socket was chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// `--control PATH`.
    Given,
    /// `--member ID`: that member's default socket.
    Member(u16),
    /// Neither: the access point's default socket.
    Default,
}

/// A daemon's control socket.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// The socket.
    pub path: PathBuf,
    /// How it was chosen.
    pub chosen: Chosen,
}

impl Daemon {
    /// The daemon at `path`, chosen as `chosen` says.
    pub fn new(path: impl Into<PathBuf>, chosen: Chosen) -> Self {
        Self {
            path: path.into(),
            chosen,
        }
    }

    /// Send `request`; the daemon's typed answer, or why not.
    pub fn call(&self, request: Request) -> Result<Response, CtlError> {
        call_blocking(&self.path, &request).map_err(|e| self.error(e))
    }

    /// [`Daemon::call`], expecting the result type `T`.
    pub fn ask<T>(&self, request: Request) -> Result<T, CtlError>
    where
        T: TryFrom<Response, Error = UnexpectedResponse>,
    {
        T::try_from(self.call(request)?).map_err(|e| CtlError::Daemon(e.to_string()))
    }

    fn error(&self, e: ClientError) -> CtlError {
        match e {
            ClientError::NotListening(path) => CtlError::Connect(not_listening(&path, self.chosen)),
            e if e.is_unreachable() => CtlError::Connect(e.to_string()),
            e => CtlError::Daemon(e.to_string()),
        }
    }
}

/// Nothing listens on `path`: say what to check, and suggest `--control`
/// only when it was not given.
fn not_listening(path: &Path, chosen: Chosen) -> String {
    let path = path.display();
    match chosen {
        Chosen::Given => {
            format!("no daemon is listening on {path}: is it running? is the path right?")
        }
        Chosen::Member(id) => format!(
            "no daemon is listening on {path} (member {id}'s default socket): is it running? \
             If it listens elsewhere, give --control PATH"
        ),
        Chosen::Default => format!(
            "no daemon is listening on {path} (the access point's default socket): is it running? \
             If it listens elsewhere, give --control PATH (or --member ID for a member)"
        ),
    }
}
