//! Nylas v3 hosted OAuth revoke endpoint: `POST /v3/connect/revoke?token=`
//! (seed `002_5d7eb7f396c25b0b.txt`), revoking that one access token.
//!
//! # Request
//! - `Authorization: Bearer <API key>` is required. The scheme is matched
//!   case-insensitively, the key is the rest of the value trimmed, and must
//!   be non-empty without inner whitespace. A repeated `Authorization`
//!   header is refused. When `api_keys` is configured the key must be one of
//!   them (constant-time over BLAKE3 digests); otherwise any key is taken.
//!   A key over 8 KiB is no key (401).
//! - `token` query parameter: decoded as form encoding (`+` is a space,
//!   `%2B` a plus). Missing, empty, given twice, with a malformed `%` escape,
//!   or not UTF-8 once decoded: 400. Over 8 KiB once decoded: 400 with its
//!   own description (`The token query parameter must be at most 8192
//!   bytes.`). The body is never read.
//! - Checks run in this order: method, API key, token, so that a caller
//!   without a key learns nothing about its token.
//!
//! # Responses (every body is JSON, every error the documented shape)
//! | case | status | `error` | `error_code` |
//! |---|---|---|---|
//! | success | 200 | body `{}` | |
//! | token missing / empty / duplicate / badly encoded | 400 | `invalid_request` | `"400"` |
//! | token over 8 KiB | 400 | `invalid_request` | `"400"` |
//! | API key absent, malformed, over 8 KiB or not accepted | 401 | `invalid_client` | `"401"` |
//! | method other than POST | 405 | `invalid_request` | `"405"` |
//! | body over the limit | 413 | `invalid_request` | `"413"` |
//! | client over its rate limit (with `Retry-After`) | 429 | `temporarily_unavailable` | `"429"` |
//! | revocation not recorded | 503 | `temporarily_unavailable` | `"503"` |
//!
//! RFC 6749 has no rate-limit error; `temporarily_unavailable` ("unable to
//! handle the request due to a temporary overloading") is its closest code,
//! and the SDK only needs the four fields and a numeric `error_code`.
//!
//! Every error has the four documented string fields `error`,
//! `error_description`, `error_uri`, `error_code`. The `error` values are
//! RFC 6749 §5.2's, `error_code` is the status as a string (the seed types it
//! as a string; Nylas's own codes are not published for this endpoint), and
//! `error_uri` points to Nylas's documentation of its error responses.
//!
//! # What the `nylas` Python SDK (6.18) needs, read from its source
//! `Client(api_key, api_uri).auth.revoke(token)` sends `POST
//! {api_uri}/v3/connect/revoke?token=<urllib.parse.quote(token)>` (so `+`
//! arrives as `%2B`, `/` unescaped) with `Authorization: Bearer <api_key>`,
//! no body and no `Content-Type`. Its `_validate_response` calls
//! `response.json()` on **every** response, 200 included: an empty 200 body
//! raises `JSONDecodeError`, hence the `{}` body. For status >= 400 on a
//! `connect/revoke` path it builds a `NylasOAuthError` from `error`,
//! `error_description`, `error_uri`, `error_code`, so every error here,
//! 401/405/413/503 included, has that shape. Its model types `error_code` as
//! an `int` and converts with `int(value)`: `"400"` becomes 400, but a
//! non-numeric code such as `"E400"` raises an uncaught `ValueError` in the
//! SDK. Every `error_code` here is therefore a string of digits.
//!
//! A client that sends a raw `+` in a token (unencoded) has it read as a
//! space, as Nylas's own form decoding would: the revocation then names a
//! different token. The SDK always encodes, so this only affects hand-made
//! calls.

use http::{header::AUTHORIZATION, Method, StatusCode};

use super::{
    single_header, single_token_param, Dialect, DialectKind, DialectResponse, RevokeCall,
    RevokeIntent, SecretSet, TokenParamError, MAX_TOKEN_BYTES,
};

/// The Nylas dialect.
#[derive(Debug)]
pub struct Nylas {
    api_keys: SecretSet,
}

impl Nylas {
    /// With the accepted API keys (empty: any non-empty key is accepted).
    pub fn new(api_keys: Vec<String>) -> Self {
        Nylas {
            api_keys: SecretSet::new(api_keys.iter().map(|k| SecretSet::digest(&[k.as_bytes()]))),
        }
    }

    fn key_accepted(&self, key: &str) -> bool {
        self.api_keys.is_empty()
            || self
                .api_keys
                .contains(&SecretSet::digest(&[key.as_bytes()]))
    }
}

/// `Bearer <key>` from a single `Authorization` header.
fn bearer_key(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let key = rest.trim();
    if key.is_empty() || key.len() > MAX_TOKEN_BYTES || key.contains([' ', '\t']) {
        return None;
    }
    Some(key)
}

const BAD_TOKEN: &str = r#"{"error":"invalid_request","error_description":"The token query parameter is required, must be given once, and must not be empty.","error_uri":"https://developer.nylas.com/docs/api/errors/400-response/","error_code":"400"}"#;
const TOKEN_TOO_LONG: &str = r#"{"error":"invalid_request","error_description":"The token query parameter must be at most 8192 bytes.","error_uri":"https://developer.nylas.com/docs/api/errors/400-response/","error_code":"400"}"#;
const BAD_KEY: &str = r#"{"error":"invalid_client","error_description":"A valid API key is required in the Authorization header as: Bearer <NYLAS_API_KEY>.","error_uri":"https://developer.nylas.com/docs/api/errors/400-response/","error_code":"401"}"#;
const BAD_METHOD: &str = r#"{"error":"invalid_request","error_description":"Method not allowed. Use POST.","error_uri":"https://developer.nylas.com/docs/api/errors/400-response/","error_code":"405"}"#;
const TOO_LARGE: &str = r#"{"error":"invalid_request","error_description":"The request is too large.","error_uri":"https://developer.nylas.com/docs/api/errors/400-response/","error_code":"413"}"#;
const TOO_MANY: &str = r#"{"error":"temporarily_unavailable","error_description":"Too many requests. Retry after the delay in the Retry-After header.","error_uri":"https://developer.nylas.com/docs/api/errors/400-response/","error_code":"429"}"#;
const UNAVAILABLE: &str = r#"{"error":"temporarily_unavailable","error_description":"The token could not be revoked right now. Retry later.","error_uri":"https://developer.nylas.com/docs/api/errors/500-response/","error_code":"503"}"#;

impl Dialect for Nylas {
    fn kind(&self) -> DialectKind {
        DialectKind::Nylas
    }

    fn parse(&self, call: &RevokeCall<'_>) -> Result<RevokeIntent, DialectResponse> {
        if call.method != Method::POST {
            return Err(DialectResponse::static_json(
                StatusCode::METHOD_NOT_ALLOWED,
                BAD_METHOD,
            ));
        }
        let key = single_header(call.headers, AUTHORIZATION).and_then(bearer_key);
        match key {
            Some(key) if self.key_accepted(key) => {}
            _ => return Err(self.unauthenticated()),
        }
        let query = call.query.unwrap_or("").as_bytes();
        single_token_param(query, "token", MAX_TOKEN_BYTES)
            .map(RevokeIntent::Token)
            .map_err(|e| {
                let body = match e {
                    TokenParamError::TooLong => TOKEN_TOO_LONG,
                    _ => BAD_TOKEN,
                };
                DialectResponse::static_json(StatusCode::BAD_REQUEST, body)
            })
    }

    fn success(&self) -> DialectResponse {
        DialectResponse::static_json(StatusCode::OK, "{}")
    }

    fn unauthenticated(&self) -> DialectResponse {
        DialectResponse::static_json(StatusCode::UNAUTHORIZED, BAD_KEY)
    }

    fn payload_too_large(&self) -> DialectResponse {
        DialectResponse::static_json(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE)
    }

    fn unavailable(&self) -> DialectResponse {
        DialectResponse::static_json(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE)
    }

    fn too_many_requests(&self) -> DialectResponse {
        DialectResponse::static_json(StatusCode::TOO_MANY_REQUESTS, TOO_MANY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn call(
        dialect: &Nylas,
        method: Method,
        query: Option<&str>,
        auth: &[&[u8]],
    ) -> Result<RevokeIntent, DialectResponse> {
        let mut headers = HeaderMap::new();
        for a in auth {
            headers.append(AUTHORIZATION, HeaderValue::from_bytes(a).unwrap());
        }
        dialect.parse(&RevokeCall {
            method: &method,
            query,
            headers: &headers,
            body: b"",
        })
    }

    fn token(t: &str) -> Result<RevokeIntent, (StatusCode, &'static str)> {
        Ok(RevokeIntent::Token(t.to_owned()))
    }

    fn err(r: Result<RevokeIntent, DialectResponse>) -> Result<RevokeIntent, (StatusCode, String)> {
        r.map_err(|e| {
            assert_eq!(e.content_type, Some("application/json"));
            (e.status, String::from_utf8(e.body.to_vec()).unwrap())
        })
    }

    const E400: (StatusCode, &str) = (StatusCode::BAD_REQUEST, BAD_TOKEN);
    const E401: (StatusCode, &str) = (StatusCode::UNAUTHORIZED, BAD_KEY);
    const E400_LONG: (StatusCode, &str) = (StatusCode::BAD_REQUEST, TOKEN_TOO_LONG);

    #[test]
    fn table() {
        let open = Nylas::new(vec![]);
        let keyed = Nylas::new(vec!["key-1".into(), "key-2".into()]);
        let long = format!("token={}", "t".repeat(1 << 20));
        let max = format!("token={}", "t".repeat(MAX_TOKEN_BYTES));
        let max_token = "t".repeat(MAX_TOKEN_BYTES);
        let over = format!("token={}", "%74".repeat(MAX_TOKEN_BYTES + 1));
        let long_key = format!("Bearer {}", "k".repeat(MAX_TOKEN_BYTES + 1));
        let max_key = format!("Bearer {}", "k".repeat(MAX_TOKEN_BYTES));
        #[allow(clippy::type_complexity)]
        #[rustfmt::skip]
        let cases: Vec<(&Nylas, Method, Option<&str>, Vec<&[u8]>, Result<RevokeIntent, (StatusCode, &str)>)> = vec![
            // success
            (&open, Method::POST, Some("token=abc"), vec![b"Bearer k"], token("abc")),
            (&open, Method::POST, Some("token=abc"), vec![b"bearer k"], token("abc")),
            (&open, Method::POST, Some("token=abc"), vec![b"BEARER   k  "], token("abc")),
            (&keyed, Method::POST, Some("token=abc"), vec![b"Bearer key-2"], token("abc")),
            // what the SDK sends for "a b+c/d%e&f=ü"
            (&open, Method::POST, Some("token=a%20b%2Bc/d%25e%26f%3D%C3%BC"), vec![b"Bearer k"], token("a b+c/d%e&f=ü")),
            (&open, Method::POST, Some("token=a+b"), vec![b"Bearer k"], token("a b")),
            (&open, Method::POST, Some("other=1&token=x&z"), vec![b"Bearer k"], token("x")),
            (&open, Method::POST, Some(&max), vec![b"Bearer k"], Ok(RevokeIntent::Token(max_token.clone()))),
            (&open, Method::POST, Some(&max), vec![max_key.as_bytes()], Ok(RevokeIntent::Token(max_token.clone()))),
            // length limits
            (&open, Method::POST, Some(&long), vec![b"Bearer k"], Err(E400_LONG)),
            (&open, Method::POST, Some(&over), vec![b"Bearer k"], Err(E400_LONG)),
            (&open, Method::POST, Some(&long), vec![long_key.as_bytes()], Err(E401)),
            // the token
            (&open, Method::POST, None, vec![b"Bearer k"], Err(E400)),
            (&open, Method::POST, Some(""), vec![b"Bearer k"], Err(E400)),
            (&open, Method::POST, Some("token="), vec![b"Bearer k"], Err(E400)),
            (&open, Method::POST, Some("token"), vec![b"Bearer k"], Err(E400)),
            (&open, Method::POST, Some("tokens=abc"), vec![b"Bearer k"], Err(E400)),
            (&open, Method::POST, Some("token=a&token=b"), vec![b"Bearer k"], Err(E400)),
            (&open, Method::POST, Some("token=a&token=a"), vec![b"Bearer k"], Err(E400)),
            (&open, Method::POST, Some("token=%ff%fe"), vec![b"Bearer k"], Err(E400)),
            (&open, Method::POST, Some("token=abc%zz"), vec![b"Bearer k"], Err(E400)),
            // the API key, checked before the token
            (&open, Method::POST, Some("token=abc"), vec![], Err(E401)),
            (&open, Method::POST, None, vec![], Err(E401)),
            (&open, Method::POST, Some("token=abc"), vec![b"Bearer"], Err(E401)),
            (&open, Method::POST, Some("token=abc"), vec![b"Bearer "], Err(E401)),
            (&open, Method::POST, Some("token=abc"), vec![b"Basic a2V5Og=="], Err(E401)),
            (&open, Method::POST, Some("token=abc"), vec![b"Bearerk"], Err(E401)),
            (&open, Method::POST, Some("token=abc"), vec![b"Bearer a b"], Err(E401)),
            (&open, Method::POST, Some("token=abc"), vec![b"k"], Err(E401)),
            (&open, Method::POST, Some("token=abc"), vec![b"Bearer k\xff"], Err(E401)),
            (&open, Method::POST, Some("token=abc"), vec![b"Bearer k", b"Bearer k"], Err(E401)),
            (&keyed, Method::POST, Some("token=abc"), vec![b"Bearer key-3"], Err(E401)),
            (&keyed, Method::POST, Some("token=abc"), vec![b"Bearer key-"], Err(E401)),
            (&keyed, Method::POST, Some("token=abc"), vec![b"Bearer KEY-1"], Err(E401)),
            // the method, checked first
            (&open, Method::GET, Some("token=abc"), vec![b"Bearer k"], Err((StatusCode::METHOD_NOT_ALLOWED, BAD_METHOD))),
            (&open, Method::DELETE, None, vec![], Err((StatusCode::METHOD_NOT_ALLOWED, BAD_METHOD))),
        ];
        for (i, (dialect, method, query, auth, want)) in cases.into_iter().enumerate() {
            let got = err(call(dialect, method, query, &auth));
            let want = want.map_err(|(s, b)| (s, b.to_owned()));
            assert_eq!(
                got,
                want,
                "case {i}: query {:?}",
                query.map(|q| &q[..q.len().min(40)])
            );
        }
    }

    #[test]
    fn rendered_bodies_are_the_documented_shape_and_never_echo() {
        let d = Nylas::new(vec![]);
        let secret = "SECRET-TOKEN-VALUE";
        let errors = [
            err(call(
                &d,
                Method::POST,
                Some("token=SECRET-TOKEN-VALUE&token=x"),
                &[b"Bearer k"],
            ))
            .unwrap_err(),
            err(call(
                &d,
                Method::POST,
                Some("token=SECRET-TOKEN-VALUE"),
                &[b"Bearer SECRET-TOKEN-VALUE x"],
            ))
            .unwrap_err(),
        ];
        let rendered = [
            d.unauthenticated(),
            d.payload_too_large(),
            d.unavailable(),
            d.too_many_requests(),
            d.scope_limit_reached(),
        ];
        let mut all: Vec<(StatusCode, String)> = errors.to_vec();
        all.extend(
            rendered
                .iter()
                .map(|r| (r.status, String::from_utf8(r.body.to_vec()).unwrap())),
        );
        for (status, body) in all {
            assert!(!body.contains(secret));
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let obj = v.as_object().unwrap();
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            assert_eq!(keys.len(), 4, "{body}");
            for k in ["error", "error_description", "error_uri", "error_code"] {
                assert!(obj[k].is_string(), "{k} in {body}");
            }
            assert_eq!(obj["error_code"], status.as_u16().to_string());
            // The SDK does int(error_code): it must be digits only.
            assert!(obj["error_code"]
                .as_str()
                .unwrap()
                .bytes()
                .all(|b| b.is_ascii_digit()));
        }
        assert_eq!(d.payload_too_large().status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(d.unavailable().status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(d.too_many_requests().status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(&d.too_many_requests().body[..], TOO_MANY.as_bytes());
        assert_eq!(d.unauthenticated().status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn success_is_json_for_the_sdk() {
        let d = Nylas::new(vec![]);
        let s = d.success();
        assert_eq!(
            (s.status, &s.body[..], s.content_type),
            (StatusCode::OK, &b"{}"[..], Some("application/json"))
        );
        assert!(!d.needs_body());
        assert_eq!(d.method(), Method::POST);
        assert_eq!(d.kind(), DialectKind::Nylas);
    }
}
