//! The one run loop of every daemon.
//!
//! A daemon implements [`Role`] (set up devices, routes and the engine;
//! answer one control request; stop) and its `main` calls [`run`], which
//! does the rest the same way for all three: logging, the runtime, the
//! control socket, the metrics endpoint, signals (SIGINT and SIGTERM stop
//! cleanly, SIGHUP reloads where the role can), data-plane failures and
//! the exit status (2: bad arguments or configuration, 1: a failure at run
//! time, or the status a role stops with). Engine events are not polled
//! here: the role drains them in its [`EventHook`](crate::driver::EventHook),
//! which the driver calls after every batch.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use homeaddr_proto::engine::{DropCounters, Engine};
use tokio::sync::mpsc;
use tracing::{error, info};

use crate::common::CommonSettings;
use crate::control::{self, ControlRequest, Request, Response};
use crate::driver::Driver;
use crate::metrics::{Metrics, MetricsServer};
use crate::{DropLog, LogLevel};

/// Why a daemon stops.
#[derive(Debug)]
pub enum Stop {
    /// SIGINT or SIGTERM.
    Signal(&'static str),
    /// A control command asked for it (a member's `leave`).
    Requested,
    /// Something failed at run time (exit status 1).
    Failed(anyhow::Error),
    /// The role gives up with its own status and message (a member whose
    /// registration the AP refused).
    Exit {
        /// Exit status.
        code: u8,
        /// What went wrong and what to do, for the log and stderr.
        message: String,
    },
}

/// Lets a role's event hook or control handler stop the daemon.
#[derive(Debug, Clone)]
pub struct StopHandle(mpsc::UnboundedSender<Stop>);

impl StopHandle {
    /// Stop with `why` (the first request wins).
    pub fn stop(&self, why: Stop) {
        let _ = self.0.send(why);
    }
}

/// What the shell lends a role.
#[derive(Debug)]
pub struct Context {
    /// Changes the log level (reload).
    pub log: LogLevel,
    /// Stops the daemon.
    pub stop: StopHandle,
}

/// What a daemon is: its engine, its setup and its control commands.
#[allow(async_fn_in_trait)] // run on the main task, never spawned
pub trait Role: Sized {
    /// The engine the driver runs.
    type Engine: Engine + Send + 'static;
    /// The daemon's validated settings.
    type Settings;
    /// The program name, for messages on stderr.
    const NAME: &'static str;
    /// Whether SIGHUP reloads the configuration ([`Role::reload`]).
    const RELOADS: bool = false;

    /// The settings every daemon has.
    fn common(settings: &Self::Settings) -> &CommonSettings;

    /// Create devices, routes and the engine, and start the driver.
    async fn setup(settings: Self::Settings, cx: &Context) -> anyhow::Result<Self>;

    /// The running data plane.
    fn driver(&mut self) -> &mut Driver<Self::Engine>;

    /// The engine's drop counters, for the rate-limited drop warning.
    fn drops(engine: &Self::Engine) -> &DropCounters;

    /// The daemon's metrics registry: the shell answers every `metrics`
    /// request and scrape from it.
    fn metrics(&self) -> &Metrics;

    /// Answer one control request (all but `metrics`).
    async fn control(&mut self, req: ControlRequest, cx: &Context);

    /// Re-read the configuration (SIGHUP), if [`Role::RELOADS`].
    async fn reload(&mut self, _cx: &Context) {}

    /// Once a second on the main task (a member retires old sockets), and
    /// whenever [`Role::network_changes`] is notified.
    async fn housekeeping(&mut self) {}

    /// Notified when the host's addresses or routes change (the shim's
    /// [`netwatch`](crate::netwatch)): housekeeping runs at once.
    fn network_changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }

    /// Stop the data plane and undo the network setup; log the role's
    /// summary (and, for a member, deregister).
    async fn stop(self, why: &Stop);
}

/// Run a daemon: `settings` as parsed from its flags and file.
pub fn run<R: Role>(settings: anyhow::Result<R::Settings>) -> ExitCode {
    let name = R::NAME;
    let settings = match settings {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return ExitCode::from(2);
        }
    };
    let log = match crate::init_reloadable_logging(&R::common(&settings).log_level) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match crate::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let why = runtime.block_on(serve::<R>(settings, log));
    match why {
        Stop::Signal(_) | Stop::Requested => ExitCode::SUCCESS,
        Stop::Failed(e) => {
            error!("{e:#}");
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
        Stop::Exit { code, message } => {
            error!("{message}");
            eprintln!("{name}: {message}");
            ExitCode::from(code)
        }
    }
}

async fn serve<R: Role>(settings: R::Settings, log: LogLevel) -> Stop {
    let (stop_tx, mut stops) = mpsc::unbounded_channel();
    let cx = Context {
        log,
        stop: StopHandle(stop_tx),
    };
    let common = R::common(&settings).clone();
    // The control socket first: a clash with a running daemon is refused
    // before anything on the host changes.
    let (_control_guard, mut requests) = match control::listen(&common.control).with_context(|| {
        format!(
            "cannot open the control socket {}",
            common.control.display()
        )
    }) {
        Ok(c) => c,
        Err(e) => return Stop::Failed(e),
    };
    let mut metrics = match MetricsServer::listen(common.metrics)
        .await
        .context("cannot listen for --metrics")
    {
        Ok(m) => m,
        Err(e) => return Stop::Failed(e),
    };
    let mut role = match R::setup(settings, &cx).await {
        Ok(r) => r,
        Err(e) => return Stop::Failed(e),
    };
    if let Some(at) = metrics.local_addr {
        info!(%at, "metrics on http://{at}/metrics");
    }
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(h) => h,
        Err(e) => {
            let why = Stop::Failed(anyhow::anyhow!("cannot watch SIGHUP: {e}"));
            role.stop(&why).await;
            return why;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let changes = role.network_changes();
    let mut drop_log = DropLog::default();
    let why = loop {
        tokio::select! {
            sig = crate::shutdown_signal() => break Stop::Signal(sig),
            why = role.driver().failed() => break Stop::Failed(anyhow::anyhow!(why)),
            Some(why) = stops.recv() => break why,
            Some(req) = requests.recv() => {
                if matches!(req.request, Request::Metrics) {
                    let text = role.metrics().scrape().await;
                    req.answer(Ok(Response::Metrics(text)));
                } else {
                    role.control(req, &cx).await;
                    role.driver().kick().await;
                }
            }
            Some(req) = metrics.recv() => {
                let text = role.metrics().scrape().await;
                req.answer(Ok(Response::Metrics(text)));
            }
            Some(()) = hangup.recv() => {
                if R::RELOADS {
                    info!("SIGHUP: reloading the configuration");
                    role.reload(&cx).await;
                    role.driver().kick().await;
                } else {
                    info!("SIGHUP ignored: this daemon has nothing to reload");
                }
            }
            _ = tick.tick() => {
                drop_log.observe(R::drops(&*role.driver().engine().lock().await));
                role.housekeeping().await;
            }
            _ = notified(changes.as_deref()) => role.housekeeping().await,
        }
    };
    role.stop(&why).await;
    if let Stop::Signal(sig) = &why {
        info!("stopped on {sig}");
    }
    why
}

/// Wait for `n`, or forever without one.
async fn notified(n: Option<&tokio::sync::Notify>) {
    match n {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}
