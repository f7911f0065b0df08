//! Token issuance seen in passing: the answers of token endpoints proxied
//! through revgate bind the tokens they issue to their holder
//! (`crate::store::principal`), so that a scope revocation covers opaque
//! access and refresh tokens too. Also where every binding is made
//! ([`Runtime::binding`], for the admin API as well).
//!
//! Endpoints: `POST /oauth/token` (RFC 6749 §5.1), Nylas
//! `POST /v3/connect/token`, OneLogin `POST /auth/oauth2/v2/token` (while
//! `identity.learn_from_issuance` is on, the default), and every
//! `[[identity.issuance]]`. The fast path hands these requests to hyper.
//!
//! What is read of a 2xx JSON answer (at most [`MAX_ANSWER`] bytes; a
//! larger one, or one that is not JSON, is relayed without learning):
//! `access_token` and `refresh_token` (each bound when present); the holder
//! from, in order, the `id_token`'s claims (verified when `[tokens.verify]`
//! is set; an `id_token` that fails verification names nobody), the
//! endpoint's subject fields (`sub`, `user_id`, `account_id` by default),
//! then the request's own verified caller; org and provider from the
//! `id_token`, the answer's fields (`org_id`, `provider`; Nylas answers
//! `provider`), or the endpoint's static values. An access token expires
//! `expires_in` seconds from now (plus `tokens.clock_skew`; without it, as a
//! token without `exp`), a refresh token after `refresh_token_expires_in`
//! or `tokens.max_lifetime`. The answer is relayed byte for byte, headers
//! unchanged, once read; the bindings are recorded before it is relayed, so
//! a client that revokes right after its token arrived finds it bound.
//! A binding that cannot be recorded is logged and counted; the answer is
//! still relayed (the token endpoint did issue the token).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Response;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use super::{Body, BoxError, Runtime};
use crate::config::IssuanceConfig;
use crate::credentials;
use crate::store::{now_unix, Binding, RevocationCommand, RevocationStore, ScopeKey};

/// Largest token-endpoint answer read for learning.
pub const MAX_ANSWER: usize = 64 * 1024;

/// How long the answer's body may take to arrive once its head has: past
/// it, what arrived is relayed with the rest, unlearned.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// What learning keeps of a token request: its headers and query, to name
/// its verified caller if the answer names no holder (copied because the
/// request itself goes upstream).
pub(crate) struct Asked {
    headers: http::HeaderMap,
    query: Option<String>,
}

impl Asked {
    /// The head of the request in `parts`.
    pub(crate) fn of(parts: &http::request::Parts) -> Asked {
        Asked {
            headers: parts.headers.clone(),
            query: parts.uri.query().map(str::to_owned),
        }
    }
}

/// One token endpoint, checked.
#[derive(Clone, Debug)]
pub(crate) struct Issuance {
    method: http::Method,
    path: String,
    sub_fields: Vec<String>,
    org_field: String,
    provider_field: String,
    provider: Option<String>,
    org: Option<String>,
}

impl Issuance {
    fn new(c: &IssuanceConfig) -> Option<Issuance> {
        Some(Issuance {
            method: http::Method::from_bytes(c.method.as_bytes()).ok()?,
            path: c.path.clone(),
            sub_fields: match &c.fields.sub {
                Some(f) => vec![f.clone()],
                None => vec!["sub".into(), "user_id".into(), "account_id".into()],
            },
            org_field: c.fields.org.clone().unwrap_or_else(|| "org_id".into()),
            provider_field: c
                .fields
                .provider
                .clone()
                .unwrap_or_else(|| "provider".into()),
            provider: c.provider.clone(),
            org: c.org.clone(),
        })
    }

    /// The endpoints `[identity]` names: the three built in (while
    /// learning is on) and the configured ones.
    pub(crate) fn all(identity: &crate::config::IdentityConfig) -> Vec<Issuance> {
        if !identity.learn_from_issuance {
            return Vec::new();
        }
        let builtin = ["/oauth/token", "/v3/connect/token", "/auth/oauth2/v2/token"].map(|path| {
            IssuanceConfig {
                path: path.into(),
                method: "POST".into(),
                fields: Default::default(),
                provider: None,
                org: None,
            }
        });
        identity
            .issuance
            .iter()
            .chain(builtin.iter())
            .filter_map(Issuance::new)
            .collect()
    }
}

impl Runtime {
    /// The token endpoint at this method and path, if it is one.
    pub(crate) fn issuance(&self, method: &str, path: &str) -> Option<&Issuance> {
        self.issuance
            .iter()
            .find(|i| i.path == path && i.method.as_str() == method)
    }

    /// A binding of `credential` to `who`, issued at `issued_at`, expiring
    /// at `expires_at` or, without one, when a revocation of the credential
    /// would be forgotten (its JWT `exp` plus `tokens.clock_skew`, else
    /// `tokens.max_lifetime` from now).
    pub fn binding(
        &self,
        credential: &str,
        who: ScopeKey,
        issued_at: u64,
        expires_at: Option<u64>,
    ) -> Binding {
        let fingerprint = self.checker.key.token_fingerprint(credential);
        let expires_at = expires_at.unwrap_or_else(|| {
            let exp = credentials::peek_jwt(credential, &self.settings.attribute_sources.claims)
                .and_then(|a| a.exp);
            self.token_rule(fingerprint, exp).expires_at
        });
        Binding {
            fingerprint,
            who,
            issued_at,
            expires_at,
        }
    }

    /// Reads a token endpoint's answer, binds what it issued, and relays it
    /// unchanged. `asked`: the request's head, whose verified caller is the
    /// holder of last resort (resolved only when the answer names none).
    pub(crate) async fn learn(
        &self,
        store: &dyn RevocationStore,
        endpoint: &Issuance,
        asked: Asked,
        resp: Response<Body>,
    ) -> Response<Body> {
        if !resp.status().is_success()
            || resp
                .body()
                .size_hint()
                .upper()
                .is_some_and(|n| n > MAX_ANSWER as u64)
        {
            return resp;
        }
        let (parts, mut body) = resp.into_parts();
        let mut buf = BytesMut::new();
        let whole = loop {
            match tokio::time::timeout(ANSWER_WAIT, body.frame()).await {
                Err(_) => break false,
                Ok(None) => break true,
                Ok(Some(Err(e))) => {
                    let body = Relayed {
                        prefix: Some(buf.freeze()),
                        rest: None,
                        error: Some(e),
                    };
                    return Response::from_parts(parts, BodyExt::boxed(body));
                }
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        buf.extend_from_slice(&data);
                        if buf.len() > MAX_ANSWER {
                            break false;
                        }
                    }
                    // Trailers on a token answer: relay as is, unlearned.
                    Err(_) => break false,
                },
            }
        };
        let bytes = buf.freeze();
        if whole {
            self.bind_issued(store, endpoint, asked, &bytes).await;
            return Response::from_parts(parts, super::full(bytes));
        }
        let body = Relayed {
            prefix: Some(bytes),
            rest: Some(body),
            error: None,
        };
        Response::from_parts(parts, BodyExt::boxed(body))
    }

    async fn bind_issued(
        &self,
        store: &dyn RevocationStore,
        endpoint: &Issuance,
        asked: Asked,
        answer: &[u8],
    ) {
        let Ok(serde_json::Value::Object(json)) = serde_json::from_slice(answer) else {
            return;
        };
        let text = |name: &str| match json.get(name) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let secs = |name: &str| json.get(name).and_then(serde_json::Value::as_u64);
        let names = &self.settings.attribute_sources.claims;
        let id = match json.get("id_token").and_then(|v| v.as_str()) {
            Some(id_token) => match &self.verifier {
                Some(v) => match v.verify(id_token).await {
                    Ok(claims) => Some(credentials::Attributes {
                        sub: claims.text(&names.sub),
                        org: claims.text(&names.org),
                        provider: claims.text(&names.provider),
                        ..Default::default()
                    }),
                    Err(_) => {
                        tracing::warn!("token endpoint's id_token failed verification; its tokens are not bound");
                        return;
                    }
                },
                None => credentials::peek_jwt(id_token, names),
            },
            None => None,
        }
        .unwrap_or_default();
        let sub = match id
            .sub
            .or_else(|| endpoint.sub_fields.iter().find_map(|f| text(f)))
        {
            Some(sub) => Some(sub),
            None => {
                let caller = super::Caller {
                    headers: &asked.headers,
                    query: asked.query.as_deref(),
                    store,
                    key_header: None,
                };
                self.verified_revoker(&caller).await
            }
        };
        let Some(sub) = sub.filter(|s| s.len() <= crate::dialect::MAX_ID_LEN) else {
            return;
        };
        let who = ScopeKey {
            sub,
            org: id
                .org
                .or_else(|| text(&endpoint.org_field))
                .or_else(|| endpoint.org.clone()),
            provider: endpoint
                .provider
                .clone()
                .or_else(|| text(&endpoint.provider_field))
                .or(id.provider),
        };
        let now = now_unix();
        let skew = self.settings.lifetimes().clock_skew.as_secs();
        let issued = [
            (
                "access_token",
                secs("expires_in").map(|s| now.saturating_add(s).saturating_add(skew)),
            ),
            (
                "refresh_token",
                secs("refresh_token_expires_in")
                    .map(|s| now.saturating_add(s).saturating_add(skew)),
            ),
        ];
        for (field, expires_at) in issued {
            let Some(token) = json.get(field).and_then(|v| v.as_str()) else {
                continue;
            };
            if token.is_empty() || token.len() > crate::dialect::MAX_TOKEN_BYTES {
                continue;
            }
            let b = self.binding(token, who.clone(), now, expires_at);
            match store.apply(RevocationCommand::Bind(b)).await {
                Ok(_) => crate::metrics::binding_recorded("issuance"),
                Err(e) => {
                    tracing::error!(error = %e, field, "issued token not bound");
                }
            }
        }
    }
}

/// A body that was partly read: what was read, then the rest (or the error
/// that ended it).
struct Relayed {
    prefix: Option<Bytes>,
    rest: Option<Body>,
    error: Option<BoxError>,
}

impl http_body::Body for Relayed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(p) = self.prefix.take().filter(|p| !p.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        if let Some(e) = self.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let mut hint = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint);
        // Upper first: `set_lower` may not pass the upper bound.
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + prefix);
        }
        hint.set_lower(hint.lower() + prefix);
        hint
    }
}
