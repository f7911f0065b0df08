//! What every feed checks of a token before it may revoke anything — a
//! logout token or a Security Event Token (RFC 8417) alike — and the
//! reasons it is refused, each a fixed text (never token bytes).
//!
//! 1. the signature, against the feed's own JWKS (refetched on an unknown
//!    `kid`), with the verifier's rules: `alg: none` and HMAC refused, `crit`
//!    refused, `iss` the feed's issuer, `aud` naming the feed's audience,
//!    `exp` (required of logout tokens only) not past, `nbf`/`iat` not ahead,
//!    all within the feed's leeway (`identity::verify`);
//! 2. `iat` present (a number), `jti` a non-empty string of at most 256
//!    bytes, `events` a non-empty JSON object.
//!
//! The feed-specific rules (the logout event, `nonce`, subjects) are in
//! `backchannel.rs` and `ssf.rs`.

use serde_json::{Map, Value};

use crate::identity::{Verifier, VerifyError};

/// A token whose signature and common claims verified.
#[derive(Debug)]
pub(crate) struct Verified {
    /// Every claim.
    pub claims: Map<String, Value>,
    /// `iss` (the feed's issuer).
    pub iss: String,
    /// `jti`.
    pub jti: String,
    /// `iat`, unix seconds.
    pub iat: u64,
    /// `exp`, when present.
    pub exp: Option<u64>,
}

impl Verified {
    /// The `events` object (checked present and non-empty).
    pub fn events(&self) -> &Map<String, Value> {
        match self.claims.get("events") {
            Some(Value::Object(e)) => e,
            _ => empty(),
        }
    }

    /// A claim as text: a non-empty string, or a number's decimal form (as
    /// `VerifiedClaims::text` and the claim peek read it).
    pub fn text(&self, name: &str) -> Option<String> {
        text(self.claims.get(name)?)
    }
}

fn empty() -> &'static Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

/// A JSON value as an identifier: a non-empty string, or a number.
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Why a feed refused a delivery. Each maps to one status and one error
/// code per feed (`backchannel.rs`, `ssf.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Malformed: not a JWS, missing or wrong claims, wrong content type,
    /// bad form (400 `invalid_request`).
    InvalidRequest(&'static str),
    /// The signature or its key: unknown key, bad signature, `alg: none`,
    /// HMAC, `crit` (400; SSF `invalid_key`).
    InvalidKey(&'static str),
    /// `iss` is not the feed's (400; SSF `invalid_issuer`).
    InvalidIssuer,
    /// `aud` does not name the feed's audience (400; SSF `invalid_audience`).
    InvalidAudience,
    /// The transmitter's `Authorization` is missing or wrong (SSF: 400
    /// `authentication_failed`).
    AuthenticationFailed,
    /// A logout token already applied (400 `invalid_request`; a SET seen
    /// again is acknowledged instead).
    Replayed,
    /// The body is over `revoke.max_body_bytes` (413).
    TooLarge,
    /// Not POST (405, `Allow: POST`).
    Method,
    /// The keys could not be loaded or the store did not record the
    /// revocation (503 with `Retry-After`: the provider retries, and the
    /// retry is not taken for a replay).
    Unavailable(&'static str),
}

impl Rejection {
    /// The metric label of the reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::InvalidRequest(_) => "invalid_request",
            Rejection::InvalidKey(_) => "invalid_key",
            Rejection::InvalidIssuer => "invalid_issuer",
            Rejection::InvalidAudience => "invalid_audience",
            Rejection::AuthenticationFailed => "authentication_failed",
            Rejection::Replayed => "replayed",
            Rejection::TooLarge => "too_large",
            Rejection::Method => "method",
            Rejection::Unavailable(_) => "unavailable",
        }
    }

    /// Every reason label (metrics export them at 0).
    pub const REASONS: [&'static str; 9] = [
        "invalid_request",
        "invalid_key",
        "invalid_issuer",
        "invalid_audience",
        "authentication_failed",
        "replayed",
        "too_large",
        "method",
        "unavailable",
    ];

    /// The human-readable description.
    pub fn description(&self) -> &'static str {
        match self {
            Rejection::InvalidRequest(d) | Rejection::InvalidKey(d) | Rejection::Unavailable(d) => {
                d
            }
            Rejection::InvalidIssuer => "issuer not accepted",
            Rejection::InvalidAudience => "audience not accepted",
            Rejection::AuthenticationFailed => "transmitter authorization missing or wrong",
            Rejection::Replayed => "token already received (jti replayed)",
            Rejection::TooLarge => "body too large",
            Rejection::Method => "use POST",
        }
    }
}

impl From<VerifyError> for Rejection {
    fn from(e: VerifyError) -> Self {
        use VerifyError as V;
        match e {
            V::Malformed => Rejection::InvalidRequest("not a JWS compact token"),
            V::Unsigned => Rejection::InvalidKey("unsigned token (alg none)"),
            V::Symmetric => Rejection::InvalidKey("symmetric algorithm refused"),
            V::UnsupportedAlgorithm => Rejection::InvalidKey("unsupported algorithm"),
            V::Critical => Rejection::InvalidKey("critical header extension"),
            V::UnknownKey => Rejection::InvalidKey("unknown key"),
            V::KeyPending => Rejection::Unavailable("signature key not known yet; retry"),
            V::KeyMismatch => Rejection::InvalidKey("key does not fit the algorithm"),
            V::BadSignature => Rejection::InvalidKey("bad signature"),
            V::NoKeys => Rejection::Unavailable("signature keys not loaded yet"),
            V::Expired => Rejection::InvalidRequest("expired"),
            V::NotYetValid => Rejection::InvalidRequest("not yet valid"),
            V::IssuedInFuture => Rejection::InvalidRequest("issued in the future"),
            V::WrongIssuer | V::Claim("iss") => Rejection::InvalidIssuer,
            V::WrongAudience | V::Claim("aud") => Rejection::InvalidAudience,
            V::Claim("exp") => Rejection::InvalidRequest("exp missing or malformed"),
            V::Claim("nbf") => Rejection::InvalidRequest("nbf malformed"),
            V::Claim("iat") => Rejection::InvalidRequest("iat malformed"),
            V::Claim(_) => Rejection::InvalidRequest("claim missing or malformed"),
        }
    }
}

/// Steps 1 and 2 of the module doc.
pub(crate) async fn verify(verifier: &Verifier, token: &str) -> Result<Verified, Rejection> {
    let claims = verifier.verify(token).await?;
    let kid = claims.kid().map(str::to_owned);
    let claims = claims.claims().clone();
    let iss = match claims.get("iss") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(Rejection::InvalidIssuer),
    };
    let iat = match claims.get("iat").and_then(Value::as_f64) {
        Some(t) if t >= 0.0 => t as u64,
        _ => return Err(Rejection::InvalidRequest("iat missing or malformed")),
    };
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .map(|t| t.max(0.0) as u64);
    let jti = match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() && j.len() <= crate::dialect::MAX_ID_LEN => {
            j.clone()
        }
        _ => return Err(Rejection::InvalidRequest("jti missing or malformed")),
    };
    match claims.get("events") {
        Some(Value::Object(e)) if !e.is_empty() => {}
        _ => return Err(Rejection::InvalidRequest("events missing or not an object")),
    }
    tracing::debug!(kid = ?kid, "feed token verified");
    Ok(Verified {
        claims,
        iss,
        jti,
        iat,
        exp,
    })
}
