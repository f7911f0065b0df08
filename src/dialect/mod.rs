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
//! - **Query and form decoding** (`form_values`): `&`-separated pairs, the
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
//!   fixed-length BLAKE3 digests (`SecretSet`); only the digests are kept.
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

// === Shared parsing helpers ===

/// One occurrence of a query or form parameter, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FormValue {
    /// The decoded bytes (not necessarily UTF-8).
    pub(crate) bytes: Vec<u8>,
    /// A `%` not followed by two hex digits was kept literally.
    pub(crate) malformed_escape: bool,
}

/// Decodes one `application/x-www-form-urlencoded` component.
fn form_decode(raw: &[u8]) -> FormValue {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut malformed_escape = false;
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex);
                let lo = raw.get(i + 2).copied().and_then(hex);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    bytes.push(hi << 4 | lo);
                    i += 2;
                } else {
                    malformed_escape = true;
                    bytes.push(b'%');
                }
            }
            b => bytes.push(b),
        }
        i += 1;
    }
    FormValue {
        bytes,
        malformed_escape,
    }
}

/// Every value of parameter `name` in a query string or form body, in order.
/// Names are decoded before comparison (`%74oken` is `token`).
pub(crate) fn form_values(input: &[u8], name: &str) -> Vec<FormValue> {
    let mut out = Vec::new();
    for pair in input.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (raw_name, raw_value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        let matches = if raw_name.iter().any(|&b| b == b'%' || b == b'+') {
            form_decode(raw_name).bytes == name.as_bytes()
        } else {
            raw_name == name.as_bytes()
        };
        if matches {
            out.push(form_decode(raw_value));
        }
    }
    out
}

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

/// Why a token parameter (a query or form parameter naming one token)
/// could not be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenParamError {
    /// Absent.
    Missing,
    /// Present but empty.
    Empty,
    /// Given more than once.
    Duplicate,
    /// A malformed `%` escape, or not UTF-8 once decoded.
    BadEncoding,
    /// Longer than the limit given, once decoded.
    TooLong,
}

/// The single, non-empty, well-encoded UTF-8 value of a token parameter,
/// at most `max` bytes once decoded. A value over the limit is `TooLong`
/// only when it is otherwise well-formed (given once, well-encoded), so that
/// the other errors keep their meaning.
pub(crate) fn single_token_param(
    input: &[u8],
    name: &str,
    max: usize,
) -> Result<String, TokenParamError> {
    let mut values = form_values(input, name);
    if values.len() > 1 {
        return Err(TokenParamError::Duplicate);
    }
    let value = values.pop().ok_or(TokenParamError::Missing)?;
    if value.malformed_escape {
        return Err(TokenParamError::BadEncoding);
    }
    if value.bytes.len() > max {
        return Err(TokenParamError::TooLong);
    }
    let token = String::from_utf8(value.bytes).map_err(|_| TokenParamError::BadEncoding)?;
    if token.is_empty() {
        return Err(TokenParamError::Empty);
    }
    Ok(token)
}

/// The one value of a header, if it is present exactly once and is visible
/// ASCII; `None` otherwise (absent, repeated, or opaque bytes).
pub(crate) fn single_header(headers: &HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// Whether the request's single `Content-Type` has this media type
/// (parameters such as `charset` are allowed; case-insensitive).
pub(crate) fn content_type_is(headers: &HeaderMap, essence: &str) -> bool {
    match single_header(headers, http::header::CONTENT_TYPE) {
        Some(value) => value
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(essence)),
        None => false,
    }
}

/// Accepted secrets (API keys, client pairs), kept only as BLAKE3 digests so
/// that every comparison is between equal-length values, in constant time.
#[derive(Clone, Default)]
pub(crate) struct SecretSet {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretSet({} secrets)", self.digests.len())
    }
}

impl SecretSet {
    /// The digest of a secret made of several parts (length-prefixed, so
    /// that `("ab","c")` and `("a","bc")` differ).
    pub(crate) fn digest(parts: &[&[u8]]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        *hasher.finalize().as_bytes()
    }

    /// A set from digests.
    pub(crate) fn new(digests: impl IntoIterator<Item = [u8; 32]>) -> Self {
        SecretSet {
            digests: digests.into_iter().collect(),
        }
    }

    /// No secret configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `candidate` is one of the set, comparing against every member
    /// without an early exit.
    pub(crate) fn contains(&self, candidate: &[u8; 32]) -> bool {
        use subtle::ConstantTimeEq;
        let mut hit = subtle::Choice::from(0u8);
        for digest in &self.digests {
            hit |= digest.ct_eq(candidate);
        }
        hit.into()
    }
}

// === FastAPI (LangSmith, Codegen) ===

/// A pydantic error type FastAPI reports for a query parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldErrorKind {
    /// `missing`: absent (revgate also counts an empty string parameter as
    /// absent; see the dialects' docs).
    Missing,
    /// `string_unicode`: not UTF-8 once decoded.
    StringUnicode,
    /// `int_parsing`: not an integer.
    IntParsing,
    /// `int_parsing_size`: more than 4300 significant digits.
    IntParsingSize,
    /// `string_too_long`: over [`MAX_ID_LEN`] characters (as pydantic's
    /// `max_length=256` reports it).
    StringTooLong,
    /// `less_than_equal`: an integer above `i64::MAX` (`le=2**63-1`).
    IntTooLarge,
    /// `greater_than_equal`: an integer below `i64::MIN` (`ge=-2**63`).
    IntTooSmall,
}

impl FieldErrorKind {
    fn type_and_msg(self) -> (&'static str, &'static str) {
        match self {
            FieldErrorKind::Missing => ("missing", "Field required"),
            FieldErrorKind::StringUnicode => (
                "string_unicode",
                "Input should be a valid string, unable to parse raw data as a unicode string",
            ),
            FieldErrorKind::IntParsing => (
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
            ),
            FieldErrorKind::IntParsingSize => (
                "int_parsing_size",
                "Unable to parse input string as an integer, exceeded maximum size",
            ),
            FieldErrorKind::StringTooLong => (
                "string_too_long",
                "String should have at most 256 characters",
            ),
            FieldErrorKind::IntTooLarge => (
                "less_than_equal",
                "Input should be less than or equal to 9223372036854775807",
            ),
            FieldErrorKind::IntTooSmall => (
                "greater_than_equal",
                "Input should be greater than or equal to -9223372036854775808",
            ),
        }
    }
}

/// One bad query parameter, as FastAPI reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// The parameter's name (`loc` is `["query", name]`).
    pub(crate) name: &'static str,
    /// What is wrong with it.
    pub(crate) kind: FieldErrorKind,
}

/// The value FastAPI's handler would see for a `str` query parameter: the
/// last occurrence (Starlette keeps the last), decoded, with a malformed
/// escape kept literally (as Python's `unquote_plus` does). `Ok("")` for
/// an empty value; each dialect decides what that means.
pub(crate) fn fastapi_query_str(
    query: Option<&str>,
    name: &'static str,
) -> Result<String, FieldError> {
    let values = form_values(query.unwrap_or("").as_bytes(), name);
    let last = values.into_iter().next_back().ok_or(FieldError {
        name,
        kind: FieldErrorKind::Missing,
    })?;
    String::from_utf8(last.bytes).map_err(|_| FieldError {
        name,
        kind: FieldErrorKind::StringUnicode,
    })
}

/// A FastAPI `str` query parameter declared `Query(min_length=1,
/// max_length=256)` as the scope dialects read it: the last occurrence; empty
/// is reported as missing (see the dialects' docs), over [`MAX_ID_LEN`]
/// characters as `string_too_long`.
pub(crate) fn fastapi_identifier(
    query: Option<&str>,
    name: &'static str,
) -> Result<String, FieldError> {
    let value = fastapi_query_str(query, name)?;
    let kind = if value.is_empty() {
        FieldErrorKind::Missing
    } else if value.len() > MAX_ID_LEN && value.chars().count() > MAX_ID_LEN {
        FieldErrorKind::StringTooLong
    } else {
        return Ok(value);
    };
    Err(FieldError { name, kind })
}

/// [`pydantic_int`] with `ge=-2**63, le=2**63-1`: an integer that fits an
/// `i64`, as every real org id does.
pub(crate) fn pydantic_i64(input: &str) -> Result<String, FieldErrorKind> {
    let normalized = pydantic_int(input)?;
    match normalized.parse::<i64>() {
        Ok(_) => Ok(normalized),
        Err(_) if normalized.starts_with('-') => Err(FieldErrorKind::IntTooSmall),
        Err(_) => Err(FieldErrorKind::IntTooLarge),
    }
}

/// Parses a string as pydantic v2 (lax mode) parses an `int` from a string,
/// and returns it normalized (no sign for zero or positives, no leading
/// zeros, no underscores), so that `007`, `+7`, ` 7 `, `7.0` and `7` all
/// name org 7, as they do for the upstream.
///
/// pydantic's rules, checked against pydantic 2.14: surrounding Unicode
/// whitespace is trimmed; one optional sign; ASCII digits, with single
/// underscores only *between* digits; an optional fraction made only of
/// zeros (`42.000`); more than 4300 significant digits is `int_parsing_size`.
pub(crate) fn pydantic_int(input: &str) -> Result<String, FieldErrorKind> {
    let s = input.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (int_part, fraction) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    if let Some(f) = fraction {
        if f.is_empty() || !f.bytes().all(|b| b == b'0') {
            return Err(FieldErrorKind::IntParsing);
        }
    }
    let bytes = int_part.as_bytes();
    let well_formed = bytes.first().is_some_and(u8::is_ascii_digit)
        && bytes.last().is_some_and(u8::is_ascii_digit)
        && bytes.iter().all(|&b| b.is_ascii_digit() || b == b'_')
        && !int_part.contains("__");
    if !well_formed {
        return Err(FieldErrorKind::IntParsing);
    }
    let digits: String = int_part
        .bytes()
        .filter(u8::is_ascii_digit)
        .skip_while(|&b| b == b'0')
        .map(char::from)
        .collect();
    if digits.len() > 4300 {
        return Err(FieldErrorKind::IntParsingSize);
    }
    Ok(match (digits.is_empty(), negative) {
        (true, _) => "0".to_owned(),
        (false, true) => format!("-{digits}"),
        (false, false) => digits,
    })
}

/// FastAPI's 422 body: one entry per bad field, in the order given.
pub(crate) fn fastapi_422(errors: &[FieldError]) -> DialectResponse {
    #[derive(Serialize)]
    struct Entry {
        loc: [&'static str; 2],
        msg: &'static str,
        #[serde(rename = "type")]
        kind: &'static str,
    }
    #[derive(Serialize)]
    struct Body {
        detail: Vec<Entry>,
    }
    let detail = errors
        .iter()
        .map(|e| {
            let (kind, msg) = e.kind.type_and_msg();
            Entry {
                loc: ["query", e.name],
                msg,
                kind,
            }
        })
        .collect();
    DialectResponse::serialized(StatusCode::UNPROCESSABLE_ENTITY, &Body { detail })
}

/// FastAPI's answer to a wrong method (Starlette's default).
pub(crate) fn fastapi_method_not_allowed() -> DialectResponse {
    DialectResponse::static_json(
        StatusCode::METHOD_NOT_ALLOWED,
        r#"{"detail":"Method Not Allowed"}"#,
    )
}

/// FastAPI's answer when no user can be identified (its security helpers').
pub(crate) fn fastapi_not_authenticated() -> DialectResponse {
    DialectResponse::static_json(
        StatusCode::UNAUTHORIZED,
        r#"{"detail":"Not authenticated"}"#,
    )
}

/// FastAPI's `HTTPException(413)` (default detail is the status phrase).
pub(crate) fn fastapi_payload_too_large() -> DialectResponse {
    DialectResponse::static_json(
        StatusCode::PAYLOAD_TOO_LARGE,
        r#"{"detail":"Request Entity Too Large"}"#,
    )
}

/// FastAPI's `HTTPException(429)` (default detail is the status phrase).
pub(crate) fn fastapi_too_many_requests() -> DialectResponse {
    DialectResponse::static_json(
        StatusCode::TOO_MANY_REQUESTS,
        r#"{"detail":"Too Many Requests"}"#,
    )
}

/// FastAPI's `HTTPException(429, detail=...)` for a user at the scope cap.
pub(crate) fn fastapi_scope_limit_reached() -> DialectResponse {
    DialectResponse::static_json(
        StatusCode::TOO_MANY_REQUESTS,
        r#"{"detail":"Too many active scope revocations for this user"}"#,
    )
}

/// FastAPI's `HTTPException(503)`.
pub(crate) fn fastapi_unavailable() -> DialectResponse {
    DialectResponse::static_json(
        StatusCode::SERVICE_UNAVAILABLE,
        r#"{"detail":"Service Unavailable"}"#,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(input: &str, name: &str) -> Vec<(Vec<u8>, bool)> {
        form_values(input.as_bytes(), name)
            .into_iter()
            .map(|v| (v.bytes, v.malformed_escape))
            .collect()
    }

    #[test]
    fn form_values_decode_and_split() {
        #[allow(clippy::type_complexity)]
        #[rustfmt::skip]
        let cases: &[(&str, &str, &[(&[u8], bool)])] = &[
            ("", "token", &[]),
            ("token=abc", "token", &[(b"abc", false)]),
            ("token=a+b", "token", &[(b"a b", false)]),
            ("token=a%2Bb", "token", &[(b"a+b", false)]),
            ("token=a%2bb%2F", "token", &[(b"a+b/", false)]),
            ("token=%zz", "token", &[(b"%zz", true)]),
            ("token=%4", "token", &[(b"%4", true)]),
            ("token=%", "token", &[(b"%", true)]),
            ("token=%ff%FE", "token", &[(b"\xff\xfe", false)]),
            ("token", "token", &[(b"", false)]),
            ("token=", "token", &[(b"", false)]),
            ("token==x", "token", &[(b"=x", false)]),
            ("&&token=x&&", "token", &[(b"x", false)]),
            ("a=1&token=x&token=y", "token", &[(b"x", false), (b"y", false)]),
            ("%74oken=x", "token", &[(b"x", false)]),
            ("tok+en=x", "tok en", &[(b"x", false)]),
            ("tokens=x&xtoken=y&Token=z", "token", &[]),
            ("token=a;b", "token", &[(b"a;b", false)]),
            ("token=%00", "token", &[(b"\0", false)]),
        ];
        for (input, name, want) in cases {
            let want: Vec<(Vec<u8>, bool)> = want.iter().map(|(b, m)| (b.to_vec(), *m)).collect();
            assert_eq!(values(input, name), want, "input {input:?}");
        }
    }

    #[test]
    fn single_token_param_rules() {
        use TokenParamError::*;
        #[rustfmt::skip]
        let cases: &[(&str, Result<&str, TokenParamError>)] = &[
            ("token=abc", Ok("abc")),
            ("x=1&token=a%20b%2Bc/d", Ok("a b+c/d")),
            ("token=%C3%BC", Ok("ü")),
            ("", Err(Missing)),
            ("tokenx=a", Err(Missing)),
            ("token=", Err(Empty)),
            ("token", Err(Empty)),
            ("token=a&token=a", Err(Duplicate)),
            ("token=a&token=", Err(Duplicate)),
            ("token=%ff", Err(BadEncoding)),
            ("token=%C3", Err(BadEncoding)),
            ("token=ab%zz", Err(BadEncoding)),
            ("token=12345678", Ok("12345678")),
            ("token=123456789", Err(TooLong)),
            ("token=%C3%BC%C3%BC%C3%BC%C3%BC", Ok("üüüü")),
            ("token=%C3%BC%C3%BC%C3%BC%C3%BCx", Err(TooLong)),
            ("token=123456789&token=1", Err(Duplicate)),
            ("token=123456789%zz", Err(BadEncoding)),
        ];
        for (input, want) in cases {
            let got = single_token_param(input.as_bytes(), "token", 8);
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "input {input:?}");
        }
    }

    #[test]
    fn huge_inputs_are_linear_and_correct() {
        let mut q = "a=b&".repeat(200_000);
        q.push_str("token=");
        q.push_str(&"x".repeat(1 << 20));
        let t = single_token_param(q.as_bytes(), "token", usize::MAX).unwrap();
        assert_eq!(t.len(), 1 << 20);
        assert_eq!(
            single_token_param(q.as_bytes(), "token", MAX_TOKEN_BYTES),
            Err(TokenParamError::TooLong)
        );
        let many = "token=x&".repeat(100_000);
        assert_eq!(
            single_token_param(many.as_bytes(), "token", MAX_TOKEN_BYTES),
            Err(TokenParamError::Duplicate)
        );
    }

    #[test]
    fn pydantic_int_matches_pydantic() {
        use FieldErrorKind::*;
        #[rustfmt::skip]
        let cases: &[(&str, Result<&str, FieldErrorKind>)] = &[
            ("42", Ok("42")),
            (" 42 ", Ok("42")),
            ("\t42\n", Ok("42")),
            ("\u{a0}42\u{a0}", Ok("42")),
            ("+42", Ok("42")),
            ("-42", Ok("-42")),
            ("007", Ok("7")),
            ("00", Ok("0")),
            ("-0", Ok("0")),
            ("4_2", Ok("42")),
            ("1_000_000", Ok("1000000")),
            ("0_0", Ok("0")),
            ("42.0", Ok("42")),
            ("42.000", Ok("42")),
            ("-42.0", Ok("-42")),
            ("4_2.0", Ok("42")),
            ("0042.0", Ok("42")),
            ("0.0", Ok("0")),
            ("99999999999999999999999", Ok("99999999999999999999999")),
            ("", Err(IntParsing)),
            (" ", Err(IntParsing)),
            ("42.5", Err(IntParsing)),
            ("42.01", Err(IntParsing)),
            ("42.", Err(IntParsing)),
            (".0", Err(IntParsing)),
            ("-.0", Err(IntParsing)),
            ("42.0_0", Err(IntParsing)),
            ("1e3", Err(IntParsing)),
            ("0x10", Err(IntParsing)),
            ("4__2", Err(IntParsing)),
            ("_42", Err(IntParsing)),
            ("42_", Err(IntParsing)),
            ("+_42", Err(IntParsing)),
            ("+-4", Err(IntParsing)),
            ("--4", Err(IntParsing)),
            ("+", Err(IntParsing)),
            ("-", Err(IntParsing)),
            ("42 .0", Err(IntParsing)),
            ("42abc", Err(IntParsing)),
            ("\u{200b}42", Err(IntParsing)),
            ("\u{1c}42", Err(IntParsing)),
            ("٤٢", Err(IntParsing)),
            ("４２", Err(IntParsing)),
            ("null", Err(IntParsing)),
            ("[1]", Err(IntParsing)),
        ];
        for (input, want) in cases {
            assert_eq!(
                pydantic_int(input).as_deref().map_err(|e| *e),
                *want,
                "input {input:?}"
            );
        }
        assert!(pydantic_int(&"1".repeat(4300)).is_ok());
        assert_eq!(pydantic_int(&"1".repeat(4301)), Err(IntParsingSize));
        assert_eq!(
            pydantic_int(&format!("-{}", "1".repeat(4300))).map(|s| s.len()),
            Ok(4301)
        );
        assert_eq!(
            pydantic_int(&format!("{}1", "0".repeat(5000))).as_deref(),
            Ok("1")
        );
        assert!(pydantic_int(&format!("{}.0", "1".repeat(4299))).is_ok());
    }

    #[test]
    fn fastapi_query_str_takes_the_last() {
        #[rustfmt::skip]
        let cases: &[(Option<&str>, Result<&str, FieldErrorKind>)] = &[
            (None, Err(FieldErrorKind::Missing)),
            (Some(""), Err(FieldErrorKind::Missing)),
            (Some("p=a"), Ok("a")),
            (Some("p=a&p=b"), Ok("b")),
            (Some("p=a&p="), Ok("")),
            (Some("p"), Ok("")),
            (Some("p=%zz"), Ok("%zz")),
            (Some("p=a+b%2B"), Ok("a b+")),
            (Some("p=%ff"), Err(FieldErrorKind::StringUnicode)),
            (Some("p=%ff&p=ok"), Ok("ok")),
        ];
        for (q, want) in cases {
            let got = fastapi_query_str(*q, "p");
            assert_eq!(got.as_deref().map_err(|e| e.kind), *want, "query {q:?}");
        }
    }

    #[test]
    fn fastapi_identifier_and_i64_bounds() {
        use FieldErrorKind::*;
        let kind = |q: &str| fastapi_identifier(Some(q), "p").map_err(|e| e.kind);
        assert_eq!(kind("p=gh").as_deref(), Ok("gh"));
        assert_eq!(kind("p="), Err(Missing));
        assert_eq!(
            kind(&format!("p={}", "x".repeat(256))).map(|v| v.len()),
            Ok(256)
        );
        assert_eq!(kind(&format!("p={}", "x".repeat(257))), Err(StringTooLong));
        // Characters, not bytes, as pydantic counts.
        assert_eq!(
            kind(&format!("p={}", "%C3%BC".repeat(256))).map(|v| v.len()),
            Ok(512)
        );
        assert_eq!(
            kind(&format!("p={}", "%C3%BC".repeat(257))),
            Err(StringTooLong)
        );
        assert_eq!(
            pydantic_i64("9223372036854775807").as_deref(),
            Ok("9223372036854775807")
        );
        assert_eq!(
            pydantic_i64("-9223372036854775808").as_deref(),
            Ok("-9223372036854775808")
        );
        assert_eq!(pydantic_i64("9223372036854775808"), Err(IntTooLarge));
        assert_eq!(pydantic_i64("-9223372036854775809"), Err(IntTooSmall));
        assert_eq!(pydantic_i64(&"9".repeat(4301)), Err(IntParsingSize));
        assert_eq!(pydantic_i64("x"), Err(IntParsing));
        assert_eq!(pydantic_i64("007").as_deref(), Ok("7"));
    }

    #[test]
    fn fastapi_422_bytes() {
        let r = fastapi_422(&[
            FieldError {
                name: "provider",
                kind: FieldErrorKind::Missing,
            },
            FieldError {
                name: "org_id",
                kind: FieldErrorKind::IntParsing,
            },
        ]);
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            &r.body[..],
            br#"{"detail":[{"loc":["query","provider"],"msg":"Field required","type":"missing"},{"loc":["query","org_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","type":"int_parsing"}]}"#
        );
        assert_eq!(r.content_type, Some("application/json"));
    }

    #[test]
    fn content_type_and_single_header() {
        use http::header::{HeaderValue, CONTENT_TYPE};
        let mut h = HeaderMap::new();
        assert!(!content_type_is(&h, "application/json"));
        for (v, ok) in [
            ("application/json", true),
            ("Application/JSON", true),
            ("application/json; charset=utf-8", true),
            (" application/json ;charset=UTF-8", true),
            ("application/json-patch+json", false),
            ("text/plain", false),
            ("application/jsonx", false),
            ("", false),
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(v));
            assert_eq!(content_type_is(&h, "application/json"), ok, "{v:?}");
        }
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(
            !content_type_is(&h, "application/json"),
            "repeated header is ambiguous"
        );
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_bytes(b"application/json\xff").unwrap(),
        );
        assert!(!content_type_is(&h, "application/json"));
    }

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
                if rng.next() % 5 != 0 {
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
            if rng.next() % 8 == 0 {
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
                query: (rng.next() % 5 != 0).then_some(text.as_str()),
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

    #[test]
    fn secret_set() {
        let set = SecretSet::new([
            SecretSet::digest(&[b"ab", b"c"]),
            SecretSet::digest(&[b"k"]),
        ]);
        assert!(set.contains(&SecretSet::digest(&[b"ab", b"c"])));
        assert!(set.contains(&SecretSet::digest(&[b"k"])));
        assert!(!set.contains(&SecretSet::digest(&[b"a", b"bc"])));
        assert!(!set.contains(&SecretSet::digest(&[b"abc"])));
        assert!(!set.is_empty());
        assert!(SecretSet::default().is_empty());
        assert!(!SecretSet::default().contains(&SecretSet::digest(&[b""])));
        assert_eq!(format!("{set:?}"), "SecretSet(2 secrets)");
    }
}
