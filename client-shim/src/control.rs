//! The shim's control commands: typed answers read from the engine's
//! public state.

use std::time::Instant;

use homeaddr_control::{
    ControlError, FlowPath, IoStatus, Request, Response, ShimBindingRow, ShimCounters, ShimFlowRow,
    ShimStatus, Status,
};
use homeaddr_daemon::control::{ControlRequest, drops, io_status};
use homeaddr_proto::engine::shim::{self, Shim};
use tokio::sync::Mutex;

/// The commands this daemon answers, for error messages.
pub const COMMANDS: &str = "status or metrics";

/// How many flows `status` lists, largest first.
pub const STATUS_FLOWS: usize = 100;

/// Answer `req` from the engine; `io` is the driver's `io_status()`.
/// `metrics` is answered by the shell from its registry.
pub async fn handle(engine: &Mutex<Shim>, req: ControlRequest, io: serde_json::Value) {
    let ControlRequest { request, reply } = req;
    let outcome = match io_status(&io) {
        Ok(io) => answer(&*engine.lock().await, Instant::now(), &io, request),
        Err(e) => Err(e),
    };
    let _ = reply.send(outcome);
}

/// Answer `request` from the engine at `now` (`metrics` is the shell's).
pub fn answer(
    s: &Shim,
    now: Instant,
    io: &IoStatus,
    request: Request,
) -> Result<Response, ControlError> {
    match request {
        Request::Status => Ok(Response::Status(Box::new(Status::Shim(status(
            s,
            now,
            io.clone(),
        ))))),
        Request::Metrics => Err(ControlError::internal(
            "metrics are answered by the daemon's metrics registry",
        )),
        other => Err(ControlError::unsupported_by_role(
            other.cmd(),
            "shim",
            COMMANDS,
        )),
    }
}

/// The shim's `status`.
pub fn status(s: &Shim, now: Instant, io: IoStatus) -> ShimStatus {
    let c = s.counters();
    let bindings = s
        .bindings()
        .map(|(id, b)| ShimBindingRow {
            member: id.0,
            care_of: b.care_of,
            lifetime_left_s: b.expires.saturating_duration_since(now).as_secs_f64(),
            draining: b.draining,
            flows: s.flows().filter(|(_, f)| f.member == Some(*id)).count() as u64,
        })
        .collect();
    let mut flows: Vec<ShimFlowRow> = s
        .flows()
        .map(|(k, f)| ShimFlowRow {
            src: k.src,
            src_port: k.src_port,
            dst_port: k.dst_port,
            proto: k.proto,
            member: f.member.map(|m| m.0),
            path: if f.path == shim::FlowPath::Direct {
                FlowPath::Direct
            } else {
                FlowPath::AccessPoint
            },
            packets_out: f.packets_out,
            packets_in: f.packets_in,
            bytes: f.bytes,
        })
        .collect();
    flows.sort_by_key(|f| std::cmp::Reverse(f.bytes));
    flows.truncate(STATUS_FLOWS);
    ShimStatus {
        home_address: s.config().home_address,
        access_point: s.config().access_point,
        local: s.config().local,
        client_address: s.client_address(),
        observed: s.observed(),
        behind_nat: s.behind_nat(),
        bindings,
        flows,
        counters: ShimCounters {
            via_ap_out: c.via_ap_out,
            direct_out: c.direct_out,
            via_ap_in: c.via_ap_in,
            direct_in: c.direct_in,
            bus_accepted: c.bus_accepted,
            bus_rejected: c.bus_rejected,
            tests_answered: c.tests_answered,
            binding_errors: c.binding_errors,
            resets: c.resets,
            roams: c.roams,
            pool_collisions: c.pool_collisions,
            moves: c.moves,
            fallbacks: c.fallbacks,
            drops: drops(&c.drops),
        },
        io,
    }
}
