//! RFC 7009 revoke endpoint (stub: implemented in the dialects work).

use http::StatusCode;

use super::{Dialect, DialectKind, DialectResponse, RevokeCall, RevokeIntent};

/// The RFC 7009 dialect.
pub struct Rfc7009;

impl Dialect for Rfc7009 {
    fn kind(&self) -> DialectKind {
        DialectKind::Rfc7009
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
