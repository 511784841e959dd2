//! The access point's control commands: typed answers read from the
//! engine's public state. `reload` needs the shell's configuration and is
//! answered in `main.rs`.

use std::time::{Duration, Instant};

use homeaddr_control::{
    ControlError, ErrorCode, IoStatus, MemberActive, MemberDrained, MemberRemoved, Request,
    Response, Status, WeightSet,
};
use homeaddr_daemon::control::{ControlRequest, io_status};
use homeaddr_proto::engine::ap::{AccessPoint, ApError};
use homeaddr_proto::wire::MemberId;
use tokio::sync::Mutex;

use crate::status;

/// The commands this daemon answers, for error messages.
pub const COMMANDS: &str =
    "status, members, flows, metrics, drain, undrain, weight, remove or reload";

/// Answer `req` from the engine; `io` is the driver's `io_status()`.
pub async fn handle(engine: &Mutex<AccessPoint>, req: ControlRequest, io: serde_json::Value) {
    let ControlRequest { request, reply } = req;
    let outcome = match io_status(&io) {
        Ok(io) => answer(&mut *engine.lock().await, Instant::now(), &io, request),
        Err(e) => Err(e),
    };
    let _ = reply.send(outcome);
}

/// Carry out `request` on the engine at `now`.
pub fn answer(
    ap: &mut AccessPoint,
    now: Instant,
    io: &IoStatus,
    request: Request,
) -> Result<Response, ControlError> {
    Ok(match request {
        Request::Status => Response::Status(Box::new(Status::AccessPoint(status::status(
            ap,
            now,
            io.clone(),
        )))),
        Request::Members => Response::Members(status::members(ap, now)),
        // The shell answers it from the metrics registry, which locks the
        // engine itself.
        Request::Metrics => {
            return Err(ControlError::internal(
                "metrics are answered by the daemon's metrics registry",
            ));
        }
        Request::Flows { top } => Response::Flows(status::flows(ap, now, top)),
        Request::Drain { member, deadline_s } => {
            let id = needs_member("drain", member)?;
            let deadline = deadline_s
                .map(|s| {
                    Duration::try_from_secs_f64(s).map_err(|_| {
                        ControlError::bad_request(format!(
                            "deadline_s {s} is not a number of seconds (0 or more)"
                        ))
                    })
                })
                .transpose()?;
            ap.drain(now, id, deadline).map_err(engine_error)?;
            Response::MemberDrained(MemberDrained { draining: id.0 })
        }
        Request::Undrain { member } => {
            let id = needs_member("undrain", member)?;
            ap.undrain(id).map_err(engine_error)?;
            Response::MemberActive(MemberActive { active: id.0 })
        }
        Request::Weight { member, weight } => {
            ap.set_weight(MemberId(member), weight)
                .map_err(engine_error)?;
            Response::WeightSet(WeightSet { member, weight })
        }
        Request::Remove { member } => {
            ap.remove(now, MemberId(member)).map_err(engine_error)?;
            Response::MemberRemoved(MemberRemoved { removed: member })
        }
        Request::Reload => {
            return Err(ControlError::internal(
                "reload is answered by the daemon's shell, not from the engine",
            ));
        }
        other => {
            return Err(ControlError::unsupported_by_role(
                other.cmd(),
                "access point",
                COMMANDS,
            ));
        }
    })
}

fn needs_member(cmd: &str, member: Option<u16>) -> Result<MemberId, ControlError> {
    member.map(MemberId).ok_or_else(|| {
        ControlError::bad_request(format!(
            "{cmd} needs \"member\": the member id, e.g. {{\"cmd\":\"{cmd}\",\"member\":2}}"
        ))
    })
}

fn engine_error(e: ApError) -> ControlError {
    let code = match e {
        ApError::UnknownMember(_) => ErrorCode::UnknownMember,
        _ => ErrorCode::Refused,
    };
    ControlError::new(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use homeaddr_proto::engine::ap::{ApConfig, MemberKey};

    fn ap() -> AccessPoint {
        let keys = vec![MemberKey::new(1, vec![7; 32])];
        AccessPoint::new(ApConfig::new("fd00::1".parse().unwrap(), keys)).unwrap()
    }

    fn ask(ap: &mut AccessPoint, request: Request) -> Result<Response, ControlError> {
        answer(ap, Instant::now(), &IoStatus::default(), request)
    }

    #[test]
    fn status_and_tables_come_from_the_engine() {
        let mut ap = ap();
        let Ok(Response::Status(s)) = ask(&mut ap, Request::Status) else {
            panic!("status")
        };
        let Status::AccessPoint(s) = *s else {
            panic!("an AP status")
        };
        assert_eq!(s.home_address.to_string(), "fd00::1");
        assert!(s.members.is_empty() && s.shim_clients.is_empty());
        assert!(s.counters.drops.contains_key("spoofed_source"), "{s:?}");
        assert!(s.counters.drops.contains_key("settling"), "{s:?}");
        // No member yet: the digest of the empty table, and still settling.
        assert_eq!(s.table_digest, format!("{:016x}", ap.table_digest()));
        assert_eq!(s.table_digest.len(), 16);
        assert!(s.settling);
        assert_eq!((s.flows_reported, s.flows_moved), (0, 0));
        assert_eq!(
            ask(&mut ap, Request::Members),
            Ok(Response::Members(Vec::new()))
        );
    }

    #[test]
    fn refusals_carry_their_codes() {
        let mut ap = ap();
        let code = |ap: &mut AccessPoint, r| ask(ap, r).unwrap_err();
        let e = code(
            &mut ap,
            Request::Drain {
                member: Some(9),
                deadline_s: None,
            },
        );
        assert_eq!(e.code, ErrorCode::UnknownMember);
        assert!(e.message.contains("unknown member m9"), "{e}");
        let e = code(
            &mut ap,
            Request::Drain {
                member: None,
                deadline_s: None,
            },
        );
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("drain needs \"member\""), "{e}");
        let e = code(
            &mut ap,
            Request::Drain {
                member: Some(1),
                deadline_s: Some(-1.0),
            },
        );
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(
            code(&mut ap, Request::Remove { member: 3 }).code,
            ErrorCode::UnknownMember
        );
        let e = code(&mut ap, Request::Leave);
        assert_eq!(e.code, ErrorCode::UnsupportedByRole);
        assert!(
            e.message
                .contains("leave is not a command of the access point"),
            "{e}"
        );
    }
}
