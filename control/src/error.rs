//! Errors a daemon answers with: a machine-readable code and a sentence
//! for the operator.

use serde::{Deserialize, Serialize};

/// What kind of failure a [`ControlError`] is, for scripts and exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// No command of that name.
    UnknownCommand,
    /// The request is not JSON, lacks `cmd`, or an argument is missing or invalid.
    BadRequest,
    /// The request names a version of the API this daemon does not speak.
    UnsupportedVersion,
    /// The command exists, but not on this daemon's role (e.g. `members` on a member).
    UnsupportedByRole,
    /// No member with that id is registered.
    UnknownMember,
    /// The daemon understood and declined (e.g. an invalid config on reload).
    Refused,
    /// The daemon is shutting down or dropped the request.
    Unavailable,
    /// Something failed inside the daemon.
    Internal,
    /// A code this client does not know (a newer daemon).
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::UnknownCommand => "unknown_command",
            Self::BadRequest => "bad_request",
            Self::UnsupportedVersion => "unsupported_version",
            Self::UnsupportedByRole => "unsupported_by_role",
            Self::UnknownMember => "unknown_member",
            Self::Refused => "refused",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::Other => "other",
        }
    }
}

/// A daemon's answer to a request it did not carry out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ControlError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What was wrong and what to do.
    pub message: String,
}

impl ControlError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// [`ErrorCode::BadRequest`].
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// [`ErrorCode::Refused`].
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Refused, message)
    }

    /// [`ErrorCode::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// [`ErrorCode::UnsupportedByRole`]: `cmd` is not a command of `role`,
    /// whose commands are `commands`.
    pub fn unsupported_by_role(cmd: &str, role: &str, commands: &str) -> Self {
        Self::new(
            ErrorCode::UnsupportedByRole,
            format!("{cmd} is not a command of the {role}: use {commands}"),
        )
    }
}
