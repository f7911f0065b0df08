//! The admin API's principals (`crate::store::principal`): record, look up
//! and forget who holds a credential.
//!
//! | method + path                        | body | answer |
//! |--------------------------------------|------|--------|
//! | `POST /admin/v1/principals`          | `{"credential":"..","sub":"u1","org":"42","provider":"github","issued_at":<unix>,"expires_at":<unix>}` | 200 the binding, with its `fingerprint` and whether a scope rule covers it (`revoked`), once durable |
//! | `POST /admin/v1/principals/lookup`   | `{"credential":".."}` or `{"fingerprint":".."}` | 200 the binding, or 404 |
//! | `DELETE /admin/v1/principals`        | `{"credential":".."}` or `{"fingerprint":".."}` | 200 `{"removed":bool}` |
//!
//! `org`, `provider`, `issued_at` (default: now) and `expires_at` are
//! optional. `"family": "<name>"` also puts the credential in the token
//! family of that name (`crate::store::family`; `"token_type":
//! "refresh_token"` says it is a refresh token, default `access_token`):
//! a family revocation (`{"token":..,"family":true}`) of any member then
//! revokes it, and a family already revoked revokes it at once. A binding's
//! view shows its family (`family`, `generation`) when it has one. Without `expires_at` the binding lasts as long as a revocation
//! of the credential would: its own `exp` (plus `tokens.clock_skew`) when it
//! is a JWT, else `tokens.max_lifetime`. The credential is never stored or
//! echoed: answers name its fingerprint. Bounds: a credential of at most
//! 8 KiB, `sub`/`org`/`provider` of at most 256 bytes (400 otherwise, in the
//! admin API's error shape), and the admin API's body limit and rate limit.

use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{error, ok, read_body};
use crate::credentials::Fingerprint;
use crate::proxy::{Body, Gateway};
use crate::store::{
    now_unix, Applied, Binding, Member, RevocationCommand, RevocationTarget, ScopeKey,
};

/// `POST /admin/v1/principals`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    credential: String,
    sub: String,
    #[serde(default)]
    org: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    issued_at: Option<u64>,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    family: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
}

/// Lookups and removals: a credential or a fingerprint.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Which {
    credential: Option<String>,
    fingerprint: Option<String>,
}

/// Whether this path is one of the principals API's.
pub(super) fn owns(path: &str) -> bool {
    matches!(path, "/admin/v1/principals" | "/admin/v1/principals/lookup")
}

/// Serves one principals API request (already authorized and rate-limited).
pub(super) async fn handle(
    gw: &Gateway,
    method: &Method,
    path: &str,
    body: Incoming,
) -> Response<Body> {
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err((status, d)) => return error(status, "invalid_request", d),
    };
    match (method, path) {
        (&Method::POST, "/admin/v1/principals") => record(gw, &bytes).await,
        (&Method::POST, "/admin/v1/principals/lookup") => match which(gw, &bytes) {
            Err(r) => *r,
            Ok(fp) => match gw.store().binding(&fp).await {
                Ok(Some(b)) => ok(view(gw, &b).await),
                Ok(None) => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no binding for this credential",
                ),
                Err(e) => unavailable(&e, "admin principal lookup failed"),
            },
        },
        (&Method::DELETE, "/admin/v1/principals") => match which(gw, &bytes) {
            Err(r) => *r,
            Ok(fp) => {
                let cmd = RevocationCommand::Remove(RevocationTarget::Binding(fp));
                match gw.store().apply(cmd).await {
                    Ok(applied) => {
                        let removed = applied == Applied::Changed;
                        tracing::warn!(target: "revgate::audit", action = "unbind", fingerprint = %fp.to_hex(), removed, "binding removed through the admin API");
                        ok(serde_json::json!({"removed": removed}))
                    }
                    Err(e) => unavailable(&e, "admin principal removal not recorded"),
                }
            }
        },
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "method not allowed",
        ),
    }
}

fn bad(description: &str) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn unavailable(e: &crate::store::StoreError, what: &str) -> Response<Body> {
    tracing::error!(error = %e, "{what}");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the store could not be reached; retry",
    )
}

/// A JSON body's parse error, without serde's message (it can quote the
/// input, a credential).
fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8], shape: &str) -> Result<T, Box<Response<Body>>> {
    serde_json::from_slice(bytes).map_err(|e| {
        Box::new(if e.is_syntax() || e.is_eof() {
            bad("the body is not valid JSON")
        } else {
            bad(shape)
        })
    })
}

fn credential_ok(c: &str) -> Result<(), Box<Response<Body>>> {
    if c.is_empty() || !c.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(Box::new(bad("credential must be non-empty visible ASCII")));
    }
    if c.len() > crate::dialect::MAX_TOKEN_BYTES {
        return Err(Box::new(bad("credential is at most 8192 bytes")));
    }
    Ok(())
}

fn which(gw: &Gateway, bytes: &[u8]) -> Result<Fingerprint, Box<Response<Body>>> {
    let w: Which = parse(
        bytes,
        r#"expected {"credential":"..."} or {"fingerprint":"..."}"#,
    )?;
    match (w.credential, w.fingerprint) {
        (Some(c), None) => {
            credential_ok(&c)?;
            Ok(gw.runtime().key().token_fingerprint(&c))
        }
        (None, Some(hex)) => Fingerprint::from_hex(&hex)
            .ok_or_else(|| Box::new(bad("fingerprint must be 32 hex characters"))),
        _ => Err(Box::new(bad(
            "give exactly one of credential or fingerprint",
        ))),
    }
}

async fn record(gw: &Gateway, bytes: &[u8]) -> Response<Body> {
    let r: Record = match parse(
        bytes,
        r#"expected {"credential":"...","sub":"...","org":"...","provider":"...","issued_at":<unix>,"expires_at":<unix>}"#,
    ) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    if let Err(resp) = credential_ok(&r.credential) {
        return *resp;
    }
    let long = |v: &str| v.len() > crate::dialect::MAX_ID_LEN;
    let empty = |v: &Option<String>| v.as_deref().is_some_and(str::is_empty);
    if r.sub.is_empty() || empty(&r.org) || empty(&r.provider) {
        return bad("sub is required; org and provider, when given, must be non-empty");
    }
    if long(&r.sub) || r.org.as_deref().is_some_and(long) || r.provider.as_deref().is_some_and(long)
    {
        return bad("sub, org and provider are at most 256 bytes each");
    }
    if empty(&r.family) || r.family.as_deref().is_some_and(long) {
        return bad("family, when given, is 1 to 256 bytes");
    }
    let refresh = match r.token_type.as_deref() {
        None | Some("access_token") => false,
        Some("refresh_token") => true,
        Some(_) => return bad("token_type is access_token or refresh_token"),
    };
    if r.token_type.is_some() && r.family.is_none() {
        return bad("token_type goes with family");
    }
    let rt = gw.runtime();
    let now = now_unix();
    let binding = rt.binding(
        &r.credential,
        ScopeKey {
            sub: r.sub,
            org: r.org,
            provider: r.provider,
        },
        r.issued_at.unwrap_or(now),
        r.expires_at,
    );
    if binding.expires_at <= now {
        return bad("expires_at is in the past");
    }
    if binding.issued_at > binding.expires_at {
        return bad("issued_at is after expires_at");
    }
    let member = r.family.as_deref().map(|name| Member {
        fingerprint: binding.fingerprint,
        family: rt.key().family_fingerprint(None, name),
        generation: 0,
        refresh,
        expires_at: binding.expires_at,
        superseded_at: 0,
    });
    let mut applied = gw
        .store()
        .apply(RevocationCommand::Bind(binding.clone()))
        .await;
    if let (Ok(bound), Some(m)) = (&applied, member) {
        applied = gw
            .store()
            .apply(RevocationCommand::Join(m))
            .await
            .map(|joined| {
                if joined == Applied::Changed {
                    joined
                } else {
                    *bound
                }
            });
    }
    match applied {
        Ok(applied) => {
            crate::metrics::binding_recorded("admin");
            let mut v = view(gw, &binding).await;
            v["changed"] = serde_json::Value::Bool(applied == Applied::Changed);
            ok(v)
        }
        Err(e) => unavailable(&e, "admin principal not recorded"),
    }
}

/// A binding as the API shows it, with whether a rule revokes its
/// credential now.
async fn view(gw: &Gateway, b: &Binding) -> serde_json::Value {
    let revoked = gw
        .store()
        .is_token_revoked(&b.fingerprint)
        .await
        .unwrap_or(false);
    let mut v = serde_json::to_value(b).unwrap_or_default();
    v["revoked"] = serde_json::Value::Bool(revoked);
    if let Ok(Some(m)) = gw.store().member(&b.fingerprint).await {
        v["family"] = serde_json::Value::String(m.family.to_hex());
        v["generation"] = m.generation.into();
    }
    v
}
