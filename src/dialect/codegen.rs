//! Codegen revoke endpoint: `POST /v1/oauth/tokens/revoke?provider=&org_id=`
//! (seed `001_43a3c28c3b220568.txt`), revoking every token of the current
//! user in that org for that provider.
//!
//! Codegen's API is FastAPI (its 422 is `HTTPValidationError`): errors follow
//! FastAPI's shapes so that a client cannot tell revgate from the upstream.
//!
//! # Request
//! - Method POST; any other: 405 `{"detail":"Method Not Allowed"}`.
//! - `provider` (string, required) and `org_id` (integer, required), read
//!   as FastAPI reads query parameters: form-decoded, the **last** occurrence
//!   wins (as Starlette; in forward mode the upstream acts on that one), a
//!   malformed `%` escape kept literally.
//! - Both are validated and every bad one reported, one entry each, in
//!   parameter order (`provider`, then `org_id`), like FastAPI:
//!   - absent: `{"loc":["query","<name>"],"msg":"Field required","type":"missing"}`;
//!   - `provider` empty: reported as missing (FastAPI would accept `""`, but
//!     a revocation of provider "" names nothing; see the LangSmith dialect);
//!   - not UTF-8 once decoded: pydantic's `string_unicode` entry;
//!   - `org_id` not an integer as pydantic parses one (empty included, which
//!     FastAPI also reports as `int_parsing`, not `missing`): `"type":
//!     "int_parsing"`, `"msg":"Input should be a valid integer, unable to
//!     parse string as an integer"`; more than 4300 digits: pydantic's
//!     `int_parsing_size`;
//!   - `provider` over 256 characters: pydantic's `string_too_long` entry
//!     (`"msg":"String should have at most 256 characters"`), as
//!     `Query(max_length=256)` reports it;
//!   - `org_id` outside `i64` (every real org id fits): pydantic's
//!     `less_than_equal` / `greater_than_equal` entry, as `Query(ge=-2**63,
//!     le=2**63-1)` reports it (`"msg":"Input should be less than or equal
//!     to 9223372036854775807"`);
//!   - entries never carry pydantic's `input` or `ctx` (they would echo the
//!     input).
//! - `org_id` is normalized as pydantic normalizes it (`007`, `+7`, ` 7 `,
//!   `7.0`, `7` all name org `"7"`), so the scope matches the org the upstream
//!   acted on and the org claim of a credential (a JSON number `7` reads as
//!   `"7"`).
//! - The optional `Authorization` header is the proxy's business (the
//!   current user); the body is never read.
//!
//! # Responses
//! | case | status | body |
//! |---|---|---|
//! | success | 200 | `{}` (the seed's 200 is `<any>` JSON) |
//! | no current user | 401 | `{"detail":"Not authenticated"}` |
//! | wrong method | 405 | `{"detail":"Method Not Allowed"}` |
//! | body over the limit | 413 | `{"detail":"Request Entity Too Large"}` |
//! | bad parameters | 422 | `{"detail":[...]}` as above |
//! | client over its rate limit | 429 + `Retry-After` | `{"detail":"Too Many Requests"}` |
//! | the user already has `revoke.max_scopes_per_subject` scope rules | 429 | `{"detail":"Too many active scope revocations for this user"}` |
//! | revocation not recorded | 503 | `{"detail":"Service Unavailable"}` |

use http::{Method, StatusCode};

use super::{
    fastapi_422, fastapi_identifier, fastapi_method_not_allowed, fastapi_not_authenticated,
    fastapi_payload_too_large, fastapi_query_str, fastapi_scope_limit_reached,
    fastapi_too_many_requests, fastapi_unavailable, pydantic_i64, Dialect, DialectKind,
    DialectResponse, FieldError, RevokeCall, RevokeIntent,
};

/// The Codegen dialect.
#[derive(Debug)]
pub struct Codegen;

impl Dialect for Codegen {
    fn kind(&self) -> DialectKind {
        DialectKind::Codegen
    }

    fn parse(&self, call: &RevokeCall<'_>) -> Result<RevokeIntent, DialectResponse> {
        if call.method != Method::POST {
            return Err(fastapi_method_not_allowed());
        }
        let provider = fastapi_identifier(call.query, "provider");
        let org = fastapi_query_str(call.query, "org_id").and_then(|raw| {
            pydantic_i64(&raw).map_err(|kind| FieldError {
                name: "org_id",
                kind,
            })
        });
        match (provider, org) {
            (Ok(provider), Ok(org)) => Ok(RevokeIntent::Scope {
                org: Some(org),
                provider,
            }),
            (provider, org) => {
                let errors: Vec<FieldError> =
                    [provider.err(), org.err()].into_iter().flatten().collect();
                Err(fastapi_422(&errors))
            }
        }
    }

    fn success(&self) -> DialectResponse {
        DialectResponse::static_json(StatusCode::OK, "{}")
    }

    fn unauthenticated(&self) -> DialectResponse {
        fastapi_not_authenticated()
    }

    fn too_many_requests(&self) -> DialectResponse {
        fastapi_too_many_requests()
    }

    fn scope_limit_reached(&self) -> DialectResponse {
        fastapi_scope_limit_reached()
    }

    fn payload_too_large(&self) -> DialectResponse {
        fastapi_payload_too_large()
    }

    fn unavailable(&self) -> DialectResponse {
        fastapi_unavailable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    const P_MISSING: &str =
        r#"{"loc":["query","provider"],"msg":"Field required","type":"missing"}"#;
    const P_UNICODE: &str = r#"{"loc":["query","provider"],"msg":"Input should be a valid string, unable to parse raw data as a unicode string","type":"string_unicode"}"#;
    const O_MISSING: &str = r#"{"loc":["query","org_id"],"msg":"Field required","type":"missing"}"#;
    const O_INT: &str = r#"{"loc":["query","org_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","type":"int_parsing"}"#;
    const O_SIZE: &str = r#"{"loc":["query","org_id"],"msg":"Unable to parse input string as an integer, exceeded maximum size","type":"int_parsing_size"}"#;
    const O_LE: &str = r#"{"loc":["query","org_id"],"msg":"Input should be less than or equal to 9223372036854775807","type":"less_than_equal"}"#;
    const O_GE: &str = r#"{"loc":["query","org_id"],"msg":"Input should be greater than or equal to -9223372036854775808","type":"greater_than_equal"}"#;
    const P_LONG: &str = r#"{"loc":["query","provider"],"msg":"String should have at most 256 characters","type":"string_too_long"}"#;
    const O_UNICODE: &str = r#"{"loc":["query","org_id"],"msg":"Input should be a valid string, unable to parse raw data as a unicode string","type":"string_unicode"}"#;

    fn run(method: Method, query: Option<&str>) -> Result<RevokeIntent, (StatusCode, String)> {
        let headers = HeaderMap::new();
        Codegen
            .parse(&RevokeCall {
                method: &method,
                query,
                headers: &headers,
                body: b"",
            })
            .map_err(|e| {
                assert_eq!(e.content_type, Some("application/json"));
                (e.status, String::from_utf8(e.body.to_vec()).unwrap())
            })
    }

    fn scope(org: &str, p: &str) -> Result<RevokeIntent, (StatusCode, String)> {
        Ok(RevokeIntent::Scope {
            org: Some(org.to_owned()),
            provider: p.to_owned(),
        })
    }

    fn unprocessable(entries: &[&str]) -> Result<RevokeIntent, (StatusCode, String)> {
        Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(r#"{{"detail":[{}]}}"#, entries.join(",")),
        ))
    }

    #[test]
    fn table() {
        let huge_org = format!("provider=p&org_id={}", "1".repeat(4301));
        let big_org = format!("provider=p&org_id={}", "9".repeat(4300));
        let long_provider = format!("provider={}&org_id=1", "p".repeat(257));
        let max_provider = format!("provider={}&org_id=1", "p".repeat(256));
        #[allow(clippy::type_complexity)]
        #[rustfmt::skip]
        let cases: Vec<(Method, Option<&str>, Result<RevokeIntent, (StatusCode, String)>)> = vec![
            (Method::POST, Some("provider=github&org_id=42"), scope("42", "github")),
            (Method::POST, Some("org_id=42&provider=github"), scope("42", "github")),
            (Method::POST, Some("provider=git+hub%2Fx&org_id=%2B007"), scope("7", "git hub/x")),
            (Method::POST, Some("provider=p&org_id=+7+"), scope("7", "p")),
            (Method::POST, Some("provider=p&org_id=-3"), scope("-3", "p")),
            (Method::POST, Some("provider=p&org_id=-0"), scope("0", "p")),
            (Method::POST, Some("provider=p&org_id=1_000"), scope("1000", "p")),
            (Method::POST, Some("provider=p&org_id=42.0"), scope("42", "p")),
            (Method::POST, Some("provider=a&provider=b&org_id=1&org_id=2"), scope("2", "b")),
            (Method::POST, Some("provider=a&org_id=x&org_id=2"), scope("2", "a")),
            (Method::POST, Some("provider=p&org_id=9223372036854775807"), scope("9223372036854775807", "p")),
            (Method::POST, Some("provider=p&org_id=-9223372036854775808"), scope("-9223372036854775808", "p")),
            (Method::POST, Some(&max_provider), scope("1", &"p".repeat(256))),
            // length limits
            (Method::POST, Some(&big_org), unprocessable(&[O_LE])),
            (Method::POST, Some("provider=p&org_id=9223372036854775808"), unprocessable(&[O_LE])),
            (Method::POST, Some("provider=p&org_id=-9223372036854775809"), unprocessable(&[O_GE])),
            (Method::POST, Some(&long_provider), unprocessable(&[P_LONG])),
            // missing, in parameter order
            (Method::POST, None, unprocessable(&[P_MISSING, O_MISSING])),
            (Method::POST, Some(""), unprocessable(&[P_MISSING, O_MISSING])),
            (Method::POST, Some("org_id=1"), unprocessable(&[P_MISSING])),
            (Method::POST, Some("provider=p"), unprocessable(&[O_MISSING])),
            (Method::POST, Some("provider=&org_id=1"), unprocessable(&[P_MISSING])),
            (Method::POST, Some("provider&org_id=1"), unprocessable(&[P_MISSING])),
            (Method::POST, Some("Provider=p&ORG_ID=1"), unprocessable(&[P_MISSING, O_MISSING])),
            // wrong types
            (Method::POST, Some("provider=p&org_id="), unprocessable(&[O_INT])),
            (Method::POST, Some("provider=p&org_id=abc"), unprocessable(&[O_INT])),
            (Method::POST, Some("provider=p&org_id=4.5"), unprocessable(&[O_INT])),
            (Method::POST, Some("provider=p&org_id=1e3"), unprocessable(&[O_INT])),
            (Method::POST, Some("provider=p&org_id=0x10"), unprocessable(&[O_INT])),
            (Method::POST, Some("provider=p&org_id=%EF%BC%94"), unprocessable(&[O_INT])),
            (Method::POST, Some("provider=p&org_id=[1]"), unprocessable(&[O_INT])),
            (Method::POST, Some("provider=p&org_id=1&org_id=x"), unprocessable(&[O_INT])),
            (Method::POST, Some(&huge_org), unprocessable(&[O_SIZE])),
            (Method::POST, Some("org_id=x"), unprocessable(&[P_MISSING, O_INT])),
            (Method::POST, Some("provider=&org_id="), unprocessable(&[P_MISSING, O_INT])),
            // non-UTF-8
            (Method::POST, Some("provider=%ff&org_id=1"), unprocessable(&[P_UNICODE])),
            (Method::POST, Some("provider=%ff&org_id=%fe"), unprocessable(&[P_UNICODE, O_UNICODE])),
            // method
            (Method::GET, Some("provider=p&org_id=1"), Err((StatusCode::METHOD_NOT_ALLOWED, r#"{"detail":"Method Not Allowed"}"#.into()))),
            (Method::DELETE, None, Err((StatusCode::METHOD_NOT_ALLOWED, r#"{"detail":"Method Not Allowed"}"#.into()))),
        ];
        for (i, (method, query, want)) in cases.into_iter().enumerate() {
            assert_eq!(run(method, query), want, "case {i}");
        }
    }

    #[test]
    fn rendered() {
        let d = Codegen;
        #[rustfmt::skip]
        let cases = [
            (d.success(), StatusCode::OK, "{}"),
            (d.unauthenticated(), StatusCode::UNAUTHORIZED, r#"{"detail":"Not authenticated"}"#),
            (d.payload_too_large(), StatusCode::PAYLOAD_TOO_LARGE, r#"{"detail":"Request Entity Too Large"}"#),
            (d.unavailable(), StatusCode::SERVICE_UNAVAILABLE, r#"{"detail":"Service Unavailable"}"#),
            (d.too_many_requests(), StatusCode::TOO_MANY_REQUESTS, r#"{"detail":"Too Many Requests"}"#),
            (d.scope_limit_reached(), StatusCode::TOO_MANY_REQUESTS, r#"{"detail":"Too many active scope revocations for this user"}"#),
        ];
        for (r, status, body) in cases {
            assert_eq!(
                (r.status, &r.body[..], r.content_type),
                (status, body.as_bytes(), Some("application/json"))
            );
        }
        assert_eq!(d.method(), Method::POST);
        assert!(!d.needs_body());
        assert_eq!(d.kind(), DialectKind::Codegen);
    }
}
