//! LangSmith control plane, Auth Service v2 revoke endpoint:
//! `DELETE /v2/auth/tokens?provider_id=` (seed `000_2e90821b1ed6bc36.txt`),
//! revoking every token of the current user for that provider.
//!
//! LangSmith's API is FastAPI: errors follow FastAPI's shapes so that a
//! client cannot tell revgate from the upstream.
//!
//! # Request
//! - Method DELETE; any other: 405 `{"detail":"Method Not Allowed"}`
//!   (Starlette's answer).
//! - `provider_id` (string, required), read as FastAPI reads a `str` query
//!   parameter: form-decoded, the **last** occurrence wins (Starlette keeps
//!   the last; in forward mode the upstream revokes that one, so revgate must
//!   apply that one too), a malformed `%` escape kept literally.
//! - Absent: 422 `{"detail":[{"loc":["query","provider_id"],"msg":"Field
//!   required","type":"missing"}]}`. **Empty** (`provider_id=`) gets the same
//!   422: FastAPI would pass `""` to the handler, but revoking "provider ''"
//!   names nothing, and a silent 200 would hide the caller's bug. Not UTF-8
//!   once decoded: the same entry with pydantic's `string_unicode` type and
//!   message (FastAPI itself would substitute U+FFFD; no real provider id
//!   contains it).
//! - Over 256 characters (as `Query(max_length=256)` counts them): 422
//!   `{"detail":[{"loc":["query","provider_id"],"msg":"String should have at
//!   most 256 characters","type":"string_too_long"}]}` (pydantic's entry,
//!   without its `input` and `ctx`, which would echo the input).
//! - The body is never read.
//!
//! The current user is not the dialect's business: the proxy takes it from
//! the call's own credential and answers [`Dialect::unauthenticated`] when
//! there is none: 401 `{"detail":"Not authenticated"}`, what FastAPI's
//! security helpers (`HTTPBearer`, `OAuth2PasswordBearer`) answer. LangSmith's
//! clients send their API key in `x-api-key` (`langchain-auth`'s `Client`
//! sets it from `api_key`; no `Authorization`), so that header is the
//! caller's credential too ([`Dialect::caller_key_header`]); an opaque key
//! names its user through its binding (`crate::store::principal`).
//!
//! # Responses
//! | case | status | body |
//! |---|---|---|
//! | success | 200 | `{"message":"Tokens revoked","provider_id":"<provider_id>"}` (the seed documents a JSON 200 without a schema; `langchain-auth` 0.3's `Client.revoke_tokens` reads `message` and `provider_id` from it and fails without them; [`Dialect::success`] alone, with no call at hand, is `{}`) |
//! | no current user | 401 | `{"detail":"Not authenticated"}` |
//! | wrong method | 405 | `{"detail":"Method Not Allowed"}` |
//! | body over the limit | 413 | `{"detail":"Request Entity Too Large"}` |
//! | bad `provider_id` | 422 | see above |
//! | client over its rate limit | 429 + `Retry-After` | `{"detail":"Too Many Requests"}` |
//! | the user already has `revoke.max_scopes_per_subject` scope rules | 429 | `{"detail":"Too many active scope revocations for this user"}` |
//! | revocation not recorded | 503 | `{"detail":"Service Unavailable"}` |

use http::{Method, StatusCode};

use super::{
    fastapi_422, fastapi_identifier, fastapi_method_not_allowed, fastapi_not_authenticated,
    fastapi_payload_too_large, fastapi_scope_limit_reached, fastapi_too_many_requests,
    fastapi_unavailable, Dialect, DialectKind, DialectResponse, RevokeCall, RevokeIntent,
};

/// The LangSmith dialect.
#[derive(Debug)]
pub struct LangSmith;

impl Dialect for LangSmith {
    fn kind(&self) -> DialectKind {
        DialectKind::LangSmith
    }

    fn method(&self) -> Method {
        Method::DELETE
    }

    fn caller_key_header(&self) -> Option<&'static str> {
        Some("x-api-key")
    }

    fn parse(&self, call: &RevokeCall<'_>) -> Result<RevokeIntent, DialectResponse> {
        if call.method != Method::DELETE {
            return Err(fastapi_method_not_allowed());
        }
        match fastapi_identifier(call.query, "provider_id") {
            Ok(provider) => Ok(RevokeIntent::Scope {
                org: None,
                provider,
            }),
            Err(e) => Err(fastapi_422(&[e])),
        }
    }

    fn success(&self) -> DialectResponse {
        DialectResponse::static_json(StatusCode::OK, "{}")
    }

    fn success_for(&self, call: &RevokeCall<'_>) -> DialectResponse {
        match self.parse(call) {
            Ok(RevokeIntent::Scope { provider, .. }) => DialectResponse::json(
                StatusCode::OK,
                &serde_json::json!({"message": "Tokens revoked", "provider_id": provider}),
            ),
            _ => self.success(),
        }
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

    const MISSING: &str =
        r#"{"detail":[{"loc":["query","provider_id"],"msg":"Field required","type":"missing"}]}"#;
    const TOO_LONG: &str = r#"{"detail":[{"loc":["query","provider_id"],"msg":"String should have at most 256 characters","type":"string_too_long"}]}"#;
    const UNICODE: &str = r#"{"detail":[{"loc":["query","provider_id"],"msg":"Input should be a valid string, unable to parse raw data as a unicode string","type":"string_unicode"}]}"#;

    fn run(method: Method, query: Option<&str>) -> Result<RevokeIntent, (StatusCode, String)> {
        let headers = HeaderMap::new();
        LangSmith
            .parse(&RevokeCall {
                method: &method,
                query,
                headers: &headers,
                body: b"ignored",
            })
            .map_err(|e| {
                assert_eq!(e.content_type, Some("application/json"));
                (e.status, String::from_utf8(e.body.to_vec()).unwrap())
            })
    }

    fn scope(p: &str) -> Result<RevokeIntent, (StatusCode, String)> {
        Ok(RevokeIntent::Scope {
            org: None,
            provider: p.to_owned(),
        })
    }

    fn e(status: StatusCode, body: &str) -> Result<RevokeIntent, (StatusCode, String)> {
        Err((status, body.to_owned()))
    }

    #[test]
    fn table() {
        let huge = format!("provider_id={}", "p".repeat(1 << 20));
        let max = format!("provider_id={}", "p".repeat(256));
        let too_long = || e(StatusCode::UNPROCESSABLE_ENTITY, TOO_LONG);
        let huge_then_ok = format!("{huge}&provider_id=ok");
        let ok_then_huge = format!("provider_id=ok&{huge}");
        let missing = || e(StatusCode::UNPROCESSABLE_ENTITY, MISSING);
        #[allow(clippy::type_complexity)]
        #[rustfmt::skip]
        let cases: Vec<(Method, Option<&str>, Result<RevokeIntent, (StatusCode, String)>)> = vec![
            (Method::DELETE, Some("provider_id=github"), scope("github")),
            (Method::DELETE, Some("x=1&provider_id=git+hub%2F%C3%BC"), scope("git hub/ü")),
            (Method::DELETE, Some("provider_id=a&provider_id=b"), scope("b")),
            (Method::DELETE, Some("provider_id=&provider_id=b"), scope("b")),
            (Method::DELETE, Some("provider_id=%ff&provider_id=b"), scope("b")),
            (Method::DELETE, Some("provider_id=50%"), scope("50%")),
            (Method::DELETE, Some("%70rovider_id=x"), scope("x")),
            (Method::DELETE, Some(&max), scope(&"p".repeat(256))),
            (Method::DELETE, Some(&huge), too_long()),
            (Method::DELETE, Some(&huge_then_ok), scope("ok")),
            (Method::DELETE, Some(&ok_then_huge), too_long()),
            (Method::DELETE, None, missing()),
            (Method::DELETE, Some(""), missing()),
            (Method::DELETE, Some("provider=github"), missing()),
            (Method::DELETE, Some("Provider_Id=github"), missing()),
            (Method::DELETE, Some("provider_id="), missing()),
            (Method::DELETE, Some("provider_id"), missing()),
            (Method::DELETE, Some("provider_id=b&provider_id="), missing()),
            (Method::DELETE, Some("provider_id=%ff"), e(StatusCode::UNPROCESSABLE_ENTITY, UNICODE)),
            (Method::DELETE, Some("provider_id=a%C3"), e(StatusCode::UNPROCESSABLE_ENTITY, UNICODE)),
            (Method::GET, Some("provider_id=github"), e(StatusCode::METHOD_NOT_ALLOWED, r#"{"detail":"Method Not Allowed"}"#)),
            (Method::POST, None, e(StatusCode::METHOD_NOT_ALLOWED, r#"{"detail":"Method Not Allowed"}"#)),
        ];
        for (i, (method, query, want)) in cases.into_iter().enumerate() {
            assert_eq!(run(method, query), want, "case {i}");
        }
    }

    #[test]
    fn rendered() {
        let d = LangSmith;
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
        assert_eq!(d.method(), Method::DELETE);
        assert!(!d.needs_body());
        assert_eq!(d.kind(), DialectKind::LangSmith);
    }
}
