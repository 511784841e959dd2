//! What a client may ask: one [`Request`] per line, tagged by `"cmd"`.

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::{ControlError, ErrorCode, VERSION};

/// How many flows `flows` lists when the request does not say.
pub const DEFAULT_TOP: usize = 10;

fn default_top() -> usize {
    DEFAULT_TOP
}

/// One control command and its arguments.
///
/// Member ids are numbers on the wire; requests may also write them as
/// the operator does, `"m2"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// The daemon's state (any daemon): a [`Status`](crate::Status).
    Status,
    /// The Prometheus text of the daemon's metrics (any daemon).
    Metrics,
    /// The AP's member table.
    Members,
    /// The `top` largest flows of the AP's affinity table, by bytes.
    Flows {
        /// How many flows to list.
        #[serde(default = "default_top")]
        top: usize,
    },
    /// Drain: no new clients. On the AP `member` names the member; a
    /// member drains itself (no `member`).
    Drain {
        /// The member to drain (AP).
        #[serde(
            default,
            deserialize_with = "some_member_id",
            skip_serializing_if = "Option::is_none"
        )]
        member: Option<u16>,
        /// Cut the member's remaining flows after this many seconds (AP).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_s: Option<f64>,
    },
    /// Undo a drain (AP with `member`, or a member itself).
    Undrain {
        /// The member (AP).
        #[serde(
            default,
            deserialize_with = "some_member_id",
            skip_serializing_if = "Option::is_none"
        )]
        member: Option<u16>,
    },
    /// Set a member's Maglev weight (AP).
    Weight {
        /// The member.
        #[serde(deserialize_with = "member_id")]
        member: u16,
        /// The weight (0: no new clients).
        weight: u32,
    },
    /// Remove a member now: its flows end, its shim clients are told (AP).
    Remove {
        /// The member.
        #[serde(deserialize_with = "member_id")]
        member: u16,
    },
    /// Reload the AP's configuration file.
    Reload,
    /// Re-register a member from a new care-of endpoint (member).
    Move {
        /// The new endpoint; its address must be configured on the host.
        care_of: SocketAddr,
    },
    /// Deregister a member and stop its daemon (member).
    Leave,
}

/// Every command, with an example line, in the order the help lists them.
const COMMANDS: &[(&str, &str)] = &[
    ("status", r#"{"cmd":"status"}"#),
    ("metrics", r#"{"cmd":"metrics"}"#),
    ("members", r#"{"cmd":"members"}"#),
    ("flows", r#"{"cmd":"flows","top":10}"#),
    ("drain", r#"{"cmd":"drain","member":2,"deadline_s":30}"#),
    ("undrain", r#"{"cmd":"undrain","member":2}"#),
    ("weight", r#"{"cmd":"weight","member":2,"weight":100}"#),
    ("remove", r#"{"cmd":"remove","member":2}"#),
    ("reload", r#"{"cmd":"reload"}"#),
    ("move", r#"{"cmd":"move","care_of":"[2001:db8::7]:4790"}"#),
    ("leave", r#"{"cmd":"leave"}"#),
];

impl Request {
    /// The command name, as in `"cmd"`.
    pub fn cmd(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Metrics => "metrics",
            Self::Members => "members",
            Self::Flows { .. } => "flows",
            Self::Drain { .. } => "drain",
            Self::Undrain { .. } => "undrain",
            Self::Weight { .. } => "weight",
            Self::Remove { .. } => "remove",
            Self::Reload => "reload",
            Self::Move { .. } => "move",
            Self::Leave => "leave",
        }
    }

    /// The request as one wire line (no newline), with the version.
    pub fn to_line(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["v"] = VERSION.into();
        v.to_string()
    }
}

/// A member id written as a number or as `"m2"`.
fn member_id<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Number(u64),
        Text(String),
    }
    let bad = |shown: String| {
        serde::de::Error::custom(format!("member {shown} is not a member id (0-65535)"))
    };
    match Written::deserialize(d).map_err(|_| bad("of this type".into()))? {
        Written::Number(n) => u16::try_from(n).map_err(|_| bad(n.to_string())),
        Written::Text(s) => s
            .strip_prefix('m')
            .unwrap_or(&s)
            .parse()
            .map_err(|_| bad(format!("{s:?}"))),
    }
}

fn some_member_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    member_id(d).map(Some)
}

/// Parse one request line: JSON, a known version, a known `cmd`, valid
/// arguments; each failure says which and shows a correct line.
pub fn parse_request(line: &str) -> Result<Request, ControlError> {
    let mut value: Value = serde_json::from_str(line)
        .map_err(|e| ControlError::bad_request(format!("request is not JSON: {e}")))?;
    let Some(object) = value.as_object_mut() else {
        return Err(ControlError::bad_request(
            "a request is a JSON object, e.g. {\"cmd\":\"status\"}",
        ));
    };
    match object.remove("v") {
        None => {}
        Some(v) if v.as_u64() == Some(u64::from(VERSION)) => {}
        Some(v) => {
            return Err(ControlError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "this daemon speaks control API version {VERSION}, the request asked for {v}: \
                     use a homeaddr-ctl of the same release, or leave out \"v\""
                ),
            ));
        }
    }
    let Some(cmd) = object.get("cmd").and_then(Value::as_str) else {
        return Err(ControlError::bad_request(
            "request needs a \"cmd\" string, e.g. {\"cmd\":\"status\"}",
        ));
    };
    let Some((cmd, example)) = COMMANDS.iter().find(|(c, _)| *c == cmd) else {
        let names: Vec<&str> = COMMANDS.iter().map(|(c, _)| *c).collect();
        return Err(ControlError::new(
            ErrorCode::UnknownCommand,
            format!(
                "unknown command {cmd:?}: use {} (not every daemon has every command)",
                names.join(", ")
            ),
        ));
    };
    serde_json::from_value(value)
        .map_err(|e| ControlError::bad_request(format!("{cmd}: {e}; e.g. {example}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request, as a client builds it.
    pub(crate) fn every_request() -> Vec<Request> {
        vec![
            Request::Status,
            Request::Metrics,
            Request::Members,
            Request::Flows { top: 5 },
            Request::Drain {
                member: Some(2),
                deadline_s: Some(30.0),
            },
            Request::Drain {
                member: None,
                deadline_s: None,
            },
            Request::Undrain { member: Some(2) },
            Request::Undrain { member: None },
            Request::Weight {
                member: 2,
                weight: 7,
            },
            Request::Remove { member: 3 },
            Request::Reload,
            Request::Move {
                care_of: "[2001:db8::7]:4790".parse().unwrap(),
            },
            Request::Leave,
        ]
    }

    #[test]
    fn every_request_round_trips_through_its_line() {
        for r in every_request() {
            let line = r.to_line();
            assert!(line.contains("\"v\":1"), "{line}");
            assert!(line.contains(&format!("\"cmd\":\"{}\"", r.cmd())), "{line}");
            assert_eq!(parse_request(&line), Ok(r), "{line}");
        }
        assert_eq!(COMMANDS.len(), 11, "a command without an example line");
    }

    #[test]
    fn todays_hand_written_lines_stay_valid() {
        // No "v": version 1. Member ids as numbers or "m2"; integer seconds.
        assert_eq!(parse_request(r#"{"cmd":"status"}"#), Ok(Request::Status));
        assert_eq!(
            parse_request(r#"{"cmd":"drain","member":2,"deadline_s":30}"#),
            Ok(Request::Drain {
                member: Some(2),
                deadline_s: Some(30.0)
            })
        );
        assert_eq!(
            parse_request(r#"{"cmd":"remove","member":"m12"}"#),
            Ok(Request::Remove { member: 12 })
        );
        assert_eq!(
            parse_request(r#"{"cmd":"flows"}"#),
            Ok(Request::Flows { top: DEFAULT_TOP })
        );
        assert_eq!(
            parse_request(r#"{"cmd":"drain"}"#),
            Ok(Request::Drain {
                member: None,
                deadline_s: None
            })
        );
        assert_eq!(
            parse_request(r#"{"v":1,"cmd":"leave","extra":true}"#),
            Ok(Request::Leave)
        );
    }

    #[test]
    fn bad_requests_say_what_was_wrong_with_a_code() {
        let err = |line: &str| parse_request(line).unwrap_err();
        let e = err(r#"{"cmd":"nope"}"#);
        assert_eq!(e.code, ErrorCode::UnknownCommand);
        assert!(
            e.message.contains("unknown command \"nope\": use status"),
            "{e}"
        );
        let e = err(r#"{"nocmd":1}"#);
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("needs a \"cmd\""), "{e}");
        assert_eq!(err("status").code, ErrorCode::BadRequest);
        assert_eq!(err("[1]").code, ErrorCode::BadRequest);
        let e = err(r#"{"cmd":"weight","member":2}"#);
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(
            e.message.contains("weight") && e.message.contains(r#"e.g. {"cmd":"weight""#),
            "{e}"
        );
        let e = err(r#"{"cmd":"remove","member":"x9"}"#);
        assert!(
            e.message.contains("member \"x9\" is not a member id"),
            "{e}"
        );
        let e = err(r#"{"cmd":"remove","member":70000}"#);
        assert!(e.message.contains("member 70000 is not a member id"), "{e}");
        let e = err(r#"{"cmd":"move","care_of":"nowhere"}"#);
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("move: "), "{e}");
        let e = err(r#"{"v":2,"cmd":"status"}"#);
        assert_eq!(e.code, ErrorCode::UnsupportedVersion);
        assert!(e.message.contains("version 1"), "{e}");
    }
}
