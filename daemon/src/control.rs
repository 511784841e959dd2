//! The local control socket of a daemon: JSON lines over a Unix socket.
//!
//! A client writes one request line, `{"cmd": "status"}` or e.g.
//! `{"cmd": "move", "care_of": "[2001:db8::5]:4790"}`, and reads one
//! response line, `{"ok": true, "result": ...}` or
//! `{"ok": false, "error": "what was wrong and what to do"}`. The socket is
//! created mode 0600: only its owner (root) may steer the daemon.
//! docs/OPERATING.md lists every command.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;

/// One request, to be answered through `reply`.
#[derive(Debug)]
pub struct ControlRequest {
    /// The parsed request object; `cmd` names the command.
    pub request: Value,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Value, String>>,
}

impl ControlRequest {
    /// The command name.
    pub fn cmd(&self) -> &str {
        self.request
            .get("cmd")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// A string argument.
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.request.get(name).and_then(Value::as_str)
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

async fn serve(stream: UnixStream, tx: mpsc::Sender<ControlRequest>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_REQUEST as u64)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match serde_json::from_str::<Value>(&line) {
            Ok(request) if request.get("cmd").and_then(Value::as_str).is_some() => {
                let (reply, rx) = oneshot::channel();
                if tx.send(ControlRequest { request, reply }).await.is_err() {
                    json!({"ok": false, "error": "the daemon is shutting down"})
                } else {
                    match rx.await {
                        Ok(Ok(result)) => json!({"ok": true, "result": result}),
                        Ok(Err(error)) => json!({"ok": false, "error": error}),
                        Err(_) => json!({"ok": false, "error": "the daemon dropped the request"}),
                    }
                }
            }
            Ok(_) => {
                json!({"ok": false, "error": "request needs a \"cmd\" string, e.g. {\"cmd\":\"status\"}"})
            }
            Err(e) => json!({"ok": false, "error": format!("request is not JSON: {e}")}),
        };
        let mut out = answer.to_string();
        out.push('\n');
        if write.write_all(out.as_bytes()).await.is_err() {
            break;
        }
    }
    debug!("control connection closed");
}

/// Client side: send one request and wait for its answer.
pub async fn call(path: &Path, request: &Value) -> Result<Value, String> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                format!(
                    "no daemon is listening on {} (is it running? is --control right?)",
                    path.display()
                )
            }
            std::io::ErrorKind::PermissionDenied => {
                format!("permission denied on {}: run as root", path.display())
            }
            _ => format!("cannot connect to {}: {e}", path.display()),
        })?;
    let (read, mut write) = stream.into_split();
    let mut line = request.to_string();
    line.push('\n');
    write
        .write_all(line.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut lines = BufReader::new(read).lines();
    let answer = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| "the daemon did not answer within 10 s".to_string())?
        .map_err(|e| format!("cannot read the answer: {e}"))?
        .ok_or("the daemon closed the connection without answering")?;
    let v: Value = serde_json::from_str(&answer)
        .map_err(|e| format!("the daemon's answer is not JSON: {e}"))?;
    if v.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    } else {
        Err(v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown error")
            .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_and_answer_round_trip() {
        let dir = std::env::temp_dir().join(format!("ha-ctl-test-{}", std::process::id()));
        let path = dir.join("t.sock");
        let (_guard, mut rx) = listen(&path).unwrap();
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                let answer = match req.cmd() {
                    "echo" => Ok(json!({"said": req.arg("text")})),
                    other => Err(format!("unknown command {other:?}")),
                };
                let _ = req.reply.send(answer);
            }
        });
        let v = call(&path, &json!({"cmd": "echo", "text": "hi"}))
            .await
            .unwrap();
        assert_eq!(v, json!({"said": "hi"}));
        let e = call(&path, &json!({"cmd": "nope"})).await.unwrap_err();
        assert!(e.contains("unknown command"), "{e}");
        let e = call(&path, &json!({"nocmd": 1})).await.unwrap_err();
        assert!(e.contains("needs a \"cmd\""), "{e}");
        // A second daemon cannot take over a live socket.
        assert_eq!(
            listen(&path).unwrap_err().kind(),
            std::io::ErrorKind::AddrInUse
        );
        let e = call(&dir.join("absent.sock"), &json!({"cmd": "x"}))
            .await
            .unwrap_err();
        assert!(e.contains("no daemon is listening"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
