//! The answer line: `{"v":1,"ok":true,"result":...}` or
//! `{"v":1,"ok":false,"code":"...","error":"..."}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ControlError, ErrorCode, Request, Response, VERSION};

/// One answer line as it is on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The API version of the daemon (absent from daemons before versioning: 1).
    #[serde(default = "version_one")]
    pub v: u32,
    /// Whether the command was carried out.
    pub ok: bool,
    /// The result, when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The kind of failure, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// What was wrong and what to do, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn version_one() -> u32 {
    1
}

impl Reply {
    /// The reply carrying `outcome`.
    pub fn new(outcome: Result<Response, ControlError>) -> Self {
        match outcome.and_then(|r| {
            serde_json::to_value(r)
                .map_err(|e| ControlError::internal(format!("cannot encode the answer: {e}")))
        }) {
            Ok(result) => Self {
                v: VERSION,
                ok: true,
                result: Some(result),
                code: None,
                error: None,
            },
            Err(e) => Self {
                v: VERSION,
                ok: false,
                result: None,
                code: Some(e.code),
                error: Some(e.message),
            },
        }
    }

    /// The reply as one line (no newline). Keys are sorted, as the
    /// daemons have always written them.
    pub fn to_line(&self) -> String {
        serde_json::to_value(self)
            .map(|v| v.to_string())
            .unwrap_or_else(|e| format!("{{\"ok\":false,\"error\":\"cannot encode: {e}\"}}"))
    }

    /// What it says about `request`: its typed result or the daemon's error.
    pub fn outcome(
        self,
        request: &Request,
    ) -> Result<Result<Response, ControlError>, serde_json::Error> {
        if self.ok {
            Response::decode(request, self.result.unwrap_or(Value::Null)).map(Ok)
        } else {
            Ok(Err(ControlError::new(
                self.code.unwrap_or(ErrorCode::Other),
                self.error
                    .unwrap_or_else(|| "the daemon reported an error without a message".into()),
            )))
        }
    }
}
