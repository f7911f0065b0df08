//! RFC 7009 token revocation endpoint: `POST /oauth/revoke`, an
//! `application/x-www-form-urlencoded` body with `token` and an optional
//! `token_type_hint`, revoking that token.
//!
//! # Request, checked in this order
//! 1. Method POST (RFC 7009 §2.1); any other: 405.
//! 2. One `Content-Type` header whose media type is
//!    `application/x-www-form-urlencoded` (parameters such as `charset`
//!    allowed, case-insensitive); otherwise 415, whatever the body.
//! 3. `token`: exactly once, non-empty, well-escaped, UTF-8 once decoded
//!    (`+` is a space). Otherwise 400 `{"error":"invalid_request"}`: RFC 6749
//!    §3.2, which RFC 7009 builds on, forbids repeating a parameter. Over
//!    8 KiB once decoded: 400 `invalid_request` with a description saying so.
//! 4. `token_type_hint`: optional, any value up to 256 bytes (over it: 400
//!    `invalid_request` with a description), at most once (a repeat is the
//!    bare 400). It is only a lookup hint (§2.1); revgate revokes by
//!    fingerprint whatever the token's type, so it never answers
//!    `unsupported_token_type`.
//!
//! Parameters in the query string are not read (§2.1 puts them in the body).
//! Client authentication (§2.1) is not checked by this dialect: nothing in
//! the configuration names RFC 7009 clients, and revoking a token only ever
//! takes access away.
//!
//! # Responses
//! | case | status | body |
//! |---|---|---|
//! | success, also for unknown or already revoked tokens (§2.2) | 200 | empty, no content type: "the content of the response body is ignored by the client" (§2.2) |
//! | bad or missing `token` | 400 | `{"error":"invalid_request"}` |
//! | `token` over 8 KiB | 400 | `{"error":"invalid_request","error_description":"The token is longer than 8192 bytes."}` |
//! | `token_type_hint` over 256 bytes | 400 | `{"error":"invalid_request","error_description":"The token_type_hint is longer than 256 bytes."}` |
//! | client not authenticated (should the proxy ask) | 401 | `{"error":"invalid_client"}` (RFC 6749 §5.2) |
//! | wrong method | 405 | `{"error":"invalid_request","error_description":"The method must be POST."}` |
//! | body over the limit | 413 | `{"error":"invalid_request","error_description":"The request body is too large."}` |
//! | not a form body | 415 | `{"error":"invalid_request","error_description":"The Content-Type must be application/x-www-form-urlencoded."}` |
//! | client over its rate limit | 429 + `Retry-After` | `{"error":"temporarily_unavailable","error_description":"Too many requests; retry after the Retry-After delay."}` (RFC 6749 has no rate-limit code; this is its "temporary overloading" one) |
//! | revocation not recorded | 503 | `{"error":"temporarily_unavailable"}` (§2.2.1: the client may retry) |

use http::{Method, StatusCode};

use super::{
    content_type_is, form_values, single_token_param, Dialect, DialectKind, DialectResponse,
    RevokeCall, RevokeIntent, TokenParamError, MAX_ID_LEN, MAX_TOKEN_BYTES,
};

/// The RFC 7009 dialect.
#[derive(Debug)]
pub struct Rfc7009;

const INVALID_REQUEST: &str = r#"{"error":"invalid_request"}"#;
const INVALID_CLIENT: &str = r#"{"error":"invalid_client"}"#;
const BAD_METHOD: &str =
    r#"{"error":"invalid_request","error_description":"The method must be POST."}"#;
const TOO_LARGE: &str =
    r#"{"error":"invalid_request","error_description":"The request body is too large."}"#;
const NOT_A_FORM: &str = r#"{"error":"invalid_request","error_description":"The Content-Type must be application/x-www-form-urlencoded."}"#;
const UNAVAILABLE: &str = r#"{"error":"temporarily_unavailable"}"#;
const TOKEN_TOO_LONG: &str =
    r#"{"error":"invalid_request","error_description":"The token is longer than 8192 bytes."}"#;
const HINT_TOO_LONG: &str = r#"{"error":"invalid_request","error_description":"The token_type_hint is longer than 256 bytes."}"#;
const TOO_MANY: &str = r#"{"error":"temporarily_unavailable","error_description":"Too many requests; retry after the Retry-After delay."}"#;

impl Dialect for Rfc7009 {
    fn kind(&self) -> DialectKind {
        DialectKind::Rfc7009
    }

    fn needs_body(&self) -> bool {
        true
    }

    fn parse(&self, call: &RevokeCall<'_>) -> Result<RevokeIntent, DialectResponse> {
        if call.method != Method::POST {
            return Err(DialectResponse::static_json(
                StatusCode::METHOD_NOT_ALLOWED,
                BAD_METHOD,
            ));
        }
        if !content_type_is(call.headers, "application/x-www-form-urlencoded") {
            return Err(DialectResponse::static_json(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                NOT_A_FORM,
            ));
        }
        let invalid = |body| DialectResponse::static_json(StatusCode::BAD_REQUEST, body);
        let token =
            single_token_param(call.body, "token", MAX_TOKEN_BYTES).map_err(|e| match e {
                TokenParamError::TooLong => invalid(TOKEN_TOO_LONG),
                _ => invalid(INVALID_REQUEST),
            })?;
        let hints = form_values(call.body, "token_type_hint");
        if hints.len() > 1 {
            return Err(invalid(INVALID_REQUEST));
        }
        if hints.first().is_some_and(|h| h.bytes.len() > MAX_ID_LEN) {
            return Err(invalid(HINT_TOO_LONG));
        }
        Ok(RevokeIntent::Token(token))
    }

    fn success(&self) -> DialectResponse {
        DialectResponse::empty(StatusCode::OK)
    }

    fn unauthenticated(&self) -> DialectResponse {
        DialectResponse::static_json(StatusCode::UNAUTHORIZED, INVALID_CLIENT)
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
    use http::{header::CONTENT_TYPE, HeaderMap, HeaderValue};

    const FORM: &[u8] = b"application/x-www-form-urlencoded";

    fn run(
        method: Method,
        content_type: &[&[u8]],
        query: Option<&str>,
        body: &[u8],
    ) -> Result<String, (StatusCode, String)> {
        let mut headers = HeaderMap::new();
        for c in content_type {
            headers.append(CONTENT_TYPE, HeaderValue::from_bytes(c).unwrap());
        }
        match Rfc7009.parse(&RevokeCall {
            method: &method,
            query,
            headers: &headers,
            body,
        }) {
            Ok(RevokeIntent::Token(t)) => Ok(t),
            Ok(other) => panic!("unexpected intent {other:?}"),
            Err(e) => {
                assert_eq!(e.content_type, Some("application/json"));
                Err((e.status, String::from_utf8(e.body.to_vec()).unwrap()))
            }
        }
    }

    #[test]
    fn table() {
        let ok = |t: &str| Ok::<String, (StatusCode, String)>(t.to_owned());
        let bad = || Err::<String, _>((StatusCode::BAD_REQUEST, INVALID_REQUEST.to_owned()));
        let media =
            || Err::<String, _>((StatusCode::UNSUPPORTED_MEDIA_TYPE, NOT_A_FORM.to_owned()));
        let method = || Err::<String, _>((StatusCode::METHOD_NOT_ALLOWED, BAD_METHOD.to_owned()));
        let huge = format!("token={}&token_type_hint=access_token", "t".repeat(1 << 20));
        let max = format!(
            "token={}&token_type_hint={}",
            "t".repeat(8192),
            "h".repeat(256)
        );
        let long_hint = format!("token=abc&token_type_hint={}", "h".repeat(257));
        let too_long = |b: &str| Err::<String, _>((StatusCode::BAD_REQUEST, b.to_owned()));
        let many = "token_type_hint=x&".repeat(1 << 16);
        #[allow(clippy::type_complexity)]
        #[rustfmt::skip]
        let cases: Vec<(Method, Vec<&[u8]>, Option<&str>, &[u8], Result<String, (StatusCode, String)>)> = vec![
            (Method::POST, vec![FORM], None, b"token=abc", ok("abc")),
            (Method::POST, vec![FORM], None, b"token=abc&token_type_hint=access_token", ok("abc")),
            (Method::POST, vec![FORM], None, b"token_type_hint=refresh_token&token=abc", ok("abc")),
            (Method::POST, vec![FORM], None, b"token=abc&token_type_hint=something_else", ok("abc")),
            (Method::POST, vec![FORM], None, b"token=abc&token_type_hint=", ok("abc")),
            (Method::POST, vec![FORM], None, b"token=a+b%2Bc%2F%3D%3D", ok("a b+c/==")),
            (Method::POST, vec![FORM], None, b"client_id=x&token=abc&client_secret=y", ok("abc")),
            (Method::POST, vec![b"application/x-www-form-urlencoded; charset=UTF-8"], None, b"token=abc", ok("abc")),
            (Method::POST, vec![b"Application/X-WWW-Form-URLEncoded"], None, b"token=abc", ok("abc")),
            (Method::POST, vec![FORM], Some("token=ignored"), b"token=abc", ok("abc")),
            (Method::POST, vec![FORM], None, max.as_bytes(), Ok("t".repeat(8192))),
            // length limits
            (Method::POST, vec![FORM], None, huge.as_bytes(), too_long(TOKEN_TOO_LONG)),
            (Method::POST, vec![FORM], None, long_hint.as_bytes(), too_long(HINT_TOO_LONG)),
            // the token
            (Method::POST, vec![FORM], None, b"", bad()),
            (Method::POST, vec![FORM], Some("token=abc"), b"", bad()),
            (Method::POST, vec![FORM], None, b"token=", bad()),
            (Method::POST, vec![FORM], None, b"token", bad()),
            (Method::POST, vec![FORM], None, b"token_type_hint=access_token", bad()),
            (Method::POST, vec![FORM], None, b"Token=abc", bad()),
            (Method::POST, vec![FORM], None, b"token=a&token=b", bad()),
            (Method::POST, vec![FORM], None, b"token=a&token=a", bad()),
            (Method::POST, vec![FORM], None, b"token=%ff", bad()),
            (Method::POST, vec![FORM], None, b"token=\xff\xfe", bad()),
            (Method::POST, vec![FORM], None, b"token=ab%2", bad()),
            (Method::POST, vec![FORM], None, b"token=abc&token_type_hint=a&token_type_hint=b", bad()),
            (Method::POST, vec![FORM], None, many.as_bytes(), bad()),
            (Method::POST, vec![FORM], None, br#"{"token":"abc"}"#, bad()),
            // content type, before the body is looked at
            (Method::POST, vec![], None, b"token=abc", media()),
            (Method::POST, vec![b"application/json"], None, b"token=abc", media()),
            (Method::POST, vec![b"multipart/form-data; boundary=x"], None, b"token=abc", media()),
            (Method::POST, vec![b"text/plain"], None, b"", media()),
            (Method::POST, vec![FORM, FORM], None, b"token=abc", media()),
            (Method::POST, vec![b"application/x-www-form-urlencoded\xff"], None, b"token=abc", media()),
            // method
            (Method::GET, vec![FORM], Some("token=abc"), b"", method()),
            (Method::DELETE, vec![], None, b"token=abc", method()),
        ];
        for (i, (m, ct, q, body, want)) in cases.into_iter().enumerate() {
            let got = run(m, &ct, q, body);
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn rendered() {
        let d = Rfc7009;
        let s = d.success();
        assert_eq!(
            (s.status, s.body.len(), s.content_type),
            (StatusCode::OK, 0, None)
        );
        #[rustfmt::skip]
        let cases = [
            (d.unauthenticated(), StatusCode::UNAUTHORIZED, INVALID_CLIENT),
            (d.payload_too_large(), StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE),
            (d.unavailable(), StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"temporarily_unavailable"}"#),
            (d.too_many_requests(), StatusCode::TOO_MANY_REQUESTS, TOO_MANY),
            (d.scope_limit_reached(), StatusCode::TOO_MANY_REQUESTS, TOO_MANY),
        ];
        for (r, status, body) in cases {
            assert_eq!(
                (r.status, &r.body[..], r.content_type),
                (status, body.as_bytes(), Some("application/json"))
            );
        }
        assert_eq!(INVALID_REQUEST, r#"{"error":"invalid_request"}"#);
        assert!(d.needs_body());
        assert_eq!(d.method(), Method::POST);
        assert_eq!(d.kind(), DialectKind::Rfc7009);
    }

    #[test]
    fn errors_never_echo_the_token() {
        for body in [&b"token=SECRET&token=SECRET"[..], b"token=SECRET%zz"] {
            let (_, text) = run(Method::POST, &[FORM], None, body).unwrap_err();
            assert!(!text.contains("SECRET"));
        }
    }
}
