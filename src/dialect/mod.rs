//! Revoke-endpoint dialects: one module per vendor, each a pure pair of
//! functions. `parse` turns an HTTP call (method, query, headers, body) into a
//! [`RevokeIntent`] or the vendor's own error response; the `render` side
//! produces the vendor's success and error bodies byte-for-byte as documented
//! in `shared/seeds/`.
//!
//! A dialect knows nothing of fingerprints or stores: the proxy turns an
//! intent into a `RevocationCommand` (fingerprinting the token, or taking the
//! current user from the call's own credential) and applies it.

pub mod codegen;
pub mod langsmith;
pub mod nylas;
pub mod onelogin;
pub mod rfc7009;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde::{Deserialize, Serialize};

/// Which vendor's revoke endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DialectKind {
    /// Nylas v3 hosted OAuth: `POST /v3/connect/revoke?token=`.
    Nylas,
    /// OneLogin: `POST /auth/oauth2/revoke`, JSON body.
    OneLogin,
    /// LangSmith Auth Service v2: `DELETE /v2/auth/tokens?provider_id=`.
    LangSmith,
    /// Codegen: `POST /v1/oauth/tokens/revoke?provider=&org_id=`.
    Codegen,
    /// RFC 7009: `POST /oauth/revoke`, form body.
    Rfc7009,
}

impl DialectKind {
    /// Every dialect, in a fixed order.
    pub const ALL: [DialectKind; 5] = [
        DialectKind::Nylas,
        DialectKind::OneLogin,
        DialectKind::LangSmith,
        DialectKind::Codegen,
        DialectKind::Rfc7009,
    ];

    /// Its name in config, metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            DialectKind::Nylas => "nylas",
            DialectKind::OneLogin => "onelogin",
            DialectKind::LangSmith => "langsmith",
            DialectKind::Codegen => "codegen",
            DialectKind::Rfc7009 => "rfc7009",
        }
    }

    /// Its documented path.
    pub fn default_path(self) -> &'static str {
        match self {
            DialectKind::Nylas => "/v3/connect/revoke",
            DialectKind::OneLogin => "/auth/oauth2/revoke",
            DialectKind::LangSmith => "/v2/auth/tokens",
            DialectKind::Codegen => "/v1/oauth/tokens/revoke",
            DialectKind::Rfc7009 => "/oauth/revoke",
        }
    }
}

/// `forward`: pass the call upstream and apply on 2xx; `terminate`: answer here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevokeMode {
    /// Proxy the call; apply the revocation only if the upstream answers 2xx.
    #[default]
    Forward,
    /// Apply the revocation and answer in the vendor's format.
    Terminate,
}

/// A revoke call as a dialect sees it. `body` is empty unless the dialect
/// [`needs_body`](Dialect::needs_body).
#[derive(Clone, Copy, Debug)]
pub struct RevokeCall<'a> {
    /// The method.
    pub method: &'a Method,
    /// The raw query string (not decoded), if any.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The body bytes (read under the size limit), or empty.
    pub body: &'a [u8],
}

/// What a well-formed revoke call asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevokeIntent {
    /// Revoke this raw token (Nylas, OneLogin, RFC 7009).
    Token(String),
    /// Revoke every token of the call's current user for this provider (and
    /// org): LangSmith, Codegen.
    Scope {
        /// Organisation (Codegen's `org_id`), if the dialect names one.
        org: Option<String>,
        /// Provider.
        provider: String,
    },
}

/// A response rendered in a vendor's format (always JSON, or empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialectResponse {
    /// The status.
    pub status: StatusCode,
    /// The body bytes.
    pub body: Bytes,
    /// `application/json` for JSON bodies; `None` for an empty body.
    pub content_type: Option<&'static str>,
}

impl DialectResponse {
    /// A JSON response.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        DialectResponse {
            status,
            body: Bytes::from(value.to_string()),
            content_type: Some("application/json"),
        }
    }
}

/// One vendor's revoke endpoint.
pub trait Dialect: Send + Sync {
    /// Which vendor.
    fn kind(&self) -> DialectKind;

    /// Whether `parse` needs the body (it is then read under the size limit).
    fn needs_body(&self) -> bool {
        false
    }

    /// Parses a call; `Err` carries the vendor's own error response, which is
    /// what terminate mode answers.
    fn parse(&self, call: &RevokeCall<'_>) -> Result<RevokeIntent, DialectResponse>;

    /// The vendor's success response.
    fn success(&self) -> DialectResponse;

    /// The answer when the call's own credential names no current user
    /// (LangSmith, Codegen) or lacks the credential the vendor requires.
    fn unauthenticated(&self) -> DialectResponse;

    /// The answer when the body is over the size limit (413).
    fn payload_too_large(&self) -> DialectResponse;

    /// The answer when the revocation could not be recorded (503): the
    /// client must retry.
    fn unavailable(&self) -> DialectResponse;
}

/// Per-dialect settings the dialects themselves need (credentials to check).
#[derive(Clone, Debug, Default)]
pub struct DialectSecrets {
    /// Nylas: accepted API keys (empty = any non-empty key).
    pub nylas_api_keys: Vec<String>,
    /// OneLogin: accepted (client_id, client_secret) pairs (empty = any pair).
    pub onelogin_clients: Vec<(String, String)>,
}

/// Builds the dialect for a kind.
pub fn build(kind: DialectKind, secrets: &DialectSecrets) -> Box<dyn Dialect> {
    match kind {
        DialectKind::Nylas => Box::new(nylas::Nylas::new(secrets.nylas_api_keys.clone())),
        DialectKind::OneLogin => {
            Box::new(onelogin::OneLogin::new(secrets.onelogin_clients.clone()))
        }
        DialectKind::LangSmith => Box::new(langsmith::LangSmith),
        DialectKind::Codegen => Box::new(codegen::Codegen),
        DialectKind::Rfc7009 => Box::new(rfc7009::Rfc7009),
    }
}
