//! Revoke-endpoint dialects: one module per vendor, each a pure pair of
//! functions. `parse` turns an HTTP call (method, query, headers, body) into a
//! [`RevokeIntent`] or the vendor's own error response; the `render` side
//! produces the vendor's success and error bodies byte-for-byte as documented
//! in `shared/seeds/`.
//!
//! A dialect knows nothing of fingerprints or stores: the proxy turns an
//! intent into a `RevocationCommand` (fingerprinting the token, or taking the
//! current user from the call's own credential) and applies it.
//!
//! # Shared rules (each dialect's module documents its own details)
//!
//! - **Query and form decoding** (`form.rs`, `form_values`): `&`-separated pairs, the
//!   name and value split at the first `=` (a pair without `=` has an empty
//!   value), `+` decodes to a space and `%XX` to a byte, both in names and
//!   values, as `application/x-www-form-urlencoded` (and Go's and Python's
//!   query parsers) do. A `%` not followed by two hex digits is kept literally
//!   and flagged, so that a token dialect can refuse it.
//! - **Duplicates**: a parameter that names a *token* (Nylas, RFC 7009,
//!   OneLogin's JSON key) given twice is a 400: revoking either copy could
//!   revoke the wrong token, and in forward mode the upstream might pick the
//!   other one. FastAPI dialects (LangSmith, Codegen) take the **last**
//!   value, as Starlette does, so that in forward mode revgate applies exactly
//!   what the upstream acted on.
//! - **Non-UTF-8** after decoding is the vendor's validation error.
//! - **Secrets** (API keys, client secrets) are compared in constant time over
//!   fixed-length BLAKE3 digests (`secrets.rs`, `SecretSet`); only the
//!   digests are kept. FastAPI's shapes (LangSmith, Codegen) are in `fastapi.rs`.
//! - No error body ever contains a token or any other request input: every
//!   error body is a constant or built from parameter names only.
//! - **Wrong method**: `parse` answers the vendor's wrong-method error (405,
//!   or OneLogin's documented 404). [`Dialect::method`] names the documented
//!   method, for an `Allow` header or for routing other methods as ordinary
//!   traffic instead.
//! - **Length limits** (issue 10): every parameter is bounded, so that no
//!   call can make revgate hold or record more than a few KiB. A *token*
//!   (Nylas `token`, OneLogin `access_token`, RFC 7009 `token`) and a
//!   *secret* (Nylas API key, OneLogin client secret) are at most
//!   [`MAX_TOKEN_BYTES`] (8 KiB: long JWTs fit) once decoded; an
//!   *identifier* (LangSmith `provider_id`, Codegen `provider`, OneLogin
//!   `client_id`, RFC 7009 `token_type_hint`) at most [`MAX_ID_LEN`] (256:
//!   bytes, or characters for the FastAPI dialects, whose pydantic
//!   `max_length` counts characters); Codegen's `org_id` must fit an `i64`
//!   (pydantic's `ge`/`le` errors). Each dialect answers a breach in its
//!   own validation format; its module doc has the exact body. In forward
//!   mode such a call is still forwarded, as every call revgate cannot parse
//!   is (the upstream answers it), and revgate records nothing.
//! - **Refusals of the surface itself**: [`Dialect::too_many_requests`] (the
//!   per-client rate limit, 429 with `Retry-After`) and
//!   [`Dialect::scope_limit_reached`] (the per-subject cap of scope rules,
//!   429 without `Retry-After`: waiting does not lift it) are answered in the
//!   vendor's shape, in both modes, before anything is forwarded or applied.

pub mod codegen;
pub mod langsmith;
pub mod nylas;
pub mod onelogin;
pub mod rfc7009;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde::{Deserialize, Serialize};

/// Longest token or secret a revoke call may carry, in bytes once decoded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Longest identifier (provider, client id, token type hint) a revoke call
/// may carry: bytes, or characters where the vendor (pydantic) counts those.
pub const MAX_ID_LEN: usize = 256;

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

    /// How far its token revokes reach into a token's family by default
    /// (`revoke.<dialect>.family`; `None`: by what the token is), as the
    /// vendors document their revoke endpoints.
    pub fn family(self) -> Option<crate::store::family::Reach> {
        use crate::store::family::Reach;
        match self {
            // "the access token, its child tokens and its parent refresh token"
            DialectKind::Nylas => Some(Reach::Grant),
            // "the access token and its refresh token"
            DialectKind::OneLogin => Some(Reach::Pair),
            // §2.1: a refresh token's grant; an access token alone.
            DialectKind::Rfc7009 => None,
            DialectKind::LangSmith | DialectKind::Codegen => Some(Reach::Token),
        }
    }

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

    /// A JSON response whose bytes are fixed (the vendors' documented bodies,
    /// whose key order `serde_json::Value` would not keep).
    pub fn static_json(status: StatusCode, body: &'static str) -> Self {
        DialectResponse {
            status,
            body: Bytes::from_static(body.as_bytes()),
            content_type: Some("application/json"),
        }
    }

    /// A JSON response serialized from a typed value (field order kept).
    /// Falls back to an empty JSON object if serialization fails, which the
    /// plain structs used here cannot do.
    pub fn serialized<T: Serialize>(status: StatusCode, value: &T) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        DialectResponse {
            status,
            body: Bytes::from(body),
            content_type: Some("application/json"),
        }
    }

    /// A response with an empty body and no content type.
    pub fn empty(status: StatusCode) -> Self {
        DialectResponse {
            status,
            body: Bytes::new(),
            content_type: None,
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

    /// The vendor's documented method for the revoke call. `parse` answers
    /// any other method with the vendor's wrong-method error; a proxy that
    /// answers 405 itself should send `Allow: <this>`.
    fn method(&self) -> Method {
        Method::POST
    }

    /// Parses a call; `Err` carries the vendor's own error response, which is
    /// what terminate mode answers.
    fn parse(&self, call: &RevokeCall<'_>) -> Result<RevokeIntent, DialectResponse>;

    /// The vendor's own API-key header, where its clients send the caller's
    /// key instead of `Authorization` (LangSmith's `x-api-key`); read for a
    /// scope revoke's caller when `tokens` finds no credential.
    fn caller_key_header(&self) -> Option<&'static str> {
        None
    }

    /// The vendor's success response.
    fn success(&self) -> DialectResponse;

    /// The success response to this call: [`Dialect::success`] unless the
    /// vendor's clients need more of it (OneLogin's current SDK, known by
    /// its HTTP Basic credentials; LangSmith's client reads the provider back).
    fn success_for(&self, call: &RevokeCall<'_>) -> DialectResponse {
        let _ = call;
        self.success()
    }

    /// The answer when the call's own credential names no current user
    /// (LangSmith, Codegen) or lacks the credential the vendor requires.
    fn unauthenticated(&self) -> DialectResponse;

    /// The answer when the body is over the size limit (413).
    fn payload_too_large(&self) -> DialectResponse;

    /// The answer when the revocation could not be recorded (503): the
    /// client must retry.
    fn unavailable(&self) -> DialectResponse;

    /// The answer when the caller's address is over its rate limit (429;
    /// the proxy adds `Retry-After`).
    fn too_many_requests(&self) -> DialectResponse;

    /// The answer when the current user already has
    /// `revoke.max_scopes_per_subject` scope rules (only scope dialects
    /// produce scope revocations, so this defaults to the rate-limit answer).
    fn scope_limit_reached(&self) -> DialectResponse {
        self.too_many_requests()
    }
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

mod fastapi;
mod form;
mod secrets;

pub(crate) use fastapi::*;
pub(crate) use form::*;
pub use secrets::DialectSecrets;
pub(crate) use secrets::SecretSet;

/// Fuzzing entry (`fuzz/`, `tests/fuzz_corpus.rs`) to the shared decoder:
/// [`form_values`] as (decoded bytes, malformed escape) pairs, then the
/// single-token and FastAPI readings of the same input.
#[doc(hidden)]
pub fn form_values_for_fuzzing(input: &[u8], name: &'static str) -> Vec<(Vec<u8>, bool)> {
    let _ = single_token_param(input, name, 8 * 1024);
    if let Ok(text) = std::str::from_utf8(input) {
        if let Ok(v) = fastapi_query_str(Some(text), name) {
            let _ = pydantic_int(&v);
        }
        let _ = pydantic_int(text);
    }
    form_values(input, name)
        .into_iter()
        .map(|v| (v.bytes, v.malformed_escape))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every dialect, on generated hostile calls: never a panic, every error
    /// a JSON 4xx/5xx that echoes nothing of the input, every intent
    /// non-empty.
    #[test]
    fn no_dialect_panics_or_echoes_on_generated_input() {
        use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
        struct Rng(u64);
        impl Rng {
            fn next(&mut self) -> u64 {
                // xorshift64*: deterministic, no dependency.
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
            }
            fn pick<T: Clone>(&mut self, items: &[T]) -> T {
                items[(self.next() % items.len() as u64) as usize].clone()
            }
        }
        const MARK: &str = "Zq9Mark";
        let names: &[&str] = &[
            "token",
            "token_type_hint",
            "provider_id",
            "provider",
            "org_id",
            "%74oken",
            "tok+en",
            "",
        ];
        let values: &[&str] = &[
            "", "%", "%2", "%ff", "%C3%BC", "%00", "+", "%2B", " ", "\"", "{", "[", ":", ",", "=",
            "null", "1", "-0", "4_2", "42.0", "1e3", "abc", MARK,
        ];
        let secrets = DialectSecrets {
            nylas_api_keys: vec!["k1".into()],
            onelogin_clients: vec![("cid".into(), "sec".into())],
        };
        let dialects: Vec<Box<dyn Dialect>> = DialectKind::ALL
            .iter()
            .flat_map(|&k| [build(k, &secrets), build(k, &DialectSecrets::default())])
            .collect();
        let methods = [
            Method::POST,
            Method::POST,
            Method::DELETE,
            Method::DELETE,
            Method::GET,
        ];
        let content_types: &[&[u8]] = &[
            b"application/json",
            b"application/x-www-form-urlencoded",
            b"text/plain",
            b"application/json; charset=utf-8",
            b"\xff\xfe",
        ];
        let auths: &[&[u8]] = &[
            b"Bearer k1",
            b"Bearer Zq9Mark",
            b"client_id:cid, client_secret:sec",
            b"client_id:Zq9Mark, client_secret:x",
            b"Basic Y2lkOnNlYw==",
            b"\x80\x81",
            b"",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let mut pairs = Vec::new();
            for _ in 0..rng.next() % 4 {
                let mut pair = rng.pick(names).to_string();
                if !rng.next().is_multiple_of(5) {
                    pair.push('=');
                }
                for _ in 0..1 + rng.next() % 3 {
                    pair.push_str(rng.pick(values));
                }
                pairs.push(pair);
            }
            let text = pairs.join("&");
            let mut body = match rng.next() % 3 {
                0 => text.clone().into_bytes(),
                1 => format!(
                    r#"{{"access_token":"{}{}"}}"#,
                    rng.pick(values),
                    rng.pick(values)
                )
                .into_bytes(),
                _ => format!(r#"{{"access_token":{}}}"#, rng.pick(values)).into_bytes(),
            };
            if rng.next().is_multiple_of(8) {
                body.push((rng.next() & 0xff) as u8);
            }
            let mut headers = HeaderMap::new();
            for _ in 0..[0, 1, 1, 1, 2][(rng.next() % 5) as usize] {
                headers.append(
                    CONTENT_TYPE,
                    HeaderValue::from_bytes(rng.pick(content_types)).unwrap(),
                );
            }
            for _ in 0..[0, 1, 1, 1, 2][(rng.next() % 5) as usize] {
                headers.append(
                    AUTHORIZATION,
                    HeaderValue::from_bytes(rng.pick(auths)).unwrap(),
                );
            }
            let method = rng.pick(&methods);
            let call = RevokeCall {
                method: &method,
                query: (!rng.next().is_multiple_of(5)).then_some(text.as_str()),
                headers: &headers,
                body: &body,
            };
            for d in &dialects {
                match d.parse(&call) {
                    Ok(RevokeIntent::Token(t)) => assert!(!t.is_empty()),
                    Ok(RevokeIntent::Scope { org, provider }) => {
                        assert!(!provider.is_empty());
                        assert!(org.is_none_or(|o| !o.is_empty()));
                    }
                    Err(e) => {
                        assert!(e.status.is_client_error() || e.status.is_server_error());
                        assert_eq!(e.content_type, Some("application/json"));
                        assert!(serde_json::from_slice::<serde_json::Value>(&e.body).is_ok());
                        let body = String::from_utf8_lossy(&e.body);
                        assert!(!body.contains(MARK), "{:?} echoed input: {body}", d.kind());
                    }
                }
            }
        }
    }
}
