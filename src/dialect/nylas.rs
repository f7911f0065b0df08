//! Nylas revoke endpoint (stub: implemented in the dialects work).

use http::StatusCode;

use super::{Dialect, DialectKind, DialectResponse, RevokeCall, RevokeIntent};

/// The Nylas dialect.
pub struct Nylas {
    _api_keys: Vec<String>,
}
impl Nylas {
    /// With the accepted API keys.
    pub fn new(api_keys: Vec<String>) -> Self {
        Nylas {
            _api_keys: api_keys,
        }
    }
}

impl Dialect for Nylas {
    fn kind(&self) -> DialectKind {
        DialectKind::Nylas
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
