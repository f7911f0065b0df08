//! Revoke endpoints: a dialect's call read, judged (forwarding), turned from
//! the vendor's intent into a store command ([`Runtime::command`], also what
//! the admin API uses), bounded ([`Runtime::scope_admission`]) and applied —
//! at once in terminate mode, after the upstream's 2xx in forward mode.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::config::Route;
use crate::credentials::{self};
use crate::dialect::{self, DialectResponse, RevokeCall, RevokeIntent, RevokeMode};
use crate::refusal::Refusal;
use crate::store::family::{FamilyOf, Reach};
use crate::store::{
    now_unix, LocalCache, RevocationCommand, ScopeKey, ScopeRule, StoreError, TokenRule,
};

/// Who makes a revoke call: its request head, and where its credential's
/// binding is looked up.
pub struct Caller<'a> {
    /// The call's headers.
    pub headers: &'a HeaderMap,
    /// The call's query string.
    pub query: Option<&'a str>,
    /// The store holding bindings.
    pub store: &'a dyn crate::store::RevocationStore,
    /// The vendor's own API-key header, read when the call carries no
    /// credential where `tokens` looks (LangSmith's `x-api-key`).
    pub key_header: Option<&'static str>,
}

impl<'a> Caller<'a> {
    /// The caller of a request with these parts.
    pub fn of(
        parts: &'a http::request::Parts,
        store: &'a dyn crate::store::RevocationStore,
        key_header: Option<&'static str>,
    ) -> Self {
        Caller {
            headers: &parts.headers,
            query: parts.uri.query(),
            store,
            key_header,
        }
    }

    /// The caller's own credential: where `tokens` says credentials are,
    /// else the dialect's API-key header.
    fn credential(&self, checker: &crate::verdict::Checker) -> Option<Cow<'a, str>> {
        if let Ok(Some(c)) = checker.credential(self.headers, self.query, None) {
            return Some(c.into_token());
        }
        let v = self.headers.get(self.key_header?)?.to_str().ok()?.trim();
        (!v.is_empty()).then_some(Cow::Borrowed(v))
    }
}

impl Runtime {
    /// Turns a dialect's intent into a store command; `None` when a scope
    /// revocation's current user cannot be identified.
    ///
    /// Who "the current user" of a scope revoke is depends on `mode` (see
    /// `identity`): in **terminate** mode only a JWT the verifier accepted or
    /// the trusted identity headers name it, so a forged unsigned token
    /// cannot revoke someone else's tokens; in **forward** mode the
    /// upstream's 2xx authenticates the caller (the command is applied only
    /// then), so the peeked claims may name it. In both modes an
    /// introspection that says the caller's credential is active names it
    /// too (`[identity.introspection]`). Token revokes do not depend on the
    /// mode.
    pub async fn command(
        &self,
        intent: RevokeIntent,
        caller: &Caller<'_>,
        mode: RevokeMode,
    ) -> Option<RevocationCommand> {
        match intent {
            RevokeIntent::Token(raw) => {
                let fingerprint = self.checker.key.token_fingerprint(&raw);
                let exp = credentials::peek_jwt(&raw, &self.settings.attribute_sources.claims)
                    .and_then(|a| a.exp);
                Some(RevocationCommand::Token(self.token_rule(fingerprint, exp)))
            }
            RevokeIntent::Scope { org, provider } => {
                if self.caller_is_revoked(caller).await {
                    return None;
                }
                let sub = match mode {
                    RevokeMode::Forward => match self.peeked_revoker(caller).await {
                        Some(sub) => Some(sub),
                        None => self.introspected_revoker(caller).await,
                    },
                    RevokeMode::Terminate => self.verified_revoker(caller).await,
                }?;
                Some(RevocationCommand::Scope(self.scope_rule(ScopeKey {
                    sub,
                    org,
                    provider: Some(provider),
                })))
            }
        }
    }

    /// Whether the caller's own credential is refused as a request's would
    /// be (revoked, or the store cannot say): such a credential names no
    /// one, so a stolen key its holder revoked cannot go on revoking their
    /// other tokens. A credential where `tokens` looks is judged whole (its
    /// token, `jti` and scope rules); one in the dialect's API-key header
    /// by its token rule.
    async fn caller_is_revoked(&self, caller: &Caller<'_>) -> bool {
        match self.checker.credential(caller.headers, caller.query, None) {
            Ok(Some(_)) => {
                let verdict = self
                    .checker
                    .judge(caller.headers, caller.query, None, caller.store)
                    .await;
                !matches!(verdict, crate::verdict::Verdict::Pass(_))
            }
            _ => match caller.credential(&self.checker) {
                Some(key) => {
                    let fp = self.checker.key.token_fingerprint(&key);
                    caller.store.cache().may_contain(&fp)
                        && caller.store.is_token_revoked(&fp).await.unwrap_or(true)
                }
                None => false,
            },
        }
    }

    /// A token rule for `fingerprint`, kept until the token's own expiry
    /// (plus `tokens.clock_skew`) or, without one, `tokens.max_lifetime`.
    pub fn token_rule(
        &self,
        fingerprint: crate::credentials::Fingerprint,
        exp: Option<u64>,
    ) -> TokenRule {
        let tokens = self.settings.lifetimes();
        let expires_at = exp
            .map(|exp| exp.saturating_add(tokens.clock_skew.as_secs()))
            .unwrap_or_else(|| now_unix().saturating_add(tokens.max_lifetime.as_secs()));
        TokenRule {
            fingerprint,
            expires_at,
        }
    }

    /// The caller's subject from its credential's peeked claims, else its
    /// binding, else the identity headers: only for forward mode, where the
    /// upstream vouches.
    async fn peeked_revoker(&self, caller: &Caller<'_>) -> Option<String> {
        let sources = &self.settings.attribute_sources;
        let token = caller.credential(&self.checker);
        let mut attrs = match token.as_deref() {
            Some(t) => credentials::attributes(t, caller.headers, sources),
            None => Default::default(),
        };
        if attrs.sub.is_none() {
            if let Some(b) = self.bound_caller(caller, token.as_deref()).await {
                return Some(b);
            }
        }
        credentials::identity_fill(&mut attrs, caller.headers, &sources.identity_headers);
        attrs.sub
    }

    /// The caller's subject from a verified source only: its credential's
    /// JWT if the verifier accepts it, else the credential's binding
    /// (recorded by an operator or learned from its issuance), else its
    /// introspection, else the trusted identity headers.
    pub(crate) async fn verified_revoker(&self, caller: &Caller<'_>) -> Option<String> {
        let sources = &self.settings.attribute_sources;
        let token = caller.credential(&self.checker);
        if let (Some(verifier), Some(token)) = (&self.verifier, token.as_deref()) {
            if let Ok(claims) = verifier.verify(token).await {
                match claims.text(&sources.claims.sub) {
                    Some(sub) => return Some(sub),
                    None => tracing::warn!(
                        kid = ?claims.kid(),
                        claim = %sources.claims.sub,
                        "caller's JWT verified but names no subject"
                    ),
                }
            }
        }
        if let Some(sub) = self.bound_caller(caller, token.as_deref()).await {
            return Some(sub);
        }
        if let Some(sub) = self.introspected_revoker(caller).await {
            return Some(sub);
        }
        let mut attrs = credentials::Attributes::default();
        credentials::identity_fill(&mut attrs, caller.headers, &sources.identity_headers);
        attrs.sub
    }

    /// The subject a caller's credential is bound to, if any. A store that
    /// cannot answer names nobody (the dialect's 401: retry).
    async fn bound_caller(&self, caller: &Caller<'_>, token: Option<&str>) -> Option<String> {
        let fp = self.checker.key.token_fingerprint(token?);
        match caller.store.binding(&fp).await {
            Ok(b) => b.map(|b| b.who.sub),
            Err(e) => {
                tracing::warn!(error = %e, "caller's binding could not be read");
                None
            }
        }
    }

    /// The caller's subject as the authorization server names it when it
    /// introspects the caller's own credential as active
    /// (`[identity.introspection]`; see `identity::introspection`).
    async fn introspected_revoker(&self, caller: &Caller<'_>) -> Option<String> {
        let introspector = self.checker.introspection.as_ref()?;
        let token = caller.credential(&self.checker)?;
        let fp = self.checker.key.token_fingerprint(&token);
        introspector.caller_subject(fp, &token).await
    }

    /// A scope rule revoking every token of `key` issued up to now, kept
    /// until every such token has expired.
    pub fn scope_rule(&self, key: ScopeKey) -> ScopeRule {
        let (revoked_at, expires_at) = self.rule_times();
        ScopeRule {
            key,
            revoked_at,
            expires_at,
        }
    }

    /// When a rule made now (scope, family) is made, and until when it is
    /// kept: every token it could cover has expired by then
    /// (`tokens.max_lifetime` + `tokens.clock_skew`).
    pub fn rule_times(&self) -> (u64, u64) {
        let tokens = self.settings.lifetimes();
        let now = now_unix();
        let until = now
            .saturating_add(tokens.max_lifetime.as_secs())
            .saturating_add(tokens.clock_skew.as_secs());
        (now, until)
    }

    /// A revocation of `token` and its family as far as `reach` goes
    /// (`None`: by what the token is), kept as long as a scope rule made
    /// now; [`FamilyOf::resolve`] makes it a rule once the membership is
    /// known.
    pub fn family_of(&self, token: TokenRule, reach: Option<Reach>) -> FamilyOf {
        let (revoked_at, expires_at) = self.rule_times();
        FamilyOf {
            token,
            reach,
            revoked_at,
            expires_at,
        }
    }

    /// A token revocation widened to the token's family as far as `reach`
    /// goes (`None`: by what the token is, a refresh token's grant or an
    /// access token alone: RFC 7009 §2.1); `Some` reach when it was (known
    /// now). A
    /// store that cannot read the token's membership now (Redis away) gets
    /// the widening to resolve when it records it
    /// ([`crate::store::family::FamilyOf`]: the outbox keeps it).
    pub async fn widen(
        &self,
        store: &dyn crate::store::RevocationStore,
        cmd: RevocationCommand,
        reach: Option<Reach>,
    ) -> (RevocationCommand, Option<Reach>) {
        let RevocationCommand::Token(rule) = cmd else {
            return (cmd, None);
        };
        if reach == Some(Reach::Token) {
            return (cmd, None);
        }
        let of = self.family_of(rule, reach);
        match store.member(&rule.fingerprint).await {
            Ok(m) => {
                let resolved = of.resolve(m.as_ref());
                let widened = matches!(resolved, RevocationCommand::Family(_));
                (resolved, widened.then(|| reach.unwrap_or(Reach::Grant)))
            }
            Err(e) => {
                tracing::warn!(error = %e, "revoked token's family could not be read now: the store resolves it when it records the revocation");
                (RevocationCommand::FamilyOf(of), None)
            }
        }
    }

    /// The one check every scope revocation (each dialect in both modes,
    /// and the admin API) passes before it is applied or forwarded:
    /// - a subject over 256 bytes names no user revgate will record (the
    ///   dialect answers as for no current user);
    /// - the per-subject cap (`revoke.max_scopes_per_subject`): a *new* rule
    ///   for a subject that already has the cap is refused; revoking a scope
    ///   the subject already has merges into its rule and passes. Read from
    ///   this instance's cache, so the cap is soft by the calls in flight at
    ///   once (and, with Redis, by what other instances applied but this one
    ///   has not seen yet).
    pub fn scope_admission(&self, cmd: &RevocationCommand, cache: &LocalCache) -> ScopeAdmission {
        let RevocationCommand::Scope(rule) = cmd else {
            return ScopeAdmission::Admitted;
        };
        if rule.key.sub.len() > dialect::MAX_ID_LEN {
            return ScopeAdmission::SubjectTooLong;
        }
        let cap = self.settings.max_scopes_per_subject();
        if cache.subject_scope_count(&rule.key.sub) >= cap && cache.scope_rule(&rule.key).is_none()
        {
            return ScopeAdmission::CapReached;
        }
        ScopeAdmission::Admitted
    }
}

impl Gateway {
    pub(super) async fn revoke(
        &self,
        rt: &Runtime,
        d: &DialectEntry,
        route: &Route,
        parts: http::request::Parts,
        body: Incoming,
        conn: ClientConn,
    ) -> Result<Revoked, Refusal> {
        // Rate-limited before anything is read, forwarded or applied.
        if let Err(limited) = rt.revoke_rate(conn.addr.ip()) {
            let mut resp = render(d, d.dialect.too_many_requests());
            retry_after(&mut resp, limited);
            return Ok(Revoked::Answered(resp));
        }
        let forwarding = d.mode == RevokeMode::Forward;
        // The body is read when the dialect needs it (under its own limit,
        // answered in the vendor's format past it), or, forwarding, when it
        // is a form that may carry the caller's own token.
        let (buffered, stream) = if d.dialect.needs_body() {
            let limit = rt.settings.revoke_max_body_bytes();
            match read_limited(rt, &parts.headers, body, limit).await {
                Ok(bytes) => (Some(bytes), None),
                Err(BodyError::TooLarge) => {
                    return Ok(Revoked::Answered(render(d, d.dialect.payload_too_large())))
                }
                Err(BodyError::Read(e)) => return Err(Refusal::ClientBody(e)),
                Err(BodyError::Idle) => return Err(Refusal::ClientTimeout),
            }
        } else if forwarding {
            match read_form(rt, &parts.headers, body).await? {
                (Some(bytes), _) => (Some(bytes), None),
                (None, stream) => (None, Some(stream)),
            }
        } else {
            (None, Some(incoming_request(rt, body)))
        };
        // Forwarding, the call is an ordinary request to the upstream as well:
        // its caller's own credential is judged like any other.
        if forwarding {
            let form = buffered
                .as_deref()
                .filter(|_| credentials::is_form(&parts.headers));
            let verdict = rt
                .checker
                .judge(&parts.headers, parts.uri.query(), form, &*self.store)
                .await;
            if let Err(refusal) = verdict.admission() {
                return Ok(Revoked::Refused(refusal));
            }
        }
        let call = RevokeCall {
            method: &parts.method,
            query: parts.uri.query(),
            headers: &parts.headers,
            body: buffered.as_deref().unwrap_or_default(),
        };
        let parsed = d.dialect.parse(&call);
        let source = d.dialect.kind().name();
        let answered = match d.mode {
            RevokeMode::Terminate => {
                let intent = match parsed {
                    Ok(i) => i,
                    Err(vendor_error) => return Ok(Revoked::Answered(render(d, vendor_error))),
                };
                let caller = Caller::of(&parts, &*self.store, d.dialect.caller_key_header());
                let command = rt.command(intent, &caller, d.mode);
                let Some(cmd) = command.await else {
                    return Ok(Revoked::Answered(render(d, d.dialect.unauthenticated())));
                };
                if let Some(refused) = refuse_scope(rt, d, &cmd, self.store.cache()) {
                    return Ok(Revoked::Answered(refused));
                }
                let cmd = self.widened(rt, d, cmd).await;
                match self.store.apply(cmd).await {
                    Ok(_) => {
                        crate::metrics::revocation_applied(source, "terminate");
                        render(d, d.dialect.success_for(&call))
                    }
                    Err(e @ StoreError::Unconfirmed(_)) => {
                        crate::metrics::revocation_apply_failed(source);
                        tracing::warn!(error = %e, dialect = source, "revocation recorded but not confirmed");
                        render(d, d.dialect.unavailable())
                    }
                    Err(e) => {
                        crate::metrics::revocation_apply_failed(source);
                        tracing::error!(error = %e, dialect = source, "revocation not recorded");
                        render(d, d.dialect.unavailable())
                    }
                }
            }
            RevokeMode::Forward => {
                // Decide what would be applied before the request is handed on.
                let caller = Caller::of(&parts, &*self.store, d.dialect.caller_key_header());
                let cmd = match parsed {
                    Ok(intent) => Some(rt.command(intent, &caller, d.mode).await),
                    Err(_) => None,
                };
                // A scope revocation revgate will not record (over the cap, or
                // an over-long subject) is not forwarded either: the upstream
                // and revgate agree that nothing was revoked.
                if let Some(Some(c)) = &cmd {
                    if let Some(refused) = refuse_scope(rt, d, c, self.store.cache()) {
                        return Ok(Revoked::Answered(refused));
                    }
                }
                let cmd = match cmd {
                    Some(Some(c)) => Some(Some(self.widened(rt, d, c).await)),
                    other => other,
                };
                let body = match (buffered, stream) {
                    (Some(bytes), _) => full(bytes),
                    (None, Some(s)) => s,
                    (None, None) => full(Bytes::new()),
                };
                let mut resp = forward(rt, route, parts, body, conn, None).await?;
                if resp.status().is_success() {
                    match cmd {
                        Some(Some(cmd)) => {
                            let acknowledged = self.apply_or_retry(cmd, source).await;
                            if !acknowledged {
                                // Recorded, not confirmed (see `StoreError::Unconfirmed`):
                                // the caller must not take the upstream's 2xx
                                // as "revoked everywhere"; a retry is safe.
                                resp = render(d, d.dialect.unavailable());
                            }
                        }
                        Some(None) => {
                            crate::metrics::unidentified_revoke(source);
                            tracing::warn!(
                                dialect = source,
                                "revoke call forwarded, but its current user could not be identified: nothing applied"
                            );
                        }
                        None => {}
                    }
                }
                resp
            }
        };
        Ok(Revoked::Answered(answered))
    }

    /// `cmd` widened to its token's family by the dialect's `family` reach
    /// (see [`Runtime::widen`]).
    async fn widened(
        &self,
        rt: &Runtime,
        d: &DialectEntry,
        cmd: RevocationCommand,
    ) -> RevocationCommand {
        let (cmd, reach) = rt.widen(&*self.store, cmd, d.family).await;
        if reach.is_some() {
            crate::metrics::family_revoked(d.dialect.kind().name());
        }
        cmd
    }

    /// Applies a forwarded revocation; on failure keeps retrying in the
    /// background (with backoff) until it is recorded or the gateway stops.
    /// False when it was recorded but not confirmed in time (confirmed
    /// consistency, or too few replicas): nothing to retry, but the answer
    /// must not say success.
    async fn apply_or_retry(&self, cmd: RevocationCommand, source: &'static str) -> bool {
        match self.store.apply(cmd.clone()).await {
            Ok(_) => crate::metrics::revocation_applied(source, "forward"),
            Err(e @ StoreError::Unconfirmed(_)) => {
                crate::metrics::revocation_apply_failed(source);
                tracing::warn!(error = %e, dialect = source, "forwarded revocation recorded but not confirmed");
                return false;
            }
            Err(e) => {
                crate::metrics::revocation_apply_failed(source);
                tracing::error!(error = %e, dialect = source, "revocation not recorded; retrying in the background");
                let store = self.store.clone();
                let shutdown = self.shutdown.clone();
                tokio::spawn(async move {
                    let mut delay = Duration::from_millis(100);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => {
                                tracing::error!(dialect = source, "gateway stopping with a revocation still unrecorded");
                                return;
                            }
                            _ = tokio::time::sleep(delay) => {}
                        }
                        match store.apply(cmd.clone()).await {
                            Ok(_) => {
                                crate::metrics::revocation_applied(source, "forward");
                                tracing::info!(dialect = source, "revocation recorded after retry");
                                return;
                            }
                            Err(e) => {
                                crate::metrics::revocation_apply_failed(source);
                                tracing::warn!(error = %e, dialect = source, "revocation retry failed");
                                delay = (delay * 2).min(Duration::from_secs(30));
                            }
                        }
                    }
                });
            }
        }
        true
    }
}

/// The dialect's answer when [`Runtime::scope_admission`] refuses `cmd`.
pub(crate) fn refuse_scope(
    rt: &Runtime,
    d: &DialectEntry,
    cmd: &RevocationCommand,
    cache: &LocalCache,
) -> Option<Response<Body>> {
    match rt.scope_admission(cmd, cache) {
        ScopeAdmission::Admitted => None,
        ScopeAdmission::SubjectTooLong => Some(render(d, d.dialect.unauthenticated())),
        ScopeAdmission::CapReached => Some(render(d, d.dialect.scope_limit_reached())),
    }
}

pub(crate) fn render(d: &DialectEntry, r: DialectResponse) -> Response<Body> {
    let mut resp = Response::new(full(r.body));
    *resp.status_mut() = r.status;
    if let Some(ct) = r.content_type {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    if r.status == StatusCode::METHOD_NOT_ALLOWED {
        if let Ok(allow) = HeaderValue::from_str(d.dialect.method().as_str()) {
            resp.headers_mut().insert(header::ALLOW, allow);
        }
    }
    resp
}

/// How a revoke call ended.
pub(crate) enum Revoked {
    /// Answered: by the dialect, or by the upstream it was forwarded to.
    Answered(Response<Body>),
    /// Forwarding, the caller's own credential was refused.
    Refused(Refusal),
}
