//! Why the gateway answered a request itself instead of the upstream: one
//! type, [`Refusal`], whose every variant names the status it becomes, and
//! the one place that turns it into a status, a metrics [`Outcome`] and a
//! response. Both connection paths render from it (hyper's as a
//! `Response`, the HTTP/1.1 fast path straight to bytes from the same
//! `Response<Bytes>`), so an error is answered and counted the same way
//! whichever path carried it.
//!
//! A revoke endpoint's answers are not here: they are the vendor's own
//! formats ([`crate::dialect`]), and the admin API answers its own.
//!
//! Causes carried by a variant (an upstream's error text) are for the log
//! line of the outermost handler only; the client sees a generic body.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::credentials::{CredentialError, Fingerprint};
use crate::metrics::Outcome;
use crate::verdict;

/// Why a request was answered by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The credential is revoked: 401 `invalid_token` with its
    /// `WWW-Authenticate` challenge (RFC 6750 §3).
    #[error("credential revoked")]
    Revoked(Fingerprint),
    /// The credential was revoked while the request waited for the
    /// upstream's head: 401 `invalid_token`, as [`Refusal::Revoked`].
    #[error("credential revoked in flight")]
    RevokedInFlight,
    /// The request's credentials are malformed or ambiguous: 400
    /// `invalid_request` with a `Bearer error="invalid_request"` challenge
    /// (RFC 6750 §3.1).
    #[error("bad credential: {0}")]
    BadCredential(CredentialError),
    /// The revocation state is too stale to judge a credential: 503
    /// `temporarily_unavailable`.
    #[error("revocation state unavailable")]
    Unavailable,
    /// The credential's attributes, needed by a scope rule, could not be
    /// introspected (`identity.introspection.on_error = "reject"`): 503
    /// `temporarily_unavailable`.
    #[error("credential identity unavailable")]
    IdentityUnavailable,
    /// Confirmed consistency: this instance has no live lease or fell behind
    /// the revocation stream, so it may miss a revocation another instance
    /// already acknowledged: 503 `temporarily_unavailable` with
    /// `Retry-After: 1`, to every credentialed request until it caught up.
    #[error("instance fenced")]
    Fenced,
    /// No route matches the host and path: 404 `no_route`.
    #[error("no route")]
    NoRoute,
    /// An HTTP/1.1 request without a `Host`, or with more than one
    /// (RFC 9112 §3.2): 400 `invalid_request`.
    #[error("missing or duplicate Host")]
    BadHost,
    /// A form-encoded body larger than `tokens.form_body_limit`, which could
    /// carry an `access_token` that cannot be judged: 413 `invalid_request`.
    #[error("form body too large to judge")]
    FormTooLarge,
    /// A token endpoint's request presents a refresh token that is revoked,
    /// or one already exchanged for another (reuse detection, which has just
    /// revoked its family): RFC 6749 §5.2's 400 `invalid_grant`, never
    /// forwarded (`crate::proxy::issuance`).
    #[error("refresh token revoked or reused")]
    InvalidGrant,
    /// A token endpoint's request body over
    /// `crate::proxy::issuance::MAX_REQUEST`: 413 `invalid_request` (its
    /// refresh token could not be checked).
    #[error("token request too large to check")]
    TokenRequestTooLarge,
    /// A request transfer coding other than `chunked` alone (RFC 9112
    /// §6.1): 501 `not_implemented`; relaying it would hand the upstream
    /// coded bytes as plain ones.
    #[error("unsupported transfer coding")]
    TransferCoding,
    /// The client's body failed while being read, or was malformed: 400
    /// `invalid_request`.
    #[error("client body: {0}")]
    ClientBody(String),
    /// The client stopped sending its body (`server.body_idle_timeout`): 408
    /// `request_timeout`.
    #[error("client body timed out")]
    ClientTimeout,
    /// The upstream refused or reset the connection, or answered garbage:
    /// 502 `bad_gateway`.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    /// Connecting, or waiting for the response head, took too long: 504
    /// `gateway_timeout`.
    #[error("upstream timed out")]
    UpstreamTimeout,
}

impl Refusal {
    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Revoked(_) | Refusal::RevokedInFlight => StatusCode::UNAUTHORIZED,
            Refusal::BadCredential(_)
            | Refusal::BadHost
            | Refusal::ClientBody(_)
            | Refusal::InvalidGrant => StatusCode::BAD_REQUEST,
            Refusal::Unavailable | Refusal::IdentityUnavailable | Refusal::Fenced => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::NoRoute => StatusCode::NOT_FOUND,
            Refusal::FormTooLarge | Refusal::TokenRequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::TransferCoding => StatusCode::NOT_IMPLEMENTED,
            Refusal::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// How it is counted in `revgate_requests_total`.
    pub fn outcome(&self) -> Outcome {
        match self {
            Refusal::Revoked(_) | Refusal::RevokedInFlight | Refusal::InvalidGrant => {
                Outcome::Revoked
            }
            Refusal::BadCredential(_)
            | Refusal::BadHost
            | Refusal::FormTooLarge
            | Refusal::TokenRequestTooLarge
            | Refusal::TransferCoding
            | Refusal::ClientBody(_) => Outcome::BadRequest,
            Refusal::ClientTimeout => Outcome::ClientTimeout,
            Refusal::Unavailable | Refusal::Fenced => Outcome::Unavailable,
            Refusal::IdentityUnavailable => Outcome::IdentityUnavailable,
            Refusal::NoRoute => Outcome::NoRoute,
            Refusal::UpstreamUnavailable(_) | Refusal::UpstreamTimeout => Outcome::UpstreamError,
        }
    }

    /// The credential's fingerprint, when the refusal is about one (for the
    /// access log).
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        match self {
            Refusal::Revoked(fp) => Some(*fp),
            _ => None,
        }
    }

    /// Whether the connection must close after the answer: the request's
    /// framing or body cannot be trusted to end where the next request
    /// begins.
    pub fn closes(&self) -> bool {
        matches!(
            self,
            Refusal::TransferCoding | Refusal::ClientBody(_) | Refusal::ClientTimeout
        )
    }

    /// The response: a JSON body naming the error generically (the cause
    /// goes to the log only), `Cache-Control: no-store`, the challenge where
    /// RFC 6750 asks for one, `Connection: close` when [`Refusal::closes`].
    pub fn response(&self) -> Response<Bytes> {
        let mut resp = match self {
            Refusal::Revoked(_) | Refusal::RevokedInFlight => verdict::revoked(),
            Refusal::BadCredential(e) => verdict::bad_request(*e),
            Refusal::Unavailable => verdict::unavailable(),
            other => {
                let (error, description) = other.message();
                let body = serde_json::json!({"error": error, "error_description": description});
                verdict::json_response(other.status(), Bytes::from(body.to_string()))
            }
        };
        if matches!(self, Refusal::Fenced) {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.closes() {
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    /// `error` and `error_description` of the generic JSON body.
    fn message(&self) -> (&'static str, &'static str) {
        match self {
            Refusal::NoRoute => ("no_route", "No route for this host and path"),
            Refusal::BadHost => (
                "invalid_request",
                "An HTTP/1.1 request needs exactly one Host header",
            ),
            Refusal::FormTooLarge => (
                "invalid_request",
                "The form body is too large to be checked for an access token",
            ),
            Refusal::InvalidGrant => (
                "invalid_grant",
                "The refresh token is revoked or was already used",
            ),
            Refusal::TokenRequestTooLarge => (
                "invalid_request",
                "The token request is too large to be checked",
            ),
            Refusal::TransferCoding => (
                "not_implemented",
                "The request's transfer coding is not supported",
            ),
            Refusal::ClientBody(_) => ("invalid_request", "The request body could not be read"),
            Refusal::Fenced => (
                "temporarily_unavailable",
                "This instance is catching up with revocations; retry",
            ),
            Refusal::ClientTimeout => {
                ("request_timeout", "The request body did not arrive in time")
            }
            Refusal::UpstreamUnavailable(_) => {
                ("bad_gateway", "The upstream service is unavailable")
            }
            Refusal::UpstreamTimeout => (
                "gateway_timeout",
                "The upstream service did not answer in time",
            ),
            Refusal::IdentityUnavailable => (
                "temporarily_unavailable",
                "The credential's identity could not be checked",
            ),
            // Rendered by `verdict` with their challenges.
            Refusal::Revoked(_)
            | Refusal::RevokedInFlight
            | Refusal::BadCredential(_)
            | Refusal::Unavailable => ("", ""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: usize = 16;

    /// Each variant's index (exhaustive: no wildcard arm).
    fn kind(r: &Refusal) -> usize {
        match r {
            Refusal::Revoked(_) => 0,
            Refusal::RevokedInFlight => 1,
            Refusal::BadCredential(_) => 2,
            Refusal::Unavailable => 3,
            Refusal::NoRoute => 4,
            Refusal::BadHost => 5,
            Refusal::FormTooLarge => 6,
            Refusal::TransferCoding => 7,
            Refusal::ClientBody(_) => 8,
            Refusal::ClientTimeout => 9,
            Refusal::UpstreamUnavailable(_) => 10,
            Refusal::UpstreamTimeout => 11,
            Refusal::IdentityUnavailable => 12,
            Refusal::Fenced => 13,
            Refusal::InvalidGrant => 14,
            Refusal::TokenRequestTooLarge => 15,
        }
    }

    /// Every variant: status, outcome, headers and exact body, in one table.
    #[test]
    fn every_refusal_maps_to_its_status_outcome_and_body() {
        let revoked_challenge = Some(verdict::REVOKED_CHALLENGE);
        // (refusal, status, outcome, WWW-Authenticate, closes, body)
        type Row = (
            Refusal,
            u16,
            &'static str,
            Option<&'static str>,
            bool,
            &'static str,
        );
        let table: Vec<Row> = vec![
            (
                Refusal::Revoked(Fingerprint::from_bytes([0; 16])),
                401,
                "revoked",
                revoked_challenge,
                false,
                verdict::REVOKED_BODY,
            ),
            (
                Refusal::RevokedInFlight,
                401,
                "revoked",
                revoked_challenge,
                false,
                verdict::REVOKED_BODY,
            ),
            (
                Refusal::BadCredential(CredentialError::Malformed),
                400,
                "bad_request",
                Some(
                    r#"Bearer error="invalid_request", error_description="malformed access token""#,
                ),
                false,
                r#"{"error":"invalid_request","error_description":"malformed access token"}"#,
            ),
            (
                Refusal::Unavailable,
                503,
                "unavailable",
                None,
                false,
                verdict::UNAVAILABLE_BODY,
            ),
            (
                Refusal::Fenced,
                503,
                "unavailable",
                None,
                false,
                r#"{"error":"temporarily_unavailable","error_description":"This instance is catching up with revocations; retry"}"#,
            ),
            (
                Refusal::NoRoute,
                404,
                "no_route",
                None,
                false,
                r#"{"error":"no_route","error_description":"No route for this host and path"}"#,
            ),
            (
                Refusal::BadHost,
                400,
                "bad_request",
                None,
                false,
                r#"{"error":"invalid_request","error_description":"An HTTP/1.1 request needs exactly one Host header"}"#,
            ),
            (
                Refusal::FormTooLarge,
                413,
                "bad_request",
                None,
                false,
                r#"{"error":"invalid_request","error_description":"The form body is too large to be checked for an access token"}"#,
            ),
            (
                Refusal::TransferCoding,
                501,
                "bad_request",
                None,
                true,
                r#"{"error":"not_implemented","error_description":"The request's transfer coding is not supported"}"#,
            ),
            (
                Refusal::ClientBody("cause".into()),
                400,
                "bad_request",
                None,
                true,
                r#"{"error":"invalid_request","error_description":"The request body could not be read"}"#,
            ),
            (
                Refusal::ClientTimeout,
                408,
                "client_timeout",
                None,
                true,
                r#"{"error":"request_timeout","error_description":"The request body did not arrive in time"}"#,
            ),
            (
                Refusal::UpstreamUnavailable("cause".into()),
                502,
                "upstream_error",
                None,
                false,
                r#"{"error":"bad_gateway","error_description":"The upstream service is unavailable"}"#,
            ),
            (
                Refusal::UpstreamTimeout,
                504,
                "upstream_error",
                None,
                false,
                r#"{"error":"gateway_timeout","error_description":"The upstream service did not answer in time"}"#,
            ),
            (
                Refusal::IdentityUnavailable,
                503,
                "identity_unavailable",
                None,
                false,
                r#"{"error":"temporarily_unavailable","error_description":"The credential's identity could not be checked"}"#,
            ),
            (
                Refusal::InvalidGrant,
                400,
                "revoked",
                None,
                false,
                r#"{"error":"invalid_grant","error_description":"The refresh token is revoked or was already used"}"#,
            ),
            (
                Refusal::TokenRequestTooLarge,
                413,
                "bad_request",
                None,
                false,
                r#"{"error":"invalid_request","error_description":"The token request is too large to be checked"}"#,
            ),
        ];
        // One row per variant: `kind` has no wildcard, so a new variant does
        // not compile until it has an index, and then fails here until it has
        // a row.
        let mut covered: Vec<usize> = table.iter().map(|row| kind(&row.0)).collect();
        covered.sort_unstable();
        covered.dedup();
        assert_eq!(
            covered,
            (0..KINDS).collect::<Vec<_>>(),
            "every variant in the table"
        );
        for (refusal, status, outcome, challenge, close, body) in table {
            let resp = refusal.response();
            assert_eq!(resp.status().as_u16(), status, "{refusal:?}");
            assert_eq!(refusal.status().as_u16(), status, "{refusal:?}");
            assert_eq!(refusal.outcome().as_str(), outcome, "{refusal:?}");
            assert_eq!(
                std::str::from_utf8(resp.body()).unwrap(),
                body,
                "{refusal:?}"
            );
            let h = resp.headers();
            assert_eq!(h["content-type"], "application/json", "{refusal:?}");
            assert_eq!(h["cache-control"], "no-store", "{refusal:?}");
            assert_eq!(
                h.get("www-authenticate").map(|v| v.to_str().unwrap()),
                challenge,
                "{refusal:?}"
            );
            assert_eq!(
                h.get("connection").map(|v| v.to_str().unwrap()),
                close.then_some("close"),
                "{refusal:?}"
            );
            assert_eq!(
                h.get("retry-after").map(|v| v.to_str().unwrap()),
                matches!(refusal, Refusal::Fenced).then_some("1"),
                "{refusal:?}"
            );
            // The body is JSON whatever the variant; the cause never in it.
            let json: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
            assert!(json["error"].is_string());
            assert!(!body.contains("cause"));
        }
    }
}
