//! OneLogin revoke endpoint (stub: implemented in the dialects work).

use http::StatusCode;

use super::{Dialect, DialectKind, DialectResponse, RevokeCall, RevokeIntent};

/// The OneLogin dialect.
pub struct OneLogin {
    _clients: Vec<(String, String)>,
}
impl OneLogin {
    /// With the accepted client pairs.
    pub fn new(clients: Vec<(String, String)>) -> Self {
        OneLogin { _clients: clients }
    }
}

impl Dialect for OneLogin {
    fn kind(&self) -> DialectKind {
        DialectKind::OneLogin
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
