//! The admin listener (loopback by default): health, readiness, metrics, and
//! the revocation API for operators and tests.
//!
//! | method + path                          | body                                   | answer |
//! |----------------------------------------|----------------------------------------|--------|
//! | `GET /healthz`                         |                                        | 200 `{"status":"ok"}` |
//! | `GET /readyz`                          |                                        | 200, or 503 until the store has loaded |
//! | `GET /metrics`                         |                                        | Prometheus text |
//! | `POST /admin/v1/revocations`           | `{"token":"..."}` or `{"scope":{"sub":..,"org":..,"provider":..}}` | 200 what was recorded, once durable |
//! | `POST /admin/v1/revocations/lookup`    | `{"token":"..."}` or `{"fingerprint":".."}` | 200 `{"fingerprint":..,"revoked":bool}` |
//! | `GET /admin/v1/scopes?limit=&cursor=`  |                                        | 200 `{"scopes":[...],"next_cursor":..}`, one page |
//! | `GET /admin/v1/revocations?limit=&cursor=` |                          | 200 `{"revocations":[{"fingerprint","expires_at","source"}],"next_cursor":..}` (`admin/list.rs`) |
//! | `DELETE /admin/v1/revocations`         | `{"token"}`, `{"fingerprint"}` or `{"scope"}` | 200 `{"removed":bool}`; audited in the log |
//! | `/admin/v1/principals*`                | who holds a credential: see [`principals`] | |
//! | `POST /admin/v1/revocations/import`    | NDJSON, streamed: raw tokens or the shapes above, one per line (`admin/bulk.rs`) | 200 `{"lines","accepted","changed","expired","rejected","errors":[{"line","error"}]}` once every batch is durable |
//! | `GET /admin/v1/revocations/export`     |                                        | 200 streamed NDJSON of every live rule, importable (`admin/bulk.rs`) |
//!
//! Tokens travel only in bodies, never in URLs, and are never echoed back:
//! answers name the fingerprint. With `admin.token` set, every path but
//! `/healthz` and `/readyz` needs `Authorization: Bearer <admin.token>`.
//!
//! # Bounds (issue 10)
//!
//! - **Rate limit**: every path but `/healthz` and `/readyz` (probes must
//!   never be refused) takes a token from the caller's bucket
//!   (`[admin.rate_limit]`, per client IP, checked before the admin token so
//!   that guessing it is throttled too): over it, 429 with `Retry-After` and
//!   `{"error":"too_many_requests","error_description":"too many admin
//!   requests from this address; retry after the Retry-After delay"}`.
//! - **Recording** (`POST /admin/v1/revocations`): a token is at most 8 KiB,
//!   `scope.sub`/`org`/`provider` at most 256 bytes each (400 otherwise, as
//!   for the dialects), and a new scope rule for a subject that already has
//!   `revoke.max_scopes_per_subject` is refused: 429
//!   `{"error":"too_many_scopes",...}`, nothing recorded. Lookups and
//!   removals take any length, so that a rule recorded before these limits
//!   can still be found and removed.
//! - **Paginated listing**: `GET /admin/v1/scopes` answers one page of at
//!   most `limit` rules (default 100, 1 to 1000), in key order (`sub`, then
//!   `org`, then `provider`, absent before present), and `next_cursor`: an
//!   opaque string to pass as `cursor` for the next page, `null` on the last.
//!   The cursor names the last key of the page (keyset pagination), so a page
//!   walk never repeats or skips a rule that exists throughout it, whatever
//!   is added or removed meanwhile.

mod bulk;
mod list;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::credentials::Fingerprint;
use crate::dialect::{RevokeIntent, RevokeMode};
use crate::proxy::{full, Body, Gateway, ScopeAdmission};
use crate::store::{Applied, RevocationCommand, RevocationTarget, ScopeKey, StoreError};
use crate::verdict::json_response;

mod principals;

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

/// Default page size of `GET /admin/v1/scopes`.
const DEFAULT_PAGE: usize = 100;
/// Largest page size of `GET /admin/v1/scopes`.
const MAX_PAGE: usize = 1000;

/// Serves the admin API until `shutdown`.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let gw = gateway.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let gw = gw.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&gw, req, peer.ip()).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

fn error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    let body = serde_json::json!({"error": error, "error_description": description});
    json_response(status, Bytes::from(body.to_string())).map(full)
}

fn jti_off() -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "revocation by jti is off: set tokens.revoke_by_jti = true on every instance",
    )
}

fn family_on_revoke_only() -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "family goes with a revocation (POST /admin/v1/revocations)",
    )
}

fn ok(value: serde_json::Value) -> Response<Body> {
    json_response(StatusCode::OK, Bytes::from(value.to_string())).map(full)
}

/// What the revocation endpoints accept: exactly one of the three.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    token: Option<String>,
    fingerprint: Option<String>,
    scope: Option<ScopeKey>,
    jti: Option<String>,
    iss: Option<String>,
    /// With `token`, on a revocation: the token's whole family (grant).
    #[serde(default)]
    family: bool,
}

enum Named {
    Token(String),
    /// A token and every token of its family (`"family": true`).
    Grant(String),
    Fingerprint(Fingerprint),
    Scope(ScopeKey),
    /// A JWT by its `jti`, under one issuer or any.
    Jti {
        jti: String,
        iss: Option<String>,
    },
}

/// A 400's description.
type Refusal = &'static str;

fn parse_target(body: &[u8]) -> Result<Named, Refusal> {
    let bad = |d: Refusal| Err(d);
    let t: Target = match serde_json::from_slice(body) {
        Ok(t) => t,
        // serde's message can quote the input (a token): keep only its category.
        Err(e) if e.is_syntax() || e.is_eof() => return bad("the body is not valid JSON"),
        Err(_) => {
            return bad(
                r#"expected {"token":"..."}, {"fingerprint":"..."}, {"scope":{"sub":"...","org":"...","provider":"..."}} or {"jti":"...","iss":"..."}"#,
            )
        }
    };
    if t.iss.is_some() && t.jti.is_none() {
        return bad("iss goes with jti");
    }
    if t.family
        && (t.token.is_none() || t.fingerprint.is_some() || t.scope.is_some() || t.jti.is_some())
    {
        return bad("family goes with token");
    }
    if let Some(jti) = t.jti {
        if t.token.is_some() || t.fingerprint.is_some() || t.scope.is_some() {
            return bad("give exactly one of token, fingerprint, scope or jti");
        }
        if jti.is_empty() || t.iss.as_deref().is_some_and(str::is_empty) {
            return bad("jti (and iss, when given) must be non-empty");
        }
        if jti.len() > 1024 || t.iss.as_deref().is_some_and(|i| i.len() > 1024) {
            return bad("jti and iss are at most 1024 bytes");
        }
        return Ok(Named::Jti { jti, iss: t.iss });
    }
    match (t.token, t.fingerprint, t.scope) {
        (Some(tok), None, None) => {
            if tok.is_empty() || !tok.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                return bad("token must be non-empty visible ASCII");
            }
            Ok(if t.family {
                Named::Grant(tok)
            } else {
                Named::Token(tok)
            })
        }
        (None, Some(fp), None) => match Fingerprint::from_hex(&fp) {
            Some(fp) => Ok(Named::Fingerprint(fp)),
            None => bad("fingerprint must be 32 hex characters"),
        },
        (None, None, Some(scope)) => {
            let empty = |v: &Option<String>| v.as_deref().is_some_and(str::is_empty);
            if scope.sub.is_empty() || empty(&scope.org) || empty(&scope.provider) {
                return bad("scope.sub is required; scope.org and scope.provider, when given, must be non-empty");
            }
            Ok(Named::Scope(scope))
        }
        _ => bad("give exactly one of token, fingerprint, scope or jti"),
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, (StatusCode, Refusal)> {
    match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err((StatusCode::PAYLOAD_TOO_LARGE, "body over 64 KiB"))
        }
        Err(_) => Err((StatusCode::BAD_REQUEST, "the body could not be read")),
    }
}

/// Reads and parses a body naming a revocation target.
async fn target(body: Incoming) -> Result<Named, Box<Response<Body>>> {
    let bytes = read_body(body)
        .await
        .map_err(|(status, d)| Box::new(error(status, "invalid_request", d)))?;
    parse_target(&bytes).map_err(|d| Box::new(error(StatusCode::BAD_REQUEST, "invalid_request", d)))
}

fn authorized(gw: &Gateway, req: &Request<Incoming>) -> bool {
    let rt = gw.runtime();
    let Some(expected) = rt.settings().admin_token() else {
        return true;
    };
    let given = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme in any case (RFC 9110 §11.1), then spaces or tabs.
        .and_then(|v| {
            let (scheme, token) = v.split_once([' ', '\t'])?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim_matches([' ', '\t']))
        })
        .unwrap_or("");
    use subtle::ConstantTimeEq as _;
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// The revocation a `POST /admin/v1/revocations` may record: within the
/// dialects' length limits.
fn recordable(named: &Named) -> Result<(), Refusal> {
    use crate::dialect::{MAX_ID_LEN, MAX_TOKEN_BYTES};
    match named {
        Named::Token(t) | Named::Grant(t) if t.len() > MAX_TOKEN_BYTES => {
            Err("token is at most 8192 bytes")
        }
        Named::Scope(k)
            if k.sub.len() > MAX_ID_LEN
                || k.org.as_ref().is_some_and(|o| o.len() > MAX_ID_LEN)
                || k.provider.as_ref().is_some_and(|p| p.len() > MAX_ID_LEN) =>
        {
            Err("scope.sub, scope.org and scope.provider are at most 256 bytes each")
        }
        _ => Ok(()),
    }
}

/// An opaque cursor naming the last key of a page.
fn encode_cursor(key: &ScopeKey) -> String {
    use base64::Engine as _;
    let json = serde_json::to_vec(key).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_cursor(cursor: &str) -> Option<ScopeKey> {
    use base64::Engine as _;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    serde_json::from_slice(&json).ok()
}

/// A listing's `limit` (1 to [`MAX_PAGE`]); `None` is answered [`bad_limit`].
fn page_limit(value: &str) -> Option<usize> {
    value.parse().ok().filter(|n| (1..=MAX_PAGE).contains(n))
}

/// The 400 for a `limit` [`page_limit`] refused.
fn bad_limit() -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "limit must be an integer from 1 to 1000",
    )
}

/// `GET /admin/v1/scopes?limit=&cursor=`: one page, in key order.
fn scopes_page(gw: &Gateway, query: Option<&str>) -> Response<Body> {
    let mut limit = DEFAULT_PAGE;
    let mut after = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*name {
            "limit" => match page_limit(&value) {
                Some(n) => limit = n,
                None => return bad_limit(),
            },
            "cursor" => match decode_cursor(&value) {
                Some(key) => after = Some(key),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "cursor is not one this API gave out",
                    )
                }
            },
            _ => {}
        }
    }
    let all = gw.store().cache().scope_rules();
    let start = after.map_or(0, |key| all.partition_point(|r| r.key <= key));
    let page = &all[start..all.len().min(start.saturating_add(limit))];
    let next_cursor = match page.last() {
        Some(last) if start + page.len() < all.len() => Some(encode_cursor(&last.key)),
        _ => None,
    };
    #[derive(serde::Serialize)]
    struct Page<'a> {
        scopes: &'a [crate::store::ScopeRule],
        next_cursor: Option<String>,
    }
    let body = serde_json::to_vec(&Page {
        scopes: page,
        next_cursor,
    })
    .unwrap_or_default();
    json_response(StatusCode::OK, Bytes::from(body)).map(full)
}

fn rate_limited(limited: crate::ratelimit::Limited) -> Response<Body> {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        "too many admin requests from this address; retry after the Retry-After delay",
    );
    crate::proxy::retry_after(&mut r, limited);
    r
}

async fn handle(gw: &Gateway, req: Request<Incoming>, peer: std::net::IpAddr) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => return ok(serde_json::json!({"status": "ok"})),
        (&Method::GET, "/readyz") => {
            let s = gw.store().status();
            return if s.ready {
                ok(serde_json::json!({"status": "ready"}))
            } else {
                let body = serde_json::json!({"status": "not_ready"});
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Bytes::from(body.to_string()),
                )
                .map(full)
            };
        }
        _ => {}
    }
    if let Err(limited) = gw.runtime().admin_rate(peer) {
        return rate_limited(limited);
    }
    if !authorized(gw, &req) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "admin token required",
        );
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(r#"Bearer realm="revgate-admin""#),
        );
        return r;
    }
    if principals::owns(&path) {
        return principals::handle(gw, &method, &path, req.into_body()).await;
    }
    let rt = gw.runtime();
    match (&method, path.as_str()) {
        (&Method::GET, "/metrics") => {
            crate::metrics::store_gauges(gw.store().as_ref());
            let mut r = Response::new(full(crate::metrics::render()));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (&Method::GET, "/admin/v1/scopes") => scopes_page(gw, req.uri().query()),
        (&Method::GET, "/admin/v1/revocations") => list::tokens_page(gw, req.uri().query()).await,
        (&Method::POST, "/admin/v1/revocations/import") => bulk::import(gw, req.into_body()).await,
        (&Method::GET, "/admin/v1/revocations/export") => bulk::export(gw),
        (&Method::POST, "/admin/v1/revocations") => {
            let named = match target(req.into_body()).await {
                Err(r) => return *r,
                Ok(named) => named,
            };
            if let Err(d) = recordable(&named) {
                return error(StatusCode::BAD_REQUEST, "invalid_request", d);
            }
            let cmd = match named {
                Named::Token(t) => match rt.command(RevokeIntent::Token(t), &crate::proxy::Caller { headers: &Default::default(), query: None, store: gw.store().as_ref(), key_header: None }, RevokeMode::Terminate).await {
                    Some(c) => c,
                    None => return error(StatusCode::BAD_REQUEST, "invalid_request", "cannot revoke this token"),
                },
                Named::Grant(t) => {
                    let token = RevocationCommand::Token(rt.token_rule(
                        rt.key().token_fingerprint(&t),
                        crate::credentials::peek_jwt(&t, &rt.settings().attribute_sources.claims)
                            .and_then(|a| a.exp),
                    ));
                    let (cmd, reach) = rt
                        .widen(gw.store().as_ref(), token, Some(crate::store::family::Reach::Grant))
                        .await;
                    if reach.is_some() {
                        crate::metrics::family_revoked("admin");
                    }
                    cmd
                }
                Named::Fingerprint(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "revoke by token or scope; a fingerprint alone does not say when the token expires",
                    )
                }
                Named::Scope(key) => RevocationCommand::Scope(rt.scope_rule(key)),
                Named::Jti { jti, iss } => {
                    if !rt.settings().revoke_by_jti() {
                        return jti_off();
                    }
                    // Kept as long as a token without `exp` is: the JWT
                    // itself is not at hand to say when it expires.
                    RevocationCommand::Token(rt.token_rule(
                        rt.key().jti_fingerprint(iss.as_deref(), &jti),
                        None,
                    ))
                }
            };
            match rt.scope_admission(&cmd, gw.store().cache()) {
                ScopeAdmission::Admitted => {}
                // `recordable` refused these already.
                ScopeAdmission::SubjectTooLong => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "scope.sub, scope.org and scope.provider are at most 256 bytes each",
                    )
                }
                ScopeAdmission::CapReached => {
                    return error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_scopes",
                        "this subject already has revoke.max_scopes_per_subject scope rules",
                    )
                }
            }
            match gw.store().apply(cmd.clone()).await {
                Ok(applied) => {
                    crate::metrics::revocation_applied("admin", "api");
                    ok(serde_json::json!({"recorded": cmd, "changed": applied == Applied::Changed}))
                }
                Err(e @ StoreError::Unconfirmed(_)) => {
                    crate::metrics::revocation_apply_failed("admin");
                    tracing::warn!(error = %e, "admin revocation recorded but not confirmed");
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        "the revocation is recorded but not yet confirmed by every instance; retry",
                    )
                }
                Err(e) => {
                    crate::metrics::revocation_apply_failed("admin");
                    tracing::error!(error = %e, "admin revocation not recorded");
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        "the revocation could not be recorded; retry",
                    )
                }
            }
        }
        (&Method::POST, "/admin/v1/revocations/lookup") => {
            let fp =
                match target(req.into_body()).await {
                    Err(r) => return *r,
                    Ok(Named::Token(t)) => rt.key().token_fingerprint(&t),
                    Ok(Named::Fingerprint(fp)) => fp,
                    Ok(Named::Jti { jti, iss }) => rt.key().jti_fingerprint(iss.as_deref(), &jti),
                    Ok(Named::Scope(_)) => return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "look up a token or fingerprint; GET /admin/v1/scopes lists scope rules",
                    ),
                    Ok(Named::Grant(_)) => return family_on_revoke_only(),
                };
            match gw.store().is_token_revoked(&fp).await {
                Ok(revoked) => ok(serde_json::json!({"fingerprint": fp, "revoked": revoked})),
                Err(e) => {
                    tracing::warn!(error = %e, "admin lookup failed");
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        "the store could not be reached",
                    )
                }
            }
        }
        (&Method::DELETE, "/admin/v1/revocations") => {
            let target = match target(req.into_body()).await {
                Err(r) => return *r,
                Ok(Named::Token(t)) => RevocationTarget::Token(rt.key().token_fingerprint(&t)),
                Ok(Named::Fingerprint(fp)) => RevocationTarget::Token(fp),
                Ok(Named::Scope(key)) => RevocationTarget::Scope(key),
                Ok(Named::Jti { jti, iss }) => {
                    RevocationTarget::Token(rt.key().jti_fingerprint(iss.as_deref(), &jti))
                }
                Ok(Named::Grant(_)) => return family_on_revoke_only(),
            };
            match gw
                .store()
                .apply(RevocationCommand::Remove(target.clone()))
                .await
            {
                Ok(applied) => {
                    let removed = applied == Applied::Changed;
                    tracing::warn!(target: "revgate::audit", action = "unrevoke", what = ?target, removed, "revocation removed through the admin API");
                    ok(serde_json::json!({"removed": removed}))
                }
                Err(e) => {
                    tracing::error!(error = %e, "admin removal not recorded");
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        "the removal could not be recorded; retry",
                    )
                }
            }
        }
        (
            _,
            "/healthz"
            | "/readyz"
            | "/metrics"
            | "/admin/v1/scopes"
            | "/admin/v1/revocations"
            | "/admin/v1/revocations/lookup"
            | "/admin/v1/revocations/import"
            | "/admin/v1/revocations/export",
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "method not allowed",
        ),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
    }
}
