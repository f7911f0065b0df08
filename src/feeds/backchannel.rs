//! OIDC Back-Channel Logout 1.0 (§2.4-2.8): `POST` form `logout_token=<JWT>`
//! from the OP, verified, then its `sub` revoked.
//!
//! Beyond the common checks (`set.rs`: signature, `iss`, `aud`, `iat`, `exp`
//! — required here —, `jti`, `events`): the `events` member
//! `http://schemas.openid.net/event/backchannel-logout` (a JSON object), no
//! `nonce` (so an ID token can never be replayed as a logout token), a
//! `sub` or a `sid`, and a `jti` not applied before.
//!
//! | what | answer |
//! |---|---|
//! | logged out | `200`, empty, `Cache-Control: no-store` |
//! | any check failed | `400 {"error":"invalid_request","error_description":...}` |
//! | not `POST` | `405` (same body shape), `Allow: POST` |
//! | body over `revoke.max_body_bytes` | `413` (same body shape) |
//! | rate limited | `429 {"error":"too_many_requests",...}`, `Retry-After` |
//! | keys not loaded, store failed | `503 {"error":"temporarily_unavailable",...}`, `Retry-After: 1` |
//!
//! Every answer carries `Cache-Control: no-store`. Nothing is revoked for a
//! token that fails any check. `sub` -> a scope rule for the subject,
//! covering credentials issued at or before the token's `iat`; `sid` -> that
//! session's family (`feeds::session_revocation`).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use serde_json::{json, Value};

use super::set::{self, Rejection};
use super::{Delivery, Effect, FeedKind};
use crate::proxy::{Body, Gateway, Runtime};
use crate::store::ScopeKey;

/// The logout event's member of `events`.
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

pub(super) async fn handle(
    gw: &Gateway,
    rt: &Runtime,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response<Body>, Rejection> {
    let Some(feed) = rt.feeds.backchannel.as_ref() else {
        return Err(Rejection::Unavailable("feed not configured"));
    };
    if !super::media_type_is(headers, "application/x-www-form-urlencoded") {
        return Err(Rejection::InvalidRequest(
            "content type must be application/x-www-form-urlencoded",
        ));
    }
    let mut tokens = form_urlencoded::parse(body)
        .filter(|(k, _)| k == "logout_token")
        .map(|(_, v)| v);
    let token = match (tokens.next(), tokens.next()) {
        (Some(t), None) if !t.is_empty() => t,
        (Some(_), Some(_)) => return Err(Rejection::InvalidRequest("logout_token given twice")),
        _ => return Err(Rejection::InvalidRequest("logout_token is required")),
    };
    let verified = set::verify(&feed.verifier, &token).await?;
    let effects = effects(&verified)?;
    let leeway = feed.settings.verify.policy.leeway;
    match super::apply(
        gw,
        rt,
        FeedKind::BackchannelLogout,
        Delivery::Push,
        &verified,
        effects,
        leeway,
    )
    .await?
    {
        super::Applied::Done => Ok(logged_out()),
        super::Applied::Duplicate => Err(Rejection::Replayed),
    }
}

/// The logout token's own rules, then what it revokes.
pub(crate) fn effects(t: &set::Verified) -> Result<Vec<Effect>, Rejection> {
    match t.events().get(LOGOUT_EVENT) {
        Some(Value::Object(_)) => {}
        Some(_) => {
            return Err(Rejection::InvalidRequest(
                "the backchannel-logout event must be a JSON object",
            ))
        }
        None => {
            return Err(Rejection::InvalidRequest(
                "events has no backchannel-logout member",
            ))
        }
    }
    if t.claims.contains_key("nonce") {
        return Err(Rejection::InvalidRequest(
            "a logout token must not contain nonce",
        ));
    }
    let sub = t.text("sub");
    let sid = t.text("sid");
    if sub.is_none() && sid.is_none() {
        return Err(Rejection::InvalidRequest("sub or sid is required"));
    }
    if [&sub, &sid].iter().any(|v| {
        v.as_ref()
            .is_some_and(|v| v.len() > crate::dialect::MAX_ID_LEN)
    }) {
        return Err(Rejection::InvalidRequest(
            "sub or sid longer than 256 bytes",
        ));
    }
    let mut effects = Vec::new();
    if let Some(sub) = sub {
        effects.push(Effect::Revoke {
            event: "backchannel-logout",
            key: ScopeKey {
                sub,
                org: None,
                provider: None,
            },
            at: t.iat,
        });
    }
    if let Some(sid) = sid {
        effects.push(Effect::Session {
            event: "backchannel-logout",
            sid,
            at: t.iat,
        });
    }
    Ok(effects)
}

fn logged_out() -> Response<Body> {
    let mut resp = Response::new(crate::proxy::full(Bytes::new()));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The answer to a refused logout token (see the module doc).
pub(crate) fn reject(r: Rejection) -> Response<Body> {
    let error = match r {
        Rejection::Unavailable(_) => "temporarily_unavailable",
        _ => "invalid_request",
    };
    super::finish(super::json(
        super::status(&r),
        &json!({"error": error, "error_description": r.description()}),
    ))
}

pub(super) fn too_many_requests() -> Response<Body> {
    super::json(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({"error": "too_many_requests", "error_description": "too many requests; retry later"}),
    )
}
