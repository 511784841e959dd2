//! The member's control commands answered from the engine's public state.
//! `metrics` is answered by the daemon shell from the registry (with the
//! member's histograms); `move` (a new socket for the driver) is answered
//! in `main.rs`; `leave` is acknowledged here and carried out there.

use std::net::SocketAddr;
use std::time::Instant;

use homeaddr_control::{
    ControlError, CorrespondentRow, Draining, IoStatus, Leaving, MemberApRow, MemberCounters,
    MemberStatus, Registration, Request, Response, Status,
};
use homeaddr_daemon::control::drops;
use homeaddr_proto::engine::member::{Member, RegistrationState};

/// The commands this daemon answers, for error messages.
pub const COMMANDS: &str = "status, metrics, drain, undrain, move or leave";

/// Carry out `request` on the engine at `now`; `io` is the driver's.
pub fn answer(
    m: &mut Member,
    now: Instant,
    io: &IoStatus,
    request: Request,
) -> Result<Response, ControlError> {
    Ok(match request {
        Request::Status => Response::Status(Box::new(Status::Member(status(m, now, io.clone())))),
        Request::Drain { .. } | Request::Undrain { .. } => {
            let draining = matches!(request, Request::Drain { .. });
            m.set_draining(now, draining);
            Response::Draining(Draining { draining })
        }
        Request::Leave => Response::Leaving(Leaving { leaving: true }),
        Request::Metrics | Request::Move { .. } => {
            return Err(ControlError::internal(format!(
                "{} is answered by the daemon's shell, not from the engine",
                request.cmd()
            )));
        }
        other => {
            return Err(ControlError::unsupported_by_role(
                other.cmd(),
                "member",
                COMMANDS,
            ));
        }
    })
}

/// A registration state as the control interface shows it at `now`.
fn registration(state: RegistrationState, now: Instant) -> Registration {
    match state {
        RegistrationState::Idle => Registration::Idle,
        RegistrationState::Registering => Registration::Registering,
        RegistrationState::Registered { expires } => Registration::Registered {
            lifetime_left_s: expires.saturating_duration_since(now).as_secs_f64(),
        },
        RegistrationState::Refused { status } => Registration::Refused { status },
        RegistrationState::Deregistering => Registration::Deregistering,
        RegistrationState::Left => Registration::Left,
    }
}

/// The member's `status`.
pub fn status(m: &Member, now: Instant, io: IoStatus) -> MemberStatus {
    let c = m.counters();
    let aps: Vec<MemberApRow> = m
        .access_points()
        .map(|ap| MemberApRow {
            endpoint: ap.endpoint,
            state: registration(ap.state, now),
            heard_ms_ago: ap
                .last_heard
                .map(|at| now.saturating_duration_since(at).as_millis() as u64),
            draining: ap.draining,
            observed: ap.observed,
        })
        .collect();
    let bindings = m
        .correspondents()
        .map(|c| CorrespondentRow {
            client: c.client,
            shim: c.shim,
            route_optimization: format!("{:?}", c.rr),
            bound: c.binding.is_some_and(|b| b.expires > now),
            lifetime_left_s: c
                .binding
                .map(|b| b.expires.saturating_duration_since(now).as_secs_f64()),
            ro: c.why_unbound(m.config().care_of),
        })
        .collect();
    MemberStatus {
        id: m.config().id.0,
        care_of: m.config().care_of,
        // A member always has an AP (the daemon refuses a configuration
        // without); the unspecified endpoint only stands in for none.
        access_point: aps
            .first()
            .map_or(SocketAddr::from(([0u16; 8], 0)), |a| a.endpoint),
        registration: registration(m.state(), now),
        aps,
        flows: m.flows() as u64,
        draining: m.is_draining(),
        behind_nat: m.behind_nat(),
        direct_return: m.config().direct_return,
        bindings,
        counters: MemberCounters {
            direct_return: c.direct_return,
            via_ap_in: c.via_ap_in,
            direct_in: c.direct_in,
            via_ap_out: c.via_ap_out,
            direct_out: c.direct_out,
            registration_bus: c.registration_bus,
            retransmissions: c.retransmissions,
            rr_successes: c.rr_successes,
            rr_failures: c.rr_failures,
            flow_reports: c.flow_reports,
            flows_reported: c.flows_reported,
            ap_hints: c.ap_hints,
            punches: c.punches,
            keepalives: c.keepalives,
            nat_keepalives: c.nat_keepalives,
            roams: c.roams,
            drops: drops(&c.drops),
        },
        io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use homeaddr_control::ErrorCode;
    use homeaddr_proto::engine::member::MemberConfig;
    use homeaddr_proto::wire::MemberId;

    #[test]
    fn drain_status_and_refusals() {
        let config = MemberConfig::new(
            MemberId(2),
            "fd00::1".parse().unwrap(),
            "[fd00::a]:4790".parse().unwrap(),
            "[fd00::2]:4790".parse().unwrap(),
            vec![7; 32],
            [1; 32],
        );
        let mut config = config;
        config.access_points.push(
            "[fd00::b]:4790"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        );
        let mut m = Member::new(config);
        let now = Instant::now();
        let io = IoStatus::default();
        let drain = Request::Drain {
            member: None,
            deadline_s: None,
        };
        assert_eq!(
            answer(&mut m, now, &io, drain),
            Ok(Response::Draining(Draining { draining: true }))
        );
        let Ok(Response::Status(s)) = answer(&mut m, now, &io, Request::Status) else {
            panic!("status")
        };
        let Status::Member(s) = *s else {
            panic!("a member status")
        };
        assert!(s.draining);
        assert_eq!((s.id, s.registration), (2, Registration::Idle));
        assert_eq!(s.access_point, "[fd00::a]:4790".parse().unwrap());
        assert_eq!(
            s.aps
                .iter()
                .map(|r| r.endpoint.to_string())
                .collect::<Vec<_>>(),
            ["[fd00::a]:4790", "[fd00::b]:4790"]
        );
        assert!(
            s.aps
                .iter()
                .all(|r| r.state == Registration::Idle && r.heard_ms_ago.is_none() && !r.draining)
        );
        assert_eq!(s.flows, 0);
        let e = answer(&mut m, now, &io, Request::Members).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedByRole);
        assert!(e.message.contains("use status, metrics"), "{e}");
    }
}
