//! The one client of a daemon's control socket, for `homeaddr-ctl`, the
//! daemons' tests and the namespace tests: [`call`] on tokio,
//! [`call_blocking`] without a runtime. One request line, one answer line.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::{ControlError, Reply, Request, Response, UnexpectedResponse};

/// How long a daemon may take to answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens on the socket (no file, or a stale one).
    #[error("no daemon is listening on {}: is it running? is the path right?", .0.display())]
    NotListening(PathBuf),
    /// The socket is someone else's.
    #[error("permission denied on {}: the control socket is root's (mode 0600); run as root", .0.display())]
    PermissionDenied(PathBuf),
    /// Connecting, sending or reading failed otherwise.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done ("cannot connect to", ...).
        what: &'static str,
        /// The socket.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No answer in [`ANSWER_TIMEOUT`].
    #[error("the daemon on {} did not answer within {} s", .0.display(), ANSWER_TIMEOUT.as_secs())]
    Timeout(PathBuf),
    /// The daemon closed the connection without answering.
    #[error("the daemon on {} closed the connection without answering", .0.display())]
    Closed(PathBuf),
    /// The answer is not a valid reply to the request.
    #[error("the daemon's answer is not valid: {0}")]
    BadAnswer(String),
    /// A valid reply of another kind than the caller expected.
    #[error(transparent)]
    Unexpected(#[from] UnexpectedResponse),
    /// The daemon answered with an error.
    #[error(transparent)]
    Daemon(#[from] ControlError),
}

impl ClientError {
    /// Whether no daemon could be reached (as opposed to a daemon that
    /// answered, with an error or with nonsense).
    pub fn is_unreachable(&self) -> bool {
        !matches!(
            self,
            Self::BadAnswer(_) | Self::Unexpected(_) | Self::Daemon(_)
        )
    }
}

fn connect_error(path: &Path, e: std::io::Error) -> ClientError {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotListening(path.to_path_buf())
        }
        std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(path.to_path_buf()),
        _ => io_error("cannot connect to", path)(e),
    }
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ClientError {
    move |source| ClientError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn read_reply(path: &Path, request: &Request, line: &str) -> Result<Response, ClientError> {
    if line.is_empty() {
        return Err(ClientError::Closed(path.to_path_buf()));
    }
    let reply: Reply =
        serde_json::from_str(line).map_err(|e| ClientError::BadAnswer(format!("{e}: {line}")))?;
    Ok(reply
        .outcome(request)
        .map_err(|e| ClientError::BadAnswer(format!("{e}: {line}")))??)
}

/// Send `request` to the daemon at `path` and wait for its answer.
pub async fn call(path: &Path, request: &Request) -> Result<Response, ClientError> {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| connect_error(path, e))?;
    let (read, mut write) = stream.into_split();
    let mut line = request.to_line();
    line.push('\n');
    write
        .write_all(line.as_bytes())
        .await
        .map_err(io_error("cannot send the request to", path))?;
    let mut answer = String::new();
    tokio::time::timeout(
        ANSWER_TIMEOUT,
        tokio::io::BufReader::new(read).read_line(&mut answer),
    )
    .await
    .map_err(|_| ClientError::Timeout(path.to_path_buf()))?
    .map_err(io_error("cannot read the answer from", path))?;
    read_reply(path, request, &answer)
}

/// [`call`] without a runtime (a CLI, a test thread).
pub fn call_blocking(path: &Path, request: &Request) -> Result<Response, ClientError> {
    let mut stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|e| connect_error(path, e))?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(io_error("cannot set a timeout on", path))?;
    writeln!(stream, "{}", request.to_line())
        .map_err(io_error("cannot send the request to", path))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                ClientError::Timeout(path.to_path_buf())
            }
            _ => io_error("cannot read the answer from", path)(e),
        })?;
    read_reply(path, request, &answer)
}

/// [`call_blocking`], expecting the result type `T` (e.g. `Vec<MemberRow>`
/// for [`Request::Members`]).
pub fn call_blocking_as<T>(path: &Path, request: &Request) -> Result<T, ClientError>
where
    T: TryFrom<Response, Error = UnexpectedResponse>,
{
    Ok(T::try_from(call_blocking(path, request)?)?)
}
