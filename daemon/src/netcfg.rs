//! Network setup through iproute2, undone in reverse order on drop.
//!
//! The daemons add routes, rules and addresses around their TUN devices;
//! every change is paired with the command that removes it, so a daemon
//! leaves the host as it found it on a clean shutdown (and the TUN device,
//! with its routes, disappears with the process anyway).

use std::process::Command;

use tracing::{debug, warn};

/// Changes made so far, with their undo commands.
#[derive(Debug, Default)]
pub struct NetConfig {
    undo: Vec<Vec<String>>,
}

/// Run `ip ARGS`; the error names the command and repeats iproute2's message.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    debug!(cmd = %format!("ip {}", args.join(" ")), "network setup");
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run `ip` (install iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        anyhow::bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

/// Set a sysctl (e.g. `net.ipv6.conf.all.forwarding`).
pub fn sysctl(key: &str, value: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value)
        .map_err(|e| anyhow::anyhow!("cannot set {key}={value} ({path}): {e}"))
}

impl NetConfig {
    /// Nothing changed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Apply `ip do_args`, remembering `ip undo_args` for later.
    pub fn apply(&mut self, do_args: &[&str], undo_args: &[&str]) -> anyhow::Result<()> {
        ip(do_args)?;
        self.undo
            .push(undo_args.iter().map(|s| s.to_string()).collect());
        Ok(())
    }

    /// Undo everything now, newest first.
    pub fn undo_all(&mut self) {
        while let Some(cmd) = self.undo.pop() {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            if let Err(e) = ip(&args) {
                warn!(error = %e, "cleanup step failed");
            }
        }
    }
}

impl Drop for NetConfig {
    fn drop(&mut self) {
        self.undo_all();
    }
}
