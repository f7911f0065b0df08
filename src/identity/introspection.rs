//! RFC 7662 token introspection: the attributes of an opaque credential
//! (an API key, a hex access token), asked of the authorization server that
//! issued it, cached, one call per credential at a time.
//!
//! # When it is asked
//!
//! Only when `[identity.introspection]` is configured, and then only where
//! the attributes matter:
//! - **judging a request** ([`crate::verdict::Checker::judge`]): when scope
//!   rules exist and the credential's own claims and the identity headers
//!   name no subject. With no scope rule the credential is never sent
//!   anywhere, and the verdict's path is exactly what it is without
//!   introspection;
//! - **identifying a revoker** (a LangSmith or Codegen scope revoke in
//!   terminate mode, `proxy/revoke.rs`): after a verified JWT and before the
//!   identity headers, an *active* answer's `sub` is the current user — the
//!   authorization server vouched for it, as a JWKS signature would.
//!
//! # The call
//!
//! `POST <url>` with `Content-Type: application/x-www-form-urlencoded`,
//! body `token=<raw>&token_type_hint=access_token` (RFC 7662 §2.1), HTTP
//! Basic client authentication when `client_id`/`client_secret` are set
//! (each form-urlencoded before base64, as RFC 6749 §2.3.1 asks). It goes
//! through the gateway's outbound stack (hyper-util client, rustls with the
//! `upstream.ca_file` or system roots, as `identity::jwks`), no redirects
//! followed. `timeout` bounds the whole call: connect, request, response
//! head and body. Only a `200` whose body (at most [`MAX_RESPONSE_BYTES`])
//! is a JSON object with a boolean `active` is an answer:
//! - `"active": true` → the attributes, read from the members named in
//!   `[identity.introspection.fields]` (defaults: the `[tokens.claims]`
//!   names, so `sub`, `org_id`, `provider`, `iat`, `exp`); `jti` and `iss`
//!   as RFC 7662 names them;
//! - `"active": false` → *inactive*;
//! - anything else (another status, a timeout, a refused connection, a body
//!   too large, not JSON, no boolean `active`) → an error.
//!
//! # What the answers do
//!
//! - **active**: scope rules are matched against its attributes, exactly
//!   as against a JWT's claims (subject, org, provider, issued at or before
//!   the rule; no `iat` matches until the rule expires, fail closed). An
//!   active answer that names no subject matches no rule.
//! - **inactive**: the credential has no attributes, so no scope rule
//!   covers it and it passes to the upstream, which refuses it on its own.
//!   revgate enforces revocations; it does not authenticate, and a
//!   credential the server does not know (another issuer's, a typo) is
//!   judged as it is when no scope rule exists. As a revoker it identifies
//!   no one: the dialect's 401.
//! - **error**: with `on_error = "reject"` (the default) the request is
//!   refused with 503 `temporarily_unavailable`
//!   ([`crate::refusal::Refusal::IdentityUnavailable`]): an outage of the
//!   authorization server never lets through a credential a scope rule might
//!   cover. With `on_error = "pass"` it is judged as inactive. As a revoker:
//!   the dialect's 401 (nothing is revoked), logged as a warning.
//!
//! # The cache
//!
//! Keyed by the credential's [`Fingerprint`] (the raw token is held only for
//! the duration of its call, never stored or logged). An active answer is
//! kept for `cache_ttl`, never past the answer's own `exp`; an inactive one
//! for `negative_ttl`; an error is not kept at all (the next request asks
//! again, while single-flight keeps it to one call per credential at a
//! time). Concurrent first requests for one credential wait for the same
//! call (`moka`'s `try_get_with`) and share its answer or its error; the
//! call ends at `timeout` at the latest, so no waiter is held longer. If the
//! request that started the call goes away, a waiting one takes it over.
//! At most `max_entries` answers are kept; past it `moka` evicts by its
//! TinyLFU policy (the entries least likely to be used again), and an evicted
//! credential is introspected again when next seen. A revocation at the
//! authorization server is seen by revgate only when the cached answer
//! expires: `cache_ttl` is the bound on that delay (a scope rule recorded by
//! revgate itself applies at once, the cached attributes being matched on
//! every request). The cache belongs to the configuration: a reload
//! (SIGHUP) starts an empty one.
//!
//! An upgraded connection or HTTP/2 stream is registered as a live session
//! with the introspected attributes when its credential's answer is cached
//! (it is when scope rules existed as it was judged), so a later scope rule
//! for that subject closes it; one admitted while no scope rule existed was
//! never introspected and is covered by token rules only.
//!
//! Counted in `revgate_introspection_requests_total{outcome}` (`active`,
//! `inactive`, `error`, `timeout`: one per call made, not per waiter) and
//! `revgate_introspection_cache_hits_total`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::config::IntrospectionOnError;
use crate::credentials::{Attributes, ClaimNames, Fingerprint};

/// The largest introspection response read (an answer is a few hundred bytes).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

type IntrospectionClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Checked `[identity.introspection]` settings.
#[derive(Clone)]
pub struct IntrospectionSettings {
    /// The endpoint.
    pub uri: Uri,
    /// `Authorization: Basic ...` for the client pair, when configured.
    pub authorization: Option<HeaderValue>,
    /// The bound on one call.
    pub timeout: Duration,
    /// How long an active answer is kept (never past its `exp`).
    pub cache_ttl: Duration,
    /// How long an inactive answer is kept.
    pub negative_ttl: Duration,
    /// Most answers kept.
    pub max_entries: u64,
    /// What an error makes of a request.
    pub on_error: IntrospectionOnError,
    /// The response members that carry each attribute.
    pub fields: ClaimNames,
}

impl std::fmt::Debug for IntrospectionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client secret is in `authorization`: never printed.
        f.debug_struct("IntrospectionSettings")
            .field("uri", &self.uri)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", &self.timeout)
            .field("cache_ttl", &self.cache_ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("max_entries", &self.max_entries)
            .field("on_error", &self.on_error)
            .field("fields", &self.fields)
            .finish()
    }
}

/// The `Authorization` value of HTTP Basic client authentication (RFC 6749
/// §2.3.1: each part form-urlencoded, then `id:secret` in base64).
pub fn basic_authorization(client_id: &str, client_secret: &str) -> Option<HeaderValue> {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(client_id), enc(client_secret));
    let mut v = HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
    .ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// What the authorization server said of a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `"active": true`, with the attributes it named.
    Active(Arc<Attributes>),
    /// `"active": false`.
    Inactive,
}

/// Why a credential could not be introspected (logged; never shown to clients).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntrospectionError {
    /// The request failed (connect, TLS, I/O).
    #[error("request: {0}")]
    Request(String),
    /// Not a 200.
    #[error("answered {0} (expected 200)")]
    Status(u16),
    /// The body is over [`MAX_RESPONSE_BYTES`].
    #[error("response larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    /// Not a JSON object with a boolean `active`.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// Over `timeout`.
    #[error("timed out")]
    Timeout,
}

impl IntrospectionError {
    /// The `outcome` label it is counted under.
    fn outcome(&self) -> &'static str {
        match self {
            IntrospectionError::Timeout => "timeout",
            _ => "error",
        }
    }
}

/// Reads an introspection response body (RFC 7662 §2.2).
pub fn parse_response(body: &[u8], fields: &ClaimNames) -> Result<Answer, IntrospectionError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| IntrospectionError::Malformed("not JSON"))?;
    let serde_json::Value::Object(members) = value else {
        return Err(IntrospectionError::Malformed("not a JSON object"));
    };
    match members.get("active") {
        Some(serde_json::Value::Bool(true)) => Ok(Answer::Active(Arc::new(
            crate::credentials::from_claims(&members, fields),
        ))),
        Some(serde_json::Value::Bool(false)) => Ok(Answer::Inactive),
        _ => Err(IntrospectionError::Malformed("no boolean \"active\"")),
    }
}

/// Asks the authorization server about credentials, through a bounded
/// cache (see the module doc). Cheap to clone: clones share the cache.
#[derive(Clone)]
pub struct Introspector {
    inner: Arc<Inner>,
}

struct Inner {
    settings: IntrospectionSettings,
    client: IntrospectionClient,
    cache: moka::future::Cache<Fingerprint, Answer>,
    /// Failed calls, one log line a second.
    failures: crate::telemetry::Throttle,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("settings", &self.inner.settings)
            .field("cached", &self.inner.cache.entry_count())
            .finish()
    }
}

/// Each answer's time to live: an active one `cache_ttl` but never past its
/// `exp`, an inactive one `negative_ttl`.
struct Ttl {
    positive: Duration,
    negative: Duration,
}

impl moka::Expiry<Fingerprint, Answer> for Ttl {
    fn expire_after_create(
        &self,
        _key: &Fingerprint,
        value: &Answer,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(match value {
            Answer::Active(attrs) => match attrs.exp {
                Some(exp) => self.positive.min(Duration::from_secs(
                    exp.saturating_sub(crate::store::now_unix()),
                )),
                None => self.positive,
            },
            Answer::Inactive => self.negative,
        })
    }
}

impl Introspector {
    /// An introspector for checked settings; `tls` is the client
    /// configuration for an `https://` endpoint.
    pub fn new(settings: &IntrospectionSettings, tls: rustls::ClientConfig) -> Introspector {
        let client = crate::tls::OutboundClient {
            connect_timeout: settings.timeout,
            tcp_keepalive: Some(Duration::from_secs(60)),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 64,
        }
        .build(tls);
        let cache = moka::future::Cache::builder()
            .max_capacity(settings.max_entries)
            .expire_after(Ttl {
                positive: settings.cache_ttl,
                negative: settings.negative_ttl,
            })
            .build();
        Introspector {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                client,
                cache,
                failures: crate::telemetry::Throttle::default(),
            }),
        }
    }

    /// What an error makes of a request (`on_error`).
    pub fn on_error(&self) -> IntrospectionOnError {
        self.inner.settings.on_error
    }

    /// The answer for the credential `token` (whose fingerprint is `fp`):
    /// cached, or asked once for every concurrent caller.
    pub async fn introspect(
        &self,
        fp: Fingerprint,
        token: &str,
    ) -> Result<Answer, Arc<IntrospectionError>> {
        let inner = &self.inner;
        if let Some(answer) = inner.cache.get(&fp).await {
            crate::metrics::introspection_cache_hit();
            return Ok(answer);
        }
        inner
            .cache
            .try_get_with(fp, async {
                let answer = inner.call(token).await;
                match &answer {
                    Ok(Answer::Active(_)) => crate::metrics::introspection("active"),
                    Ok(Answer::Inactive) => crate::metrics::introspection("inactive"),
                    Err(e) => {
                        crate::metrics::introspection(e.outcome());
                        if let Some(held) = inner.failures.admit() {
                            tracing::warn!(
                                url = %inner.settings.uri,
                                error = %e,
                                fingerprint = %fp.short(),
                                suppressed = held,
                                "token introspection failed"
                            );
                        }
                    }
                }
                answer
            })
            .await
    }

    /// The subject of a revoker's own credential, when the authorization
    /// server says it is active and names one (see the module doc).
    pub async fn caller_subject(&self, fp: Fingerprint, token: &str) -> Option<String> {
        match self.introspect(fp, token).await {
            Ok(Answer::Active(attrs)) => {
                if attrs.sub.is_none() {
                    tracing::warn!(
                        field = %self.inner.settings.fields.sub,
                        "caller's credential is active but its introspection names no subject"
                    );
                }
                attrs.sub.clone()
            }
            Ok(Answer::Inactive) => None,
            Err(e) => {
                tracing::warn!(error = %e, "caller's credential could not be introspected: not identified");
                None
            }
        }
    }

    /// The attributes of an active answer already cached for `fp`, without
    /// asking the server (live sessions: see `store::live`).
    pub async fn cached_attributes(&self, fp: Fingerprint) -> Option<Arc<Attributes>> {
        match self.inner.cache.get(&fp).await? {
            Answer::Active(attrs) => Some(attrs),
            Answer::Inactive => None,
        }
    }

    /// Answers cached now (approximate: `moka` counts lazily).
    pub fn cached_entries(&self) -> u64 {
        self.inner.cache.entry_count()
    }
}

impl Inner {
    async fn call(&self, token: &str) -> Result<Answer, IntrospectionError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let mut req = Request::post(self.settings.uri.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("revgate/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(auth) = &self.settings.authorization {
            req = req.header(header::AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| IntrospectionError::Request(e.to_string()))?;
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| IntrospectionError::Request(crate::telemetry::error_chain(&e)))?;
            if resp.status() != StatusCode::OK {
                return Err(IntrospectionError::Status(resp.status().as_u16()));
            }
            let declared = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
                return Err(IntrospectionError::TooLarge);
            }
            let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        IntrospectionError::TooLarge
                    } else {
                        IntrospectionError::Request(e.to_string())
                    }
                })?
                .to_bytes();
            parse_response(&body, &self.settings.fields)
        };
        tokio::time::timeout(self.settings.timeout, work)
            .await
            .map_err(|_| IntrospectionError::Timeout)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_read_as_rfc_7662_says() {
        let names = ClaimNames::default();
        let a = parse_response(
            br#"{"active":true,"sub":"u1","org_id":42,"provider":"github","iat":100,"exp":"200","scope":"x"}"#,
            &names,
        )
        .unwrap();
        let Answer::Active(a) = a else {
            panic!("{a:?}")
        };
        assert_eq!(a.sub.as_deref(), Some("u1"));
        assert_eq!(a.org.as_deref(), Some("42"));
        assert_eq!(a.provider.as_deref(), Some("github"));
        assert_eq!((a.iat, a.exp), (Some(100), Some(200)));
        assert_eq!(
            parse_response(br#"{"active":false,"sub":"u1"}"#, &names),
            Ok(Answer::Inactive)
        );
        let renamed = ClaimNames {
            sub: "username".into(),
            ..ClaimNames::default()
        };
        let Ok(Answer::Active(a)) =
            parse_response(br#"{"active":true,"username":"alice","sub":"x"}"#, &renamed)
        else {
            panic!()
        };
        assert_eq!(a.sub.as_deref(), Some("alice"));
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"active":"true"}"#,
            br#"{"active":1}"#,
            br#"{"active":null}"#,
        ] {
            assert!(
                matches!(
                    parse_response(bad, &names),
                    Err(IntrospectionError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn basic_authorization_encodes_each_part_first() {
        let v = basic_authorization("revgate", "s3cret").unwrap();
        assert_eq!(v, "Basic cmV2Z2F0ZTpzM2NyZXQ=");
        assert!(v.is_sensitive());
        // `:` in an id would split it wrongly if not encoded (RFC 6749 §2.3.1).
        let v = basic_authorization("a:b", "c d").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&v.as_bytes()[6..])
            .unwrap();
        assert_eq!(decoded, b"a%3Ab:c+d");
    }

    #[test]
    fn an_active_answer_is_kept_no_longer_than_its_exp() {
        use moka::Expiry as _;
        let ttl = Ttl {
            positive: Duration::from_secs(60),
            negative: Duration::from_secs(10),
        };
        let key = Fingerprint::from_bytes([1; 16]);
        let active = |exp| {
            Answer::Active(Arc::new(Attributes {
                exp,
                ..Default::default()
            }))
        };
        let now = crate::store::now_unix();
        let ttl_of = |a: &Answer| ttl.expire_after_create(&key, a, Instant::now());
        assert_eq!(ttl_of(&active(None)), Some(Duration::from_secs(60)));
        assert_eq!(
            ttl_of(&active(Some(now + 3600))),
            Some(Duration::from_secs(60))
        );
        let soon = ttl_of(&active(Some(now + 5))).unwrap();
        assert!(soon <= Duration::from_secs(5), "{soon:?}");
        assert_eq!(ttl_of(&active(Some(now - 5))), Some(Duration::ZERO));
        assert_eq!(ttl_of(&Answer::Inactive), Some(Duration::from_secs(10)));
    }
}
