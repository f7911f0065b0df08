//! LangSmith revoke endpoint (stub: implemented in the dialects work).

use http::StatusCode;

use super::{Dialect, DialectKind, DialectResponse, RevokeCall, RevokeIntent};

/// The LangSmith dialect.
pub struct LangSmith;

impl Dialect for LangSmith {
    fn kind(&self) -> DialectKind {
        DialectKind::LangSmith
    }
    fn parse(&self, _call: &RevokeCall<'_>) -> Result<RevokeIntent, DialectResponse> {
        Err(self.unavailable())
    }
    fn success(&self) -> DialectResponse {
        DialectResponse::json(StatusCode::OK, &serde_json::json!({}))
    }
    fn unauthenticated(&self) -> DialectResponse {
        DialectResponse::json(StatusCode::UNAUTHORIZED, &serde_json::json!({}))
    }
    fn payload_too_large(&self) -> DialectResponse {
        DialectResponse::json(StatusCode::PAYLOAD_TOO_LARGE, &serde_json::json!({}))
    }
    fn unavailable(&self) -> DialectResponse {
        DialectResponse::json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({}))
    }
}
