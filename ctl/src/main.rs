//! # homeaddr-ctl: the operator's command line
//!
//! Layer: binary, above the daemons' control sockets (the typed API of
//! `homeaddr_control`, JSON lines over a Unix socket). It holds no state
//! and no protocol logic: each command is one or two requests to a running
//! daemon, printed as an aligned table (or, with `--json`, as JSON).
//!
//! Contract: exit status 0 when the daemon did what was asked; 1 when it
//! refused (unknown member, invalid config on reload...) or a local tool
//! failed; 2 for a usage error; 3 when no daemon could be reached (not
//! running, wrong socket path, permission denied). docs/OPERATING.md shows
//! every command with real output.

mod aps;
mod client;
mod table;
mod topology;
mod views;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use homeaddr_control::{
    FlowTable, Leaving, MemberRemoved, MemberRow, Moved, Reloaded, Request, Status, WeightSet,
};
use serde::Serialize;

use client::{Chosen, CtlError, Daemon};

/// Control socket of the access point unless told otherwise.
const DEFAULT_CONTROL: &str = "/run/homeaddr/ap.sock";

#[derive(Debug, Parser)]
#[command(
    name = "homeaddr-ctl",
    version,
    about = "Operate a homeaddr service: members, bindings, flows, stats; drain, weight, remove; move, leave; reload; metrics; topology",
    after_help = "Talks to the access point (/run/homeaddr/ap.sock) unless --member ID or --control PATH says otherwise;\n\
                  `aps` takes --control once per access point.\n\
                  Exit status: 0 done; 1 the daemon refused (e.g. unknown member) or a local tool failed; 2 usage error;\n\
                  3 no daemon reachable (not running, wrong socket, permission denied)."
)]
struct Cli {
    /// The daemon's control socket (for `aps`: once per access point).
    #[arg(long, visible_alias = "socket", value_name = "PATH", global = true)]
    control: Vec<PathBuf>,
    /// Talk to member ID's daemon (/run/homeaddr/member-ID.sock).
    #[arg(long, value_name = "ID", global = true, conflicts_with = "control")]
    member: Option<u16>,
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The daemon's state at a glance (any daemon).
    Status,
    /// The AP's members: care-of, state (with the drain countdown), weight, age, lifetime left, clients, flows, traffic.
    Members,
    /// Route-optimization bindings: per shim client (AP), per correspondent (member), per member (shim).
    Bindings,
    /// The largest flows by bytes (AP: its affinity table; shim: its flow table).
    Flows {
        /// How many flows to show.
        #[arg(long, short = 'n', default_value_t = 10)]
        top: usize,
    },
    /// Counters: traffic, drops by reason, retransmissions, return-routability successes and failures.
    Stats,
    /// Several access points of one home address (--control A --control B): members, flows, table digest; exit 1 if the tables disagree.
    Aps,
    /// Drain: no new clients, open flows go on. With MEMBER on the AP; without, on a member (--member ID).
    Drain {
        /// The member to drain (AP only).
        #[arg(value_name = "MEMBER", value_parser = member_id)]
        target: Option<u16>,
        /// Cut the remaining flows after this many seconds (AP only; default: never).
        #[arg(long, value_name = "SECONDS")]
        deadline: Option<f64>,
    },
    /// Undo a drain. With MEMBER on the AP; without, on a member (--member ID).
    Undrain {
        /// The member (AP only).
        #[arg(value_name = "MEMBER", value_parser = member_id)]
        target: Option<u16>,
    },
    /// Set a member's Maglev weight (AP; 0 = no new clients).
    Weight {
        /// The member.
        #[arg(value_name = "MEMBER", value_parser = member_id)]
        target: u16,
        /// The weight.
        weight: u32,
    },
    /// Remove a member now: its flows end, its shim clients are told (AP).
    Remove {
        /// The member.
        #[arg(value_name = "MEMBER", value_parser = member_id)]
        target: u16,
    },
    /// Move a member to a new care-of endpoint (member, with --member ID).
    Move {
        /// The new endpoint, e.g. [2001:db8::7]:4790 (the address must be configured).
        #[arg(long, value_name = "[ADDR]:PORT")]
        care_of: SocketAddr,
    },
    /// Deregister a member and stop its daemon (member, with --member ID).
    Leave,
    /// Reload the AP's config file now (as SIGHUP does); says why if it is invalid.
    Reload,
    /// The daemon's metrics in Prometheus text format.
    Metrics,
    /// The service as a graph: AP, members, clients, traffic (Graphviz DOT).
    Topology {
        /// Print DOT (the default).
        #[arg(long)]
        dot: bool,
        /// Render to an SVG file with Graphviz `dot`.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
}

/// A member id as the operator writes it: `3` or `m3`.
fn member_id(s: &str) -> Result<u16, String> {
    s.strip_prefix('m')
        .unwrap_or(s)
        .parse()
        .map_err(|_| format!("{s:?} is not a member id (a number 0-65535, e.g. 3 or m3)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (out, error) = match daemons(&cli) {
        Err(usage) => {
            eprintln!("homeaddr-ctl: {usage}");
            return ExitCode::from(2);
        }
        Ok(daemons) if matches!(cli.command, Command::Aps) => aps::run(&daemons, cli.json),
        Ok(daemons) => match run(&cli, &daemons[0]) {
            Ok(out) => (out, None),
            Err(e) => (String::new(), Some(e)),
        },
    };
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    match error {
        None => ExitCode::SUCCESS,
        Some(e) => {
            eprintln!("homeaddr-ctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The daemons the command talks to: every `--control` for `aps`, else
/// exactly one. A usage error names what to change.
fn daemons(cli: &Cli) -> Result<Vec<Daemon>, String> {
    if cli.control.len() > 1 && !matches!(cli.command, Command::Aps) {
        return Err(format!(
            "--control was given {} times: only `aps` talks to several daemons; give one --control PATH for this command",
            cli.control.len()
        ));
    }
    Ok(match (&cli.control[..], cli.member) {
        ([], Some(id)) => vec![Daemon::new(
            format!("/run/homeaddr/member-{id}.sock"),
            Chosen::Member(id),
        )],
        ([], None) => vec![Daemon::new(DEFAULT_CONTROL, Chosen::Default)],
        (paths, _) => paths
            .iter()
            .map(|p| Daemon::new(p, Chosen::Given))
            .collect(),
    })
}

/// Output for `--json` (keys sorted, as the daemons write them) or a table.
fn show(json: bool, value: &impl Serialize, table: impl FnOnce() -> String) -> String {
    if json {
        let value = serde_json::to_value(value).unwrap_or_default();
        let mut s = serde_json::to_string_pretty(&value).unwrap_or_default();
        s.push('\n');
        s
    } else {
        table()
    }
}

fn run(cli: &Cli, daemon: &Daemon) -> Result<String, CtlError> {
    let json = cli.json;
    match &cli.command {
        Command::Status => status(daemon, json),
        Command::Members => members(daemon, json),
        Command::Bindings => bindings(daemon, json),
        Command::Flows { top } => flows(daemon, json, *top),
        Command::Stats => stats(daemon, json),
        Command::Aps => Ok(aps::run(std::slice::from_ref(daemon), json).0),
        Command::Metrics => daemon.ask::<String>(Request::Metrics),
        Command::Drain { target, deadline } => drain(daemon, json, *target, *deadline),
        Command::Undrain { target } => undrain(daemon, json, *target),
        Command::Weight { target, weight } => set_weight(daemon, json, *target, *weight),
        Command::Remove { target } => remove(daemon, json, *target),
        Command::Reload => reload(daemon, json),
        Command::Move { care_of } => move_to(daemon, json, *care_of),
        Command::Leave => leave(daemon, json),
        Command::Topology { dot: _, svg } => topology(daemon, svg.as_deref()),
    }
}

/// A table, or `none` when it has no rows.
fn table_or(t: &table::Table, none: &str) -> String {
    if t.is_empty() {
        none.into()
    } else {
        t.render()
    }
}

// Read-only views.

fn status(daemon: &Daemon, json: bool) -> Result<String, CtlError> {
    let s: Status = daemon.ask(Request::Status)?;
    Ok(show(json, &s, || views::status(&s).render()))
}

fn members(daemon: &Daemon, json: bool) -> Result<String, CtlError> {
    let m: Vec<MemberRow> = daemon.ask(Request::Members)?;
    Ok(show(json, &m, || {
        table_or(&views::members(&m), "no members registered\n")
    }))
}

fn bindings(daemon: &Daemon, json: bool) -> Result<String, CtlError> {
    let s: Status = daemon.ask(Request::Status)?;
    let (rows, t) = views::bindings(&s);
    Ok(show(json, &rows, || table_or(&t, "no bindings\n")))
}

/// The AP's affinity table or a shim's flow table, whichever daemon it is.
fn flows(daemon: &Daemon, json: bool, top: usize) -> Result<String, CtlError> {
    match daemon.ask(Request::Status)? {
        Status::AccessPoint(_) => {
            let f: FlowTable = daemon.ask(Request::Flows { top })?;
            Ok(show(json, &f, || {
                format!(
                    "{}{} of {} flows\n",
                    views::ap_flows(&f).render(),
                    f.flows.len(),
                    f.total
                )
            }))
        }
        Status::Shim(s) => {
            let (rows, t) = views::shim_flows(&s, top);
            Ok(show(json, &rows, || t.render()))
        }
        Status::Member(_) => Err(CtlError::Daemon(
            "a member keeps no flow table: ask the access point (homeaddr-ctl flows) or a shim"
                .into(),
        )),
    }
}

fn stats(daemon: &Daemon, json: bool) -> Result<String, CtlError> {
    let s: Status = daemon.ask(Request::Status)?;
    let (flat, t) = views::stats(&s);
    Ok(show(json, &flat, || t.render()))
}

// Operations: the daemon's reply as JSON, or one line saying what it did.

fn done(json: bool, value: &impl Serialize, what: String) -> Result<String, CtlError> {
    Ok(show(json, value, || format!("{what}\n")))
}

/// Drain `target` on the AP, or, without one, the member asked.
fn drain(
    daemon: &Daemon,
    json: bool,
    target: Option<u16>,
    deadline: Option<f64>,
) -> Result<String, CtlError> {
    if deadline.is_some() && target.is_none() {
        return Err(CtlError::Local(
            "--deadline is set on the access point: homeaddr-ctl drain MEMBER --deadline S".into(),
        ));
    }
    let v = daemon.call(Request::Drain {
        member: target,
        deadline_s: deadline,
    })?;
    let what = match (target, deadline) {
        (Some(id), Some(d)) => {
            format!("member {id} is draining: no new clients; flows still open in {d} s are cut")
        }
        (Some(id), None) => format!("member {id} is draining: no new clients; open flows go on"),
        (None, _) => "this member is draining: no new clients; open flows go on".into(),
    };
    done(json, &v, what)
}

fn undrain(daemon: &Daemon, json: bool, target: Option<u16>) -> Result<String, CtlError> {
    let v = daemon.call(Request::Undrain { member: target })?;
    let what = match target {
        Some(id) => format!("member {id} is active again"),
        None => "this member is active again".into(),
    };
    done(json, &v, what)
}

// Access point operations.

fn set_weight(daemon: &Daemon, json: bool, member: u16, weight: u32) -> Result<String, CtlError> {
    let v: WeightSet = daemon.ask(Request::Weight { member, weight })?;
    let what = format!("member {} now has weight {}", v.member, v.weight);
    done(json, &v, what)
}

fn remove(daemon: &Daemon, json: bool, member: u16) -> Result<String, CtlError> {
    let v: MemberRemoved = daemon.ask(Request::Remove { member })?;
    let what = format!(
        "member {} removed: its flows ended, its shim clients were told",
        v.removed
    );
    done(json, &v, what)
}

fn reload(daemon: &Daemon, json: bool) -> Result<String, CtlError> {
    let v: Reloaded = daemon.ask(Request::Reload)?;
    let what = format!("reloaded {}", v.config);
    done(json, &v, what)
}

// Member operations.

fn move_to(daemon: &Daemon, json: bool, care_of: SocketAddr) -> Result<String, CtlError> {
    let v: Moved = daemon.ask(Request::Move { care_of })?;
    let what = format!("moved to {}: re-registering, shims follow", v.care_of);
    done(json, &v, what)
}

fn leave(daemon: &Daemon, json: bool) -> Result<String, CtlError> {
    let v: Leaving = daemon.ask(Request::Leave)?;
    done(json, &v, "leaving: the member deregisters and stops".into())
}

// Topology.

/// The AP's view as DOT, printed or rendered to `svg`.
fn topology(daemon: &Daemon, svg: Option<&Path>) -> Result<String, CtlError> {
    let Status::AccessPoint(s) = daemon.ask(Request::Status)? else {
        return Err(CtlError::Daemon(
            "topology is drawn from the access point's view: leave out --member/--control or point it at the AP's socket".into(),
        ));
    };
    let f: FlowTable = daemon.ask(Request::Flows { top: 100_000 })?;
    let dot = topology::dot(&s, &f);
    match svg {
        None => Ok(dot),
        Some(file) => render_svg(&dot, file).map(|()| format!("wrote {}\n", file.display())),
    }
}

/// Render DOT to `file` with Graphviz.
fn render_svg(dot: &str, file: &Path) -> Result<(), CtlError> {
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .arg("-o")
        .arg(file)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            CtlError::Local(format!(
                "cannot run Graphviz `dot` ({e}): install it (apt-get install graphviz) or use --dot and render elsewhere"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(dot.as_bytes())
            .map_err(|e| CtlError::Local(format!("cannot feed dot: {e}")))?;
    }
    let status = child
        .wait()
        .map_err(|e| CtlError::Local(format!("dot did not finish: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(CtlError::Local(format!(
            "dot failed ({status}) writing {}",
            file.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_read_as_numbers_or_m_names() {
        assert_eq!(member_id("3"), Ok(3));
        assert_eq!(member_id("m12"), Ok(12));
        assert!(member_id("x").unwrap_err().contains("not a member id"));
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::parse_from(["homeaddr-ctl", "drain", "m2", "--deadline", "30", "--json"]);
        assert!(cli.json);
        assert!(
            matches!(cli.command, Command::Drain { target: Some(2), deadline: Some(d) } if d == 30.0)
        );
        let cli = Cli::parse_from(["homeaddr-ctl", "--member", "4", "drain"]);
        assert_eq!(cli.member, Some(4));
        assert!(matches!(cli.command, Command::Drain { target: None, .. }));
    }

    #[test]
    fn only_aps_takes_several_control_sockets() {
        let both = [PathBuf::from("a.sock"), PathBuf::from("b.sock")];
        for args in [
            ["--control", "a.sock", "--control", "b.sock", "aps"],
            ["aps", "--control", "a.sock", "--control", "b.sock"],
        ] {
            let cli = Cli::parse_from(std::iter::once("homeaddr-ctl").chain(args));
            let paths: Vec<_> = daemons(&cli).unwrap().into_iter().map(|d| d.path).collect();
            assert_eq!(paths, both, "{args:?}");
        }
        let cli = Cli::parse_from(["homeaddr-ctl", "aps"]);
        assert_eq!(
            daemons(&cli).unwrap()[0].path,
            PathBuf::from(DEFAULT_CONTROL)
        );
        let cli = Cli::parse_from([
            "homeaddr-ctl",
            "--control",
            "a.sock",
            "--control",
            "b.sock",
            "members",
        ]);
        let e = daemons(&cli).unwrap_err();
        assert!(
            e.contains("--control was given 2 times: only `aps` talks to several daemons"),
            "{e}"
        );
        let cli = Cli::parse_from(["homeaddr-ctl", "--control", "a.sock", "status"]);
        let d = daemons(&cli).unwrap();
        assert_eq!((d.len(), d[0].chosen), (1, Chosen::Given));
        // --member and --control still exclude each other.
        assert!(
            Cli::try_parse_from([
                "homeaddr-ctl",
                "--member",
                "1",
                "--control",
                "a.sock",
                "status"
            ])
            .is_err()
        );
    }

    #[test]
    fn no_daemon_means_exit_3_and_the_advice_fits_how_the_socket_was_chosen() {
        let ask = |daemon: Daemon| daemon.call(Request::Status).unwrap_err();
        let given = ask(Daemon::new("/missing.sock", Chosen::Given));
        assert_eq!(given.exit_code(), 3);
        assert_eq!(
            given.to_string(),
            "no daemon is listening on /missing.sock: is it running? is the path right?"
        );
        let default = ask(Daemon::new("/nonexistent/ap.sock", Chosen::Default));
        assert_eq!(default.exit_code(), 3);
        let default = default.to_string();
        assert!(
            default.contains(
                "/nonexistent/ap.sock (the access point's default socket): is it running?"
            ) && default.contains("give --control PATH"),
            "{default}"
        );
        let member = ask(Daemon::new("/nonexistent/member-4.sock", Chosen::Member(4))).to_string();
        assert!(
            member.contains("(member 4's default socket)")
                && member.contains("give --control PATH"),
            "{member}"
        );
    }
}
