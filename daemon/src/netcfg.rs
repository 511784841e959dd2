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

/// Whether a process `pid` runs one of our daemons in this network
/// namespace (a recycled pid of another program, or of a daemon elsewhere,
/// does not count).
fn is_our_daemon(pid: u32) -> bool {
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).ok();
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end().starts_with("homeaddr-"))
        && ns(&pid.to_string()) == ns("self")
}

/// The network namespace this process runs in (its inode), so that
/// daemons in different namespaces of one host never clash.
fn netns_id() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .ok()
        .and_then(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("net:[")
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "0".into())
}

/// A host resource (a policy routing table...) held by this daemon,
/// recorded as a pid file under `/run/homeaddr/claims`; the file goes when
/// the claim is dropped.
#[derive(Debug)]
pub struct Claim {
    path: std::path::PathBuf,
    /// The previous holder died without cleaning up (`kill -9`): what it
    /// left behind is ours to remove.
    pub stale: bool,
}

impl Claim {
    /// Claim `resource` (e.g. `table-4790`) in this network namespace. A
    /// live daemon holding it is an error that names it and `flag`, the
    /// flag that resolves the clash; a dead holder's claim is taken over.
    pub fn take(dir: &std::path::Path, resource: &str, flag: &str) -> anyhow::Result<Claim> {
        use std::io::Write;
        let dir = dir.join("claims");
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(format!("{resource}.net{}.pid", netns_id()));
        let mut stale = false;
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id())
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                    return Ok(Claim { path, stale });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok());
                    if let Some(pid) = holder.filter(|p| is_our_daemon(*p))
                        && pid != std::process::id()
                    {
                        anyhow::bail!(
                            "{resource} is in use by another running daemon (pid {pid}) in this network namespace; \
                             stop it or give this one another {flag}"
                        );
                    }
                    warn!(%resource, previous = ?holder, "taking over from a daemon that died without cleaning up");
                    std::fs::remove_file(&path)
                        .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", path.display()))?;
                    stale = true;
                }
                Err(e) => anyhow::bail!("cannot create {}: {e}", path.display()),
            }
        }
        anyhow::bail!("{resource}: another daemon claimed it at the same time; try again")
    }

    /// Claim the TUN device `name` (`--tun`); `None` for an empty name
    /// (the kernel picks a free one). The kernel refuses a second opener of
    /// a TUN anyway; the claim says who holds it and which flag to change.
    /// A dead holder's TUN went with it: there is nothing to clean up.
    pub fn tun(dir: &std::path::Path, name: &str) -> anyhow::Result<Option<Claim>> {
        if name.is_empty() {
            return Ok(None);
        }
        Claim::take(dir, &format!("TUN device {name}"), "--tun").map(Some)
    }

    /// Claim the host route of `home_address` into a TUN (an AP's or a
    /// shim's `ip -6 route replace HOA/128 dev TUN`): a second daemon
    /// would steal the route, and its cleanup would delete it.
    pub fn home_address_route(
        dir: &std::path::Path,
        home_address: std::net::Ipv6Addr,
    ) -> anyhow::Result<Claim> {
        Claim::take(
            dir,
            &format!(
                "the route to home address {}",
                std::net::IpAddr::V6(home_address).to_canonical()
            ),
            "--home-address",
        )
    }
}

/// An AP's or a shim's claims, taken before it changes anything: the
/// route of `home_address` into its TUN, and the TUN `tun`, under
/// [`RUN_DIR`](crate::common::RUN_DIR).
pub fn claim_route_and_tun(
    home_address: std::net::Ipv6Addr,
    tun: &str,
) -> anyhow::Result<Vec<Claim>> {
    let dir = std::path::Path::new(crate::common::RUN_DIR);
    let route = Claim::home_address_route(dir, home_address)?;
    Ok(std::iter::once(route)
        .chain(Claim::tun(dir, tun)?)
        .collect())
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Run `ip ARGS` and return its standard output.
pub fn ip_output(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run `ip` (install iproute2): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        anyhow::bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_refused_while_its_holder_lives_and_taken_over_when_it_died() {
        let dir = std::env::temp_dir().join(format!("ha-claim-test-{}", std::process::id()));
        let first = Claim::take(&dir, "table-1", "--table").unwrap();
        assert!(!first.stale);
        // Held by this very process: a second take from here is not a clash
        // with another daemon, but test the file a live daemon would leave.
        let file = std::fs::read_dir(dir.join("claims"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        // A live process that is not one of ours (pid 1) holds nothing.
        std::fs::write(&file, "1\n").unwrap();
        let second = Claim::take(&dir, "table-1", "--table").unwrap();
        assert!(second.stale);
        drop(second);
        assert!(!file.exists());
        std::mem::forget(first);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
