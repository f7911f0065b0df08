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
//! is set; an `id_token` that fails verification names nobody; its
//! unknown `kid` is fetched for after one second, not
//! `min_refresh_interval`: `Verifier::verify_issued`), the
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
//!
//! **Families** (`crate::store::family`). The request is read first (at
//! most [`MAX_REQUEST`] bytes; a larger one is refused, 413, since its
//! refresh token could not be checked), and every `refresh_token` it
//! carries, as a form or JSON parameter or in the query string (both
//! body parsers, whatever the `Content-Type` says, so no spelling hides
//! one; more than four distinct ones are refused as `invalid_grant`
//! unjudged), is judged like a credential: revoked (its own rule, a rule
//! derived from its binding or its family) → RFC 6749 §5.2 `400 invalid_grant`, never forwarded. A
//! refresh token already exchanged for a *different* refresh token and
//! presented again more than `families.reuse_grace` later is reuse
//! (RFC 9700 §4.14.2): its whole family is revoked (one family rule, every
//! instance) and the request answered `invalid_grant` (with
//! `families.reuse_detection`, the default). A server that does not rotate
//! (answers with the same refresh token, or none) never trips it. Two
//! refreshes racing with one refresh token both pass: the second to answer
//! supersedes it again, and its next presentation trips.
//!
//! What the answer issued joins a family: the presented refresh token's
//! (one generation later; a refresh token revgate never saw issued starts
//! a family of its own, as generation 0), else, at a first issuance, the
//! session's (`sid` of the `id_token`, under its `iss`: what back-channel
//! logout names) or a new one named by the issued refresh token (else the
//! access token). Memberships are recorded whether or not a holder is
//! known, before the answer is relayed. A token that joins a family
//! already revoked is revoked as it joins.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Response;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use super::{Body, BoxError, Runtime};
use crate::config::IssuanceConfig;
use crate::credentials::{self, Fingerprint};
use crate::refusal::Refusal;
use crate::store::family::Reach;
use crate::store::{now_unix, Binding, Member, RevocationCommand, RevocationStore, ScopeKey};
use crate::verdict::Verdict;

/// Largest token-endpoint answer read for learning.
pub const MAX_ANSWER: usize = 64 * 1024;

/// Largest token-endpoint request read (its refresh token is checked).
pub const MAX_REQUEST: usize = 64 * 1024;

/// Most distinct `refresh_token` values one token request may carry.
const MAX_PRESENTED: usize = 4;

/// How long the answer's body may take to arrive once its head has: past
/// it, what arrived is relayed with the rest, unlearned.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// What learning keeps of a token request: its headers and query, to name
/// its verified caller if the answer names no holder (copied because the
/// request itself goes upstream), and the refresh token it presented.
pub(crate) struct Asked {
    headers: http::HeaderMap,
    query: Option<String>,
    presented: Option<Presented>,
}

/// The one refresh token a token request presented (with its family
/// membership, if it has one); a request carrying several distinct ones
/// presents none for learning (each was still judged).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Presented {
    fingerprint: Fingerprint,
    member: Option<Member>,
}

impl Asked {
    /// The head of the request in `parts`, and what it presented.
    pub(crate) fn of(parts: &http::request::Parts, presented: Option<Presented>) -> Asked {
        Asked {
            headers: parts.headers.clone(),
            query: parts.uri.query().map(str::to_owned),
            presented,
        }
    }
}

/// Every `refresh_token` parameter of a token request's body: form pairs
/// and JSON members alike (duplicates kept), as UTF-8.
fn refresh_tokens(body: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = crate::dialect::form_values(body, "refresh_token")
        .into_iter()
        .filter_map(|v| String::from_utf8(v.bytes).ok())
        .collect();
    if let Ok(Pairs(pairs)) = serde_json::from_slice::<Pairs>(body) {
        out.extend(pairs.into_iter().filter_map(|(k, v)| match v {
            serde_json::Value::String(s) if k == "refresh_token" => Some(s),
            _ => None,
        }));
    }
    out.retain(|t| !t.is_empty());
    out
}

/// A JSON object's members in order, duplicates kept (a parser that keeps
/// the last would let a first, revoked, one through to one that keeps the
/// first).
struct Pairs(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Pairs, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = map.next_entry::<String, serde_json::Value>()? {
                    out.push(pair);
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(Visitor)
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
        let expires_at = expires_at.unwrap_or_else(|| self.lifetime_of(credential, fingerprint));
        Binding {
            fingerprint,
            who,
            issued_at,
            expires_at,
        }
    }

    /// Judges the refresh tokens a token request presents (see the module
    /// doc): a revoked or reused one refuses the request (`invalid_grant`);
    /// reuse revokes its family first.
    pub(crate) async fn token_request(
        &self,
        store: &dyn RevocationStore,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Option<Presented>, Refusal> {
        // Some servers read the token request's parameters from the query
        // string too: a refresh token there is judged the same.
        let mut presented = refresh_tokens(body);
        presented.extend(
            crate::dialect::form_values(query.unwrap_or_default().as_bytes(), "refresh_token")
                .into_iter()
                .filter_map(|v| String::from_utf8(v.bytes).ok())
                .filter(|t| !t.is_empty()),
        );
        let mut fps: Vec<Fingerprint> = presented
            .iter()
            .filter(|t| t.len() <= crate::dialect::MAX_TOKEN_BYTES)
            .map(|t| self.checker.key.token_fingerprint(t))
            .collect();
        fps.sort_unstable();
        fps.dedup();
        // RFC 6749 §3.2 names one; each is judged (a store lookup apiece),
        // so a body padded with thousands is refused, never judged.
        if fps.len() > MAX_PRESENTED {
            crate::metrics::refresh_refused("revoked");
            return Err(Refusal::InvalidGrant);
        }
        for &fp in &fps {
            match crate::verdict::judge_fingerprint(fp, store).await {
                Verdict::Pass(_) => {}
                Verdict::Revoked(_) => {
                    crate::metrics::refresh_refused("revoked");
                    return Err(Refusal::InvalidGrant);
                }
                Verdict::Fenced => return Err(Refusal::Fenced),
                _ => return Err(Refusal::Unavailable),
            }
        }
        let families = self.settings.families();
        let now = now_unix();
        let mut presented = None;
        for &fingerprint in &fps {
            let member = store.member(&fingerprint).await.map_err(|e| {
                tracing::warn!(error = %e, "refresh token's family could not be read");
                Refusal::Unavailable
            })?;
            if let Some(m) = member.filter(|m| {
                families.reuse_detection
                    && m.superseded_at != 0
                    && now
                        >= m.superseded_at
                            .saturating_add(families.reuse_grace.as_secs())
            }) {
                crate::metrics::refresh_refused("reused");
                crate::metrics::family_revoked("reuse");
                tracing::warn!(
                    family = %m.family.short(),
                    generation = m.generation,
                    "superseded refresh token presented again: its family is revoked"
                );
                let token = crate::store::TokenRule {
                    fingerprint: m.fingerprint,
                    expires_at: m.expires_at,
                };
                let grant = self.family_of(token, Some(Reach::Grant)).resolve(Some(&m));
                if let Err(e) = store.apply(grant).await {
                    tracing::error!(error = %e, family = %m.family.short(), "reused refresh token's family not revoked");
                }
                return Err(Refusal::InvalidGrant);
            }
            if fps.len() == 1 {
                presented = Some(Presented {
                    fingerprint,
                    member,
                });
            }
        }
        Ok(presented)
    }

    /// When a credential with no stated expiry is taken to expire: its JWT
    /// `exp` plus `tokens.clock_skew`, else `tokens.max_lifetime` from now.
    fn lifetime_of(&self, credential: &str, fingerprint: Fingerprint) -> u64 {
        let exp = credentials::peek_jwt(credential, &self.settings.attribute_sources.claims)
            .and_then(|a| a.exp);
        self.token_rule(fingerprint, exp).expires_at
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
        let now = now_unix();
        let skew = self.settings.lifetimes().clock_skew.as_secs();
        let expiry = |name: &str| secs(name).map(|s| now.saturating_add(s).saturating_add(skew));
        let issued: Vec<(&str, bool, Option<u64>)> = [
            ("access_token", false, expiry("expires_in")),
            ("refresh_token", true, expiry("refresh_token_expires_in")),
        ]
        .into_iter()
        .filter_map(|(field, refresh, expires_at)| {
            let token = json.get(field).and_then(|v| v.as_str())?;
            (!token.is_empty() && token.len() <= crate::dialect::MAX_TOKEN_BYTES)
                .then_some((token, refresh, expires_at))
        })
        .collect();
        // The id_token's claims: `None` when it failed verification (it
        // names nobody, and no session).
        let id_claims = match json.get("id_token").and_then(|v| v.as_str()) {
            Some(id_token) => match &self.verifier {
                Some(v) => match v.verify_issued(id_token).await {
                    Ok(claims) => Some(Claims::Verified(claims)),
                    Err(_) => {
                        tracing::warn!("token endpoint's id_token failed verification; its tokens are not bound");
                        None
                    }
                },
                None => Some(Claims::Peeked(
                    credentials::peek_claims(id_token).unwrap_or_default(),
                )),
            },
            None => Some(Claims::Peeked(Default::default())),
        };
        // The session the tokens belong to: the id_token's `sid`, else the
        // answer's `session_state` (Keycloak), else the access token's own
        // `sid` / `session_state` claim; under the issuer that says so.
        let access_claims = issued
            .iter()
            .find(|(_, refresh, _)| !refresh)
            .and_then(|(t, _, _)| credentials::peek_claims(t))
            .map(Claims::Peeked);
        let session = id_claims
            .as_ref()
            .and_then(|c| Some((c.text("iss"), c.text("sid")?)))
            .or_else(|| {
                let iss = access_claims.as_ref().and_then(|c| c.text("iss"));
                let state = text("session_state").or_else(|| {
                    let c = access_claims.as_ref()?;
                    c.text("sid").or_else(|| c.text("session_state"))
                })?;
                Some((iss, state))
            })
            .filter(|(_, sid)| sid.len() <= crate::dialect::MAX_ID_LEN);
        let joins = self.family_joins(&issued, asked.presented, session, now);
        let who = async {
            let id_claims = id_claims?;
            let id = credentials::Attributes {
                sub: id_claims.text(&names.sub),
                org: id_claims.text(&names.org),
                provider: id_claims.text(&names.provider),
                ..Default::default()
            };
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
            let sub = sub.filter(|s| s.len() <= crate::dialect::MAX_ID_LEN)?;
            Some(ScopeKey {
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
            })
        }
        .await;
        // Recorded at once, so the journal's group commit (or Redis's
        // pipeline) takes them together: one fsync for an answer, not one
        // per token.
        let mut cmds: Vec<RevocationCommand> =
            joins.into_iter().map(RevocationCommand::Join).collect();
        if let Some(who) = &who {
            for &(token, _, expires_at) in &issued {
                let b = self.binding(token, who.clone(), now, expires_at);
                cmds.push(RevocationCommand::Bind(b));
            }
        }
        let done =
            futures_util::future::join_all(cmds.iter().map(|c| store.apply(c.clone()))).await;
        for (cmd, result) in cmds.iter().zip(done) {
            match (cmd, result) {
                (RevocationCommand::Bind(_), Ok(_)) => crate::metrics::binding_recorded("issuance"),
                (RevocationCommand::Bind(_), Err(e)) => {
                    tracing::error!(error = %e, "issued token not bound");
                }
                (RevocationCommand::Join(m), Err(e)) => {
                    tracing::error!(error = %e, family = %m.family.short(), "issued token's family not recorded");
                }
                _ => {}
            }
        }
    }

    /// The family memberships of what a token endpoint issued (see the
    /// module doc): `issued` is (token, is a refresh token, expiry).
    fn family_joins(
        &self,
        issued: &[(&str, bool, Option<u64>)],
        presented: Option<Presented>,
        session: Option<(Option<String>, String)>,
        now: u64,
    ) -> Vec<Member> {
        let key = &self.checker.key;
        let mut joins = Vec::with_capacity(3);
        let session = session.map(|(iss, sid)| key.family_fingerprint(iss.as_deref(), &sid));
        let (family, generation) = match presented {
            Some(Presented {
                member: Some(m), ..
            }) => (m.family, m.generation.saturating_add(1)),
            Some(Presented {
                fingerprint,
                member: None,
            }) => {
                // A refresh token revgate never saw issued: generation 0 of
                // the session's family, or of one named by it.
                let family = session.unwrap_or(fingerprint);
                joins.push(Member {
                    fingerprint,
                    family,
                    generation: 0,
                    refresh: true,
                    expires_at: self.token_rule(fingerprint, None).expires_at,
                    superseded_at: 0,
                });
                (family, 1)
            }
            None => {
                let first = issued
                    .iter()
                    .find(|(_, refresh, _)| *refresh)
                    .or(issued.first());
                match session.or_else(|| first.map(|i| key.token_fingerprint(i.0))) {
                    Some(named) => (named, 0),
                    None => return Vec::new(),
                }
            }
        };
        let mut rotated = false;
        for &(token, refresh, exp) in issued {
            let fingerprint = key.token_fingerprint(token);
            if refresh && presented.is_some_and(|p| p.fingerprint != fingerprint) {
                rotated = true;
            }
            if presented.is_some_and(|p| p.fingerprint == fingerprint) {
                // The same refresh token again: the server does not rotate.
                continue;
            }
            joins.push(Member {
                fingerprint,
                family,
                generation,
                refresh,
                expires_at: exp.unwrap_or_else(|| self.lifetime_of(token, fingerprint)),
                superseded_at: 0,
            });
        }
        if let (true, Some(p)) = (rotated, presented) {
            let old = joins
                .iter_mut()
                .find(|m| m.fingerprint == p.fingerprint)
                .map(|m| *m)
                .or(p.member);
            if let Some(old) = old {
                joins.retain(|m| m.fingerprint != p.fingerprint);
                joins.push(Member {
                    superseded_at: now,
                    ..old
                });
            }
        }
        joins
    }
}

/// An `id_token`'s claims: verified, or peeked (no verifier configured).
enum Claims {
    Verified(crate::identity::VerifiedClaims),
    Peeked(serde_json::Map<String, serde_json::Value>),
}

impl Claims {
    fn text(&self, name: &str) -> Option<String> {
        match self {
            Claims::Verified(c) => c.text(name),
            Claims::Peeked(c) => match c.get(name) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            },
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
