//! The [`Verifier`]: a key set kept current, and tokens verified against it.
//!
//! # Where the keys come from
//!
//! - `jwks_file`: read when the configuration is checked (start, `check-config`,
//!   SIGHUP). A file that cannot be read or holds no usable key is a
//!   configuration error naming `tokens.verify.jwks_file`: at start revgate
//!   does not start, on SIGHUP the old configuration (and keys) stay.
//! - `jwks_url`: fetched over HTTP(S) with the gateway's outbound TLS settings
//!   (the same rustls client configuration as `https://` upstreams:
//!   `upstream.ca_file` or the system roots). Each fetch is bounded by
//!   `fetch_timeout` (connect, head and body together) and
//!   [`MAX_JWKS_BYTES`]; only a `200` is taken, and
//!   redirects are not followed.
//!
//! # When a URL is fetched
//!
//! - At start (in the background: the gateway serves meanwhile), then every
//!   `refresh_interval`.
//! - When a token names a `kid` the loaded set does not have (key rotation),
//!   so a new key is usable without a restart.
//! - Never more often than `min_refresh_interval` (counted from the last
//!   attempt, successful or not), and one fetch at a time: a caller spraying
//!   random `kid`s cannot make revgate hammer the identity provider, and a
//!   provider that is down is asked once per interval. An unknown `kid` that
//!   was not fetched for (held back so, or the fetch failed) is
//!   [`VerifyError::KeyPending`], not `UnknownKey`: it may be a key the
//!   provider rotated in a moment ago (or a spray's, which keeps the last
//!   fetch recent), so the feeds answer it with a 503 the provider retries,
//!   never a 400 that would drop its logout or event. An `id_token` in a
//!   token endpoint's answer (signed by the provider, its `kid` chosen by
//!   no caller) is refetched for after one second instead
//!   ([`Verifier::verify_issued`]), so the tokens issued right after a
//!   rotation are bound to their holder. A caller that arrives
//!   while a fetch is under way waits for it (at most `fetch_timeout`) and then
//!   uses its result.
//!
//! `Cache-Control` on the JWKS response is not consulted: `refresh_interval`
//! and the unknown-`kid` refetch decide. After a SIGHUP reload the new
//! configuration's verifier fetches anew, and meanwhile uses the previous
//! one's keys when the URL is unchanged ([`Verifier::adopt_keys`]).
//!
//! # Failure
//!
//! A failed refresh keeps the last good key set (an identity provider outage
//! must not turn into refused revokes for keys that were valid a minute ago).
//! If no set has ever loaded (the first fetch failed), it is logged as an
//! error, retried every `min_refresh_interval`, and every verification fails
//! with [`VerifyError::NoKeys`]: scope revokes are refused (401), never
//! accepted unverified. The proxy itself keeps serving: judging requests does
//! not need the keys.
//!
//! Verification failures are logged with a fixed reason and the token's `kid`
//! (cut to 64 characters), never the token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::verify::{self, JwsHeader, KeySet, KeySetError, Policy, VerifiedClaims, VerifyError};
use super::{KeySource, VerifySettings, MAX_JWKS_BYTES};

/// The least time between two fetches for an unknown `kid` in a token
/// endpoint's `id_token` ([`Verifier::verify_issued`]).
pub const ISSUED_MIN_INTERVAL: Duration = Duration::from_secs(1);

type JwksClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Verifies callers' JWTs against a key set kept current (see the module doc).
/// Cheap to share: clones share the keys and the fetcher.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    policy: Policy,
    keys: ArcSwapOption<KeySet>,
    fetcher: Option<Fetcher>,
    /// Stops the refresh task when the last clone is dropped (a reload).
    _stop: Option<DropGuard>,
}

struct Fetcher {
    uri: Uri,
    client: JwksClient,
    timeout: Duration,
    min_interval: Duration,
    refresh_interval: Duration,
    /// Held for the whole of a fetch: one at a time.
    state: tokio::sync::Mutex<FetchState>,
    /// Bumped by every successful fetch, so that a caller that waited for
    /// one does not start another.
    generation: AtomicU64,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
}

/// Why a JWKS fetch failed (logged; never shown to clients).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request: {0}")]
    Http(String),
    #[error("answered {0} (expected 200)")]
    Status(u16),
    #[error("larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    KeySet(#[from] KeySetError),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("policy", &self.inner.policy)
            .field("keys", &self.inner.keys.load().as_deref().map(KeySet::len))
            .field("url", &self.inner.fetcher.as_ref().map(|f| &f.uri))
            .finish()
    }
}

impl Verifier {
    /// A verifier for checked settings. With a URL, the first fetch and the
    /// periodic refresh run in a background task when called inside a Tokio
    /// runtime (else keys are fetched on first use); `tls` is the client
    /// configuration for `https://` URLs.
    pub fn new(settings: &VerifySettings, tls: rustls::ClientConfig) -> Verifier {
        match &settings.source {
            KeySource::File { path, keys } => {
                log_skipped(keys, &path.display().to_string());
                Verifier {
                    inner: Arc::new(Inner {
                        policy: settings.policy.clone(),
                        keys: ArcSwapOption::from(Some(keys.clone())),
                        fetcher: None,
                        _stop: None,
                    }),
                }
            }
            KeySource::Url(uri) => {
                let client = crate::tls::OutboundClient {
                    connect_timeout: settings.fetch_timeout,
                    tcp_keepalive: None,
                    pool_idle_timeout: Duration::from_secs(30),
                    pool_max_idle_per_host: 1,
                }
                .build(tls);
                let stop = CancellationToken::new();
                let runtime = tokio::runtime::Handle::try_current().ok();
                let inner = Arc::new(Inner {
                    policy: settings.policy.clone(),
                    keys: ArcSwapOption::empty(),
                    fetcher: Some(Fetcher {
                        uri: uri.clone(),
                        client,
                        timeout: settings.fetch_timeout,
                        min_interval: settings.min_refresh_interval,
                        refresh_interval: settings.refresh_interval,
                        state: tokio::sync::Mutex::new(FetchState::default()),
                        generation: AtomicU64::new(0),
                    }),
                    _stop: runtime.is_some().then(|| stop.clone().drop_guard()),
                });
                if let Some(rt) = runtime {
                    rt.spawn(refresh_loop(Arc::downgrade(&inner), stop));
                }
                Verifier { inner }
            }
        }
    }

    /// After a reload: takes over `previous`'s key set when both fetch the
    /// same URL and this one has loaded none yet, so a reload while the
    /// identity provider is down does not forget keys that were good a
    /// moment ago. The new verifier still fetches on its own schedule.
    pub fn adopt_keys(&self, previous: &Verifier) {
        let (Some(new), Some(old)) = (&self.inner.fetcher, &previous.inner.fetcher) else {
            return;
        };
        if new.uri != old.uri {
            return;
        }
        if let Some(keys) = previous.inner.keys.load_full() {
            let none: Option<Arc<KeySet>> = None;
            self.inner.keys.compare_and_swap(&none, Some(keys));
        }
    }

    /// Whether a key set is loaded (a URL's first fetch may not have
    /// succeeded yet).
    pub fn keys_loaded(&self) -> bool {
        self.inner.keys.load().is_some()
    }

    /// Verifies a caller's token: its signature against the key set, then
    /// the policy's claims. Failures are logged (reason and `kid`, never the
    /// token).
    pub async fn verify(&self, token: &str) -> Result<VerifiedClaims, VerifyError> {
        self.verify_within(token, None).await
    }

    /// Verifies an `id_token` a token endpoint answered with (through the
    /// upstream, signed by the provider: no caller picks its `kid`). An
    /// unknown `kid` there is a key the provider has rotated in, so the set
    /// is refetched for it after [`ISSUED_MIN_INTERVAL`] rather than
    /// `min_refresh_interval`: the tokens of that answer are bound to their
    /// holder (else a revocation of the holder missed them for their whole
    /// life). Callers' tokens keep the anti-spray bound ([`Verifier::verify`]).
    pub async fn verify_issued(&self, token: &str) -> Result<VerifiedClaims, VerifyError> {
        self.verify_within(token, Some(ISSUED_MIN_INTERVAL)).await
    }

    async fn verify_within(
        &self,
        token: &str,
        min_interval: Option<Duration>,
    ) -> Result<VerifiedClaims, VerifyError> {
        let header = match verify::header(token) {
            Ok(h) => h,
            Err(e) => {
                // Opaque tokens land here routinely (identity headers may
                // still name the caller): not worth a warning.
                if e == VerifyError::Malformed {
                    tracing::debug!(reason = %e, "caller's credential is not a verifiable JWT");
                } else {
                    tracing::warn!(reason = %e, "caller's JWT refused");
                }
                return Err(e);
            }
        };
        let result = self.verify_with(token, &header, min_interval).await;
        if let Err(e) = &result {
            let kid: Option<String> = header.kid.as_ref().map(|k| k.chars().take(64).collect());
            tracing::warn!(reason = %e, kid = ?kid, alg = ?header.alg, "caller's JWT not verified");
        }
        result
    }

    async fn verify_with(
        &self,
        token: &str,
        header: &JwsHeader,
        min_interval: Option<Duration>,
    ) -> Result<VerifiedClaims, VerifyError> {
        let inner = &self.inner;
        let seen = inner
            .fetcher
            .as_ref()
            .map(|f| f.generation.load(Ordering::Acquire));
        if let Some(keys) = inner.keys.load_full() {
            if keys.knows(header) {
                return keys.verify(token, header, &inner.policy, crate::store::now_unix());
            }
        }
        let stale = match seen {
            Some(seen) => inner.fetch(Some(seen), min_interval).await == Fetch::Stale,
            None => false,
        };
        match inner.keys.load_full() {
            Some(keys) => match keys.verify(token, header, &inner.policy, crate::store::now_unix())
            {
                // Not fetched for it (held back, or the fetch failed): a key
                // rotated in since the last fetch is not known to be
                // unknown (a feed answers 503, and the provider retries,
                // instead of a 400 it would not).
                Err(VerifyError::UnknownKey) if stale => Err(VerifyError::KeyPending),
                r => r,
            },
            None => Err(VerifyError::NoKeys),
        }
    }
}

impl Inner {
    /// Fetches the URL's key set unless one was fetched since generation
    /// `seen` (when given) or the last attempt is under the minimum interval
    /// (`min_interval` when given and shorter, else `min_refresh_interval`).
    async fn fetch(&self, seen: Option<u64>, min_interval: Option<Duration>) -> Fetch {
        let Some(f) = &self.fetcher else {
            return Fetch::Fresh;
        };
        let mut state = f.state.lock().await;
        if seen.is_some_and(|g| g != f.generation.load(Ordering::Acquire)) {
            return Fetch::Fresh;
        }
        let min = min_interval.map_or(f.min_interval, |m| m.min(f.min_interval));
        if state.last_attempt.is_some_and(|t| t.elapsed() < min) {
            return Fetch::Stale;
        }
        state.last_attempt = Some(Instant::now());
        match f.fetch().await {
            Ok(keys) => {
                log_skipped(&keys, &f.uri.to_string());
                tracing::info!(url = %f.uri, keys = keys.len(), "JWKS loaded");
                self.keys.store(Some(Arc::new(keys)));
                f.generation.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) if self.keys.load().is_some() => {
                tracing::warn!(url = %f.uri, error = %e, "JWKS refresh failed; keeping the last key set");
                return Fetch::Stale;
            }
            Err(e) => {
                tracing::error!(url = %f.uri, error = %e, retry_in = ?f.min_interval,
                    "JWKS could not be loaded: scope revokes authenticated by JWT are refused until it is");
                return Fetch::Stale;
            }
        }
        Fetch::Fresh
    }
}

/// What [`Inner::fetch`] leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fetch {
    /// The key set is as the provider serves it now (fetched by this call
    /// or by another since the caller looked), or there is no URL.
    Fresh,
    /// Not fetched: under `min_refresh_interval` since the last attempt, or
    /// the fetch failed.
    Stale,
}

impl Fetcher {
    async fn fetch(&self) -> Result<KeySet, FetchError> {
        let req = Request::get(self.uri.clone())
            .header(
                header::ACCEPT,
                "application/jwk-set+json, application/json;q=0.9",
            )
            .header(
                header::USER_AGENT,
                concat!("revgate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| FetchError::Http(crate::telemetry::error_chain(&e)))?;
            if resp.status() != StatusCode::OK {
                return Err(FetchError::Status(resp.status().as_u16()));
            }
            let declared = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
                return Err(FetchError::TooLarge);
            }
            let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        FetchError::TooLarge
                    } else {
                        FetchError::Http(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(KeySet::parse(&body)?)
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| FetchError::Timeout)?
    }
}

/// The first fetch, then one every `refresh_interval` (every
/// `min_refresh_interval` while no set has loaded), until the verifier is
/// dropped.
async fn refresh_loop(inner: Weak<Inner>, stop: CancellationToken) {
    loop {
        let wait = {
            let Some(inner) = inner.upgrade() else { return };
            inner.fetch(None, None).await;
            let Some(f) = &inner.fetcher else { return };
            if inner.keys.load().is_some() {
                f.refresh_interval
            } else {
                f.min_interval
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn log_skipped(keys: &KeySet, source: &str) {
    for s in keys.skipped() {
        tracing::warn!(source, kid = ?s.kid, reason = s.reason, "JWKS key skipped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> rustls::ClientConfig {
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    }

    fn settings(source: KeySource) -> VerifySettings {
        VerifySettings {
            source,
            policy: Policy {
                issuers: vec!["i".into()],
                audiences: vec!["a".into()],
                leeway: Duration::from_secs(60),
                require_exp: true,
            },
            refresh_interval: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
        }
    }

    fn keys() -> Arc<KeySet> {
        // An Ed25519 public key (RFC 8037 A.2).
        let doc = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        Arc::new(KeySet::parse(doc.as_bytes()).unwrap())
    }

    fn url(u: &str) -> Verifier {
        // Outside a runtime: no refresh task, keys fetched on first use.
        Verifier::new(&settings(KeySource::Url(u.parse().unwrap())), tls())
    }

    #[test]
    fn a_reload_adopts_keys_only_from_the_same_url() {
        let old = url("https://idp.example/jwks");
        old.inner.keys.store(Some(keys()));
        let same = url("https://idp.example/jwks");
        let other = url("https://other.example/jwks");
        let file = Verifier::new(
            &settings(KeySource::File {
                path: "/k.json".into(),
                keys: keys(),
            }),
            tls(),
        );
        assert!(!same.keys_loaded());
        same.adopt_keys(&old);
        assert!(same.keys_loaded());
        other.adopt_keys(&old);
        assert!(!other.keys_loaded(), "keys of another URL were adopted");
        url("https://idp.example/jwks").adopt_keys(&file);
        assert!(file.keys_loaded());
        // A set the new verifier already fetched is not replaced.
        let fresh = url("https://idp.example/jwks");
        let mine = keys();
        fresh.inner.keys.store(Some(mine.clone()));
        fresh.adopt_keys(&old);
        assert!(Arc::ptr_eq(&fresh.inner.keys.load_full().unwrap(), &mine));
    }

    #[test]
    fn refusals_before_any_key_need_no_fetch() {
        // Made outside a runtime, so no refresh task runs: only a
        // verification could start a fetch, and none of these may.
        let v = url("http://127.0.0.1:9/jwks");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for token in ["opaque", "e30.e30.x"] {
                assert_eq!(v.verify(token).await, Err(VerifyError::Malformed));
            }
            let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ2aWN0aW0ifQ.x";
            assert_eq!(v.verify(none).await, Err(VerifyError::Unsigned));
            let f = v.inner.fetcher.as_ref().unwrap();
            assert!(f.state.lock().await.last_attempt.is_none());
        });
    }
}
