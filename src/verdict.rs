//! The per-request revocation check and the answers it gives.
//!
//! Order, cheapest first: extract the credential (borrowed, no allocation) →
//! fingerprint it → ask the bloom filter. A bloom miss is the common case and
//! ends here with no lock, I/O or allocation. A bloom hit asks the store for
//! the exact answer; if the store cannot answer, a bloom hit counts as revoked
//! (fail closed). When the store asks for every credential to be looked up
//! (it is still loading, or stale past `store.max_staleness` with
//! `stale_action = "lookup"`) and cannot answer, the request is refused with
//! 503 rather than passed. Scope rules are checked only when any exist, since
//! only then are the credential's attributes (a JWT peek) worth reading.
//!
//! When the credential names no subject of its own (an opaque token, an API
//! key; no identity header) and `[identity.introspection]` is configured,
//! its attributes are asked of the authorization server (RFC 7662, cached,
//! one call per credential at a time: `identity::introspection`) and
//! matched against the scope rules in the same way. Only then: with no
//! scope rule the path above is unchanged (no await, no allocation). An
//! inactive answer matches no rule; an introspection error is a 503
//! ([`Verdict::IdentityUnavailable`]) unless `on_error = "pass"`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::credentials::{
    self, AttributeSources, Credential, CredentialError, CredentialSources, Fingerprint,
    FingerprintKey, Headers,
};
use crate::store::{now_unix, CheckMode, RevocationStore};

/// The outcome of the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No credential: nothing to judge, the request passes.
    NoCredential,
    /// A credential that is not revoked.
    Pass(Fingerprint),
    /// Revoked: 401 `invalid_token`.
    Revoked(Fingerprint),
    /// Malformed credentials: 400 `invalid_request`.
    BadRequest(CredentialError),
    /// The store is too stale to judge and is configured to refuse: 503.
    Unavailable,
    /// Scope rules exist, the credential names no subject of its own, and
    /// introspection failed (`on_error = "reject"`): 503.
    IdentityUnavailable,
    /// This instance is fenced (confirmed consistency): 503 until caught up.
    Fenced,
}

/// Everything the check needs besides the store.
#[derive(Clone, Debug)]
pub struct Checker {
    /// The fingerprint key.
    pub key: Arc<FingerprintKey>,
    /// Where credentials are read.
    pub sources: CredentialSources,
    /// Where attributes are read.
    pub attributes: AttributeSources,
    /// Whether revocations by `jti` are matched (`tokens.revoke_by_jti`).
    pub jti: bool,
    /// RFC 7662 introspection of credentials that name no subject
    /// (`[identity.introspection]`), when configured.
    pub introspection: Option<crate::identity::Introspector>,
}

impl Checker {
    /// Finds the credential in a request (`form`: a form-encoded body that
    /// was read, see [`credentials::extract`]).
    pub fn credential<'a, H: Headers + ?Sized>(
        &self,
        headers: &'a H,
        query: Option<&'a str>,
        form: Option<&'a [u8]>,
    ) -> Result<Option<Credential<'a>>, CredentialError> {
        credentials::extract(headers, query, form, &self.sources)
    }

    /// Judges a request by its headers, query and (when read) form body.
    pub async fn judge<H: Headers + ?Sized>(
        &self,
        headers: &H,
        query: Option<&str>,
        form: Option<&[u8]>,
        store: &dyn RevocationStore,
    ) -> Verdict {
        let cred = match self.credential(headers, query, form) {
            Ok(Some(c)) => c,
            Ok(None) => return Verdict::NoCredential,
            Err(e) => return Verdict::BadRequest(e),
        };
        let mode = store.check_mode();
        match mode {
            CheckMode::Reject => return Verdict::Unavailable,
            CheckMode::Fenced => return Verdict::Fenced,
            CheckMode::Local | CheckMode::AlwaysLookup => {}
        }
        let fp = self.key.token_fingerprint(cred.token());
        if let Some(v) = exact(fp, mode, store).await {
            return v;
        }
        if let Some(extra) = cred.extra() {
            if let Some(v) = exact(self.key.token_fingerprint(extra), mode, store).await {
                return v;
            }
        }
        // Rules on what the token says of itself: read its claims only when
        // some exist (or `jti` revocation is on), since that costs a decode.
        let cache = store.cache();
        let scopes = cache.has_scope_rules();
        // An opaque credential says nothing of itself: only identity
        // headers or introspection could name its holder (a bound one is
        // covered by derived token rules, above), so without them there is
        // nothing to read.
        let readable = || {
            self.attributes.identity_headers.any()
                || self.introspection.is_some()
                || matches!(
                    credentials::token_identity(cred.token()),
                    credentials::TokenIdentity::Jws(_)
                )
        };
        if (scopes || self.jti) && readable() {
            let attrs = credentials::attributes(cred.token(), headers, &self.attributes);
            // No subject, no rule to match (bound opaque credentials are
            // covered by derived token rules, above): skip the clock.
            if scopes && attrs.sub.is_some() && cache.scope_matches(&attrs, now_unix()) {
                return Verdict::Revoked(fp);
            }
            if let (true, None, Some(introspector)) =
                (scopes, &attrs.sub, self.introspection.as_ref())
            {
                // Boxed: the introspection's state stays out of the
                // verdict's future, which every request carries.
                let judged = Box::pin(introspected(introspector, fp, cred.token(), store));
                if let Some(v) = judged.await {
                    return v;
                }
            }
            if let (true, Some(jti)) = (self.jti, attrs.jti.as_deref()) {
                let by_issuer = attrs
                    .iss
                    .as_deref()
                    .map(|iss| self.key.jti_fingerprint(Some(iss), jti));
                for jfp in by_issuer
                    .into_iter()
                    .chain([self.key.jti_fingerprint(None, jti)])
                {
                    if let Some(v) = exact(jfp, mode, store).await {
                        // The request is refused under its own token's name.
                        return match v {
                            Verdict::Revoked(_) => Verdict::Revoked(fp),
                            other => other,
                        };
                    }
                }
            }
        }
        Verdict::Pass(fp)
    }
}

/// The verdict on a credential whose attributes come from introspection,
/// when it settles the request: revoked by a scope rule, or refused because
/// it could not be introspected (`on_error = "reject"`).
async fn introspected(
    introspector: &crate::identity::Introspector,
    fp: Fingerprint,
    token: &str,
    store: &dyn RevocationStore,
) -> Option<Verdict> {
    use crate::config::IntrospectionOnError;
    use crate::identity::Answer;
    match introspector.introspect(fp, token).await {
        Ok(Answer::Active(attrs)) => store
            .cache()
            .scope_matches(&attrs, now_unix())
            .then_some(Verdict::Revoked(fp)),
        Ok(Answer::Inactive) => None,
        Err(_) => match introspector.on_error() {
            IntrospectionOnError::Reject => Some(Verdict::IdentityUnavailable),
            IntrospectionOnError::Pass => None,
        },
    }
}

/// The verdict on a credential known only by its fingerprint (a refresh
/// token in a token request's body): its token rule (explicit, derived from
/// a binding, or from its family), with the store's state as a request's
/// credential would be judged by it.
pub async fn judge_fingerprint(fp: Fingerprint, store: &dyn RevocationStore) -> Verdict {
    let mode = store.check_mode();
    match mode {
        CheckMode::Reject => Verdict::Unavailable,
        CheckMode::Fenced => Verdict::Fenced,
        CheckMode::Local | CheckMode::AlwaysLookup => {
            exact(fp, mode, store).await.unwrap_or(Verdict::Pass(fp))
        }
    }
}

/// The verdict on one fingerprint when it settles the request (revoked, or
/// the store cannot answer); `None` when it is not revoked.
#[inline]
async fn exact(fp: Fingerprint, mode: CheckMode, store: &dyn RevocationStore) -> Option<Verdict> {
    let cache = store.cache();
    let bloom_hit = cache.may_contain(&fp);
    if !bloom_hit && mode != CheckMode::AlwaysLookup {
        return None;
    }
    match store.is_token_revoked(&fp).await {
        Ok(true) => Some(Verdict::Revoked(fp)),
        Ok(false) => {
            if bloom_hit {
                cache.note_false_positive();
            }
            None
        }
        // Fail closed: the bloom filter says it may be revoked and no one
        // can say otherwise.
        Err(_) if bloom_hit => Some(Verdict::Revoked(fp)),
        // Every credential must be asked about (the local state is
        // incomplete or stale) and the store cannot answer: refuse.
        Err(_) => Some(Verdict::Unavailable),
    }
}

impl Verdict {
    /// The verdict as an admission: on (with the credential's fingerprint,
    /// if it had one), or the [`Refusal`](crate::refusal::Refusal) that
    /// answers it.
    pub fn admission(self) -> Result<Option<Fingerprint>, crate::refusal::Refusal> {
        use crate::refusal::Refusal;
        match self {
            Verdict::Pass(fp) => Ok(Some(fp)),
            Verdict::NoCredential => Ok(None),
            Verdict::Revoked(fp) => Err(Refusal::Revoked(fp)),
            Verdict::BadRequest(e) => Err(Refusal::BadCredential(e)),
            Verdict::Unavailable => Err(Refusal::Unavailable),
            Verdict::IdentityUnavailable => Err(Refusal::IdentityUnavailable),
            Verdict::Fenced => Err(Refusal::Fenced),
        }
    }
}

/// The body and `WWW-Authenticate` of a revoked token's 401.
pub const REVOKED_BODY: &str =
    r#"{"error":"invalid_token","error_description":"The access token has been revoked"}"#;
/// The `WWW-Authenticate` header of a revoked token's 401.
pub const REVOKED_CHALLENGE: &str =
    r#"Bearer error="invalid_token", error_description="The access token has been revoked""#;

/// A JSON response with a fixed body.
pub fn json_response(status: StatusCode, body: Bytes) -> Response<Bytes> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp
}

/// 503 when the revocation state is too stale to judge a credential.
pub fn unavailable() -> Response<Bytes> {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        Bytes::from_static(UNAVAILABLE_BODY.as_bytes()),
    )
}

/// The body of [`unavailable`].
pub const UNAVAILABLE_BODY: &str = r#"{"error":"temporarily_unavailable","error_description":"The revocation state is too stale to judge this request"}"#;

/// 401 for a revoked token (RFC 6750 §3).
pub fn revoked() -> Response<Bytes> {
    let mut resp = json_response(
        StatusCode::UNAUTHORIZED,
        Bytes::from_static(REVOKED_BODY.as_bytes()),
    );
    resp.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static(REVOKED_CHALLENGE),
    );
    resp
}

/// 400 `invalid_request` for malformed credentials (RFC 6750 §3.1).
pub fn bad_request(err: CredentialError) -> Response<Bytes> {
    let description = err.to_string();
    let body = serde_json::json!({"error": "invalid_request", "error_description": description});
    let mut resp = json_response(StatusCode::BAD_REQUEST, Bytes::from(body.to_string()));
    let challenge = format!(r#"Bearer error="invalid_request", error_description="{description}""#);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{RevocationCommand, ScopeKey, ScopeRule, TokenRule};
    use http::HeaderMap;

    fn checker() -> Checker {
        Checker {
            key: Arc::new(FingerprintKey::from_bytes([3; 32])),
            sources: CredentialSources::default(),
            attributes: AttributeSources::default(),
            jti: true,
            introspection: None,
        }
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn verdicts() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = MemoryStore::open(&dir.path().join("j"), 1000, 0.01).unwrap();
        let c = checker();
        let fp = c.key.token_fingerprint("bad");
        store
            .apply(RevocationCommand::Token(TokenRule {
                fingerprint: fp,
                expires_at: now_unix() + 60,
            }))
            .await
            .unwrap();
        assert_eq!(
            c.judge(&bearer("bad"), None, None, &store).await,
            Verdict::Revoked(fp)
        );
        assert_eq!(
            c.judge(&HeaderMap::new(), Some("access_token=bad"), None, &store)
                .await,
            Verdict::Revoked(fp)
        );
        assert!(matches!(
            c.judge(&bearer("good"), None, None, &store).await,
            Verdict::Pass(_)
        ));
        assert_eq!(
            c.judge(&HeaderMap::new(), None, None, &store).await,
            Verdict::NoCredential
        );
        assert_eq!(
            c.judge(&bearer("a"), Some("access_token=b"), None, &store)
                .await,
            Verdict::BadRequest(CredentialError::MultipleMethods)
        );
        // A scope rule: the user's opaque token passes (no subject known)...
        store
            .apply(RevocationCommand::Scope(ScopeRule {
                key: ScopeKey {
                    sub: "u1".into(),
                    org: None,
                    provider: None,
                },
                revoked_at: now_unix(),
                expires_at: now_unix() + 60,
            }))
            .await
            .unwrap();
        assert!(matches!(
            c.judge(&bearer("opaque"), None, None, &store).await,
            Verdict::Pass(_)
        ));
    }

    #[test]
    fn responses_are_exact() {
        let r: Response<Bytes> = revoked();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], REVOKED_CHALLENGE);
        assert_eq!(r.body().as_ref(), REVOKED_BODY.as_bytes());
        let r: Response<Bytes> = bad_request(CredentialError::DuplicateAuthorization);
        assert_eq!(r.status(), 400);
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with(r#"Bearer error="invalid_request""#));
    }
}
