//! The daemon side: listen on the socket, parse each line into a
//! [`Request`], hand it to the daemon with a reply channel, write the
//! [`Reply`] back. The socket is created mode 0600: only its owner (root)
//! may steer the daemon.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::{ControlError, ErrorCode, Reply, Request, Response, parse_request};

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;

/// One request, to be answered through `reply`.
#[derive(Debug)]
pub struct ControlRequest {
    /// What the client asked.
    pub request: Request,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Response, ControlError>>,
}

impl ControlRequest {
    /// A request and the receiver of its answer (what the socket server
    /// does per line; the metrics endpoint does the same per scrape).
    pub fn new(request: Request) -> (Self, oneshot::Receiver<Result<Response, ControlError>>) {
        let (reply, rx) = oneshot::channel();
        (Self { request, reply }, rx)
    }

    /// The command name.
    pub fn cmd(&self) -> &'static str {
        self.request.cmd()
    }

    /// Answer it (a client that went away is no error).
    pub fn answer(self, outcome: Result<Response, ControlError>) {
        let _ = self.reply.send(outcome);
    }
}

/// The listening socket; removes its file when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listen on `path`, returning the socket guard and the request stream.
/// Must be called inside a tokio runtime.
pub fn listen(path: &Path) -> std::io::Result<(ControlSocket, mpsc::Receiver<ControlRequest>)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket file left by a crashed daemon: take it over only if nobody answers.
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use by a running daemon; stop it or choose another --control path",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, tx.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok((
        ControlSocket {
            path: path.to_path_buf(),
        },
        rx,
    ))
}

/// Hand `request` to the daemon and wait for its answer.
pub async fn ask(
    daemon: &mpsc::Sender<ControlRequest>,
    request: Request,
) -> Result<Response, ControlError> {
    let (request, answer) = ControlRequest::new(request);
    if daemon.send(request).await.is_err() {
        return Err(ControlError::new(
            ErrorCode::Unavailable,
            "the daemon is shutting down",
        ));
    }
    answer.await.unwrap_or_else(|_| {
        Err(ControlError::new(
            ErrorCode::Unavailable,
            "the daemon dropped the request",
        ))
    })
}

async fn serve(stream: UnixStream, tx: mpsc::Sender<ControlRequest>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_REQUEST as u64)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let outcome = match parse_request(&line) {
            Ok(request) => ask(&tx, request).await,
            Err(e) => Err(e),
        };
        let mut out = Reply::new(outcome).to_line();
        out.push('\n');
        if write.write_all(out.as_bytes()).await.is_err() {
            break;
        }
    }
    debug!("control connection closed");
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Write};

    use super::*;
    use crate::client::{ClientError, call, call_blocking, call_blocking_as};
    use crate::response::tests::every_answer;
    use crate::{Draining, MemberState};

    /// A daemon that answers `status` and `drain` (itself) and refuses the rest.
    fn spawn_daemon(mut rx: mpsc::Receiver<ControlRequest>) {
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                let outcome = match &req.request {
                    Request::Members => Ok(every_answer()
                        .into_iter()
                        .find(|(r, _)| *r == Request::Members)
                        .unwrap()
                        .1),
                    Request::Drain { member: None, .. } => {
                        Ok(Response::Draining(Draining { draining: true }))
                    }
                    other => Err(ControlError::unsupported_by_role(
                        other.cmd(),
                        "test daemon",
                        "members or drain",
                    )),
                };
                req.answer(outcome);
            }
        });
    }

    #[tokio::test]
    async fn requests_and_answers_cross_the_socket() {
        let dir = std::env::temp_dir().join(format!("ha-control-test-{}", std::process::id()));
        let path = dir.join("t.sock");
        let (guard, rx) = listen(&path).unwrap();
        spawn_daemon(rx);
        let drain = Request::Drain {
            member: None,
            deadline_s: None,
        };
        assert_eq!(
            call(&path, &drain).await.unwrap(),
            Response::Draining(Draining { draining: true })
        );
        let e = call(&path, &Request::Reload).await.unwrap_err();
        assert!(
            matches!(&e, ClientError::Daemon(e) if e.code == ErrorCode::UnsupportedByRole),
            "{e}"
        );
        assert!(!e.is_unreachable());
        // The blocking client, typed.
        let p = path.clone();
        let members = tokio::task::spawn_blocking(move || {
            call_blocking_as::<Vec<crate::MemberRow>>(&p, &Request::Members)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(members[0].state, MemberState::Draining);
        // Hand-written lines, as socat sends them: no version, errors with codes.
        let p = path.clone();
        let lines = tokio::task::spawn_blocking(move || {
            let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
            writeln!(s, r#"{{"cmd":"drain"}}"#).unwrap();
            writeln!(s, r#"{{"cmd":"nope"}}"#).unwrap();
            writeln!(s, r#"{{"cmd":"weight","member":"m2"}}"#).unwrap();
            writeln!(s, r#"{{"v":7,"cmd":"status"}}"#).unwrap();
            writeln!(s, "not json").unwrap();
            let mut r = std::io::BufReader::new(s);
            (0..5)
                .map(|_| {
                    let mut l = String::new();
                    r.read_line(&mut l).unwrap();
                    serde_json::from_str::<serde_json::Value>(&l).unwrap()
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        assert_eq!(
            lines[0],
            serde_json::json!({"ok": true, "result": {"draining": true}, "v": 1})
        );
        let codes: Vec<&str> = lines[1..]
            .iter()
            .map(|l| l["code"].as_str().unwrap())
            .collect();
        assert_eq!(
            codes,
            [
                "unknown_command",
                "bad_request",
                "unsupported_version",
                "bad_request"
            ]
        );
        assert!(
            lines[1..]
                .iter()
                .all(|l| l["ok"] == false && l["error"].is_string())
        );
        // A second daemon cannot take over a live socket.
        assert_eq!(
            listen(&path).unwrap_err().kind(),
            std::io::ErrorKind::AddrInUse
        );
        drop(guard);
        assert!(!path.exists(), "the socket file is removed with its guard");
        let e = call_blocking(&path, &Request::Status).unwrap_err();
        assert!(matches!(e, ClientError::NotListening(_)), "{e}");
        assert!(e.is_unreachable());
        assert!(
            e.to_string()
                .ends_with("t.sock: is it running? is the path right?"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
